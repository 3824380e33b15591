"""Fitting the model to landmarks lifted from photos: 3D weak perspective, or 2D only.

Two data terms (``depth``), both run by the one fitting loop
(:func:`fitface.fitting.fit_loop.run_fit_loop`: restarts, freeze, shared identity and
smoothness across a sequence):

* ``"3d"``: mediapipe's points in the photo frame (:mod:`fitface.landmarks.lift_photo`) are
  treated as a 3D capture in pixels and fitted by the landmark engine
  (:func:`fitface.fitting.landmark_fit.fit_landmarks`, paper eq. 13); its similarity
  ``x = s R v + t`` is the weak-perspective camera (``s`` = pixels per model unit) plus the
  depth offset, so nothing else changes.
* ``"2d"``: only ``X, Y`` are fitted, through an orthographic projection ``P = [I2 | 0]``
  (:func:`fitface.fitting.projection_fit.fit_landmarks_2d`):

      min_{z, s, R, t}  sum_i w_i || P R v~_i(z) - (y_i - t) / s ||^2  +  lam ||z||^2

  (model frame and unit, like eq. 13: image residuals are divided by the scale ``s``), the
  camera ``(s, R, t)`` in closed form. Use it when mediapipe's depth is unreliable (strong
  perspective, profile views).

Photos are captures of the Python API and the CLI like landmark files: ``fitface.fit(photo)``,
``fitface.fit_batch(photo_folder)`` (:mod:`fitface.api.photo_capture` lifts them).

Convention:
    * Results are in the photo frame (pixels). In ``"2d"`` mode the depth offset ``t_z`` is
      chosen so that the fitted landmarks' mean depth equals the targets' (0 without targets'
      depth), residuals are reported in 3D but ``rms`` is over ``X, Y`` only.
    * Photo outputs (:func:`fitface.api.fit`) follow :mod:`fitface.outputs`: ``fit.<ext>`` (photo
      frame, pixels: it projects onto the photo as ``(X, -Y)``), ``codes.json`` (``unit`` null:
      pixels are not a length unit; the transform's scale is pixels per model unit) and
      ``preview.png`` (the fit rendered over the photo). With ``all_faces`` face ``k`` goes to
      ``OUT/face<k>/``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from fitface.errors import InputError
from fitface.fitting.projection_fit import estimate_orthographic, fit_landmarks_2d

#: The data terms.
DEPTH_MODES = ("3d", "2d")
#: Default data term for photos. Measured on shaded renders of held-out procedural faces
#: (tests/test_lift_photo.py, 3 faces at yaw -15/0/+15 deg, 40-mode PCA decoder, 404 points):
#: mediapipe's relative depth correlates only ~0.89 with the true depth (it is largely a learned
#: head prior) and the 3D fit trades shape for it (vertex RMSE 3.0-5.3 mm at lam 100, scale
#: 10-20 % too large), while the 2D term gives 2.3-4.6 mm at lam 30 (mean face: 3.1-7.2 mm).
DEFAULT_DEPTH = "2d"
#: Default lam for photos: the mediapipe set has ~400 points whose errors are correlated
#: (a semantic offset of 1-3 mm per point), so eq. 13's data term is ~6x larger than with 68
#: points and lam must grow with it; 30 was best of (3, 10, 30, 100) in the measurement above.
PHOTO_LAMBDA = 30.0
#: The frame of photo fits, as recorded in codes.json.
PHOTO_FRAME = "photo (pixels: X right, Y up = -row, Z to the viewer; projects to pixel (X, -Y))"


def fit_photo_points(decoder, targets: np.ndarray, landmark_set, cfg=None, depth: str = DEFAULT_DEPTH,
                     valid: np.ndarray | None = None, progress=None):
    """Fit photo-frame landmarks with the chosen data term.

    Args:
        decoder: a :class:`fitface.fitting.decoder.Decoder`.
        targets: (B, L, 3) float photo-frame points (pixels), rows in the set's order.
        landmark_set: name or :class:`LandmarkSet` (normally ``"mediapipe"``).
        cfg: :class:`fitface.fitting.landmark_fit.FitConfig`.
        depth: ``"3d"`` (weak perspective, mediapipe's depth used) or ``"2d"`` (x, y only).

    Returns:
        :class:`fitface.fitting.landmark_fit.LandmarkFitResult`, photo frame.
    """
    from fitface.fitting.landmark_fit import fit_landmarks

    if depth not in DEPTH_MODES:
        raise InputError(f"--depth: expected one of {', '.join(DEPTH_MODES)}, got {depth!r}")
    if depth == "3d":
        return fit_landmarks(decoder, targets, landmark_set, cfg, valid=valid, progress=progress)
    return fit_landmarks_2d(decoder, targets, landmark_set, cfg, valid=valid, progress=progress)


def fit_photo(
    photo: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    model: Any = None,
    depth: str = DEFAULT_DEPTH,
    all_faces: bool = False,
    mediapipe_model: str | os.PathLike | None = None,
    lam: float = PHOTO_LAMBDA,
    steps: int | None = None,
    restarts: int | None = None,
    seed: int = 0,
    format: str | None = None,  # noqa: A002 (mirrors --format)
    preview: bool = True,
) -> list:
    """Every (or the largest) face of a photo: :func:`fitface.api.fit` of the photo, as a list.

    Returns:
        One :class:`fitface.api.FitResult` per face (photo frame, pixels).
    """
    from fitface.api import fit

    res = fit(photo, model=model, lam=lam, steps=steps, restarts=restarts, seed=seed, out_dir=out_dir, format=format,
              preview=preview, depth=depth, all_faces=all_faces, mediapipe_model=mediapipe_model)
    return res if isinstance(res, list) else [res]


__all__ = ["DEFAULT_DEPTH", "DEPTH_MODES", "PHOTO_FRAME", "PHOTO_LAMBDA", "estimate_orthographic", "fit_landmarks_2d",
           "fit_photo", "fit_photo_points"]
