"""Loss terms of the decoupled face GAN (paper eq. 2, 6-12; WGAN-GP [20]).

Shapes: ``scores: (B,) float`` critic outputs; ``logits: (B, n) float``; ``labels: (B,) int64``
with ``-1`` = unlabeled; ``features: (B, F) float``; ``images: (B, 3, S, S) float`` normalised
geometry images (see docs/training.md).

Convention:
    * The discriminator *minimises* ``mean D(fake) - mean D(real) + gp_weight * GP
      + lambda_C * sum_f CE_f(real)``, i.e. maximises eq. 6 (``L_GAN + lambda_C (L_ID + L_EXP)``,
      ``L_f = E[log P(c|x)] = -CE``) under the gradient penalty of [20]
      (:func:`critic_loss`).
    * The generator minimises eq. 8: ``lambda_1 * (-mean D(G(z))) + lambda_2 * CE(labeled
      factor) + lambda_3 * feature loss + lambda_4 * L_reg`` (:func:`generator_loss`, with the
      penalties beyond the paper).
    * Batch reductions are written so that a batch split across processes gives, after the
      gradients are averaged, exactly the gradient of the whole batch: plain means need equal
      shards; weighted cross-entropy divides a local *sum* by a *global* denominator
      (:func:`weighted_ce_sum`).
    * Feature-loss pairs are adjacent rows ``(2i, 2i + 1)`` (see :mod:`.sampling`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from fitface.checks import check_shape

#: Added to norms before division (cosine similarity, gradient norm) to keep gradients finite.
NORM_EPS = 1e-12


def class_weights(labels: np.ndarray, num_classes: int, mode: str = "inverse_frequency") -> np.ndarray:
    """Per-class weights for unbalanced labels (§5.1, [24]).

    Args:
        labels: (N,) int labels of the training set, -1 = unlabeled (ignored).
        num_classes: n.
        mode: ``"inverse_frequency"``: ``w_c ∝ 1 / count_c`` over labeled samples, scaled so
            the mean over the classes present is 1 (absent classes get 0); ``"none"``: all 1.

    Returns:
        (n,) float32.
    """
    if mode == "none":
        return np.ones(num_classes, dtype=np.float32)
    if mode != "inverse_frequency":
        raise ValueError(f"mode: expected 'inverse_frequency' or 'none', got {mode!r}")
    lab = np.asarray(labels).reshape(-1)
    lab = lab[lab >= 0]
    counts = np.bincount(lab, minlength=num_classes).astype(np.float64)[:num_classes]  # (n,)
    w = np.zeros(num_classes)
    present = counts > 0
    if present.any():
        w[present] = 1.0 / counts[present]
        w[present] /= w[present].mean()
    return w.astype(np.float32)


def weighted_ce_sum(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Sum over labeled rows of ``w[c_i] * CE_i`` (unlabeled rows, ``-1``, contribute 0).

    Args:
        logits: (B, n) float.
        labels: (B,) int64, -1 = unlabeled.
        weight: (n,) float class weights or None (all 1).

    Returns:
        () float; divide by :func:`weighted_ce_denominator` of the *global* batch for the
        weighted mean PyTorch's ``cross_entropy(weight=..., ignore_index=-1)`` computes.
    """
    check_shape("logits", logits, ("B", None))
    check_shape("labels", labels, (logits.shape[0],))
    ce = F.cross_entropy(logits, labels.clamp_min(0), reduction="none")  # (B,)
    w = (labels >= 0).to(logits.dtype)
    if weight is not None:
        w = w * weight.to(logits.dtype)[labels.clamp_min(0)]
    return (w * ce).sum()


def weighted_ce_denominator(labels: torch.Tensor, weight: torch.Tensor | None) -> float:
    """Sum of the weights of the labeled rows of ``labels`` ((B,) int64): a python float."""
    lab = labels[labels >= 0]
    if weight is None:
        return float(lab.numel())
    return float(weight[lab].sum())


