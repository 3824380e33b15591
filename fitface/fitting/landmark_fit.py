"""Fit latent codes to sparse 3D landmarks (paper §5.5, eq. 13), batched, numpy only.

For each capture ``b`` with landmark targets ``v_i`` (capture frame and unit) the engine solves

    min_{z, T}  sum_i w_i || v~_i(z) - T^-1(v_i) ||^2  +  lam ||z||^2                 (eq. 13)

where ``v~_i(z)`` are the model's landmark points for code ``z`` and ``T`` is a similarity
transform (model -> capture). ``z`` is optimised by Adam; ``T`` is re-estimated in closed form
(Umeyama, :func:`fitface.fitting.similarity.umeyama`) every ``refine_every`` steps, which
minimises the same objective over ``T`` exactly (block-coordinate descent).

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

from .adam import Adam, cosine_lr
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
    """Options of :func:`fit_landmarks`.

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


def _freeze_arrays(decoder, freeze: dict[str, Any], nb: int) -> tuple[np.ndarray, np.ndarray]:
    """(D,) bool mask of frozen dims and (B, D) values (0 where not frozen)."""
    layout = decoder.layout
    mask = np.zeros(layout.dim, dtype=bool)
    values = np.zeros((nb, layout.dim))
    for name, code in (freeze or {}).items():
        sl = layout.slice(name)  # KeyError lists the blocks
        code = np.asarray(code, dtype=np.float64)
        d = sl.stop - sl.start
        if code.shape not in ((d,), (nb, d)):
            raise ValueError(f"freeze[{name!r}]: expected shape ({d},) or ({nb}, {d}), got {code.shape}")
        if not np.isfinite(code).all():
            raise ValueError(f"freeze[{name!r}]: NaN or inf in the code")
        mask[sl] = True
        values[:, sl] = code
    return mask, values


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


def initial_codes(decoder, cfg: FitConfig, nb: int, init_z: np.ndarray | None = None):
    """Initial codes of every capture and restart, with the frozen blocks in place.

    Restart codes are ``z ~ N(0, init_scale^2 I)`` from ``cfg.seed`` (restart 0 is zero with
    ``init="zero"``, or ``init_z`` when given), then the ``cfg.freeze`` blocks overwrite them.

    Returns:
        ``(z0 (B, K, D) float64, frozen (D,) bool, frozen_values (B, D) float64)``.
    """
    dim = decoder.latent_dim
    rng = np.random.default_rng(cfg.seed)
    z0 = rng.standard_normal((nb, cfg.restarts, dim)) * cfg.init_scale
    if cfg.init == "zero":
        z0[:, 0] = 0.0
    if init_z is not None:
        init_z = np.asarray(init_z, dtype=np.float64)
        check_shape("init_z", init_z, (nb, dim))
        z0[:, 0] = init_z
    frozen, frozen_values = _freeze_arrays(decoder, cfg.freeze, nb)
    z0[:, :, frozen] = frozen_values[:, None, frozen]
    return z0, frozen, frozen_values


