"""Harmonic UV parameterisation of a disk-like template onto the unit square (paper §5.1).

``harmonic_uv(vertices, faces)`` maps every vertex of a genus-0 mesh with one or more
boundary loops to ``[0, 1]^2``: the outer boundary (the longest loop by arc length) is
pinned to the square's border, the other loops (eyes, mouth) are left free, and every
other coordinate solves the discrete Laplace equation ``(W x)_i = 0`` for the free
vertices i (W a weight matrix from :mod:`fitface.geometry.laplacian`). The system is
factorised once (sparse LU) and solved for u and v together.

Convention:
    - UV origin at (0, 0), u to the right, v up (a mathematical frame, not image rows;
      the geometry-mapping layer decides pixel rows). The square's corners are, in the
      order the outer loop visits them, (0,0) -> (1,0) -> (1,1) -> (0,1).
    - The outer loop is oriented like its triangles (see
      :mod:`fitface.geometry.topology`): counter-clockwise for counter-clockwise faces,
      so triangles keep their winding in UV (positive signed UV area).
    - Start vertex (mapped to corner (0, 0)): the outer-boundary vertex with the
      smallest ``x + y`` (ties: smallest id), i.e. the bottom-left of a face given in
      the data convention (x right, y up, z towards the viewer). For such a face u
      grows with x and v with y.
    - Corners: the boundary vertices whose arc-length fraction along the loop (from the
      start vertex) is nearest 1/4, 1/2 and 3/4 become the corners (1,0), (1,1), (0,1),
      so each corner is a vertex and the whole square is covered. Between two corners,
      vertices are spaced by arc length along that side.
    - A triangle is *flipped* when its signed UV area, relative to the majority
      orientation, is <= ``tol.uv_flip_area`` (0): degenerate triangles count as flipped.
    - ``weights="auto"`` tries cotangent, then mean-value, then uniform (Tutte) weights,
      then uniform weights with the holes temporarily filled (:data:`WEIGHTS`), and
      returns the first result with zero flips and all UVs in the square; the fallback
      is recorded in :class:`UVResult` and logged (logger
      ``fitface.geometry.parameterization``, level WARNING). Tutte's/Floater's theorem
      guarantees a bijection only for a convex boundary with no free holes, so flips are
      always counted and an :class:`~fitface.errors.InputError` is raised if every
      option flips.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

from fitface.checks import check_finite, check_shape
from fitface.errors import InputError
from fitface.geometry.laplacian import cotangent_laplacian, mean_value_laplacian, uniform_laplacian
from fitface.geometry.topology import boundary_loops, check_disk_like
from fitface.tolerances import tol

__all__ = ["UVResult", "harmonic_uv", "signed_uv_areas", "count_flips", "square_boundary", "WEIGHTS"]

log = logging.getLogger(__name__)

#: Weight schemes in the order ``weights="auto"`` tries them. ``"uniform_filled"`` is
#: Tutte's embedding of the mesh with every inner hole closed by a fan of virtual
#: triangles around a virtual centre vertex (removed afterwards): the hole rims stay
#: unknowns, but a rim vertex that belongs to a single triangle can no longer collapse
#: onto its two neighbours, and Floater's theorem (triangulated disk, convex border,
#: positive weights) then guarantees a bijection unless an edge joins two outer-border
#: vertices on the same side of the square.
WEIGHTS = ("cotangent", "mean_value", "uniform", "uniform_filled")

#: UV excursion outside [0, 1] (UV units) treated as round-off and clipped; larger
#: excursions make a weight scheme fail.
UV_ROUNDOFF = 1e-9


@dataclass(frozen=True)
class UVResult:
    """Result of :func:`harmonic_uv`."""

    uv: np.ndarray  #: (V, 2) float64 in [0, 1]^2
    weights: str  #: weights actually used: "cotangent" | "mean_value" | "uniform" | "uniform_filled"
    flipped: int  #: flipped (or degenerate) triangles in ``uv``; 0 unless weights were forced
    boundary: np.ndarray  #: (B,) int64 outer-loop vertex ids, in loop order from the start vertex
    corners: np.ndarray  #: (4,) int64 vertex ids at (0,0), (1,0), (1,1), (0,1)
    fallback_reason: str | None = None  #: why earlier weights were rejected (None if none were)
    attempts: dict = field(default_factory=dict)  #: weights tried -> flipped count


def signed_uv_areas(uv, faces) -> np.ndarray:
    """Signed UV areas ``(F,) float64`` (UV units^2), positive for counter-clockwise triangles.

    Args:
        uv: (V, 2) float.
        faces: (F, 3) int.
    """
    check_shape("uv", uv, (None, 2))
    check_shape("faces", faces, (None, 3))
    t = np.asarray(uv, dtype=np.float64)[np.asarray(faces)]  # (F, 3, 2)
    a = t[:, 1] - t[:, 0]  # (F, 2)
    b = t[:, 2] - t[:, 0]  # (F, 2)
    return 0.5 * (a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0])


def count_flips(uv, faces) -> int:
    """Number of triangles whose signed UV area, relative to the majority orientation,
    is <= ``tol.uv_flip_area`` (degenerate triangles count as flipped).

    Args:
        uv: (V, 2) float.
        faces: (F, 3) int.
    """
    area = signed_uv_areas(uv, faces)
    majority = 1.0 if np.sum(np.sign(area)) >= 0 else -1.0
    return int(np.sum(area * majority <= tol.uv_flip_area))


def square_boundary(vertices: np.ndarray, loop: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lay a boundary loop on the unit square's border by arc length (see the Convention).

    Args:
        vertices: (V, 3) float64.
        loop: (B,) int vertex ids of the outer loop, B >= 4, in loop order.

    Returns:
        ``(loop, uv, corners)``: the loop rotated to begin at the start vertex (B,),
        its UVs (B, 2) float64 exactly on the border, and the 4 corner vertex ids.
    """
    n = len(loop)
    if n < 4:
        raise ValueError(f"loop: the outer boundary needs at least 4 vertices for the square's corners, got {n}")
    p = vertices[loop]  # (B, 3)
    start = int(np.lexsort((loop, p[:, 0] + p[:, 1]))[0])
    loop = np.roll(loop, -start)
    p = np.roll(p, -start, axis=0)
    seg = np.linalg.norm(np.roll(p, -1, axis=0) - p, axis=1)  # (B,) edge k -> k+1
    s = np.r_[0.0, np.cumsum(seg)]  # (B+1,) arc length; s[B] = total (back at start)
    frac = s / s[-1]
    # Corner positions in the loop (indices into 0..B, B meaning the start again).
    cidx = [0]
    for q in (1, 2, 3):
        lo, hi = cidx[-1] + 1, n - (3 - q)  # leave room for the remaining corners
        k = lo + int(np.argmin(np.abs(frac[lo:hi] - q / 4)))
        cidx.append(k)
    cidx.append(n)
    side_from = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    side_to = np.roll(side_from, -1, axis=0)
    uv = np.empty((n, 2))
    for q in range(4):
        a, b = cidx[q], cidx[q + 1]
        t = (s[a:b] - s[a]) / (s[b] - s[a])  # (b-a,) in [0, 1)
        pts = side_from[q] + t[:, None] * (side_to[q] - side_from[q])
        # Snap the constant coordinate exactly (no round-off off the border).
        axis = 1 if q in (0, 2) else 0
        pts[:, axis] = side_from[q][axis]
        uv[a:b] = pts
    return loop, uv, loop[np.array(cidx[:4])]