def critic_gap(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """``mean D(real) - mean D(fake)``: the Wasserstein estimate of eq. 2 (D maximises it)."""
    return real_scores.mean() - fake_scores.mean()


def gradient_penalty_from(scores: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """WGAN-GP penalty ``mean_i (||grad_x D(x_i)|| - 1)^2`` ([20]) for scores computed from ``inputs``.

    Args:
        scores: (B,) critic outputs of ``inputs``.
        inputs: (B, ...) interpolated inputs with ``requires_grad``.

    Returns:
        () float, differentiable w.r.t. D's parameters (double backward).
    """
    (grad,) = torch.autograd.grad(scores.sum(), inputs, create_graph=True)
    norm = (grad.flatten(1).square().sum(1) + NORM_EPS).sqrt()  # (B,)
    return (norm - 1.0).square().mean()


def interpolate(real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """``eps * real + (1 - eps) * fake`` with ``eps`` (B,) in [0, 1], broadcast over the rest."""
    e = eps.to(real.dtype).view(-1, *([1] * (real.dim() - 1)))
    return e * real + (1.0 - e) * fake


def pair_feature_loss(features: torch.Tensor) -> torch.Tensor:
    """Feature loss of eq. 10-11 on adjacent pairs: ``mean_i (1 - cos(f_{2i}, f_{2i+1}))``.

    ``2/N * sum over the N/2 pairs`` is the mean over pairs.

    Args:
        features: (B, F) float, B even; rows 2i and 2i+1 share the compared factor's code.

    Returns:
        () float in [0, 2].
    """
    if features.shape[0] % 2:
        raise ValueError(f"features: expected an even batch, got shape {tuple(features.shape)}")
    f = features.reshape(features.shape[0] // 2, 2, -1)  # (B/2, 2, F)
    a, b = f[:, 0], f[:, 1]
    cos = (a * b).sum(1) / ((a.square().sum(1) * b.square().sum(1)) + NORM_EPS).sqrt()
    return (1.0 - cos).mean()


class CriticLoss(NamedTuple):
    """Terms of the critic's objective (eq. 6, as the loss D minimises) for one batch: each a ()
    tensor, unweighted, and the weighted total."""

    total: torch.Tensor  # -gap + gp_weight * gp + lambda_C * sum_f cls[f]
    gap: torch.Tensor  # mean D(real) - mean D(fake): L_GAN of eq. 2
    gp: torch.Tensor  # gradient penalty of [20]
    cls: dict  # factor -> () weighted CE on the real labeled samples (= -L_ID, -L_EXP of eq. 7)


def critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor, interpolate_scores: torch.Tensor | None,
                interpolates: torch.Tensor | None, logits: dict, labels: dict, weights: dict, denominators: dict,
                gp_weight: float, lambda_c: float, world_size: int = 1) -> CriticLoss:
    """The critic's loss: eq. 6 under the gradient penalty of WGAN-GP [20].

    D maximises ``L_D = L_GAN + lambda_C (L_ID + L_EXP)`` (eq. 6) with ``L_GAN = E[D(x)] - E[D(G(z))]``
    (eq. 2) and ``L_f = E_{x, c}[log P(C = c | x)]`` over the real samples labeled for factor ``f``
    (eq. 7; unlabeled samples are ignored), so it minimises

    ``total = -(mean D(real) - mean D(fake)) + gp_weight * mean_i (||grad D(x_hat_i)|| - 1)^2
    + lambda_C * sum_f CE_f``

    where ``x_hat`` interpolates real and fake samples (:func:`interpolate`) and ``CE_f`` is the
    class-weighted cross-entropy of factor ``f`` (:func:`weighted_ce_sum`; the mean over the
    labeled rows of the *global* batch: ``denominators[f]`` is the global
    :func:`weighted_ce_denominator`, ``world_size`` undoes the gradient average over processes).

    Args:
        real_scores, fake_scores: (b,) critic scores of the real and the fake samples.
        interpolate_scores: (b,) critic scores of ``interpolates``; None on an update without the
            penalty (lazy penalty: ``gp`` is then 0 and not in ``total``).
        interpolates: (b, ...) the interpolates, with ``requires_grad`` (the penalty's input), or None.
        logits: ``{factor: (r_f, n_f)}`` class logits of the labeled real rows of each classified
            factor (factors absent from it have no term).
        labels: ``{factor: (r_f,)}`` int64 labels of those rows.
        weights: ``{factor: (n_f,)}`` class weights (:func:`class_weights`) or None values.
        denominators: ``{factor: float}`` weighted label counts of the global batch (> 0).
        gp_weight: the penalty's weight (10 in [20]).
        lambda_c: ``lambda_C`` (eq. 6).
        world_size: processes the batch is split over.

    Returns:
        :class:`CriticLoss`.
    """
    gap = critic_gap(real_scores, fake_scores)
    if interpolate_scores is None:
        gp = real_scores.new_zeros(())
        total = -gap
    else:
        gp = gradient_penalty_from(interpolate_scores, interpolates)
        total = -gap + gp_weight * gp
    cls = {}
    for f, lg in logits.items():
        cls[f] = weighted_ce_sum(lg.float(), labels[f], weights[f]) / denominators[f] * world_size
        total = total + lambda_c * cls[f]
    return CriticLoss(total, gap, gp, cls)


class GeneratorPenalties(NamedTuple):
    """The generator's penalties beyond the paper (each a () tensor, unweighted; 0 where off):
    :func:`interaction_penalty`, :func:`cross_projection_penalty`, :func:`subspace_penalty`,
    :func:`identity_anchor_penalty`."""

    interaction: torch.Tensor
    projection: torch.Tensor
    subspace: torch.Tensor
    anchor: torch.Tensor


class GeneratorLoss(NamedTuple):
    """Terms of eq. 8 and of the extra penalties for one batch (each a () tensor, unweighted)
    and the weighted total."""

    total: torch.Tensor
    gan: torch.Tensor  # -mean D(G(z))
    cls: torch.Tensor  # CE of the labeled factor on T codes (= -L_CL)
    feat: torch.Tensor  # sum over unlabeled factors of the pair feature loss
    reg: torch.Tensor  # mean over the batch of the per-sample Laplacian loss
    interaction: torch.Tensor  # the fields of GeneratorPenalties (0 without them)
    projection: torch.Tensor
    subspace: torch.Tensor
    anchor: torch.Tensor


def generator_loss(critic_scores: torch.Tensor, logits: torch.Tensor | None, labels: torch.Tensor | None,
                   features: dict, reg: torch.Tensor, lambdas, penalties: GeneratorPenalties | None = None
                   ) -> GeneratorLoss:
    """The generator's loss: eq. 8 plus the penalties of issue #12.

    G minimises (eq. 8, with ``L_CL = -CE`` of eq. 9 and the feature losses of eq. 10-11)

    ``total = lambda_1 * (-mean D(G(z))) + lambda_2 * CE(C_f(G(z)), c) + lambda_3 * sum_{f' != f}
    mean_pairs (1 - cos(phi_{f'}(G(z_2i)), phi_{f'}(G(z_2i+1)))) + lambda_4 * L_reg``

    for a phase batch of the labeled factor ``f`` (codes from the fixed set T_f, labels ``c``;
    rows ``2i, 2i + 1`` share the code of each other factor ``f'``, :func:`pair_feature_loss`)
    and ``L_reg`` the Laplacian loss of eq. 12; then, with ``penalties``,
    ``+ lambda_int L_int + lambda_proj L_proj + lambda_sub L_sub + lambda_anc L_anc``.

    Args:
        critic_scores: (b,) critic scores of the generated batch.
        logits: (b, n) class logits of the labeled factor, or None (no classification term).
        labels: (b,) int64 labels of the batch's T codes (with ``logits``).
        features: ``{factor: (b, F)}`` classifier features of the *unlabeled* factors.
        reg: () the batch's mean Laplacian loss (``L_reg``; 0 when off).
        lambdas: an object with the weights as attributes ``lambda_gan``, ``lambda_cls``,
            ``lambda_feat``, ``lambda_reg``, ``lambda_interaction``, ``lambda_projection``,
            ``lambda_subspace``, ``lambda_anchor`` (a :class:`.config.TrainConfig`). A term whose
            weight is 0 is not computed (the classification and feature terms).
        penalties: the extra penalties (:class:`GeneratorPenalties`), or None (none of them).

    Returns:
        :class:`GeneratorLoss` (its penalty fields 0 without ``penalties``).
    """
    w = lambdas
    gan = -critic_scores.float().mean()
    cls = gan.new_zeros(())
    if logits is not None and w.lambda_cls > 0:
        cls = F.cross_entropy(logits.float(), labels)
    feat = gan.new_zeros(())
    if w.lambda_feat > 0:
        for phi in features.values():
            feat = feat + pair_feature_loss(phi.float())
    total = w.lambda_gan * gan + w.lambda_cls * cls + w.lambda_feat * feat + w.lambda_reg * reg
    if penalties is None:
        penalties = GeneratorPenalties(*(gan.new_zeros(()) for _ in GeneratorPenalties._fields))
    else:
        total = total + w.lambda_interaction * penalties.interaction + w.lambda_projection * penalties.projection + \
            w.lambda_subspace * penalties.subspace + w.lambda_anchor * penalties.anchor
    return GeneratorLoss(total, gan, cls, feat, reg, *penalties)


def interaction_penalty(quads: torch.Tensor) -> torch.Tensor:
    """Interaction penalty: what one factor's code does must not depend on the other codes.

    For codes ``(a, e)`` split into a block ``e`` of one factor (e.g. expression) and the rest
    ``a`` (identity, noise), a generator without interaction between the two satisfies
    ``G(a, e) - G(a, e') = G(b, e) - G(b, e')`` for all ``a, b, e, e'``: the change an
    expression code makes is the same on every identity (the additive 3DMM does this
    exactly). The penalty is the mean squared *mixed difference*

    ``L_int = mean_{i, v, c} ([G(a, e) - G(a, e')] - [G(b, e) - G(b, e')])_{i, v, c} ^ 2``

    over quadruples ``i`` and (a subset of) vertices ``v`` and coordinates ``c``. It uses only
    generated faces (no data, no generating coefficients) and is not part of the paper; it
    constrains the whole expression space, where the paper's classifiers see seven classes.

    Args:
        quads: (n, 4, F) float outputs, rows ``[G(a, e), G(a, e'), G(b, e), G(b, e')]`` of each
            quadruple, ``F`` = flattened (vertex, coordinate) entries, normalised units
            (displacement / s).

    Returns:
        () float.
    """
    check_shape("quads", quads, (None, 4, None))
    mixed = (quads[:, 0] - quads[:, 1]) - (quads[:, 2] - quads[:, 3])  # (n, F)
    return mixed.square().mean()


def cross_projection_penalty(coef: torch.Tensor, identity: slice, expression: slice) -> torch.Tensor:
    """Cross-projection penalty: an identity change must not move a face along what the linear
    3DMM calls expression, nor an expression change along what it calls identity.

    ``P = [P_I; P_E]`` is the least-squares coefficient projector of the additive linear 3DMM
    of the training split (``pinv([B_I, B_E])``: built from identity and neutral labels, like
    the baseline itself, never from generating coefficients). For quadruples
    ``[G(a, e), G(a, e'), G(b, e), G(b, e')]`` with projected coefficients ``c = P G``:

    ``L_proj = mean(|P_E (G(a, e) - G(b, e))|^2 + |P_E (G(a, e') - G(b, e'))|^2
    + |P_I (G(a, e) - G(a, e'))|^2 + |P_I (G(b, e) - G(b, e'))|^2) / 4``

    (means over quadruples; squared norms summed over coefficients). The linear 3DMM itself
    scores 0; the interaction penalty cannot see a leak that is additive (an identity code
    that adds an expression-like displacement), this one can.

    Args:
        coef: (n, 4, K) float projected coefficients of the quadruples (code units).
        identity, expression: the slices of ``K`` holding ``P_I`` and ``P_E``.

    Returns:
        () float.
    """
    check_shape("coef", coef, (None, 4, None))
    d_id = coef[:, [0, 1]] - coef[:, [2, 3]]  # (n, 2, K) identity changes
    d_ex = coef[:, [0, 2]] - coef[:, [1, 3]]  # (n, 2, K) expression changes
    return (d_id[..., expression].square().sum(-1).mean() + d_ex[..., identity].square().sum(-1).mean()) / 2


def subspace_penalty(changes: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Identity-subspace penalty: an identity change must stay in the linear 3DMM's identity
    subspace.

    ``L_sub = mean_{i, j} (d_i - Q Q^T d_i)_j ^ 2`` for identity changes
    ``d = G(a, e) - G(b, e)`` (full meshes, flattened, in units of ``s``) and ``Q`` an
    orthonormal basis of the 3DMM's identity modes (built from neutral faces). Unlike the
    cross-projection penalty it also sees leaks outside the 3DMM's expression modes. G stays
    free to shape its distribution of identities (nonlinearly) within the subspace, which holds
    99.6% of the identity variance of the ICT set.

    Args:
        changes: (n, F) float identity changes, ``F = 3V``.
        basis: (F, k) float orthonormal columns ``Q``.

    Returns:
        () float.
    """
    check_shape("changes", changes, (None, None))
    check_shape("basis", basis, (changes.shape[1], None))
    resid = changes - (changes @ basis) @ basis.T  # (n, F)
    return resid.square().mean()


def identity_anchor_penalty(coef_changes: torch.Tensor, code_changes: torch.Tensor) -> torch.Tensor:
    """Identity-anchor penalty: an identity change moves the face's linear-3DMM identity
    coefficients by exactly the change of the identity code, as the 3DMM does.

    ``L_anc = mean_i |P_I (G(a, e) - G(b, e)) - (a - b)|^2`` (squared norms over the identity
    modes the data supports). With the identity-subspace penalty it keeps the identity factor the
    3DMM's (linear and in its subspace) and leaves expression, and how expressions play out on
    each identity, to the adversarial game: the critic can no longer buy variation it misses
    from the identity code.

    Args:
        coef_changes: (n, k) float projected identity coefficients of identity changes.
        code_changes: (n, k) float the identity code differences of the same pairs.

    Returns:
        () float.
    """
    check_shape("coef_changes", coef_changes, (None, None))
    check_shape("code_changes", code_changes, tuple(coef_changes.shape))
    return (coef_changes - code_changes).square().sum(-1).mean()
