"""3D landmarks from a photograph: mediapipe's face mesh in a right-handed, y-up photo frame.

Convention (the *photo frame*, unit: pixels):
    * ``X = x_pix`` (right), ``Y = -y_pix`` (up), ``Z = -z_mp * W`` (towards the viewer), where
      ``x_pix, y_pix`` are continuous pixel coordinates (top-left image corner at (0, 0), pixel
      (i, j)'s centre at (j + 0.5, i + 0.5)) and ``z_mp * W`` is mediapipe's relative depth on
      the x scale (smaller = nearer, see :mod:`fitface.landmarks.mediapipe_mesh`). This is
      mediapipe's (OpenCV-like) frame turned 180 degrees about x, so it has the model's
      orientation (x right, y up, z to the viewer) and a fitted mesh opens upright in a viewer.
    * Weak perspective: mediapipe's x/y are an image projection and its z a learned relative
      depth on the same scale, i.e. the points are an orthographic view of the face scaled by
      ``pixels per model unit``; the fit's similarity transform absorbs that scale (it reads as
      pixels per mm) and the head pose. Perspective distortion (a face close to the lens) is not
      modelled. The ``Z`` origin is arbitrary (near the head's centre). When mediapipe's depth
      is unreliable, fit only ``X, Y`` (``depth="2d"`` in :mod:`fitface.landmarks.photo_fit`).
    * A point ``(X, Y, Z)`` of the frame projects to pixel ``(X, -Y)``: the camera
      :func:`photo_camera` (identity rotation, scale 1, zero translation) renders a mesh in this
      frame exactly over the photograph.
    * Several faces: the largest (bounding-box area) first; ``all_faces=False`` keeps it only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fitface.errors import NoFaceError

#: File suffixes treated as photographs (lower case).
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def is_photo(path: str | os.PathLike) -> bool:
    """True when ``path``'s suffix is one of :data:`PHOTO_SUFFIXES` (case-insensitive)."""
    return Path(path).suffix.lower() in PHOTO_SUFFIXES


def photo_frame(points_px: np.ndarray) -> np.ndarray:
    """Mediapipe pixel points (x right, y down, z away) -> photo frame (X right, Y up, Z towards the viewer).

    Args:
        points_px: (N, 3) float, see :class:`fitface.landmarks.mediapipe_mesh.DetectedFace`.

    Returns:
        (N, 3) float64 ``(x, -y, -z)``.
    """
    p = np.asarray(points_px, dtype=np.float64)
    return p * np.array([1.0, -1.0, -1.0])


def photo_camera(height: int, width: int):
    """The :class:`fitface.geometry.camera.Camera` that renders photo-frame geometry onto the photo."""
    from fitface.geometry.camera import Camera

    return Camera(np.eye(3), 1.0, np.zeros(2), int(height), int(width))


@dataclass(frozen=True)
class LiftedFace:
    """One face's landmarks lifted from a photo.

    Attributes:
        points: (N, 3) float64 photo frame (pixels), N = 478 (468 without iris), mediapipe order.
        image_points: (N, 3) float64 mediapipe pixels (x, y, z as detected).
        bbox: (4,) float64 ``(x0, y0, x1, y1)`` pixels.
        rank: 0 for the largest face, 1 for the next, ...
        image_size: (H, W).
    """

    points: np.ndarray
    image_points: np.ndarray
    bbox: np.ndarray
    rank: int
    image_size: tuple[int, int]

    def select(self, indices) -> np.ndarray:
        """(L, 3) photo-frame points of the given mediapipe indices."""
        return self.points[np.asarray(indices, dtype=np.int64)]


