"""Fitting a video's frames as one sequence: 2D landmarks, one identity, smooth expressions and poses.

The sequence fit is the photo fit's 2D term (:class:`fitface.fitting.projection_fit.ProjectionTerm`)
run by the one loop (:func:`fitface.fitting.fit_loop.run_fit_loop`) in sequence mode: every frame
shares the identity block (``cfg.shared``), and ``mu_exp sum_t ||z_exp(t+1) - z_exp(t)||^2``
(``cfg.sequence_smoothness``) smooths the expression codes. What this module adds is the pose:

    * Pose smoothness. The per-frame camera ``(s_t, R_t, t_t)`` is estimated in closed form
      (:func:`~fitface.fitting.projection_fit.estimate_orthographic`) and then replaced by its
      temporal smoothing (:func:`smooth_poses`): for each pose parameter ``x`` (``log s``, the 2D
      translation in pixels, the 9 rotation entries, re-projected onto SO(3)) the minimiser of

          sum_t ||x_t - x^_t||^2  +  mu_pose sum_t ||x_(t+1) - 2 x_t + x_(t-1)||^2

      (a second-order Whittaker smoother: ``(I + mu_pose D^T D) x = x^``, a banded solve; it
      penalises the pose's acceleration and keeps a steady motion, at the ends of the sequence
      too, where a first-order smoother lags). ``mu_pose`` is unitless: its cut-off is about
      ``mu_pose ** 0.25`` frames. Runs of consecutive frames are smoothed apart.
    * Frames without a face are not fitted: :func:`interpolate_frames` gives them codes and
      poses interpolated in time from the fitted frames (linear; the nearest fitted frame before
      the first and after the last).

Convention:
    * A choice (docs/training.md, baselines): the pose step treats each frame's closed-form pose
      as a measurement of unit weight and smooths it; it is a block-coordinate step of the joint
      objective only approximately (the data term's curvature in the pose is not used), as the
      closed-form camera already is an approximation of the exact 2D-projection pose.
    * Results are in the image frame of the targets (pixels, X right, Y up), as the photo fit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from fitface.checks import check_shape

from .fit_loop import run_fit_loop
from .landmark_fit import FitConfig, LandmarkFitResult, landmark_result
from .projection_fit import ProjectionTerm, estimate_orthographic
from .similarity import Similarity

#: Default pose smoothness ``mu_pose`` (unitless; cut-off ~ mu ** 0.25 frames). Larger values lag
#: behind a fast head turn and the codes absorb the lag (see :data:`fitface.api.track.TRACK_SMOOTHNESS`).
POSE_SMOOTHNESS = 16.0


def _banded_penalty(t: int, order: int) -> np.ndarray:
    """Upper banded form (order + 1, T) of ``D^T D``, D the (T - order, T) finite differences."""
    c = np.array([1.0, -1.0]) if order == 1 else np.array([1.0, -2.0, 1.0])
    ab = np.zeros((order + 1, t))
    r = np.arange(t - order)  # rows of D
    for a in range(order + 1):
        for b in range(a, order + 1):
            # entry (r + a, r + b) of D^T D, band b - a, stored at column r + b
            np.add.at(ab[order - (b - a)], r + b, c[a] * c[b])
    return ab


def smooth_series(x: np.ndarray, mu: float, order: int = 2) -> np.ndarray:
    """Whittaker smoothing along axis 0: ``(I + mu D^T D)^-1 x`` with D the ``order``-th differences.

    ``order=2`` penalises the acceleration and keeps straight lines exactly (no lag at the ends
    of a steady motion); ``order=1`` penalises the velocity.

    Args:
        x: (T, ...) float series (each trailing entry smoothed independently).
        mu: >= 0 smoothness (0 returns ``x``).
        order: 1 or 2.

    Returns:
        (T, ...) float64.
    """
    from scipy.linalg import solveh_banded

    a = np.asarray(x, dtype=np.float64)
    t = a.shape[0]
    if mu < 0 or not np.isfinite(mu):
        raise ValueError(f"mu: expected a finite number >= 0, got {mu}")
    if order not in (1, 2):
        raise ValueError(f"order: expected 1 or 2, got {order}")
    if mu == 0 or t <= order:
        return a.copy()
    ab = mu * _banded_penalty(t, order)
    ab[order] += 1.0  # the identity on the diagonal
    return solveh_banded(ab, a.reshape(t, -1)).reshape(a.shape)


def nearest_rotation(m: np.ndarray) -> np.ndarray:
    """(N, 3, 3) matrices -> the nearest proper rotations (SVD, det +1)."""
    u, _, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(u @ vt))  # (N,)
    u[:, :, 2] *= d[:, None]
    return u @ vt


def smooth_poses(scale: np.ndarray, rotation: np.ndarray, t2: np.ndarray, mu: float, restarts: int = 1,
                 runs: np.ndarray | None = None):
    """Temporal smoothing of per-frame scaled orthographic cameras (module doc).

    Args:
        scale: (N,) float > 0, pixels per model unit. rotation: (N, 3, 3). t2: (N, 2) pixels.
        mu: pose smoothness (0: unchanged).
        restarts: K; row ``b*K + k`` is frame ``b`` of restart ``k`` (each restart smoothed alone).
        runs: optional (B,) int, the run of consecutive frames each frame belongs to (frames of
            different runs are smoothed apart: a gap of missing frames breaks the smoothing).

    Returns:
        ``(scale (N,), rotation (N, 3, 3), t2 (N, 2))`` float64.
    """
    if mu == 0:
        return scale, rotation, t2
    n = scale.shape[0]
    b, k = n // restarts, restarts
    # (B, K, 12): log-scale, translation, rotation entries; smoothed along B
    x = np.concatenate([np.log(scale)[:, None], t2, rotation.reshape(n, 9)], axis=1).reshape(b, k, 12)
    if runs is None:
        y = smooth_series(x, mu)
    else:
        y = np.empty_like(x)
        cuts = np.flatnonzero(np.diff(np.asarray(runs))) + 1
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, b]):
            y[lo:hi] = smooth_series(x[lo:hi], mu)
    y = y.reshape(n, 12)
    return np.exp(y[:, 0]), nearest_rotation(y[:, 3:].reshape(n, 3, 3)), y[:, 1:3]


class SequenceProjectionTerm(ProjectionTerm):
    """:class:`ProjectionTerm` whose closed-form cameras are smoothed over the frames
    (:func:`smooth_poses`); the frames are the term's captures, in time order."""

    def __init__(self, decoder, targets, landmark_set, cfg: FitConfig, pose_smoothness: float = POSE_SMOOTHNESS,
                 valid=None, runs: np.ndarray | None = None):
        if not (np.isfinite(pose_smoothness) and pose_smoothness >= 0):
            raise ValueError(f"pose_smoothness: expected a number >= 0, got {pose_smoothness}")
        super().__init__(decoder, targets, landmark_set, cfg, valid)
        self.pose_smoothness = float(pose_smoothness)
        self.runs = None if runs is None else np.asarray(runs)
        if self.runs is not None and self.runs.shape != (self.num_captures,):
            raise ValueError(f"runs: expected ({self.num_captures},) run ids, got shape {self.runs.shape}")

    def _estimate(self, points: np.ndarray):
        cam = estimate_orthographic(points, self.y, self.w)
        return smooth_poses(*cam, self.pose_smoothness, self.restarts, self.runs)

    def start(self, mean_codes, restarts):
        self.restarts = restarts
        super().start(mean_codes, restarts)
        self.camera = smooth_poses(*self.camera, self.pose_smoothness, restarts, self.runs)

    def after_step(self, step):
        if (step + 1) % self.cfg.refine_every == 0:
            self.camera = self._estimate(self.p64)

    def finish(self, z):
        self.p64 = self.decoder.points(z, self.rows).astype(np.float64)
        self.camera = self._estimate(self.p64)
        r = self._residuals(self.p64)
        return (r * r).sum(axis=(1, 2))


