"""Evaluation: test captures, the Table 2 runner, retargeting with ground truth, the report and
``fitface evaluate`` (fitface/evaluation/heldout_captures.py, sparse_reconstruction.py,
retargeting.py, report.py; fitface/cli/evaluate.py).

Data: a tiny synthetic dataset (20 identities, 600 samples: 2 test identities) and the linear
3DMM baseline built from it, once per module.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

#: Surface distances are computed in float64 from exact closest points: agreement with libigl
#: and with analytic values to float64 round-off on ~100 mm coordinates.
DIST_ATOL_MM = 1e-9
#: Table 2 error of a model that can represent the ground truth exactly, at lambda 0: the engine
#: reaches ~1e-3 mm landmark RMS on noiseless synthetic fits (fitface/fitting/landmark_fit.py BETAS).
EXACT_MODEL_RMSE_MM = 0.02
#: Largest cosine allowed between an extreme test recipe and a training emotion recipe.
MAX_RECIPE_COSINE = 0.95


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from fitface.data.format import load_dataset
    from fitface.data.synthetic import build_synthetic

    path = build_synthetic(tmp_path_factory.mktemp("ev_data") / "syn", identities=20, samples=600, seed=3)
    return load_dataset(path)


@pytest.fixture(scope="module")
def baseline_file(dataset, tmp_path_factory) -> Path:
    from fitface.models.builders.linear import build_linear_3dmm
    from fitface.models.model_file import save_model

    path = tmp_path_factory.mktemp("ev_model") / "model.safetensors"
    save_model(path, build_linear_3dmm(dataset), data_fingerprint=dataset.fingerprint)
    return path


@pytest.fixture(scope="module")
def captures(dataset):
    from fitface.evaluation.heldout_captures import build_test_captures

    return build_test_captures(dataset)


# ------------------------------------------------------------------------------ surface distance
def _plane(n=15, spacing=4.0):
    from model_builders import grid_mesh

    v, f, _ = grid_mesh(n, spacing)
    return v, f


def test_surface_distance_of_a_mesh_to_itself_is_zero(captures):
    from fitface.evaluation.sparse_reconstruction import SurfaceDistance, surface_rmse

    v = captures.vertices[0]
    d = SurfaceDistance(v, captures.faces)(v)
    assert np.abs(d).max() <= DIST_ATOL_MM
    assert surface_rmse(v, v, captures.faces) <= DIST_ATOL_MM


@pytest.mark.parametrize("offset", [0.5, 3.0, 25.0])
def test_surface_distance_of_a_translated_plane_is_the_offset(offset):
    from fitface.evaluation.sparse_reconstruction import SurfaceDistance

    v, f = _plane()
    moved = v + np.array([0.0, 0.0, offset])  # the plane's normal is z
    d = SurfaceDistance(v, f)(moved)
    np.testing.assert_allclose(d, offset, atol=DIST_ATOL_MM)
    # tangential moves inside the plane are distance 0 (the vertex RMSE would not be)
    inside = v[(v[:, 0] > 5) & (v[:, 0] < 50) & (v[:, 1] > 5) & (v[:, 1] < 50)] + [1.3, -0.7, 0.0]
    assert np.abs(SurfaceDistance(v, f)(inside)).max() <= DIST_ATOL_MM


def test_surface_distance_matches_libigl(captures):
    igl = pytest.importorskip("igl")
    from fitface.evaluation.sparse_reconstruction import SurfaceDistance

    rng = np.random.default_rng(0)
    v = captures.vertices[1]
    q = captures.vertices[7] + rng.normal(0, 2.0, v.shape)  # another face, noisy: every Voronoi region
    q = np.concatenate([q, v.mean(0) + rng.normal(0, 60.0, (300, 3))])  # far points: the ball-query path
    d = SurfaceDistance(v, captures.faces)(q)
    d2, _, _ = igl.point_mesh_squared_distance(q, v, captures.faces)
    np.testing.assert_allclose(d, np.sqrt(d2), atol=1e-7)


# ------------------------------------------------------------------------------ test captures
def test_test_captures_are_held_out_exact_and_outside_the_recipes(dataset, captures):
    from fitface.data.procedural import apply_actions, neutral_faces, recipe_matrix
    from fitface.evaluation.heldout_captures import SYNTHETIC_EXTREME_RECIPES, recipe_overlap, synthetic_recipe_matrix

    ne = len(SYNTHETIC_EXTREME_RECIPES)
    test_ids = np.unique(dataset.label("identity")[dataset.indices("test")])
    assert ne == 12 and len(captures) == ne * len(test_ids)
    np.testing.assert_array_equal(np.unique(captures.identity), test_ids)
    np.testing.assert_array_equal(captures.expression[:ne], np.arange(ne))  # identity-major grid
    assert captures.info["identity_coefficient_max_diff"] == 0.0  # regenerated = stored (float32)
    assert captures.info["neutral_check_max_mm"] is not None and captures.info["neutral_check_max_mm"] < 1e-4
    assert (recipe_overlap(synthetic_recipe_matrix(), recipe_matrix()) < MAX_RECIPE_COSINE).all()
    # capture = apply_actions(identity's neutral, recipe), identity from the stored coefficients
    lab = dataset.label("identity")
    i0 = int(captures.identity[3])
    p = np.asarray(dataset.coefficients["identity"][np.flatnonzero(lab == i0)[0]], dtype=np.float64)[None]
    ref = apply_actions(neutral_faces(p), p, synthetic_recipe_matrix()[[int(captures.expression[3])]])[0]
    assert np.abs(ref - captures.vertices[3]).max() < 1e-3  # float32 coefficients vs float64 regeneration
    # the expressions move the face (not neutral)
    neutral = neutral_faces(p)[0]
    assert np.linalg.norm(captures.vertices[captures.identity == i0] - neutral, axis=-1).max(axis=1).min() > 1.0
    assert captures.landmarks().shape == (len(captures), 68, 3)


def test_test_captures_refuse_imported_datasets(dataset, monkeypatch):
    from fitface.errors import InputError
    from fitface.evaluation.heldout_captures import build_test_captures

    monkeypatch.setitem(dataset.info, "builder", "import")
    with pytest.raises(InputError, match="import"):
        build_test_captures(dataset)


# ------------------------------------------------------------------------------ Table 2
def test_a_model_of_the_ground_truth_reconstructs_it_exactly(captures):
    """A LinearDecoder spanned by the captures' own PCA represents them exactly: ~0 error at lambda 0."""
    from fitface.evaluation.sparse_reconstruction import SparseConfig, run_sparse_reconstruction
    from fitface.fitting.decoder import LinearDecoder
    from fitface.models.latent import LatentLayout

    sub = captures.subset(np.arange(5))
    x = sub.vertices.reshape(5, -1)
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    basis = (vt[:4] * (s[:4, None] / 2.0)).T  # (3V, 4), unit codes ~ the data spread
    dec = LinearDecoder(mean.reshape(-1, 3), basis, sub.faces, LatentLayout((("identity", 4),)),
                        landmark_sets={"ibug68": sub.landmark_sets["ibug68"]}, model_id="gt-pca")
    res = run_sparse_reconstruction({"oracle": dec}, sub, SparseConfig(lambdas=(0.0, 10.0), steps=600))
    e0 = res.errors["oracle"][0.0]
    assert e0.surface_rmse.max() < EXACT_MODEL_RMSE_MM
    assert e0.vertex_rmse.max() < EXACT_MODEL_RMSE_MM
    # strong regularisation pulls towards the mean: clearly worse
    assert res.errors["oracle"][10.0].surface_rmse.mean() > 10 * e0.surface_rmse.mean()


