"""Unit tests of the trainer's parts: config, losses, sampling, metrics, folded critic."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fitface.errors import InputError
from fitface.evaluation.diversity_specificity import (
    NearestFace,
    ProgressEvaluator,
    diversity,
    mean_vertex_distance,
    near_training_share,
    vertex_groups,
)
from fitface.models.latent import LatentLayout
from fitface.train import losses as L
from fitface.train import sampling as S
from fitface.train.config import load_config, parse_set, recipe_names

RECIPES = ["paper", "cpu", "default_model", "ict", "ict_x100", "ict_fast", "ict_id100", "ablation_no_mesh_reg", "ablation_id_class_only", "ablation_exp_class_only",
           "ablation_no_feature_loss"]


# ----------------------------------------------------------------------------- config
def test_recipes_present_and_paper_values():
    assert sorted(RECIPES) == recipe_names()
    p = load_config("paper")
    assert (p.lambda_c, p.lambda_gan, p.lambda_cls, p.lambda_feat, p.lambda_reg) == (0.1, 1.0, 1.0, 0.5, 100.0)
    assert (p.lr_g, p.lr_d, p.betas_g, p.betas_d) == (2e-4, 2e-4, [0.9, 0.999], [0.9, 0.999])
    assert (p.batch_size, p.critic_steps, p.instance_noise, p.epochs) == (64, 3, 0.1, 200.0)
    assert p.latent_dims == {"identity": 65, "expression": 15} and p.noise_dim == 5
    # epoch = ceil(train / batch) G steps: 200 epochs of 30,559 faces ~ 95,600 steps
    assert p.total_steps(30559) == 200 * 478


def test_train_help_lists_every_recipe(capsys):
    """`fitface train --help` names the recipes from the folder, so a new recipe is never missing."""
    from fitface.cli import main

    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # click wraps the help text
    listed = text.split("Recipe name (", 1)[1].split(";", 1)[0]
    assert sorted(name.strip() for name in listed.split(",")) == recipe_names()


def test_ict_id100_is_ict_x100_with_a_100_dimensional_identity_code():
    """The identity-capacity lever of issue #26 changes one thing in the recipe it is measured against."""
    base, lever = load_config("ict_x100").to_dict(), load_config("ict_id100").to_dict()
    changed = {k: lever[k] for k in lever if lever[k] != base[k] and k != "recipe"}
    assert changed == {"latent_dims": {"identity": 100, "expression": 15}}


def test_ablations_differ_from_paper_in_one_thing_only():
    paper = load_config("paper").to_dict()
    expect = {"ablation_no_mesh_reg": {"lambda_reg": 0.0}, "ablation_no_feature_loss": {"lambda_feat": 0.0},
              "ablation_id_class_only": {"classify": ["identity"]},
              "ablation_exp_class_only": {"classify": ["expression"]}}
    for name, diff in expect.items():
        d = load_config(name).to_dict()
        changed = {k: d[k] for k in d if d[k] != paper[k] and k != "recipe"}
        assert changed == diff, name


def test_ict_x100_is_the_ict_recipe_with_stronger_penalties():
    base, strong = load_config("ict").to_dict(), load_config("ict_x100").to_dict()
    changed = {k: strong[k] for k in strong if strong[k] != base[k] and k != "recipe"}
    assert changed == {"lambda_projection": 1000.0, "lambda_subspace": 10000.0, "lambda_anchor": 1000.0,
                       "max_steps": 2000, "amp": False, "channels_last": False}
    assert strong["lambda_interaction"] == base["lambda_interaction"] == 10.0


def test_ict_fast_is_the_shipped_recipe_with_its_speed_levers_only():
    shipped, fast = load_config("ict_x100").to_dict(), load_config("ict_fast").to_dict()
    changed = {k: fast[k] for k in fast if fast[k] != shipped[k] and k != "recipe"}
    assert changed == {"amp": True, "channels_last": True, "gp_every": 4}


def test_overrides_and_toml_roundtrip(tmp_path):
    cfg = load_config("cpu", parse_set(["lr_g=1e-4", "betas_g=[0.5, 0.9]", "classify=['identity']",
                                        "max_steps=none", "device=cpu", "amp=true"]))
    assert cfg.lr_g == 1e-4 and cfg.betas_g == [0.5, 0.9] and cfg.classify == ["identity"]
    assert cfg.max_steps is None and cfg.device == "cpu" and cfg.amp is True
    path = tmp_path / "r.toml"
    path.write_text(cfg.to_toml())
    again = load_config(str(path))
    assert again.to_dict() == dataclasses.replace(cfg, recipe=cfg.recipe).to_dict()


