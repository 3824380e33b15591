# The README's two commands are `make demo` and `make test`; .ci/run calls `make test`.
# Everything installs into .venv. TORCH_SPEC installs the CPU build from this
# machine's disk; on a CUDA machine install your own torch first, e.g.
#   make demo TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124"
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
PIP := $(PY) -m pip install -q --disable-pip-version-check

.PHONY: install demo test test-slow test-all clean
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) $(TORCH_SPEC) 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP) -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import fitface, torch, mediapipe, cv2, igl"
	# bytecode now, as a wheel install would: an editable install under PYTHONDONTWRITEBYTECODE
	# (set on these machines) otherwise compiles ~45 modules on every run (~0.1 s a fit)
	$(PY) -m compileall -q fitface models train landmarks >/dev/null
	touch $@

demo: install
	$(VENV)/bin/fitface demo -o fitface-demo

test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

test-all: install
	$(PY) -m pytest -q -m ""

clean:
	rm -rf $(VENV) fitface-demo build *.egg-info
