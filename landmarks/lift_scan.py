"""Automatic landmarks on a raw scan: render several views, run mediapipe, back-project, vote.

Pipeline (:func:`lift_scan`):

1. Orientation. The scan is assumed to face +z with +y up (the project's convention). If no
   face is found in the frontal view, 24 orientations (the 6 axis directions x 4 in-image
   rolls) are tried and the one with the largest detected face becomes the base view.
2. Views. ``views`` renders (:data:`VIEW_ANGLES`: frontal, then yaw +-20 deg, pitch +-15 deg,
   ...) of the shaded scan relative to the base view, each framed by
   :func:`fitface.geometry.camera.frame_mesh` (orthographic, ``size`` pixels).
3. Detection and back-projection. mediapipe runs on each render (the largest face is used);
   each of its image points is mapped onto the scan surface by an exact ray cast
   (:func:`fitface.geometry.render.locate_points`); points over holes or off the mesh are
   missing in that view.
4. Consensus, per mediapipe point over the views that saw it: the coordinate-wise median,
   the observations within ``tol`` of it (inliers) and, when there are at least
   ``min_support`` of them, their mean, snapped back onto the surface through the base view.
   A view that sees the point on an occluded side (mediapipe still predicts it, the ray then
   hits the nearer surface) is outvoted.

Convention:
    * Points are in the scan's own frame and unit. ``tol`` defaults to
      :data:`INLIER_TOL_FRACTION` of the face width (the frontal detection's bounding-box
      width, in scan units), so it does not depend on the unit.
    * Output arrays are indexed by mediapipe point index (0..N-1, N = 478 or 468); points
      without consensus are NaN with ``valid`` False.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from fitface.checks import check_faces, check_finite, check_shape
from fitface.errors import InputError, NoFaceError

#: Default number of views and render size (pixels).
DEFAULT_VIEWS = 5
RENDER_SIZE = 512
#: (yaw, pitch) in degrees of the views, relative to the base (frontal) view; the first ``views``
#: are used. Yaw beyond ~35 deg hides one eye, where mediapipe's guesses get unreliable.
VIEW_ANGLES = (
    (0.0, 0.0), (-20.0, 0.0), (20.0, 0.0), (0.0, -15.0), (0.0, 15.0),
    (-20.0, -12.0), (20.0, -12.0), (-20.0, 12.0), (20.0, 12.0),
    (-30.0, 0.0), (30.0, 0.0), (0.0, -25.0), (0.0, 25.0),
)
#: Inlier radius of the consensus, as a fraction of the face width (0.03 of ~150 mm = 4.5 mm).
INLIER_TOL_FRACTION = 0.03
#: Background grey of the renders (mid-dark, so the shaded skin-toned face stands out).
BACKGROUND = (40, 40, 40)


@dataclass
class ViewDetection:
    """One rendered view and what mediapipe found in it.

    Attributes:
        rendering: the :class:`fitface.geometry.render.Rendering`.
        image_points: (N, 3) float64 mediapipe points in this view's pixels (x, y, z), or None
            when no face was found.
        surface: (N, 3) float64 back-projected surface points (scan frame), NaN where missing.
        face_index: (N,) int64 triangle hit per point (-1 where missing).
        bary: (N, 3) float64 barycentrics of the hit.
    """

    rendering: object
    image_points: np.ndarray | None
    surface: np.ndarray
    face_index: np.ndarray
    bary: np.ndarray


@dataclass
class MultiViewLandmarks:
    """Consensus of mediapipe points back-projected from several views.

    Attributes:
        points: (N, 3) float64 consensus points, scan frame and unit (NaN where not valid).
        valid: (N,) bool, enough views agreed (``support >= min_support``).
        face_index: (N,) int64 triangle of the (snapped) consensus point, -1 where not valid.
        bary: (N, 3) float64 its barycentrics.
        support: (N,) int number of agreeing views (inliers).
        seen: (N,) int number of views in which the point landed on the surface.
        spread: (N,) float64 RMS distance of the inliers to the consensus, scan unit.
        tol: the inlier radius used, scan unit.
        face_width: face width in the base view (scan unit).
        angles: the (yaw, pitch) of each view, degrees, relative to ``base_rotation``.
        base_rotation: (3, 3) world -> camera rotation of the base (frontal) view.
        views: the :class:`ViewDetection` per view.
    """

    points: np.ndarray
    valid: np.ndarray
    face_index: np.ndarray
    bary: np.ndarray
    support: np.ndarray
    seen: np.ndarray
    spread: np.ndarray
    tol: float
    face_width: float
    angles: list
    base_rotation: np.ndarray
    views: list = field(default_factory=list)

    @property
    def num_points(self) -> int:
        return int(self.points.shape[0])


def view_angles(views: int | Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The first ``views`` of :data:`VIEW_ANGLES`, or an explicit list of (yaw, pitch) degrees."""
    if isinstance(views, (int, np.integer)):
        if not 1 <= int(views) <= len(VIEW_ANGLES):
            raise InputError(f"--views: expected 1..{len(VIEW_ANGLES)} views, got {views}")
        return [tuple(map(float, a)) for a in VIEW_ANGLES[: int(views)]]
    out = [tuple(float(x) for x in a) for a in views]
    if not out or any(len(a) != 2 for a in out):
        raise ValueError("views: expected (yaw, pitch) pairs")
    return out


