"""CoMA's mesh hierarchy: quadric down-sampling by 4 per level, with its sampling matrices.

CoMA (Ranjan et al., ECCV 2018) convolves on a template mesh and three or more coarser
versions of it. :func:`build_hierarchy` builds them once per template (deterministic, no
torch): each level keeps ``ceil(n / factor)`` vertices of the level above (factor 4, 4 levels:
9,409 -> 2,353 -> 589 -> 148 -> 37 on the ICT face, 4,285 -> 1,072 -> 268 -> 67 -> 17 on the
procedural template).

Method, per level ``l -> l + 1``:
    * Quadric edge collapse (``fast_simplification.simplify`` with its collapse history) run
      past the target, then the first ``n_l - n_{l+1}`` collapses replayed
      (``fast_simplification.replay_simplification``): every collapse removes one vertex, so
      the replay lands exactly on the target size and maps each fine vertex to a cluster.
    * The decimation moves vertices (optimal quadric placement). Each cluster's *survivor* is
      the member fine vertex nearest to the cluster's decimated position, so coarse vertices
      are fine vertices at their original positions and down-sampling is a row selection.
    * Coarse faces: the replayed decimation's triangles on the survivors (degenerate ones
      dropped).
    * Up-sampling: each fine vertex's closest point on the coarse surface (exact: the
      :data:`CANDIDATE_TRIANGLES` coarse triangles with the nearest centroids, then every
      triangle that could still be nearer), as barycentric weights on its three corners.

Convention:
    * Level 0 is the template; ``down[l]`` maps level ``l`` to level ``l + 1`` and ``up[l]``
      maps level ``l + 1`` back to level ``l``. Matrices act on vertex-major arrays:
      ``x_coarse = down[l] @ x_fine`` with ``x`` of shape (V_l, C) for any C.
    * ``down[l]``: (V_{l+1}, V_l) float64 CSR, one 1 per row, in column ``survivors[l][i]``;
      survivors are in increasing fine-index order, so coarse vertex ``i`` of level ``l + 1``
      is fine vertex ``survivors[l][i]`` of level ``l``.
    * ``up[l]``: (V_l, V_{l+1}) float64 CSR, at most 3 non-zeros per row, each in [0, 1],
      summing to 1. A survivor's row is the single 1 of its own coarse vertex, so
      ``up[l] @ down[l]`` restores the survivors exactly.
    * ``adjacency[l]``: (V_l, V_l) float64 CSR, symmetric 0/1, no diagonal: the edges of
      ``faces[l]``.
    * Positions are in the template's unit (mm for the procedural template, cm for ICT).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from fitface.checks import check_faces, check_shape
from fitface.checks import check_mesh as validate_mesh

__all__ = ["MeshHierarchy", "build_hierarchy", "decimate_mesh", "mesh_adjacency", "CANDIDATE_TRIANGLES", "LEVELS",
           "FACTOR"]

#: CoMA's number of down-sampling steps.
LEVELS = 4
#: CoMA's down-sampling factor per step: each level keeps ``ceil(n / FACTOR)`` vertices.
FACTOR = 4
#: Coarse triangles (by nearest centroid) searched first for each fine vertex's closest point.
CANDIDATE_TRIANGLES = 16
#: Fraction of the faces the quadric decimation removes before its history is truncated (past
#: any ``1 - 1 / FACTOR`` target: a closed or disk mesh has about twice as many faces as vertices).
_OVERSHOOT_REDUCTION = 0.95
#: Collapse counts tried on each side of ``n - target`` when a replay misses the target (:func:`decimate_mesh`).
_MAX_REPLAYS = 8


@dataclass(frozen=True)
class MeshHierarchy:
    """A template and its coarser levels, with down/up-sampling matrices (module Convention).

    Attributes (tuples indexed by level; ``L`` = number of down-sampling steps):
        vertices: L + 1 arrays (V_l, 3) float64, positions (template unit).
        faces: L + 1 arrays (F_l, 3) int64.
        survivors: L arrays (V_{l+1},) int64, the level-``l`` index of each level-``l+1`` vertex.
        down: L CSR matrices (V_{l+1}, V_l), row selections.
        up: L CSR matrices (V_l, V_{l+1}), barycentric weights.
        adjacency: L + 1 CSR matrices (V_l, V_l), symmetric 0/1.
    """

    vertices: tuple
    faces: tuple
    survivors: tuple
    down: tuple
    up: tuple
    adjacency: tuple

    @property
    def sizes(self) -> tuple[int, ...]:
        """Vertices per level, template first."""
        return tuple(int(v.shape[0]) for v in self.vertices)

    @property
    def num_levels(self) -> int:
        """Number of down-sampling steps ``L``."""
        return len(self.down)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for a model file (safetensors): names ``"<field>.<level>[.<part>]"``.

        Dense fields give ``"vertices.0"`` (V_0, 3) float64, ``"faces.0"`` (F_0, 3) int64,
        ``"survivors.0"`` (V_1,) int64, ...; each sparse matrix ``"down.0"`` gives
        ``"down.0.indices"`` (2, nnz) int64 (row, column), ``"down.0.values"`` (nnz,) float64
        and ``"down.0.shape"`` (2,) int64. :meth:`from_arrays` inverts it exactly.
        """
        out: dict[str, np.ndarray] = {}
        for name in ("vertices", "faces", "survivors"):
            for level, a in enumerate(getattr(self, name)):
                out[f"{name}.{level}"] = np.ascontiguousarray(a)
        for name in ("down", "up", "adjacency"):
            for level, m in enumerate(getattr(self, name)):
                coo = m.tocoo()
                out[f"{name}.{level}.indices"] = np.vstack([coo.row, coo.col]).astype(np.int64)
                out[f"{name}.{level}.values"] = coo.data.astype(np.float64)
                out[f"{name}.{level}.shape"] = np.asarray(m.shape, dtype=np.int64)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict) -> MeshHierarchy:
        """Inverse of :meth:`to_arrays` (arrays may be numpy arrays or CPU tensors).

        Raises:
            ValueError: if a level's array is missing or the levels do not chain.
        """
        def get(key):
            if key not in arrays:
                raise ValueError(f"mesh hierarchy: array {key!r} missing")
            a = arrays[key]
            return a.numpy() if hasattr(a, "numpy") else np.asarray(a)

        levels = sum(1 for k in arrays if k.startswith("survivors."))
        fields = {}
        for name, count in (("vertices", levels + 1), ("faces", levels + 1), ("survivors", levels)):
            fields[name] = tuple(np.array(get(f"{name}.{i}")) for i in range(count))
        for name, count in (("down", levels), ("up", levels), ("adjacency", levels + 1)):
            mats = []
            for i in range(count):
                idx, val = get(f"{name}.{i}.indices"), get(f"{name}.{i}.values")
                shape = tuple(int(s) for s in get(f"{name}.{i}.shape"))
                check_shape(f"{name}.{i}.indices", idx, (2, "nnz"))
                check_shape(f"{name}.{i}.values", val, ("nnz",), {"nnz": idx.shape[1]})
                mats.append(sp.csr_matrix((val.astype(np.float64), (idx[0], idx[1])), shape=shape))
            fields[name] = tuple(mats)
        h = cls(**fields)
        for level in range(levels):
            want = (h.sizes[level + 1], h.sizes[level])
            if h.down[level].shape != want or h.up[level].shape != want[::-1]:
                raise ValueError(f"mesh hierarchy: level {level} matrices {h.down[level].shape}, "
                                 f"{h.up[level].shape} do not chain sizes {h.sizes}")
        return h


