"""Built-in models by name: ``--model NAME|PATH`` everywhere a model is taken.

fitface ships its models as package data of :mod:`fitface.models` (``fitface/models/*.safetensors``;
``models/`` in a checkout) and names them:

=============== ============================ =====================================================
name            file                         what it is
=============== ============================ =====================================================
``procedural``  ``default.safetensors``      the paper's GAN trained on the project's own
                                             procedural faces (a demonstration and test fixture)
``ict``         ``ict.safetensors``          the paper's GAN trained on the ICT-FaceKit set
                                             (real, scan-based faces); not shipped yet
``ict-linear``  ``ict-linear.safetensors``   the linear 3DMM baseline of the ICT-FaceKit set
=============== ============================ =====================================================

:data:`DEFAULT_MODEL` is the one place that says which name a command without ``--model``
(and an API call with ``model=None``) uses.

Convention:
    * Resolution (:func:`resolve_model`): ``None`` is :data:`DEFAULT_MODEL`; a string equal to a
      built-in name is that model (a name wins over a file of the same name in the current
      folder: write ``./ict`` for the file); anything else is a path. A path that is the file of
      a built-in model resolves to that model's name, so codes fitted with
      ``--model fitface/models/ict-linear.safetensors`` record ``"ict-linear"``.
    * A built-in name whose file is absent is "not installed": using it raises a one-line
      :class:`~fitface.errors.InputError` naming the file, the name and the installed names.
    * Nothing here imports torch; :func:`describe_model` reads only the file's header.
    * This module belongs to the core (fitting resolves names with it) and imports nothing from
      ``fitface.models``: it finds that package's folder without importing it.
      ``fitface.models.registry`` is this same module (one :data:`DEFAULT_MODEL`, one
      :data:`MODELS_DIR`, wherever they are read or patched from).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fitface.errors import InputError
from fitface.io.model_file_format import file_model_id, generator_kind, read_document

#: The model used when none is given (a name of :data:`BUILTIN_MODELS`). Change this one
#: constant to change fitface's default model.
DEFAULT_MODEL = "ict"


def _package_folder(package: str) -> Path:
    """The folder of ``package``, located (``importlib.util.find_spec``) without running it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"package {package} is not installed")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


#: Folder of the shipped model files, the :mod:`fitface.models` package's (``models/`` in a
#: checkout, ``fitface/models/`` installed).
MODELS_DIR = _package_folder("fitface.models")

#: The licence of everything fitface itself made (pyproject's ``license``).
FITFACE_LICENCE = "MIT (fitface)"
#: The licence of models derived from the ICT-FaceKit light-stage model (see NOTICE).
ICT_LICENCE = "MIT (ICT-FaceKit, USC Institute for Creative Technologies; see NOTICE)"


@dataclass(frozen=True)
class BuiltinModel:
    """One named built-in model.

    Attributes:
        name: the name passed as ``--model NAME``.
        filename: its file in :data:`MODELS_DIR`.
        summary: one line saying what it is.
        licence: short licence statement (the full texts are in the file's metadata and NOTICE).
    """

    name: str
    filename: str
    summary: str
    licence: str

    @property
    def path(self) -> Path:
        """The model file (in :data:`MODELS_DIR`, read at call time)."""
        return MODELS_DIR / self.filename

    @property
    def installed(self) -> bool:
        return self.path.is_file()


#: The built-in models, by name, in listing order.
BUILTIN_MODELS: dict[str, BuiltinModel] = {m.name: m for m in (
    BuiltinModel("procedural", "default.safetensors",
                 "the paper's GAN trained on fitface's own procedural faces (demonstration, test fixture)",
                 FITFACE_LICENCE),
    BuiltinModel("ict", "ict.safetensors",
                 "the paper's GAN trained on the ICT-FaceKit set (real, scan-based faces)", ICT_LICENCE),
    BuiltinModel("ict-linear", "ict-linear.safetensors",
                 "linear 3DMM (identity + expression PCA) of the ICT-FaceKit set, the paper's baseline", ICT_LICENCE),
)}


