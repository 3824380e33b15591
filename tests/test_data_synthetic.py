"""``fitface data synthetic``: the built-in procedural dataset (labels, determinism, CLI, realism)."""

from __future__ import annotations

import numpy as np
import pytest

from fitface.cli import main
from fitface.data.format import load_dataset
from fitface.data.plan import plan_samples
from fitface.data.procedural import NUM_ACTIONS, NUM_IDENTITY_PARAMS, neutral_faces, template_mesh
from fitface.data.synthetic import DEFAULT_IDENTITIES, DEFAULT_SAMPLES, build_synthetic

#: Expected expression-labeled fraction at 100 samples per identity (the paper's ~7%).
LABELED_TARGET = 0.07
LABELED_TOLERANCE = 0.01
#: mediapipe must find a face in at least this fraction of frontal renders.
DETECTION_RATE_MIN = 0.9
DETECTION_SAMPLES = 40


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    path = build_synthetic(tmp_path_factory.mktemp("syn") / "ds", identities=20, samples=2000, seed=5)
    return load_dataset(path)


def test_dataset_validates_with_labels_as_planned(ds):
    tm = template_mesh()
    assert len(ds) == 2000 and ds.vertices.shape == (2000, tm.num_vertices, 3) and ds.unit == "mm"
    assert [f.name for f in ds.factors] == ["identity", "expression"]
    assert (ds.label("identity") >= 0).all()
    labeled = (ds.label("expression") >= 0).mean()
    assert abs(labeled - LABELED_TARGET) < LABELED_TOLERANCE
    # the labels are the plan's (same seed stream)
    plan = plan_samples(20, 2000, np.random.default_rng(np.random.SeedSequence(5).spawn(4)[0]))
    assert np.array_equal(ds.label("expression"), plan.expression_label)
    assert np.array_equal(ds.label("identity"), plan.identity)
    for key in ("sequence", "frame", "part", "intensity"):
        assert np.array_equal(ds.extras[key], getattr(plan, key))
    # splits by identity
    for i in range(20):
        assert len(set(ds.split[ds.label("identity") == i])) == 1
    assert "ibug68" in ds.landmark_sets and len(ds.landmark_sets["ibug68"]) == 68
    assert ds.info["builder"] == "synthetic" and ds.info["seed"] == 5


def test_coefficients_reproduce_the_samples(ds):
    ident, act = ds.coefficients["identity"], ds.coefficients["expression"]
    assert ident.shape == (len(ds), NUM_IDENTITY_PARAMS) and act.shape == (len(ds), NUM_ACTIONS)
    assert ((act >= 0) & (act <= 1)).all()
    # one set of identity parameters per identity
    ids = ds.label("identity")
    for i in (0, 7):
        assert (ident[ids == i] == ident[ids == i][0]).all()
    # zero-intensity samples (labeled neutral sequence ends) are the identity's exact neutral
    neutral = np.flatnonzero(ds.extras["intensity"] == 0)
    assert len(neutral) > 0 and (act[neutral] == 0).all()
    assert (ds.label("expression")[neutral] == 0).all()
    k = neutral[:3]
    expected = neutral_faces(ident[k].astype(np.float64)).astype(np.float32)
    # identity parameters are stored as float32: rebuilt faces agree to float32 rounding
    np.testing.assert_allclose(np.asarray(ds.vertices[k]), expected, atol=1e-3)
    # labeled peaks are expressive: far from the neutral of the same identity
    peaks = np.flatnonzero((ds.label("expression") > 0) & (ds.extras["part"] == 0))
    assert (act[peaks].max(1) > 0.3).all()


def test_same_seed_same_bytes_other_seed_other_faces(tmp_path):
    a = build_synthetic(tmp_path / "a", identities=3, samples=120, seed=9)
    b = build_synthetic(tmp_path / "b", identities=3, samples=120, seed=9)
    c = build_synthetic(tmp_path / "c", identities=3, samples=120, seed=10)
    for name in ("vertices.npy", "labels.csv", "coefficients.npz", "extras.npz"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "vertices.npy").read_bytes() != (c / "vertices.npy").read_bytes()


def test_cli_builds_a_valid_dataset(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["data", "synthetic", "-o", str(out), "--identities", "4", "--samples", "200", "--seed", "1"])
    assert code == 0
    assert "200 samples" in capsys.readouterr().out
    ds = load_dataset(out)
    assert len(ds) == 200 and ds.labels.shape == (200, 2)
    # an existing output is refused without --overwrite (one line, exit 2)
    assert main(["data", "synthetic", "-o", str(out), "--identities", "4", "--samples", "200", "-q"]) == 2
    assert main(["data", "synthetic", "-o", str(out), "--identities", "4", "--samples", "200", "-q", "--overwrite"]) == 0


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--identities", "0"], "--identities"),
        (["--identities", "5", "--samples", "3"], "--samples"),
        (["--seed", "-1"], "--seed"),
        (["--sequence-length", "2"], "--sequence-length"),
    ],
)
def test_cli_bad_options_one_line_exit_2(tmp_path, capsys, args, needle):
    code = main(["data", "synthetic", "-o", str(tmp_path / "x"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err
    assert not (tmp_path / "x").exists()


def test_cli_defaults_match_the_builder():
    from fitface.cli import data_synthetic

    assert (data_synthetic.DEFAULT_IDENTITIES, data_synthetic.DEFAULT_SAMPLES) == (DEFAULT_IDENTITIES, DEFAULT_SAMPLES)


def test_mediapipe_finds_a_face_in_frontal_renders(ds):
    """Realism: mediapipe's face mesh detects a face in >= 90% of shaded frontal renders."""
    mp = pytest.importorskip("mediapipe")
    from fitface.geometry.render import render_shaded

    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(ds), DETECTION_SAMPLES, replace=False))
    found = 0
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1) as fm:
        for i in idx:
            image = render_shaded(np.asarray(ds.vertices[i], dtype=np.float64), ds.faces, size=256).image
            found += fm.process(image).multi_face_landmarks is not None
    assert found / len(idx) >= DETECTION_RATE_MIN, f"face found in {found}/{len(idx)} renders"