def mesh_adjacency(num_vertices: int, faces) -> sp.csr_matrix:
    """(V, V) float64 CSR symmetric 0/1 vertex adjacency of the edges of ``faces`` (F, 3) int."""
    f = np.asarray(faces, dtype=np.int64)
    check_faces("faces", f, num_vertices)
    i = f[:, [0, 1, 2]].ravel()
    j = f[:, [1, 2, 0]].ravel()
    a = sp.coo_matrix((np.ones(2 * len(i)), (np.r_[i, j], np.r_[j, i])), shape=(num_vertices, num_vertices)).tocsr()
    a.data[:] = 1.0  # duplicates (an edge shared by two triangles) summed to 2
    a.setdiag(0)
    a.eliminate_zeros()
    return a


def decimate_mesh(vertices: np.ndarray, faces: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray]:
    """One level: ``(survivors (target,) int64 sorted, coarse faces (F', 3) int64 in coarse indices)``."""
    import fast_simplification

    n = len(vertices)
    # nanobind rejects read-only arrays (the template's are frozen): pass writable copies
    v = np.array(vertices, dtype=np.float64, order="C")
    f = np.array(faces, dtype=np.int64, order="C")
    _, _, collapses = fast_simplification.simplify(v, f, target_reduction=_OVERSHOOT_REDUCTION,
                                                   return_collapses=True)
    need = n - target
    if len(collapses) < need:
        raise ValueError(f"mesh decimation: only {len(collapses)} edge collapses possible on a {n}-vertex mesh, "
                         f"{need} needed for {target} vertices")
    # A replayed collapse can remove more than one vertex (a vertex left in degenerate triangles
    # only), so replaying ``need`` collapses can undershoot the target: then the nearest collapse
    # counts (need - 1, need + 1, need - 2, ...) are replayed until one lands exactly (a template
    # whose first replay is exact is unaffected).
    counts = [need] + [need + s * d for d in range(1, _MAX_REPLAYS + 1) for s in (-1, 1)]
    for count in counts:
        if not 0 <= count <= len(collapses):
            continue
        points, tri, mapping = fast_simplification.replay_simplification(v, f, collapses[:count])
        num = len(points)
        if num == target:
            break
    mapping = np.asarray(mapping, dtype=np.int64)
    if mapping.min() < 0:
        raise ValueError(f"mesh decimation: vertex {int(np.argmin(mapping))} is in no triangle")
    if num != target or np.unique(mapping).size != target:
        raise ValueError(f"mesh decimation: got {num} vertices ({np.unique(mapping).size} clusters), "
                         f"expected {target}")
    # survivor of each cluster: its member nearest to the cluster's decimated position (ties: lowest index)
    d2 = ((vertices - np.asarray(points, dtype=np.float64)[mapping]) ** 2).sum(axis=1)
    order = np.lexsort((np.arange(n), d2, mapping))  # by cluster, then distance, then index
    first = np.r_[True, mapping[order][1:] != mapping[order][:-1]]
    survivor_of_cluster = np.empty(num, dtype=np.int64)
    survivor_of_cluster[mapping[order][first]] = order[first]
    survivors = np.sort(survivor_of_cluster)
    coarse_of_cluster = np.searchsorted(survivors, survivor_of_cluster)
    cf = coarse_of_cluster[np.asarray(tri, dtype=np.int64).reshape(-1, 3)]
    keep = (cf[:, 0] != cf[:, 1]) & (cf[:, 1] != cf[:, 2]) & (cf[:, 2] != cf[:, 0])
    return survivors, cf[keep]