@dataclass(frozen=True)
class ResolvedModel:
    """A model argument resolved to a file.

    Attributes:
        path: the model file (exists; not checked to be a model file yet).
        name: the built-in name, or None for a user's file.
    """

    path: Path
    name: str | None

    @property
    def reference(self) -> str:
        """What ``codes.json`` records as ``"model"``: the built-in name, else the absolute path."""
        return self.name if self.name is not None else str(self.path.resolve())


def installed_names() -> list[str]:
    """Names of the built-in models whose files are present, in listing order."""
    return [n for n, m in BUILTIN_MODELS.items() if m.installed]


def _not_installed(m: BuiltinModel, default: bool) -> InputError:
    have = installed_names()
    what = f"built-in model {m.name!r}{' (the default)' if default else ''} is not installed"
    alt = f"installed: {', '.join(have)}; pass one of them or a model file" if have else "pass a model file"
    return InputError(f"{what}; {alt} (--model NAME|FILE)", m.path)


def builtin_name_of(path: str | os.PathLike) -> str | None:
    """The built-in name whose file ``path`` is (same file), else None."""
    p = Path(path)
    for m in BUILTIN_MODELS.values():
        try:
            if m.installed and p.is_file() and os.path.samefile(p, m.path):
                return m.name
        except OSError:
            continue
    return None


def resolve_model(model: str | os.PathLike | None) -> ResolvedModel:
    """A ``--model`` argument (name, path or None) as an existing file (see the module Convention).

    Raises:
        InputError: a built-in model that is not installed, a missing path, a folder.
    """
    if model is None:
        m = BUILTIN_MODELS[DEFAULT_MODEL]
        if not m.installed:
            raise _not_installed(m, default=True)
        return ResolvedModel(m.path, m.name)
    if isinstance(model, str) and model in BUILTIN_MODELS:
        m = BUILTIN_MODELS[model]
        if not m.installed:
            raise _not_installed(m, default=False)
        return ResolvedModel(m.path, m.name)
    p = Path(model)
    if not p.exists():
        text = os.fspath(model)
        if os.sep not in text and "/" not in text and not p.suffix:
            raise InputError(f"no such model file, and not a built-in model name (built-in: "
                             f"{', '.join(BUILTIN_MODELS)})", p)
        raise InputError("no such model file", p)
    if p.is_dir():
        raise InputError("is a directory, not a model file", p)
    return ResolvedModel(p, builtin_name_of(p))


def resolve_model_path(model: str | os.PathLike | None) -> Path:
    """:func:`resolve_model` ``.path``."""
    return resolve_model(model).path


def editable_source(model: str | os.PathLike, out: str | os.PathLike | None) -> Path:
    """The file a model-editing command (``fitface landmarks add|mediapipe``) reads, refusing to
    change a built-in model in place: with a built-in ``model`` (by name or path) ``out`` is
    required.

    Raises:
        InputError: as :func:`resolve_model`, or a built-in model without ``out``.
    """
    r = resolve_model(model)
    if r.name is not None and out is None:
        raise InputError(f"built-in model {r.name!r} is not changed in place; pass -o FILE to write a changed "
                         f"copy", r.path)
    return r.path


# ------------------------------------------------------------------------------ model ids
_IDS: dict[tuple, str] = {}


