"""Fitting the model to landmarks lifted from photos: 3D weak perspective, or 2D only.

Two data terms (``depth``):

* ``"3d"``: mediapipe's points in the photo frame (:mod:`fitface.landmarks.lift_photo`) are
  treated as a 3D capture in pixels and fitted by the landmark engine
  (:func:`fitface.fitting.landmark_fit.fit_landmarks`, paper eq. 13); its similarity
  ``x = s R v + t`` is the weak-perspective camera (``s`` = pixels per model unit) plus the
  depth offset, so nothing else changes.
* ``"2d"``: only ``X, Y`` are fitted, through an orthographic projection ``P = [I2 | 0]``
  (:func:`fitface.fitting.projection_fit.fit_landmarks_2d`, in the loop every fit shares):

      min_{z, s, R, t}  sum_i w_i || P R v~_i(z) - (y_i - t) / s ||^2  +  lam ||z||^2

  (model frame and unit, like eq. 13: image residuals are divided by the scale ``s``). The
  camera ``(s, R, t)`` is re-estimated in closed form every ``refine_every`` steps (affine
  least squares, then the nearest scaled orthographic camera: ``M = U S V^T -> R2 = U V^T``,
  ``s`` by least squares, ``R = [R2; r1 x r2]``), ``z`` by Adam (same schedule as the 3D
  engine). Use it when mediapipe's depth is unreliable (strong perspective, profile views).

Convention:
    * Results are in the photo frame (pixels). In ``"2d"`` mode the depth offset ``t_z`` is
      chosen so that the fitted landmarks' mean depth equals the targets' (0 without targets'
      depth), residuals are reported in 3D but ``rms`` is over ``X, Y`` only.
    * Photo outputs (:func:`fit_photo`) follow :mod:`fitface.outputs`: ``fit.<ext>`` (photo
      frame, pixels: it projects onto the photo as ``(X, -Y)``), ``codes.json`` (``unit`` null:
      pixels are not a length unit; the transform's scale is pixels per model unit) and
      ``preview.png`` (the fit rendered over the photo). With ``all_faces`` face ``k`` goes to
      ``OUT/face<k>/``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

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


# ------------------------------------------------------------------------------ photo files
def _model_and_indices(model):
    """(decoder, mediapipe indices (L,)) of a model path / None / decoder."""
    from fitface.api import load_fit_model
    from fitface.landmarks.correspondence import INDICES_KEY, SET_NAME, mediapipe_indices
    from fitface.models.model_file import read_metadata
    from fitface.models.registry import resolve_model_path

    dec = load_fit_model(model)
    if isinstance(model, (str, os.PathLike)) or model is None:
        path = resolve_model_path(model)  # a built-in name, a file, or None (the default)
        idx = mediapipe_indices(read_metadata(path), path)
    else:
        idx = getattr(dec, INDICES_KEY, None)
        if idx is None or SET_NAME not in dec.landmark_sets:
            raise InputError(f"the decoder has no {SET_NAME!r} landmark set with {INDICES_KEY!r}")
        idx = np.asarray(idx, dtype=np.int64)
    if len(dec.landmark_sets.get(SET_NAME, ())) != len(idx):
        raise InputError(f"the model's {SET_NAME!r} set has {len(dec.landmark_sets[SET_NAME])} points but "
                         f"{len(idx)} mediapipe indices")
    return dec, idx


def _config(lam, steps, restarts, seed):
    from fitface.fitting.landmark_fit import FitConfig

    kw: dict[str, Any] = {"lam": float(lam), "seed": int(seed)}
    if steps is not None:
        kw["steps"] = int(steps)
    if restarts is not None:
        kw["restarts"] = int(restarts)
    return FitConfig(**kw)


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
    detector=None,
) -> list:
    """``fitface fit PHOTO -o OUT``: detect, lift and fit every (or the largest) face of a photo.

    Args:
        photo: image file. out_dir: where to write (``OUT`` for one face, ``OUT/face<k>/`` with
            ``all_faces``); None writes nothing.
        model: model file with a ``"mediapipe"`` set (None: built-in), or a decoder carrying
            ``mediapipe_indices``.
        depth: ``"3d"`` or ``"2d"`` (see the module doc).
        all_faces: one result per face (largest first); default the largest face only.
        mediapipe_model: a ``face_landmarker.task`` file for newer mediapipe releases.
        lam, steps, restarts, seed: as :func:`fitface.api.fit`.
        format: mesh suffix (default ply). preview: write ``preview.png`` (the fit over the photo).
        detector: a reusable :class:`~fitface.landmarks.mediapipe_mesh.FaceMeshDetector`.

    Returns:
        One :class:`fitface.api.FitResult` per face (photo frame, pixels).

    Raises:
        InputError: unreadable photo, model without the set (exit 2); NoFaceError (exit 3).
    """
    from fitface.api.capture_fit import fit_result
    from fitface.api.inputs import mesh_suffix
    from fitface.landmarks.correspondence import SET_NAME
    from fitface.landmarks.lift_photo import fit_overlay, lift_photo_file

    t0 = time.perf_counter()
    if depth not in DEPTH_MODES:
        raise InputError(f"--depth: expected one of {', '.join(DEPTH_MODES)}, got {depth!r}")
    suffix = mesh_suffix(format, None)
    dec, idx = _model_and_indices(model)
    image, faces = lift_photo_file(photo, mediapipe_model=mediapipe_model, all_faces=all_faces, detector=detector)
    targets = np.stack([f.select(idx) for f in faces])  # (B, L, 3)
    try:
        res = fit_photo_points(dec, targets, SET_NAME, _config(lam, steps, restarts, seed), depth)
    except ValueError as exc:
        raise InputError(f"fit failed: {' '.join(str(exc).split())[:300]}", photo) from None
    stem = Path(photo).stem
    out = []
    for k, f in enumerate(faces):
        name = stem if not all_faces else f"{stem}-face{k}"
        fr = fit_result(dec, name, SET_NAME, res.z[k], res.transform[k], targets[k], None,
                        {"lambda": float(lam), "depth": depth, "frame": PHOTO_FRAME, "steps": steps,
                         "restarts": restarts, "seed": int(seed), "photo": str(photo), "face": k,
                         "face_bbox": f.bbox.tolist(), "image_size": list(f.image_size)},
                        planar=depth == "2d")
        out.append(fr)
    if out_dir is not None:
        from fitface.outputs import write_fit_files

        for k, fr in enumerate(out):
            pic = fit_overlay(image, fr.vertices, fr.faces) if preview else None
            where = Path(out_dir) if not all_faces else Path(out_dir) / f"face{k}"
            fr.files = write_fit_files(where, fr.vertices, fr.faces, fr.codes, suffix, pic)
    dt = time.perf_counter() - t0
    for fr in out:
        fr.seconds = dt
    return out


def photo_files(folder: str | os.PathLike) -> list[Path]:
    """Photos directly inside ``folder`` (non-hidden, :data:`~fitface.landmarks.lift_photo.PHOTO_SUFFIXES`),
    in natural name order."""
    from fitface.captures import natural_key
    from fitface.landmarks.lift_photo import is_photo

    root = Path(folder)
    if not root.is_dir():
        raise InputError("no such folder" if not root.exists() else "not a folder", root)
    files = [p for p in root.iterdir() if p.is_file() and not p.name.startswith(".") and is_photo(p)]
    return sorted(files, key=lambda p: natural_key(p.stem))


def fit_photo_folder(
    folder: str | os.PathLike | Sequence[str | os.PathLike],
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
    format: str | None = None,  # noqa: A002
    previews: bool = False,
    progress: Callable[[int, int], None] | None = None,
):
    """``fitface batch PHOTO_DIR -o OUT``: every photo of a folder (one mediapipe detector reused).

    A photo that fails (unreadable, no face, fit failure) is listed with its reason and never
    stops the batch. Writes ``OUT/<stem>/`` per photo (``OUT/<stem>/face<k>/`` with
    ``all_faces``) and the batch summary files of :func:`fitface.outputs.write_batch_summary`.

    Returns:
        :class:`fitface.api.BatchResult`.
    """
    from fitface.api.batch_fit import BatchResult, write_summary
    from fitface.landmarks.mediapipe_mesh import FaceMeshDetector

    t0 = time.perf_counter()
    files = photo_files(folder) if isinstance(folder, (str, os.PathLike)) else [Path(p) for p in folder]
    dec, _ = _model_and_indices(model)  # fail early on a bad model
    results, failures = [], []
    with FaceMeshDetector(mediapipe_model) as det:
        for i, p in enumerate(files):
            where = None if out_dir is None else Path(out_dir) / p.stem
            try:
                results.extend(fit_photo(p, where, model=model, depth=depth, all_faces=all_faces,
                                         lam=lam, steps=steps, restarts=restarts, seed=seed, format=format,
                                         preview=previews, detector=det))
            except (InputError, ValueError, OSError) as exc:
                failures.append((p.stem, " ".join(str(exc).split())))
            if progress is not None:
                progress(i + 1, len(files))
    batch = BatchResult(results, failures, {}, time.perf_counter() - t0)
    if out_dir is not None:
        from fitface.api.inputs import model_reference

        batch.files = write_summary(Path(out_dir), batch, dec.model_id, model=model_reference(dec))
    return batch


__all__ = ["DEFAULT_DEPTH", "DEPTH_MODES", "PHOTO_LAMBDA", "estimate_orthographic", "fit_landmarks_2d", "fit_photo", "fit_photo_folder",
           "fit_photo_points", "photo_files"]
