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

from fitface.errors import InputError, one_line  # noqa: F401 (one_line: re-exported)

#: Default weight of the latent regulariser ``lambda ||z||^2`` (paper eq. 13; Table 2 uses 0, 0.01, 10,
#: and its GAN does best at 10). Measured with 1 mm landmark noise (tests/test_fit_accuracy.py):
#: lambda 1 gives 1.9 mm vertex RMSE against 2.8 mm at 0.01 on held-out procedural faces with the
#: built-in model, and 3.5 against 4.1 mm on held-out ICT identities with a linear 3DMM.
DEFAULT_LAMBDA = 1.0
#: Sequence fits: default weight of the smoothness term on consecutive expression codes.
DEFAULT_SMOOTHNESS = 1.0
#: Captures fitted together in one vectorised call of the engine (bounds memory: (B, V, 3) decodes).
BATCH_CHUNK = 256
#: ``scale=`` of the fits: ``"auto"`` (the unit's scale where the capture's unit is known:
#: given, stated in the file, or inferred; a fitted scale where it is only assumed), ``"unit"``
#: (always the unit's: a rigid fit), ``"free"`` (always a fitted scale: a similarity).
SCALE_MODES = ("auto", "unit", "free")
#: Unit sources under which ``scale="auto"`` trusts the unit (see :func:`infer_capture_unit`).
KNOWN_UNIT_SOURCES = ("argument", "file", "inferred")

PathLike = str | os.PathLike


# ------------------------------------------------------------------------------ models
_DECODERS: dict[tuple, Any] = {}


def is_decoder(obj: Any) -> bool:
    return hasattr(obj, "landmark_rows") and hasattr(obj, "vertices")


def load_fit_model(model: Any = None):
    """The numpy decoder of a model (cached per file and modification time).

    Args:
        model: a built-in model name (``"procedural"``, ``"ict"``, ``"ict-linear"``; see
            :mod:`fitface.models.registry`), a model file path, None for the default built-in
            model, or an already loaded decoder.

    Returns:
        The decoder, with ``model_name`` (built-in name or None) and ``model_path`` set.

    Raises:
        InputError: a built-in model that is not installed, a missing file, not a model file.
    """
    if is_decoder(model):
        return model
    from fitface.models.registry import resolve_model

    resolved = resolve_model(model)
    path = resolved.path
    try:
        st = path.stat()
    except OSError as exc:
        raise InputError(f"cannot read model file: {one_line(exc.strerror or exc)}", path) from None
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    dec = _DECODERS.get(key)
    if dec is None:
        from fitface.fitting.decoder import load_decoder

        try:  # one parse of the file: load_decoder validates the header (one-line InputError)
            dec = load_decoder(path)
        except InputError:
            raise
        except (ValueError, KeyError, OSError) as exc:
            raise InputError(f"not a usable fitface model file: {one_line(exc)}", path) from None
        _DECODERS.clear()  # keep one model: files are large
        _DECODERS[key] = dec
    dec.model_name, dec.model_path = resolved.name, path
    return dec


def model_reference(dec: Any) -> str | None:
    """What ``codes.json`` records as ``"model"`` for a decoder: its built-in name, else the
    absolute path of its file, else None (an in-memory decoder)."""
    name = getattr(dec, "model_name", None)
    if name:
        return str(name)
    path = getattr(dec, "model_path", None)
    return None if path is None else str(Path(path).resolve())


def _describe(codes: Any) -> str:
    """``model 'ict-linear' (model_id ...)`` or ``model_id ...`` for messages."""
    ref = getattr(codes, "model", None)
    return f"model {ref!r} (model_id {codes.model_id})" if ref else f"model_id {codes.model_id}"


def model_for_codes(items: Sequence[tuple[Any, Any]], model: Any = None):
    """The decoder for codes files: ``model`` if given, else the model that made the codes.

    Args:
        items: ``(codes, where)`` pairs: :class:`fitface.io.codes.Codes` and the file it came
            from (None for in-memory codes), in the order the user gave them.
        model: as :func:`load_fit_model`; None = the model the codes record (their ``"model"``:
            a built-in name or a file path), found again and checked by ``model_id``; codes
            without ``"model"`` (older files), or whose file moved, are matched against the
            installed built-in models by ``model_id``.

    Raises:
        InputError: codes from different models; codes whose model cannot be found (the message
            says which ``--model`` to pass); codes from another model than ``model``.
    """
    from fitface.models.registry import builtin_with_id

    first, where0 = items[0]
    for c, w in items[1:]:
        if c.model_id != first.model_id:
            raise InputError(f"codes from different models: {where0 or 'the first codes'} has {_describe(first)}, "
                             f"{w or 'the other codes'} has {_describe(c)}; refit one of them with the other's "
                             f"model (fitface fit ... --model {getattr(first, 'model', None) or 'MODEL'})")
    if model is not None:
        dec = load_fit_model(model)
        for c, w in items:
            check_same_model(dec, c, w)
        return dec
    ref = next((c.model for c, _ in items if getattr(c, "model", None)), None)
    problem = None
    if ref is not None:
        try:
            dec = load_fit_model(ref)  # a built-in name, or an absolute path
        except InputError as exc:
            problem = f"the model it records ({ref}) cannot be loaded: {exc.problem}"
        else:
            if dec.model_id == first.model_id:
                return dec
            problem = (f"the model it records ({ref}) now has model_id {dec.model_id}, not the codes' "
                       f"{first.model_id} (the file changed since the fit)")
    name = builtin_with_id(first.model_id)
    if name is not None:
        return load_fit_model(name)
    if problem is None:
        problem = f"it records no model, and its model_id {first.model_id} is none of the installed built-in models"
    raise InputError(f"{problem}; pass --model with the model file that made it (model_id {first.model_id})",
                     where0)