def test_table2_runner_on_five_captures(baseline_file, captures):
    from fitface.evaluation.sparse_reconstruction import SparseConfig, run_sparse_reconstruction

    sub = captures.subset(np.arange(5))
    res = run_sparse_reconstruction({"3DMM": baseline_file}, sub, SparseConfig(steps=150, examples=2))
    assert set(res.errors["3DMM"]) == {0.0, 0.01, 10.0}
    for lam, e in res.errors["3DMM"].items():
        assert e.surface_rmse.shape == (5,) and np.isfinite(e.surface_rmse).all()
        assert (e.surface_rmse <= e.vertex_rmse + 1e-9).all()  # the surface is nearer than the same vertex
        assert e.vertex_error.shape == (sub.vertices.shape[1],)
        assert sorted(e.examples) == [0, 1]
    assert res.errors["3DMM"][10.0].landmark_rms.mean() > res.errors["3DMM"][0.0].landmark_rms.mean()
    doc = json.loads(json.dumps(res.to_json()))
    assert doc["models"]["3DMM"]["0.0"]["surface_rmse_mm"] == pytest.approx(res.table()["3DMM"][0.0])


def test_table2_with_a_random_motion_matches_the_model_frame_fit(baseline_file, captures):
    """Fitting with a random rigid motion and a similarity estimate gives errors like the
    model-frame fit (the errors are measured after undoing the known motion)."""
    from fitface.evaluation.sparse_reconstruction import SparseConfig, run_sparse_reconstruction

    sub = captures.subset(np.arange(4))
    a = run_sparse_reconstruction({"m": baseline_file}, sub, SparseConfig(lambdas=(0.01,), steps=300))
    b = run_sparse_reconstruction({"m": baseline_file}, sub, SparseConfig(lambdas=(0.01,), steps=300, similarity=True))
    ea, eb = a.errors["m"][0.01].surface_rmse.mean(), b.errors["m"][0.01].surface_rmse.mean()
    # measured 1.25 mm in the model frame, 0.97 with the motion and a similarity (7 more free
    # parameters); a motion not undone, or a wrong transform, is tens of mm off
    assert abs(eb - ea) < 0.4 * ea, (ea, eb)