def _surface_points(v: np.ndarray, f: np.ndarray, face_index: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """(N,) triangles + (N, 3) barycentrics -> (N, 3) points (NaN where face_index < 0)."""
    ok = face_index >= 0
    out = np.full((len(face_index), 3), np.nan)
    out[ok] = np.einsum("nk,nkc->nc", bary[ok], v[f[face_index[ok]]])
    return out


def render_and_detect(vertices: np.ndarray, faces: np.ndarray, rotation: np.ndarray, detector,
                      size: int = RENDER_SIZE) -> ViewDetection:
    """Render one view, detect the largest face and back-project its points onto the mesh.

    Args:
        vertices: (V, 3) float64. faces: (F, 3) int64.
        rotation: (3, 3) world -> camera rotation of the view.
        detector: a :class:`fitface.landmarks.mediapipe_mesh.FaceMeshDetector`.
        size: render size in pixels.
    """
    from fitface.geometry.camera import frame_mesh
    from fitface.geometry.render import locate_points, render_shaded

    cam = frame_mesh(vertices, size, rotation=rotation)
    r = render_shaded(vertices, faces, camera=cam, background=BACKGROUND)
    found = detector.detect(r.image)
    if not found:
        return ViewDetection(r, None, np.zeros((0, 3)), np.zeros(0, np.int64), np.zeros((0, 3)))
    pts = found[0].points  # (N, 3) pixels
    sp = locate_points(r, pts[:, :2], vertices, faces)
    return ViewDetection(r, pts, _surface_points(vertices, faces, sp.face_index, sp.bary), sp.face_index, sp.bary)


def _orientation_candidates() -> list[np.ndarray]:
    """24 rotations: camera looking along each of the 6 axis directions, 4 in-image rolls each."""
    from fitface.geometry.camera import rotation_look

    out = []
    for d in ((0, 0, -1), (0, 0, 1), (1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0)):
        base = rotation_look(d)
        for roll in (0.0, 90.0, 180.0, 270.0):
            c, s = np.cos(np.deg2rad(roll)), np.sin(np.deg2rad(roll))
            rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
            out.append(rz @ base)
    return out


#: Largest head yaw (degrees, from mediapipe's eye-corner depths) accepted for the base view.
MAX_BASE_YAW = 30.0
#: Orientation search prior: score added per degree between a view's image-up and world +y.
#: mediapipe reads the open face mask rendered upside down as an upright face (roll ~0, yaw
#: ~10 deg) about as readily as the right way up, so the project's y-up convention breaks the tie.
UP_PRIOR_PER_DEGREE = 0.2


def apparent_yaw(image_points: np.ndarray) -> float:
    """Head yaw in degrees implied by mediapipe's outer eye corners (33, 263): ``atan2(dz, dx)``
    (0 for a frontal face; a profile seen from the side gives large values)."""
    from fitface.landmarks.mediapipe_points import LEFT_EYE_OUTER, RIGHT_EYE_OUTER

    d = image_points[LEFT_EYE_OUTER] - image_points[RIGHT_EYE_OUTER]
    return float(np.degrees(np.arctan2(abs(d[2]), abs(d[0]))))


def _view_score(vd: ViewDetection) -> float:
    """Lower is a better base view: the apparent yaw plus the in-image roll of the eye line (both in
    degrees; an upside-down face has roll ~180), plus 1000 when the rendered surface puts the nose
    behind the eye corners (the inside of an open face mask seen from behind reads as a face)."""
    from fitface.landmarks.mediapipe_points import LEFT_EYE_OUTER, RIGHT_EYE_OUTER

    nose = 4  # just above the tip: on the surface in every view
    eye = vd.image_points[LEFT_EYE_OUTER] - vd.image_points[RIGHT_EYE_OUTER]  # image right when upright
    roll = abs(float(np.degrees(np.arctan2(eye[1], eye[0]))))
    cam = vd.rendering.camera
    pts = vd.surface[[nose, RIGHT_EYE_OUTER, LEFT_EYE_OUTER]]
    if not np.isfinite(pts).all():
        return 1000.0 + apparent_yaw(vd.image_points) + roll
    depth = cam.project(pts)[1]  # smaller is nearer
    convex = depth[0] < 0.5 * (depth[1] + depth[2])
    return apparent_yaw(vd.image_points) + roll + (0.0 if convex else 1000.0)


def find_base_view(vertices, faces, detector, size: int = RENDER_SIZE, search: bool = True):
    """The base (frontal) view: identity if a face with ``apparent_yaw <= MAX_BASE_YAW`` is found
    there (and the rendered nose is in front of the eye corners), else the best face of 24
    orientations (6 axis directions x 4 rolls), see ``_view_score`` and :data:`UP_PRIOR_PER_DEGREE`
    (a scan lying upside down may be read upside down: pass it y-up).

    Returns:
        ``(rotation (3, 3), ViewDetection)``.

    Raises:
        NoFaceError: no orientation shows a face (message without a path; callers add it).
    """
    first = render_and_detect(vertices, faces, np.eye(3), detector, size)
    if first.image_points is not None and (not search or _view_score(first) <= MAX_BASE_YAW):
        return np.eye(3), first
    if not search:
        raise NoFaceError("no face found in the rendered scan")
    best, best_key = None, None
    if first.image_points is not None:
        best, best_key = (np.eye(3), first), _view_score(first)
    for rot in _orientation_candidates()[1:]:  # [0] is the identity, tried above
        vd = render_and_detect(vertices, faces, rot, detector, size)
        if vd.image_points is not None:
            up = float(np.degrees(np.arccos(np.clip(rot[1, 1], -1.0, 1.0))))  # image-up vs world +y
            key = _view_score(vd) + UP_PRIOR_PER_DEGREE * up
            if best_key is None or key < best_key:
                best, best_key = (rot, vd), key
    if best is None:
        raise NoFaceError("no face found in the rendered scan from any of 24 orientations")
    return best


def consensus(observations: np.ndarray, tol: float, min_support: int) -> tuple[np.ndarray, ...]:
    """Robust per-point consensus of K views' observations.

    Args:
        observations: (K, N, 3) float, NaN where a view did not see the point.
        tol: inlier radius (same unit).
        min_support: fewest inliers for a valid point.

    Returns:
        ``(points (N, 3) NaN where invalid, valid (N,), support (N,), seen (N,), spread (N,),
        inliers (K, N) bool)``.
    """
    obs = np.asarray(observations, dtype=np.float64)
    check_shape("observations", obs, ("K", "N", 3))
    ok = np.isfinite(obs).all(axis=2)  # (K, N)
    seen = ok.sum(axis=0)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (points no view saw)
        med = np.nanmedian(np.where(ok[..., None], obs, np.nan), axis=0)  # (N, 3)
    dist = np.linalg.norm(obs - med[None], axis=2)  # (K, N), NaN where unseen
    inl = ok & (np.nan_to_num(dist, nan=np.inf) <= tol)
    support = inl.sum(axis=0)
    valid = support >= max(int(min_support), 1)
    w = inl.astype(np.float64)[..., None]
    mean = (np.nan_to_num(obs) * w).sum(axis=0) / np.maximum(w.sum(axis=0), 1.0)  # (N, 3)
    d2 = np.where(inl, ((np.nan_to_num(obs) - mean[None]) ** 2).sum(axis=2), 0.0)
    spread = np.sqrt(d2.sum(axis=0) / np.maximum(support, 1))
    points = np.where(valid[:, None], mean, np.nan)
    spread = np.where(valid, spread, np.nan)
    return points, valid, support, seen, spread, inl


def multiview_landmarks(
    vertices: np.ndarray,
    faces: np.ndarray,
    views: int | Sequence[tuple[float, float]] = DEFAULT_VIEWS,
    size: int = RENDER_SIZE,
    detector=None,
    mediapipe_model: str | os.PathLike | None = None,
    tol: float | None = None,
    min_support: int | None = None,
    search_orientation: bool = True,
) -> MultiViewLandmarks:
    """Detect mediapipe points in several renders of a mesh and take their robust consensus.

    Args:
        vertices: (V, 3) float, any unit. faces: (F, 3) int (a point cloud cannot be rendered).
        views: number of views (first of :data:`VIEW_ANGLES`) or (yaw, pitch) pairs in degrees.
        size: render size in pixels.
        detector: a :class:`~fitface.landmarks.mediapipe_mesh.FaceMeshDetector` to reuse (else one
            is built with ``mediapipe_model``).
        tol: inlier radius in the mesh unit (default :data:`INLIER_TOL_FRACTION` x face width).
        min_support: fewest agreeing views (default ``ceil(K / 2)``, at least 1).
        search_orientation: try 24 orientations when the frontal view shows no face.

    Returns:
        :class:`MultiViewLandmarks`.

    Raises:
        NoFaceError: no face in any view. ValueError: bad arrays.
    """
    from fitface.geometry.camera import rotation_yaw_pitch
    from fitface.landmarks.mediapipe_mesh import FaceMeshDetector

    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    check_shape("vertices", v, ("V", 3))
    check_finite("vertices", v)
    check_faces("faces", f, v.shape[0])
    if f.shape[0] == 0:
        raise ValueError("faces: a mesh with triangles is needed (point clouds cannot be rendered)")
    angles = view_angles(views)
    own = detector is None
    det = FaceMeshDetector(mediapipe_model, max_faces=1) if own else detector
    try:
        base, first = find_base_view(v, f, det, size, search_orientation)
        results: list[ViewDetection] = []
        for yaw, pitch in angles:
            if yaw == 0.0 and pitch == 0.0:
                results.append(first)
            else:
                results.append(render_and_detect(v, f, rotation_yaw_pitch(yaw, pitch) @ base, det, size))
    finally:
        if own:
            det.close()
    n = first.image_points.shape[0]
    k = len(results)
    obs = np.full((k, n, 3), np.nan)
    for i, vd in enumerate(results):
        if vd.image_points is not None and vd.image_points.shape[0] == n:
            obs[i] = vd.surface
    cam0 = first.rendering.camera
    face_width = float(np.ptp(first.image_points[:, 0]) / cam0.scale)
    tol = INLIER_TOL_FRACTION * face_width if tol is None else float(tol)
    if not (np.isfinite(tol) and tol > 0):
        raise ValueError(f"tol: must be > 0, got {tol}")
    min_support = max(1, int(np.ceil(k / 2))) if min_support is None else int(min_support)
    points, valid, support, seen, spread, _ = consensus(obs, tol, min_support)
    face_index, bary = snap_to_surface(points, v, f, first.rendering)
    # a consensus point whose snap misses the surface (over a hole) keeps its medoid observation
    miss = valid & (face_index < 0)
    if miss.any():
        for j in np.flatnonzero(miss):
            d = np.linalg.norm(obs[:, j] - points[j], axis=1)
            i = int(np.nanargmin(d))
            face_index[j], bary[j] = results[i].face_index[j], results[i].bary[j]
    return MultiViewLandmarks(points, valid, face_index, bary, support, seen, spread, tol, face_width,
                              angles, base, results)


def snap_to_surface(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, rendering) -> tuple:
    """Surface point under each 3D point along the rendering's viewing direction (an orthographic
    ray cast through the point's projection); returns ``(face_index (N,) -1 on a miss, bary (N, 3))``."""
    from fitface.geometry.render import locate_points

    p = np.asarray(points, dtype=np.float64)
    xy = np.full((len(p), 2), np.nan)
    ok = np.isfinite(p).all(axis=1)
    if ok.any():
        xy[ok] = rendering.camera.project(p[ok])[0]
    sp = locate_points(rendering, xy, vertices, faces)
    return sp.face_index.copy(), sp.bary.copy()


# ------------------------------------------------------------------------------ scans
@dataclass
class ScanLift:
    """Automatic landmarks of one scan.

    Attributes:
        points: (N, 3) float64, mediapipe point ``i`` on the scan (scan frame and unit); points
            without consensus are filled from the base view's back-projection when it hit the
            surface (``filled``), else NaN.
        valid: (N,) bool consensus reached. filled: (N,) bool taken from the base view only.
        multiview: the :class:`MultiViewLandmarks` behind it.
    """

    points: np.ndarray
    valid: np.ndarray
    filled: np.ndarray
    multiview: MultiViewLandmarks

    def select(self, indices) -> np.ndarray:
        """(L, 3) points of the given mediapipe indices (NaN where unknown)."""
        return self.points[np.asarray(indices, dtype=np.int64)]


def lift_scan(
    vertices: np.ndarray,
    faces: np.ndarray,
    views: int | Sequence[tuple[float, float]] = DEFAULT_VIEWS,
    size: int = RENDER_SIZE,
    mediapipe_model: str | os.PathLike | None = None,
    detector=None,
    tol: float | None = None,
    min_support: int | None = None,
) -> ScanLift:
    """Automatic mediapipe landmarks on a scan (see the module doc for the pipeline).

    Args:
        vertices: (V, 3) float scan vertices, any frame and unit. faces: (F, 3) int.
        views, size, mediapipe_model, detector, tol, min_support: see :func:`multiview_landmarks`.

    Returns:
        :class:`ScanLift` (points in the scan's frame and unit).

    Raises:
        NoFaceError: no face in any rendered view.
    """
    mv = multiview_landmarks(vertices, faces, views, size, detector, mediapipe_model, tol, min_support)
    pts = mv.points.copy()
    base = mv.views[0].surface
    filled = ~mv.valid & np.isfinite(base).all(axis=1)
    pts[filled] = base[filled]
    return ScanLift(pts, mv.valid.copy(), filled, mv)


def scan_overlay(lift: ScanLift, indices=None, size: int | None = None) -> np.ndarray:
    """Contact sheet of the views: each render with its detected points, green where the point
    agreed with the consensus, red where it was outvoted (or missed the surface), and a last
    panel with the consensus points (green) and the filled ones (orange) in the base view.

    Args:
        lift: a :class:`ScanLift`.
        indices: mediapipe indices to draw (default: all).
        size: not used (the views' own size); kept for symmetry with other previews.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    from fitface.geometry.render import draw_points, tile_images

    mv = lift.multiview
    sel = np.arange(mv.num_points) if indices is None else np.asarray(indices, dtype=np.int64)
    ims, labels = [], []
    for (yaw, pitch), vd in zip(mv.angles, mv.views):
        img = vd.rendering.image
        if vd.image_points is not None:
            d = np.linalg.norm(vd.surface[sel] - mv.points[sel], axis=1)
            good = np.nan_to_num(d, nan=np.inf) <= mv.tol
            col = np.where(good[:, None], [[40, 220, 60]], [[235, 40, 40]])
            img = draw_points(img, vd.image_points[sel, :2], col, radius=1.6)
        ims.append(img)
        labels.append(f"yaw {yaw:+.0f} pitch {pitch:+.0f}" + ("" if vd.image_points is not None else " (no face)"))
    r0 = mv.views[0].rendering
    pts = lift.points[sel]
    ok = np.isfinite(pts).all(axis=1)
    xy = np.full((len(sel), 2), np.nan)
    xy[ok] = r0.camera.project(pts[ok])[0]
    col = np.where(lift.valid[sel][:, None], [[40, 220, 60]], [[255, 160, 0]])
    ims.append(draw_points(r0.image, xy, col, radius=1.8))
    labels.append(f"consensus {int(lift.valid[sel].sum())}/{len(sel)}")
    return tile_images(ims, labels)


__all__ = [
    "BACKGROUND", "DEFAULT_VIEWS", "INLIER_TOL_FRACTION", "MAX_BASE_YAW", "apparent_yaw", "MultiViewLandmarks", "RENDER_SIZE", "ScanLift",
    "VIEW_ANGLES", "ViewDetection", "consensus", "find_base_view", "lift_scan", "multiview_landmarks",
    "render_and_detect", "scan_overlay", "snap_to_surface", "view_angles",
]
