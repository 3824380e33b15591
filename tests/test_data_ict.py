"""``fitface data ict``: the realistic ICT-based dataset (skips without the shared ICT data)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fitface.cli import main as cli_main
from fitface.data.emotions import EMOTIONS, NEUTRAL
from fitface.data.format import load_dataset
from fitface.data.ict import (
    ICT_IBUG68,
    NARROW_FACE_VERTEX_COUNT,
    blendshape_recipe_matrix,
    build_ict_dataset,
    load_ict,
    transferred_deltas,
)
from fitface.data.plan import POSED, STATIC
from fitface.errors import InputError

SMALL = {"identities": 12, "samples": 600}
TINY = {"identities": 4, "samples": 80}
#: Labeled fraction band for small builds (the per-identity neutral label weighs more; see plan.py).
SMALL_BAND = (0.05, 0.12)
#: Human face proportions, mm: jaw width at ibug points 0-16, outer eye corners 36-45.
JAW_WIDTH_MM = (120.0, 170.0)
OUTER_EYE_MM = (80.0, 110.0)
#: Identity dependence: the same blendshape's transferred deltas on two random identities must
#: differ by at least this fraction of the blendshape's largest displacement.
MIN_IDENTITY_DEPENDENCE = 0.05
#: float32 storage: sample reconstruction tolerance in mm.
FLOAT32_MM = 1e-3


@pytest.fixture(scope="module")
def small(ict_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("ict") / "small"
    result = build_ict_dataset(ict_path, out, seed=0, workers=0, **SMALL)
    return result, load_dataset(out)


@pytest.fixture(scope="module")
def model(ict_path):
    return load_ict(ict_path)


def test_small_build_validates(small):
    result, ds = small
    assert len(ds) == SMALL["samples"] and ds.unit == "mm"
    assert ds.vertices.shape == (600, 9409, 3) and ds.faces.shape == (18460, 3)
    assert [f.name for f in ds.factors] == ["identity", "expression"]
    assert ds.factor("expression").classes == EMOTIONS
    assert (ds.label("identity") >= 0).all()
    assert ds.coefficients["identity"].shape == (600, 100) and ds.coefficients["expression"].shape == (600, 55)
    assert set(ds.extras) >= {"sequence", "frame", "part", "intensity"}
    assert "ibug68" in ds.landmark_sets and len(ds.landmark_sets["ibug68"]) == 68
    assert ds.info["builder"] == "ict" and ds.info["seed"] == 0
    assert result.seconds > 0
    # split by identity
    for i in range(SMALL["identities"]):
        assert len(set(ds.split[ds.label("identity") == i])) == 1


def test_labeled_fraction_in_band(small):
    _, ds = small
    frac = float((ds.label("expression") >= 0).mean())
    assert SMALL_BAND[0] <= frac <= SMALL_BAND[1]
    part = ds.extras["part"]
    assert (ds.label("expression")[part == STATIC] >= 0).all()
    assert (ds.label("expression")[part == POSED] >= 0).mean() < 0.2


def test_unit_is_mm_and_scale_plausible(small):
    _, ds = small
    lm = ds.landmark_sets["ibug68"].points(ds.template_vertices, ds.faces)  # (68, 3) mm
    assert JAW_WIDTH_MM[0] < np.linalg.norm(lm[0] - lm[16]) < JAW_WIDTH_MM[1]
    assert OUTER_EYE_MM[0] < np.linalg.norm(lm[36] - lm[45]) < OUTER_EYE_MM[1]
    # the same on a built sample (an individual, not the generic face)
    lm1 = ds.landmark_sets["ibug68"].points(np.asarray(ds.vertices[0], dtype=np.float64), ds.faces)
    assert JAW_WIDTH_MM[0] < np.linalg.norm(lm1[0] - lm1[16]) < JAW_WIDTH_MM[1]


def test_samples_follow_their_coefficients(small, model):
    """sample = neutral_i + sum_k c_k D_ik with the saved coefficients and transferred deltas."""
    _, ds = small
    ident = ds.label("identity")
    zeros_per_identity = np.bincount(ident[ds.extras["intensity"] == 0], minlength=SMALL["identities"])
    rows = np.flatnonzero(ident == int(np.argmax(zeros_per_identity)))  # one with posed sequences
    w = ds.coefficients["identity"][rows[0]].astype(np.float64)
    assert np.all(ds.coefficients["identity"][rows] == ds.coefficients["identity"][rows[0]])
    neutral_i = model.neutral + np.tensordot(w, model.identity_modes, axes=1)
    d = transferred_deltas(model, w)  # (55, V, 3)
    c = ds.coefficients["expression"][rows].astype(np.float64)
    expected = neutral_i[None] + np.einsum("nk,kvd->nvd", c, d)
    np.testing.assert_allclose(ds.vertices[rows], expected, atol=FLOAT32_MM)
    # intensity 0 (neutral-labeled sequence ends, static neutral) is exactly the neutral face
    zero = rows[ds.extras["intensity"][rows] == 0]
    assert len(zero) >= 3 and np.all(c[np.isin(rows, zero)] == 0)
    assert np.all(ds.label("expression")[zero] == NEUTRAL)
    np.testing.assert_allclose(ds.vertices[zero], np.broadcast_to(neutral_i, (len(zero),) + neutral_i.shape), atol=FLOAT32_MM)


def test_expressions_are_identity_dependent(model):
    k = list(model.expression_names).index("jawOpen")
    d1 = transferred_deltas(model, np.random.default_rng(1).standard_normal(100))[k]
    d2 = transferred_deltas(model, np.random.default_rng(2).standard_normal(100))[k]
    scale = np.abs(model.expression_modes[k]).max()
    assert np.abs(d1 - d2).max() > MIN_IDENTITY_DEPENDENCE * scale
    # ... yet still the same expression: strongly correlated with the source delta
    src = model.expression_modes[k].ravel()
    assert np.corrcoef(d1.ravel(), src)[0, 1] > 0.9


def test_emotion_peaks_move_the_face(small):
    _, ds = small
    static = ds.extras["part"] == STATIC
    rec = blendshape_recipe_matrix(ds.coefficient_names["expression"]) if hasattr(ds, "coefficient_names") else None
    for e in range(1, len(EMOTIONS)):
        rows = np.flatnonzero(static & (ds.label("expression") == e))
        assert len(rows) > 0
        c = ds.coefficients["expression"][rows]
        assert (c.max(axis=1) > 0.5).all()
        if rec is not None:  # the active blendshapes are the recipe's
            assert np.all((c > 0) <= (rec[e] > 0))


def _digest(path):
    from hashlib import sha256

    h = sha256()
    for name in ("vertices.npy", "labels.csv", "coefficients.npz", "extras.npz", "landmarks.json", "template.npz"):
        h.update((path / name).read_bytes())
    meta = json.loads((path / "dataset.json").read_text())
    meta.pop("files", None)
    h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()


def test_deterministic_for_a_seed(ict_path, tmp_path):
    a = build_ict_dataset(ict_path, tmp_path / "a", seed=5, workers=0, **TINY).path
    b = build_ict_dataset(ict_path, tmp_path / "b", seed=5, workers=2, **TINY).path  # worker processes
    c = build_ict_dataset(ict_path, tmp_path / "c", seed=6, workers=0, **TINY).path
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)
    assert not np.array_equal(load_dataset(a).vertices, load_dataset(c).vertices)


def test_narrow_is_the_full_sets_first_vertices(ict_path, tmp_path):
    full = load_dataset(build_ict_dataset(ict_path, tmp_path / "f", seed=2, workers=0, **TINY).path)
    nar = load_dataset(build_ict_dataset(ict_path, tmp_path / "n", seed=2, narrow=True, workers=0, **TINY).path)
    assert nar.vertices.shape[1] == NARROW_FACE_VERTEX_COUNT
    assert nar.faces.max() < NARROW_FACE_VERTEX_COUNT
    np.testing.assert_array_equal(nar.vertices, full.vertices[:, :NARROW_FACE_VERTEX_COUNT])
    lm_n = nar.landmark_sets["ibug68"].points(nar.template_vertices, nar.faces)
    lm_f = full.landmark_sets["ibug68"].points(full.template_vertices, full.faces)
    np.testing.assert_allclose(lm_n, lm_f)


# --------------------------------------------------------------------------------------------
# Sources: a fake ICT-FaceKit checkout, bad inputs
# --------------------------------------------------------------------------------------------


def _write_obj(path, verts, quads=None):
    lines = [f"v {x:.7f} {y:.7f} {z:.7f}" for x, y, z in verts]
    if quads is not None:
        lines += ["f " + " ".join(f"{i + 1}/{i + 1}" for i in q) for q in quads]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def fake_checkout(ict_path, tmp_path_factory):
    """A tiny ICT-FaceKit-like checkout from the shared npz: the 9,409 face vertices plus 30 fake
    head vertices and polygons, 2 identities, 6 expressions and an eye-only shape (pupil)."""
    root = tmp_path_factory.mktemp("ICT-FaceKit")
    folder = root / "FaceXModel"
    folder.mkdir()
    with np.load(ict_path) as z:
        neutral, faces = z["neutral"].astype(np.float64), z["faces"]
        id_modes, ex_modes = z["identity_modes"][:2].astype(np.float64), z["expression_modes"].astype(np.float64)
        names = list(z["expression_names"])
    quads = np.concatenate([faces[0::2], faces[1::2, 2:]], axis=1)  # (a, b, c) + (a, c, d) -> (a, b, c, d)
    head = neutral[:30] + [0.0, 0.0, -5.0]
    full = np.concatenate([neutral, head])
    extra = [(9409 + i, 9410 + i, i + 1, i) for i in range(0, 28, 2)]  # polygons touching the head
    _write_obj(folder / "generic_neutral_mesh.obj", full, np.concatenate([quads, extra]))
    for m in range(2):
        _write_obj(folder / f"identity{m:03d}.obj", full + np.concatenate([id_modes[m], np.zeros((30, 3))]))
    picks = ["browDown_L", "eyeWide_L", "jawOpen", "mouthFrown_L", "mouthSmile_R", "noseSneer_L"]  # one per emotion
    for n in picks:
        _write_obj(folder / f"{n}.obj", full + np.concatenate([ex_modes[names.index(n)], np.zeros((30, 3))]))
    pupil = full.copy()
    pupil[9409:] += 0.1  # moves only non-face vertices
    _write_obj(folder / "PupilDilate_L.obj", pupil)
    return root, picks


def test_fake_checkout_reads_like_the_npz(fake_checkout, model):
    root, picks = fake_checkout
    m = load_ict(root)
    assert m.expression_names == tuple(sorted(picks))  # pupil shape dropped
    np.testing.assert_allclose(m.neutral, model.neutral, atol=1e-5)
    np.testing.assert_array_equal(m.faces, model.faces)
    np.testing.assert_allclose(m.identity_modes, model.identity_modes[:2], atol=2e-5)
    k = list(model.expression_names).index("jawOpen")
    np.testing.assert_allclose(m.expression_modes[m.expression_names.index("jawOpen")], model.expression_modes[k], atol=2e-5)
    np.testing.assert_array_equal(m.landmarks_ibug68, np.array(ICT_IBUG68))
    assert m.narrow_vertex_count == NARROW_FACE_VERTEX_COUNT
    assert load_ict(root / "FaceXModel").expression_names == m.expression_names


def test_fake_checkout_builds(fake_checkout, tmp_path):
    root, picks = fake_checkout
    ds = load_dataset(build_ict_dataset(root, tmp_path / "d", identities=3, samples=30, workers=0).path)
    assert ds.vertices.shape == (30, 9409, 3)
    assert ds.coefficients["identity"].shape == (30, 2) and ds.coefficients["expression"].shape == (30, len(picks))


def _one_line_error(args, capsys):
    code = cli_main(["data", "ict", *map(str, args)])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_bad_sources(tmp_path, ict_path, capsys):
    out = tmp_path / "out"
    assert "no such file" in _one_line_error([tmp_path / "missing.npz", "-o", out], capsys)
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    assert "not an npz file or ICT-FaceKit checkout" in _one_line_error([txt, "-o", out], capsys)
    partial = tmp_path / "partial.npz"
    with np.load(ict_path) as z:
        np.savez(partial, neutral=z["neutral"], faces=z["faces"])
    assert "missing key(s) identity_modes" in _one_line_error([partial, "-o", out], capsys)
    empty = tmp_path / "emptydir"
    empty.mkdir()
    assert "not an ICT-FaceKit checkout" in _one_line_error([empty, "-o", out], capsys)
    assert "--samples" in _one_line_error([ict_path, "-o", out, "--identities", 10, "--samples", 5], capsys)
    assert not out.exists()
    with pytest.raises(InputError):
        load_ict(txt)


def test_bad_checkout(fake_checkout, tmp_path, capsys):
    root, _ = fake_checkout
    broken = tmp_path / "broken" / "FaceXModel"
    broken.mkdir(parents=True)
    (broken / "generic_neutral_mesh.obj").write_bytes((root / "FaceXModel" / "generic_neutral_mesh.obj").read_bytes())
    assert "identityNNN.obj" in _one_line_error([broken.parent, "-o", tmp_path / "o"], capsys)
    (broken / "identity000.obj").write_text("v 0 0 0\n")
    (broken / "jawOpen.obj").write_text("v 0 0 0\n")
    assert "vertices, expected" in _one_line_error([broken.parent, "-o", tmp_path / "o"], capsys)


def test_existing_output_needs_overwrite(small, ict_path, capsys):
    result, _ = small
    err = _one_line_error([ict_path, "-o", result.path, "--identities", 2, "--samples", 4, "--quiet"], capsys)
    assert "already exists" in err