def _barycentric_upsampling(fine: np.ndarray, coarse: np.ndarray, coarse_faces: np.ndarray,
                            survivors: np.ndarray) -> sp.csr_matrix:
    """(V_fine, V_coarse) CSR barycentric weights of each fine vertex's closest coarse-surface point."""
    from scipy.spatial import cKDTree
    from trimesh.triangles import closest_point, points_to_barycentric

    n = len(fine)
    tri = coarse[coarse_faces]  # (F, 3, 3)
    centroids = tri.mean(axis=1)
    radii = np.linalg.norm(tri - centroids[:, None], axis=-1).max(axis=1)  # (F,) bounding radii
    radius = float(radii.max())
    tree = cKDTree(centroids)
    k = min(CANDIDATE_TRIANGLES, len(coarse_faces))
    dk, cand = tree.query(fine, k=k)
    dk, cand = np.asarray(dk).reshape(n, k), np.asarray(cand, dtype=np.int64).reshape(n, k)

    def nearest(q, cand_rows, cand_faces):
        """Closest point of each query among its candidate faces: (face (m,), point (m, 3), dist (m,))."""
        cp = closest_point(tri[cand_faces], q[cand_rows])
        d2 = ((cp - q[cand_rows]) ** 2).sum(axis=1)
        order = np.lexsort((d2, cand_rows))  # by query, then distance
        first = order[np.r_[True, cand_rows[order][1:] != cand_rows[order][:-1]]]
        return cand_faces[first], cp[first], np.sqrt(d2[first])

    rows = np.repeat(np.arange(n), k)
    face, point, dist = nearest(fine, rows, cand.ravel())
    # exactness: an unsearched triangle is at least (k-th centroid distance - radius) away
    todo = np.flatnonzero(dist > dk[:, -1] - radius) if k < len(coarse_faces) else np.zeros(0, np.int64)
    if len(todo):
        lists = tree.query_ball_point(fine[todo], dist[todo] + radius * (1 + 1e-9))  # holds the current best
        counts = np.array([len(x) for x in lists])
        rows = np.repeat(np.arange(len(todo)), counts)
        faces_ = np.concatenate([np.asarray(x, dtype=np.int64) for x in lists])
        # keep the triangles whose bound |q - c| - r can beat the current best (the best itself passes)
        lower = np.linalg.norm(fine[todo][rows] - centroids[faces_], axis=1) - radii[faces_]
        keep = (lower <= dist[todo][rows] * (1 + 1e-9)) | (faces_ == face[todo][rows])
        f2, p2, _ = nearest(fine[todo], rows[keep], faces_[keep])
        face[todo], point[todo] = f2, p2
    w = points_to_barycentric(tri[face], point)  # (n, 3)
    w = np.clip(np.nan_to_num(w, nan=1.0 / 3.0), 0.0, None)
    w /= w.sum(axis=1, keepdims=True)
    cols = coarse_faces[face]  # (n, 3)
    # survivors map to their own coarse vertex exactly
    w[survivors] = 0.0
    w[survivors, 0] = 1.0
    cols[survivors, 0] = np.arange(len(survivors))
    u = sp.csr_matrix((w.ravel(), (np.repeat(np.arange(n), 3), cols.ravel())), shape=(n, len(coarse)))
    u.eliminate_zeros()
    return u


