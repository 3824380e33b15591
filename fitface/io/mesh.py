"""Triangle-mesh and point-cloud files: PLY, OBJ, OFF (read and write) and STL.

Convention:
    * Vertex order is the file's order, exactly. Meshes in correspondence share an index
      space, so nothing here merges, drops (unreferenced vertices are kept), splits (OBJ
      texture seams do not duplicate positions) or reorders vertices.
    * Faces are (F, 3) int64, 0-based, counter-clockwise as written. Polygons with more
      than three corners are fan-triangulated in order: (a, b, c, d) -> (a, b, c), (a, c, d).
    * Vertex colours, when the file has them, are (V, 4) uint8 RGBA.
    * Files carry no unit; the caller states it (fitface's default is mm, see units.py).
    * An OBJ with several objects/groups is one mesh: OBJ indices are global to the file,
      so the objects are concatenated in file order. Only ``v`` and ``f`` records are used.

PLY, OBJ and OFF are parsed here, not by trimesh: trimesh 4.x (``process=False``) drops
unreferenced OBJ vertices and splits vertices on texture seams (breaking correspondence),
silently misreads an ASCII PLY whose element counts disagree with the data, cannot read a
binary PLY mixing triangles and quads, and does not check face indices. STL (a triangle
soup, three vertices per face, so there is no correspondence to keep) is read through
trimesh, imported lazily. Writers are numpy-only: PLY is binary little-endian with float64
vertices (exact); OBJ/OFF write ``repr`` floats (shortest exact float64 round trip).

Every problem with a file raises :class:`fitface.errors.InputError` naming the file and
the problem (and the line for text formats); bad arrays passed to :func:`save_mesh` raise
``ValueError``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fitface.checks import check_faces, check_finite, check_shape
from fitface.errors import InputError, one_line
from fitface.io.atomic import atomic_path
from fitface.io.files import read_input_bytes

#: Suffixes :func:`load_mesh` reads and :func:`save_mesh` writes (lower case).
MESH_SUFFIXES = (".ply", ".obj", ".off", ".stl")


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh or point cloud as stored in a file.

    Attributes:
        vertices: (V, 3) float64, in the file's unit.
        faces: (F, 3) int64 vertex indices in [0, V); (0, 3) for a point cloud.
        vertex_colors: (V, 4) uint8 RGBA, or None when the file has no vertex colours.
    """

    vertices: np.ndarray
    faces: np.ndarray
    vertex_colors: np.ndarray | None = None

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])


# --------------------------------------------------------------------------- loading


