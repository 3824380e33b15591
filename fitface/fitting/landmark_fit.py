"""Fit latent codes to sparse 3D landmarks (paper §5.5, eq. 13), batched, numpy only.

For each capture ``b`` with landmark targets ``v_i`` (capture frame and unit) the engine solves

    min_{z, T}  sum_i w_i || v~_i(z) - T^-1(v_i) ||^2  +  lam ||z||^2                 (eq. 13)

where ``v~_i(z)`` are the model's landmark points for code ``z`` and ``T`` is a similarity
transform (model -> capture). ``z`` is optimised by Adam; ``T`` is re-estimated in closed form
(Umeyama, :func:`fitface.fitting.similarity.umeyama`) every ``refine_every`` steps, which
minimises the same objective over ``T`` exactly (block-coordinate descent). The data term is
:class:`LandmarkTerm`; the optimisation (restarts, freeze, sequences, history, the best restart)
is the loop every fit shares, :func:`fitface.fitting.fit_loop.run_fit_loop`, configured by
:class:`FitConfig`.

Convention:
    * The objective lives in the MODEL frame and MODEL unit (mm for the default model): the
      residual of a landmark is measured after mapping the capture into the model frame, so
      ``lam`` weighs the squared latent norm against SQUARED MODEL-UNIT (mm) RESIDUALS SUMMED
      over the landmarks, exactly as in eq. 13 (the paper's Table 2 uses lam = 0, 0.01, 10).
      It does not depend on the capture's unit.
    * Captures may be in any unit (m, cm, mm) and any pose: the similarity's scale absorbs the
      unit. ``unit_scale`` (capture units per model unit, e.g. 0.001 for a model in mm and a
      capture in m) pre-scales the targets; it is required for a rigid fit (``with_scale=False``)
      or a fixed transform, and harmless otherwise.
    * Reported residuals, RMS and fitted points are in the capture's frame and unit;
      :attr:`LandmarkFitResult.transform` maps model space to the capture
      (``x_capture = s R x_model + t``, the ``codes.json`` convention).
    * Batching: B captures x K restarts are optimised as one (B*K, D) array; row ``b*K + k``
      is restart ``k`` of capture ``b``. Restart codes are drawn from N(0, I) with the seed
      (the paper starts from one random code); the restart with the lowest final objective
      is kept per capture (per group in sequence mode).
    * Missing landmarks (NaN rows, or False in ``valid``) are ignored; a capture needs at
      least 3 non-collinear valid landmarks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from fitface.checks import check_shape
from fitface.landmark_set import LandmarkSet

from .fit_loop import DataTerm, LoopResult, initial_codes, run_fit_loop
from .similarity import Similarity, umeyama

#: Default number of Adam steps (fits of the synthetic and random-MLP tests converge in ~300).
STEPS = 400
#: Default peak learning rate of Adam on latent codes (codes are ~N(0, I)).
LR = 0.08
#: Learning rate at the last step, as a fraction of ``lr`` (cosine schedule).
LR_FINAL_FRACTION = 0.02
#: Re-estimate the similarity every this many steps. The exact T at every step makes the z-step
#: a gradient step on the reduced objective min_T E(z, T) (variable projection); every 2nd step
#: converges as fast on the tests and halves the Umeyama cost (every 10th is ~10x slower to converge).
REFINE_EVERY = 2
#: Adam's moment decay rates. beta2 = 0.9 (not the usual 0.999) lets the step size follow the
#: shrinking gradients of a least-squares fit: measured on noiseless synthetic fits, the median
#: landmark RMS after 400 steps drops from ~0.1 mm (0.999) to ~0.001 mm (0.9).
BETAS = (0.9, 0.9)


@dataclass
class FitConfig:
    """Options of :func:`fit_landmarks` and of every fit that runs :func:`run_fit_loop`.

    Attributes:
        lam: eq. 13 weight of ``||z||^2`` against squared residuals in the model unit (see module doc).
        steps: Adam steps. lr: peak learning rate (cosine decay to ``lr * lr_final_fraction``).
        restarts: random initial codes per capture (K); the best by final objective is kept.
        seed: seeds the initial codes (results are deterministic for a seed).
        init: ``"random"`` (z ~ N(0, init_scale^2 I), the paper) or ``"zero"`` (restart 0 starts
            at z = 0, further restarts are random).
        estimate_similarity: estimate T (False: the captures are already in the model frame up
            to ``unit_scale``, or ``transform=`` is given).
        with_scale: estimate a scale (False: rigid, the unit given by ``unit_scale``).
        refine_every: re-estimate T every this many steps.
        freeze: ``{factor: code (d,) or (B, d)}`` fixed blocks (e.g. a known identity).
        shared: None, or (B,) group ids: captures of one group share the code block
            ``shared_factor`` (sequence mode: frames of one subject).
        shared_factor: the shared block (``"identity"``).
        sequence_smoothness: ``mu`` of ``mu * sum_t ||z_f(t+1) - z_f(t)||^2`` over consecutive
            captures of the same group (in batch order), ``f = smooth_factor``.
        smooth_factor: the smoothed block (``"expression"``).
        history_every: record the mean objective every this many steps (0: never).
        init_rows: None, or (B,) int: capture ``b`` starts from row ``init_rows[b]`` of the seed's
            stream of initial codes (default: row ``b``); a batch passes each capture's place in
            its chunk, so that a resumed batch starts every capture where the full run did.
    """

    lam: float = 1.0
    steps: int = STEPS
    lr: float = LR
    lr_final_fraction: float = LR_FINAL_FRACTION
    restarts: int = 1
    seed: int = 0
    init: str = "random"
    init_scale: float = 1.0
    estimate_similarity: bool = True
    with_scale: bool = True
    refine_every: int = REFINE_EVERY
    freeze: dict[str, Any] = field(default_factory=dict)
    shared: Any = None
    shared_factor: str = "identity"
    sequence_smoothness: float = 0.0
    smooth_factor: str = "expression"
    history_every: int = 10
    init_rows: Any = None
    betas: tuple[float, float] = BETAS

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad option."""
        if not np.isfinite(self.lam) or self.lam < 0:
            raise ValueError(f"lam: must be >= 0, got {self.lam}")
        if self.steps < 0:
            raise ValueError(f"steps: must be >= 0, got {self.steps}")
        if not self.lr > 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if self.restarts < 1:
            raise ValueError(f"restarts: must be >= 1, got {self.restarts}")
        if self.init not in ("random", "zero"):
            raise ValueError(f"init: must be 'random' or 'zero', got {self.init!r}")
        if self.refine_every < 1:
            raise ValueError(f"refine_every: must be >= 1, got {self.refine_every}")
        if self.sequence_smoothness < 0:
            raise ValueError(f"sequence_smoothness: must be >= 0, got {self.sequence_smoothness}")