def model_id_of_file(path: str | os.PathLike) -> str:
    """The model id of a file (:func:`fitface.io.model_file_format.file_model_id` of its bytes),
    cached per path, size and mtime."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _IDS:
        _IDS[key] = file_model_id(p.read_bytes())
    return _IDS[key]


def builtin_with_id(model_id: str) -> str | None:
    """The installed built-in model whose file has ``model_id``, else None."""
    for name in installed_names():
        try:
            if model_id_of_file(BUILTIN_MODELS[name].path) == model_id:
                return name
        except OSError:
            continue
    return None


# ------------------------------------------------------------------------------ listing
def _budget(doc: dict[str, Any]) -> str:
    """One line on how a model was made: steps and recipe, or the 3DMM's identity count."""
    meta = doc.get("metadata") or {}
    shipped = meta.get("shipped") or {}
    if isinstance(shipped, dict) and shipped.get("budget"):
        return str(shipped["budget"])
    base = meta.get("baseline")
    if isinstance(base, dict) and base.get("kind") == "linear_3dmm":
        return f"linear 3DMM from {base.get('identities', '?')} identities"
    if isinstance(base, dict) and base.get("kind") == "coma":
        return (f"CoMA from {base.get('identities', '?')} identities, {base.get('epochs_done', '?')} epochs "
                f"({base.get('stop_reason', '?')})")
    cfg = doc.get("training_config") or {}
    steps = meta.get("trained_steps", cfg.get("max_steps"))
    recipe = cfg.get("recipe") or meta.get("recipe")
    parts = [f"{int(steps):,} generator steps" if str(steps).isdigit() else None,
             f"recipe {recipe}" if recipe else None]
    return ", ".join(p for p in parts if p) or "unknown"


def describe_model(path: str | os.PathLike, name: str | None = None) -> dict[str, Any]:
    """What ``fitface models`` shows of one model file (header only, no torch).

    Returns:
        ``{"name", "default", "installed": True, "kind" ("gan" | "linear" | "mae" | "coma"), "unit",
        "vertices", "latent_layout", "landmark_sets", "budget", "licence", "size_bytes",
        "size_mib", "path", "model_id", "summary"}``.

    Raises:
        InputError: not a valid model file.
    """
    p = Path(path)
    doc = read_document(resolve_model_path(p))
    meta = doc.get("metadata") or {}
    shipped = meta.get("shipped") if isinstance(meta.get("shipped"), dict) else {}
    b = BUILTIN_MODELS.get(name) if name else None
    licence = b.licence if b else str(shipped.get("licence_short") or "unknown (a user's file)")
    size = p.stat().st_size
    return {
        "name": name,
        "default": name == DEFAULT_MODEL,
        "installed": True,
        "kind": {"linear": "linear", "multilinear": "mae", "coma": "coma"}.get(generator_kind(doc), "gan"),
        "unit": doc["unit"],
        "vertices": doc["num_vertices"],
        "latent_layout": doc["latent_layout"],
        "landmark_sets": list(doc["landmark_sets"]),
        "budget": _budget(doc),
        "licence": licence,
        "size_bytes": size,
        "size_mib": round(size / 2**20, 2),
        "path": str(p),
        "model_id": model_id_of_file(p),
        "summary": b.summary if b else str(doc.get("notes") or ""),
    }


def list_models() -> list[dict[str, Any]]:
    """One entry per built-in model (:func:`describe_model` for installed ones; a not-installed
    model has ``installed: False``, its name, summary, licence and expected path, the other
    fields None)."""
    out = []
    for name, m in BUILTIN_MODELS.items():
        if m.installed:
            out.append(describe_model(m.path, name))
        else:
            out.append({"name": name, "default": name == DEFAULT_MODEL, "installed": False, "kind": None,
                        "unit": None, "vertices": None, "latent_layout": None, "landmark_sets": None,
                        "budget": None, "licence": m.licence, "size_bytes": None, "size_mib": None,
                        "path": str(m.path), "model_id": None, "summary": m.summary})
    return out


__all__ = ["BUILTIN_MODELS", "DEFAULT_MODEL", "MODELS_DIR", "BuiltinModel", "ResolvedModel", "builtin_name_of",
           "builtin_with_id", "describe_model", "editable_source", "installed_names", "list_models", "model_id_of_file",
           "resolve_model", "resolve_model_path"]
