"""The procedural face template: a planar *face domain* meshed into a disk with three holes.

The procedural face space (:mod:`fitface.data.procedural`) describes every face as a smooth
map from one fixed 2D domain into 3D. This module builds that domain's triangle mesh once:
its connectivity is the template's, shared by every identity and expression.

Convention:
    * Domain coordinates ``(u, v)`` are millimetres on the mean face seen from the front:
      ``u`` to the viewer's right (the subject's left), ``v`` up; ``(0, 0)`` is the
      subnasale (the base of the nose). The 3D map (:mod:`.identity`) wraps ``u`` around a
      vertical cylinder, so ``u`` is close to arc length across the face.
    * The region spans the forehead (below the hairline) to under the chin and cheek to
      cheek; one outer boundary loop and three holes: the two eye openings and the mouth slit
      (the lips meet along the slit; the jaw opens it).
    * Triangles are counter-clockwise in ``(u, v)``, so their normals face the viewer (+z).
    * The landmark set ``"ibug68"`` follows the iBUG 300-W / Multi-PIE 68-point order, with
      the image-left side first (the subject's right, ``u < 0``):
      jaw contour 0-16 (0 at the subject's right temple level, 8 the chin, 16 the left);
      right brow 17-21 (outer to inner), left brow 22-26 (inner to outer);
      nose bridge 27-30 (top to tip), nostril base 31-35 (right to left);
      right eye 36-41 (36 outer corner, 37-38 upper lid, 39 inner corner, 40-41 lower lid),
      left eye 42-47 (42 inner corner, 43-44 upper lid, 45 outer corner, 46-47 lower lid);
      outer lip 48-59 (48 right corner, 49-53 upper lip to 54 the left corner, 55-59 lower lip
      back to the right); inner lip 60-67 (60 right corner, 61-63 upper, 64 left corner,
      65-67 lower). Eye points 36-47 and the inner-lip points 60-67 are vertices of the hole
      rims; the mouth corners 48/54 are the slit's corner vertices (60/64 are the points on
      the rim one third of an edge inward from them, so that no two points coincide).
    * ``eyelid_*`` / ``lip_*`` rim index arrays name the hole-rim vertices above / below the
      openings (the lids and lips), used by the expression model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from fitface.landmark_set import LandmarkSet

# --------------------------------------------------------------------------------------------
# Domain layout of the mean face (mm, see Convention)
# --------------------------------------------------------------------------------------------

#: Target edge length of the domain mesh, mm (about 4,500 vertices).
EDGE_LENGTH = 2.6
#: Vertical centre and half-axes of the outer boundary (an egg: narrower at the chin).
OUTER_CENTER_V = 16.0
OUTER_HALF_WIDTH = 90.0
OUTER_HALF_HEIGHT_TOP = 92.0
OUTER_HALF_HEIGHT_BOTTOM = 90.0
#: Eye opening: centre (|u|, v), half-width, height above / below the centre line, mm.
EYE_CENTER = (33.0, 40.0)
EYE_HALF_WIDTH = 13.5
EYE_UPPER = 5.0
EYE_LOWER = 3.6
#: Mouth slit: centre v, half-width, half-height at the middle, mm.
MOUTH_CENTER_V = -21.0
MOUTH_HALF_WIDTH = 25.0
MOUTH_HALF_HEIGHT = 1.9
#: Relaxation sweeps of the interior points (uniform Laplacian smoothing + re-triangulation).
RELAX_SWEEPS = 12


def _resample_closed(curve: np.ndarray, spacing: float) -> np.ndarray:
    """Resample a closed polyline at (nearly) uniform arc length.

    Args:
        curve: (M, 2) float, densely sampled, first point not repeated.
        spacing: target distance between consecutive output points, same unit.

    Returns:
        (K, 2) float, K >= 8 points in the curve's order.
    """
    closed = np.vstack([curve, curve[:1]])
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)  # (M,)
    s = np.concatenate([[0.0], np.cumsum(seg)])  # (M+1,)
    k = max(8, int(round(s[-1] / spacing)))
    t = np.arange(k) * (s[-1] / k)
    return np.stack([np.interp(t, s, closed[:, 0]), np.interp(t, s, closed[:, 1])], axis=1)


def outer_curve(n: int = 2000) -> np.ndarray:
    """(n, 2) float, mm: the outer boundary of the domain, counter-clockwise, starting at the right."""
    phi = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    s, c = np.sin(phi), np.cos(phi)
    half_h = np.where(s >= 0, OUTER_HALF_HEIGHT_TOP, OUTER_HALF_HEIGHT_BOTTOM)
    # the lower face narrows towards the chin (jaw), the top slightly (temples)
    narrow = np.where(s < 0, 1.0 - 0.30 * s**2, 1.0 - 0.12 * s**2)
    u = OUTER_HALF_WIDTH * np.sign(c) * np.abs(c) ** 0.85 * narrow
    v = OUTER_CENTER_V + half_h * s
    return np.stack([u, v], axis=1)


def eye_curve(side: int, n: int = 600) -> np.ndarray:
    """(n, 2) float, mm: the eye opening of the subject's left (``side=+1``, u > 0) or right (-1) eye.

    Almond shaped (the upper lid arches more than the lower), corners rounded; counter-clockwise.
    """
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    # x in [-1, 1] across the eye; the inner (nasal) corner is lower than the outer one
    height = np.where(s >= 0, EYE_UPPER, EYE_LOWER) * np.abs(s) ** 1.0
    lift = 1.2 * c * side * -1.0  # inner corner (towards u = 0) slightly lower
    u = side * EYE_CENTER[0] + EYE_HALF_WIDTH * c
    v = EYE_CENTER[1] + np.sign(s) * height * (1.0 - 0.25 * c * c) - 0.6 * lift * (1 - np.abs(s))
    return np.stack([u, v], axis=1)


def mouth_curve(n: int = 800) -> np.ndarray:
    """(n, 2) float, mm: the mouth slit (lips closed), counter-clockwise, corners at u = +-MOUTH_HALF_WIDTH."""
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    u = MOUTH_HALF_WIDTH * c
    # a gentle Cupid's-bow curve of the lip line, rounded ends
    v = MOUTH_CENTER_V + MOUTH_HALF_HEIGHT * s * (0.55 + 0.45 * np.abs(s)) + 1.0 * (c * c - 0.5)
    return np.stack([u, v], axis=1)


def _inside_polygon(points: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """(P,) bool: even-odd point-in-polygon test of (P, 2) points against a closed (M, 2) polygon."""
    x, y = points[:, 0:1], points[:, 1:2]  # (P, 1)
    a, b = poly, np.roll(poly, -1, axis=0)  # (M, 2)
    crosses = (a[:, 1] > y) != (b[:, 1] > y)  # (P, M)
    with np.errstate(divide="ignore", invalid="ignore"):
        xint = a[:, 0] + (y - a[:, 1]) * (b[:, 0] - a[:, 0]) / (b[:, 1] - a[:, 1])
    return (crosses & (x < xint)).sum(axis=1) % 2 == 1


def _distance_to_polyline(points: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """(P,) float: distance from (P, 2) points to the closed (M, 2) polyline."""
    a, b = poly, np.roll(poly, -1, axis=0)  # (M, 2)
    ab = b - a
    t = np.einsum("pmk,mk->pm", points[:, None, :] - a[None], ab) / np.maximum((ab * ab).sum(1), 1e-12)
    t = np.clip(t, 0.0, 1.0)  # (P, M)
    closest = a[None] + t[..., None] * ab[None]  # (P, M, 2)
    return np.linalg.norm(points[:, None, :] - closest, axis=2).min(axis=1)


@dataclass(frozen=True)
class TemplateMesh:
    """The face domain mesh (topology of every procedural face) and its named parts.

    Attributes:
        domain: (V, 2) float64, mm, each vertex's ``(u, v)`` domain position.
        faces: (F, 3) int64, counter-clockwise in ``(u, v)``.
        outer_rim: (B,) int64, outer boundary vertices in loop order.
        eye_rims: ((K,) int64, (K,) int64) rim vertices of the right (u < 0) and left (u > 0) eye.
        mouth_rim: (M,) int64, rim vertices of the mouth slit, counter-clockwise from the left corner.
        mouth_corners: (2,) int64, the right (u < 0) and left (u > 0) slit corner vertices.
        eye_corners: (2, 2) int64, [[right outer, right inner], [left inner, left outer]] corner vertices.
        landmark_sets: dict name -> LandmarkSet (``"ibug68"``).
    """

    domain: np.ndarray
    faces: np.ndarray
    outer_rim: np.ndarray
    eye_rims: tuple
    mouth_rim: np.ndarray
    mouth_corners: np.ndarray
    eye_corners: np.ndarray
    landmark_sets: dict = field(default_factory=dict)

    @property
    def num_vertices(self) -> int:
        return int(self.domain.shape[0])


def _triangulate(points: np.ndarray, outer: np.ndarray, holes: list[np.ndarray]) -> np.ndarray:
    """(F, 3) int64 Delaunay triangles of ``points`` whose centroid lies in the domain, CCW."""
    from scipy.spatial import Delaunay

    tri = Delaunay(points).simplices.astype(np.int64)  # (F0, 3)
    cen = points[tri].mean(axis=1)  # (F0, 2)
    keep = _inside_polygon(cen, outer)
    for hole in holes:
        keep &= ~_inside_polygon(cen, hole)
    tri = tri[keep]
    p = points[tri]  # (F, 3, 2)
    area2 = (p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1]) - (p[:, 1, 1] - p[:, 0, 1]) * (p[:, 2, 0] - p[:, 0, 0])
    tri[area2 < 0] = tri[area2 < 0][:, [0, 2, 1]]
    return tri


def _build_domain_mesh(h: float) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], int]:
    """Mesh the domain with edge length ~h.

    Returns:
        points (V, 2) float64 mm, faces (F, 3) int64, the four resampled boundary curves
        [outer, right eye, left eye, mouth] as (K_i, 2) arrays, and the number of boundary
        points (they come first in ``points``, in the curves' order).
    """
    outer = _resample_closed(outer_curve(), h)
    eyes = [_resample_closed(eye_curve(s), 0.8 * h) for s in (-1, 1)]
    mouth = _resample_closed(mouth_curve(), 0.8 * h)
    curves = [outer, *eyes, mouth]
    holes = [*eyes, mouth]
    fixed = np.vstack(curves)  # (Nb, 2)

    # interior: a hexagonal lattice, kept away from every curve
    ys = np.arange(-OUTER_HALF_HEIGHT_BOTTOM + OUTER_CENTER_V, OUTER_HALF_HEIGHT_TOP + OUTER_CENTER_V, h * np.sqrt(3) / 2)
    rows = []
    for r, y in enumerate(ys):
        xs = np.arange(-OUTER_HALF_WIDTH, OUTER_HALF_WIDTH + h, h) + (0.5 * h if r % 2 else 0.0)
        rows.append(np.stack([xs, np.full_like(xs, y)], axis=1))
    lattice = np.vstack(rows)
    keep = _inside_polygon(lattice, outer)
    for hole in holes:
        keep &= ~_inside_polygon(lattice, hole)
    lattice = lattice[keep]
    dist = np.min([_distance_to_polyline(lattice, c) for c in curves], axis=0)
    inner = lattice[dist > 0.7 * h]

    nb = len(fixed)
    points = np.vstack([fixed, inner])
    for _ in range(RELAX_SWEEPS):
        faces = _triangulate(points, outer, holes)
        # uniform Laplacian smoothing of the interior points (boundary fixed)
        e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])  # (3F, 2)
        e = np.concatenate([e, e[:, ::-1]])
        acc = np.zeros_like(points)
        cnt = np.zeros(len(points))
        np.add.at(acc, e[:, 0], points[e[:, 1]])
        np.add.at(cnt, e[:, 0], 1.0)
        target = acc / np.maximum(cnt, 1)[:, None]
        moved = points.copy()
        moved[nb:] = 0.5 * points[nb:] + 0.5 * target[nb:]
        # a point may not leave the domain (it would be dropped by the centroid filter)
        ok = _inside_polygon(moved[nb:], outer)
        for hole in holes:
            ok &= ~_inside_polygon(moved[nb:], hole)
        points[nb:][ok] = moved[nb:][ok]
    faces = _triangulate(points, outer, holes)
    used = np.zeros(len(points), dtype=bool)
    used[faces.ravel()] = True
    if not used.all():  # drop stray points no triangle kept (re-index)
        remap = np.cumsum(used) - 1
        points, faces = points[used], remap[faces]
        nb = int(used[:nb].sum())
    return points, faces, curves, nb


def _locate(points: np.ndarray, domain: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Triangle and barycentrics of (L, 2) domain points: ((L,) int64, (L, 3) float64).

    A point outside every triangle snaps to the triangle with the least negative barycentric.
    """
    p = domain[faces]  # (F, 3, 2)
    a, b, c = p[:, 0], p[:, 1], p[:, 2]
    d = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])  # (F,)
    x = points[:, None, :]  # (L, 1, 2)
    w1 = ((x[..., 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (x[..., 1] - a[:, 1]) * (c[:, 0] - a[:, 0])) / d
    w2 = ((b[:, 0] - a[:, 0]) * (x[..., 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (x[..., 0] - a[:, 0])) / d
    w = np.stack([1.0 - w1 - w2, w1, w2], axis=-1)  # (L, F, 3)
    best = np.argmax(w.min(axis=-1), axis=1)  # (L,)
    bary = np.clip(w[np.arange(len(points)), best], 0.0, None)
    return best.astype(np.int64), bary / bary.sum(axis=1, keepdims=True)


def _rim_point(domain, rim, target):
    """Index (into ``rim``) of the rim vertex nearest to the (2,) domain point ``target``."""
    return int(np.argmin(np.linalg.norm(domain[rim] - np.asarray(target), axis=1)))


def _ibug68(domain, faces, eye_rims, mouth_rim, mouth_corners) -> LandmarkSet:
    """The 68-point set (order in the module Convention)."""
    ex, ey = EYE_CENTER
    pts = np.zeros((68, 2))
    # jaw contour 0-16: from the right temple level along the cheek, round the chin, up the left
    ang = np.linspace(np.deg2rad(190.0), np.deg2rad(350.0), 17)
    pts[0:17, 0] = 70.0 * np.sign(np.cos(ang)) * np.abs(np.cos(ang)) ** 0.9
    pts[0:17, 1] = 28.0 + 94.0 * np.sin(ang) * (1.0 - 0.1 * np.cos(ang) ** 2)
    # brows 17-26 (right brow outer -> inner, then left inner -> outer)
    bu = np.array([-52.0, -44.0, -35.0, -25.0, -15.0])
    bv = np.array([52.0, 57.5, 59.5, 59.0, 57.0])
    pts[17:22] = np.stack([bu, bv], 1)
    pts[22:27] = np.stack([-bu[::-1], bv[::-1]], 1)
    # nose bridge 27-30 (top to tip), nostril base 31-35 (right to left)
    pts[27:31] = np.stack([np.zeros(4), [40.0, 28.0, 16.0, 5.0]], 1)
    pts[31:36] = np.stack([[-11.0, -5.5, 0.0, 5.5, 11.0], [1.5, 0.3, 0.0, 0.3, 1.5]], 1)
    # outer lips 49-53 (upper, right to left) and 55-59 (lower, left to right); corners below
    pts[49:54] = np.stack([[-15.0, -6.0, 0.0, 6.0, 15.0], MOUTH_CENTER_V + np.array([4.8, 7.5, 6.5, 7.5, 4.8])], 1)
    pts[55:60] = np.stack([[15.0, 7.0, 0.0, -7.0, -15.0], MOUTH_CENTER_V - np.array([5.5, 8.5, 9.0, 8.5, 5.5])], 1)
    face_index, bary = _locate(pts, domain, faces)
    fi, bw = face_index.copy(), bary.copy()

    def put_vertex(k, vertex):
        one = LandmarkSet.from_vertex_indices("x", np.array([vertex]), faces)
        fi[k], bw[k] = one.face_index[0], one.bary[0]

    # eyes on the rims: corners at the extreme u, lids at 1/3 and 2/3 of the width
    for side, rim, ids in ((-1, eye_rims[0], (36, 37, 38, 39, 40, 41)), (1, eye_rims[1], (45, 44, 43, 42, 47, 46))):
        d = domain[rim]
        cu = side * ex
        outer_k = rim[np.argmax(side * (d[:, 0] - cu))]
        inner_k = rim[np.argmin(side * (d[:, 0] - cu))]
        up = d[:, 1] > ey - 1.0
        upper = [rim[up][_rim_point(domain, rim[up], (cu + side * f * EYE_HALF_WIDTH, ey + EYE_UPPER))] for f in (1 / 3, -1 / 3)]
        lower = [rim[~up][_rim_point(domain, rim[~up], (cu + side * f * EYE_HALF_WIDTH, ey - EYE_LOWER))] for f in (-1 / 3, 1 / 3)]
        for k, vtx in zip(ids, (outer_k, upper[0], upper[1], inner_k, lower[0], lower[1])):
            put_vertex(k, vtx)
    # mouth: corners 48/54 on the slit corners; inner lip 61-63 upper rim, 65-67 lower rim
    put_vertex(48, mouth_corners[0])
    put_vertex(54, mouth_corners[1])
    d = domain[mouth_rim]
    up = d[:, 1] > MOUTH_CENTER_V
    for k, uu in zip((61, 62, 63), (-8.0, 0.0, 8.0)):
        put_vertex(k, mouth_rim[up][_rim_point(domain, mouth_rim[up], (uu, MOUTH_CENTER_V + 1))])
    for k, uu in zip((65, 66, 67), (8.0, 0.0, -8.0)):
        put_vertex(k, mouth_rim[~up][_rim_point(domain, mouth_rim[~up], (uu, MOUTH_CENTER_V - 1))])
    # 60/64: on the rim edge leaving each corner, one third of the way (distinct from 48/54)
    for k, corner in ((60, mouth_corners[0]), (64, mouth_corners[1])):
        pos = int(np.flatnonzero(mouth_rim == corner)[0])
        nxt = int(mouth_rim[(pos + 1) % len(mouth_rim)])
        tri = np.flatnonzero((faces == corner).any(1) & (faces == nxt).any(1))[0]
        w = np.zeros(3)
        w[list(faces[tri]).index(corner)] = 2.0 / 3.0
        w[list(faces[tri]).index(nxt)] = 1.0 / 3.0
        fi[k], bw[k] = tri, w
    return LandmarkSet("ibug68", fi, bw)


@lru_cache(maxsize=1)
def template_mesh() -> TemplateMesh:
    """The face domain mesh (built once per process, deterministic; about 0.5 s)."""
    points, faces, curves, nb = _build_domain_mesh(EDGE_LENGTH)
    sizes = np.cumsum([0] + [len(c) for c in curves])
    ids = [np.arange(sizes[i], sizes[i + 1]) for i in range(4)]  # boundary points come first
    outer_rim, right_eye, left_eye, mouth_rim = ids
    d = points[mouth_rim]
    mouth_corners = np.array([mouth_rim[np.argmin(d[:, 0])], mouth_rim[np.argmax(d[:, 0])]], dtype=np.int64)
    # start the mouth rim at the left corner (it is counter-clockwise already)
    start = int(np.flatnonzero(mouth_rim == mouth_corners[1])[0])
    mouth_rim = np.roll(mouth_rim, -start)
    eye_corners = np.array(
        [
            [right_eye[np.argmin(points[right_eye, 0])], right_eye[np.argmax(points[right_eye, 0])]],
            [left_eye[np.argmin(points[left_eye, 0])], left_eye[np.argmax(points[left_eye, 0])]],
        ],
        dtype=np.int64,
    )
    lm = _ibug68(points, faces, (right_eye, left_eye), mouth_rim, mouth_corners)
    for arr in (points, faces):
        arr.setflags(write=False)
    return TemplateMesh(
        domain=points,
        faces=faces,
        outer_rim=outer_rim,
        eye_rims=(right_eye, left_eye),
        mouth_rim=mouth_rim,
        mouth_corners=mouth_corners,
        eye_corners=eye_corners,
        landmark_sets={"ibug68": lm},
    )