# ------------------------------------------------------------------------------ retargeting
def test_retargeting_runner(baseline_file, captures):
    from fitface.evaluation.retargeting import RetargetConfig, draw_pairs, run_retargeting

    pairs = draw_pairs(captures, 6, seed=0)
    a, b, g = pairs.T
    assert (captures.identity[a] != captures.identity[b]).all()
    assert (captures.expression[a] != captures.expression[b]).all()
    np.testing.assert_array_equal(captures.identity[g], captures.identity[b])
    np.testing.assert_array_equal(captures.expression[g], captures.expression[a])
    res = run_retargeting({"3DMM": baseline_file}, captures, RetargetConfig(pairs=6, steps=200))
    s = res.errors["3DMM"].summary()
    assert all(np.isfinite(v) for v in s.values())
    # moving the expression helps: much closer to GT (b, x) than B's own expression y
    assert s["retarget_surface_rmse_mm"] < s["no_transfer_surface_rmse_mm"]
    json.dumps(res.to_json())


# ------------------------------------------------------------------------------ report and CLI
def test_error_colors_and_nice_scale():
    from fitface.evaluation.report import error_colors, nice_scale

    c = error_colors(np.array([0.0, 1.0, 5.0]), 1.0)
    assert c.shape == (3, 3) and (c >= 0).all() and (c <= 1).all()
    np.testing.assert_allclose(c[1], c[2])  # clipped at the full scale
    assert c[0, 2] > c[0, 0] and c[1, 0] > c[1, 2]  # blue at 0, red at full scale
    assert nice_scale(np.array([0.1, 3.7])) in (5.0,)


def test_cli_evaluate_writes_the_report(baseline_file, dataset, tmp_path):
    from fitface.cli import main

    out = tmp_path / "report"
    code = main([
        "evaluate", str(baseline_file), "--data", str(dataset.path), "-o", str(out),
        "--n-samples", "20", "--pairs", "50", "--decoupling-n", "3", "--decoupling-m", "2",
        "--test-captures", "5", "--retarget-pairs", "3", "--steps", "100", "--lambdas", "0,10",
    ])
    assert code == 0
    doc = json.loads((out / "report.json").read_text())
    row = doc["table1"]["rows"]["3DMM"]
    for key in ("div", "div_id", "div_exp", "sp"):
        assert np.isfinite(row[key]) and row[key] > 0
    assert "dec_id" not in row and "embedders" in doc["table1"]["notes"][0]  # no embedders: a note
    assert doc["table2"]["num_captures"] == 5 and set(doc["table2"]["models"]["3DMM"]) == {"0.0", "10.0"}
    assert doc["retargeting"]["num_pairs"] == 3
    assert "not built from ICT" in doc["dense"]["note"]  # the dense part needs an ICT set: a note, not an error
    md = (out / "report.md").read_text()
    assert "## Table 1" in md and "## Table 2" in md and "| 3DMM |" in md
    for f in doc["figures"]:
        assert (out / f["file"]).is_file()
    assert {Path(f["file"]).name for f in doc["figures"]} >= {"samples_3DMM.png", "table2_heatmaps.png"}