@pytest.mark.parametrize("item", ["nope=1", "batch_size=3", "lr_g=-1", "betas_g=[1.5, 0.9]", "amp=maybe",
                                  "reg_reduction=max"])
def test_bad_overrides_raise_input_error(item):
    with pytest.raises(InputError):
        load_config("paper", parse_set([item]))


def test_unknown_recipe():
    with pytest.raises(InputError, match="known recipes"):
        load_config("papper")


# ----------------------------------------------------------------------------- losses
def test_class_weights_inverse_frequency():
    lab = np.array([0, 0, 0, 1, -1, -1, 2, 2, 2, 2, 2, 2])  # counts 3, 1, 6, class 3 absent
    w = L.class_weights(lab, 4)
    assert w[3] == 0
    np.testing.assert_allclose(w[:3] * np.array([3, 1, 6]), (w[0] * 3,) * 3, rtol=1e-6)  # w ∝ 1/count
    np.testing.assert_allclose(w[:3].mean(), 1.0, rtol=1e-6)
    assert (L.class_weights(lab, 4, "none") == 1).all()


def test_weighted_ce_matches_pytorch_ignore_index():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(10, 4, generator=g)
    labels = torch.tensor([0, 1, -1, 3, 3, -1, 2, 0, 1, 3])
    w = torch.tensor([0.5, 2.0, 1.0, 0.25])
    ref = F.cross_entropy(logits, labels, weight=w, ignore_index=-1)
    got = L.weighted_ce_sum(logits, labels, w) / L.weighted_ce_denominator(labels, w)
    torch.testing.assert_close(got, ref)
    # split into two shards, local sums / global denominator add up to the whole
    den = L.weighted_ce_denominator(labels, w)
    parts = L.weighted_ce_sum(logits[:5], labels[:5], w) / den + L.weighted_ce_sum(logits[5:], labels[5:], w) / den
    torch.testing.assert_close(parts, ref)


def test_pair_feature_loss_analytic():
    f = torch.tensor([[1.0, 0.0], [2.0, 0.0], [1.0, 0.0], [0.0, 3.0], [1.0, 1.0], [-1.0, -1.0]])
    # pairs: cos 1 -> 0; cos 0 -> 1; cos -1 -> 2; mean = 1
    torch.testing.assert_close(L.pair_feature_loss(f), torch.tensor(1.0))
    with pytest.raises(ValueError):
        L.pair_feature_loss(f[:5])


def test_gradient_penalty_linear_critic():
    # D(x) = <a, x>: grad = a everywhere, penalty = (||a|| - 1)^2
    a = torch.tensor([3.0, 4.0], requires_grad=True)
    x = torch.randn(8, 2, requires_grad=True)
    gp = L.gradient_penalty_from(x @ a, x)
    torch.testing.assert_close(gp, torch.tensor(16.0))
    (g,) = torch.autograd.grad(gp, a)  # double backward: d/da (||a|| - 1)^2 = 2 (||a|| - 1) a / ||a||
    torch.testing.assert_close(g, 2 * 4 * a.detach() / 5)



