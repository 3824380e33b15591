"""The MAE baseline builder (models/builders/mae.py): its linear-3DMM initialisation, encoder,
label terms, training, the codes' Gaussian, model files and the API on a built model.

The dataset is the built-in synthetic one (20 identities, 2,000 samples, V = 4,285; 16
training identities, 101 training samples with an expression label), built once per module.
Builds are short (tens of steps) and use one thread.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import fitface
from fitface.fitting.similarity import umeyama
from fitface.latent import LatentLayout
from fitface.models.builders.mae import (
    BaselineBuild,
    MaeBuildConfig,
    build_mae,
    decode_coefficients,
    expression_loss,
    grouped_epoch,
    identity_loss,
    initial_generator,
    label_pull,
    linear_projection,
    mae_losses,
    reconstruction_loss,
    with_constant_slot,
)

#: float32 decodes of ~100 mm vertices by two equal models agree to a few ulps (mm).
DECODE_ATOL_MM = 1e-3
#: The linear path's least-squares projection recovers coefficients of faces in the basis span:
#: float32 pseudo-inverse of a (3 S^2, 83) image matrix; measured error ~1e-4 of coefficients ~1.
PROJECTION_ATOL = 1e-2
#: Ratio of a fit's vertex RMSE to the rigidly aligned mean face's, held-out synthetic faces
#: (68 exact landmarks, test-split identities). Measured 0.44-0.57: the 16 training identities
#: span only 15 identity directions, so a new person is represented partly; a model that did
#: not work (or a wrong landmark / row convention) gives about 1 or more.
FIT_RATIO = 0.75
SHORT = dict(max_minutes=None, show_progress=False)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dataset(synthetic_2000):
    return synthetic_2000


@pytest.fixture(scope="module")
def built(dataset) -> BaselineBuild:
    """The paper's sizes (65, 20), 20 steps: what the API tests run on."""
    return build_mae(dataset, MaeBuildConfig(max_steps=20, **SHORT))


@pytest.fixture(scope="module")
def model_file(built, dataset, tmp_path_factory):
    """Saved the way the CLI will save it (the lead's call path)."""
    from fitface.models.model_file import save_model

    path = tmp_path_factory.mktemp("mae_model") / "model.safetensors"
    cfg = MaeBuildConfig(max_steps=20, **SHORT)
    save_model(path, built.model, training_config={"kind": "mae", **cfg.to_json()}, data_fingerprint=dataset.fingerprint)
    return path


# ------------------------------------------------------------------------------ initialisation
def test_initial_model_equals_the_additive_linear_3dmm(dataset):
    from fitface.models.builders.linear import build_linear_3dmm, linear_3dmm_parts

    layout = LatentLayout((("identity", 64), ("expression", 19)))
    parts = linear_3dmm_parts(dataset, layout)
    gen = initial_generator(parts, 65, 20)
    lin = build_linear_3dmm(dataset, layout)
    z = torch.randn(5, 83, generator=torch.Generator().manual_seed(0))
    z_mae = torch.cat([torch.zeros(5, 1), z[:, :64], torch.zeros(5, 1), z[:, 64:]], dim=1)  # first slots unused
    with torch.no_grad():
        want = lin.generator(z)  # (5, V, 3) mm
        got = gen(z_mae)
    torch.testing.assert_close(got, want, atol=DECODE_ATOL_MM, rtol=0)
    assert float(want.abs().max()) > 1.0  # a real displacement, not two zeros
    # the core's blocks: constant x constant = 0, interactions 0, main effects = the 3DMM columns
    core = gen.core.detach()
    assert float(core[:, 0, 0].abs().max()) == 0 and float(core[:, 1:, 1:].abs().max()) == 0
    np.testing.assert_array_equal(core[:, 1:, 0].numpy(), parts.basis[:, :64].astype(np.float32))
    np.testing.assert_array_equal(core[:, 0, 1:].numpy(), parts.basis[:, 64:].astype(np.float32))
    np.testing.assert_allclose(lin.template.numpy(), parts.mean, atol=1e-4)


def test_linear_projection_recovers_3dmm_coefficients(dataset):
    from fitface.geometry.mapping import GeometryMapping
    from fitface.geometry.parameterization import harmonic_uv
    from fitface.models.builders.linear import linear_3dmm_parts

    parts = linear_3dmm_parts(dataset, LatentLayout((("identity", 64), ("expression", 19))))
    uv = harmonic_uv(dataset.template_vertices, dataset.faces).uv
    mapping = GeometryMapping(uv, dataset.faces, 64)
    s = 3.0
    w = linear_projection(parts.basis, mapping, s)  # (83, 3 S^2)
    c = np.random.default_rng(1).normal(size=(4, 83))
    c[:, 15:64] = 0  # the 49 identity columns the 16 identities do not support are zero
    d = torch.from_numpy((c @ parts.basis.T).reshape(4, -1, 3)).float()  # (4, V, 3) mm
    img = mapping(d) / s
    np.testing.assert_allclose((img.flatten(1) @ w.T).numpy(), c, atol=PROJECTION_ATOL)
    assert np.all(w[15:64].numpy() == 0)


