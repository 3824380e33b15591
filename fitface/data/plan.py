"""The sampling plan shared by the dataset builders (``fitface data ict`` and the synthetic one).

A plan decides, for every sample of a dataset, *who* (identity index), *what* (generating
emotion and its intensity), *where in time* (part, sequence, frame) and *whether it is
labeled*, without any geometry. A builder turns each row into a mesh.

It models the paper's training data (§5.2: 30,559 faces, identity labels on all, expression
labels only for the seven basic emotions, about 7% expression-labeled):

* **static part** (``part == 0``, like BU-3DFE / Bosphorus): a subset of the identities
  (``static_identity_fraction``, default 1/3, like BU-3DFE's 100 subjects of the pool) is
  scanned once at each of the seven emotions' peak (neutral included). Every static sample
  is expression-labeled with its emotion.
* **posed sequences** (``part == 1``, like BU-4DFE): sequences neutral -> peak -> neutral of one
  non-neutral emotion, about ``sequence_length`` frames (default 40) each, taking
  ``posed_share`` (default 1/2) of the motion frames. Only the first and last frame (labeled
  neutral) and the peak frame (labeled with the sequence's emotion) carry a label.
* **spontaneous part** (``part == 2``, like BP4D-Spontaneous): every identity gets an equal
  share of the remaining frames, cut into sequences of at most ``sequence_length`` frames of
  random expression mixtures (``emotion == -1``; the builder draws the mixture). The very first
  spontaneous frame of each identity is a neutral face labeled neutral (BP4D's one manually
  labeled neutral frame per subject): ``emotion == 0``, ``intensity == 0``.

Labeled fraction: ``(7 * static_ids + 3 * posed_sequences + identities) / samples``. At the
defaults (300 identities, 30,000 samples): 700 + 3 * 366 + 300 = 2,098 labeled = 7.0%. With
100 samples per identity it stays at ~7% for any number of identities (20 identities, 2,000
samples: 7.05%); it rises when there are few samples per identity (the per-identity neutral
label and the static peaks dominate: 12 identities, 600 samples: ~10%) and falls towards
``3 * posed_share / sequence_length`` (3.75%) when there are many.

Convention:
    * Emotion indices are ``fitface.data.emotions.EMOTIONS`` indices; ``-1`` = spontaneous
      mixture (``emotion``) or unlabeled (``expression_label``).
    * ``intensity`` is in [0, 1]. A sample with intensity 0 must be built as the identity's
      exact neutral face (builders: scale every expression term, jitter included, by the
      intensity), so that neutral-labeled sequence ends really are neutral.
    * Posed sequences follow a raised-cosine curve: ``0.5 * (1 - cos(pi * t / k))`` up to the
      peak frame ``k`` and ``0.5 * (1 + cos(pi * (t - k) / (n - 1 - k)))`` after it, times the
      sequence's peak intensity; zero at the first and last frames, smooth (zero slope) at the
      peak; the peak frame ``k`` is drawn uniformly from the middle third of the sequence
      (strictly inside it). Static peaks and sequence peaks draw their intensity from ``peak_intensity``
      (default U(0.75, 1)); spontaneous frames from ``spontaneous_intensity`` (U(0.3, 1)).
    * Samples are ordered by identity (ascending); within an identity: static, posed,
      spontaneous; within a sequence by frame. So one identity's samples are one contiguous
      block (builders can set up per-identity work once and write that block).
    * ``sequence`` ids are unique over the whole plan (0, 1, ... in sample order), ``-1`` for
      static samples; ``frame`` counts from 0 within its sequence (0 for static samples).
    * Deterministic: the same arguments and the same ``rng`` state give the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fitface.data.emotions import EMOTIONS, NEUTRAL
from fitface.errors import InputError

#: Part codes of :attr:`SamplePlan.part`.
STATIC, POSED, SPONTANEOUS = 0, 1, 2
PART_NAMES = ("static", "posed", "spontaneous")

#: Emotion code of a spontaneous random mixture in :attr:`SamplePlan.emotion`.
MIXTURE = -1

#: Default options of :func:`plan_samples` (see the module docstring).
DEFAULT_STATIC_IDENTITY_FRACTION = 1.0 / 3.0
DEFAULT_POSED_SHARE = 0.5
DEFAULT_SEQUENCE_LENGTH = 40
DEFAULT_PEAK_INTENSITY = (0.75, 1.0)
DEFAULT_SPONTANEOUS_INTENSITY = (0.3, 1.0)

#: Shortest posed sequence: first (neutral), peak and last (neutral) frames must differ.
MIN_POSED_LENGTH = 3


@dataclass(frozen=True)
class SamplePlan:
    """What every sample of a dataset is; one row per sample (N rows).

    Attributes:
        identity: (N,) int64, identity index in [0, num_identities).
        emotion: (N,) int64, generating emotion index into ``EMOTIONS``; -1 = spontaneous mixture.
        intensity: (N,) float32 in [0, 1], the emotion's (or mixture's) intensity at this frame.
        expression_label: (N,) int64, emotion index if this sample is labeled, else -1.
        part: (N,) int8, 0 static, 1 posed sequence, 2 spontaneous.
        sequence: (N,) int64, sequence id, -1 for static samples.
        frame: (N,) int64, frame index within its sequence (0 for static samples).
        peak: (N,) bool, True at the peak frame of a posed sequence and at static peaks.
        num_identities: the number of identities planned for.
    """

    identity: np.ndarray
    emotion: np.ndarray
    intensity: np.ndarray
    expression_label: np.ndarray
    part: np.ndarray
    sequence: np.ndarray
    frame: np.ndarray
    peak: np.ndarray
    num_identities: int

    def __len__(self) -> int:
        return len(self.identity)

    @property
    def labeled_fraction(self) -> float:
        """Fraction of samples carrying an expression label."""
        return float((self.expression_label >= 0).mean()) if len(self) else 0.0

    def identity_blocks(self) -> list[tuple[int, int, int]]:
        """``[(identity, start, stop), ...]``: each identity's contiguous block of samples."""
        starts = np.searchsorted(self.identity, np.arange(self.num_identities), side="left")
        stops = np.searchsorted(self.identity, np.arange(self.num_identities), side="right")
        return [(i, int(a), int(b)) for i, (a, b) in enumerate(zip(starts, stops)) if b > a]

    def extras(self) -> dict[str, np.ndarray]:
        """Per-sample extras for ``DatasetWriter.finish(extras=...)``: sequence, frame, part,
        intensity, emotion (the generating emotion, -1 for mixtures)."""
        return {
            "sequence": self.sequence,
            "frame": self.frame,
            "part": self.part,
            "intensity": self.intensity,
            "emotion": self.emotion,
        }


