"""User landmark-set files: vertex indices or triangle + barycentric rows -> a LandmarkSet.

Convention: row ``i`` of the file is point ``i`` of the set (see :mod:`fitface.landmarks.sets`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fitface.errors import InputError, one_line

#: Barycentric slack when validating user files (>= -tol, |sum - 1| <= tol; then renormalised).
BARY_FILE_TOL = 1e-6


def read_landmark_set_file(path: str | os.PathLike, name: str, faces: np.ndarray, num_vertices: int):
    """Parse a user landmark-set file into a :class:`fitface.landmarks.sets.LandmarkSet`.

    Accepted layouts (validated against the model's ``faces`` (F, 3) and ``num_vertices``):
        * vertex indices: a JSON list of ints, or text with one int per line;
        * surface points: JSON ``[{"face": f, "bary": [a, b, c]}, ...]`` or text rows
          ``f a b c``; barycentrics must be finite, >= -BARY_FILE_TOL and sum to 1 within BARY_FILE_TOL
          (they are renormalised).
    Text files may hold ``#`` comments and blank lines; fields split on whitespace or commas.
    """
    import json
    import re

    from fitface.landmarks.sets import LandmarkSet

    p = Path(path)
    if not p.is_file():
        raise InputError("no such landmark-set file", p)
    text = p.read_bytes().decode("utf-8-sig", errors="replace")
    faces = np.asarray(faces, dtype=np.int64)
    nf = faces.shape[0]
    vids: list[int] = []
    rows: list[tuple[int, list[float]]] = []
    stripped = text.strip()
    if not stripped:
        raise InputError("empty landmark-set file", p)
    if stripped[0] in "[{":
        try:
            doc = json.loads(stripped)
        except json.JSONDecodeError as e:
            raise InputError(f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}", p) from None
        if isinstance(doc, dict):
            doc = doc.get("points", doc.get("vertices"))
        if not isinstance(doc, list) or not doc:
            raise InputError("expected a JSON list of vertex indices or of {\"face\": f, \"bary\": [a, b, c]}", p)
        for i, item in enumerate(doc):
            if isinstance(item, bool):
                raise InputError(f"item {i}: expected an integer or an object, got {item!r}", p)
            if isinstance(item, int):
                vids.append(item)
            elif isinstance(item, dict) and "face" in item and "bary" in item:
                f, b = item["face"], item["bary"]
                if isinstance(f, bool) or not isinstance(f, int) or not isinstance(b, list) or len(b) != 3 or not all(
                        isinstance(x, (int, float)) and not isinstance(x, bool) for x in b):
                    raise InputError(f"item {i}: expected face (int) and bary (3 numbers)", p)
                rows.append((f, [float(x) for x in b]))
            else:
                raise InputError(f"item {i}: expected a vertex index or {{\"face\": f, \"bary\": [a, b, c]}}, "
                                 f"got {item!r:.60}", p)
    else:
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            fields = [t for t in re.split(r"[,\s]+", line) if t]
            if len(fields) not in (1, 4):
                raise InputError(f"line {lineno}: expected 1 field (vertex index) or 4 (face a b c), "
                                 f"got {len(fields)}", p)
            try:
                if len(fields) == 1:
                    vids.append(int(fields[0]))
                else:
                    rows.append((int(fields[0]), [float(x) for x in fields[1:]]))
            except ValueError:
                raise InputError(f"line {lineno}: non-numeric field in {line!r:.60}", p) from None
    if vids and rows:
        raise InputError("mixes vertex indices and face+barycentric rows; use one layout", p)
    if vids:
        v = np.asarray(vids, dtype=np.int64)
        bad = (v < 0) | (v >= num_vertices)
        if bad.any():
            raise InputError(f"vertex index {int(v[bad][0])} out of range [0, {num_vertices})", p)
        try:
            return LandmarkSet.from_vertex_indices(name, v, faces)
        except ValueError as exc:
            raise InputError(one_line(exc), p) from None
    if not rows:
        raise InputError("no landmarks in file", p)
    fi = np.asarray([r[0] for r in rows], dtype=np.int64)
    bary = np.asarray([r[1] for r in rows], dtype=np.float64)
    bad = (fi < 0) | (fi >= nf)
    if bad.any():
        raise InputError(f"point {int(np.flatnonzero(bad)[0])}: face index {int(fi[bad][0])} out of range [0, {nf})", p)
    if not np.isfinite(bary).all():
        raise InputError(f"point {int(np.argwhere(~np.isfinite(bary))[0, 0])}: NaN or inf barycentric", p)
    sums = bary.sum(axis=1)
    bad = (np.abs(sums - 1.0) > BARY_FILE_TOL) | (bary < -BARY_FILE_TOL).any(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"point {i}: barycentrics {bary[i].tolist()} must be >= 0 and sum to 1", p)
    bary = np.clip(bary, 0.0, None)
    return LandmarkSet(name, fi, bary / bary.sum(axis=1, keepdims=True))