def _solve(W: sp.csr_matrix, fixed: np.ndarray, fixed_uv: np.ndarray) -> np.ndarray:
    """Solve ``W[free] @ x = 0`` with ``x[fixed] = fixed_uv``; returns (V, 2) float64."""
    n = W.shape[0]
    is_fixed = np.zeros(n, dtype=bool)
    is_fixed[fixed] = True
    free = np.flatnonzero(~is_fixed)
    W_ff = W[free][:, free].tocsc()  # (Nf, Nf)
    W_fb = W[free][:, fixed]  # (Nf, B)
    rhs = -(W_fb @ fixed_uv)  # (Nf, 2)
    uv = np.empty((n, 2))
    uv[fixed] = fixed_uv
    uv[free] = splu(W_ff).solve(np.asarray(rhs))
    return uv


def _fill_holes(faces: np.ndarray, num_vertices: int, holes: list[np.ndarray]) -> np.ndarray:
    """Close each hole loop with a fan around a new vertex ``num_vertices + k``; (F + sum|hole|, 3)."""
    fans = []
    for k, loop in enumerate(holes):
        nxt = np.roll(loop, -1)
        centre = np.full(len(loop), num_vertices + k)
        fans.append(np.stack([nxt, loop, centre], axis=1))  # reverse of the rim edge's direction
    return np.concatenate([faces, *fans]) if fans else faces