# ------------------------------------------------------------------------------ inputs
@dataclass
class PreparedCapture:
    """A capture read and checked, ready to fit (internal)."""

    name: str
    targets: np.ndarray  # (L, 3) float64, capture frame and unit
    unit: str | None  # capture unit (None: a photo, in pixels)
    unit_source: str  # "argument" | "file" | "inferred" | "assumed" (see infer_capture_unit) | "pixels"
    to_model: float  # capture unit -> model unit factor
    set_name: str
    landmarks_path: Path | None = None
    scan_path: Path | None = None
    scan: Any = None  # fitface.io.mesh.Mesh or None
    size_scale: float | None = None  # capture size / model mean-face size (capture numbers per model unit)
    unit_warning: str | None = None  # the unit could not be inferred: warned once the fit succeeds
    photo: Any = None  # fitface.api.photo_capture.PhotoFace for a face of a photo, else None
    fit_scale: bool = True  # estimate the similarity's scale (False: the unit's scale, a rigid fit)
    scale_check: bool = False  # unit only inferred, scale "auto": test the rigid fit against a fitted scale
    scale_mismatch: str | None = None  # the check chose a fitted scale: the one-line warning to issue
    init_row: int | None = None  # row of the seed's initial-code stream (a batch: its place in its chunk)

    @property
    def source(self) -> Path | None:
        """The file the capture's landmarks came from (the landmark file or the photo), for messages."""
        return self.photo.path if self.photo is not None else self.landmarks_path


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


#: Largest landmark coordinate accepted (any unit): far beyond any real capture (a face in
#: micrometres is ~1e5), and small enough that squared distances stay finite in float64.
MAX_COORDINATE = 1e12


def check_coordinate_range(points: np.ndarray, where: Any = None) -> None:
    """One-line :class:`InputError` for finite landmarks too large to fit (e.g. 1e300).

    Args:
        points: (L, 3) float, capture unit. where: the file, for the message.
    """
    big = float(np.max(np.abs(points))) if np.size(points) else 0.0
    if big > MAX_COORDINATE:
        i = int(np.argmax(np.max(np.abs(points), axis=1)))
        raise InputError(f"landmark {i} has a coordinate of magnitude {big:.3g}, beyond {MAX_COORDINATE:g} in any "
                         f"unit: not a capture's coordinates", where)


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


def capture_size_scale(dec, targets: np.ndarray, set_name: str) -> float:
    """How large a capture's landmarks are against the model's mean face: the ratio of their RMS
    distances to their centroids, capture numbers per model unit (the scale of the similarity
    that maps the mean face's landmarks onto the capture's, up to the shape's own variation).

    Args:
        dec: the decoder. targets: (L, 3) float capture landmarks. set_name: their landmark set.

    Returns:
        The ratio (> 0), or 0.0 when the capture's landmarks all coincide.
    """
    rows = dec.landmark_rows(dec.landmark_sets[set_name])
    mean = np.asarray(dec.points(np.zeros((1, dec.layout.dim)), rows), dtype=np.float64)[0]  # (L, 3) model unit
    t = np.asarray(targets, dtype=np.float64)

    def size(p: np.ndarray) -> float:
        return float(np.sqrt(np.mean(np.sum((p - p.mean(axis=0)) ** 2, axis=1))))

    ref = size(mean)
    return size(t) / ref if ref > 0 else 0.0


