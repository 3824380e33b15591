"""Fit latent codes to 2D landmarks under a scaled orthographic camera (photos), numpy only.

The data term (:class:`ProjectionTerm`) of a capture with image-frame targets ``y_i`` is

    sum_i w_i || P R v~_i(z) - (y_i - t) / s ||^2,      P = [I2 | 0]

in the model frame and unit, like eq. 13 (image residuals are divided by the scale ``s``, so
``lam`` means the same as for 3D landmarks). The camera ``(s, R, t)`` is estimated in closed form
(:func:`estimate_orthographic`) from the mean face at the start and every ``refine_every``
steps from the points of the last evaluation, exactly as the similarity of the 3D term;
``z`` is optimised by the shared loop (:func:`fitface.fitting.fit_loop.run_fit_loop`: restarts,
freeze, shared identity and smoothness across a sequence, history, the best restart).

Convention:
    * Results are in the image frame of the targets (pixels for photos: X right, Y up). The
      depth offset ``t_z`` is chosen so that the fitted landmarks' mean depth equals the
      targets' (0 without a third target column); residuals are reported in 3D but ``rms`` is
      over ``X, Y`` only.
    * A capture needs at least 4 valid landmarks. The camera always has a scale and is always
      estimated: ``estimate_similarity=False`` or ``with_scale=False`` are refused.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from fitface.checks import check_shape

from .fit_loop import DataTerm, run_fit_loop
from .landmark_fit import FitConfig, LandmarkFitResult, landmark_result, usable_landmarks
from .similarity import Similarity

#: Near-singular 3D point scatter (relative smallest eigenvalue) below which the affine camera
#: solve is regularised.
_AFFINE_RIDGE = 1e-9


def estimate_orthographic(points: np.ndarray, targets_xy: np.ndarray, weights: np.ndarray):
    """Closed-form scaled orthographic camera mapping 3D ``points`` onto 2D ``targets_xy``.

    Affine least squares, then the nearest scaled orthographic camera: ``M = U S V^T -> R2 = U V^T``,
    ``s`` by least squares, ``R = [R2; r1 x r2]``.

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
    # batched matmuls, not multi-operand einsums (those are ~10x slower on (N, L, 3) arrays)
    pm = np.matmul(wn[:, None], np.nan_to_num(p))[:, 0]  # (N, 3)
    ym = np.matmul(wn[:, None], np.nan_to_num(y))[:, 0]  # (N, 2)
    pc = np.where(w[..., None] > 0, p - pm[:, None], 0.0)
    yc = np.where(w[..., None] > 0, y - ym[:, None], 0.0)
    pcw = np.swapaxes(pc * wn[..., None], 1, 2)  # (N, 3, L)
    cpp = np.matmul(pcw, pc)  # (N, 3, 3)
    cyp = np.swapaxes(np.matmul(pcw, yc), 1, 2)  # (N, 2, 3)
    ridge = _AFFINE_RIDGE * np.trace(cpp, axis1=1, axis2=2)[:, None, None] * np.eye(3)
    m = np.linalg.solve(cpp + ridge, np.swapaxes(cyp, 1, 2))  # (N, 3, 2) = M^T
    m = np.swapaxes(m, 1, 2)  # (N, 2, 3) affine camera
    u, _, vt = np.linalg.svd(m, full_matrices=False)  # (N, 2, 2), (N, 2), (N, 2, 3)
    r2 = u @ vt  # (N, 2, 3) orthonormal rows
    q = np.matmul(pc, np.swapaxes(r2, 1, 2))  # (N, L, 2) rotated, projected points
    scale = ((wn[..., None] * yc * q).sum(axis=(1, 2))
             / np.maximum((wn[..., None] * q * q).sum(axis=(1, 2)), 1e-300))
    flip = scale < 0  # a 180-degree turn about the view axis absorbs a negative scale
    r2[flip] *= -1.0
    scale = np.abs(scale)
    r3 = np.cross(r2[:, 0], r2[:, 1])  # (N, 3)
    rot = np.concatenate([r2, r3[:, None]], axis=1)  # (N, 3, 3), det +1
    t2 = ym - scale[:, None] * np.matmul(r2, pm[..., None])[..., 0]
    return scale, rot, t2


