"""The one optimisation loop of every fit: Adam on the latent codes with pluggable data terms.

The loop minimises, for B captures x K restarts at once (row ``b*K + k`` of an (N, D) array),

    E(z) = sum_terms E_t(z; theta_t)  +  lam ||z||^2  +  mu sum_t ||z_f(t+1) - z_f(t)||^2

by Adam on ``z`` (cosine learning-rate schedule), while each data term keeps its own
closed-form parameters ``theta_t`` (a similarity, a camera, correspondences) up to date. The
loop owns everything that does not depend on the data: initial codes (random restarts, ``init_z``,
frozen blocks), the regulariser, the sequence options (a code block shared by a group of
captures, a smoothness term on consecutive captures), the history, progress, and the choice of
the best restart. Terms (:class:`DataTerm`):

* :class:`fitface.fitting.landmark_fit.LandmarkTerm`: 3D landmarks under a similarity (eq. 13);
* :class:`fitface.fitting.projection_fit.ProjectionTerm`: 2D landmarks under a scaled
  orthographic camera (photos);
* :class:`fitface.fitting.surface_refine.SurfaceTerm`: scan points against the model surface
  (robust point-to-plane), with its landmarks sharing its similarity.

Convention:
    * The objective is in the MODEL frame and unit; ``lam`` and the terms' values are summed as
      they are (a term applies its own weights).
    * Order of one step: every term's :meth:`DataTerm.evaluate` (value and gradient at the
      current codes; a term may first refresh its parameters there), the regulariser and
      sequence gradients, frozen dims zeroed, one Adam step, every term's
      :meth:`DataTerm.after_step` (a closed-form update from what ``evaluate`` computed), then
      ``progress(step + 1, steps)``. After the last step :meth:`DataTerm.finish` refreshes the
      parameters at the final codes and returns the final data values that choose the restart.
    * Sequence mode (``cfg.shared``): captures of one group share the block ``cfg.shared_factor``
      (each restart's rows share it; the gradient is summed over the group) and the best restart
      is chosen per group by the group's total objective.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from fitface.checks import check_shape

from .adam import Adam, cosine_lr


class DataTerm:
    """A data term of :func:`run_fit_loop` (subclass it; the defaults are no-ops).

    Attributes:
        num_captures: B, the captures the term holds targets for (every term of a loop agrees).
    """

    num_captures: int = 0

    def start(self, mean_codes: np.ndarray, restarts: int) -> None:
        """Before the first step: set up per-row (N = B * restarts) state and the initial
        closed-form parameters. ``mean_codes`` is (B, D) float64: zero but for the frozen blocks."""

    def evaluate(self, z: np.ndarray, step: int, want_value: bool) -> tuple[np.ndarray | None, np.ndarray]:
        """``(value (N,) or None, gradient (N, D))`` of the term at codes ``z (N, D)``;
        ``value`` is needed only when ``want_value`` (the history)."""
        raise NotImplementedError

    def after_step(self, step: int) -> None:
        """After Adam's step ``step`` (0-based): optional closed-form update of the parameters."""

    def finish(self, z: np.ndarray) -> np.ndarray:
        """Final parameters at the final codes; returns the (N,) float64 final values."""
        raise NotImplementedError


@dataclass
class LoopResult:
    """What :func:`run_fit_loop` found.

    Attributes:
        z: (N, D) float64 final codes of every row (row ``b*K + k``).
        objective: (N,) float64 final objective per row (the smoothness share charged to the
            earlier frame of each pair).
        restarts_loss: (B, K) the same per capture and restart.
        best_restart: (B,) int the restart kept per capture.
        rows: (B,) int the rows kept (``b*K + best_restart[b]``).
        history: ``{"step": (S,), "objective": (S,)}``: mean objective over all rows.
        steps: Adam steps run.
    """

    z: np.ndarray
    objective: np.ndarray
    restarts_loss: np.ndarray
    best_restart: np.ndarray
    rows: np.ndarray
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


def initial_codes(decoder, cfg, nb: int, init_z: np.ndarray | None = None):
    """Initial codes of every capture and restart, with the frozen blocks in place.

    Restart codes are ``z ~ N(0, init_scale^2 I)`` from ``cfg.seed`` (restart 0 is zero with
    ``init="zero"``, or ``init_z`` when given), then the ``cfg.freeze`` blocks overwrite them.
    Capture ``b`` takes row ``b`` of the seed's (rows, K, D) stream, or row ``cfg.init_rows[b]``
    when that is given, so a capture's start does not depend on which others share its call.

    Returns:
        ``(z0 (B, K, D) float64, frozen (D,) bool, frozen_values (B, D) float64)``.
    """
    dim = decoder.latent_dim
    rng = np.random.default_rng(cfg.seed)
    rows = cfg.init_rows
    if rows is None:
        z0 = rng.standard_normal((nb, cfg.restarts, dim)) * cfg.init_scale
    else:  # capture b starts from row rows[b] of the seed's stream (a batch's place, kept on --resume)
        rows = np.asarray(rows, dtype=np.int64)
        check_shape("init_rows", rows, (nb,))
        z0 = rng.standard_normal((int(rows.max()) + 1 if nb else 0, cfg.restarts, dim))[rows] * cfg.init_scale
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


