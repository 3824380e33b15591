"""Decoupling metric (§5.3) and its ground-truth coefficient variant, on toy linear generators.

Toy models (linear generators on a tiny synthetic dataset): PCA modes of per-identity mean faces
("identity modes") and of the residuals from them ("expression modes") are placed in chosen
latent blocks:

* ``perfect`` for factor f: only block f has columns (f's modes); every other block is ignored,
  so faces sharing block f are identical -> 100% "same", coefficient ratio exactly 0.
* ``ignores`` f: block f is zero and the other blocks drive f's modes, so sharing block f
  means nothing -> a low score (near the unshared rate), coefficient ratio ~ 1.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fitface.evaluation.decoupling import (
    CoefficientRegressor,
    coefficient_decoupling,
    decoupling_score,
    paired_codes,
)
from fitface.models.face_model import FaceModel
from fitface.models.latent import LatentLayout
from fitface.models.linear import LinearGenerator

LAYOUT = LatentLayout((("identity", 8), ("expression", 6), ("noise", 4)))
TINY = dict(input_size=32, width=0.125, steps=60, shift=1, max_pairs=5000)
N, M = 20, 10


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from fitface.data.synthetic import build_synthetic
    from fitface.evaluation.embedder_training import train_embedders

    path = build_synthetic(tmp_path_factory.mktemp("dec") / "ds", identities=20, samples=800, seed=1)
    train_embedders(path, TINY)
    return path


@pytest.fixture(scope="module")
def modes(dataset):
    """Identity modes (3V, 8) and expression modes (3V, 6) scaled to unit-code std, mean offset."""
    from fitface.data.format import load_dataset

    ds = load_dataset(dataset)
    idx = ds.indices("train")
    X = ds.read(idx).reshape(len(idx), -1).astype(np.float64)
    _, inv = np.unique(ds.label("identity")[idx], return_inverse=True)
    means = np.stack([X[inv == k].mean(0) for k in range(inv.max() + 1)])

    def pca(a, k):
        a = a - a.mean(0)
        _, s, vt = np.linalg.svd(a, full_matrices=False)
        return vt[:k].T * (s[:k] / np.sqrt(len(a)))

    return ds, pca(means, 8), pca(X - means[inv], 6), means.mean(0) - ds.template_vertices.reshape(-1)


def toy_model(modes, columns: dict) -> FaceModel:
    """A linear FaceModel; ``columns``: block name -> (3V, k) modes put in its first k columns."""
    ds, _, _, offset = modes
    basis = np.zeros((3 * ds.num_vertices, LAYOUT.dim))
    for name, cols in columns.items():
        s = LAYOUT.slice(name).start
        basis[:, s:s + cols.shape[1]] = cols
    g = LinearGenerator(torch.tensor(basis, dtype=torch.float32), torch.tensor(offset, dtype=torch.float32))
    t = ds.template_vertices
    uv = (t[:, :2] - t[:, :2].min(0)) / np.ptp(t[:, :2], axis=0)
    return FaceModel(t, ds.faces, uv, LAYOUT, g, unit=ds.unit)


def perfect(modes, factor):
    _, idm, exm, _ = modes
    return toy_model(modes, {factor: idm if factor == "identity" else exm})


def ignores(modes, factor):
    _, idm, exm, _ = modes
    if factor == "identity":  # identity shapes come from the expression and noise blocks
        return toy_model(modes, {"expression": idm[:, :6], "noise": exm[:, :4]})
    return toy_model(modes, {"identity": idm, "noise": exm[:, :4]})  # expressions from the noise block


def test_paired_codes_share_exactly_the_factor_block():
    a, c = paired_codes(LAYOUT, "expression", 5, 3, seed=7)
    assert a.shape == (5, LAYOUT.dim) and c.shape == (5, 3, LAYOUT.dim)
    sl = LAYOUT.slice("expression")
    torch.testing.assert_close(c[:, :, sl], a[:, None, sl].expand(-1, 3, -1))
    rest = torch.ones(LAYOUT.dim, dtype=torch.bool)
    rest[sl] = False
    assert bool((c[:, :, rest] != a[:, None, rest]).all())
    a2, c2 = paired_codes(LAYOUT, "expression", 5, 3, seed=7)
    assert torch.equal(a, a2) and torch.equal(c, c2)
    with pytest.raises(ValueError, match="noise"):
        paired_codes(LAYOUT, "noise", 5, 3, seed=0)


@pytest.mark.parametrize("factor", ["identity", "expression"])
def test_perfect_model_scores_100(dataset, modes, factor):
    r = decoupling_score(perfect(modes, factor), dataset, factor, n=N, m=M, seed=1)
    assert r.score == 100.0
    assert r.shared_distances.shape == (N, M)
    assert float(r.shared_distances.max()) < 1e-6 < r.threshold  # identical meshes, identical embeddings
    assert r.unshared_score < 100.0


def test_model_ignoring_identity_scores_low(dataset, modes):
    good = decoupling_score(perfect(modes, "identity"), dataset, "identity", n=N, m=M, seed=2)
    bad = decoupling_score(ignores(modes, "identity"), dataset, "identity", n=N, m=M, seed=2)
    assert bad.score < 50.0 < good.score
    assert abs(bad.score - bad.unshared_score) < 15.0  # sharing the block is as good as sharing nothing


@pytest.mark.parametrize("factor", ["identity", "expression"])
def test_coefficient_ratio_is_zero_for_perfect_and_one_for_ignoring(dataset, modes, factor):
    from fitface.data.format import load_dataset

    reg = CoefficientRegressor(load_dataset(dataset), factor)  # poor on 20 identities; the ratio holds anyway
    p = coefficient_decoupling(perfect(modes, factor), dataset, factor, n=N, m=M, seed=3, regressor=reg)
    assert p.ratio < 1e-6 and p.shared_spread < 1e-6 < p.unshared_spread
    q = coefficient_decoupling(ignores(modes, factor), dataset, factor, n=40, m=20, seed=3, regressor=reg)
    assert q.ratio == pytest.approx(1.0, abs=0.12)


def test_regressor_recovers_linear_coefficients(tmp_path, modes):
    """On data that is exactly template + B c, the ridge regression recovers c (R^2 ~ 1)."""
    from fitface.data.format import DatasetWriter, load_dataset

    ds, idm, _, _ = modes
    rng = np.random.default_rng(0)
    n, k = 300, 5
    c = rng.standard_normal((n, k))
    v = ds.template_vertices[None] + (c @ idm[:, :k].T).reshape(n, -1, 3)
    ident = np.arange(n) % 30
    split = np.where(ident < 20, "train", np.where(ident < 25, "val", "test"))
    w = DatasetWriter(tmp_path / "lin", n, ds.template_vertices, ds.faces, unit="mm")
    w.vertices[:] = v.astype(np.float32)
    path = w.finish(labels={"identity": ident}, classes={"identity": [str(i) for i in range(30)]}, split=split,
                    coefficients={"identity": c.astype(np.float32)})
    reg = CoefficientRegressor(load_dataset(path), "identity")
    assert reg.r2 > 0.999
    pred = reg.predict(v[:10]) * reg.y_std + reg.y_mean
    np.testing.assert_allclose(pred, c[:10], atol=1e-2)
    with pytest.raises(ValueError, match="no generating coefficients"):
        CoefficientRegressor(load_dataset(path), "expression")


def test_errors_name_the_problem(dataset, modes, tmp_path):

    model = perfect(modes, "identity")
    with pytest.raises(ValueError, match="factor"):
        decoupling_score(model, dataset, "viseme", n=N, m=M)
    with pytest.raises(ValueError, match="n, m"):
        coefficient_decoupling(model, dataset, "identity", n=1, m=M)
    other = FaceModel(model.template[:-1].numpy(), model.faces[:5].numpy(), model.uv[:-1].numpy(), LAYOUT,
                      LinearGenerator(torch.zeros(3 * (model.num_vertices - 1), LAYOUT.dim)), unit="mm")
    with pytest.raises(ValueError, match="vertices"):
        decoupling_score(other, dataset, "identity", n=N, m=M)


def test_unit_conversion_gives_the_same_score(dataset, modes):
    mm = perfect(modes, "expression")
    ds, _, _, offset = modes  # the same model in centimetres
    basis = mm.generator.basis.detach() / 10
    t = ds.template_vertices / 10
    cm = FaceModel(t, ds.faces, mm.uv.numpy(), LAYOUT, LinearGenerator(basis, torch.tensor(offset / 10).float()),
                   unit="cm")
    a = decoupling_score(ignores(modes, "expression"), dataset, "expression", n=N, m=M, seed=4)
    b = decoupling_score(mm, dataset, "expression", n=N, m=M, seed=4)
    c = decoupling_score(cm, dataset, "expression", n=N, m=M, seed=4)
    assert b.score == c.score == 100.0
    np.testing.assert_allclose(b.unshared_distances, c.unshared_distances, atol=1e-3)
    assert a.score < b.score