class ProjectionTerm(DataTerm):
    """2D landmarks under a scaled orthographic camera, a data term of :func:`run_fit_loop`
    (see the module doc). Arguments: as :func:`fit_landmarks_2d`."""

    def __init__(self, decoder, targets, landmark_set, cfg: FitConfig, valid=None):
        if not cfg.estimate_similarity or not cfg.with_scale:
            raise ValueError("a 2D fit always estimates its camera with a scale: estimate_similarity=False and "
                             "with_scale=False are for 3D landmarks")
        self.decoder, self.cfg = decoder, cfg
        self.rows = decoder.landmark_rows(landmark_set)
        tg = np.asarray(targets, dtype=np.float64)
        if tg.ndim == 2:
            tg = tg[None]
        check_shape("targets", tg, (None, self.rows.num_points, None))
        if tg.shape[2] not in (2, 3):
            raise ValueError(f"targets: expected 2 or 3 coordinates, got {tg.shape[2]}")
        self.targets = tg
        self.num_captures = tg.shape[0]
        self.ok, self.counts = usable_landmarks(np.isfinite(tg[..., :2]).all(axis=2), valid, 4,
                                                "a 2D fit needs at least 4")

    def start(self, mean_codes, restarts):
        dec = self.decoder
        self.y = np.repeat(np.where(self.ok[..., None], self.targets[..., :2], 0.0), restarts, axis=0)  # (N, L, 2)
        self.w = np.repeat(self.ok, restarts, axis=0).astype(np.float64)  # (N, L)
        p0 = dec.points(np.repeat(mean_codes, restarts, axis=0).astype(dec.dtype), self.rows).astype(np.float64)
        self.camera = estimate_orthographic(p0, self.y, self.w)  # from the mean face

    def _residuals(self, p64: np.ndarray) -> np.ndarray:
        """(N, L, 2) weighted residuals ``P R v - (y - t) / s``, model unit."""
        s, rot, t2 = self.camera
        proj = np.matmul(p64, np.swapaxes(rot[:, :2], 1, 2))  # (N, L, 2) P R v
        return (proj - (self.y - t2[:, None]) / s[:, None, None]) * self.w[..., None]

    def evaluate(self, z, step, want_value):
        pts, vjp = self.decoder.linearize_points(z, self.rows)  # (N, L, 3) model frame
        self.p64 = pts.astype(np.float64)
        r = self._residuals(self.p64)
        g_pts = 2.0 * np.matmul(r, self.camera[1][:, :2])  # (N, L, 3) = 2 (P R)^T r
        return ((r * r).sum(axis=(1, 2)) if want_value else None), vjp(g_pts.astype(self.decoder.dtype))

    def after_step(self, step):
        if (step + 1) % self.cfg.refine_every == 0:
            self.camera = estimate_orthographic(self.p64, self.y, self.w)

    def finish(self, z):
        self.p64 = self.decoder.points(z, self.rows).astype(np.float64)
        self.camera = estimate_orthographic(self.p64, self.y, self.w)
        r = self._residuals(self.p64)
        return np.einsum("nli,nli->n", r, r)

    def fitted(self, sel: np.ndarray) -> dict[str, Any]:
        """The chosen rows ``sel (B,)`` in the image frame (after :meth:`finish`)."""
        s, rot, t2 = self.camera
        pts, tg, ok, nb = self.p64[sel], self.targets, self.ok, self.num_captures
        # depth offset: mean fitted depth = mean target depth (or 0)
        depth = np.einsum("nj,nlj->nl", rot[sel, 2], pts) * s[sel, None]  # (B, L)
        okb = ok.astype(np.float64)
        tz_target = np.zeros(nb)
        if tg.shape[2] == 3:
            okz = ok & np.isfinite(tg[..., 2])
            tz_target = np.where(okz.any(1), np.nansum(np.where(okz, tg[..., 2], 0.0), 1) / np.maximum(okz.sum(1), 1),
                                 0.0)
        tz = tz_target - (depth * okb).sum(1) / np.maximum(okb.sum(1), 1)
        transform = Similarity(s[sel], rot[sel], np.concatenate([t2[sel], tz[:, None]], axis=1))
        pts_c = transform.apply(pts)  # (B, L, 3)
        tg3 = tg if tg.shape[2] == 3 else np.concatenate([tg, np.full(tg.shape[:2] + (1,), np.nan)], axis=2)
        res = np.where(ok[..., None], pts_c - tg3, np.nan)
        sq = np.where(ok, (np.nan_to_num(res[..., :2]) ** 2).sum(axis=2), 0.0)
        rms = np.sqrt(sq.sum(axis=1) / self.counts)
        return {"transform": transform, "points": pts_c, "residuals": res, "rms": rms, "rms_model": rms / s[sel],
                "valid": ok}


def fit_landmarks_2d(
    decoder,
    targets: np.ndarray,
    landmark_set,
    cfg: FitConfig | None = None,
    valid: np.ndarray | None = None,
    init_z: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LandmarkFitResult:
    """Fit latent codes and a scaled orthographic camera to 2D landmarks (see the module doc).

    :class:`ProjectionTerm` in :func:`fitface.fitting.fit_loop.run_fit_loop`.

    Args:
        decoder: a :class:`fitface.fitting.decoder.Decoder`.
        targets: (B, L, 2) or (B, L, 3) float image-frame points (pixels; a third column is used
            only to place the depth offset); NaN rows are missing.
        landmark_set: the set's name or a :class:`LandmarkSet`.
        cfg: :class:`FitConfig`: every loop option (lam, steps, lr, restarts, seed, init, freeze,
            shared, sequence_smoothness, ...) and ``refine_every``.
        valid: (B, L) bool.
        init_z: optional (B, D) initial codes of restart 0.
        progress: ``progress(step_done, steps)``.

    Returns:
        :class:`LandmarkFitResult` (image frame; ``rms`` over X, Y).

    Raises:
        ValueError: bad shapes or options, or a capture with fewer than 4 valid landmarks.
    """
    cfg = FitConfig() if cfg is None else cfg
    cfg.validate()
    term = ProjectionTerm(decoder, targets, landmark_set, cfg, valid)
    loop = run_fit_loop(decoder, [term], cfg, init_z, progress)
    return landmark_result(loop, term.fitted(loop.rows))


__all__ = ["ProjectionTerm", "estimate_orthographic", "fit_landmarks_2d"]