def load_mesh(path: str | os.PathLike, require_faces: bool = True) -> Mesh:
    """Read a mesh (or, with ``require_faces=False``, a point cloud) keeping vertex order.

    Args:
        path: a ``.ply`` (ASCII or binary), ``.obj``, ``.off`` or ``.stl`` file.
        require_faces: if True, a file without faces is an error ("no faces").

    Returns:
        :class:`Mesh` with vertices (V, 3) float64, faces (F, 3) int64, colours or None.

    Raises:
        InputError: missing or empty file, unknown suffix, not a mesh of that format,
            truncated data, non-numeric fields, NaN/inf coordinates, face indices out of
            range, no vertices, or no faces when ``require_faces``.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise InputError(
            f"unknown mesh format {p.suffix or '(no suffix)'!r}; use one of {', '.join(MESH_SUFFIXES)}", p
        )
    data = read_input_bytes(p)
    reader = {".ply": _parse_ply, ".obj": _parse_obj, ".off": _parse_off, ".stl": _parse_stl}[suffix]
    vertices, faces, colors = reader(data, p)
    return _validated(vertices, faces, colors, p, require_faces)




def load_obj_polygons(path: str | os.PathLike) -> tuple[np.ndarray, list[list[int]]]:
    """Read an OBJ file's vertices and its polygons as written, not triangulated (for a caller
    that selects polygons before triangulating them; :func:`load_mesh` fans them).

    Args:
        path: an OBJ file (read as OBJ whatever its suffix).

    Returns:
        (V, 3) float64 vertices in file order, and the polygons: lists of three or more 0-based
        vertex indices each, in file order (none for a file without ``f`` records).

    Raises:
        InputError: as :func:`load_mesh` with ``require_faces=False``.
    """
    p = Path(path)
    vertices, polys, colors = _parse_obj_polygons(read_input_bytes(p), p)
    # the parser has checked the polygons' indices; this checks the vertices
    return _validated(vertices, (), colors, p, require_faces=False).vertices, polys


def _validated(vertices, faces, colors, p: Path, require_faces: bool) -> Mesh:
    vertices = np.ascontiguousarray(vertices, dtype=np.float64).reshape(-1, 3)
    faces = np.ascontiguousarray(faces, dtype=np.int64).reshape(-1, 3)
    if vertices.shape[0] == 0:
        raise InputError("no vertices: not a mesh", p)
    bad = ~np.isfinite(vertices)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        kind = "NaN" if np.isnan(vertices[row, col]) else "inf"
        raise InputError(
            f"{kind} coordinate at vertex {row} ({'xyz'[col]}); "
            f"{int(bad.any(axis=1).sum())} non-finite vertices in all",
            p,
        )
    if faces.size and (faces.min() < 0 or faces.max() >= vertices.shape[0]):
        frow = int(np.argwhere((faces < 0) | (faces >= vertices.shape[0]))[0, 0])
        raise InputError(
            f"face {frow} has vertex index out of range {faces[frow].tolist()} (the file has "
            f"{vertices.shape[0]} vertices)",
            p,
        )
    if require_faces and faces.shape[0] == 0:
        raise InputError(f"no faces: {vertices.shape[0]} vertices only (a point cloud, expected a mesh)", p)
    if colors is not None:
        colors = np.ascontiguousarray(colors, dtype=np.uint8).reshape(vertices.shape[0], 4)
    return Mesh(vertices, faces, colors)


def _fan(polys: list[list[int]]) -> np.ndarray:
    """Fan-triangulate polygons given as lists of 0-based indices -> (F, 3) int64."""
    tris = [(poly[0], poly[k], poly[k + 1]) for poly in polys for k in range(1, len(poly) - 1)]
    return np.asarray(tris, dtype=np.int64).reshape(-1, 3)


def _to_float(token: str, p: Path, lineno: int, what: str) -> float:
    try:
        return float(token)
    except ValueError:
        raise InputError(f"line {lineno}: non-numeric {what} {token!r}", p) from None


def _to_int(token: str, p: Path, lineno: int, what: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise InputError(f"line {lineno}: non-integer {what} {token!r}", p) from None


def _text_lines(data: bytes, p: Path, what: str) -> list[str]:
    if b"\0" in data[:4096]:
        raise InputError(f"binary data, not an {what} text file", p)
    return data.decode("utf-8", errors="replace").splitlines()


# ----- OBJ


def _parse_obj(data: bytes, p: Path):
    verts, polys, colors = _parse_obj_polygons(data, p)
    return verts, _fan(polys), colors


def _parse_obj_polygons(data: bytes, p: Path):
    """(V, 3) float64 vertices, 0-based polygons as written, (V, 4) float colours or None."""
    lines = _text_lines(data, p, "OBJ")
    verts: list[tuple[float, float, float]] = []
    cols: list[tuple[float, float, float]] = []
    polys: list[list[int]] = []
    n_v_with_color = 0
    for lineno, raw in enumerate(lines, start=1):
        parts = (raw.split("#", 1)[0] if "#" in raw else raw).split()
        if not parts:
            continue
        tag = parts[0]
        if tag == "v":
            if len(parts) not in (4, 5, 7, 8):  # x y z [w] | x y z r g b [a]
                raise InputError(f"line {lineno}: vertex has {len(parts) - 1} fields, expected 3 (x y z)", p)
            try:
                xyz = (float(parts[1]), float(parts[2]), float(parts[3]))
            except ValueError:  # the message names the first bad field
                xyz = tuple(_to_float(t, p, lineno, "vertex coordinate") for t in parts[1:4])
            verts.append(xyz)  # type: ignore[arg-type]
            if len(parts) >= 7:
                cols.append(tuple(_to_float(t, p, lineno, "vertex colour") for t in parts[4:7]))  # type: ignore
                n_v_with_color += 1
        elif tag == "f":
            if len(parts) < 4:
                raise InputError(f"line {lineno}: face has {len(parts) - 1} corners, expected at least 3", p)
            try:
                idx = [int(tok.partition("/")[0]) for tok in parts[1:]]
            except ValueError:  # the first bad token, in order, names the problem
                idx = []
                for tok in parts[1:]:
                    idx.append(_to_int(tok.split("/", 1)[0], p, lineno, "face index"))
                    if idx[-1] == 0:
                        break
            if 0 in idx:
                raise InputError(f"line {lineno}: face index 0 (OBJ indices start at 1)", p)
            # positive: 1-based; negative: relative to the vertices read so far
            n = len(verts)
            poly = [i - 1 if i > 0 else n + i for i in idx]
            if min(poly) < 0 or max(poly) >= n:
                raise InputError(
                    f"line {lineno}: face vertex index out of range ({' '.join(parts[1:])}; "
                    f"{len(verts)} vertices defined so far)",
                    p,
                )
            polys.append(poly)
        # vt, vn, vp, o, g, s, l, usemtl, mtllib, ...: not needed for geometry
    if not verts:
        raise InputError("no vertices ('v' lines): not an OBJ mesh", p)
    colors = None
    if n_v_with_color == len(verts):
        c = np.asarray(cols, dtype=np.float64)
        # the common extension stores colours in [0, 1]; some writers use 0..255
        c = c if c.max(initial=0.0) > 1.0 else c * 255.0
        colors = np.concatenate([np.clip(np.rint(c), 0, 255), np.full((len(c), 1), 255.0)], axis=1)
    return np.asarray(verts, dtype=np.float64), polys, colors


# ----- OFF

_OFF_HEADER = re.compile(r"^(ST)?(C)?(N)?(4)?(n)?OFF$")


def _parse_off(data: bytes, p: Path):
    lines = _text_lines(data, p, "OFF")
    # (line number, tokens) of every non-blank, non-comment line
    rows = [(i, ln.split("#", 1)[0].split()) for i, ln in enumerate(lines, start=1)]
    rows = [(i, t) for i, t in rows if t]
    if not rows:
        raise InputError("no data (only comments or blank lines): not an OFF file", p)
    lineno, first = rows[0]
    m = _OFF_HEADER.match(first[0])
    if not m:
        raise InputError(f"line {lineno}: not an OFF file (first keyword {first[0][:20]!r}, expected 'OFF')", p)
    if m.group(4) or m.group(5):
        raise InputError(f"line {lineno}: {first[0]} (non-3D OFF) is not supported", p)
    has_color = bool(m.group(2))
    # the counts follow the keyword, on the same line or the next one
    k = 0
    if len(first) > 1:
        counts_line, counts = lineno, first[1:]
        k = 1
    elif len(rows) > 1:
        counts_line, counts = rows[1]
        k = 2
    else:
        raise InputError(f"line {lineno}: truncated: no vertex/face counts after 'OFF'", p)
    if len(counts) < 2:
        raise InputError(f"line {counts_line}: expected 'num_vertices num_faces [num_edges]'", p)
    nv = _to_int(counts[0], p, counts_line, "vertex count")
    nf = _to_int(counts[1], p, counts_line, "face count")
    if nv < 0 or nf < 0:
        raise InputError(f"line {counts_line}: negative vertex or face count", p)
    body = rows[k:]
    if len(body) < nv + nf:
        raise InputError(
            f"truncated: header promises {nv} vertices and {nf} faces, the file has {len(body)} data lines", p
        )
    if len(body) > nv + nf:
        lno = body[nv + nf][0]
        raise InputError(f"line {lno}: extra data after {nv} vertices and {nf} faces (wrong counts?)", p)
    verts = np.empty((nv, 3), dtype=np.float64)
    colors = np.full((nv, 4), np.nan) if has_color else None  # alpha stays NaN when absent
    ncol = 6 if m.group(3) else 3  # NOFF: a normal follows the position
    int_colors = False
    for j, (lno, toks) in enumerate(body[:nv]):
        if len(toks) < ncol:
            raise InputError(f"line {lno}: vertex {j} has {len(toks)} fields, expected at least {ncol}", p)
        verts[j] = [_to_float(t, p, lno, "vertex coordinate") for t in toks[:3]]
        if colors is not None:
            ctoks = toks[ncol:]
            if len(ctoks) not in (3, 4):
                raise InputError(f"line {lno}: COFF vertex {j} has {len(ctoks)} colour fields, expected 3 or 4", p)
            colors[j, : len(ctoks)] = [_to_float(t, p, lno, "vertex colour") for t in ctoks]
            int_colors = int_colors or all(re.fullmatch(r"[+-]?\d+", t) for t in ctoks)
    polys = []
    for j, (lno, toks) in enumerate(body[nv:]):
        n = _to_int(toks[0], p, lno, "face corner count")
        if n < 3 or len(toks) < 1 + n:
            raise InputError(f"line {lno}: face {j} has {len(toks) - 1} indices for {n} corners (needs >= 3)", p)
        poly = [_to_int(t, p, lno, "face index") for t in toks[1 : 1 + n]]
        if any(i < 0 or i >= nv for i in poly):
            raise InputError(f"line {lno}: face {j} has vertex index out of range {poly} ({nv} vertices)", p)
        polys.append(poly)
    if colors is not None:
        # integer colours are 0..255, float colours 0..1 (the OFF convention)
        colors = colors if int_colors else colors * 255.0
        colors = np.clip(np.rint(np.where(np.isnan(colors), 255.0, colors)), 0, 255)
    return verts, _fan(polys), colors


# ----- PLY

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip


@dataclass
class _PlyElement:
    name: str
    count: int
    # (name, dtype) for a scalar, (name, (count dtype, item dtype)) for a list
    props: list


def _parse_ply_header(data: bytes, p: Path):
    if not data.startswith(b"ply"):
        raise InputError("not a PLY file (does not start with 'ply')", p)
    end = re.search(rb"end_header[ \t]*\r?\n", data)
    if end is None:
        raise InputError("truncated PLY header (no 'end_header')", p)
    header = data[: end.start()].decode("ascii", errors="replace").splitlines()
    fmt = None
    elements: list[_PlyElement] = []
    for lineno, line in enumerate(header, start=1):
        toks = line.split()
        if not toks or toks[0] in ("ply", "comment", "obj_info"):
            continue
        if toks[0] == "format":
            if len(toks) < 2 or toks[1] not in ("ascii", "binary_little_endian", "binary_big_endian"):
                raise InputError(f"line {lineno}: unknown PLY format {' '.join(toks[1:])!r}", p)
            fmt = toks[1]
        elif toks[0] == "element":
            if len(toks) != 3:
                raise InputError(f"line {lineno}: malformed PLY element line {line.strip()!r}", p)
            count = _to_int(toks[2], p, lineno, "element count")
            if count < 0:
                raise InputError(f"line {lineno}: negative element count {count}", p)
            elements.append(_PlyElement(toks[1], count, []))
        elif toks[0] == "property":
            if not elements:
                raise InputError(f"line {lineno}: PLY property before any element", p)
            if len(toks) == 5 and toks[1] == "list" and toks[2] in _PLY_TYPES and toks[3] in _PLY_TYPES:
                elements[-1].props.append((toks[4], (_PLY_TYPES[toks[2]], _PLY_TYPES[toks[3]])))
            elif len(toks) == 3 and toks[1] in _PLY_TYPES:
                elements[-1].props.append((toks[2], _PLY_TYPES[toks[1]]))
            else:
                raise InputError(f"line {lineno}: malformed PLY property {line.strip()!r}", p)
        else:
            raise InputError(f"line {lineno}: unknown PLY header keyword {toks[0][:20]!r}", p)
    if fmt is None:
        raise InputError("PLY header has no 'format' line", p)
    return fmt, elements, end.end()


def _parse_ply(data: bytes, p: Path):
    fmt, elements, offset = _parse_ply_header(data, p)
    if fmt == "ascii":
        values = _ply_ascii(data, offset, elements, p)
    else:
        values = _ply_binary(data, offset, elements, "<" if fmt == "binary_little_endian" else ">", p)
    vertex = values.get("vertex")
    if vertex is None:
        raise InputError("PLY has no 'vertex' element: not a mesh or point cloud", p)
    names = vertex["_names"]
    missing = [c for c in "xyz" if c not in names]
    if missing:
        raise InputError(f"PLY vertex element has no {'/'.join(missing)} property", p)
    verts = np.stack([np.asarray(vertex[c], dtype=np.float64) for c in "xyz"], axis=1)
    colors = None
    for prefix in ("", "diffuse_"):
        if all(f"{prefix}{c}" in names for c in ("red", "green", "blue")):
            chans = [vertex[f"{prefix}{c}"] for c in ("red", "green", "blue")]
            alpha = vertex.get(f"{prefix}alpha")
            chans.append(np.full(len(verts), 255) if alpha is None else alpha)
            c = np.stack([np.asarray(ch, dtype=np.float64) for ch in chans], axis=1)
            if np.asarray(chans[0]).dtype.kind == "f" and c.max(initial=0.0) <= 1.0:
                c = c * 255.0  # float colours in [0, 1]
            colors = np.clip(np.rint(c), 0, 255)
            break
    face = values.get("face")
    faces = np.zeros((0, 3), dtype=np.int64)
    if face is not None and face["_count"]:
        key = next((k for k in ("vertex_indices", "vertex_index") if k in face["_names"]), None)
        if key is None:
            raise InputError("PLY face element has no vertex_indices list", p)
        lists = face[key]
        if isinstance(lists, np.ndarray):  # (F, n) when every face has n corners
            if lists.shape[1] < 3:
                raise InputError(f"PLY faces have {lists.shape[1]} corners, expected at least 3", p)
            idx = lists.astype(np.int64)
            k = np.arange(1, idx.shape[1] - 1)
            faces = np.stack(
                [np.repeat(idx[:, 0], len(k)), idx[:, k].reshape(-1), idx[:, k + 1].reshape(-1)], axis=1
            )
        else:
            short = next((j for j, poly in enumerate(lists) if len(poly) < 3), None)
            if short is not None:
                raise InputError(f"PLY face {short} has {len(lists[short])} corners, expected at least 3", p)
            faces = _fan([list(map(int, poly)) for poly in lists])
    return verts, faces, colors


def _ply_binary(data: bytes, offset: int, elements: list[_PlyElement], order: str, p: Path) -> dict:
    out = {}
    for el in elements:
        scalar = all(isinstance(t, str) for _, t in el.props)
        if scalar:
            dt = np.dtype([(n, order + t) for n, t in el.props])
            need = dt.itemsize * el.count
            if len(data) - offset < need:
                raise InputError(
                    f"truncated binary PLY: element '{el.name}' needs {need} bytes for {el.count} rows, "
                    f"{max(len(data) - offset, 0)} remain",
                    p,
                )
            arr = np.frombuffer(data, dtype=dt, count=el.count, offset=offset)
            offset += need
            out[el.name] = {n: arr[n] for n, _ in el.props} | {"_names": [n for n, _ in el.props], "_count": el.count}
        else:
            cols, offset = _ply_binary_lists(data, offset, el, order, p)
            out[el.name] = cols | {"_names": [n for n, _ in el.props], "_count": el.count}
    if offset != len(data) and data[offset:].strip(b"\r\n\t \0"):
        raise InputError(
            f"{len(data) - offset} unexpected bytes after the last PLY element (header counts wrong?)", p
        )
    return out


def _ply_binary_lists(data: bytes, offset: int, el: _PlyElement, order: str, p: Path):
    """Read an element with list properties; fast path when every list has the same length."""
    if el.count == 0:
        return {n: (np.zeros((0, 3)) if not isinstance(t, str) else np.zeros(0)) for n, t in el.props}, offset

    def row_dtype(lengths):
        fields = []
        for (n, t), ln in zip(el.props, lengths):
            if isinstance(t, str):
                fields.append((n, order + t))
            else:
                fields.append((f"_n_{n}", order + t[0]))
                fields.append((n, order + t[1], (ln,)))
        return np.dtype(fields)

    # read the first row's list lengths
    lengths, pos = [], offset
    for n, t in el.props:
        if isinstance(t, str):
            pos += np.dtype(t).itemsize
            lengths.append(None)
        else:
            cdt = np.dtype(order + t[0])
            if pos + cdt.itemsize > len(data):
                raise InputError(f"truncated binary PLY in element '{el.name}'", p)
            ln = int(np.frombuffer(data, dtype=cdt, count=1, offset=pos)[0])
            pos += cdt.itemsize + ln * np.dtype(t[1]).itemsize
            lengths.append(ln)
    dt = row_dtype(lengths)
    need = dt.itemsize * el.count
    if len(data) - offset >= need:
        arr = np.frombuffer(data, dtype=dt, count=el.count, offset=offset)
        uniform = all(
            (arr[f"_n_{n}"] == ln).all() for (n, t), ln in zip(el.props, lengths) if not isinstance(t, str)
        )
        if uniform:
            return {n: arr[n] for n, _ in el.props}, offset + need
    # general case: rows of varying length (e.g. triangles and quads), one row at a time
    cols: dict[str, list] = {n: [] for n, _ in el.props}
    pos = offset

    def take(dt: np.dtype, count: int, row: int) -> np.ndarray:
        nonlocal pos
        if pos + dt.itemsize * count > len(data):
            raise InputError(f"truncated binary PLY: element '{el.name}' ends at row {row} of {el.count}", p)
        arr = np.frombuffer(data, dtype=dt, count=count, offset=pos)
        pos += dt.itemsize * count
        return arr

    for row in range(el.count):
        for n, t in el.props:
            if isinstance(t, str):
                cols[n].append(take(np.dtype(order + t), 1, row)[0])
            else:
                ln = int(take(np.dtype(order + t[0]), 1, row)[0])
                cols[n].append(take(np.dtype(order + t[1]), ln, row))
    return {n: (np.asarray(cols[n]) if isinstance(t, str) else cols[n]) for n, t in el.props}, pos


def _ply_ascii(data: bytes, offset: int, elements: list[_PlyElement], p: Path) -> dict:
    header_lines = data[:offset].count(b"\n")
    lines = data[offset:].decode("ascii", errors="replace").splitlines()
    # (line number, tokens) of non-blank lines
    rows = [(header_lines + i, ln.split()) for i, ln in enumerate(lines, start=1)]
    rows = [(i, t) for i, t in rows if t]
    out = {}
    r = 0
    for el in elements:
        if len(rows) - r < el.count:
            raise InputError(
                f"truncated ASCII PLY: element '{el.name}' has {el.count} rows in the header, "
                f"{max(len(rows) - r, 0)} in the file",
                p,
            )
        cols: dict[str, list] = {n: [] for n, _ in el.props}
        for _ in range(el.count):
            lno, toks = rows[r]
            r += 1
            k = 0
            for n, t in el.props:
                if k >= len(toks):
                    raise InputError(f"line {lno}: too few values for element '{el.name}'", p)
                if isinstance(t, str):
                    conv = _to_float if t[0] == "f" else _to_int
                    cols[n].append(conv(toks[k], p, lno, f"{el.name} property {n!r}"))
                    k += 1
                else:
                    ln = _to_int(toks[k], p, lno, f"{el.name} list length")
                    items = toks[k + 1 : k + 1 + ln]
                    if len(items) < ln:
                        raise InputError(f"line {lno}: list of {ln} values has {len(items)}", p)
                    conv = _to_float if t[1][0] == "f" else _to_int
                    cols[n].append([conv(x, p, lno, f"{el.name} {n!r} value") for x in items])
                    k += 1 + ln
            if k != len(toks):
                raise InputError(
                    f"line {lno}: {len(toks)} values for element '{el.name}', expected {k} (wrong counts?)", p
                )
        out[el.name] = {
            n: (np.asarray(cols[n]) if isinstance(t, str) else _maybe_uniform(cols[n])) for n, t in el.props
        } | {"_names": [n for n, _ in el.props], "_count": el.count}
    if r < len(rows):
        raise InputError(f"line {rows[r][0]}: extra data after the last PLY element (header counts wrong?)", p)
    return out


def _maybe_uniform(lists: list[list]):
    if lists and all(len(x) == len(lists[0]) for x in lists):
        return np.asarray(lists)
    return lists


# ----- STL


def _parse_stl(data: bytes, p: Path):
    import trimesh  # lazy: heavy import

    try:
        import io

        loaded = trimesh.load(io.BytesIO(data), file_type="stl", process=False)
    except Exception as e:  # trimesh raises many types on bad input
        raise InputError(f"not a readable STL file ({type(e).__name__}: {one_line(e)})", p) from None
    if not isinstance(loaded, trimesh.Trimesh):
        raise InputError("not a single STL mesh", p)
    if len(loaded.vertices) == 0:
        raise InputError("no triangles: not an STL mesh", p)
    return np.asarray(loaded.vertices), np.asarray(loaded.faces), None


# --------------------------------------------------------------------------- saving


def save_mesh(
    path: str | os.PathLike,
    vertices: np.ndarray,
    faces: np.ndarray | None,
    vertex_colors: np.ndarray | None = None,
    *,
    binary: bool = True,
) -> None:
    """Write a mesh or point cloud atomically; the format follows the suffix.

    Args:
        path: ``.ply`` (binary little-endian, float64 vertices, unless ``binary=False``),
            ``.obj``, ``.off`` (shortest exact float64 text) or ``.stl`` (binary float32
            triangle soup: vertex sharing is not stored).
        vertices: (V, 3) float, finite.
        faces: (F, 3) integer indices in [0, V), or None / (0, 3) for a point cloud
            (not for STL).
        vertex_colors: optional (V, 3) or (V, 4) colours, uint8 0..255 or float 0..1;
            written to PLY, OBJ (``v x y z r g b``) and OFF (COFF); STL ignores them.
        binary: PLY only; False writes ASCII PLY.

    Raises:
        InputError: unknown suffix, or STL without faces (nothing is written).
        ValueError: bad array shapes, dtypes, NaN/inf or face indices out of range.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise InputError(
            f"unknown mesh format {p.suffix or '(no suffix)'!r}; use one of {', '.join(MESH_SUFFIXES)}", p
        )
    vertices = np.asarray(vertices)
    check_shape("vertices", vertices, ("V", 3))
    if vertices.dtype.kind not in "fiu":
        raise ValueError(f"vertices: expected a real array, got dtype {vertices.dtype}")
    vertices = vertices.astype(np.float64)
    check_finite("vertices", vertices)
    faces = np.zeros((0, 3), dtype=np.int64) if faces is None else np.asarray(faces)
    if faces.size == 0:
        faces = faces.reshape(0, 3).astype(np.int64)
    check_faces("faces", faces, vertices.shape[0])
    faces = faces.astype(np.int64)
    colors = None if vertex_colors is None else _colors_uint8(vertex_colors, vertices.shape[0])
    if suffix == ".stl" and faces.shape[0] == 0:
        raise InputError("STL cannot store a point cloud (no faces); use .ply", p)
    if suffix == ".ply" and faces.size and faces.max() > np.iinfo(np.int32).max:
        raise ValueError("faces: indices exceed int32, which PLY stores")
    writer = {".ply": _ply_bytes if binary else _ply_ascii_bytes, ".obj": _obj_bytes, ".off": _off_bytes,
              ".stl": _stl_bytes}[suffix]  # fmt: skip
    payload = writer(vertices, faces, colors)
    with atomic_path(p) as tmp:
        tmp.write_bytes(payload)


