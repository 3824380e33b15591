# The README's two commands are `make demo` and `make test`; .ci/run calls `make test`.
# Everything installs into .venv. TORCH_SPEC is a plain pin: on this project's machines pip
# finds the CPU build in the local wheel store; on a machine that reaches the public index,
# PyPI's default Linux build of torch bundles CUDA (several GB). For a CPU-only install there:
#   make demo TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
# and on a CUDA machine, e.g.
#   make demo TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124"
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
PIP := $(PY) -m pip install -q --disable-pip-version-check
# mediapipe 0.10.14 publishes wheels for CPython 3.8-3.12; fitface needs 3.10+
PYTHON_OK := import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 10) <= v <= (3, 12) else \
	f"error: fitface needs Python 3.10 to 3.12 (mediapipe 0.10.14 has no wheel for {v[0]}.{v[1]}); " \
	"run make with PYTHON3=/path/to/python3.12")
PYTHON3 ?= python3

.PHONY: install install-test demo test test-slow test-all clean
install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

$(VENV)/.installed: pyproject.toml
	@$(PYTHON3) -c '$(PYTHON_OK)'
	test -x $(PY) || $(PYTHON3) -m venv $(VENV)
	@$(PY) -c '$(PYTHON_OK)'
	$(PIP) $(TORCH_SPEC) 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP) -e . 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import fitface, torch, mediapipe, cv2"
	# bytecode now, as a wheel install would: an editable install under PYTHONDONTWRITEBYTECODE
	# (set on these machines) otherwise compiles ~45 modules on every run (~0.1 s a fit)
	$(PY) -m compileall -q fitface models train landmarks >/dev/null
	touch $@

# the test extras (pytest, libigl, torch-geometric, ruff): only `make test` needs them
$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import pytest, igl, torch_geometric"
	touch $@

demo: install
	$(VENV)/bin/fitface demo -o fitface-demo

test: install-test
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

test-slow: install-test
	$(PY) -m pytest -q -m slow

test-all: install-test
	$(PY) -m pytest -q -m ""

clean:
	rm -rf $(VENV) fitface-demo build *.egg-info