def fit_sequence_2d(
    decoder,
    targets: np.ndarray,
    landmark_set,
    cfg: FitConfig,
    pose_smoothness: float = POSE_SMOOTHNESS,
    runs: np.ndarray | None = None,
    init_z: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LandmarkFitResult:
    """Fit T frames' 2D landmarks as one sequence (module doc).

    Args:
        decoder: a :class:`fitface.fitting.decoder.Decoder`.
        targets: (T, L, 2) or (T, L, 3) float image-frame points (pixels), frames in time order.
        landmark_set: the set's name or a :class:`LandmarkSet`.
        cfg: :class:`FitConfig`; ``shared`` defaults to one group (one identity for every
            frame), ``sequence_smoothness`` is ``mu_exp``.
        pose_smoothness: ``mu_pose`` (0: every frame's pose alone).
        runs: optional (T,) int run ids of consecutive frames (the poses of different runs are
            smoothed apart; the expression smoothness still links the last frame of a run to
            the next run's first, a choice: the identity groups of the loop define both).
        init_z: optional (T, D) initial codes of restart 0. progress: ``progress(step, steps)``.

    Returns:
        :class:`LandmarkFitResult` (image frame; ``rms`` over X, Y in pixels).
    """
    tg = np.asarray(targets, dtype=np.float64)
    check_shape("targets", tg, ("T", None, None))
    if cfg.shared is None and "identity" in decoder.layout.names and "identity" not in cfg.freeze:
        cfg = replace(cfg, shared=np.zeros(tg.shape[0], dtype=np.int64))
    cfg.validate()
    term = SequenceProjectionTerm(decoder, tg, landmark_set, cfg, pose_smoothness, runs=runs)
    loop = run_fit_loop(decoder, [term], cfg, init_z, progress)
    return landmark_result(loop, term.fitted(loop.rows))


def interpolate_frames(times: np.ndarray, valid: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Fill the invalid frames of a per-frame series by linear interpolation in time.

    Args:
        times: (T,) float seconds, increasing. valid: (T,) bool, at least one True.
        values: (T_valid, ...) float values of the valid frames, in order.

    Returns:
        (T, ...) float64: the valid frames' values, the others interpolated (held constant
        before the first and after the last valid frame).
    """
    t = np.asarray(times, dtype=np.float64)
    ok = np.asarray(valid, dtype=bool)
    v = np.asarray(values, dtype=np.float64)
    if not ok.any():
        raise ValueError("valid: at least one valid frame is needed")
    if v.shape[0] != int(ok.sum()):
        raise ValueError(f"values: expected {int(ok.sum())} rows (the valid frames), got {v.shape[0]}")
    flat = v.reshape(v.shape[0], -1)
    out = np.stack([np.interp(t, t[ok], flat[:, c]) for c in range(flat.shape[1])], axis=1)  # (T, C)
    return out.reshape((t.shape[0],) + v.shape[1:])


def interpolate_similarity(times: np.ndarray, valid: np.ndarray, transform: Similarity) -> Similarity:
    """:func:`interpolate_frames` of a (T_valid) batch of similarities (rotations re-projected)."""
    s = interpolate_frames(times, valid, np.log(transform.scale))
    r = nearest_rotation(interpolate_frames(times, valid, transform.rotation))
    t = interpolate_frames(times, valid, transform.translation)
    return Similarity(np.exp(s), r, t)


__all__ = ["POSE_SMOOTHNESS", "SequenceProjectionTerm", "fit_sequence_2d", "interpolate_frames",
           "interpolate_similarity", "nearest_rotation", "smooth_poses", "smooth_series"]