def test_cli_evaluate_shows_each_long_stage_and_no_progress_hides_it(baseline_file, dataset, tmp_path, capsys):
    from fitface.cli import main

    argv = ["evaluate", str(baseline_file), "--data", str(dataset.path), "--n-samples", "20", "--pairs", "50",
            "--test-captures", "5", "--steps", "20", "--lambdas", "0", "--skip", "retarget", "--skip", "dense",
            "--skip", "table2_noisy", "--no-figures"]
    assert main([*argv, "-o", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    for stage in ("table 1: 3DMM: diversity", "table 1: 3DMM: specificity samples", "table 2: 3DMM lambda=0"):
        assert stage in err, err
    assert main([*argv, "-o", str(tmp_path / "b"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "diversity:" not in err and "specificity samples" not in err and "table 1: 3DMM: Div" in err


def test_cli_parts_are_the_evaluations_parts():
    """The CLI keeps its own tuple (its module imports no numpy); it must be the evaluation's."""
    from fitface.cli.evaluate import PARTS as CLI_PARTS
    from fitface.evaluation.report import PARTS

    assert CLI_PARTS == PARTS


def test_cli_evaluate_bad_inputs(baseline_file, dataset, tmp_path, capsys):
    from fitface.cli import main

    assert main(["evaluate", str(tmp_path / "nope.safetensors"), "--data", str(dataset.path),
                 "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no such model file" in err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["evaluate", str(baseline_file), "--data", str(dataset.path), "-o", str(tmp_path / "full")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["evaluate", str(baseline_file), "--data", str(dataset.path), "-o", str(tmp_path / "r2"),
                 "--lambdas", "0,abc"]) == 2
    assert main(["evaluate", str(baseline_file), "--data", str(dataset.path), "-o", str(tmp_path / "r3"),
                 "--skip", "table1", "--skip", "table2", "--skip", "table2_noisy", "--skip", "retarget",
                 "--skip", "dense"]) == 2


def test_ict_test_captures_are_exact(ict_path, tmp_path):
    """The ICT test set: regenerated identities match the stored coefficients and the stored
    neutral faces; the extreme recipes are not training emotions; the source is required."""
    from fitface.data.format import load_dataset
    from fitface.data.ict import blendshape_recipe_matrix, build_ict_dataset, load_ict
    from fitface.errors import InputError
    from fitface.evaluation.heldout_captures import build_test_captures, ict_recipe_matrix, recipe_overlap

    res = build_ict_dataset(ict_path, tmp_path / "ict", identities=10, samples=120, seed=1, narrow=True, workers=0)
    ds = load_dataset(res.path)
    with pytest.raises(InputError, match="ict-source"):
        build_test_captures(ds)
    caps = build_test_captures(ds, ict_source=ict_path)
    assert len(caps) == 12 * len(np.unique(ds.label("identity")[ds.indices("test")]))
    assert caps.vertices.shape[1:] == (ds.num_vertices, 3)
    assert caps.info["identity_coefficient_max_diff"] == 0.0
    assert caps.info["neutral_check_max_mm"] is not None and caps.info["neutral_check_max_mm"] < 1e-4
    names = load_ict(ict_path).expression_names
    assert (recipe_overlap(ict_recipe_matrix(names), blendshape_recipe_matrix(names)) < MAX_RECIPE_COSINE).all()


def test_decoupling_cell_shows_the_chance_level():
    from fitface.evaluation.report import _dec_cell

    assert _dec_cell({"dec_exp": 67.4, "dec_exp_unshared": 61.0}, "dec_exp") == "67.4 (61.0)"
    assert _dec_cell({"dec_exp": 67.4}, "dec_exp") == "67.4"
    assert _dec_cell({}, "dec_id") == "–"
