"""Landmarks of a video's frames: mediapipe's face mesh in video (tracking) mode, largest face.

Convention:
    * Points are in the photo frame of :mod:`fitface.landmarks.lift_photo` (pixels: X right,
      Y up = -row, Z towards the viewer), per frame.
    * The largest face of each frame is kept (bounding-box area; mediapipe looks for at most
      :data:`MAX_TRACKED_FACES`); a frame without a face is invalid: its points are NaN and
      ``valid`` is False.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from fitface.landmarks.lift_photo import photo_frame

#: Faces mediapipe tracks per frame (the largest is kept).
MAX_TRACKED_FACES = 2


@dataclass
class LiftedFrames:
    """The largest face of every frame.

    Attributes:
        points: (T, L, 3) float64 photo frame (pixels) of the chosen mediapipe ``indices``;
            NaN in invalid frames.
        valid: (T,) bool, a face was found.
        bbox: (T, 4) float64 ``(x0, y0, x1, y1)`` pixels (NaN when invalid).
        seconds: wall time spent in mediapipe (its start included, decoding excluded).
        cpu_seconds: the same in CPU time (every thread of the process).
    """

    points: np.ndarray
    valid: np.ndarray
    bbox: np.ndarray
    seconds: float
    cpu_seconds: float = 0.0


def lift_frames(images: Iterable[np.ndarray], indices: np.ndarray, mediapipe_model: str | os.PathLike | None = None,
                progress: Callable[[int], None] | None = None, times: np.ndarray | None = None) -> LiftedFrames:
    """Run the face mesh on consecutive frames of one video (tracking mode).

    Args:
        images: (H, W, 3) uint8 RGB frames, in time order.
        indices: (L,) int mediapipe indices kept (the model's ``"mediapipe"`` set).
        mediapipe_model: None (bundled face mesh) or a ``face_landmarker.task`` file.
        progress: called with the number of frames done after each frame.
        times: optional (T,) float seconds of the frames (the Tasks API's video timestamps;
            default 33 ms apart).

    Returns:
        :class:`LiftedFrames` (possibly with no valid frame: the caller decides).
    """
    from fitface.landmarks.mediapipe_mesh import FaceMeshDetector

    idx = np.asarray(indices, dtype=np.int64)
    pts, valid, boxes = [], [], []
    t_start, c_start = time.perf_counter(), time.process_time()
    with FaceMeshDetector(mediapipe_model, max_faces=MAX_TRACKED_FACES, video=True) as det:
        spent = time.perf_counter() - t_start  # the graph's start counts as mediapipe's
        cpu = time.process_time() - c_start
        for k, img in enumerate(images):
            t0, c0 = time.perf_counter(), time.process_time()
            found = det.detect(img, timestamp_ms=None if times is None else int(round(1e3 * times[k])))
            spent += time.perf_counter() - t0
            cpu += time.process_time() - c0
            if found and found[0].points.shape[0] > int(idx.max()):
                pts.append(photo_frame(found[0].points)[idx])
                boxes.append(np.asarray(found[0].bbox, dtype=np.float64))
                valid.append(True)
            else:
                pts.append(np.full((idx.shape[0], 3), np.nan))
                boxes.append(np.full(4, np.nan))
                valid.append(False)
            if progress is not None:
                progress(k + 1)
    if not pts:
        return LiftedFrames(np.zeros((0, idx.shape[0], 3)), np.zeros(0, bool), np.zeros((0, 4)), spent, cpu)
    return LiftedFrames(np.stack(pts), np.asarray(valid, dtype=bool), np.stack(boxes), spent, cpu)


__all__ = ["LiftedFrames", "MAX_TRACKED_FACES", "lift_frames"]
