"""Landmark files: plain text, CSV, JSON, NumPy, ibug ``.pts`` and MeshLab ``.pp``.

Convention:
    * Points are returned exactly as written in the file, (L, 3) float64 (or (L, 2) for
      2D files), in file order: landmark i is row i. No unit conversion, no index shift.
      In particular ibug/300-W ``.pts`` annotations are image pixels with a 1-based origin
      (the top-left pixel's centre is (1, 1)); subtract 1 yourself for 0-based pixels.
    * MeshLab ``.pp`` files keep every ``<point>`` in document order, including points
      marked ``active="0"``, so landmark indices stay stable.
    * The unit, when a file states one, is returned as a string from
      :data:`fitface.units.UNITS`. Where it is stored:

      ========================  ==========================  =====================
      format                    unit                        names
      ========================  ==========================  =====================
      .txt .xyz .lm             ``# unit: mm`` comment      not stored
      .csv                      ``# unit: mm`` first line   ``name`` column
      .json                     ``"unit"`` key              ``"names"`` key
      .pp                       ``<unit value="mm"/>``      ``name`` attribute
      .npy, .pts                cannot store one            not stored
      ========================  ==========================  =====================

      :func:`save_landmarks` refuses a unit for a format that cannot store it (rather
      than dropping it silently) and drops names where they are not stored.

Format is chosen by suffix; an unknown suffix is sniffed from the content. Every problem
with a file raises :class:`fitface.errors.InputError` as ``"<path>: <problem>"`` on one
line, with the line number for text formats and the landmark index for JSON.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fitface.errors import InputError, one_line
from fitface.io.atomic import atomic_path, write_text
from fitface.io.files import read_input_bytes
from fitface.units import UNITS

#: Suffixes read and written (lower case); others are sniffed on reading.
LANDMARK_SUFFIXES = (".txt", ".xyz", ".lm", ".csv", ".json", ".npy", ".pts", ".pp")
_TEXT = (".txt", ".xyz", ".lm")
_NO_UNIT = (".npy", ".pts")

_UNIT_COMMENT = re.compile(r"^#\s*unit\s*[:=]\s*(\S+)\s*$", re.IGNORECASE)
_SEP = re.compile(r"[,\s]+")


@dataclass(frozen=True)
class Landmarks:
    """Landmarks read from a file.

    Attributes:
        points: (L, D) float64, D = 3 (or 2 for 2D files), in the file's unit and order.
        unit: the unit the file states ("mm", "cm", ...), or None if it states none.
        names: L names in point order, or None if the file has none.
    """

    points: np.ndarray
    unit: str | None = None
    names: tuple[str, ...] | None = None


# --------------------------------------------------------------------------- reading


def load_landmarks(path: str | os.PathLike, dims: int | None = None) -> np.ndarray:
    """Read landmark coordinates only.

    Args:
        path: a landmark file (see :data:`LANDMARK_SUFFIXES`).
        dims: 3 to require 3D points, 2 to require 2D, None for either.

    Returns:
        (L, dims) float64 points in file order and the file's unit.

    Raises:
        InputError: bad file (see :func:`read_landmarks`) or the wrong dimension.
    """
    if dims not in (None, 2, 3):
        raise ValueError(f"dims: expected None, 2 or 3, got {dims!r}")
    lm = read_landmarks(path)
    d = lm.points.shape[1]
    if dims is not None and d != dims:
        raise InputError(f"{d}D landmarks ({lm.points.shape[0]} points of {d} coordinates), expected {dims}D", path)
    return lm.points


def read_landmarks(path: str | os.PathLike) -> Landmarks:
    """Read landmarks with their unit and names.

    Returns:
        :class:`Landmarks` with points (L, 2 or 3) float64.

    Raises:
        InputError: missing/empty file, unknown layout, non-numeric field (quoted, with
            its line), wrong column count, NaN/inf, zero points, a ``.pts`` whose
            ``n_points`` disagrees with its data, names that do not match the points,
            an unknown unit.
    """
    p = Path(path)
    data = read_input_bytes(p)
    kind = _kind(p, data)
    if kind == ".npy":
        points, unit, names = _parse_npy(data, p)
    else:
        text = _decode(data, p)
        parser = {".txt": _parse_text, ".csv": _parse_csv, ".json": _parse_json, ".pts": _parse_pts, ".pp": _parse_pp}
        points, unit, names = parser[kind](text, p)
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[0] == 0:
        raise InputError("no landmarks in file", p)
    if points.shape[1] not in (2, 3):
        raise InputError(f"landmarks have {points.shape[1]} coordinates, expected 2 or 3", p)
    bad = ~np.isfinite(points)
    if bad.any():  # text parsers report the line first; this catches .npy and .pp
        i, j = (int(k) for k in np.argwhere(bad)[0])
        raise InputError(f"landmark {i}: {'NaN' if np.isnan(points[i, j]) else 'inf'} coordinate", p)
    if unit is not None:
        if not isinstance(unit, str) or unit not in UNITS:
            raise InputError(f"unknown unit {unit!r}; use one of {', '.join(UNITS)}", p)
    if names is not None:
        names = tuple(names)
        if len(names) != points.shape[0]:
            raise InputError(f"{len(names)} names for {points.shape[0]} landmarks", p)
        if not all(isinstance(n, str) for n in names):
            raise InputError("landmark names must be strings", p)
        if not any(names):
            names = None
    return Landmarks(points, unit, names)




def _decode(data: bytes, p: Path) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(f"line {line}: not UTF-8 text (binary data?)", p) from None


def _kind(p: Path, data: bytes) -> str:
    """The parser to use: the suffix if known, else sniffed from the first bytes."""
    suffix = p.suffix.lower()
    if suffix in _TEXT:
        return ".txt"
    if suffix in LANDMARK_SUFFIXES:
        return suffix
    if data.startswith(b"\x93NUMPY"):
        return ".npy"
    head = data[:4096].decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if head[:1] in "[{":
        return ".json"
    if head.startswith("<") and "PickedPoints" in head:
        return ".pp"
    if re.match(r"(version|n_points)\s*:", head):
        return ".pts"
    first = next((ln for ln in head.splitlines() if ln.strip() and not ln.lstrip().startswith("#")), "")
    if re.fullmatch(r"[\s,;+\-.0-9eE]*", first) and first.strip():
        return ".txt"
    if {"x", "y"} <= {t.strip().strip('"').lower() for t in first.split(",")}:
        return ".csv"
    raise InputError(
        f"unknown landmark format {p.suffix or '(no suffix)'!r} and the content is not recognised; "
        f"use one of {', '.join(LANDMARK_SUFFIXES)}",
        p,
    )


def _number(token: str, p: Path, where: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise InputError(f"{where}: non-numeric field {token!r}", p) from None
    if not math.isfinite(value):
        raise InputError(f"{where}: {'NaN' if math.isnan(value) else 'inf'} coordinate {token!r}", p)
    return value


def _columns_ok(n: int, p: Path, where: str, expected: int | None, ref: str = "") -> int:
    if expected is None:
        if n not in (2, 3):
            raise InputError(f"{where}: wrong column count: {n} fields, expected 2 or 3 (x y [z])", p)
        return n
    if n != expected:
        raise InputError(f"{where}: wrong column count: {n} fields, expected {expected}{ref}", p)
    return n


# ----- "x y z" text


def _parse_text(text: str, p: Path):
    fast = _parse_plain_table(text)
    if fast is not None:
        return fast
    unit, rows, ncol, first = None, [], None, 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        s = raw.strip()
        m = _UNIT_COMMENT.match(s)
        if m:
            unit = m.group(1)
            continue
        s = s.split("#", 1)[0].strip()
        if not s:
            continue
        toks = [t for t in _SEP.split(s) if t]
        where = f"line {lineno}"
        ncol = _columns_ok(len(toks), p, where, ncol, f" like line {first}")
        first = first or lineno
        rows.append([_number(t, p, where) for t in toks])
    return rows, unit, None


def _parse_plain_table(text: str):
    """The common case at numpy speed: whitespace-separated finite numbers, the same count on
    every line, comments only as whole ``#`` lines. Anything else returns None, and the
    line-by-line parser (with its messages) reads the file."""
    unit, body = None, []
    for raw in text.splitlines():
        s = raw.strip()
        if not s:
            continue
        if s[0] == "#":
            m = _UNIT_COMMENT.match(s)
            unit = m.group(1) if m else unit
            continue
        if "#" in s or "," in s:
            return None
        body.append(s)
    if not body:
        return None
    ncol = len(body[0].split())
    if ncol not in (2, 3):
        return None
    try:
        values = np.array(" ".join(body).split(), dtype=np.float64)
    except ValueError:
        return None
    if values.size != ncol * len(body) or not np.isfinite(values).all():
        return None
    rows = values.reshape(len(body), ncol)
    if any(len(b.split()) != ncol for b in body[1:]):
        return None
    return rows.tolist(), unit, None


# ----- CSV with a header


def _parse_csv(text: str, p: Path):
    unit, header, rows, names = None, None, [], []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        s = raw.strip()
        if s.startswith("#"):
            m = _UNIT_COMMENT.match(s)
            unit = m.group(1) if m else unit
            continue
        if not s:
            continue
        try:
            fields = [f.strip() for f in next(csv.reader([raw]))]
        except csv.Error as e:
            raise InputError(f"line {lineno}: malformed CSV ({e})", p) from None
        where = f"line {lineno}"
        if header is None:
            lower = [f.lower() for f in fields]
            if "x" not in lower or "y" not in lower:
                if all(re.fullmatch(r"[+\-.0-9eE]+|nan|inf", f.lower()) for f in fields):
                    return _parse_text(text, p)  # no header: plain numbers with commas
                raise InputError(f"{where}: CSV header has no x and y columns (got {', '.join(fields)[:80]!r})", p)
            cols = [lower.index(c) for c in "xyz" if c in lower]
            name_col = next((lower.index(c) for c in ("name", "label", "landmark") if c in lower), None)
            header = fields
            continue
        _columns_ok(len(fields), p, where, len(header), f" (the header has {len(header)} columns)")
        rows.append([_number(fields[c], p, f"{where}, column {header[c]!r}") for c in cols])
        names.append(fields[name_col] if name_col is not None else "")
    if header is None:
        raise InputError("no CSV header (expected columns x,y,z)", p)
    return rows, unit, names if name_col is not None else None


# ----- JSON


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed")


def _parse_json(text: str, p: Path):
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise InputError(f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}", p) from None
    except ValueError as e:  # NaN / Infinity constants
        raise InputError(f"invalid JSON: {e} (NaN/inf coordinates)", p) from None
    unit = names = None
    if isinstance(doc, dict):
        key = next((k for k in ("landmarks", "points") if k in doc), None)
        if key is None:
            raise InputError(f"JSON object has no 'landmarks' key (keys: {', '.join(map(str, doc))[:80]})", p)
        unit, names, entries = doc.get("unit"), doc.get("names"), doc[key]
        if names is not None and not isinstance(names, list):
            raise InputError("'names' must be a list of strings", p)
    else:
        entries = doc
    if not isinstance(entries, list):
        raise InputError(f"landmarks must be a JSON list, got {type(entries).__name__}", p)
    rows, ncol, entry_names = [], None, []
    for i, e in enumerate(entries):
        where = f"landmark {i}"
        if isinstance(e, dict):
            keys = {k.lower(): k for k in e}
            if "x" not in keys or "y" not in keys:
                raise InputError(f"{where}: object has no x and y keys", p)
            vals = [e[keys[c]] for c in "xyz" if c in keys]
            entry_names.append(e.get("name", ""))
        elif isinstance(e, list):
            vals = e
        else:
            raise InputError(f"{where}: expected [x, y, z] or {{\"x\":..}}, got {type(e).__name__}", p)
        ncol = _columns_ok(len(vals), p, where, ncol, " like landmark 0")
        for v in vals:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise InputError(f"{where}: non-numeric field {v!r}", p)
        try:
            rows.append([float(v) for v in vals])
        except OverflowError:
            raise InputError(f"{where}: number too large for float64", p) from None
    if names is None and entry_names and any(entry_names):
        names = [str(n) for n in entry_names]
    return rows, unit, names


# ----- NumPy


def _parse_npy(data: bytes, p: Path):
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise InputError("NumPy file holds Python objects (pickled), expected a numeric (L, 3) array", p) from None
        raise InputError(f"not a valid .npy file ({one_line(e)})", p) from None
    except Exception as e:  # np.load raises OSError, EOFError, SyntaxError, TokenError, ... on bad headers
        why = f"{type(e).__name__}: {one_line(e)}"
        raise InputError(f"truncated or not a .npy file ({why})", p) from None
    if arr.dtype.kind not in "fiu":
        raise InputError(f"NumPy array has dtype {arr.dtype}, expected floats", p)
    if arr.ndim != 2 or arr.shape[1] not in (2, 3):
        raise InputError(f"NumPy array has shape {arr.shape}, expected (L, 3) or (L, 2)", p)
    return arr, None, None


# ----- ibug .pts


def _parse_pts(text: str, p: Path):
    lines = text.splitlines()
    n_points, start = None, None
    for lineno, raw in enumerate(lines, start=1):
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        if s == "{":
            start = lineno
            break
        m = re.fullmatch(r"(\w+)\s*:\s*(.*)", s)
        if not m:
            raise InputError(f"line {lineno}: expected 'version: 1', 'n_points: N' or '{{', got {s[:40]!r}", p)
        if m.group(1) == "n_points":
            try:
                n_points = int(m.group(2))
            except ValueError:
                raise InputError(f"line {lineno}: non-numeric n_points {m.group(2)!r}", p) from None
    if start is None:
        raise InputError("no '{' opening the points: not a .pts file", p)
    if n_points is None:
        raise InputError("no 'n_points:' header line", p)
    rows, ncol, end = [], None, None
    for lineno in range(start + 1, len(lines) + 1):
        s = lines[lineno - 1].strip()
        if not s:
            continue
        if s == "}":
            end = lineno
            break
        toks = s.split()
        where = f"line {lineno}"
        ncol = _columns_ok(len(toks), p, where, ncol, f" like line {start + 1}")
        rows.append([_number(t, p, where) for t in toks])
    if end is None:
        raise InputError(f"truncated: no closing '}}' after {len(rows)} points", p)
    if len(rows) != n_points:
        raise InputError(f"n_points mismatch: the header says n_points: {n_points}, the file has {len(rows)} points", p)
    trailing = next((i for i in range(end + 1, len(lines) + 1) if lines[i - 1].strip()), None)
    if trailing is not None:
        raise InputError(f"line {trailing}: data after the closing '}}'", p)
    return rows, None, None


# ----- MeshLab .pp


def _parse_pp(text: str, p: Path):
    from xml.parsers import expat  # here, not at the top: xml.sax pulls in urllib (~20 ms a fit)

    parser = expat.ParserCreate()
    rows, names, tags, unit = [], [], [], None

    def start(tag, attrs):
        nonlocal unit
        line = parser.CurrentLineNumber
        tags.append(tag)
        if tag == "point":
            where = f"line {line}, point {len(rows)}"
            missing = [c for c in "xyz" if c not in attrs]
            if missing:
                raise InputError(f"{where}: no {'/'.join(missing)} attribute", p)
            rows.append([_number(attrs[c], p, where) for c in "xyz"])
            names.append(attrs.get("name", ""))
        elif tag == "unit":
            unit = attrs.get("value")

    def no_entities(*_args):
        raise InputError("XML entity declarations are not allowed in a .pp file", p)

    parser.StartElementHandler = start
    parser.EntityDeclHandler = no_entities
    try:
        parser.Parse(text.encode("utf-8"), True)
    except expat.ExpatError as e:
        why = expat.ErrorString(e.code)
        raise InputError(f"invalid XML at line {e.lineno} column {e.offset + 1}: {why}", p) from None
    if not tags or tags[0] != "PickedPoints":
        raise InputError(f"not a MeshLab picked-points file (root element {tags[0] if tags else None!r})", p)
    return rows, unit, names


# --------------------------------------------------------------------------- writing


def save_landmarks(
    path: str | os.PathLike,
    points: np.ndarray,
    unit: str | None = None,
    names: list[str] | tuple[str, ...] | None = None,
) -> None:
    """Write landmarks atomically; the format follows the suffix.

    Args:
        path: one of :data:`LANDMARK_SUFFIXES`.
        points: (L, 3) or (L, 2) finite floats; ``.pp`` needs 3D.
        unit: the points' unit (see :data:`fitface.units.UNITS`) or None.
        names: L strings, or None. Dropped by formats that cannot store them.

    Text formats write ``repr`` floats, so a float64 round trip is exact.

    Raises:
        InputError: unknown suffix, or a unit for ``.npy``/``.pts`` (nothing is written).
        ValueError: bad points (shape, NaN/inf), names or unit.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in LANDMARK_SUFFIXES:
        raise InputError(
            f"unknown landmark format {p.suffix or '(no suffix)'!r}; use one of {', '.join(LANDMARK_SUFFIXES)}", p
        )
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] not in (2, 3) or pts.shape[0] == 0:
        raise ValueError(f"points: expected shape (L, 3) or (L, 2) with L > 0, got {pts.shape}")
    if pts.dtype.kind not in "fiu":
        raise ValueError(f"points: expected a real array, got dtype {pts.dtype}")
    pts = pts.astype(np.float64)
    if not np.isfinite(pts).all():
        raise ValueError(f"points: NaN or inf at landmark {int(np.argwhere(~np.isfinite(pts))[0, 0])}")
    if unit is not None and unit not in UNITS:
        raise ValueError(f"unit: unknown unit {unit!r}; use one of {', '.join(UNITS)}")
    if unit is not None and suffix in _NO_UNIT:
        raise InputError(f"{suffix} files cannot store a unit ({unit!r}); use .json, .csv, .txt or .pp", p)
    if names is not None:
        names = list(names)
        if len(names) != pts.shape[0] or not all(isinstance(n, str) for n in names):
            raise ValueError(f"names: expected {pts.shape[0]} strings, got {len(names)} items")
        if any("\n" in n or "\r" in n for n in names):
            raise ValueError("names: a name contains a line break")
    if suffix == ".pp" and pts.shape[1] != 3:
        raise ValueError("points: .pp (MeshLab picked points) stores 3D points only")
    rows = pts.tolist()
    if suffix == ".npy":
        buf = io.BytesIO()
        np.save(buf, pts, allow_pickle=False)
        with atomic_path(p) as tmp:
            tmp.write_bytes(buf.getvalue())
        return
    if suffix in _TEXT:
        text = (f"# unit: {unit}\n" if unit else "") + "".join(" ".join(map(repr, r)) + "\n" for r in rows)
    elif suffix == ".csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        if unit:
            buf.write(f"# unit: {unit}\n")
        axes = list("xyz"[: pts.shape[1]])
        w.writerow((["name"] if names else []) + axes)
        for i, r in enumerate(rows):
            w.writerow(([names[i]] if names else []) + [repr(v) for v in r])
        text = buf.getvalue()
    elif suffix == ".json":
        out = ["{\n"]
        if unit:
            out.append(f'  "unit": {json.dumps(unit)},\n')
        if names:
            out.append(f'  "names": {json.dumps(names)},\n')
        out.append('  "landmarks": [\n' + ",\n".join("    " + json.dumps(r) for r in rows) + "\n  ]\n}\n")
        text = "".join(out)
    elif suffix == ".pts":
        text = f"version: 1\nn_points: {len(rows)}\n{{\n" + "".join(" ".join(map(repr, r)) + "\n" for r in rows) + "}\n"
    else:  # .pp
        from xml.sax.saxutils import quoteattr

        out = ['<!DOCTYPE PickedPoints>\n<PickedPoints>\n <DocumentData>\n']
        if unit:
            out.append(f'  <unit value="{unit}"/>\n')
        out.append(" </DocumentData>\n")
        for i, (x, y, z) in enumerate(rows):
            name = names[i] if names else str(i)
            out.append(f' <point x="{x!r}" y="{y!r}" z="{z!r}" name={quoteattr(name)} active="1"/>\n')
        out.append("</PickedPoints>\n")
        text = "".join(out)
    write_text(p, text)


__all__ = ["LANDMARK_SUFFIXES", "Landmarks", "load_landmarks", "read_landmarks", "save_landmarks"]
