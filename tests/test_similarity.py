"""Umeyama solver and the Similarity batch (fitface.fitting.similarity)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from fitface.fitting.similarity import Similarity, umeyama


def random_similarity(b: int, seed: int) -> Similarity:
    rng = np.random.default_rng(seed)
    return Similarity(10 ** rng.uniform(-3, 1, b), Rotation.random(b, random_state=seed).as_matrix(),
                      rng.normal(size=(b, 3)) * 50)


@pytest.mark.parametrize("with_scale", [True, False])
def test_recovers_random_similarity_exactly(with_scale):
    rng = np.random.default_rng(0)
    src = rng.normal(size=(6, 20, 3)) * 40
    true = random_similarity(6, 1)
    if not with_scale:
        true = Similarity(np.ones(6), true.rotation, true.translation)
    got = umeyama(src, true.apply(src), scale=with_scale)
    np.testing.assert_allclose(got.rotation, true.rotation, atol=1e-12)
    np.testing.assert_allclose(got.scale, true.scale, rtol=1e-12)
    np.testing.assert_allclose(got.translation, true.translation, atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(got.rotation), 1.0, atol=1e-12)


def test_weights_and_mask_ignore_points():
    rng = np.random.default_rng(2)
    src = rng.normal(size=(2, 15, 3))
    true = random_similarity(2, 3)
    dst = true.apply(src)
    dst[:, :4] = np.nan  # masked out: may be NaN
    dst[:, 4:6] += 100.0  # zero weight: ignored
    w = np.ones((2, 15))
    w[:, :6] = 0
    got = umeyama(src, dst, weights=w)
    np.testing.assert_allclose(got.matrix(), true.matrix(), atol=1e-9)
    got_b = umeyama(src, dst, weights=w > 0)  # a boolean mask works the same
    np.testing.assert_allclose(got_b.matrix(), got.matrix(), atol=1e-12)


def test_reflection_yields_proper_rotation():
    rng = np.random.default_rng(4)
    src = rng.normal(size=(30, 3))
    mirrored = src * [-1.0, 1.0, 1.0]  # the best orthogonal map is a reflection
    t = umeyama(src, mirrored)
    assert np.linalg.det(t.rotation[0]) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(t.rotation[0] @ t.rotation[0].T, np.eye(3), atol=1e-12)
    assert np.abs(t.apply(src[None])[0] - mirrored).max() > 0.1  # a mirror cannot be fitted


def test_planar_points_are_fine():
    rng = np.random.default_rng(5)
    src = np.column_stack([rng.normal(size=(10, 2)), np.zeros(10)])
    true = random_similarity(1, 6)
    got = umeyama(src, true.apply(src[None])[0])
    np.testing.assert_allclose(got.matrix(), true.matrix(), atol=1e-9)


@pytest.mark.parametrize("case", ["equal", "collinear", "too_few"])
def test_degenerate_input_raises(case):
    if case == "equal":
        src = np.ones((10, 3))
    elif case == "collinear":
        src = np.outer(np.linspace(0, 1, 10), [1.0, 2.0, 3.0]) + 5.0
    else:
        src = np.random.default_rng(0).normal(size=(2, 3))
    dst = np.random.default_rng(1).normal(size=src.shape)
    with pytest.raises(ValueError, match="collinear|all equal|at least 3"):
        umeyama(src, dst)
    with pytest.raises(ValueError, match="dst points are"):  # degenerate target, fine source
        umeyama(dst if case != "too_few" else np.eye(3), np.ones((len(src) if case != "too_few" else 3, 3)))


def test_inverse_compose_apply():
    a, b = random_similarity(4, 7), random_similarity(4, 8)
    p = np.random.default_rng(9).normal(size=(4, 11, 3))
    np.testing.assert_allclose(a.inverse().apply(a.apply(p)), p, atol=1e-9)
    np.testing.assert_allclose(a.compose(b).apply(p), a.apply(b.apply(p)), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(a.compose(a.inverse()).matrix(), np.broadcast_to(np.eye(4), (4, 4, 4)), atol=1e-9)
    # homogeneous matrices agree with apply
    ph = np.concatenate([p, np.ones((4, 11, 1))], axis=2)
    np.testing.assert_allclose(np.einsum("bij,blj->bli", a.matrix(), ph)[..., :3], a.apply(p), atol=1e-9)


def test_json_round_trip_is_exact():
    a = random_similarity(3, 10)
    obj = json.loads(json.dumps(a.to_json(1)))
    back = Similarity.from_json(obj)
    np.testing.assert_array_equal(back.matrix()[0], a.matrix()[1])
    with pytest.raises(ValueError, match="scale"):
        Similarity.from_json({**obj, "scale": -1.0})
    with pytest.raises(ValueError, match="malformed"):
        Similarity.from_json({"scale": 1.0})
