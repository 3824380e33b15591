"""ARKit-52 weights and the Live Link Face CSV (fitface.arkit)."""

from __future__ import annotations

import numpy as np
import pytest

from fitface.arkit import (
    ARKIT_NAMES,
    LIVE_LINK_COLUMNS,
    POSE_COLUMNS,
    arkit_deltas,
    arkit_matrix,
    head_angles,
    ict_to_arkit_name,
    live_link_csv,
    solve_weights,
    timecodes,
    to_arkit,
    write_live_link_csv,
)


def test_names_and_columns():
    assert len(ARKIT_NAMES) == 52 and len(set(ARKIT_NAMES)) == 52
    assert ARKIT_NAMES[0] == "eyeBlinkLeft" and ARKIT_NAMES[-1] == "tongueOut"
    assert LIVE_LINK_COLUMNS[:3] == ("Timecode", "BlendShapeCount", "EyeBlinkLeft")
    assert len(LIVE_LINK_COLUMNS) == 2 + 52 + 9 and LIVE_LINK_COLUMNS[-9:] == POSE_COLUMNS
    assert POSE_COLUMNS[:4] == ("HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw")
    assert "JawRight,JawLeft,JawOpen" in ",".join(LIVE_LINK_COLUMNS)  # Live Link Face's own order


def test_ict_renaming():
    assert ict_to_arkit_name("eyeBlink_L") == "eyeBlinkLeft"
    assert ict_to_arkit_name("mouthSmile_R") == "mouthSmileRight"
    assert ict_to_arkit_name("jawOpen") == "jawOpen"


@pytest.fixture(scope="module")
def ict(ict_path):
    from fitface.data.ict import load_ict

    return load_ict(ict_path)


def test_ict_names_cover_arkit(ict):
    renamed = {ict_to_arkit_name(n) for n in ict.expression_names}
    missing = [n for n in ARKIT_NAMES if n not in renamed]
    assert missing == ["browInnerUp", "cheekPuff", "tongueOut"]  # 49 of the 52 by name
    m = arkit_matrix(ict.expression_names)
    assert m.shape == (52, 55)
    assert m[ARKIT_NAMES.index("tongueOut")].sum() == 0
    row = m[ARKIT_NAMES.index("browInnerUp")]
    assert sorted(row[row > 0]) == [0.5, 0.5]
    cheek_raiser = [k for k, n in enumerate(ict.expression_names) if n.startswith("cheekRaiser")]
    assert len(cheek_raiser) == 2 and not m[:, cheek_raiser].any()


def test_split_pair_merge_is_the_mean():
    names = ["browInnerUp_L", "browInnerUp_R", "cheekPuff_L", "cheekPuff_R", "jawOpen", "cheekRaiser_L"]
    w = np.array([[0.2, 0.6, 1.0, 0.0, 0.7, 0.9]])
    a = to_arkit(w, names)
    assert a.shape == (1, 52)
    assert a[0, ARKIT_NAMES.index("browInnerUp")] == pytest.approx(0.4)
    assert a[0, ARKIT_NAMES.index("cheekPuff")] == pytest.approx(0.5)
    assert a[0, ARKIT_NAMES.index("jawOpen")] == pytest.approx(0.7)
    assert a[0, ARKIT_NAMES.index("tongueOut")] == 0
    assert a.sum() == pytest.approx(0.4 + 0.5 + 0.7)  # cheekRaiser is no ARKit shape
    # the ARKit deltas: a pair's two halves summed, so equal halves re-synthesise exactly
    d = np.random.default_rng(0).normal(size=(6, 10, 3))
    ad = arkit_deltas(d, names)
    np.testing.assert_allclose(ad[ARKIT_NAMES.index("browInnerUp")], d[0] + d[1])
    assert not ad[ARKIT_NAMES.index("tongueOut")].any()
    sym = np.array([[0.3, 0.3, 0.8, 0.8, 0.5, 0.0]])
    np.testing.assert_allclose(np.tensordot(to_arkit(sym, names), ad, axes=1), np.tensordot(sym, d, axes=1),
                               atol=1e-12)


