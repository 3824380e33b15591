"""Mesh topology helpers on plain numpy triangle meshes (pure functions, no torch).

A mesh is ``vertices: (V, 3) float`` (any length unit) and ``faces: (F, 3) int``
(vertex indices, counter-clockwise winding when the outward normal faces the viewer).
Only ``faces`` matters here; ``vertices`` are used for lengths when given.

Convention:
    - An *edge* is an unordered vertex pair stored as ``(min, max)``; ``unique_edges``
      returns them sorted lexicographically.
    - A *boundary edge* is an edge used by exactly one triangle; ``boundary_edges``
      returns it oriented as its triangle traverses it, so for a consistently
      counter-clockwise mesh the outer boundary runs counter-clockwise (the surface on
      its left) and holes run clockwise.
    - A *boundary loop* is the ordered cycle of vertex ids along connected boundary
      edges, oriented like the boundary edges (first vertex not repeated at the end).
    - The Euler characteristic counts only vertices referenced by a face:
      ``chi = V_used - E + F``; a connected orientable surface of genus ``g`` with ``b``
      boundary loops has ``chi = 2 - 2g - b``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components as _cc

from fitface.checks import check_faces, check_shape
from fitface.errors import InputError

__all__ = [
    "MeshTopology",
    "unique_edges",
    "edge_face_counts",
    "boundary_edges",
    "boundary_loops",
    "connected_components",
    "euler_characteristic",
    "analyze_topology",
    "check_disk_like",
]


def _faces_array(faces) -> np.ndarray:
    """``faces`` as a C-contiguous (F, 3) int64 array."""
    arr = np.ascontiguousarray(np.asarray(faces), dtype=np.int64)
    check_shape("faces", arr, (None, 3))
    return arr


def _half_edges(faces: np.ndarray) -> np.ndarray:
    """Directed half-edges ``(F*3, 2)``: row ``3*f + k`` is ``faces[f, k] -> faces[f, (k+1) % 3]``."""
    return np.stack([faces, np.roll(faces, -1, axis=1)], axis=2).reshape(-1, 2)


def _unique_rows(pairs: np.ndarray):
    """``np.unique(pairs, axis=0, return_inverse=True, return_counts=True)`` for (N, 2)
    non-negative ints, via 1-D keys (several times faster than ``axis=0``)."""
    base = int(pairs.max()) + 1 if pairs.size else 1
    keys = pairs[:, 0] * base + pairs[:, 1]
    ukeys, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    rows = np.stack([ukeys // base, ukeys % base], axis=1).astype(np.int64)
    return rows, inverse.ravel(), counts.astype(np.int64)


def edge_face_counts(faces) -> tuple[np.ndarray, np.ndarray]:
    """Unique undirected edges and how many triangles use each.

    Args:
        faces: (F, 3) int vertex indices.

    Returns:
        ``(edges, counts)``: edges (E, 2) int64 as ``(min, max)`` sorted
        lexicographically; counts (E,) int64 (1 = boundary, 2 = interior manifold,
        > 2 = non-manifold).
    """
    f = _faces_array(faces)
    he = np.sort(_half_edges(f), axis=1)  # (3F, 2) undirected
    edges, _, counts = _unique_rows(he)
    return edges, counts


def unique_edges(faces) -> np.ndarray:
    """Unique undirected edges ``(E, 2) int64`` as ``(min, max)``, sorted lexicographically."""
    return edge_face_counts(faces)[0]


def boundary_edges(faces) -> np.ndarray:
    """Edges used by exactly one triangle, ``(B, 2) int64``, oriented as that triangle
    traverses them (see the module Convention)."""
    f = _faces_array(faces)
    he = _half_edges(f)  # (3F, 2) directed
    und = np.sort(he, axis=1)
    _, inverse, counts = _unique_rows(und)
    return he[counts[inverse] == 1]


def boundary_loops(faces, vertices=None) -> list[np.ndarray]:
    """Ordered boundary loops, longest first.

    Args:
        faces: (F, 3) int vertex indices.
        vertices: optional (V, 3) float positions; when given, "longest" means the
            largest arc length (in the vertices' unit), otherwise the most edges.

    Returns:
        A list of (n_i,) int64 vertex-id cycles, oriented like :func:`boundary_edges`
        (first vertex not repeated). Ties are broken by the smallest vertex id so the
        order is deterministic. Each loop starts at its smallest vertex id.

    Raises:
        ValueError: if a vertex lies on more than one boundary edge pair (a
            non-manifold "pinched" boundary vertex), where loops are ambiguous.
    """
    be = boundary_edges(faces)  # (B, 2) directed
    if len(be) == 0:
        return []
    # Undirected tracing (robust to inconsistent winding); orientation restored below.
    verts = np.unique(be)
    deg = np.bincount(be.ravel(), minlength=int(verts.max()) + 1)
    pinched = np.flatnonzero(deg > 2)
    if len(pinched):
        raise ValueError(
            f"boundary vertex {int(pinched[0])} lies on {int(deg[pinched[0]])} boundary edges "
            f"({len(pinched)} such vertices): the boundary is not manifold"
        )
    nbr = {int(v): [] for v in verts}
    for a, b in be.tolist():
        nbr[a].append(b)
        nbr[b].append(a)
    directed = {(int(a), int(b)) for a, b in be.tolist()}
    seen: set[int] = set()
    loops: list[np.ndarray] = []
    for start in verts.tolist():
        if start in seen:
            continue
        loop = [start]
        seen.add(start)
        prev, cur = start, nbr[start][0]
        while cur != start:
            loop.append(cur)
            seen.add(cur)
            a, b = nbr[cur]
            prev, cur = cur, (b if a == prev else a)
        arr = np.asarray(loop, dtype=np.int64)
        # Orient the loop so most of its edges follow their triangle's direction.
        fwd = sum((int(x), int(y)) in directed for x, y in zip(arr, np.roll(arr, -1)))
        if 2 * fwd < len(arr):
            arr = np.roll(arr[::-1], 1)  # reversed, still starting at `start`
        loops.append(arr)

    if vertices is not None:
        v = np.asarray(vertices, dtype=np.float64)
        size = [float(np.linalg.norm(v[lp] - v[np.roll(lp, -1)], axis=1).sum()) for lp in loops]
    else:
        size = [float(len(lp)) for lp in loops]
    order = sorted(range(len(loops)), key=lambda i: (-size[i], int(loops[i].min())))
    return [loops[i] for i in order]


def connected_components(faces, num_vertices: int | None = None) -> tuple[int, np.ndarray]:
    """Connected components of the vertex graph (vertices joined by triangle edges).

    Args:
        faces: (F, 3) int vertex indices.
        num_vertices: V; defaults to ``faces.max() + 1``. Vertices used by no face are
            components of their own.

    Returns:
        ``(n, labels)``: the number of components and (V,) int32 labels in [0, n).
    """
    f = _faces_array(faces)
    n_v = int(f.max()) + 1 if num_vertices is None else int(num_vertices)
    e = unique_edges(f)
    adj = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n_v, n_v))
    n, labels = _cc(adj, directed=False)
    return int(n), labels


def euler_characteristic(faces) -> int:
    """``V_used - E + F`` counting only vertices referenced by a face."""
    f = _faces_array(faces)
    return int(len(np.unique(f)) - len(unique_edges(f)) + len(f))


@dataclass(frozen=True)
class MeshTopology:
    """Topological facts of a triangle mesh (see :func:`analyze_topology`)."""

    num_vertices: int  #: V (size of the vertex array)
    num_faces: int  #: F
    num_edges: int  #: E (unique undirected)
    unused_vertices: int  #: vertices referenced by no face
    components: int  #: connected components of the used vertices
    nonmanifold_edges: int  #: edges shared by more than two triangles
    nonmanifold_vertices: int  #: vertices whose triangle fan is not one fan (bow-ties)
    degenerate_faces: int  #: faces repeating a vertex index
    misoriented_edges: int  #: interior edges traversed in the same direction by both triangles
    orientable: bool  #: whether the triangles can be oriented consistently
    boundary_loops: int  #: number of boundary loops (0 if the boundary is not manifold)
    euler: int  #: V_used - E + F

    @property
    def genus(self) -> float:
        """Genus from ``chi = 2 - 2g - b`` (meaningful for one connected orientable surface)."""
        return (2 - self.euler - self.boundary_loops) / 2


def _fan_components_per_vertex(f: np.ndarray, he: np.ndarray, und_inv: np.ndarray, counts: np.ndarray,
                               n_v: int) -> np.ndarray:
    """(V,) number of edge-connected triangle fans around each vertex (1 = manifold)."""
    # Nodes: corners 3f+k at vertex f[f,k]. For every interior edge {a, b} shared by
    # two triangles, join the two corners at a and the two corners at b.
    n_he = len(he)
    order = np.argsort(und_inv, kind="stable")
    inv_sorted = und_inv[order]
    starts = np.flatnonzero(np.r_[True, inv_sorted[1:] != inv_sorted[:-1]])
    two = counts[inv_sorted[starts]] == 2
    h1 = order[starts[two]]  # half-edge ids of the first triangle
    h2 = order[starts[two] + 1]  # ... and of the second
    # Half-edge 3f+k goes from corner 3f+k to corner 3f+(k+1)%3.
    tail = lambda h: h  # noqa: E731  corner at the half-edge's start vertex
    head = lambda h: 3 * (h // 3) + (h % 3 + 1) % 3  # noqa: E731
    same_dir = he[h1, 0] == he[h2, 0]
    # Match corners by vertex: a1 with the h2 corner at the same vertex.
    c1a, c1b = tail(h1), head(h1)
    c2a = np.where(same_dir, tail(h2), head(h2))
    c2b = np.where(same_dir, head(h2), tail(h2))
    rows = np.r_[c1a, c1b]
    cols = np.r_[c2a, c2b]
    g = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_he, n_he))
    _, lab = _cc(g, directed=False)
    corner_vertex = f.ravel()
    pairs, _, _ = _unique_rows(np.stack([corner_vertex, lab.astype(np.int64)], axis=1))
    return np.bincount(pairs[:, 0], minlength=n_v)


def analyze_topology(faces, num_vertices: int) -> MeshTopology:
    """Measure connectivity, manifoldness, orientability, boundary and Euler characteristic.

    Args:
        faces: (F, 3) int vertex indices in [0, num_vertices).
        num_vertices: V.

    Returns:
        A :class:`MeshTopology`. Vectorised except boundary-loop tracing.
    """
    f = _faces_array(faces)
    check_faces("faces", f, num_vertices)
    n_v = int(num_vertices)
    degenerate = int(np.sum((f[:, 0] == f[:, 1]) | (f[:, 1] == f[:, 2]) | (f[:, 0] == f[:, 2])))
    he = _half_edges(f)  # (3F, 2)
    und = np.sort(he, axis=1)
    edges, und_inv, counts = _unique_rows(und)
    used = np.zeros(n_v, dtype=bool)
    used[f.ravel()] = True

    _, labels = connected_components(f, n_v)
    components = len(np.unique(labels[used])) if used.any() else 0

    # Orientation: each interior edge should be traversed once each way.
    # Signed face graph on 2F nodes (face, flipped?); orientable iff no face's two
    # states fall in one component.
    order = np.argsort(und_inv, kind="stable")
    inv_sorted = und_inv[order]
    starts = np.flatnonzero(np.r_[True, inv_sorted[1:] != inv_sorted[:-1]]) if len(f) else np.array([], int)
    two = counts[inv_sorted[starts]] == 2
    h1, h2 = order[starts[two]], order[starts[two] + 1]
    same_dir = he[h1, 0] == he[h2, 0]  # both triangles traverse the edge the same way
    f1, f2 = h1 // 3, h2 // 3
    n_f = len(f)
    # consistent pair: (f1,s) ~ (f2,s); same_dir pair: (f1,s) ~ (f2,1-s)
    r = np.r_[f1, f1 + n_f]
    c = np.r_[np.where(same_dir, f2 + n_f, f2), np.where(same_dir, f2, f2 + n_f)]
    g = sp.coo_matrix((np.ones(len(r)), (r, c)), shape=(2 * n_f, 2 * n_f))
    _, olab = _cc(g, directed=False)
    orientable = bool(np.all(olab[:n_f] != olab[n_f:]))

    fans = _fan_components_per_vertex(f, he, und_inv, counts, n_v)
    try:
        n_loops = len(boundary_loops(f))
    except ValueError:
        n_loops = 0

    return MeshTopology(
        num_vertices=n_v,
        num_faces=n_f,
        num_edges=len(edges),
        unused_vertices=int(n_v - used.sum()),
        components=int(components),
        nonmanifold_edges=int(np.sum(counts > 2)),
        nonmanifold_vertices=int(np.sum(fans > 1)),
        degenerate_faces=degenerate,
        misoriented_edges=int(np.sum(same_dir)),
        orientable=orientable,
        boundary_loops=n_loops,
        euler=int(used.sum() - len(edges) + n_f),
    )


def check_disk_like(faces, num_vertices: int, what: str = "mesh") -> MeshTopology:
    """Raise :class:`InputError` unless the mesh is one connected, manifold,
    consistently oriented surface of genus 0 with at least one boundary loop
    (a disk, possibly with holes).

    Args:
        faces: (F, 3) int vertex indices.
        num_vertices: V.
        what: names the mesh in the message (a file name or ``"template"``).

    Returns:
        The :class:`MeshTopology` when the check passes.

    Raises:
        InputError: one line ``"<what>: <problem>"`` naming the first problem found.
    """
    try:
        f = _faces_array(faces)
        check_faces("faces", f, num_vertices)
    except ValueError as exc:
        raise InputError(str(exc), what) from None
    if len(f) == 0:
        raise InputError("no faces", what)
    t = analyze_topology(f, num_vertices)
    if t.degenerate_faces:
        raise InputError(f"{t.degenerate_faces} faces repeat a vertex index; remove degenerate faces", what)
    if t.unused_vertices:
        raise InputError(f"{t.unused_vertices} of {t.num_vertices} vertices are used by no face; "
                         "remove unreferenced vertices", what)
    if t.components != 1:
        raise InputError(f"mesh has {t.components} connected components; expected one disk-like surface", what)
    if t.nonmanifold_edges:
        raise InputError(f"{t.nonmanifold_edges} non-manifold edges (shared by more than two triangles); "
                         "expected a manifold surface", what)
    if t.nonmanifold_vertices:
        raise InputError(f"{t.nonmanifold_vertices} non-manifold vertices (triangle fans touching at a "
                         "single vertex); expected a manifold surface", what)
    if not t.orientable:
        raise InputError("surface is not orientable; expected a disk-like surface", what)
    if t.misoriented_edges:
        raise InputError(f"triangles are not consistently oriented ({t.misoriented_edges} interior edges "
                         "traversed the same way by both triangles); fix the winding", what)
    if t.boundary_loops == 0:
        raise InputError(f"surface is closed (no boundary loop, Euler characteristic {t.euler}); "
                         "expected a disk-like surface with an outer boundary", what)
    if t.euler != 2 - t.boundary_loops:
        raise InputError(f"surface has genus {t.genus:g} (Euler characteristic {t.euler} with "
                         f"{t.boundary_loops} boundary loops); expected genus 0 (a disk with holes)", what)
    return t