def test_critic_loss_is_eq6_with_the_gradient_penalty():
    """total = -(mean D(real) - mean D(fake)) + gp_weight * GP + lambda_C * sum_f CE_f (eq. 6 as D
    minimises it), for the linear critic D(x) = <a, x> (GP = (||a|| - 1)^2 = 16)."""
    g = torch.Generator().manual_seed(3)
    a = torch.tensor([3.0, 4.0], requires_grad=True)
    real, fake = torch.randn(8, 2, generator=g), torch.randn(8, 2, generator=g)
    x_hat = L.interpolate(real, fake, torch.rand(8, generator=g)).requires_grad_(True)
    logits = {"identity": torch.randn(5, 4, generator=g), "expression": torch.randn(3, 2, generator=g)}
    labels = {"identity": torch.tensor([0, 3, 3, 1, 2]), "expression": torch.tensor([1, 0, 1])}
    weights = {"identity": torch.tensor([0.5, 2.0, 1.0, 0.25]), "expression": None}
    denoms = {f: L.weighted_ce_denominator(labels[f], weights[f]) for f in labels}
    loss = L.critic_loss(real @ a, fake @ a, x_hat @ a, x_hat, logits, labels, weights, denoms, gp_weight=10.0,
                         lambda_c=0.1)
    assert isinstance(loss, L.CriticLoss) and set(loss.cls) == {"identity", "expression"}
    gap = (real @ a).mean() - (fake @ a).mean()
    ce = {f: F.cross_entropy(logits[f], labels[f], weight=weights[f]) for f in labels}
    torch.testing.assert_close(loss.gap, gap)
    torch.testing.assert_close(loss.gp, torch.tensor(16.0))
    for f in labels:
        torch.testing.assert_close(loss.cls[f], ce[f])
    torch.testing.assert_close(loss.total, -gap + 10.0 * 16.0 + 0.1 * (ce["identity"] + ce["expression"]))
    # a batch split over 2 processes (local sums, global denominators): the mean of the shards'
    # classification terms is the whole batch's
    halves = []
    for rows, lab in ((slice(0, 4), slice(0, 2)), (slice(4, 8), slice(2, 5))):
        xh = x_hat[rows]
        halves.append(L.critic_loss(real[rows] @ a, fake[rows] @ a, xh @ a, xh, {"identity": logits["identity"][lab]},
                                    {"identity": labels["identity"][lab]}, weights, denoms, 10.0, 0.1, world_size=2))
        torch.testing.assert_close(halves[-1].gp, torch.tensor(16.0))
    torch.testing.assert_close((halves[0].cls["identity"] + halves[1].cls["identity"]) / 2, ce["identity"])
    assert L.critic_loss(real @ a, fake @ a, x_hat @ a, x_hat, {}, {}, {}, {}, 10.0, 0.1).cls == {}


def test_generator_loss_is_eq8_with_the_penalties():
    """total = l1 (-mean D(G(z))) + l2 CE + l3 sum of the unlabeled factors' feature losses + l4 L_reg
    (eq. 8), plus the weighted penalties when given; a term whose weight is 0 is 0."""
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(4)
    scores, logits = torch.randn(6, generator=g), torch.randn(6, 3, generator=g)
    labels = torch.tensor([0, 2, 1, 1, 0, 2])
    features = {"expression": torch.randn(6, 5, generator=g), "noise": torch.randn(6, 5, generator=g)}
    reg = torch.tensor(0.03)
    w = SimpleNamespace(lambda_gan=1.5, lambda_cls=2.0, lambda_feat=0.5, lambda_reg=100.0, lambda_interaction=3.0,
                        lambda_projection=0.25, lambda_subspace=4.0, lambda_anchor=0.125)
    pen = L.GeneratorPenalties(*(torch.tensor(v) for v in (0.1, 0.2, 0.3, 0.4)))
    loss = L.generator_loss(scores, logits, labels, features, reg, w, pen)
    assert isinstance(loss, L.GeneratorLoss)
    ce = F.cross_entropy(logits, labels)
    feat = L.pair_feature_loss(features["expression"]) + L.pair_feature_loss(features["noise"])
    paper = 1.5 * -scores.mean() + 2.0 * ce + 0.5 * feat + 100.0 * reg
    torch.testing.assert_close(loss.total, paper + 3.0 * 0.1 + 0.25 * 0.2 + 4.0 * 0.3 + 0.125 * 0.4)
    torch.testing.assert_close(torch.stack(loss[1:]), torch.stack([-scores.mean(), ce, feat, reg, *pen]))
    bare = L.generator_loss(scores, logits, labels, features, reg, w)  # no penalties: 0, not in the total
    torch.testing.assert_close(bare.total, paper)
    assert all(float(t) == 0 for t in bare[5:])
    off = SimpleNamespace(**{**vars(w), "lambda_cls": 0.0, "lambda_feat": 0.0})
    for loss in (L.generator_loss(scores, logits, labels, features, reg, off),
                 L.generator_loss(scores, None, None, {}, reg, w)):  # no labeled factor, no pairs
        assert float(loss.cls) == 0 and float(loss.feat) == 0
        torch.testing.assert_close(loss.total, 1.5 * -scores.mean() + 100.0 * reg)


