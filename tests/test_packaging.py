"""The distribution installs models/, train/ and landmarks/ only inside the fitface namespace."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
MAPPED = {"fitface": "fitface", "fitface.models": "models", "fitface.train": "train", "fitface.landmarks": "landmarks"}


def _declared_packages() -> set[str]:
    with open(REPO / "pyproject.toml", "rb") as f:
        return set(tomllib.load(f)["tool"]["setuptools"]["packages"])


def _packages_on_disk() -> set[str]:
    found = set()
    for pkg, folder in MAPPED.items():
        root = REPO / folder
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root)
            found.add(".".join([pkg, *rel.parts]) if rel.parts else pkg)
    return found


def test_every_package_is_declared():
    missing = _packages_on_disk() - _declared_packages()
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"


def test_wheel_has_no_top_level_models_or_train(tmp_path):
    """Build the wheel (no install) and check its top-level names."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("fitface-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {"models", "train", "landmarks"}.isdisjoint(top), sorted(top)
    for sub in ("models", "train", "landmarks"):
        assert f"fitface/{sub}/__init__.py" in names
    assert "fitface/landmarks/sets.py" in names
    assert any(n.startswith("fitface/train/recipes/") for n in names) or not (REPO / "train" / "recipes").glob("*.toml")
    # the shipped models (every file in models/), the real-face demo captures and the NOTICE
    for f in sorted((REPO / "models").glob("*.safetensors")):
        assert f"fitface/models/{f.name}" in names
    assert "fitface/models/ict-linear.safetensors" in names and "fitface/models/default.safetensors" in names
    assert "fitface/demo_captures/ict_captures.npz" in names
    assert any(n.endswith(".dist-info/NOTICE") or n.endswith("/licenses/NOTICE") for n in names), \
        [n for n in names if "dist-info" in n]


def test_import_fitface_is_cheap():
    """`import fitface` and the CLI module must not import torch (start-up time)."""
    code = "import sys, fitface, fitface.cli; print('torch' in sys.modules, 'trimesh' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    assert out == ["False", "False"]


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_cli_help_and_version(flag):
    res = subprocess.run([sys.executable, "-m", "fitface", flag], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert ("fitface" in res.stdout) and ("Usage" in res.stdout or "0.1.0" in res.stdout)


def test_make_refuses_pythons_without_mediapipe_wheels_in_one_line():
    """The Makefile's version check and pyproject's requires-python agree (3.10-3.12)."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    text = (root / "Makefile").read_text()
    m = re.search(r"^PYTHON_OK := (.*?)\n(?!\t)", text, re.S | re.M)
    snippet = m.group(1).replace("\\\n\t", "")
    pinned = re.search(r'^requires-python = "([^"]*)"', (root / "pyproject.toml").read_text(), re.M)
    assert pinned and pinned.group(1) == ">=3.10,<3.13"  # tomllib is 3.11+
    for version, ok in (((3, 9), False), ((3, 10), True), ((3, 12), True), ((3, 13), False)):
        code = f"import sys; sys.version_info = {version + (0,)!r}; " + snippet
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert (r.returncode == 0) == ok, (version, r.stderr)
        if not ok:
            assert r.stderr.strip().count("\n") == 0 and "needs Python 3.10 to 3.12" in r.stderr
