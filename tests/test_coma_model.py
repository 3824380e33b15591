"""CoMA's autoencoder (models/coma.py): shapes through every level, state and operators, the L1
loss, and a short deterministic CPU training run.

The training test runs on a small hierarchy (the procedural template's 268-vertex level 2,
decimated 3 more times: 268 -> 67 -> 17 -> 5) with 3 encoder/decoder levels, on random smooth
displacements with 3 degrees of freedom; CoMA's own settings (batch 16, lr 8e-3) lower the
loss too slowly for a test on 64 samples, so it uses batch 8 and lr 0.03 (measured: 0.82 ->
0.34 in 30 epochs, about 5 s on one core).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fitface.models.coma import ComaAutoencoder, coma_l1_loss, train_coma
from fitface.models.mesh_sampling import MeshHierarchy, build_hierarchy

PROCEDURAL_SIZES = (4285, 1072, 268, 67, 17)
SMALL_SIZES = (268, 67, 17, 5)
SMALL_FILTERS = dict(encoder_filters=(16, 16, 32), decoder_filters=(32, 16, 16))


@pytest.fixture(scope="module")
def procedural():
    from fitface.data.procedural import template_mesh, template_vertices

    return build_hierarchy(template_vertices(), template_mesh().faces)


@pytest.fixture(scope="module")
def small(procedural):
    return build_hierarchy(procedural.vertices[2], procedural.faces[2], levels=3)


@pytest.fixture(scope="module")
def smooth_displacements(small):
    """(64, 268, 3) float64: random combinations of 3 smooth fields of the vertex positions (mm)."""
    v = small.vertices[0]
    v = (v - v.mean(0)) / v.std(0)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 3, 3))
    fields = np.stack([np.sin(v @ w[i] + i) for i in range(3)])  # (3, V, 3)
    return np.einsum("nk,kvc->nvc", rng.standard_normal((64, 3)), fields)


def test_shapes_through_every_level(procedural):
    assert procedural.sizes == PROCEDURAL_SIZES
    model = ComaAutoencoder(procedural, seed=0)
    seen = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append((tuple(inp[0].shape), tuple(out.shape))))
             for m in (*model.encoder_convs, model.encoder_linear, model.decoder_linear, *model.decoder_convs,
                       model.final_conv)]
    x = torch.randn(2, 4285, 3)
    z = model.encode(x)
    y = model.decode(z)
    for h in hooks:
        h.remove()
    assert z.shape == (2, 20) and y.shape == (2, 4285, 3) and y.dtype == torch.float32
    assert seen == [
        ((2, 4285, 3), (2, 4285, 16)), ((2, 1072, 16), (2, 1072, 16)),
        ((2, 268, 16), (2, 268, 16)), ((2, 67, 16), (2, 67, 32)),
        ((2, 17 * 32), (2, 20)), ((2, 20), (2, 17 * 32)),
        ((2, 67, 32), (2, 67, 32)), ((2, 268, 32), (2, 268, 16)),
        ((2, 1072, 16), (2, 1072, 16)), ((2, 4285, 16), (2, 4285, 16)),
        ((2, 4285, 16), (2, 4285, 3)),
    ]
    assert [c.order for c in model.encoder_convs] == [6] * 4 and model.final_conv.bias is None
    assert [c.num_vertices for c in model.decoder_convs] == [67, 268, 1072, 4285]
    assert torch.equal(model(x), y)
    with pytest.raises(ValueError, match="x"):
        model.encode(torch.randn(2, 4284, 3))
    with pytest.raises(ValueError, match="z"):
        model.decode(torch.randn(2, 19))
    with pytest.raises(ValueError, match="filters"):
        ComaAutoencoder(procedural, encoder_filters=(16, 32))


def test_state_operators_and_rebuild(small, smooth_displacements):
    model = ComaAutoencoder(small, seed=1, **SMALL_FILTERS)
    assert model.sizes == SMALL_SIZES
    model.set_normalisation(smooth_displacements)
    d = torch.from_numpy(smooth_displacements[:4]).float()
    torch.testing.assert_close(model.denormalise(model.normalise(d)), d)
    np.testing.assert_allclose(model.mean.numpy(), smooth_displacements.mean(0), rtol=0, atol=1e-6)
    keys = set(model.state_dict())
    assert {"mean", "std"} <= keys and not any(k.startswith(("down_", "up_")) or "laplacian" in k for k in keys)
    # the sparse operators follow .to()
    double = ComaAutoencoder(small, seed=1, **SMALL_FILTERS).double()
    assert double.down(0).dtype == double.up(2).dtype == double.encoder_convs[1].laplacian.dtype == torch.float64
    # rebuilt from the hierarchy's arrays + state_dict: the same function
    again = ComaAutoencoder(MeshHierarchy.from_arrays(model.hierarchy_arrays()), **model.config())
    again.load_state_dict(model.state_dict())
    z = torch.randn(3, 20)
    assert torch.equal(again.decode_displacements(z), model.decode_displacements(z))
    assert torch.equal(model.decode_displacements(z), model.denormalise(model.decode(z)))


def test_l1_loss():
    a, b = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    torch.testing.assert_close(coma_l1_loss(a, b), (a - b).abs().sum() / 30)
    assert float(coma_l1_loss(a, a)) == 0.0
    with pytest.raises(ValueError, match="target"):
        coma_l1_loss(a, b[:, :4])


def test_training_lowers_the_loss(small, smooth_displacements):
    model = ComaAutoencoder(small, seed=0, **SMALL_FILTERS)
    records = []
    history = train_coma(model, smooth_displacements, epochs=30, batch_size=8, lr=0.03, seed=0,
                         progress=records.append).history
    assert records == history and [r["epoch"] for r in history] == list(range(1, 31))
    assert history[1]["lr"] == pytest.approx(0.03 * 0.99)
    x = model.normalise(torch.from_numpy(smooth_displacements).float())
    with torch.no_grad():
        final = float(coma_l1_loss(model(x), x))
        initial = float(coma_l1_loss(ComaAutoencoder(small, seed=0, **SMALL_FILTERS).to(x)(x), x))
    assert final < 0.6 * initial, (initial, final)
    assert history[-1]["loss"] < 0.6 * history[0]["loss"]


def test_training_is_deterministic_for_a_seed(small, smooth_displacements):
    def run(seed, shuffle_seed):
        torch.manual_seed(1234 + seed)  # the global RNG must not matter
        model = ComaAutoencoder(small, seed=seed, **SMALL_FILTERS)
        hist = train_coma(model, smooth_displacements[:24], epochs=2, batch_size=8, seed=shuffle_seed).history
        return [r["loss"] for r in hist], model.state_dict()

    (l1, s1), (l2, s2), (l3, _) = run(0, 0), run(0, 0), run(0, 1)
    assert l1 == l2 and all(torch.equal(s1[k], s2[k]) for k in s1)
    assert l1 != l3
    assert not torch.equal(ComaAutoencoder(small, seed=1, **SMALL_FILTERS).encoder_linear.weight,
                           ComaAutoencoder(small, seed=0, **SMALL_FILTERS).encoder_linear.weight)


def test_decoder_gradcheck_float64(small):
    model = ComaAutoencoder(small, latent_size=4, seed=0, dtype=torch.float64, **SMALL_FILTERS)
    with torch.no_grad():  # non-zero biases: the ReLUs see inputs of both signs
        for p in model.parameters():
            if p.ndim == 1:
                p.normal_(0, 0.1)
    z = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: model.decode(z), (z,), eps=1e-6, atol=1e-5)


def test_normalisation_floor_and_trainer_errors(small):
    model = ComaAutoencoder(small, seed=0, **SMALL_FILTERS)
    d = np.zeros((5, 268, 3))
    d[:, :10] = np.random.default_rng(0).standard_normal((5, 10, 3))  # most coordinates never move
    model.set_normalisation(d)
    std = model.std.numpy()
    assert std[10:].min() > 0 and np.all(std[10:] == std[10:].min())  # the floor
    np.testing.assert_allclose(std[:10], d[:, :10].std(0), rtol=1e-6)
    assert torch.isfinite(model.normalise(torch.from_numpy(d).float())).all()
    model.set_normalisation(np.zeros((2, 268, 3)))
    assert torch.equal(model.std, torch.ones(268, 3))
    with pytest.raises(ValueError, match="displacements"):
        model.set_normalisation(np.zeros((2, 267, 3)))
    with pytest.raises(ValueError, match="epochs"):
        train_coma(model, d, epochs=-1)
    with pytest.raises(ValueError, match="batch_size"):
        train_coma(model, d, epochs=1, batch_size=0)
    assert train_coma(model, d, epochs=0).history == []