# ----------------------------------------------------------------------------- sampling
LAYOUT = LatentLayout((("identity", 6), ("expression", 4), ("noise", 2)))


def test_step_seed_is_pure_and_distinct():
    assert S.step_seed(1, 5, "codes") == S.step_seed(1, 5, "codes")
    seeds = {S.step_seed(1, s, st, k) for s in range(20) for st in S.STREAMS for k in range(3)}
    assert len(seeds) == 20 * len(S.STREAMS) * 3


def test_phase_batch_structure():
    codes = S.fixed_codes(LAYOUT, {"identity": 5, "expression": 3}, seed=0)
    sampler = S.LabelSampler({"identity": 5, "expression": 3}, {"identity": np.array([0, .5, .5, 0, 0])})
    pb = S.phase_batch(LAYOUT, codes, sampler, "identity", 16, S.torch_generator(0, 3, "codes"))
    parts = LAYOUT.split(pb.z)
    assert pb.factor == "identity" and set(pb.labels.tolist()) <= {1, 2}  # empirical probabilities respected
    torch.testing.assert_close(parts["identity"], codes["identity"][pb.labels])
    e = parts["expression"]
    torch.testing.assert_close(e[0::2], e[1::2])  # pairs share the unlabeled code
    assert not torch.allclose(e[0], e[2])
    assert not torch.allclose(parts["noise"][0::2], parts["noise"][1::2])  # noise differs within a pair
    pb2 = S.phase_batch(LAYOUT, codes, sampler, "identity", 16, S.torch_generator(0, 3, "codes"))
    assert torch.equal(pb.z, pb2.z)  # pure function of (seed, step)


def test_real_batches_cover_epoch_without_replacement():
    n, b = 50, 8
    per_epoch = n // b
    seen = np.concatenate([S.real_batch_indices(0, r, n, b) for r in range(per_epoch)])
    assert len(np.unique(seen)) == len(seen) == per_epoch * b
    assert not np.array_equal(S.real_batch_indices(0, 0, n, b), S.real_batch_indices(0, per_epoch, n, b))
    assert S.real_batch_indices(0, 0, 5, 8).shape == (8,)  # batch larger than the set: cycled


# ----------------------------------------------------------------------------- metrics
def test_nearest_face_is_exact():
    g = torch.Generator().manual_seed(1)
    V = 300
    template = torch.randn(V, 3, generator=g).numpy() * 50
    ref = torch.randn(120, V, 3, generator=g) + torch.linspace(0, 3, 120)[:, None, None]
    q = torch.randn(15, V, 3, generator=g) * 1.2 + 1.0
    brute = torch.stack([mean_vertex_distance(ref, qi[None].expand_as(ref)) for qi in q])  # (15, 120)
    nf = NearestFace(ref, vertex_groups(template, 32))
    d, idx = nf(q)
    torch.testing.assert_close(d, brute.min(1).values)
    assert torch.equal(idx, brute.argmin(1))
    assert (nf.lower_bounds(q) <= brute + 1e-4).all()  # it is a lower bound


def test_near_training_share_scores_mean_face_zero_and_training_faces_one():
    g = torch.Generator().manual_seed(2)
    V = 200
    mean_face = torch.randn(V, 3, generator=g) * 30
    people = mean_face + 3.0 * torch.randn(6, 1, 3, generator=g) + 0.5 * torch.randn(6, V, 3, generator=g)
    train = people + 0.2 * torch.randn(6, V, 3, generator=g)  # one training face per "person"
    unseen = people + 0.2 * torch.randn(6, V, 3, generator=g)  # the same people, other captures
    ev = ProgressEvaluator(train, mean_face.numpy(), LAYOUT, num_samples=6, num_pairs=4, seed=0, heldout=unseen)
    assert ev.heldout_share == 1.0 and 0 < ev.heldout_nearest < 0.5
    assert ev.template_distance > 2.0  # the mean face is far from each (offset) person here

    const = lambda z, face: face[None].expand(z.shape[0], -1, -1).clone()  # noqa: E731
    collapsed = ev(lambda z: const(z, mean_face))
    assert collapsed.near_share == 0.0 and collapsed.mean_face_distance == pytest.approx(0.0, abs=1e-5)
    memorised = ev(lambda z: train[torch.arange(z.shape[0]) % 6])
    assert memorised.near_share == 1.0 and memorised.specificity == pytest.approx(0.0, abs=1e-5)
    # half-way between the mean face and a person: nearer the person only when ratio < 1 allows it
    half = 0.5 * (mean_face + train[0])
    d, t = ev.nearest(half[None])[0], ev.to_template(half[None])
    assert near_training_share(d, t, 1.01) == 1.0 and near_training_share(d, t, 0.99) == 0.0
    with pytest.raises(ValueError, match="near_ratio"):
        near_training_share(d, t, 0.0)


