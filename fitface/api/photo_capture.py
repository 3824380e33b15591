"""Photos as captures: mediapipe's points of each face, ready for the fitting loop (API layer).

A photo is a capture like a landmark file: :func:`prepare_photo` lifts its faces
(:mod:`fitface.landmarks.lift_photo`) and returns one :class:`~fitface.api.inputs.PreparedCapture`
per face, in the photo frame (pixels), with the model's ``"mediapipe"`` landmark set; the fit
then runs the same engine as 3D landmarks, with the data term chosen by ``depth``
(:func:`fitface.landmarks.photo_fit.fit_photo_points`: 2D landmarks under a camera, or 3D
under weak perspective).

Convention:
    * Names: the photo's stem, or ``<stem>-face<k>`` with ``all_faces`` (face 0 the largest);
      output folders ``OUT`` (``OUT/face<k>`` with ``all_faces``) for ``fit``, and
      ``OUT/<stem>`` (``OUT/<stem>/face<k>``) in a batch.
    * What a photo cannot take is refused with one line (exit code 2): a scan, ``--unit``,
      ``--refine-surface``, a landmark file, another landmark set than ``"mediapipe"``; the
      photo options (``depth``, ``all_faces``, ``mediapipe_model``) are refused for 3D captures.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fitface.errors import InputError


@dataclass
class PhotoFace:
    """Where a photo capture came from (the photo-specific part of a fit).

    Attributes:
        path: the photo file. stem: the photo's capture name (its stem unless named).
        face: 0 for the largest face, 1 for the next, ...
        bbox: (4,) float64 ``(x0, y0, x1, y1)`` pixels. image_size: (H, W).
        depth: the data term, ``"2d"`` or ``"3d"`` (:data:`fitface.landmarks.photo_fit.DEPTH_MODES`).
        all_faces: the photo was fitted face by face (names and folders get ``face<k>``).
        image: (H, W, 3) uint8 RGB, or None (read again from ``path`` when needed).
    """

    path: Path
    stem: str
    face: int
    bbox: np.ndarray
    image_size: tuple[int, int]
    depth: str
    all_faces: bool = False
    image: np.ndarray | None = None

    @property
    def subdir(self) -> str:
        """The face's output folder below the photo's (``""`` or ``"face<k>"``)."""
        return f"face{self.face}" if self.all_faces else ""

    def load_image(self) -> np.ndarray:
        """The photo (kept, or read again)."""
        if self.image is not None:
            return self.image
        from fitface.io.image import read_image

        return read_image(self.path)

    def codes_extra(self, lam: float, steps, restarts, seed: int) -> dict[str, Any]:
        """The ``codes.json`` keys of the fit after ``transform`` (None values are dropped later)."""
        from fitface.landmarks.photo_fit import PHOTO_FRAME

        return {"lambda": float(lam), "depth": self.depth, "frame": PHOTO_FRAME, "steps": steps,
                "restarts": restarts, "seed": int(seed), "photo": str(self.path), "face": self.face,
                "face_bbox": np.asarray(self.bbox).tolist(), "image_size": list(self.image_size)}


def is_photo_file(obj: Any) -> bool:
    """True for a path whose suffix is a photo's (:data:`fitface.landmarks.lift_photo.PHOTO_SUFFIXES`)."""
    if not isinstance(obj, (str, os.PathLike)):
        return False
    from fitface.landmarks.lift_photo import is_photo

    return is_photo(obj)


def check_depth(depth: str | None) -> str:
    """``depth`` (None = the default) checked against the data terms."""
    from fitface.landmarks.photo_fit import DEFAULT_DEPTH, DEPTH_MODES

    depth = DEFAULT_DEPTH if depth is None else depth
    if depth not in DEPTH_MODES:
        raise InputError(f"--depth: expected one of {', '.join(DEPTH_MODES)}, got {depth!r}")
    return depth