@dataclass
class LandmarkFitResult:
    """What :func:`fit_landmarks` found (best restart per capture).

    Attributes:
        z: (B, D) float64 latent codes.
        transform: :class:`Similarity` (B): model -> capture frame and unit.
        points: (B, L, 3) float64 fitted landmark points, capture frame and unit.
        residuals: (B, L, 3) float64 ``points - targets``, capture unit (NaN for missing landmarks).
        rms: (B,) float64 landmark RMS distance over valid landmarks, capture unit.
        rms_model: (B,) float64 the same in the model unit (mm for the default model).
        loss: (B,) float64 final objective (eq. 13, model unit, plus the smoothness share in
            sequence mode).
        restarts_loss: (B, K) float64 final objective of every restart.
        best_restart: (B,) int index of the kept restart.
        valid: (B, L) bool landmarks used.
        history: ``{"step": (S,), "objective": (S,)}``: mean objective over all rows (model unit).
        steps: Adam steps run.
    """

    z: np.ndarray
    transform: Similarity
    points: np.ndarray
    residuals: np.ndarray
    rms: np.ndarray
    rms_model: np.ndarray
    loss: np.ndarray
    restarts_loss: np.ndarray
    best_restart: np.ndarray
    valid: np.ndarray
    history: dict[str, np.ndarray]
    steps: int


