"""The procedural face space: template topology and quality, landmarks, identity and expression maps."""

from __future__ import annotations

import numpy as np
import pytest

from fitface.data.emotions import EMOTIONS
from fitface.data.procedural import (
    ACTION_NAMES,
    IDENTITY_PARAM_NAMES,
    NUM_ACTIONS,
    NUM_IDENTITY_PARAMS,
    apply_actions,
    jaw_pivot,
    neutral_faces,
    recipe_matrix,
    template_mesh,
    template_vertices,
)
from fitface.geometry.topology import boundary_loops, check_disk_like

#: Smallest interior angle allowed in the template (3D, degrees) and in random identities.
MIN_ANGLE_TEMPLATE_DEG = 18.0
MIN_ANGLE_IDENTITY_DEG = 12.0


def min_angles(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """(F,) smallest interior angle (degrees) of each triangle of (V, 3) vertices."""
    p = v[f]
    out = []
    for k in range(3):
        e1, e2 = p[:, (k + 1) % 3] - p[:, k], p[:, (k + 2) % 3] - p[:, k]
        c = (e1 * e2).sum(-1) / (np.linalg.norm(e1, axis=-1) * np.linalg.norm(e2, axis=-1))
        out.append(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))
    return np.min(out, axis=0)


@pytest.fixture(scope="module")
def tm():
    return template_mesh()


@pytest.fixture(scope="module")
def random_params():
    return np.random.default_rng(11).standard_normal((4, NUM_IDENTITY_PARAMS))


def test_template_is_a_disk_with_three_holes(tm):
    v = template_vertices()
    assert 3000 <= len(v) <= 6000
    topo = check_disk_like(tm.faces, len(v), what="template")
    assert topo.boundary_loops == 4 and topo.euler == 2 - 4 and topo.components == 1
    loops = sorted(boundary_loops(tm.faces), key=len)
    assert sorted(map(len, loops)) == sorted([len(tm.outer_rim), len(tm.eye_rims[0]), len(tm.eye_rims[1]), len(tm.mouth_rim)])
    assert set(loops[-1]) == set(tm.outer_rim.tolist())  # the outer loop is the longest
    # holes where they belong: eyes left/right above the mouth
    assert v[tm.eye_rims[0], 0].max() < 0 < v[tm.eye_rims[1], 0].min()
    assert v[tm.mouth_rim, 1].max() < min(v[tm.eye_rims[0], 1].min(), v[tm.eye_rims[1], 1].min())


def test_template_size_orientation_and_quality(tm):
    v = template_vertices()
    width, height = np.ptp(v[:, 0]), np.ptp(v[:, 1])
    assert 140.0 <= width <= 160.0 and 160.0 <= height <= 210.0
    n = np.cross(v[tm.faces[:, 1]] - v[tm.faces[:, 0]], v[tm.faces[:, 2]] - v[tm.faces[:, 0]])
    assert n[:, 2].sum() > 0.5 * np.linalg.norm(n, axis=1).sum()  # faces the viewer (+z)
    assert min_angles(v, tm.faces).min() >= MIN_ANGLE_TEMPLATE_DEG
    assert np.array_equal(v, neutral_faces(np.zeros(NUM_IDENTITY_PARAMS))[0])


def test_random_identities_are_well_shaped_and_distinct(tm, random_params):
    faces = neutral_faces(random_params)
    assert faces.shape == (4, tm.num_vertices, 3) and np.isfinite(faces).all()
    for v in faces:
        assert min_angles(v, tm.faces).min() >= MIN_ANGLE_IDENTITY_DEG
        assert 120.0 <= np.ptp(v[:, 0]) <= 180.0
    # different people differ by millimetres, not by rounding
    assert np.abs(faces[0] - faces[1]).max() > 3.0


def test_harmonic_uv_has_no_flips(tm, random_params):
    from fitface.geometry.parameterization import harmonic_uv

    for v in [template_vertices(), *neutral_faces(random_params[:2])]:
        assert harmonic_uv(v, tm.faces, what="template").flipped == 0


def test_identity_map_is_deterministic_smooth_and_nonlinear(random_params):
    p = random_params[:1]
    a, b = neutral_faces(p), neutral_faces(p.copy())
    assert np.array_equal(a, b)
    base = neutral_faces(np.zeros((1, NUM_IDENTITY_PARAMS)))
    # smooth: a tiny parameter change gives a tiny, proportional change
    d1 = neutral_faces(p * (1 + 1e-6)) - a
    assert np.abs(d1).max() < 1e-3
    # non-linear: f(2p) - f(0) is not 2 (f(p) - f(0))
    lin = 2 * (a - base) - (neutral_faces(2 * p) - base)
    assert np.abs(lin).max() > 1.0
    assert len(IDENTITY_PARAM_NAMES) == NUM_IDENTITY_PARAMS