def _colors_uint8(colors, n: int) -> np.ndarray:
    c = np.asarray(colors)
    if c.ndim != 2 or c.shape[0] != n or c.shape[1] not in (3, 4):
        raise ValueError(f"vertex_colors: expected shape ({n}, 3) or ({n}, 4), got {c.shape}")
    if c.dtype.kind == "f":
        check_finite("vertex_colors", c)
        if c.min() < 0 or c.max() > 1:
            raise ValueError("vertex_colors: float colours must lie in [0, 1]")
        c = np.rint(c * 255.0)
    elif c.dtype.kind in "iu":
        if c.size and (c.min() < 0 or c.max() > 255):
            raise ValueError("vertex_colors: integer colours must lie in [0, 255]")
    else:
        raise ValueError(f"vertex_colors: expected a numeric array, got dtype {c.dtype}")
    c = c.astype(np.uint8)
    if c.shape[1] == 3:
        c = np.concatenate([c, np.full((n, 1), 255, dtype=np.uint8)], axis=1)
    return c


_COMMENT = "written by fitface"


def _ply_header(fmt: str, nv: int, nf: int, colors: bool, vtype: str) -> bytes:
    lines = ["ply", f"format {fmt} 1.0", f"comment {_COMMENT}", f"element vertex {nv}"]
    lines += [f"property {vtype} {c}" for c in "xyz"]
    if colors:
        lines += [f"property uchar {c}" for c in ("red", "green", "blue", "alpha")]
    if nf:
        lines += [f"element face {nf}", "property list uchar int vertex_indices"]
    return ("\n".join(lines + ["end_header"]) + "\n").encode("ascii")


