"""Fitting the model to landmarks lifted from photos: 3D weak perspective, or 2D only.

Two data terms (``depth``):

* ``"3d"``: mediapipe's points in the photo frame (:mod:`fitface.landmarks.lift_photo`) are
  treated as a 3D capture in pixels and fitted by the landmark engine
  (:func:`fitface.fitting.landmark_fit.fit_landmarks`, paper eq. 13); its similarity
  ``x = s R v + t`` is the weak-perspective camera (``s`` = pixels per model unit) plus the
  depth offset, so nothing else changes.
* ``"2d"``: only ``X, Y`` are fitted, through an orthographic projection ``P = [I2 | 0]``:

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

from fitface.checks import check_shape
from fitface.errors import InputError

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
#: Near-singular 3D point scatter (relative smallest eigenvalue) below which the affine camera
#: solve is regularised.
_AFFINE_RIDGE = 1e-9


def estimate_orthographic(points: np.ndarray, targets_xy: np.ndarray, weights: np.ndarray):
    """Closed-form scaled orthographic camera mapping 3D ``points`` onto 2D ``targets_xy``.

    Args:
        points: (N, L, 3) float model points. targets_xy: (N, L, 2) float image-frame points.
        weights: (N, L) float >= 0 (0 = ignored).

    Returns:
        ``(scale (N,), rotation (N, 3, 3) proper, t2 (N, 2))`` with
        ``targets ~ scale * (rotation @ p)[:2] + t2``.
    """
    p = np.asarray(points, dtype=np.float64)
    y = np.asarray(targets_xy, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    wn = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-300)  # (N, L)
    pm = np.einsum("nl,nlc->nc", wn, np.nan_to_num(p))  # (N, 3)
    ym = np.einsum("nl,nlc->nc", wn, np.nan_to_num(y))  # (N, 2)
    pc = np.where(w[..., None] > 0, p - pm[:, None], 0.0)
    yc = np.where(w[..., None] > 0, y - ym[:, None], 0.0)
    cpp = np.einsum("nl,nli,nlj->nij", wn, pc, pc)  # (N, 3, 3)
    cyp = np.einsum("nl,nli,nlj->nij", wn, yc, pc)  # (N, 2, 3)
    ridge = _AFFINE_RIDGE * np.trace(cpp, axis1=1, axis2=2)[:, None, None] * np.eye(3)
    m = np.linalg.solve(cpp + ridge, np.swapaxes(cyp, 1, 2))  # (N, 3, 2) = M^T
    m = np.swapaxes(m, 1, 2)  # (N, 2, 3) affine camera
    u, _, vt = np.linalg.svd(m, full_matrices=False)  # (N, 2, 2), (N, 2), (N, 2, 3)
    r2 = u @ vt  # (N, 2, 3) orthonormal rows
    q = np.einsum("nij,nlj->nli", r2, pc)  # (N, L, 2) rotated, projected points
    scale = np.einsum("nl,nli,nli->n", wn, yc, q) / np.maximum(np.einsum("nl,nli,nli->n", wn, q, q), 1e-300)
    flip = scale < 0  # a 180-degree turn about the view axis absorbs a negative scale
    r2[flip] *= -1.0
    scale = np.abs(scale)
    r3 = np.cross(r2[:, 0], r2[:, 1])  # (N, 3)
    rot = np.concatenate([r2, r3[:, None]], axis=1)  # (N, 3, 3), det +1
    t2 = ym - scale[:, None] * np.einsum("nij,nj->ni", r2, pm)
    return scale, rot, t2


def fit_landmarks_2d(
    decoder,
    targets: np.ndarray,
    landmark_set,
    cfg=None,
    valid: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
):
    """Fit latent codes and a scaled orthographic camera to 2D landmarks (see the module doc).

    Args:
        decoder: a :class:`fitface.fitting.decoder.Decoder`.
        targets: (B, L, 2) or (B, L, 3) float photo-frame points (pixels; a third column is used
            only to place the depth offset); NaN rows are missing.
        landmark_set: the set's name or a :class:`LandmarkSet`.
        cfg: :class:`fitface.fitting.landmark_fit.FitConfig` (lam, steps, lr, restarts, seed,
            init, init_scale, refine_every, freeze, betas are used).
        valid: (B, L) bool.
        progress: ``progress(step_done, steps)``.

    Returns:
        :class:`fitface.fitting.landmark_fit.LandmarkFitResult` (photo frame; ``rms`` over X, Y).

    Raises:
        ValueError: bad shapes, or a capture with fewer than 4 valid landmarks.
    """
    from fitface.fitting.adam import Adam, cosine_lr
    from fitface.fitting.landmark_fit import FitConfig, LandmarkFitResult, initial_codes, usable_landmarks
    from fitface.fitting.similarity import Similarity

    cfg = FitConfig() if cfg is None else cfg
    cfg.validate()
    rows = decoder.landmark_rows(landmark_set)
    tg = np.asarray(targets, dtype=np.float64)
    if tg.ndim == 2:
        tg = tg[None]
    check_shape("targets", tg, (None, rows.num_points, None))
    if tg.shape[2] not in (2, 3):
        raise ValueError(f"targets: expected 2 or 3 coordinates, got {tg.shape[2]}")
    nb, nl = tg.shape[:2]
    ok, counts = usable_landmarks(np.isfinite(tg[..., :2]).all(axis=2), valid, 4, "a 2D fit needs at least 4")
    k, dim, dt = cfg.restarts, decoder.latent_dim, decoder.dtype
    n = nb * k
    y = np.repeat(np.where(ok[..., None], tg[..., :2], 0.0), k, axis=0)  # (N, L, 2)
    w = np.repeat(ok, k, axis=0).astype(np.float64)  # (N, L)

    z0, frozen, _ = initial_codes(decoder, cfg, nb)  # (B, K, D), (D,)
    z = np.ascontiguousarray(z0.reshape(n, dim), dtype=dt)
    grad_mask = (~frozen).astype(dt)

    # initial camera from the mean face (z = 0 with frozen blocks)
    zm = np.where(frozen, z, 0.0).astype(dt)
    s, rot, t2 = estimate_orthographic(decoder.points(zm, rows).astype(np.float64), y, w)
    opt = Adam(z, lr=cfg.lr, betas=cfg.betas)
    hist_step, hist_obj = [], []
    lam = cfg.lam
    for step in range(cfg.steps):
        opt.lr = cosine_lr(step, cfg.steps, cfg.lr, cfg.lr_final_fraction)
        pts, vjp = decoder.linearize_points(z, rows)  # (N, L, 3) model frame
        p64 = pts.astype(np.float64)
        proj = np.einsum("nij,nlj->nli", rot[:, :2], p64)  # (N, L, 2) P R v
        r = (proj - (y - t2[:, None]) / s[:, None, None]) * w[..., None]  # (N, L, 2) model unit
        g_pts = 2.0 * np.einsum("nli,nij->nlj", r, rot[:, :2])  # (N, L, 3) = 2 (P R)^T r
        g = vjp(g_pts.astype(dt)) + (2.0 * lam) * z
        g *= grad_mask
        if cfg.history_every and step % cfg.history_every == 0:
            obj = np.einsum("nli,nli->n", r, r) + lam * np.einsum("nd,nd->n", z, z)
            hist_step.append(step)
            hist_obj.append(float(obj.mean()))
        opt.step(g.astype(dt, copy=False))
        if (step + 1) % cfg.refine_every == 0:
            s, rot, t2 = estimate_orthographic(p64, y, w)

    pts = decoder.points(z, rows).astype(np.float64)
    s, rot, t2 = estimate_orthographic(pts, y, w)
    zz = z.astype(np.float64)
    proj = np.einsum("nij,nlj->nli", rot[:, :2], pts)
    r = (proj - (y - t2[:, None]) / s[:, None, None]) * w[..., None]
    obj = np.einsum("nli,nli->n", r, r) + lam * np.einsum("nd,nd->n", zz, zz)
    per = obj.reshape(nb, k)
    best = per.argmin(axis=1)
    sel = np.arange(nb) * k + best
    # depth offset: mean fitted depth = mean target depth (or 0)
    depth = np.einsum("nj,nlj->nl", rot[sel, 2], pts[sel]) * s[sel, None]  # (B, L)
    okb = ok.astype(np.float64)
    tz_target = np.zeros(nb)
    if tg.shape[2] == 3:
        okz = ok & np.isfinite(tg[..., 2])
        tz_target = np.where(okz.any(1), np.nansum(np.where(okz, tg[..., 2], 0.0), 1) / np.maximum(okz.sum(1), 1), 0.0)
    tz = tz_target - (depth * okb).sum(1) / np.maximum(okb.sum(1), 1)
    transform = Similarity(s[sel], rot[sel], np.concatenate([t2[sel], tz[:, None]], axis=1))
    pts_c = transform.apply(pts[sel])  # (B, L, 3)
    tg3 = tg if tg.shape[2] == 3 else np.concatenate([tg, np.full((nb, nl, 1), np.nan)], axis=2)
    res = np.where(ok[..., None], pts_c - tg3, np.nan)
    sq = np.where(ok, (np.nan_to_num(res[..., :2]) ** 2).sum(axis=2), 0.0)
    rms = np.sqrt(sq.sum(axis=1) / counts)
    if cfg.history_every:
        hist_step.append(cfg.steps)
        hist_obj.append(float(obj.mean()))
    return LandmarkFitResult(
        z=zz[sel].copy(), transform=transform, points=pts_c, residuals=res, rms=rms, rms_model=rms / s[sel],
        loss=obj[sel].copy(), restarts_loss=per.copy(), best_restart=best, valid=ok,
        history={"step": np.asarray(hist_step), "objective": np.asarray(hist_obj)}, steps=cfg.steps)


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