def _harmonic_solution(name: str, vertices: np.ndarray, faces: np.ndarray, holes: list[np.ndarray],
                       outer: np.ndarray, border_uv: np.ndarray) -> np.ndarray:
    """(V, 2) solution of the Laplace system with ``name`` weights."""
    n = len(vertices)
    if name == "cotangent":
        W = cotangent_laplacian(vertices, faces)
    elif name == "mean_value":
        W = mean_value_laplacian(vertices, faces)
    elif name == "uniform":
        W = uniform_laplacian(n, faces)
    else:  # uniform_filled
        W = uniform_laplacian(n + len(holes), _fill_holes(faces, n, holes))
    return _solve(W, outer, border_uv)[:n]


def harmonic_uv(vertices, faces, weights: str = "auto", what: str = "mesh") -> UVResult:
    """Harmonic parameterisation onto the unit square with free inner holes.

    Args:
        vertices: (V, 3) float, any unit.
        faces: (F, 3) int, one connected manifold genus-0 surface with >= 1 boundary loop.
        weights: ``"auto"`` (cotangent, falling back to mean-value, uniform, then
            uniform with filled holes when a triangle flips, see :data:`WEIGHTS`), or
            one of :data:`WEIGHTS` to force a scheme (then flips are only counted, not
            rejected, and UVs are not guaranteed inside the square).
        what: names the mesh in error messages (a file name or ``"template"``).

    Returns:
        :class:`UVResult` with ``uv`` (V, 2) float64 in [0, 1]^2 (outer boundary exactly
        on the border), the weights used and the flipped count.

    Raises:
        InputError: the mesh is not disk-like (one line naming ``what``), or with
            ``weights="auto"`` every scheme flips a triangle.
        ValueError: bad shapes or an unknown ``weights``.
    """
    if weights != "auto" and weights not in WEIGHTS:
        raise ValueError(f"weights: expected 'auto' or one of {', '.join(WEIGHTS)}, got {weights!r}")
    check_shape("vertices", vertices, (None, 3))
    v = np.asarray(vertices, dtype=np.float64)
    check_finite("vertices", v)
    check_disk_like(faces, len(v), what=what)
    f = np.asarray(faces, dtype=np.int64)

    loops = boundary_loops(f, v)
    outer, holes = loops[0], loops[1:]
    try:
        outer, border_uv, corners = square_boundary(v, outer)
    except ValueError as exc:
        raise InputError(str(exc), what) from None

    order = WEIGHTS if weights == "auto" else (weights,)
    attempts: dict[str, int] = {}
    reasons: list[str] = []
    for name in order:
        uv = _harmonic_solution(name, v, f, holes, outer, border_uv)
        outside = float(np.max(np.maximum(-uv, uv - 1.0)))
        uv = np.clip(uv, 0.0, 1.0) if outside <= UV_ROUNDOFF else uv
        flips = count_flips(uv, f)
        attempts[name] = flips
        if weights != "auto" or (flips == 0 and outside <= UV_ROUNDOFF):
            reason = "; ".join(reasons) or None
            if reason:
                log.warning("%s: harmonic UV uses %s weights (%s)", what, name, reason)
            return UVResult(uv=uv, weights=name, flipped=flips, boundary=outer, corners=corners,
                            fallback_reason=reason, attempts=attempts)
        why = f"{name} weights flip {flips} of {len(f)} triangles" if flips else \
            f"{name} weights put UVs {outside:.3g} outside the unit square"
        reasons.append(why)
    raise InputError("harmonic UV failed with every weight scheme: " + "; ".join(reasons)
                     + " (an edge joining two outer-boundary vertices on one side of the square, or a"
                     " folded hole, cannot be laid out flat)", what)