def test_ibug68_landmarks_on_the_surface_and_in_order(tm):
    lm = tm.landmark_sets["ibug68"]
    v = template_vertices()
    assert len(lm) == 68
    assert (lm.bary >= 0).all() and np.allclose(lm.bary.sum(1), 1.0, atol=1e-12)
    pts = lm.points(v, tm.faces)  # (68, 3)
    # on the surface: each point is inside its triangle's plane
    tri = v[tm.faces[lm.face_index]]
    nrm = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    assert np.abs(((pts - tri[:, 0]) * nrm).sum(1)).max() < 1e-9
    # semantic placement
    def vertex_of(k):
        return tm.faces[lm.face_index[k], np.argmax(lm.bary[k])] if lm.bary[k].max() == 1.0 else -1
    right_rim, left_rim = set(tm.eye_rims[0].tolist()), set(tm.eye_rims[1].tolist())
    assert all(vertex_of(k) in right_rim for k in range(36, 42))
    assert all(vertex_of(k) in left_rim for k in range(42, 48))
    assert {vertex_of(48), vertex_of(54)} == set(tm.mouth_corners.tolist())
    mouth_rim = set(tm.mouth_rim.tolist())
    assert all(vertex_of(k) in mouth_rim for k in (61, 62, 63, 65, 66, 67))
    assert pts[36, 0] < pts[39, 0] < 0 < pts[42, 0] < pts[45, 0]  # eye corners, image-left first
    assert np.all(np.diff(pts[0:9, 0]) > 0) and np.all(np.diff(pts[8:17, 0]) > 0)
    assert pts[8, 1] == pts[0:17, 1].min()  # chin lowest
    assert pts[17:27, 1].min() > pts[36:48, 1].max()  # brows above the eyes
    assert pts[30, 2] == pts[:, 2].max()  # nose tip most forward
    assert pts[33, 1] > pts[51, 1] > pts[62, 1] > pts[66, 1] > pts[57, 1]  # nose base, lips top to bottom
    assert np.unique(np.round(pts, 6), axis=0).shape[0] == 68


def test_recipes_cover_the_seven_emotions():
    r = recipe_matrix()
    assert r.shape == (len(EMOTIONS), NUM_ACTIONS) and len(ACTION_NAMES) == NUM_ACTIONS
    assert (r[0] == 0).all() and (r[1:].sum(1) > 0).all() and ((r >= 0) & (r <= 1)).all()
    assert len({tuple(row) for row in r}) == len(EMOTIONS)


def test_zero_actions_give_the_exact_neutral(random_params):
    n = neutral_faces(random_params)
    out = apply_actions(n, random_params, np.zeros((len(n), NUM_ACTIONS)))
    assert np.array_equal(out, n)


def _smile_delta(params):
    n = neutral_faces(params)
    a = np.zeros((len(params), NUM_ACTIONS))
    a[:, ACTION_NAMES.index("AU12_lip_corner_puller")] = 1.0
    return apply_actions(n, params, a) - n, n


def test_smile_depends_on_the_identity_non_additively(tm):
    k = IDENTITY_PARAM_NAMES.index("mouth_width")
    params = np.zeros((2, NUM_IDENTITY_PARAMS))
    params[0, k], params[1, k] = -2.5, 2.5  # a narrow and a wide mouth
    delta, neutral = _smile_delta(params)
    # an additive model would move every identity's vertices by the same delta
    transferred = neutral[1] + delta[0]
    posed_b = neutral[1] + delta[1]
    assert np.abs(transferred - posed_b).max() > 1.0  # mm
    # corner travel grows faster than the mouth width (a non-linear, scale-aware smile)
    travel = np.linalg.norm(delta[:, tm.mouth_corners], axis=-1).mean(1)  # (2,)
    width = np.linalg.norm(neutral[:, tm.mouth_corners[1]] - neutral[:, tm.mouth_corners[0]], axis=-1)
    assert travel[1] / travel[0] > 1.05 * width[1] / width[0]


def test_jaw_rotates_about_the_identity_pivot(tm):
    k = IDENTITY_PARAM_NAMES.index("jaw_pivot_depth")
    params = np.zeros((2, NUM_IDENTITY_PARAMS))
    params[0, k], params[1, k] = -2.0, 2.0
    n = neutral_faces(params)
    a = np.zeros((2, NUM_ACTIONS))
    a[:, ACTION_NAMES.index("AU26_jaw_drop")] = 1.0
    out = apply_actions(n, params, a)
    pivot = jaw_pivot(params)  # (2, 3)
    lower = tm.mouth_rim[n[0, tm.mouth_rim, 1] < n[0, tm.mouth_corners, 1].min() - 0.5]
    upper = tm.mouth_rim[n[0, tm.mouth_rim, 1] > n[0, tm.mouth_corners, 1].max() + 0.5]
    chin = tm.landmark_sets["ibug68"].points(out, tm.faces)[:, 8]
    # a rigid rotation about an x-parallel axis: distances to the axis and x are preserved
    for i in range(2):
        r0 = np.linalg.norm((n[i] - pivot[i])[:, 1:], axis=1)
        r1 = np.linalg.norm((out[i] - pivot[i])[:, 1:], axis=1)
        assert np.allclose(r0[lower], r1[lower], atol=1e-9) and np.array_equal(out[i][:, 0], n[i][:, 0])
        # the lips part: the lower lip drops, the upper lip stays
        assert (n[i, lower, 1] - out[i, lower, 1]).min() > 3.0
        assert np.allclose(out[i, upper], n[i, upper], atol=1e-9)
    # a different hinge moves the chin differently
    assert np.abs((chin[0] - neutral_chin(n[0], tm)) - (chin[1] - neutral_chin(n[1], tm))).max() > 1.0


def neutral_chin(v, tm):
    return tm.landmark_sets["ibug68"].points(v, tm.faces)[8]


def test_bad_inputs_raise_value_errors(random_params):
    with pytest.raises(ValueError, match="params"):
        neutral_faces(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="actions"):
        apply_actions(neutral_faces(random_params[:1]), random_params[:1], np.zeros((1, 3)))