def lift_photo(
    image: np.ndarray,
    mediapipe_model: str | os.PathLike | None = None,
    all_faces: bool = False,
    max_faces: int | None = None,
    detector=None,
    path: str | os.PathLike | None = None,
) -> list[LiftedFace]:
    """Detect faces in a photo and return their mediapipe points in the photo frame.

    Args:
        image: (H, W, 3) uint8 RGB.
        mediapipe_model: None (bundled face mesh) or a ``face_landmarker.task`` file.
        all_faces: every face (largest first); False: the largest only.
        max_faces: faces looked for (default :data:`~fitface.landmarks.mediapipe_mesh.MAX_FACES`).
        detector: a :class:`~fitface.landmarks.mediapipe_mesh.FaceMeshDetector` to reuse.
        path: the photo's file, for messages.

    Returns:
        A non-empty list of :class:`LiftedFace`.

    Raises:
        NoFaceError: no face found (exit code 3).
    """
    from fitface.landmarks.mediapipe_mesh import MAX_FACES, FaceMeshDetector

    img = np.asarray(image)
    if detector is None:
        with FaceMeshDetector(mediapipe_model, max_faces=max_faces or MAX_FACES) as det:
            found = det.detect(img)
    else:
        found = detector.detect(img)
    if not found:
        raise NoFaceError("no face found in the image", path)
    if not all_faces:
        found = found[:1]
    h, w = img.shape[:2]
    return [LiftedFace(photo_frame(f.points), f.points, f.bbox, k, (h, w)) for k, f in enumerate(found)]


def lift_photo_file(path: str | os.PathLike, **kwargs) -> tuple[np.ndarray, list[LiftedFace]]:
    """Read a photo (:func:`fitface.io.image.read_image`) and :func:`lift_photo` it.

    Returns:
        ``(image (H, W, 3) uint8 RGB, faces)``.

    Raises:
        InputError: unreadable image (exit 2). NoFaceError: no face (exit 3).
    """
    from fitface.io.image import read_image

    img = read_image(path)
    return img, lift_photo(img, path=path, **kwargs)


def photo_overlay(image: np.ndarray, faces: list[LiftedFace], indices=None, radius: float | None = None,
                  color=(40, 230, 60), dropped_color=(235, 60, 60)) -> np.ndarray:
    """The photo with each face's points drawn (kept ones in ``color``, the others in ``dropped_color``).

    Args:
        image: (H, W, 3) uint8 RGB.
        faces: lifted faces.
        indices: mediapipe indices drawn as kept (default: the fitting candidates).
        radius: point radius in pixels (default scales with the face size).

    Returns:
        (H, W, 3) uint8 RGB.
    """
    from fitface.geometry.render import draw_points
    from fitface.landmarks.mediapipe_points import CANDIDATE_INDICES

    keep = CANDIDATE_INDICES if indices is None else np.asarray(indices, dtype=np.int64)
    out = np.asarray(image, dtype=np.uint8)
    for f in faces:
        n = f.image_points.shape[0]
        mask = np.zeros(n, dtype=bool)
        mask[keep[keep < n]] = True
        r = radius if radius is not None else max(1.0, 0.006 * float(f.bbox[2] - f.bbox[0]))
        cols = np.where(mask[:, None], np.asarray(color)[None], np.asarray(dropped_color)[None])
        out = draw_points(out, f.image_points[:, :2], cols, radius=r)
    return out


def fit_overlay(image: np.ndarray, vertices: np.ndarray, faces: np.ndarray, alpha: float = 0.65) -> np.ndarray:
    """A fitted mesh (photo frame) rendered shaded over the photo.

    Args:
        image: (H, W, 3) uint8 RGB.
        vertices: (V, 3) float, photo frame (pixels). faces: (F, 3) int.
        alpha: opacity of the rendered mesh.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    from fitface.geometry.render import render_shaded

    img = np.asarray(image, dtype=np.uint8)
    h, w = img.shape[:2]
    r = render_shaded(vertices, faces, camera=photo_camera(h, w))
    m = r.mask[..., None]
    blend = img.astype(np.float64) * (1 - alpha) + r.image.astype(np.float64) * alpha
    return np.where(m, np.round(blend), img).astype(np.uint8)


__all__ = ["LiftedFace", "PHOTO_SUFFIXES", "fit_overlay", "is_photo", "lift_photo", "lift_photo_file",
           "photo_camera", "photo_frame", "photo_overlay"]