def usable_landmarks(finite: np.ndarray, valid: np.ndarray | None, minimum: int, need: str):
    """Which landmarks a fit may use, and how many per capture.

    Args:
        finite: (B, L) bool, True where the target's coordinates are finite.
        valid: None or (B, L) bool, False = ignore that landmark.
        minimum: fewest usable landmarks a capture needs.
        need: the end of the error message, e.g. ``"at least 3 are needed"``.

    Returns:
        ``(ok (B, L) bool, counts (B,) int)``.

    Raises:
        ValueError: naming the first capture with fewer than ``minimum`` usable landmarks.
    """
    ok = np.array(finite, dtype=bool)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        check_shape("valid", valid, ok.shape)
        ok &= valid
    counts = ok.sum(axis=1)
    if (counts < minimum).any():
        i = int(np.flatnonzero(counts < minimum)[0])
        raise ValueError(f"capture {i}: {int(counts[i])} valid landmarks; {need}")
    return ok, counts


class LandmarkTerm(DataTerm):
    """3D landmarks under a similarity (eq. 13), a data term of :func:`run_fit_loop`.

    ``sum_i w_i || v~_i(z) - T^-1(v_i) ||^2`` per row, model frame and unit; ``T`` (model ->
    capture) is estimated by Umeyama from the mean face at the start and every
    ``cfg.refine_every`` steps from the points of the last evaluation (variable projection), or
    fixed (``cfg.estimate_similarity=False``). Arguments: as :func:`fit_landmarks`.
    """

    def __init__(self, decoder, targets, landmark_set, cfg: FitConfig, valid=None, unit_scale: float = 1.0,
                 transform: Similarity | None = None):
        if not (np.isfinite(unit_scale) and unit_scale > 0):
            raise ValueError(f"unit_scale: must be > 0, got {unit_scale}")
        self.decoder, self.cfg, self.unit_scale, self.fixed = decoder, cfg, float(unit_scale), transform
        self.rows = decoder.landmark_rows(landmark_set)
        tg = np.asarray(targets, dtype=np.float64)
        if tg.ndim == 2:
            tg = tg[None]
        check_shape("targets", tg, (None, self.rows.num_points, 3))
        self.targets = tg  # (B, L, 3) capture frame and unit
        self.num_captures = tg.shape[0]
        self.ok, self.counts = usable_landmarks(np.isfinite(tg).all(axis=2), valid, 3, "at least 3 are needed")
        self.tg_m = np.where(self.ok[..., None], tg / unit_scale, 0.0)  # (B, L, 3) capture frame, model unit

    def start(self, mean_codes, restarts):
        dec, cfg, nb, dt = self.decoder, self.cfg, self.num_captures, self.decoder.dtype
        self.wgt = np.repeat(self.ok, restarts, axis=0).astype(np.float64)  # (N, L)
        self.tg_rep = np.repeat(self.tg_m, restarts, axis=0)  # (N, L, 3)
        if cfg.estimate_similarity:  # from the mean model landmarks (z = 0, frozen blocks applied)
            p0 = dec.points(mean_codes.astype(dt), self.rows).astype(np.float64)  # (B, L, 3) model frame
            t_inv = _estimate(self.tg_m, p0, self.ok, cfg.with_scale, "capture").repeat(restarts)
        else:
            fixed = Similarity.from_scale(self.unit_scale, nb) if self.fixed is None else self.fixed
            if len(fixed) == 1:
                fixed = fixed.repeat(nb)
            if len(fixed) != nb:
                raise ValueError(f"transform: expected a batch of 1 or {nb}, got {len(fixed)}")
            # the targets were divided by unit_scale: undo that in the fixed transform
            t_inv = Similarity.from_scale(self.unit_scale, nb).inverse().compose(fixed).inverse().repeat(restarts)
        self.t_inv = t_inv  # capture -> model, (N)
        self.target = t_inv.apply(self.tg_rep).astype(dt)  # (N, L, 3) targets in the model frame
        self.wmask = self.wgt.astype(dt)[..., None]  # (N, L, 1)

    def evaluate(self, z, step, want_value):
        pts, vjp = self.decoder.linearize_points(z, self.rows)  # (N, L, 3)
        r = pts - self.target
        r *= self.wmask
        self.pts = pts
        return (np.einsum("nlc,nlc->n", r, r) if want_value else None), vjp(2.0 * r)

    def after_step(self, step):
        cfg = self.cfg
        if cfg.estimate_similarity and (step + 1) % cfg.refine_every == 0:
            self.t_inv = _estimate(self.tg_rep, self.pts.astype(np.float64), self.wgt, cfg.with_scale, "row",
                                   check=False)
            self.target = self.t_inv.apply(self.tg_rep).astype(self.decoder.dtype)

    def finish(self, z):
        self.pts = pts = self.decoder.points(z, self.rows).astype(np.float64)
        if self.cfg.estimate_similarity:
            self.t_inv = _estimate(self.tg_rep, pts, self.wgt > 0, self.cfg.with_scale, "row")
        r = (pts - self.t_inv.apply(self.tg_rep)) * self.wgt[..., None]
        return np.einsum("nlc,nlc->n", r, r)

    def fitted(self, sel: np.ndarray) -> dict[str, Any]:
        """The chosen rows ``sel (B,)`` in the capture's frame and unit (after :meth:`finish`)."""
        nb = self.num_captures
        to_capture = Similarity.from_scale(self.unit_scale, nb).compose(self.t_inv[sel].inverse())  # model -> capture
        pts_c = to_capture.apply(self.pts[sel])  # (B, L, 3)
        res = np.where(self.ok[..., None], pts_c - self.targets, np.nan)
        sq = np.where(self.ok, (np.nan_to_num(res) ** 2).sum(axis=2), 0.0)
        rms = np.sqrt(sq.sum(axis=1) / self.counts)
        return {"transform": to_capture, "points": pts_c, "residuals": res, "rms": rms,
                "rms_model": rms / to_capture.scale, "valid": self.ok}