@pytest.fixture(scope="module")
def identity_deltas(ict):
    """(55, 9409, 3) mm ICT deltas transferred onto a fresh random identity."""
    from fitface.data.ict import ExpressionTransfer

    et = ExpressionTransfer(ict)
    neutral = et.neutral_of(np.random.default_rng(7).standard_normal(len(ict.identity_modes)))
    return et.deltas(neutral)


def test_solve_recovers_known_weights(identity_deltas):
    rng = np.random.default_rng(3)
    k = len(identity_deltas)
    w = np.zeros((6, k))
    for t in range(6):
        idx = rng.choice(k, size=5, replace=False)
        w[t, idx] = rng.uniform(0.1, 1.0, size=5)
    w[0] = 0.0  # the neutral face
    w[1, 0] = 1.0  # a weight at the bound
    disp = np.tensordot(w, identity_deltas, axes=1)
    res = solve_weights(identity_deltas, disp)
    assert res.weights.shape == (6, k)
    np.testing.assert_allclose(res.weights, w, atol=1e-6)
    assert res.residual_rms.max() < 1e-6 and res.displacement_rms[0] == 0
    assert res.displacement_rms[1:].min() > 0.1


def test_solve_respects_bounds(identity_deltas):
    d = identity_deltas
    jaw = 28  # jawOpen
    disp = np.stack([1.7 * d[jaw], -0.8 * d[jaw]])
    res = solve_weights(d, disp)
    assert res.weights.min() >= 0 and res.weights.max() <= 1
    assert res.weights[0, jaw] == pytest.approx(1.0, abs=1e-6)
    assert res.weights[1, jaw] == pytest.approx(0.0, abs=1e-6)
    assert res.residual_rms[0] > 0  # what [0, 1] cannot explain


def test_solve_checks_shapes():
    with pytest.raises(ValueError):
        solve_weights(np.zeros((2, 5, 3)), np.zeros((1, 4, 3)))
    with pytest.raises(ValueError):
        solve_weights(np.ones((2, 5, 3)), np.full((5, 3), np.nan))
    with pytest.raises(ValueError):
        solve_weights(np.ones((2, 5, 3)), np.zeros((5, 3)), lower=1, upper=0)


def test_timecodes_at_the_fps():
    assert timecodes(np.arange(4) / 30.0, 30) == ["00:00:00:00.000", "00:00:00:01.000", "00:00:00:02.000",
                                                  "00:00:00:03.000"]
    assert timecodes(np.array([1.0, 61.5, 3661.04]), 25) == ["00:00:01:00.000", "00:01:01:12.500",
                                                            "01:01:01:01.000"]
    with pytest.raises(ValueError):
        timecodes(np.zeros(1), 0)


def test_head_angles():
    from scipy.spatial.transform import Rotation

    r = Rotation.from_euler("YXZ", [[0.3, -0.2, 0.1], [0.0, 0.0, 0.0]]).as_matrix()
    np.testing.assert_allclose(head_angles(r), [[0.3, -0.2, 0.1], [0, 0, 0]], atol=1e-12)


def test_live_link_csv(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.uniform(0, 1, (7, 52))
    w[:, ARKIT_NAMES.index("tongueOut")] = 0
    rot = np.repeat(np.eye(3)[None], 7, axis=0)
    path = tmp_path / "take.csv"
    write_live_link_csv(path, w, np.arange(7) / 60.0, 60.0, rot)
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(LIVE_LINK_COLUMNS)
    assert len(lines) == 1 + 7
    rows = [r.split(",") for r in lines[1:]]
    assert all(len(r) == 63 for r in rows)
    assert [r[0] for r in rows[:3]] == ["00:00:00:00.000", "00:00:00:01.000", "00:00:00:02.000"]
    assert all(r[1] == "61" for r in rows)
    np.testing.assert_allclose(np.array([[float(x) for x in r[2:54]] for r in rows]), w, atol=1e-6)
    assert all(float(x) == 0 for r in rows for x in r[54:])
    with pytest.raises(ValueError):
        live_link_csv(w * 2, np.arange(7) / 60.0, 60.0)
    with pytest.raises(ValueError):
        live_link_csv(w[:, :51], np.arange(7) / 60.0, 60.0)
