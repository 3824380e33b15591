"""Latent-code files (``codes.json``): written by fitting, read by retargeting.

Layout (pretty JSON, UTF-8)::

    {
      "format_version": 1,
      "model_id": "<hash of the model file>",
      "model": "ict-linear",
      "unit": "mm",
      "codes": {"identity": [0.1, ...], "expression": [...], "noise": [...]},
      "transform": {"scale": 1.0, "rotation": [[1.0, 0.0, 0.0], ...], "translation": [0.0, 0.0, 0.0]},
      "lambda": 0.01, "landmark_rms": 1.2, ...
    }

Convention:
    * ``model`` (optional) says which model made the codes: a built-in model name
      (:mod:`fitface.io.model_registry`) or the absolute path of the model file. ``retarget`` and
      ``interpolate`` load it when no model is given, and check it by ``model_id``.
    * ``transform`` maps model space to the target's space:
      ``x_target = scale * rotation @ x_model + translation`` (x as a column 3-vector),
      translation in ``unit``; rotation is a proper rotation (orthonormal, det +1).
    * Every key other than format_version/model_id/model/codes/transform/unit is kept in
      :attr:`Codes.extra` and written back unchanged (numpy arrays and scalars become
      JSON lists and numbers).
    * Floats are written with ``repr`` (shortest exact form), so a float64 round trip is
      exact. NaN and inf are rejected on writing and on reading (not valid JSON).

A bad file raises :class:`fitface.errors.InputError` naming the file and the key, e.g.
``"codes.json: codes.identity[3]: non-numeric value 'abc'"``; :func:`write_codes` raises
``ValueError`` naming the key for bad data and writes nothing.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fitface.errors import InputError
from fitface.io.atomic import write_text
from fitface.units import UNITS

#: The layout version written; newer files are refused.
FORMAT_VERSION = 1
#: Largest tolerated |RᵀR - I| entry and |det R - 1| for ``transform.rotation``; loose
#: enough for a rotation stored in float32, tight enough to catch a non-rotation.
ROTATION_ATOL = 1e-5

_RESERVED = ("format_version", "model_id", "model", "codes", "transform", "unit")


@dataclass
class Codes:
    """Fitted latent codes and the rigid+scale pose, with any other results.

    Attributes:
        model_id: identifies the model the codes belong to (the hash of its file).
        codes: one list of floats per factor name, e.g. {"identity": [...], "expression": [...]}.
        transform: None, or {"scale": float > 0, "rotation": 3x3 nested list,
            "translation": 3 list} (see the module's convention).
        unit: the length unit of the transform's translation and of fitted geometry.
        extra: any other JSON keys (lambda, landmark_residuals, landmark_rms, ...).
        model: the model that made the codes: a built-in model name or a model file's absolute
            path (None: not recorded, as in files written before fitface recorded it).
    """

    model_id: str
    codes: dict[str, list[float]]
    transform: dict | None = None
    unit: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    model: str | None = None

    def code(self, name: str) -> np.ndarray:
        """The code of factor ``name`` as (n,) float64; KeyError lists the factors."""
        if name not in self.codes:
            raise KeyError(f"no code {name!r}; the file has {', '.join(self.codes) or 'none'}")
        return np.asarray(self.codes[name], dtype=np.float64)


# --------------------------------------------------------------------------- validation


def _finite_number(v: Any, key: str, fail: Callable[[str], Exception]) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise fail(f"{key}: non-numeric value {v!r}")
    try:
        f = float(v)
    except OverflowError:
        raise fail(f"{key}: number too large for float64") from None
    if not math.isfinite(f):
        raise fail(f"{key}: {'NaN' if math.isnan(f) else 'inf'} value")
    return f


def _number_list(v: Any, key: str, fail: Callable[[str], Exception], length: int | None = None) -> list[float]:
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if not isinstance(v, (list, tuple)):
        raise fail(f"{key}: expected a list of numbers, got {type(v).__name__}")
    if length is not None and len(v) != length:
        raise fail(f"{key}: expected {length} numbers, got {len(v)}")
    return [_finite_number(x, f"{key}[{i}]", fail) for i, x in enumerate(v)]


def _validate(doc: dict, fail: Callable[[str], Exception]) -> Codes:
    """Check a decoded document (or a Codes' fields) and build a normalised :class:`Codes`."""
    version = doc.get("format_version", FORMAT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise fail(f"format_version: expected a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise fail(f"format_version: {version} is newer than this fitface reads ({FORMAT_VERSION}); upgrade fitface")
    for key in ("model_id", "codes"):
        if key not in doc:
            raise fail(f"missing key {key!r}")
    model_id = doc["model_id"]
    if not isinstance(model_id, str) or not model_id:
        raise fail(f"model_id: expected a non-empty string, got {model_id!r}")
    raw_codes = doc["codes"]
    if not isinstance(raw_codes, dict) or not raw_codes:
        raise fail(f"codes: expected an object of factor name -> list of numbers, got {raw_codes!r:.60}")
    codes = {}
    for name, vec in raw_codes.items():
        if not isinstance(name, str) or not name:
            raise fail(f"codes: factor names must be non-empty strings, got {name!r}")
        codes[name] = _number_list(vec, f"codes.{name}", fail)
        if not codes[name]:
            raise fail(f"codes.{name}: empty code")
    transform = doc.get("transform")
    if transform is not None:
        transform = _validate_transform(transform, fail)
    unit = doc.get("unit")
    if unit is not None and (not isinstance(unit, str) or unit not in UNITS):
        raise fail(f"unit: unknown unit {unit!r}; use one of {', '.join(UNITS)}")
    model = doc.get("model")
    if model is not None and (not isinstance(model, str) or not model or "\n" in model):
        raise fail(f"model: expected a model name or file path (a non-empty string), got {model!r:.60}")
    extra = {k: v for k, v in doc.items() if k not in _RESERVED}
    return Codes(model_id, codes, transform, unit, extra, model)


def _validate_transform(t: Any, fail: Callable[[str], Exception]) -> dict:
    if not isinstance(t, dict):
        raise fail(f"transform: expected an object with scale, rotation, translation, got {type(t).__name__}")
    for key in ("scale", "rotation", "translation"):
        if key not in t:
            raise fail(f"transform: missing key {key!r}")
    scale = _finite_number(t["scale"], "transform.scale", fail)
    if scale <= 0:
        raise fail(f"transform.scale: must be positive, got {scale!r}")
    rot = t["rotation"]
    if isinstance(rot, np.ndarray):
        rot = rot.tolist()
    if not isinstance(rot, (list, tuple)) or len(rot) != 3:
        shape = len(rot) if isinstance(rot, (list, tuple)) else type(rot).__name__
        raise fail(f"transform.rotation: expected 3 rows of 3 numbers (3x3), got {shape}")
    rows = [_number_list(r, f"transform.rotation[{i}]", fail, 3) for i, r in enumerate(rot)]
    r = np.asarray(rows)  # (3, 3)
    err = max(np.abs(r.T @ r - np.eye(3)).max(), abs(np.linalg.det(r) - 1.0))
    if err > ROTATION_ATOL:
        raise fail(f"transform.rotation: not a rotation (orthonormality/det error {err:.2g} > {ROTATION_ATOL:g})")
    translation = _number_list(t["translation"], "transform.translation", fail, 3)
    return {**t, "scale": scale, "rotation": rows, "translation": translation}


# --------------------------------------------------------------------------- reading / writing


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed (NaN/inf)")


def read_codes(path: str | os.PathLike) -> Codes:
    """Read and validate a codes file.

    Returns:
        :class:`Codes` with every number a Python float.

    Raises:
        InputError: missing/empty file, invalid JSON (with line and column), a missing
            key, non-numeric or NaN/inf values, a bad transform, an unknown unit.
    """
    p = Path(path)
    if not p.exists():
        raise InputError("file does not exist", p)
    if p.is_dir():
        raise InputError("is a directory, expected a file", p)
    data = p.read_bytes()
    if not data:
        raise InputError("file is empty (0 bytes)", p)
    try:
        doc = json.loads(data.decode("utf-8-sig"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text (binary data?)", p) from None
    except json.JSONDecodeError as e:
        raise InputError(f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}", p) from None
    except ValueError as e:
        raise InputError(f"invalid JSON: {e}", p) from None
    except RecursionError:
        raise InputError("invalid JSON: nested too deeply", p) from None
    if not isinstance(doc, dict):
        raise InputError(f"expected a JSON object with model_id and codes, got a {type(doc).__name__}", p)
    return _validate(doc, lambda msg: InputError(msg, p))


def to_json(v: Any, key: str) -> Any:
    """Plain-JSON version of ``v`` (what :func:`write_codes` writes, and the fit summaries):
    numpy arrays and scalars become lists and numbers, tuples lists, dict keys strings.

    Args:
        v: a value: dicts, lists, tuples, numpy arrays and scalars, str, bool, int, float, None.
        key: its name in the document (``"summary"``), for the messages.

    Raises:
        ValueError: NaN or inf, or a value of another type, naming its key (``"summary.rms: NaN
            cannot be written to JSON"``).
    """
    if isinstance(v, np.ndarray):
        if v.dtype.kind in "fiub":  # numbers: checked at once, not element by element
            if v.dtype.kind == "f" and not np.isfinite(v).all():
                where = tuple(int(i) for i in np.argwhere(~np.isfinite(v))[0])  # the first, as the walk names it
                bad = v[where]
                name = key + "".join(f"[{i}]" for i in where)
                raise ValueError(f"{name}: {'NaN' if np.isnan(bad) else 'inf'} cannot be written to JSON")
            return v.tolist()
        v = v.tolist()
    elif isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, dict):
        return {str(k): to_json(x, f"{key}.{k}") for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [to_json(x, f"{key}[{i}]") for i, x in enumerate(v)]
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"{key}: {'NaN' if math.isnan(v) else 'inf'} cannot be written to JSON")
    if v is None or isinstance(v, (str, bool, int, float)):
        return v
    raise ValueError(f"{key}: cannot write a {type(v).__name__} to JSON")


_NUMBER_TYPES = (int, float, bool)
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_ .\-]*\Z")


def _key(k: str) -> str:
    """A dict key as JSON: plain names quoted directly (what ``json.dumps`` gives them), others
    through the encoder."""
    return f'"{k}"' if _PLAIN_KEY.match(k) else json.dumps(k)


def _dump(v: Any, level: int = 0) -> str:
    """JSON with 2-space indent, each list of scalars (a code, a matrix row) on one line."""
    pad, inner = "  " * level, "  " * (level + 1)
    if isinstance(v, dict):
        if not v:
            return "{}"
        items = [f"{inner}{_key(k)}: {_dump(x, level + 1)}" for k, x in v.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(v, list) and any(isinstance(x, (dict, list)) for x in v):
        if all(type(x) is list and all(type(y) in _NUMBER_TYPES for y in x) for x in v):
            # a matrix of numbers (residuals, a rotation): one encoder call, a row per line; the
            # separator "], [" cannot occur inside a number
            text = json.dumps(v, allow_nan=False)
            return "[\n" + inner + text[1:-1].replace("], [", "],\n" + inner + "[") + f"\n{pad}]"
        return "[\n" + ",\n".join(f"{inner}{_dump(x, level + 1)}" for x in v) + f"\n{pad}]"
    return json.dumps(v, allow_nan=False, ensure_ascii=False)


def write_codes(path: str | os.PathLike, codes: Codes) -> None:
    """Validate ``codes`` and write them atomically as pretty JSON (exact float64 values):
    ``write_text(path, format_codes(codes))``."""
    write_text(path, format_codes(codes))


def format_codes(codes: Codes) -> str:
    """Validate ``codes`` and return the text :func:`write_codes` writes (exact float64 values).

    Raises:
        ValueError: naming the key, for anything :func:`read_codes` would reject, a NaN/inf
            anywhere (also in ``extra``), an ``extra`` key that shadows a reserved one, or a
            value JSON cannot hold. Nothing is written.
    """
    clash = [k for k in codes.extra if k in _RESERVED]
    if clash:
        raise ValueError(f"extra: keys {clash} are reserved; set them as Codes fields")
    doc = {
        "format_version": FORMAT_VERSION,
        "model_id": codes.model_id,
        "model": codes.model,
        "unit": codes.unit,
        "codes": codes.codes,
        "transform": codes.transform,
    }
    doc = {k: v for k, v in doc.items() if v is not None or k in ("model_id", "codes")}
    checked = _validate(doc, ValueError)  # normalises numpy values to floats
    out: dict[str, Any] = {"format_version": FORMAT_VERSION, "model_id": checked.model_id}
    if checked.model is not None:
        out["model"] = checked.model
    if checked.unit is not None:
        out["unit"] = checked.unit
    out["codes"] = checked.codes
    if checked.transform is not None:
        out["transform"] = to_json(checked.transform, "transform")
    for k, v in codes.extra.items():
        out[str(k)] = to_json(v, str(k))
    return _dump(out) + "\n"


__all__ = ["FORMAT_VERSION", "ROTATION_ATOL", "Codes", "format_codes", "read_codes", "to_json", "write_codes"]
