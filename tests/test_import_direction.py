"""Imports point one way: the core imports nothing from above, evaluation nothing from training,
the models nothing from either; and the fit path imports no torch.

The core is fitface/fitting, fitface/data, fitface/io and fitface/geometry; "above" is
fitface.models, fitface.evaluation, fitface.train and fitface.landmarks (the models, training
and landmarks are installed from the top-level folders models/, train/ and landmarks/), and
those folders' own top-level names. Every import of a checked file counts, at top level or
inside a function, ``from . import x`` and relative imports resolved; so do the imports of the
fitface modules it reaches (fitface/checks.py, fitface/latent.py, ..., for the evaluation also
models/ and landmarks/), and of theirs. The package root fitface/__init__.py is not followed:
its lazy attributes are the public face (``fitface.load_model``), not the core's.

Evaluation (fitface/evaluation) must not reach fitface.train: the trainer imports the
evaluation (its progress metrics and proxy), never the other way round. The models (models/)
reach neither the evaluation nor training.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fitface

REPO = Path(__file__).resolve().parents[1]
#: The core's packages, as folders of the repository.
CORE = ("fitface/fitting", "fitface/data", "fitface/io", "fitface/geometry")
#: Modules the core must not import (a name or a dotted prefix of one).
ABOVE = ("fitface.models", "fitface.evaluation", "fitface.train", "fitface.landmarks", "models", "train", "landmarks")
#: Training, which the evaluation must not import.
TRAINING = ("fitface.train", "train")
#: The top-level folders installed inside the fitface namespace (pyproject.toml package-dir).
MAPPED = {"models": "models", "train": "train", "landmarks": "landmarks"}


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, dotted name)`` of every import in ``source``, the source of ``module``.

    Relative imports are resolved against ``module`` (a package's ``__init__`` when
    ``is_package``); ``from m import a`` gives ``m`` and ``m.a`` (``a`` may be a submodule).
    ``importlib.import_module("m")`` and ``__import__("m")`` with a literal name count too.
    """
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            found += [(node.lineno, f"{name}.{a.name}") for a in node.names if a.name != "*"]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def is_above(name: str, above: tuple[str, ...] = ABOVE) -> bool:
    return any(name == a or name.startswith(a + ".") for a in above)