def _ply_bytes(vertices, faces, colors) -> bytes:
    fields = [(c, "<f8") for c in "xyz"]
    if colors is not None:
        fields += [(c, "u1") for c in ("red", "green", "blue", "alpha")]
    vrec = np.empty(len(vertices), dtype=np.dtype(fields))
    for j, c in enumerate("xyz"):
        vrec[c] = vertices[:, j]
    if colors is not None:
        for j, c in enumerate(("red", "green", "blue", "alpha")):
            vrec[c] = colors[:, j]
    frec = np.empty(len(faces), dtype=np.dtype([("n", "u1"), ("i", "<i4", (3,))]))
    frec["n"] = 3
    frec["i"] = faces
    header = _ply_header("binary_little_endian", len(vertices), len(faces), colors is not None, "double")
    return header + vrec.tobytes() + (frec.tobytes() if len(faces) else b"")


def _ply_ascii_bytes(vertices, faces, colors) -> bytes:
    out = [_ply_header("ascii", len(vertices), len(faces), colors is not None, "double").decode()]
    vl = vertices.tolist()
    if colors is None:
        out += [f"{x!r} {y!r} {z!r}\n" for x, y, z in vl]
    else:
        out += [f"{x!r} {y!r} {z!r} {r} {g} {b} {a}\n" for (x, y, z), (r, g, b, a) in zip(vl, colors.tolist())]
    out += [f"3 {a} {b} {c}\n" for a, b, c in faces.tolist()]
    return "".join(out).encode("ascii")


