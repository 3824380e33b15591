"""Reading and checking what the API is given: models, captures, codes and options.

Shared by :mod:`.capture_fit`, :mod:`.batch_fit` and :mod:`.latent_edit`; numpy only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fitface.errors import InputError

#: Default weight of the latent regulariser ``lambda ||z||^2`` (paper eq. 13; Table 2 uses 0, 0.01, 10,
#: and its GAN does best at 10). Measured with 1 mm landmark noise (tests/test_fit_accuracy.py):
#: lambda 1 gives 1.9 mm vertex RMSE against 2.8 mm at 0.01 on held-out procedural faces with the
#: built-in model, and 3.5 against 4.1 mm on held-out ICT identities with a linear 3DMM.
DEFAULT_LAMBDA = 1.0
#: Sequence fits: default weight of the smoothness term on consecutive expression codes.
DEFAULT_SMOOTHNESS = 1.0
#: Captures fitted together in one vectorised call of the engine (bounds memory: (B, V, 3) decodes).
BATCH_CHUNK = 256

PathLike = str | os.PathLike


# ------------------------------------------------------------------------------ models
_DECODERS: dict[tuple, Any] = {}


def is_decoder(obj: Any) -> bool:
    return hasattr(obj, "landmark_rows") and hasattr(obj, "vertices")


def load_fit_model(model: Any = None):
    """The numpy decoder of a model file (cached per file and modification time).

    Args:
        model: a model file path, None for the built-in model, or an already loaded decoder.

    Raises:
        InputError: no built-in model installed, missing file, not a model file.
    """
    if is_decoder(model):
        return model
    from fitface.models.model_file import DEFAULT_MODEL_PATH, read_metadata

    if model is None and not Path(DEFAULT_MODEL_PATH).is_file():
        raise InputError("no built-in model is installed yet; pass a model file with --model FILE (model=...)")
    path = Path(DEFAULT_MODEL_PATH if model is None else model)
    read_metadata(path)  # validates the header: one-line InputError for anything but a model file
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    dec = _DECODERS.get(key)
    if dec is None:
        from fitface.fitting.decoder import load_decoder

        try:
            dec = load_decoder(path)
        except InputError:
            raise
        except (ValueError, KeyError, OSError) as exc:
            raise InputError(f"not a usable fitface model file: {one_line(exc)}", path) from None
        _DECODERS.clear()  # keep one model: files are large
        _DECODERS[key] = dec
    return dec


def one_line(exc: Any) -> str:
    return " ".join(str(exc).split())[:300]


# ------------------------------------------------------------------------------ inputs
@dataclass
class PreparedCapture:
    """A capture read and checked, ready to fit (internal)."""

    name: str
    targets: np.ndarray  # (L, 3) float64, capture frame and unit
    unit: str  # capture unit
    unit_source: str  # "argument" | "file" | "assumed"
    to_model: float  # capture unit -> model unit factor
    set_name: str
    landmarks_path: Path | None = None
    scan_path: Path | None = None
    scan: Any = None  # fitface.io.mesh.Mesh or None


def read_targets(landmarks: Any) -> tuple[np.ndarray, str | None, Path | None]:
    """(L, 3) points, stated unit or None, path or None."""
    from fitface.io.landmarks import read_landmarks

    if isinstance(landmarks, (str, os.PathLike)):
        p = Path(landmarks)
        lm = read_landmarks(p)
        if lm.points.shape[1] != 3:
            raise InputError(f"2D landmarks ({lm.points.shape[0]} points of 2 coordinates); fitting needs 3D", p)
        return lm.points, lm.unit, p
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] == 0:
        raise InputError(f"landmarks: expected an (L, 3) array, got shape {pts.shape}")
    if not np.isfinite(pts).all():
        i = int(np.argwhere(~np.isfinite(pts))[0, 0])
        raise InputError(f"landmarks: landmark {i} has a NaN or inf coordinate")
    return pts, None, None


def choose_landmark_set(dec: Any, count: int, name: str | None = None, where: Any = None) -> str:
    """Name of the model's landmark set to use for ``count`` landmarks.

    ``name`` must exist and have ``count`` points; without a name, the one set of that size
    (``"ibug68"`` when several sets have that size).

    Raises:
        InputError: unknown set, count mismatch, or no / several sets of that size.
    """
    sets = {k: len(v) for k, v in dec.landmark_sets.items()}
    desc = ", ".join(f"{k} ({n})" for k, n in sets.items()) or "none"
    if name is not None:
        if name not in sets:
            raise InputError(f"the model has no landmark set {name!r}; its sets: {desc}")
        if sets[name] != count:
            raise InputError(f"{count} landmarks, but landmark set {name!r} has {sets[name]} points", where)
        return name
    match = [k for k, n in sets.items() if n == count]
    if len(match) == 1:
        return match[0]
    if not match:
        raise InputError(f"{count} landmarks match no landmark set of the model (sets: {desc})", where)
    if "ibug68" in match:
        return "ibug68"
    raise InputError(f"{count} landmarks match several landmark sets ({', '.join(match)}); "
                     f"choose one with --landmark-set", where)


def prepare_capture(dec, landmarks, scan=None, unit=None, landmark_set=None, name=None) -> PreparedCapture:
    from fitface.io.mesh import load_mesh
    from fitface.units import check_unit, scale_between

    pts, file_unit, lpath = read_targets(landmarks)
    if unit is not None:
        cap_unit, source = check_unit(unit, "--unit"), "argument"
    elif file_unit is not None:
        cap_unit, source = file_unit, "file"
    else:
        cap_unit, source = dec.unit, "assumed"
    set_name = choose_landmark_set(dec, pts.shape[0], landmark_set, lpath)
    mesh, spath = None, None
    if scan is not None:
        if isinstance(scan, (str, os.PathLike)):
            spath = Path(scan)
            mesh = load_mesh(spath, require_faces=True)
        else:
            mesh = scan
    if name is None:
        name = (lpath or spath or Path("capture")).stem
    return PreparedCapture(name, pts, cap_unit, source, scale_between(cap_unit, dec.unit), set_name, lpath, spath, mesh)


def codes_of(source: Any, what: str):
    """A Codes from a path or a Codes."""
    from fitface.io.codes import Codes, read_codes

    if isinstance(source, Codes):
        return source
    if isinstance(source, (str, os.PathLike)):
        return read_codes(source)
    raise InputError(f"{what}: expected a codes.json path or a Codes, got {type(source).__name__}")


def check_same_model(dec, codes, where: Any = None) -> None:
    if codes.model_id != dec.model_id:
        raise InputError(
            f"codes are from another model (model_id {codes.model_id}); this model is {dec.model_id}", where)


def factor_code(dec, factor: str, source: Any, what: str) -> np.ndarray:
    """(d,) float64 code of block ``factor`` from a codes.json path, a Codes or an array."""
    from fitface.io.codes import Codes

    if factor not in dec.layout.names:
        raise InputError(f"{what}: the model has no latent block {factor!r}; blocks: {', '.join(dec.layout.names)}")
    size = dec.layout.size(factor)
    where = source if isinstance(source, (str, os.PathLike)) else None
    if isinstance(source, (str, os.PathLike, Codes)):
        c = codes_of(source, what)
        check_same_model(dec, c, where)
        if factor not in c.codes:
            raise InputError(f"{what}: no {factor!r} code in the file", where)
        code = c.code(factor)
    else:
        code = np.asarray(source, dtype=np.float64).reshape(-1)
    if code.shape != (size,) or not np.isfinite(code).all():
        raise InputError(f"{what}: {factor} code must be {size} finite numbers, got {code.shape[0]}", where)
    return code


def parse_assignments(items: Sequence[str] | Mapping[str, Any] | None, option: str) -> dict[str, Any]:
    """``["identity=A/codes.json", ...]`` (or a dict) -> ``{"identity": "A/codes.json"}``."""
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return dict(items)
    out = {}
    for item in items:
        factor, eq, value = str(item).partition("=")
        if not eq or not factor.strip() or not value.strip():
            raise InputError(f"{option}: expected FACTOR=CODES.json (e.g. identity=A/codes.json), got {item!r}")
        out[factor.strip()] = value.strip()
    return out




def mesh_suffix(fmt: str | None, scan_path: Path | None) -> str:
    from fitface.io.mesh import MESH_SUFFIXES

    if fmt is None:
        s = scan_path.suffix.lower() if scan_path is not None else ".ply"
        return s if s in MESH_SUFFIXES else ".ply"
    s = "." + str(fmt).lower().lstrip(".")
    if s not in MESH_SUFFIXES:
        raise InputError(f"--format: unknown mesh format {fmt!r}; use one of "
                         f"{', '.join(x.lstrip('.') for x in MESH_SUFFIXES)}")
    return s




def fit_error(exc: Exception, where: Any = None) -> InputError:
    """An engine failure as a one-line :class:`InputError`."""
    return InputError(f"fit failed: {one_line(exc)}", where)