def build_hierarchy(vertices, faces, levels: int = LEVELS, factor: int = FACTOR) -> MeshHierarchy:
    """Build CoMA's hierarchy of a template (deterministic; ~1 s on the 9,409-vertex ICT face).

    Args:
        vertices: (V, 3) float template positions (any unit).
        faces: (F, 3) int triangles (a manifold mesh, every vertex in a triangle).
        levels: number of down-sampling steps (CoMA: 4).
        factor: each level keeps ``ceil(n / factor)`` vertices of the one above (CoMA: 4).

    Returns:
        :class:`MeshHierarchy` (module Convention).

    Raises:
        ValueError: on bad shapes or indices, ``levels < 1``, ``factor < 2``, a vertex in no
            triangle, or a level too small to decimate (fewer than 4 vertices left).
    """
    v, f = validate_mesh(vertices, faces)  # (V, 3) float64, (F, 3) int64
    if int(levels) != levels or levels < 1:
        raise ValueError(f"levels: expected a positive integer, got {levels!r}")
    if int(factor) != factor or factor < 2:
        raise ValueError(f"factor: expected an integer >= 2, got {factor!r}")
    verts, tris, survs, downs, ups = [v], [f], [], [], []
    for level in range(int(levels)):
        n = len(verts[-1])
        target = -(-n // int(factor))
        if target < 4:
            raise ValueError(f"levels: level {level + 1} would keep {target} vertices of {n}; "
                             f"use fewer levels or a finer template")
        surv, cf = decimate_mesh(verts[-1], tris[-1], target)
        coarse = verts[-1][surv]
        downs.append(sp.csr_matrix((np.ones(target), (np.arange(target), surv)), shape=(target, n)))
        ups.append(_barycentric_upsampling(verts[-1], coarse, cf, surv))
        survs.append(surv)
        verts.append(coarse)
        tris.append(cf)
    adj = tuple(mesh_adjacency(len(x), t) for x, t in zip(verts, tris))
    return MeshHierarchy(tuple(verts), tuple(tris), tuple(survs), tuple(downs), tuple(ups), adj)