# ------------------------------------------------------------------------------ losses
def test_label_terms_are_zero_without_labels_and_act_with_them():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    none = torch.full((6,), -1)
    out = label_pull(f, none)
    assert out.item() == 0.0 and not str(out.item()).startswith("-")
    out.backward()
    assert float(f.grad.abs().max()) == 0
    f.grad = None
    labels = torch.tensor([0, 0, 1, -1, 1, 2])  # sample 3 unlabeled, label 2 alone in the batch
    out = label_pull(f, labels)
    x = f.detach().numpy()
    m0, m1 = x[[0, 1]].mean(0), x[[2, 4]].mean(0)
    want = (((x[[0, 1]] - m0) ** 2).sum() + ((x[[2, 4]] - m1) ** 2).sum()) / (4 * 5)
    np.testing.assert_allclose(out.item(), want, rtol=1e-12)
    out.backward()
    assert float(f.grad[[3, 5]].abs().max()) == 0  # unlabeled and unpaired samples feel nothing
    assert float(f.grad[[0, 1, 2, 4]].abs().min()) > 0


def test_unlabeled_samples_only_reconstruct():
    """In :func:`mae_losses`, an unlabeled sample's code gradient is the reconstruction's alone;
    a labeled one's also has the label terms, which are the explicit decoded-space formulas."""
    g = torch.Generator().manual_seed(1)
    nv, ni, nj, b = 7, 4, 3, 6
    core = torch.randn(3 * nv, ni, nj, generator=g, dtype=torch.float64, requires_grad=True)
    offset = torch.zeros(3 * nv, dtype=torch.float64)
    a = torch.randn(b, ni - 1, generator=g, dtype=torch.float64, requires_grad=True)
    e = torch.randn(b, nj - 1, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randn(b, nv, 3, generator=g, dtype=torch.float64)
    ids = torch.tensor([0, 0, -1, 1, 1, -1])
    exps = torch.tensor([2, -1, -1, 2, -1, -1])
    cfg = MaeBuildConfig(weight_identity=0.5, weight_expression=2.0)
    terms = mae_losses(core, offset, a, e, target, ids, exps, 2.0, cfg)
    terms.total.backward()
    ga, ge = a.grad.clone(), e.grad.clone()
    a.grad = e.grad = None
    w_id, w_exp = with_constant_slot(a), with_constant_slot(e)
    rec = reconstruction_loss(decode_coefficients(core, offset, w_id, w_exp), target, 2.0)
    rec.backward()
    for k in (2, 5):  # unlabeled in both factors
        torch.testing.assert_close(ga[k], a.grad[k], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(ge[k], e.grad[k], rtol=1e-12, atol=1e-12)
    assert float((ga[[0, 1, 3, 4]] - a.grad[[0, 1, 3, 4]]).abs().min()) > 0
    assert float((ge[[0, 3]] - e.grad[[0, 3]]).abs().min()) > 0
    torch.testing.assert_close(ge[[1, 4]], e.grad[[1, 4]], rtol=1e-12, atol=1e-12)  # expression-unlabeled
    # the explicit formulas (decoded space, divided by s)
    c = core.detach().numpy()
    n_id = np.einsum("ri,bi->br", c[:, :, 0], w_id.detach().numpy()) / 2.0
    want_id = sum(((n_id[p] - n_id[p].mean(0)) ** 2).sum() for p in ([0, 1], [3, 4])) / (4 * 3 * nv)
    n_exp = np.einsum("rj,bj->br", c[:, 0, :], w_exp.detach().numpy()) / 2.0
    want_exp = ((n_exp[[0, 3]] - n_exp[[0, 3]].mean(0)) ** 2).sum() / (2 * 3 * nv)
    np.testing.assert_allclose(terms.identity.item(), want_id, rtol=1e-12)
    np.testing.assert_allclose(terms.expression.item(), want_exp, rtol=1e-12)
    np.testing.assert_allclose(terms.total.item(), rec.item() + 0.5 * want_id + 2.0 * want_exp, rtol=1e-12)
    np.testing.assert_allclose(identity_loss(core, w_id, ids, 2.0).item(), want_id, rtol=1e-12)
    np.testing.assert_allclose(expression_loss(core, w_exp, exps, 2.0).item(), want_exp, rtol=1e-12)


def test_grouped_epoch_is_a_seeded_permutation_with_label_pairs(dataset):
    idx = dataset.indices("train")
    ids, exps = dataset.label("identity")[idx], dataset.label("expression")[idx]
    order = grouped_epoch(ids, exps, 4, seed=3, epoch=0)
    assert sorted(order.tolist()) == list(range(len(idx)))
    np.testing.assert_array_equal(order, grouped_epoch(ids, exps, 4, seed=3, epoch=0))
    assert not np.array_equal(order, grouped_epoch(ids, exps, 4, seed=3, epoch=1))
    batches = order[: len(order) // 16 * 16].reshape(-1, 16)
    with_id_pair = np.mean([np.max(np.bincount(ids[bt])) >= 2 for bt in batches])
    exp_b = [exps[bt][exps[bt] >= 0] for bt in batches]
    with_exp_pair = sum(len(e) and np.max(np.bincount(e)) >= 2 for e in exp_b)
    assert with_id_pair == 1.0
    assert with_exp_pair >= 10  # 101 expression-labeled samples, grouped by expression


# ------------------------------------------------------------------------------ training
def test_a_short_build_lowers_the_loss_and_is_deterministic(dataset):
    """Without the linear path (the CNN alone, heads from zero) the autoencoder starts at the mean
    face; 60 steps must lower the reconstruction well below it."""
    cfg = MaeBuildConfig(identity_dims=8, expression_dims=5, max_steps=60, image_skip=False, lr_encoder=1e-3,
                         log_every=20, code_samples=64, **SHORT)
    b = build_mae(dataset, cfg)
    r = b.report
    assert r["steps"] == 60 and r["stop_reason"] == "max_steps"
    curve = [row["reconstruction"] for row in r["curve"]]
    print("reconstruction curve:", np.round(curve, 4), "initial", r["initial"]["reconstruction"])
    assert len(curve) == 3 and curve[-1] < 0.5 * r["initial"]["reconstruction"]
    assert r["epoch_losses"][-1]["partial"] is True and r["epochs"] == pytest.approx(60 / r["steps_per_epoch"])
    json.dumps(r)
    again = build_mae(dataset, MaeBuildConfig(**{**cfg.to_json(), "max_steps": 5, "encoder_channels": (16, 32, 64, 128)}))
    twice = build_mae(dataset, MaeBuildConfig(**{**cfg.to_json(), "max_steps": 5, "encoder_channels": (16, 32, 64, 128)}))
    for k, v in again.model.generator.state_dict().items():
        torch.testing.assert_close(twice.model.generator.state_dict()[k], v, rtol=0, atol=0)
    assert again.report["curve"][0]["reconstruction"] == twice.report["curve"][0]["reconstruction"]


def test_budgets_stop_training(dataset):
    b = build_mae(dataset, MaeBuildConfig(identity_dims=4, expression_dims=3, max_epochs=0.05, code_samples=16,
                                          **SHORT))
    assert b.report["stop_reason"] == "max_epochs"
    assert b.report["steps"] == int(np.ceil(0.05 * b.report["steps_per_epoch"]))
    b = build_mae(dataset, MaeBuildConfig(identity_dims=4, expression_dims=3, max_minutes=1e-4, code_samples=16,
                                          show_progress=False))
    assert b.report["stop_reason"] == "max_minutes" and b.report["steps"] <= 2
    for bad in (dict(identity_dims=1), dict(max_epochs=0), dict(max_minutes=0), dict(batch_size=0),
                dict(image_size=60), dict(lr_decoder=-1.0)):
        with pytest.raises(ValueError):
            build_mae(dataset, MaeBuildConfig(**bad))


def test_sampling_follows_the_encoded_training_codes(built, dataset):
    g = built.model.generator
    assert built.report["counts"]["code_samples"] == len(dataset.indices("train"))
    assert float(g.id_mean[0]) == pytest.approx(1.0) and float(g.exp_mean[0]) == pytest.approx(1.0)
    assert float((g.id_scale @ g.id_scale.T)[0, 0]) == pytest.approx(0.0, abs=1e-10)  # the constant slot
    z = built.model.sample_latent(50_000, generator=torch.Generator().manual_seed(0))
    w_id, w_exp = g.coefficients(z)
    torch.testing.assert_close(w_id.mean(0), g.id_mean, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(w_exp.T), g.exp_scale @ g.exp_scale.T, atol=0.03, rtol=0.05)
    # the codes' spread is real: identity codes vary, and with 16 identities at most 15 directions
    ev = torch.linalg.eigvalsh(g.id_scale @ g.id_scale.T)
    assert float(ev[-1]) > 0.1 and int((ev > 1e-6 * ev[-1]).sum()) <= 16


def test_metadata_and_report(built, dataset):
    meta = built.model.metadata
    assert meta["baseline"]["kind"] == "mae" and "WACV 2018" in meta["baseline"]["reference"]
    assert "[14]" in meta["baseline"]["reference"]
    assert meta["dataset"]["fingerprint"] == dataset.fingerprint
    assert meta["baseline"]["config"]["identity_dims"] == 65 and meta["baseline"]["report"] == built.report
    assert built.model.layout.blocks == (("identity", 65), ("expression", 20))
    assert built.model.generator.core.shape == (3 * dataset.num_vertices, 65, 20)
    assert built.report["counts"]["expression_labeled"] == int(np.sum(dataset.label("expression")[
        dataset.indices("train")] >= 0))
    json.dumps(built.report)


# ------------------------------------------------------------------------------ model file and API
def test_model_file_round_trips_bit_exact_in_a_fresh_process(built, model_file, tmp_path):
    from fitface.models.model_file import read_metadata

    doc = read_metadata(model_file)
    assert doc["generator"]["kind"] == "multilinear" and doc["generator"]["identity_dim"] == 65
    z = np.random.default_rng(2).normal(size=(3, 85)).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    script = textwrap.dedent(f"""
        import numpy as np, torch, fitface
        m = fitface.load_model({str(model_file)!r})
        out = {{"state." + k: v.numpy() for k, v in m.generator.state_dict().items()}}
        with torch.no_grad():
            out["torch"] = m.decode(torch.from_numpy(np.load({str(tmp_path / "z.npy")!r}))).numpy()
        out["meta"] = np.array([m.metadata["baseline"]["kind"]])
        np.savez({str(tmp_path / "out.npz")!r}, **out)
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    out = np.load(tmp_path / "out.npz")
    for k, v in built.model.generator.state_dict().items():
        np.testing.assert_array_equal(out[f"state.{k}"], v.numpy(), err_msg=k)
    with torch.no_grad():
        np.testing.assert_array_equal(out["torch"], built.model.decode(torch.from_numpy(z)).numpy())
    assert out["meta"][0] == "mae"


def test_fits_held_out_faces_better_than_the_aligned_mean_face(model_file, dataset):
    from fitface.fitting.decoder import load_decoder

    dec = load_decoder(model_file, dtype=np.float64)
    lset = dataset.landmark_sets["ibug68"]
    mean = dec.vertices(np.zeros((1, dec.latent_dim)))[0]
    test = dataset.indices("test")
    ratios = []
    for j in test[:: len(test) // 3][:3]:
        truth = dataset.vertices[j].astype(np.float64)
        res = fitface.fit(lset.points(truth, dataset.faces), model=model_file, unit=dataset.unit, preview=False,
                          restarts=4)
        aligned = umeyama(mean[None], truth[None], scale=False).apply(mean[None])[0]
        base = np.sqrt(((aligned - truth) ** 2).sum(-1).mean())
        ratios.append(np.sqrt(((res.vertices - truth) ** 2).sum(-1).mean()) / base)
    print("MAE fit / aligned mean face vertex RMSE on held-out faces:", np.round(ratios, 3))
    assert max(ratios) < FIT_RATIO, ratios


def test_load_sample_and_retarget(model_file, dataset, tmp_path):
    from fitface.fitting.decoder import load_decoder

    m = fitface.load_model(model_file)
    assert m.generator_kind == "multilinear" and m.metadata["baseline"]["kind"] == "mae"
    dec = load_decoder(model_file)
    s = fitface.sample(3, model=model_file, seed=1, out_dir=tmp_path / "s", picture=False)
    assert s.vertices.shape == (3, dataset.num_vertices, 3)
    z = np.stack([np.concatenate([np.asarray(v) for v in c.codes.values()]) for c in s.codes])
    np.testing.assert_allclose(s.vertices, dec.vertices(z), atol=DECODE_ATOL_MM)
    assert float(np.abs(s.vertices[0] - s.vertices[1]).max()) > 0.5  # samples differ (mm)
    lset = dataset.landmark_sets["ibug68"]
    tr = dataset.indices("train")
    for k, j in enumerate((tr[3], tr[900])):
        lm = lset.points(dataset.vertices[j].astype(np.float64), dataset.faces)
        fitface.fit(lm, model=model_file, unit=dataset.unit, out_dir=tmp_path / f"f{k}", preview=False)
    out = fitface.retarget(tmp_path / "f0" / "codes.json", tmp_path / "f1" / "codes.json", model=model_file,
                           model_frame=True)
    a, b = (json.loads((tmp_path / f"f{k}" / "codes.json").read_text())["codes"] for k in range(2))
    want = np.concatenate([np.asarray(b["identity"]), np.asarray(a["expression"])])
    np.testing.assert_allclose(out.vertices[0], dec.vertices(want[None])[0], atol=DECODE_ATOL_MM)