def _raised_cosine(n: int, k: int) -> np.ndarray:
    """(n,) float64 curve 0 -> 1 (at frame k) -> 0 with zero slope at both ends and at the peak."""
    t = np.arange(n, dtype=np.float64)
    up = 0.5 * (1.0 - np.cos(np.pi * t / max(k, 1)))
    down = 0.5 * (1.0 + np.cos(np.pi * (t - k) / max(n - 1 - k, 1)))
    return np.where(t <= k, up, down)


def _even_split(total: int, parts: int) -> np.ndarray:
    """(parts,) int64 sizes summing to ``total``, differing by at most one (larger first)."""
    sizes = np.full(parts, total // parts, dtype=np.int64)
    sizes[: total % parts] += 1
    return sizes


def plan_samples(
    num_identities: int,
    num_samples: int,
    rng: np.random.Generator,
    *,
    static_identity_fraction: float = DEFAULT_STATIC_IDENTITY_FRACTION,
    posed_share: float = DEFAULT_POSED_SHARE,
    sequence_length: int = DEFAULT_SEQUENCE_LENGTH,
    peak_intensity: tuple[float, float] = DEFAULT_PEAK_INTENSITY,
    spontaneous_intensity: tuple[float, float] = DEFAULT_SPONTANEOUS_INTENSITY,
) -> SamplePlan:
    """Plan ``num_samples`` samples over ``num_identities`` identities (see the module docstring).

    Args:
        num_identities: I >= 1.
        num_samples: N >= I (every identity gets at least its labeled neutral frame).
        rng: the only source of randomness.
        static_identity_fraction: fraction of identities with a static scan per emotion, in [0, 1].
            Reduced automatically when the budget cannot hold them.
        posed_share: fraction of the motion frames (all but static) in posed sequences, in [0, 1].
        sequence_length: target frames per posed sequence and maximum per spontaneous sequence, >= 3.
        peak_intensity: (low, high) range of the uniform peak intensity, within [0, 1].
        spontaneous_intensity: (low, high) range of the spontaneous frames' intensity, within [0, 1].

    Returns:
        A :class:`SamplePlan` with N rows, grouped by identity.

    Raises:
        ValueError: on a bad count or option, naming it.
    """
    num_identities, num_samples = int(num_identities), int(num_samples)
    if num_identities < 1:
        raise ValueError(f"num_identities: must be at least 1, got {num_identities}")
    if num_samples < num_identities:
        raise ValueError(
            f"num_samples: must be at least num_identities ({num_identities}), got {num_samples}"
        )
    if not 0.0 <= static_identity_fraction <= 1.0:
        raise ValueError(f"static_identity_fraction: must be in [0, 1], got {static_identity_fraction}")
    if not 0.0 <= posed_share <= 1.0:
        raise ValueError(f"posed_share: must be in [0, 1], got {posed_share}")
    if int(sequence_length) < MIN_POSED_LENGTH:
        raise ValueError(f"sequence_length: must be at least {MIN_POSED_LENGTH}, got {sequence_length}")
    sequence_length = int(sequence_length)
    for name, (lo, hi) in (("peak_intensity", peak_intensity), ("spontaneous_intensity", spontaneous_intensity)):
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"{name}: expected 0 <= low <= high <= 1, got ({lo}, {hi})")

    num_emotions = len(EMOTIONS)
    posed_emotions = np.array([e for e in range(num_emotions) if e != NEUTRAL], dtype=np.int64)

    # --- budget ------------------------------------------------------------------------
    # every identity keeps >= 1 spontaneous frame (its labeled neutral)
    num_static_ids = round(static_identity_fraction * num_identities)
    num_static_ids = min(num_static_ids, (num_samples - num_identities) // num_emotions)
    motion = num_samples - num_emotions * num_static_ids
    posed_frames = min(round(posed_share * motion), motion - num_identities)
    num_seq = min(round(posed_frames / sequence_length), posed_frames // MIN_POSED_LENGTH)
    if num_seq == 0:
        posed_frames = 0
    spont_frames = motion - posed_frames  # >= num_identities

    # --- who gets what --------------------------------------------------------------------
    order = rng.permutation(num_identities)
    static_ids = np.zeros(num_identities, dtype=bool)
    static_ids[order[:num_static_ids]] = True
    # posed sequences dealt round-robin over a random identity order; each identity cycles
    # through the six emotions starting at a random one (like BU-4DFE's 6 sequences/subject)
    deal = rng.permutation(num_identities)
    seq_identity = deal[np.arange(num_seq) % num_identities]  # (num_seq,)
    seq_round = np.arange(num_seq) // num_identities
    first_emotion = rng.integers(0, len(posed_emotions), size=num_identities)
    seq_emotion = posed_emotions[(first_emotion[seq_identity] + seq_round) % len(posed_emotions)]
    seq_length = rng.permutation(_even_split(posed_frames, num_seq)) if num_seq else np.zeros(0, np.int64)
    seq_peak_intensity = rng.uniform(*peak_intensity, size=num_seq)
    # spontaneous frames: an even share per identity, the remainder to a random subset
    spont_per_id = np.full(num_identities, spont_frames // num_identities, dtype=np.int64)
    spont_per_id[rng.permutation(num_identities)[: spont_frames % num_identities]] += 1

    # --- rows, identity by identity ---------------------------------------------------------
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("identity", "emotion", "intensity", "label", "part", "seq", "frame", "peak")}

    def emit(identity, emotion, intensity, label, part, seq, frame, peak):
        n = len(frame)
        cols["identity"].append(np.full(n, identity, dtype=np.int64))
        cols["emotion"].append(np.broadcast_to(np.asarray(emotion, dtype=np.int64), (n,)))
        cols["intensity"].append(np.asarray(intensity, dtype=np.float64))
        cols["label"].append(np.asarray(label, dtype=np.int64))
        cols["part"].append(np.full(n, part, dtype=np.int8))
        cols["seq"].append(np.asarray(seq, dtype=np.int64))
        cols["frame"].append(np.asarray(frame, dtype=np.int64))
        cols["peak"].append(np.asarray(peak, dtype=bool))

    seq_by_identity = [np.flatnonzero(seq_identity == i) for i in range(num_identities)]
    next_seq = 0
    for i in range(num_identities):
        if static_ids[i]:
            emotions = np.arange(num_emotions, dtype=np.int64)
            level = rng.uniform(*peak_intensity, size=num_emotions)
            level[emotions == NEUTRAL] = 0.0
            emit(i, emotions, level, emotions, STATIC, np.full(num_emotions, -1), np.zeros(num_emotions), np.ones(num_emotions, bool))
        for s in seq_by_identity[i]:
            n = int(seq_length[s])
            k = int(rng.integers(max(1, n // 3), n - max(1, n // 3)))  # peak in the middle third
            label = np.full(n, -1, dtype=np.int64)
            label[[0, n - 1]] = NEUTRAL
            label[k] = seq_emotion[s]
            emit(i, seq_emotion[s], seq_peak_intensity[s] * _raised_cosine(n, k), label, POSED,
                 np.full(n, next_seq), np.arange(n), np.arange(n) == k)
            next_seq += 1
        m = int(spont_per_id[i])
        for j, n in enumerate(_even_split(m, -(-m // sequence_length))):
            n = int(n)
            emotion = np.full(n, MIXTURE, dtype=np.int64)
            level = rng.uniform(*spontaneous_intensity, size=n)
            label = np.full(n, -1, dtype=np.int64)
            if j == 0:  # the identity's one labeled neutral frame
                emotion[0], level[0], label[0] = NEUTRAL, 0.0, NEUTRAL
            emit(i, emotion, level, label, SPONTANEOUS, np.full(n, next_seq), np.arange(n), np.zeros(n, bool))
            next_seq += 1

    cat = {k: np.concatenate(v) for k, v in cols.items()}
    return SamplePlan(
        identity=cat["identity"],
        emotion=cat["emotion"].astype(np.int64),
        intensity=np.clip(cat["intensity"], 0.0, 1.0).astype(np.float32),
        expression_label=cat["label"],
        part=cat["part"],
        sequence=cat["seq"],
        frame=cat["frame"],
        peak=cat["peak"],
        num_identities=num_identities,
    )


#: Split names, in the order of ``fractions``.
SPLITS = ("train", "val", "test")


def split_by_identity(
    num_identities: int, rng: np.random.Generator, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> np.ndarray:
    """Assign each identity to "train", "val" or "test" (all samples of an identity share a split).

    Counts are the fractions times ``num_identities`` rounded by largest remainder; every split
    with a positive fraction gets at least one identity when there are enough identities.

    Args:
        num_identities: I >= 1.
        rng: the only source of randomness.
        fractions: (train, val, test), non-negative, summing to 1.

    Returns:
        (I,) str array (dtype ``<U5``) of split names; index with ``plan.identity`` to get
        the per-sample split.
    """
    num_identities = int(num_identities)
    if num_identities < 1:
        raise ValueError(f"num_identities: must be at least 1, got {num_identities}")
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or (f < 0).any() or abs(f.sum() - 1.0) > 1e-6:
        raise ValueError(f"fractions: expected three non-negative numbers summing to 1, got {tuple(fractions)}")
    exact = f * num_identities
    counts = np.floor(exact).astype(np.int64)
    rest = num_identities - counts.sum()
    counts[np.argsort(-(exact - counts), kind="stable")[:rest]] += 1
    # every split with a positive fraction gets one identity, taken from the largest
    for s in np.flatnonzero((f > 0) & (counts == 0)):
        donor = int(np.argmax(counts))
        if counts[donor] > 1:
            counts[donor] -= 1
            counts[s] += 1
    names = np.repeat(np.array(SPLITS), counts)
    return names[rng.permutation(num_identities)]


def check_build_sizes(identities: int, samples: int, seed: int) -> None:
    """Validate a dataset builder's sizes and seed (``--identities``, ``--samples``, ``--seed``).

    Raises:
        InputError: naming the option and the problem.
    """
    if identities < 1:
        raise InputError(f"--identities: must be at least 1, got {identities}")
    if samples < identities:
        raise InputError(f"--samples: must be at least --identities ({identities}), got {samples}")
    if seed < 0:
        raise InputError(f"--seed: must be non-negative, got {seed}")
