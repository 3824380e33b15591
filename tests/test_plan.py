"""The shared sampling plan: counts, labeled fraction, determinism, label placement."""

from __future__ import annotations

import numpy as np
import pytest

from fitface.data.emotions import EMOTIONS, NEUTRAL
from fitface.data.plan import (
    MIXTURE,
    POSED,
    SPONTANEOUS,
    STATIC,
    plan_samples,
    split_by_identity,
)

#: The paper's expression-labeled fraction (§5.2) and the band the plan must keep around it.
PAPER_LABELED_FRACTION = 0.07
DEFAULT_BAND = (0.065, 0.075)  # at 100 samples per identity
SMALL_BAND = (0.05, 0.12)  # few samples per identity: per-identity labels weigh more


def _plan(identities, samples, seed=0, **kw):
    return plan_samples(identities, samples, np.random.default_rng(seed), **kw)


@pytest.mark.parametrize("identities,samples", [(300, 30000), (20, 2000), (12, 600), (7, 50), (1, 1)])
def test_counts_and_every_identity_present(identities, samples):
    p = _plan(identities, samples)
    assert len(p) == samples
    for name in ("identity", "emotion", "intensity", "expression_label", "part", "sequence", "frame", "peak"):
        assert getattr(p, name).shape == (samples,), name
    assert p.identity.dtype == np.int64 and p.part.dtype == np.int8 and p.intensity.dtype == np.float32
    assert set(np.unique(p.identity)) == set(range(identities))
    assert np.all(np.diff(p.identity) >= 0)  # grouped by identity
    assert p.intensity.min() >= 0 and p.intensity.max() <= 1
    assert set(np.unique(p.emotion)) <= set(range(-1, len(EMOTIONS)))
    assert set(np.unique(p.expression_label)) <= set(range(-1, len(EMOTIONS)))
    blocks = p.identity_blocks()
    assert len(blocks) == identities and blocks[-1][2] == samples


def test_labeled_fraction_near_paper_at_defaults():
    p = _plan(300, 30000)
    assert DEFAULT_BAND[0] <= p.labeled_fraction <= DEFAULT_BAND[1]
    assert abs(p.labeled_fraction - PAPER_LABELED_FRACTION) < 0.002
    # all three parts are present and motion dominates, as in the paper's data
    counts = np.bincount(p.part, minlength=3)
    assert counts[STATIC] == 7 * 100
    assert counts[POSED] > 0.4 * 30000 and counts[SPONTANEOUS] > 0.4 * 30000


@pytest.mark.parametrize("identities,samples", [(20, 2000), (12, 600), (100, 5000)])
def test_labeled_fraction_in_band_for_small_sets(identities, samples):
    p = _plan(identities, samples)
    assert SMALL_BAND[0] <= p.labeled_fraction <= SMALL_BAND[1]


def test_deterministic_for_a_seed():
    a, b, c = _plan(20, 2000, seed=3), _plan(20, 2000, seed=3), _plan(20, 2000, seed=4)
    for name in ("identity", "emotion", "intensity", "expression_label", "part", "sequence", "frame"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not all(np.array_equal(getattr(a, n), getattr(c, n)) for n in ("emotion", "intensity", "part"))


def test_static_samples_fully_labeled_peaks():
    p = _plan(30, 3000)
    s = p.part == STATIC
    assert s.any()
    np.testing.assert_array_equal(p.expression_label[s], p.emotion[s])
    assert np.all(p.sequence[s] == -1) and np.all(p.frame[s] == 0)
    for i in np.unique(p.identity[s]):  # each static identity has every emotion once
        assert sorted(p.emotion[s & (p.identity == i)]) == list(range(len(EMOTIONS)))
    assert np.all(p.intensity[s & (p.emotion == NEUTRAL)] == 0)
    assert np.all(p.intensity[s & (p.emotion != NEUTRAL)] >= 0.75)


def test_posed_labels_only_at_first_last_and_peak():
    p = _plan(20, 2000)
    posed = p.part == POSED
    seqs = np.unique(p.sequence[posed])
    assert len(seqs) > 0
    for q in seqs:
        rows = np.flatnonzero(p.sequence == q)
        n = len(rows)
        assert n >= 3
        np.testing.assert_array_equal(p.frame[rows], np.arange(n))
        assert len(np.unique(p.identity[rows])) == 1 and len(np.unique(p.emotion[rows])) == 1
        emotion = p.emotion[rows[0]]
        assert emotion not in (NEUTRAL, MIXTURE)
        k = int(np.argmax(p.intensity[rows]))
        assert 0 < k < n - 1 and p.peak[rows[k]] and p.peak[rows].sum() == 1
        expected = np.full(n, -1)
        expected[[0, n - 1]] = NEUTRAL
        expected[k] = emotion
        np.testing.assert_array_equal(p.expression_label[rows], expected)
        # neutral -> peak -> neutral, smoothly
        curve = p.intensity[rows].astype(np.float64)
        assert curve[0] == 0 and curve[-1] == 0
        assert np.all(np.diff(curve[: k + 1]) >= 0) and np.all(np.diff(curve[k:]) <= 0)
        assert np.abs(np.diff(curve)).max() < 0.5


def test_spontaneous_one_neutral_label_per_identity():
    p = _plan(20, 2000)
    sp = p.part == SPONTANEOUS
    labeled = sp & (p.expression_label >= 0)
    assert sorted(p.identity[labeled]) == list(range(20))
    assert np.all(p.expression_label[labeled] == NEUTRAL)
    assert np.all(p.intensity[labeled] == 0) and np.all(p.emotion[labeled] == NEUTRAL)
    assert np.all(p.emotion[sp & ~labeled] == MIXTURE)


@pytest.mark.parametrize(
    "args,kw,name",
    [((0, 10), {}, "num_identities"), ((10, 5), {}, "num_samples"), ((5, 50), {"posed_share": 1.5}, "posed_share"),
     ((5, 50), {"sequence_length": 2}, "sequence_length"), ((5, 50), {"peak_intensity": (0.9, 0.1)}, "peak_intensity")],
)
def test_bad_arguments(args, kw, name):
    with pytest.raises(ValueError, match=name):
        _plan(*args, **kw)


def test_split_by_identity():
    s = split_by_identity(300, np.random.default_rng(0))
    assert s.shape == (300,)
    assert {k: int((s == k).sum()) for k in ("train", "val", "test")} == {"train": 240, "val": 30, "test": 30}
    np.testing.assert_array_equal(s, split_by_identity(300, np.random.default_rng(0)))
    small = split_by_identity(4, np.random.default_rng(1))
    assert set(small) == {"train", "val", "test"}
    assert list(split_by_identity(5, np.random.default_rng(0), (1.0, 0.0, 0.0))) == ["train"] * 5
    with pytest.raises(ValueError, match="fractions"):
        split_by_identity(5, np.random.default_rng(0), (0.5, 0.2, 0.2))