def landmark_result(loop: LoopResult, fitted: dict[str, Any]) -> LandmarkFitResult:
    """A :class:`LandmarkFitResult` from the loop's result and the term's ``fitted(loop.rows)``."""
    sel = loop.rows
    return LandmarkFitResult(z=loop.z[sel].copy(), loss=loop.objective[sel].copy(), restarts_loss=loop.restarts_loss,
                             best_restart=loop.best_restart, history=loop.history, steps=loop.steps, **fitted)


def fit_landmarks(
    decoder,
    targets: np.ndarray,
    landmark_set: "str | LandmarkSet",
    cfg: FitConfig | None = None,
    valid: np.ndarray | None = None,
    unit_scale: float = 1.0,
    transform: Similarity | None = None,
    init_z: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LandmarkFitResult:
    """Fit latent codes (and a similarity) to landmark targets, all captures at once.

    :class:`LandmarkTerm` in :func:`fitface.fitting.fit_loop.run_fit_loop`.

    Args:
        decoder: a :class:`fitface.fitting.decoder.Decoder` (model frame and unit).
        targets: (B, L, 3) or (L, 3) float landmark positions, capture frame and unit; NaN rows
            are missing landmarks.
        landmark_set: the set's name in ``decoder.landmark_sets`` or a :class:`LandmarkSet`;
            row ``i`` of ``targets`` is point ``i`` of the set.
        cfg: options (:class:`FitConfig`); default ``FitConfig()``.
        valid: (B, L) bool, False = ignore that landmark (ANDed with "finite").
        unit_scale: capture units per model unit (e.g. 0.1 for a model in mm and a capture
            in cm); see the module doc.
        transform: with ``cfg.estimate_similarity=False``, the fixed model -> capture transform
            (Similarity of batch 1 or B, capture unit); default ``scale = unit_scale``.
        init_z: optional (B, D) initial codes for restart 0 (other restarts stay random).
        progress: called as ``progress(step_done, steps)`` after every step.

    Returns:
        :class:`LandmarkFitResult`.

    Raises:
        ValueError: bad shapes or options, or a capture with fewer than 3 usable (non-collinear)
            landmarks (the message names the capture).
    """
    cfg = FitConfig() if cfg is None else cfg
    cfg.validate()
    term = LandmarkTerm(decoder, targets, landmark_set, cfg, valid, unit_scale, transform)
    loop = run_fit_loop(decoder, [term], cfg, init_z, progress)
    return landmark_result(loop, term.fitted(loop.rows))


def _estimate(src: np.ndarray, dst: np.ndarray, ok: np.ndarray, with_scale: bool, what: str,
              check: bool = True) -> Similarity:
    """Umeyama capture -> model with a message naming the capture on degenerate input."""
    try:
        return umeyama(src, dst, scale=with_scale, weights=ok, check=check)
    except ValueError as exc:
        raise ValueError(f"{what} landmarks: {exc}") from None


__all__ = ["FitConfig", "LandmarkFitResult", "LandmarkTerm", "fit_landmarks", "initial_codes", "landmark_result",
           "usable_landmarks"]