def check_photo_options(*, unit=None, refine_surface=False, landmark_set=None, scale="auto") -> None:
    """Refuse the options a photo capture cannot take (one line each)."""
    from fitface.api.inputs import check_scale_mode
    from fitface.landmarks.correspondence import SET_NAME

    if check_scale_mode(scale) == "unit":
        raise InputError("--scale unit: a photo has no physical unit; its fit always estimates the camera's scale")
    if unit is not None:
        raise InputError("--unit: a photo is fitted in pixels; --unit is for 3D landmarks")
    if refine_surface:
        raise InputError("--refine-surface needs a scan; a photo has none")
    if landmark_set is not None and landmark_set != SET_NAME:
        raise InputError(f"--landmark-set: a photo is fitted through the model's {SET_NAME!r} set, "
                         f"not {landmark_set!r}")


def check_capture_options(*, depth=None, all_faces=False, mediapipe_model=None) -> None:
    """Refuse the photo options for 3D captures (one line each)."""
    for given, option in ((depth is not None, "--depth"), (all_faces, "--all"),
                          (mediapipe_model is not None, "--mediapipe-model")):
        if given:
            raise InputError(f"{option} is for photos; these are 3D landmark captures")


def mediapipe_rows(dec) -> np.ndarray:
    """(L,) int64 mediapipe index of each point of the model's ``"mediapipe"`` set.

    From the decoder's ``mediapipe_indices`` attribute, else from its model file's metadata.

    Raises:
        InputError: the model has no ``"mediapipe"`` set (with the command that adds one).
    """
    from fitface.landmarks.correspondence import INDICES_KEY, SET_NAME, mediapipe_indices

    idx = getattr(dec, INDICES_KEY, None)
    path = getattr(dec, "model_path", None)
    if idx is None and path is not None:
        from fitface.models.model_file import read_metadata

        idx = mediapipe_indices(read_metadata(path), path)
    if idx is None or SET_NAME not in dec.landmark_sets:
        raise InputError(f"the decoder has no {SET_NAME!r} landmark set with {INDICES_KEY!r}")
    idx = np.asarray(idx, dtype=np.int64)
    if len(dec.landmark_sets.get(SET_NAME, ())) != len(idx):
        raise InputError(f"the model's {SET_NAME!r} set has {len(dec.landmark_sets[SET_NAME])} points but "
                         f"{len(idx)} mediapipe indices")
    return idx


def prepare_photo(dec, photo, indices: np.ndarray, *, depth: str, all_faces: bool = False,
                  mediapipe_model=None, detector=None, name: str | None = None, keep_image: bool = True) -> list:
    """Lift a photo's faces and return one :class:`~fitface.api.inputs.PreparedCapture` per face.

    Args:
        dec: the decoder. photo: the image file. indices: :func:`mediapipe_rows` of ``dec``.
        depth: checked data term (:func:`check_depth`).
        all_faces: every face, largest first (default: the largest only).
        mediapipe_model: a ``face_landmarker.task`` file for newer mediapipe releases.
        detector: a reusable :class:`~fitface.landmarks.mediapipe_mesh.FaceMeshDetector`.
        name: the capture's name (default: the photo's stem).
        keep_image: keep the decoded photo on the capture (for its preview).

    Raises:
        InputError: an unreadable photo (exit 2). NoFaceError: no face (exit 3).
    """
    from fitface.api.inputs import PreparedCapture
    from fitface.landmarks.correspondence import SET_NAME
    from fitface.landmarks.lift_photo import lift_photo_file

    path = Path(photo)
    image, faces = lift_photo_file(path, mediapipe_model=mediapipe_model, all_faces=all_faces, detector=detector)
    stem = path.stem if name is None else name
    out = []
    for k, f in enumerate(faces):
        info = PhotoFace(path, stem, k, np.asarray(f.bbox), tuple(f.image_size), depth, all_faces,
                         image if keep_image else None)
        out.append(PreparedCapture(stem if not all_faces else f"{stem}-face{k}", f.select(indices), None, "pixels",
                                   1.0, SET_NAME, photo=info))
    return out


__all__ = ["PhotoFace", "check_capture_options", "check_depth", "check_photo_options", "is_photo_file",
           "mediapipe_rows", "prepare_photo"]
