"""Running mediapipe's face mesh on an image: 468/478 points per face, in pixels.

Two back ends, chosen by ``model_path``:

* ``None``: the face mesh bundled with mediapipe 0.10.14 (``mp.solutions.face_mesh``, static
  image mode, or its video (tracking) mode with ``video=True``; iris refinement on: 478 points
  per face).
* a ``.task`` file (``face_landmarker.task`` of newer mediapipe releases, which dropped the
  bundled "solutions"): the Tasks API ``FaceLandmarker`` (478 points per face).

mediapipe is imported lazily (importing it costs ~0.5 s and prints TensorFlow Lite logs).

Convention:
    * Input images are (H, W, 3) uint8 **RGB** (as :func:`fitface.io.image.read_image`).
    * Output points are ``(x, y, z)`` in **pixels**: ``x = x_norm * W`` along columns and
      ``y = y_norm * H`` down the rows (continuous coordinates, the image's top-left corner is
      (0, 0) and pixel (i, j)'s centre is (j + 0.5, i + 0.5), as :mod:`fitface.geometry.raster`).
      ``z = z_norm * W``: mediapipe's relative depth, on the x scale (the docs: "z uses roughly
      the same scale as x"), origin near the head's centre, **smaller is nearer the camera**.
      ``(x, y, z)`` is thus a right-handed frame (x right, y down, z away from the camera: the
      OpenCV camera frame); see :mod:`fitface.landmarks.lift_photo` for the y-up frame fitted.
    * The depth is a weak-perspective estimate learned by mediapipe, not a measurement.
    * Faces are returned largest first (by the area of the points' bounding box).
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fitface.errors import InputError, one_line

#: Default largest number of faces looked for in one image.
MAX_FACES = 8
#: Default minimum detection / presence confidence.
MIN_CONFIDENCE = 0.5


@dataclass(frozen=True)
class DetectedFace:
    """One face found by mediapipe.

    Attributes:
        points: (N, 3) float64, N = 478 (or 468 without iris refinement): x, y pixels and z,
            mediapipe's relative depth in pixels (see the module Convention).
        bbox: (4,) float64 ``(x0, y0, x1, y1)`` pixels, the bounding box of the x/y points.
        score: detection / presence confidence in [0, 1] when the back end reports one, else None.
    """

    points: np.ndarray
    bbox: np.ndarray
    score: float | None = None

    @property
    def area(self) -> float:
        """Bounding-box area in square pixels."""
        x0, y0, x1, y1 = self.bbox
        return float(max(x1 - x0, 0.0) * max(y1 - y0, 0.0))

    @property
    def num_points(self) -> int:
        return int(self.points.shape[0])


@contextlib.contextmanager
def _native_stderr_silenced():
    """Send file descriptor 2 to /dev/null while mediapipe's C++ code runs.

    mediapipe (TFLite, absl) logs INFO/WARNING lines straight to the process's stderr before its
    logging is configured; environment variables do not silence them. Python-level stderr is
    flushed first and restored afterwards, so fitface's own messages are unaffected.
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2 (embedded interpreters): leave everything as it is
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _quiet_mediapipe():
    """Import mediapipe with its C++ logging reduced (lazily, once)."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import mediapipe as mp
    except ImportError as exc:  # pragma: no cover - mediapipe is a dependency
        raise InputError(f"mediapipe is not installed ({exc}); install it with `pip install mediapipe`") from None
    return mp


def _check_image(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"image: expected (H, W, 3) uint8 RGB, got {img.dtype} {img.shape}")
    return np.ascontiguousarray(img)


def _face(points_norm: np.ndarray, h: int, w: int, score: float | None) -> DetectedFace:
    """(N, 3) normalised mediapipe coordinates -> :class:`DetectedFace` in pixels."""
    p = np.asarray(points_norm, dtype=np.float64) * np.array([w, h, w], dtype=np.float64)  # (N, 3)
    bbox = np.array([p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()])
    return DetectedFace(p, bbox, score)


#: Side of the blank image that starts mediapipe's graph inside the detector's constructor.
WARMUP_SIZE = 32


class FaceMeshDetector:
    """A reusable mediapipe face-mesh detector (set-up once, then :meth:`detect` per image).

    Args:
        model_path: None for the bundled face mesh (mediapipe <= 0.10.14), or a
            ``face_landmarker.task`` file for the Tasks API (newer releases).
        max_faces: largest number of faces returned per image.
        min_confidence: minimum detection (and presence / tracking) confidence.
        video: video (tracking) mode: the images passed to :meth:`detect` are consecutive frames
            of one video; mediapipe then re-detects a face only when it loses track of it
            (faster, temporally steadier). Static image mode otherwise.

    Raises:
        InputError: a missing or unreadable ``.task`` file, or a mediapipe without the bundled
            face mesh and no ``model_path``.

    Use as a context manager (or call :meth:`close`) to free mediapipe's graph.
    """

    def __init__(self, model_path: str | os.PathLike | None = None, max_faces: int = MAX_FACES,
                 min_confidence: float = MIN_CONFIDENCE, video: bool = False):
        if int(max_faces) < 1:
            raise ValueError(f"max_faces: must be >= 1, got {max_faces}")
        if not 0.0 <= float(min_confidence) <= 1.0:
            raise ValueError(f"min_confidence: must be in [0, 1], got {min_confidence}")
        self.max_faces = int(max_faces)
        self.min_confidence = float(min_confidence)
        self.video = bool(video)
        self._frames = 0  # frames passed in video mode (their timestamps)
        self.model_path = None if model_path is None else Path(model_path)
        mp = _quiet_mediapipe()
        self._mp = mp
        if self.model_path is None:
            solutions = getattr(mp, "solutions", None)
            if solutions is None or not hasattr(solutions, "face_mesh"):
                raise InputError(
                    f"this mediapipe ({getattr(mp, '__version__', '?')}) has no bundled face mesh; pass the "
                    "FaceLandmarker model with --mediapipe-model face_landmarker.task")
            self._backend = "solutions"
            with warnings.catch_warnings(), _native_stderr_silenced():
                warnings.simplefilter("ignore")  # protobuf deprecation noise inside mediapipe
                self._impl = solutions.face_mesh.FaceMesh(
                    static_image_mode=not self.video, max_num_faces=self.max_faces, refine_landmarks=True,
                    min_detection_confidence=self.min_confidence, min_tracking_confidence=self.min_confidence)
                # the graph starts its TFLite interpreters (which log from their own threads) on
                # the first image: do that here, while fd 2 is silenced
                try:
                    self._impl.process(np.zeros((WARMUP_SIZE, WARMUP_SIZE, 3), np.uint8))
                except BaseException:
                    self.close()
                    raise
        else:
            p = self.model_path
            if not p.is_file():
                raise InputError("no such mediapipe model file (expected a face_landmarker .task file)", p)
            try:
                vision = mp.tasks.vision
                opts = vision.FaceLandmarkerOptions(
                    base_options=mp.tasks.BaseOptions(model_asset_buffer=p.read_bytes()),
                    running_mode=vision.RunningMode.VIDEO if self.video else vision.RunningMode.IMAGE, num_faces=self.max_faces,
                    min_face_detection_confidence=self.min_confidence,
                    min_face_presence_confidence=self.min_confidence)
                with _native_stderr_silenced():
                    self._impl = vision.FaceLandmarker.create_from_options(opts)
            except (RuntimeError, ValueError, OSError) as exc:
                msg = one_line(exc)
                raise InputError(f"not a usable mediapipe face landmarker model: {msg}", p) from None
            self._backend = "tasks"

    def detect(self, image: np.ndarray, timestamp_ms: int | None = None) -> list[DetectedFace]:
        """Faces in one image (video mode: the next frame), largest first.

        Args:
            image: (H, W, 3) uint8 RGB.
            timestamp_ms: video mode with a ``.task`` model: the frame's time in milliseconds
                (increasing; default: 33 ms after the previous frame's).

        Returns:
            A list of :class:`DetectedFace` (empty when no face is found).
        """
        img = _check_image(image)
        h, w = img.shape[:2]
        faces: list[DetectedFace] = []
        with warnings.catch_warnings(), _native_stderr_silenced():
            warnings.simplefilter("ignore")  # protobuf deprecation noise inside mediapipe
            if self._backend == "solutions":
                res = self._impl.process(img)
                for lm in res.multi_face_landmarks or []:
                    pts = np.array([(q.x, q.y, q.z) for q in lm.landmark], dtype=np.float64)
                    faces.append(_face(pts, h, w, None))
            else:
                mp_image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=img)
                try:
                    if self.video:
                        ts = self._frames * 33 if timestamp_ms is None else int(timestamp_ms)
                        res = self._impl.detect_for_video(mp_image, ts)
                    else:
                        res = self._impl.detect(mp_image)
                except RuntimeError as exc:  # a .task bundle whose models do not fit the graph
                    msg = one_line(exc)
                    raise InputError(f"the mediapipe face landmarker model failed: {msg}", self.model_path) from None
                for lm in res.face_landmarks or []:
                    pts = np.array([(q.x, q.y, q.z) for q in lm], dtype=np.float64)
                    faces.append(_face(pts, h, w, None))
        self._frames += 1
        faces.sort(key=lambda f: -f.area)
        return faces

    def close(self) -> None:
        impl, self._impl = getattr(self, "_impl", None), None
        if impl is not None and hasattr(impl, "close"):
            try:
                with _native_stderr_silenced():  # the graph's threads log as they shut down
                    impl.close()
            except RuntimeError:  # a graph that already failed reports its error again on close
                pass

    def __enter__(self) -> "FaceMeshDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def detect_faces(image_rgb: np.ndarray, model_path: str | os.PathLike | None = None,
                 max_faces: int = MAX_FACES, min_confidence: float = MIN_CONFIDENCE) -> list[DetectedFace]:
    """One-shot :meth:`FaceMeshDetector.detect` (builds and frees a detector).

    Args:
        image_rgb: (H, W, 3) uint8 RGB.
        model_path: None (bundled face mesh) or a ``face_landmarker.task`` file.
        max_faces: largest number of faces returned.
        min_confidence: detection confidence threshold.

    Returns:
        Faces largest first, each with points (478, 3) (x, y pixels; z relative depth in pixels).
    """
    with FaceMeshDetector(model_path, max_faces, min_confidence) as det:
        return det.detect(image_rgb)


__all__ = ["DetectedFace", "FaceMeshDetector", "MAX_FACES", "MIN_CONFIDENCE", "detect_faces"]