def _obj_bytes(vertices, faces, colors) -> bytes:
    out = [f"# {_COMMENT}\n"]
    vl = vertices.tolist()
    if colors is None:
        out += [f"v {x!r} {y!r} {z!r}\n" for x, y, z in vl]
    else:
        cl = (colors[:, :3].astype(np.float64) / 255.0).tolist()
        out += [f"v {x!r} {y!r} {z!r} {r!r} {g!r} {b!r}\n" for (x, y, z), (r, g, b) in zip(vl, cl)]
    out += [f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in faces.tolist()]
    return "".join(out).encode("ascii")


def _off_bytes(vertices, faces, colors) -> bytes:
    out = [("COFF" if colors is not None else "OFF") + "\n", f"# {_COMMENT}\n", f"{len(vertices)} {len(faces)} 0\n"]
    vl = vertices.tolist()
    if colors is None:
        out += [f"{x!r} {y!r} {z!r}\n" for x, y, z in vl]
    else:
        out += [f"{x!r} {y!r} {z!r} {r} {g} {b} {a}\n" for (x, y, z), (r, g, b, a) in zip(vl, colors.tolist())]
    out += [f"3 {a} {b} {c}\n" for a, b, c in faces.tolist()]
    return "".join(out).encode("ascii")


def _stl_bytes(vertices, faces, colors) -> bytes:
    tri = vertices[faces]  # (F, 3 corners, 3)
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # (F, 3)
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.divide(n, norm, out=np.zeros_like(n), where=norm > 0)
    rec = np.zeros(len(faces), dtype=np.dtype([("n", "<f4", (3,)), ("v", "<f4", (3, 3)), ("attr", "<u2")]))
    rec["n"] = n
    rec["v"] = tri
    header = _COMMENT.encode("ascii").ljust(80, b" ")
    return header + np.uint32(len(faces)).astype("<u4").tobytes() + rec.tobytes()


__all__ = ["MESH_SUFFIXES", "Mesh", "load_mesh", "save_mesh"]