def _module_of(path: Path) -> tuple[str, bool]:
    """Dotted name of a file under REPO/fitface (or a top-level folder installed inside fitface),
    and whether it is a package's ``__init__``."""
    parts = path.relative_to(REPO).with_suffix("").parts
    if parts[0] in MAPPED.values():
        parts = ("fitface", *parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def _folder_of(parts: list[str]) -> Path:
    """The repository path of a dotted fitface name (``fitface.models.x`` -> models/x)."""
    if len(parts) > 1 and parts[1] in MAPPED:
        return REPO.joinpath(MAPPED[parts[1]], *parts[2:])
    return REPO.joinpath(*parts)


def _files_of(name: str) -> list[Path]:
    """The files that importing ``name`` (a fitface module, or an attribute of one) runs: the
    module and its parent packages' ``__init__``, the root excepted."""
    parts = name.split(".")
    while len(parts) > 1:
        folder = _folder_of(parts)
        target = folder / "__init__.py" if folder.is_dir() else folder.with_suffix(".py")
        if target.is_file():
            inits = [_folder_of(parts[:i]) / "__init__.py" for i in range(2, len(parts))]
            return [p for p in inits if p.is_file()] + [target]
        parts = parts[:-1]  # an attribute of the module named by the shorter name
    return []


def violations(folders, forbidden: tuple[str, ...]) -> tuple[list[str], int]:
    """``path:line: imports NAME`` for every import of something ``forbidden``, in the files of
    ``folders`` (repository folders) and in what they reach; and the number of files read."""
    todo = sorted(p for folder in folders for p in (REPO / folder).rglob("*.py"))
    seen = set(todo)
    bad: dict[str, None] = {}  # one entry per import statement, in the order found
    while todo:
        path = todo.pop()
        module, is_package = _module_of(path)
        for line, name in imported_modules(path.read_text(encoding="utf-8"), module, is_package):
            where = f"{path.relative_to(REPO)}:{line}"
            if is_above(name, forbidden):
                if not any(b.startswith(where + ":") for b in bad):
                    bad[f"{where}: imports {name}"] = None
            elif name.startswith("fitface."):
                for f in _files_of(name):
                    if f not in seen:
                        seen.add(f)
                        todo.append(f)
    return sorted(bad), len(seen)


def core_violations() -> tuple[list[str], int]:
    """:func:`violations` of the core: imports of something above."""
    return violations(CORE, ABOVE)


def test_core_imports_nothing_from_models_train_or_landmarks():
    assert all(any((REPO / folder).rglob("*.py")) for folder in CORE)
    bad, _ = core_violations()
    assert not bad, "the core imports from above:\n" + "\n".join(bad)


def test_evaluation_imports_nothing_from_training():
    assert any((REPO / "fitface/evaluation").rglob("*.py"))
    bad, read = violations(["fitface/evaluation"], TRAINING)
    assert not bad, "the evaluation imports from training:\n" + "\n".join(bad)
    assert (REPO / "models/face_model.py") in _files_of("fitface.models.face_model") and read > 20


def test_models_import_nothing_from_evaluation_or_training():
    bad, _ = violations(["models"], ("fitface.evaluation", "fitface.train", "fitface.cli", "train"))
    assert not bad, "the models import from above:\n" + "\n".join(bad)


@pytest.mark.parametrize("folders, forbidden, expected", [
    (["train"], ("fitface.evaluation",), "train/trainer.py"),  # the trainer imports the evaluation
    (["fitface/cli"], TRAINING, "fitface/cli/train.py"),
])
def test_the_checker_finds_imports_that_exist(folders, forbidden, expected):
    bad, _ = violations(folders, forbidden)
    assert any(b.startswith(expected + ":") for b in bad), bad


@pytest.mark.parametrize(
    "source, module, is_package, expected",
    [
        ("from ..models import registry", "fitface.io.x", False, "fitface.models.registry"),
        ("from .. import train", "fitface.data.x", False, "fitface.train"),
        ("from ... import landmarks", "fitface.data.procedural.x", False, "fitface.landmarks"),
        ("from .sets import LandmarkSet", "fitface.landmarks", True, "fitface.landmarks.sets"),
        ("def f():\n    import models.latent", "fitface.io.x", False, "models.latent"),
        ("from fitface import models", "fitface.io.x", False, "fitface.models"),
        ("import importlib\nimportlib.import_module('fitface.train.config')", "fitface.io.x", False,
         "fitface.train.config"),
    ],
)
def test_the_checker_sees_every_kind_of_import(source, module, is_package, expected):
    names = [n for _, n in imported_modules(source, module, is_package)]
    assert expected in names and is_above(expected)


def test_the_checker_spares_names_that_only_look_alike():
    names = [n for _, n in imported_modules("from .models_util import x\nimport trainer\n", "fitface.io.x")]
    assert names and not any(is_above(n) for n in names)


def test_the_fit_path_imports_no_torch():
    """Loading a built-in model as a numpy decoder and fitting landmarks to it: no torch."""
    code = (
        "import sys, numpy as np\n"
        "from fitface.fitting.decoder import load_decoder\n"
        "from fitface.fitting.landmark_fit import FitConfig, fit_landmarks\n"
        "import fitface.fitting.surface_refine, fitface.fitting.similarity, fitface.fitting.adam\n"
        "import fitface.io.model_file_format, fitface.io.model_registry, fitface.io.codes, fitface.io.landmarks\n"
        "dec = load_decoder('procedural')\n"
        "z = np.random.default_rng(0).normal(size=(1, dec.latent_dim)).astype(dec.dtype)\n"
        "targets = dec.points(z, dec.landmark_rows('ibug68'))[0]\n"
        "fit_landmarks(dec, targets, 'ibug68', FitConfig(steps=5))\n"
        "print(sorted(m for m in ('torch', 'fitface.models', 'fitface.train', 'fitface.landmarks') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_plain_fit_imports_neither_the_batch_track_code_nor_cv2(tmp_path):
    """`fitface fit` on a landmark file: fitface.api loads only the single-capture path (PEP 562),
    and the preview draws with Pillow, so neither cv2 (~0.07 s) nor fitface.api.batch_fit loads."""
    from fitface.io.landmarks import save_landmarks

    lm = tmp_path / "lm.txt"
    with np.load(Path(fitface.__file__).parent / "demo_captures" / "ict_captures.npz") as z:
        save_landmarks(lm, z["A_landmarks"], unit="m")
    code = (
        "import sys\n"
        "from fitface.cli import main\n"
        f"sys.argv = ['fitface', 'fit', '-l', {str(lm)!r}, '-o', {str(tmp_path / 'out')!r}, '-m', 'procedural']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print(sorted(m for m in ('cv2', 'torch', 'fitface.api.batch_fit', 'fitface.api.sequence_retarget', "
        "'fitface.api.latent_edit', 'xml.sax') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "out" / "preview.png").stat().st_size > 1000


def test_fitface_api_names_all_resolve_to_functions_and_classes_after_every_submodule_loads():
    """A submodule import rebinds its package attribute: none may shadow a public name."""
    import importlib
    import pkgutil
    import types

    import fitface.api as api

    for info in pkgutil.iter_modules(api.__path__):
        importlib.import_module(f"fitface.api.{info.name}")
    for name in api.__all__:
        assert not isinstance(getattr(api, name), types.ModuleType), name
    for name in fitface._API:
        assert callable(getattr(fitface, name)) and not isinstance(getattr(fitface, name), types.ModuleType), name
    lazy = set(api._EXPORTS) | set(api._OTHER) | {"TrackCodes", "TrackResult", "read_track_codes", "track"}
    assert sorted(api.__all__) == sorted(lazy)
