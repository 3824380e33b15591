"""Face verification for the decoupling embedders: triplet loss, validation pairs, "same" threshold.

Paper (supplement, "Decoupling Evaluation - Implementation Details"): the embedders are trained
with a triplet loss; two meshes are judged "same" when their embedding distance is below a
threshold chosen on validation pairs to maximise accuracy with a false acceptance rate (FAR)
under 10%. Training itself is :mod:`fitface.evaluation.embedder_training`.

Convention:
    * Distance: squared Euclidean distance of the unit-norm embeddings, in [0, 4] (FaceNet's
      convention, the paper's reference [35]); "same" means ``d < threshold`` (strict).
    * Loss: triplet loss on P x K batches (P classes, K samples each), hinge
      ``max(0, d_ap - d_an + margin)`` with margin ``TRIPLET_MARGIN`` = 0.2 (FaceNet's alpha) on
      squared distances, mean over triplets; negatives mined semi-hard (FaceNet; default) or
      batch-hard (Hermans et al. 2017), see :func:`triplet_loss`. (Batch-hard from a random
      start collapsed every embedding to one point here: loss stuck at the margin.)
    * Validation pairs: equal numbers of positive (same class) and negative pairs, drawn
      without replacement, at most ``max_pairs`` of each (:func:`balanced_pairs`).
    * Threshold: maximises accuracy on those pairs subject to FAR (share of negative pairs
      judged same) strictly below ``max_far`` (:func:`select_threshold`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from fitface.checks import check_shape

#: FaceNet's triplet margin on squared distances of unit embeddings.
TRIPLET_MARGIN = 0.2
#: The paper's FAR bound for the threshold.
MAX_FAR = 0.10


def pairwise_sq_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances: (n, d), (m, d) -> (n, m), clamped at 0."""
    return (a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None] - 2 * a @ b.T).clamp_min(0)


class TripletLoss(NamedTuple):
    loss: torch.Tensor  # () mean over the mined triplets
    active: float  # fraction of mined triplets with a positive hinge


#: Negative-mining strategies of :func:`triplet_loss`.
MINING = ("semi_hard", "batch_hard")


def triplet_loss(emb: torch.Tensor, labels: torch.Tensor, margin: float = TRIPLET_MARGIN,
                 mining: str = "semi_hard") -> TripletLoss:
    """Triplet loss with online mining inside a batch (see module Convention).

    ``semi_hard`` (FaceNet): every (anchor, positive) pair with, as negative, the nearest
    negative farther than the positive (``d_an > d_ap``), or the farthest negative when there
    is none. ``batch_hard`` (Hermans et al.): per anchor, the farthest positive and the nearest
    negative. Hinge ``max(0, d_ap - d_an + margin)`` on squared distances, mean over triplets.

    Args:
        emb: (B, d) float embeddings (unit norm in use).
        labels: (B,) int64 class labels; anchors without a positive or a negative in the
            batch are skipped.
        margin: on squared distances.
        mining: one of :data:`MINING`.
    """
    check_shape("emb", emb, ("B", None))
    check_shape("labels", labels, (emb.shape[0],))
    if mining not in MINING:
        raise ValueError(f"mining: expected one of {MINING}, got {mining!r}")
    d = pairwise_sq_distances(emb, emb)  # (B, B)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=emb.device)
    pos = same & ~eye
    neg = ~same
    ok = pos.any(1) & neg.any(1)  # (B,) anchors with both
    if not bool(ok.any()):
        raise ValueError("labels: a batch needs two classes and a class with two samples")
    inf = torch.full_like(d, float("inf"))
    if mining == "batch_hard":
        d_ap = torch.where(pos, d, torch.zeros_like(d)).max(1).values[ok]  # (A,)
        d_an = torch.where(neg, d, inf).min(1).values[ok]  # (A,)
    else:
        a, p = torch.nonzero(pos & ok[:, None], as_tuple=True)  # (T,) anchor-positive pairs
        d_ap = d[a, p]  # (T,)
        dn = torch.where(neg[a], d[a], inf[a])  # (T, B) distances to the anchor's negatives
        semi = torch.where(dn > d_ap[:, None], dn, inf[a]).min(1).values  # nearest beyond the positive
        easiest = torch.where(neg[a], d[a], torch.full_like(dn, -float("inf"))).max(1).values
        d_an = torch.where(torch.isfinite(semi), semi, easiest)
    hinge = torch.relu(d_ap - d_an + margin)
    return TripletLoss(hinge.mean(), float((hinge.detach() > 0).float().mean()))