def _pairs_and_groups(shared: Any, nb: int, k: int) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Group index per row (or None), and the consecutive same-group row pairs (ia, ib)."""
    if shared is None:
        return None, np.zeros(0, np.int64), np.zeros(0, np.int64)
    g = np.asarray(shared)
    if g.shape != (nb,):
        raise ValueError(f"shared: expected ({nb},) group ids, got shape {g.shape}")
    _, gid = np.unique(g, return_inverse=True)  # (B,) compact ids
    row_group = (gid[:, None] * k + np.arange(k)[None]).reshape(-1)  # (B*K,) group x restart
    same = np.flatnonzero(gid[:-1] == gid[1:])  # captures b with b+1 in the same group
    ia = (same[:, None] * k + np.arange(k)).reshape(-1)
    ib = ia + k
    return row_group, ia, ib


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
    if not (np.isfinite(unit_scale) and unit_scale > 0):
        raise ValueError(f"unit_scale: must be > 0, got {unit_scale}")
    rows = decoder.landmark_rows(landmark_set)
    tg = np.asarray(targets, dtype=np.float64)
    if tg.ndim == 2:
        tg = tg[None]
    check_shape("targets", tg, (None, rows.num_points, 3))
    nb, nl = tg.shape[:2]
    ok, counts = usable_landmarks(np.isfinite(tg).all(axis=2), valid, 3, "at least 3 are needed")  # (B, L), (B,)
    k, dim, dt = cfg.restarts, decoder.latent_dim, decoder.dtype
    n = nb * k
    tg_m = np.where(ok[..., None], tg / unit_scale, 0.0)  # (B, L, 3) capture frame, model unit

    # ---- initial codes (N, D), row b*K + k
    z0, frozen, frozen_values = initial_codes(decoder, cfg, nb, init_z)  # (B, K, D), (D,), (B, D)
    row_group, ia, ib = _pairs_and_groups(cfg.shared, nb, k)
    sh = decoder.layout.slice(cfg.shared_factor) if row_group is not None else None
    if row_group is not None:
        first = np.unique(row_group, return_index=True)[1]  # first row of each group x restart
        z0.reshape(n, dim)[:, sh] = z0.reshape(n, dim)[first, sh][np.unique(row_group, return_inverse=True)[1]]
    sm = decoder.layout.slice(cfg.smooth_factor) if cfg.sequence_smoothness > 0 and len(ia) else None
    z = np.ascontiguousarray(z0.reshape(n, dim), dtype=dt)

    # ---- initial transform: from the mean model landmarks (z = 0, frozen blocks applied)
    wgt = np.repeat(ok, k, axis=0).astype(np.float64)  # (N, L)
    tg_rep = np.repeat(tg_m, k, axis=0)  # (N, L, 3)
    if cfg.estimate_similarity:
        zm = np.zeros((nb, dim))
        zm[:, frozen] = frozen_values[:, frozen]
        p0 = decoder.points(zm.astype(dt), rows).astype(np.float64)  # (B, L, 3) model frame
        t_inv = _estimate(tg_m, p0, ok, cfg.with_scale, "capture").repeat(k)  # capture -> model, (N)
    else:
        fixed = Similarity.from_scale(unit_scale, nb) if transform is None else transform
        if len(fixed) == 1:
            fixed = fixed.repeat(nb)
        if len(fixed) != nb:
            raise ValueError(f"transform: expected a batch of 1 or {nb}, got {len(fixed)}")
        # the targets were divided by unit_scale: undo that in the fixed transform
        t_inv = Similarity.from_scale(unit_scale, nb).inverse().compose(fixed).inverse().repeat(k)
    target = t_inv.apply(tg_rep).astype(dt)  # (N, L, 3) targets in the model frame
    wmask = wgt.astype(dt)[..., None]  # (N, L, 1)

    grad_mask = (~frozen).astype(dt)  # (D,)
    opt = Adam(z, lr=cfg.lr, betas=cfg.betas)
    hist_step, hist_obj = [], []
    lam, mu = dt.type(cfg.lam), dt.type(cfg.sequence_smoothness)
    for step in range(cfg.steps):
        opt.lr = cosine_lr(step, cfg.steps, cfg.lr, cfg.lr_final_fraction)
        pts, vjp = decoder.linearize_points(z, rows)  # (N, L, 3)
        r = pts - target
        r *= wmask
        g = vjp(2.0 * r)  # (N, D)
        g += (2.0 * lam) * z
        if sm is not None:
            diff = z[ia, sm] - z[ib, sm]  # (P, d)
            g[ia, sm] += (2.0 * mu) * diff
            g[ib, sm] -= (2.0 * mu) * diff
        if row_group is not None:
            g[:, sh] = _group_sum(g[:, sh], row_group)
        g *= grad_mask
        if cfg.history_every and step % cfg.history_every == 0:
            obj = np.einsum("nlc,nlc->n", r, r) + cfg.lam * np.einsum("nd,nd->n", z, z)
            hist_step.append(step)
            hist_obj.append(float(obj.mean()))
        opt.step(g)
        if cfg.estimate_similarity and (step + 1) % cfg.refine_every == 0:
            t_inv = _estimate(tg_rep, pts.astype(np.float64), wgt, cfg.with_scale, "row", check=False)
            target = t_inv.apply(tg_rep).astype(dt)
        if progress is not None:
            progress(step + 1, cfg.steps)

    # ---- final transform and objective
    pts = decoder.points(z, rows).astype(np.float64)
    zz = z.astype(np.float64)
    if cfg.estimate_similarity:
        t_inv = _estimate(tg_rep, pts, wgt > 0, cfg.with_scale, "row")
    target = t_inv.apply(tg_rep)
    r = (pts - target) * wgt[..., None]
    obj = np.einsum("nlc,nlc->n", r, r) + cfg.lam * np.einsum("nd,nd->n", zz, zz)  # (N,)
    if sm is not None:
        d = zz[ia, sm] - zz[ib, sm]
        share = cfg.sequence_smoothness * np.einsum("pd,pd->p", d, d)
        obj = obj.copy()
        np.add.at(obj, ia, share)  # each pair's term is charged to its earlier frame
    if cfg.history_every:
        hist_step.append(cfg.steps)
        hist_obj.append(float(obj.mean()))
    per = obj.reshape(nb, k)
    if row_group is None:
        best = per.argmin(axis=1)  # (B,)
    else:
        totals = _group_sum(obj[:, None], row_group)[:, 0].reshape(nb, k)  # group total per restart
        best = totals.argmin(axis=1)
    sel = np.arange(nb) * k + best  # (B,) chosen rows

    to_capture = Similarity.from_scale(unit_scale, nb).compose(t_inv[sel].inverse())  # model -> capture
    pts_c = to_capture.apply(pts[sel])  # (B, L, 3)
    res = np.where(ok[..., None], pts_c - tg, np.nan)
    sq = np.where(ok, (np.nan_to_num(res) ** 2).sum(axis=2), 0.0)
    rms = np.sqrt(sq.sum(axis=1) / counts)
    return LandmarkFitResult(
        z=zz[sel].copy(),
        transform=to_capture,
        points=pts_c,
        residuals=res,
        rms=rms,
        rms_model=rms / (to_capture.scale),
        loss=obj[sel].copy(),
        restarts_loss=per.copy(),
        best_restart=best,
        valid=ok,
        history={"step": np.asarray(hist_step), "objective": np.asarray(hist_obj)},
        steps=cfg.steps,
    )


def _group_sum(x: np.ndarray, row_group: np.ndarray) -> np.ndarray:
    """Replace each row of ``x (N, d)`` by the sum over the rows of its group."""
    ng = int(row_group.max()) + 1
    sums = np.zeros((ng, x.shape[1]), dtype=x.dtype)
    np.add.at(sums, row_group, x)
    return sums[row_group]


def _estimate(src: np.ndarray, dst: np.ndarray, ok: np.ndarray, with_scale: bool, what: str,
              check: bool = True) -> Similarity:
    """Umeyama capture -> model with a message naming the capture on degenerate input."""
    try:
        return umeyama(src, dst, scale=with_scale, weights=ok, check=check)
    except ValueError as exc:
        raise ValueError(f"{what} landmarks: {exc}") from None