def _group_sum(x: np.ndarray, row_group: np.ndarray) -> np.ndarray:
    """Replace each row of ``x (N, d)`` by the sum over the rows of its group."""
    ng = int(row_group.max()) + 1
    sums = np.zeros((ng, x.shape[1]), dtype=x.dtype)
    np.add.at(sums, row_group, x)
    return sums[row_group]


def _total(values: Sequence[np.ndarray]) -> np.ndarray:
    out = values[0]
    for v in values[1:]:
        out = out + v
    return out


def run_fit_loop(
    decoder,
    terms: Sequence[DataTerm],
    cfg,
    init_z: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LoopResult:
    """Optimise the codes of every capture and restart against the data ``terms`` (module doc).

    Args:
        decoder: a :class:`fitface.fitting.decoder.Decoder`.
        terms: one or more :class:`DataTerm` of the same B captures.
        cfg: a :class:`fitface.fitting.landmark_fit.FitConfig` (validated here): lam, steps, lr,
            lr_final_fraction, betas, restarts, seed, init, init_scale, freeze, shared,
            shared_factor, sequence_smoothness, smooth_factor, history_every.
        init_z: optional (B, D) initial codes of restart 0.
        progress: ``progress(step_done, steps)`` after every step.

    Returns:
        :class:`LoopResult`.
    """
    cfg.validate()
    if not terms:
        raise ValueError("terms: at least one data term is needed")
    nb = terms[0].num_captures
    if any(t.num_captures != nb for t in terms):
        raise ValueError(f"terms: every data term must hold the same captures, got "
                         f"{[t.num_captures for t in terms]}")
    k, dim, dt = cfg.restarts, decoder.latent_dim, decoder.dtype
    n = nb * k

    # ---- initial codes (N, D), row b*K + k
    z0, frozen, frozen_values = initial_codes(decoder, cfg, nb, init_z)  # (B, K, D), (D,), (B, D)
    row_group, ia, ib = _pairs_and_groups(cfg.shared, nb, k)
    sh = decoder.layout.slice(cfg.shared_factor) if row_group is not None else None
    if row_group is not None:
        first = np.unique(row_group, return_index=True)[1]  # first row of each group x restart
        z0.reshape(n, dim)[:, sh] = z0.reshape(n, dim)[first, sh][np.unique(row_group, return_inverse=True)[1]]
    sm = decoder.layout.slice(cfg.smooth_factor) if cfg.sequence_smoothness > 0 and len(ia) else None
    z = np.ascontiguousarray(z0.reshape(n, dim), dtype=dt)
    mean_codes = np.zeros((nb, dim))
    mean_codes[:, frozen] = frozen_values[:, frozen]
    for t in terms:
        t.start(mean_codes, k)

    grad_mask = (~frozen).astype(dt)  # (D,)
    opt = Adam(z, lr=cfg.lr, betas=cfg.betas)
    hist_step, hist_obj = [], []
    lam, mu = dt.type(cfg.lam), dt.type(cfg.sequence_smoothness)
    for step in range(cfg.steps):
        opt.lr = cosine_lr(step, cfg.steps, cfg.lr, cfg.lr_final_fraction)
        record = bool(cfg.history_every) and step % cfg.history_every == 0
        evals = [t.evaluate(z, step, record) for t in terms]
        g = _total([e[1] for e in evals])  # (N, D)
        g += (2.0 * lam) * z
        if sm is not None:
            diff = z[ia, sm] - z[ib, sm]  # (P, d)
            g[ia, sm] += (2.0 * mu) * diff
            g[ib, sm] -= (2.0 * mu) * diff
        if row_group is not None:
            g[:, sh] = _group_sum(g[:, sh], row_group)
        g *= grad_mask
        if record:
            obj = _total([e[0] for e in evals]) + cfg.lam * np.einsum("nd,nd->n", z, z)
            hist_step.append(step)
            hist_obj.append(float(obj.mean()))
        opt.step(g.astype(dt, copy=False))
        for t in terms:
            t.after_step(step)
        if progress is not None:
            progress(step + 1, cfg.steps)

    # ---- final objective and the best restart
    zz = z.astype(np.float64)
    obj = _total([t.finish(z) for t in terms]) + cfg.lam * np.einsum("nd,nd->n", zz, zz)  # (N,)
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
    return LoopResult(
        z=zz, objective=obj, restarts_loss=per.copy(), best_restart=best, rows=np.arange(nb) * k + best,
        history={"step": np.asarray(hist_step), "objective": np.asarray(hist_obj)}, steps=cfg.steps)


__all__ = ["DataTerm", "LoopResult", "initial_codes", "run_fit_loop"]
