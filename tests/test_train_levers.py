"""The trainer's levers beyond the paper (issue #12): the linear warm start, the interaction
penalty, the weight average (EMA), the critic warm-up and bfloat16 autocast on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fitface.models.generator import Generator
from fitface.models.latent import LatentLayout
from fitface.train import losses as L
from fitface.train.config import load_config
from fitface.train.logs import read_csv
from fitface.train.sampling import interaction_codes, torch_generator
from fitface.train.trainer import Trainer
from fitface.train.warm_start import set_linear

FAST = {"progress": True, "log_every": 1, "metrics_every": 0, "sample_every": 0, "tensorboard": False,
        "num_threads": 2, "batch_size": 16, "interaction_pairs": 4, "interaction_vertices": 200}
LEVERS = {"init": "linear_3dmm", "fixed_codes_init": "model", "critic_warmup": 1, "lambda_interaction": 1.0,
          "ema_decay": 0.9}


@pytest.mark.parametrize("slope", [0.0, 0.2])
def test_set_linear_is_the_linear_map_exactly(slope):
    torch.manual_seed(0)
    G = Generator(7, 11, hidden=20, negative_slope=slope).double()
    B, b = torch.randn(33, 7, dtype=torch.float64), torch.randn(33, dtype=torch.float64)
    set_linear(G, B, b)
    z = torch.randn(50, 7, dtype=torch.float64)
    torch.testing.assert_close(G(z).reshape(50, -1), z @ B.T + b, rtol=1e-12, atol=1e-12)
    # the spare hidden units carry no output yet but get gradients (they can learn)
    G(z).square().sum().backward()
    assert G.out.weight.grad[:, 14:].abs().sum() > 0


def test_set_linear_needs_twice_the_latent_width():
    G = Generator(7, 11, hidden=13)
    with pytest.raises(ValueError, match="hidden >= 2"):
        set_linear(G, torch.zeros(33, 7), torch.zeros(33))


def test_interaction_codes_share_the_right_blocks():
    layout = LatentLayout((("identity", 3), ("expression", 2), ("noise", 1)))
    z = interaction_codes(layout, "expression", 5, torch_generator(0, 0, "t")).view(5, 4, 6)
    e, rest = slice(3, 5), [0, 1, 2, 5]
    assert torch.equal(z[:, 0, rest], z[:, 1, rest]) and torch.equal(z[:, 2, rest], z[:, 3, rest])
    assert torch.equal(z[:, 0, e], z[:, 2, e]) and torch.equal(z[:, 1, e], z[:, 3, e])
    assert not torch.equal(z[:, 0, rest], z[:, 2, rest]) and not torch.equal(z[:, 0, e], z[:, 1, e])


def test_interaction_penalty_zero_iff_additive():
    layout = LatentLayout((("identity", 3), ("expression", 2)))
    z = interaction_codes(layout, "expression", 64, torch_generator(0, 0, "t")).view(64, 4, 5).double()
    A, E = torch.randn(3, 10, dtype=torch.float64), torch.randn(2, 10, dtype=torch.float64)
    additive = torch.tanh(z[..., :3] @ A) + (z[..., 3:] @ E) ** 2  # (64, 4, 10): f(a) + g(e)
    assert float(L.interaction_penalty(additive)) < 1e-24
    mixed = additive + (z[..., :1] * z[..., 3:4])  # an a-e product term
    # analytic value: (a0 - b0)(e0 - e0')  ->  E[(a0-b0)^2] E[(e0-e0')^2] = 2 * 2 = 4
    assert float(L.interaction_penalty(mixed)) == pytest.approx(4.0, rel=0.3)
    zz = z.clone().requires_grad_(True)
    torch.autograd.gradcheck(lambda q: L.interaction_penalty(q[..., :1] * q[..., 3:4]), (zz[:4],))


def test_trainer_with_every_lever_runs_and_warm_start_is_the_3dmm(tiny, tmp_path):
    from fitface.models.builders.linear import build_linear_3dmm

    tr = Trainer(tiny, load_config("cpu", {**FAST, **LEVERS, "max_steps": 3}), tmp_path / "run")
    lin = build_linear_3dmm(tiny, tr.layout)
    z = torch.randn(6, tr.layout.dim)
    with torch.no_grad():
        np.testing.assert_allclose(tr.decode(z).numpy(), lin.decode(z).numpy(), atol=1e-3)  # mm
    # T holds each class's mean code under the 3DMM: finite, not the random draw
    assert all(torch.isfinite(c).all() for c in tr.codes.values())
    g0 = {k: v.clone() for k, v in tr.G.state_dict().items()}
    tr.step(0)  # critic warm-up: G does not move
    assert all(torch.equal(g0[k], v) for k, v in tr.G.state_dict().items())
    tr.step(1)
    assert not torch.equal(g0["out.weight"], tr.G.out.weight)
    # the EMA moved by (1 - decay) of the step
    torch.testing.assert_close(tr.G_ema.out.weight, g0["out.weight"] + 0.1 * (tr.G.out.weight - g0["out.weight"]))
    tr.train(save_model=False)
    rows = read_csv(tmp_path / "run" / "losses.csv")
    assert rows[0]["phase"] == "critic_warmup" and rows[0]["g_loss"] == ""
    assert all(np.isfinite(float(r["g_int"])) and float(r["g_int"]) >= 0 for r in rows[1:])


def test_resume_is_bit_exact_with_the_levers(tiny, tmp_path):
    from safetensors.torch import load_file

    every = {**LEVERS, "lambda_projection": 1.0, "lambda_subspace": 1.0, "lambda_anchor": 1.0, "subspace_pairs": 2}
    cfg = lambda n: load_config("cpu", {**FAST, **every, "max_steps": n})  # noqa: E731
    Trainer(tiny, cfg(4), tmp_path / "straight").train(save_model=False)
    Trainer(tiny, cfg(2), tmp_path / "split").train(save_model=False)
    Trainer(tiny, cfg(4), tmp_path / "split", resume=True).train(save_model=False)
    a = load_file(str(tmp_path / "straight" / "checkpoint.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoint.safetensors"))
    assert a.keys() == b.keys() and any(k.startswith("E.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_bfloat16_on_cpu_is_deterministic_and_close_to_float32(tiny, tmp_path):
    out = {}
    for name, amp in (("a", True), ("b", True), ("f", False)):
        # amp_emulated: autocast also where this CPU has no native bfloat16 (the numbers are the same kind)
        tr = Trainer(tiny, load_config("cpu", {**FAST, "amp": amp, "amp_emulated": True, "max_steps": 2}),
                     tmp_path / name)
        assert tr.use_amp == amp
        out[name] = [tr.step(s) for s in range(2)]
    assert out["a"] == out["b"]  # same seed, same bits
    assert out["a"] != out["f"]  # bfloat16 really ran
    for va, vf in zip(out["a"], out["f"]):
        assert va["g_reg"] == pytest.approx(vf["g_reg"], rel=0.1)


def test_amp_falls_back_to_float32_where_the_cpu_has_no_bfloat16(tiny, tmp_path, monkeypatch):
    import fitface.train.precision as P
    from fitface.errors import FitfaceWarning

    monkeypatch.setattr(P, "native_bfloat16", lambda device: False)
    with pytest.warns(FitfaceWarning, match="no native bfloat16.*training in float32"):
        tr = Trainer(tiny, load_config("cpu", {**FAST, "amp": True, "max_steps": 1}), tmp_path / "a")
    assert not tr.use_amp and tr.folded.compute_dtype == torch.float32
    forced = Trainer(tiny, load_config("cpu", {**FAST, "amp": True, "amp_emulated": True, "max_steps": 1}),
                     tmp_path / "b")
    assert forced.use_amp and forced.precision.warning == ""
    monkeypatch.setattr(P, "native_bfloat16", lambda device: True)
    assert P.resolve_precision(True, torch.device("cpu")) == P.Precision(True)
    assert P.resolve_precision(False, torch.device("cpu")) == P.Precision(False)
    if not torch.cuda.is_available():  # a GPU without bfloat16 is refused even when forced
        monkeypatch.setattr(P, "native_bfloat16", lambda device: False)
        assert not P.resolve_precision(True, torch.device("cuda"), emulated=True).autocast


def test_proxy_evaluation_is_logged_during_training(tiny, tmp_path):
    cfg = load_config("cpu", {**FAST, "max_steps": 2, "proxy_every": 2, "metrics_every": 2, "metrics_samples": 8,
                              "metrics_pairs": 8})
    Trainer(tiny, cfg, tmp_path / "run").train(save_model=False)
    rows = read_csv(tmp_path / "run" / "metrics.csv")
    assert [r["step"] for r in rows] == ["0", "2"]
    for r in rows:  # the procedural set has generating coefficients: the ratios are computed
        assert 0 <= float(r["proxy_coef_ratio_identity"]) < 2 and np.isfinite(float(r["proxy_div"]))
    # a warm-start-free G at step 0 is (almost) the template: no diversity yet
    assert float(rows[0]["proxy_div"]) < 0.1 < float(rows[0]["proxy_ref_div"])


def test_cross_projection_penalty_sees_an_additive_leak():
    ident, expr = slice(0, 3), slice(3, 5)
    layout = LatentLayout((("identity", 3), ("expression", 2)))
    z = interaction_codes(layout, "expression", 64, torch_generator(0, 0, "t")).view(64, 4, 5).double()
    clean = z.clone()  # the linear model's own coefficients: each block moves only itself
    assert float(L.cross_projection_penalty(clean, ident, expr)) == 0.0
    leak = clean.clone()
    leak[..., 3] += 0.5 * z[..., 0]  # identity code 0 adds an expression-mode displacement (additively)
    assert float(L.interaction_penalty(leak)) < 1e-24  # invisible to the interaction penalty
    # E|0.5 (a0 - b0)|^2 = 0.5, counted in one of the two halves
    assert float(L.cross_projection_penalty(leak, ident, expr)) == pytest.approx(0.25, rel=0.3)


def test_projection_penalty_is_zero_at_the_warm_start(tiny, tmp_path):
    cfg = load_config("cpu", {**FAST, "init": "linear_3dmm", "lambda_projection": 1.0, "max_steps": 1})
    tr = Trainer(tiny, cfg, tmp_path / "run")
    v = tr.step(0)
    assert v["g_proj"] < 1e-6 and tr.projector.shape[1] == 3 * 4285 and v["g_sub"] == 0


def test_subspace_penalty_is_the_residual_outside_the_modes():
    q, _ = torch.linalg.qr(torch.randn(12, 3, dtype=torch.float64))
    inside = torch.randn(5, 3, dtype=torch.float64) @ q.T  # (5, 12) in the span
    assert float(L.subspace_penalty(inside, q)) < 1e-28
    out = torch.randn(5, 12, dtype=torch.float64)
    resid = out - out @ q @ q.T
    assert float(L.subspace_penalty(out, q)) == pytest.approx(float(resid.square().mean()), rel=1e-12)
    assert float(L.subspace_penalty(inside + resid, q)) == pytest.approx(float(resid.square().mean()), rel=1e-9)


def test_subspace_penalty_is_zero_at_the_warm_start_and_trains(tiny, tmp_path):
    cfg = load_config("cpu", {**FAST, "init": "linear_3dmm", "lambda_subspace": 1.0, "lambda_projection": 1.0,
                              "subspace_pairs": 2, "max_steps": 2})
    tr = Trainer(tiny, cfg, tmp_path / "run")
    v0 = tr.step(0)
    assert v0["g_sub"] < 1e-8 and v0["g_proj"] < 1e-6
    v1 = tr.step(1)
    assert np.isfinite(v1["g_sub"])


def test_identity_anchor_is_zero_for_the_3dmm_and_sees_a_rescaled_identity(tiny, tmp_path):
    cfg = load_config("cpu", {**FAST, "init": "linear_3dmm", "lambda_anchor": 1.0, "max_steps": 1})
    tr = Trainer(tiny, cfg, tmp_path / "run")
    assert tr.step(0)["g_anchor"] < 1e-6  # the warm start is the 3DMM: codes are its coefficients
    with torch.no_grad():  # identity modes at twice their size: the anchor sees it
        tr.G.out.weight.mul_(2.0)
    assert tr.generator_step(1)["g_anchor"] > 1.0


def test_critic_loss_without_interpolates_has_no_penalty():
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([0.5, 0.5])
    loss = L.critic_loss(real, fake, None, None, {}, {}, {}, {}, gp_weight=10.0, lambda_c=0.1)
    assert float(loss.gp) == 0.0 and float(loss.total) == pytest.approx(-(2.0 - 0.5))


def test_lazy_penalty_runs_every_nth_update_weighted_n_times(tiny, tmp_path):
    """gp_every = 2: the first update is the every-update recipe's with twice the weight, the
    second its update without the penalty, bit for bit; the update count runs across steps."""
    def trainer(name, **over):
        return Trainer(tiny, load_config("cpu", {**FAST, "max_steps": 2, **over}), tmp_path / name)

    lazy, heavy = trainer("lazy", gp_every=2), trainer("heavy", gp_weight=20.0)
    assert [lazy.penalised_update(s, k) for s in range(2) for k in range(3)] == [True, False, True, False, True, False]
    assert all(heavy.penalised_update(s, k) for s in range(2) for k in range(3))
    va, vb = lazy.critic_step(0, 0), heavy.critic_step(0, 0)
    assert va["d_gp"] == vb["d_gp"] > 0
    for a, b in zip(lazy.D.parameters(), heavy.D.parameters()):
        assert torch.equal(a, b)
    heavy.cfg.gp_weight = 0.0  # the second update: no penalty in either
    va, vb = lazy.critic_step(0, 1), heavy.critic_step(0, 1)
    assert "d_gp" not in va and va["d_loss"] == vb["d_loss"]
    for a, b in zip(lazy.D.parameters(), heavy.D.parameters()):
        assert torch.equal(a, b)


def test_lazy_penalty_logs_the_penalty_of_the_updates_that_computed_it(tiny, tmp_path):
    cfg = load_config("cpu", {**FAST, "max_steps": 4, "gp_every": 6, "critic_steps": 3})
    Trainer(tiny, cfg, tmp_path / "run").train(save_model=False)
    rows = read_csv(tmp_path / "run" / "losses.csv")
    assert [r["d_gp"] != "" for r in rows] == [True, False, True, False]  # updates 0 and 6
    with pytest.raises(Exception, match="gp_every"):
        load_config("cpu", {"gp_every": 0})


def test_every_benchmark_variant_is_a_valid_config():
    """bench_train_step.py --compare NAME resolves for every NAME (a typo in an override fails here)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train_step.py"
    spec = importlib.util.spec_from_file_location("bench_train_step", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for name, (recipe, over) in bench.VARIANTS.items():
        cfg = load_config(recipe, over)
        for key, value in over.items():
            assert getattr(cfg, key) == value, (name, key)
    assert bench.VARIANTS["ict_x100_gp4"][1]["gp_every"] == 4