def infer_capture_unit(dec, targets: np.ndarray, set_name: str, name: str,
                       where: Any = None) -> tuple[str, str, float, str | None]:
    """The unit of a capture that states none: ``(unit, source, size scale, warning)``.

    ``source`` is ``"inferred"`` when the capture's size against the model's mean face
    (:func:`capture_size_scale`) lies within a factor :data:`fitface.units.INFER_TOLERANCE`
    of the nominal scale of exactly one of m, cm, mm (0.001, 0.1, 1 for a model in mm), else
    ``"assumed"``: the model's unit is kept, the similarity's scale absorbs the mismatch, and
    ``warning`` is the one-line message (naming the capture) that :func:`warn_unit` issues as a
    :class:`fitface.errors.FitfaceWarning` once the capture is fitted (a capture that fails
    reports its error only).
    """
    from fitface.units import INFER_TOLERANCE, INFERRED_UNITS, infer_unit, nominal_scale

    scale = capture_size_scale(dec, targets, set_name)
    unit = infer_unit(scale, dec.unit) if scale > 0 else None
    if unit is not None:
        return unit, "inferred", scale, None
    nominal = ", ".join(f"{u} {nominal_scale(u, dec.unit):g}" for u in INFERRED_UNITS)
    src = f"{where}: " if where is not None else f"{name}: "
    text = (f"{src}cannot infer the landmarks' unit: their size against the model's mean face is {scale:.3g} "
            f"(capture numbers per {dec.unit}), not within a factor {INFER_TOLERANCE:g} of one of {nominal}; "
            f"assuming {dec.unit} (pass --unit)")
    return dec.unit, "assumed", scale, text


def warn_unit(cap: PreparedCapture) -> None:
    """Issue the capture's pending unit or scale-mismatch warning (see :func:`infer_capture_unit`
    and :func:`fitface.api.capture_fit.check_scale_mismatch`), if any."""
    import warnings

    from fitface.errors import FitfaceWarning

    for text in (cap.unit_warning, cap.scale_mismatch):
        if text:
            warnings.warn(FitfaceWarning(text), stacklevel=3)


def check_scale_mode(scale: str) -> str:
    """``scale`` if it is one of :data:`SCALE_MODES`, else a one-line :class:`InputError`."""
    if scale not in SCALE_MODES:
        raise InputError(f"--scale: expected one of {', '.join(SCALE_MODES)}; got {scale!r}")
    return scale


def choose_fit_scale(cap: PreparedCapture, scale: str) -> bool:
    """Whether ``cap``'s fit estimates a scale (True) or keeps its unit's (False, a rigid fit).

    Convention: a capture in a known unit has a known physical size, so under ``"auto"`` the
    model -> capture scale is the unit's (1e-3 for a model in mm and a capture in m) and the
    identity code alone explains the face's size; a free scale would trade size against the
    code and its regulariser (measured on the demo's real captures: vertex error 6.32 mm with
    a free scale against 3.57 mm with the unit's, docs/benchmarks.md). Photos always fit a scale
    (the camera's).
    """
    if cap.photo is not None or scale == "free":
        return True
    if scale == "unit":
        return False
    return cap.unit_source not in KNOWN_UNIT_SOURCES


def prepare_capture(dec, landmarks, scan=None, unit=None, landmark_set=None, name=None,
                    scale: str = "auto") -> PreparedCapture:
    """Read and check one 3D capture; ``scale`` (:data:`SCALE_MODES`) sets its ``fit_scale``."""
    from fitface.io.mesh import load_mesh
    from fitface.units import check_unit, scale_between

    pts, file_unit, lpath = read_targets(landmarks)
    check_coordinate_range(pts, lpath)
    set_name = choose_landmark_set(dec, pts.shape[0], landmark_set, lpath)
    if name is None:
        name = (lpath or (Path(scan) if isinstance(scan, (str, os.PathLike)) else None) or Path("capture")).stem
    size_scale, warning = None, None
    if unit is not None:
        cap_unit, source = check_unit(unit, "--unit"), "argument"
    elif file_unit is not None:
        cap_unit, source = file_unit, "file"
    else:
        cap_unit, source, size_scale, warning = infer_capture_unit(dec, pts, set_name, name, lpath)
    mesh, spath = None, None
    if scan is not None:
        if isinstance(scan, (str, os.PathLike)):
            spath = Path(scan)
            mesh = load_mesh(spath, require_faces=True)
        else:
            mesh = scan
    cap = PreparedCapture(name, pts, cap_unit, source, scale_between(cap_unit, dec.unit), set_name, lpath, spath, mesh,
                          size_scale, warning)
    cap.fit_scale = choose_fit_scale(cap, check_scale_mode(scale))
    cap.scale_check = scale == "auto" and source == "inferred" and not cap.fit_scale
    return cap


def codes_of(source: Any, what: str):
    """A Codes from a path or a Codes."""
    from fitface.io.codes import Codes, read_codes

    if isinstance(source, Codes):
        return source
    if isinstance(source, (str, os.PathLike)):
        return read_codes(source)
    raise InputError(f"{what}: expected a codes.json path or a Codes, got {type(source).__name__}")


def check_same_model(dec, codes, where: Any = None) -> None:
    """Refuse codes fitted with another model than ``dec`` (one line naming the codes' model)."""
    if codes.model_id != dec.model_id:
        ref = getattr(codes, "model", None)
        hint = f"; pass --model {ref}" if ref else ""
        raise InputError(
            f"codes are from another model (model_id {codes.model_id}); this model is {dec.model_id}{hint}", where)


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