class ThresholdResult(NamedTuple):
    """A verification threshold and its validation statistics ("same" = distance < threshold)."""

    threshold: float
    accuracy: float  # (true accepts + true rejects) / pairs
    far: float  # accepted negatives / negatives
    frr: float  # rejected positives / positives


def select_threshold(pos: np.ndarray, neg: np.ndarray, max_far: float = MAX_FAR) -> ThresholdResult:
    """Threshold maximising accuracy subject to ``FAR < max_far``.

    Candidates are 0 and the midpoints between consecutive distinct distances of the pooled
    set (and one above the largest); ties in accuracy go to the smallest threshold (the
    lower FAR).

    Args:
        pos: (P,) distances of positive (same-class) pairs.
        neg: (Q,) distances of negative pairs.
        max_far: strict upper bound on the false acceptance rate.
    """
    pos = np.asarray(pos, np.float64).reshape(-1)
    neg = np.asarray(neg, np.float64).reshape(-1)
    if pos.size == 0 or neg.size == 0:
        raise ValueError(f"pos, neg: need at least one pair of each, got {pos.size} and {neg.size}")
    u = np.unique(np.concatenate([pos, neg]))  # sorted distinct distances
    cand = np.concatenate([[min(0.0, u[0])], (u[:-1] + u[1:]) / 2, [u[-1] + 1.0]])
    ps, ns = np.sort(pos), np.sort(neg)
    tp = np.searchsorted(ps, cand, side="left")  # positives with d < t
    fa = np.searchsorted(ns, cand, side="left")  # negatives with d < t
    far = fa / ns.size
    acc = (tp + (ns.size - fa)) / (ps.size + ns.size)
    feasible = far < max_far
    score = np.where(feasible, acc, -1.0)
    k = int(np.argmax(score))  # first (smallest threshold) maximum
    return ThresholdResult(float(cand[k]), float(acc[k]), float(far[k]), float(1 - tp[k] / ps.size))


class PairSet(NamedTuple):
    first: np.ndarray  # (P,) int64 positions into the sample list
    second: np.ndarray  # (P,) int64
    same: np.ndarray  # (P,) bool


def balanced_pairs(labels: np.ndarray, rng: np.random.Generator, max_pairs: int) -> PairSet:
    """Equal numbers of positive and negative pairs (i < j) among labeled samples.

    Args:
        labels: (n,) int64 classes (-1 = skip).
        rng: chooses the pairs (without replacement).
        max_pairs: at most this many of each kind.

    Returns:
        :class:`PairSet` positives first, then negatives (same count).
    """
    lab = np.asarray(labels, np.int64)
    i, j = np.triu_indices(len(lab), k=1)
    keep = (lab[i] >= 0) & (lab[j] >= 0)
    i, j = i[keep], j[keep]
    same = lab[i] == lab[j]
    p, q = np.flatnonzero(same), np.flatnonzero(~same)
    k = min(len(p), len(q), int(max_pairs))
    if k == 0:
        raise ValueError("labels: the held-out samples give no positive or no negative pair")
    p = rng.choice(p, k, replace=False)
    q = rng.choice(q, k, replace=False)
    sel = np.concatenate([p, q])
    return PairSet(i[sel], j[sel], same[sel])