def test_diversity_shared_code_is_zero_for_that_factor_only():
    W = torch.zeros(LAYOUT.dim, 5 * 3)
    W[:6] = 1.0  # only the identity block moves the mesh
    decode = lambda z: (z @ W).view(-1, 5, 3)  # noqa: E731
    d = diversity(decode, LAYOUT, 50, torch.Generator().manual_seed(0))
    assert d["shared_identity"] == pytest.approx(0.0, abs=1e-6)
    assert d["global"] > 1 and d["shared_expression"] > 1


# ----------------------------------------------------------------------------- folding
def test_folded_critic_equals_mapping_of_generator():
    from fitface.geometry.mapping import GeometryMapping
    from fitface.models.generator import Generator
    from fitface.train.trainer import FoldedCritic

    # a small disk: a 6x6 grid of vertices, UV = normalised xy
    xs, ys = np.meshgrid(np.linspace(0, 1, 6), np.linspace(0, 1, 6))
    uv = np.c_[xs.ravel(), ys.ravel()]
    faces = []
    for i in range(5):
        for j in range(5):
            a = i * 6 + j
            faces += [[a, a + 1, a + 7], [a, a + 7, a + 6]]
    faces = np.array(faces)
    mp = GeometryMapping(uv, faces, 16)
    torch.manual_seed(0)
    G = Generator(LAYOUT.dim, 36, hidden=32)
    with torch.no_grad():
        G.out.weight.normal_()
        G.out.bias.normal_()
    fc = FoldedCritic(mp.matrix("scipy"), 16, scale=2.5)
    fc.refresh(G)
    z = torch.randn(4, LAYOUT.dim)
    with torch.no_grad():
        want = mp(G(z)) / 2.5
    torch.testing.assert_close(fc.images(G, z), want, rtol=1e-5, atol=1e-5)
    # under mixed precision: the same images in float32, to bfloat16's 8-bit mantissa
    low = FoldedCritic(mp.matrix("scipy"), 16, scale=2.5, compute_dtype=torch.bfloat16)
    low.refresh(G)
    got = low.images(G, z)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0, atol=0.02 * float(want.abs().max()))
    assert float((got - want).abs().max()) > 0  # it did compute in bfloat16
    with pytest.raises(ValueError, match="mapping_matrix"):
        FoldedCritic(mp.matrix("scipy"), 8, scale=2.5)


# ----------------------------------------------------------------------------- older runs
def test_config_of_an_earlier_version_still_loads():
    from fitface.train.config import REMOVED_FIELDS, TrainConfig

    old = {**TrainConfig().to_dict(), "near_threshold": None, "near_fraction": 0.75, "batch_size": 32}
    for k in REMOVED_FIELDS:
        assert k in old
    with pytest.warns(UserWarning, match="near_fraction, near_threshold"):
        cfg = TrainConfig.from_dict(old, where="run/config.json")
    assert cfg.batch_size == 32
    with pytest.raises(InputError, match="no_such_field"):
        TrainConfig.from_dict({"no_such_field": 1})


def test_csv_log_resume_keeps_rows_written_with_other_columns(tmp_path):
    from fitface.train.logs import CsvLog, read_csv

    p = tmp_path / "metrics.csv"
    p.write_text("step,div_global,near_threshold\n0,0.1,0.86\n500,3.5,0.86\n1000,4.0,0.86\n")
    log = CsvLog(p, ["step", "div_global", "near_share"], resume_step=600)
    log.write({"step": 1000, "div_global": 4.25, "near_share": 0.5})
    rows = read_csv(p)
    assert [r["step"] for r in rows] == ["0", "500", "1000"]
    assert rows[1] == {"step": "500", "div_global": "3.5", "near_share": ""}
    assert rows[2]["near_share"] == "0.5"
