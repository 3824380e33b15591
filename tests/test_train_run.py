"""End-to-end trainer tests on a tiny synthetic dataset (CPU): every recipe runs, resume is
exact, seeds reproduce, the CLI works, the model file loads in a fresh process, DDP (gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fitface.train.config import load_config
from fitface.train.logs import read_csv
from fitface.train.trainer import Trainer

RECIPES = ["paper", "cpu", "ablation_no_mesh_reg", "ablation_id_class_only", "ablation_exp_class_only",
           "ablation_no_feature_loss"]
#: Settings that keep the test runs small (the logic is unchanged).
FAST = {"progress": False, "log_every": 1, "metrics_samples": 8, "metrics_pairs": 8, "grid_columns": 2,
        "grid_cell": 48, "tensorboard": False, "num_threads": 2, "batch_size": 16}
LOSS_KEYS = ["d_loss", "d_gap", "d_gp", "d_cls", "g_loss", "g_gan", "g_cls", "g_feat", "g_reg"]


def _cfg(recipe="cpu", **kw):
    return load_config(recipe, {**FAST, **kw})


def _losses(run: Path) -> list[dict]:
    return [{k: r[k] for k in ["step", "phase", *LOSS_KEYS]} for r in read_csv(run / "losses.csv")]


def _weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "checkpoint.safetensors"))


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_runs_two_steps(tiny, tmp_path, recipe):
    res = Trainer(tiny, _cfg(recipe, max_steps=2, metrics_every=0, sample_every=0), tmp_path / "run").train(
        save_model=recipe == "paper")
    rows = read_csv(tmp_path / "run" / "losses.csv")
    assert [r["phase"] for r in rows] == ["identity", "expression"]
    for r in rows:
        for k in LOSS_KEYS:
            assert np.isfinite(float(r[k])), (recipe, k, r[k])
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["recipe"] == recipe
    if recipe == "ablation_no_mesh_reg":
        assert all(float(r["g_reg"]) == 0 for r in rows)
    if recipe == "ablation_no_feature_loss":
        assert all(float(r["g_feat"]) == 0 for r in rows)
    if recipe == "ablation_id_class_only":  # the expression phase has no classification term
        assert float(rows[1]["g_cls"]) == 0 and float(rows[0]["g_cls"]) > 0
    if recipe == "paper":
        assert res.model_path.is_file() and (tmp_path / "run" / "samples" / "step_0000002.png").is_file()
        from fitface.models.model_file import read_metadata

        # the trainer adds no photo-fitting data: `fitface train` adds the mediapipe set (below)
        assert read_metadata(res.model_path)["landmark_sets"] == ["ibug68"]


def test_resume_is_bit_exact(tiny, tmp_path):
    straight = tmp_path / "straight"
    Trainer(tiny, _cfg(max_steps=6, checkpoint_every=0), straight).train(save_model=False)
    split = tmp_path / "split"
    Trainer(tiny, _cfg(max_steps=3), split).train(save_model=False)
    Trainer(tiny, _cfg(max_steps=6), split, resume=True).train(save_model=False)
    assert _losses(split) == _losses(straight)  # identical strings: bit-exact floats
    a, b = _weights(straight), _weights(split)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    m1 = read_csv(straight / "metrics.csv")
    m2 = read_csv(split / "metrics.csv")
    assert m1[-1] == m2[-1]
    # step 0 is the untrained G (almost the template): nothing is nearer a real face than the mean
    assert m1[0]["step"] == "0" and float(m1[0]["near_share"]) == 0.0
    assert float(m1[0]["heldout_near_share"]) > 0.5  # held-out real faces are (the reference)


def test_seed_reproducible_and_seed_matters(tiny, tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        Trainer(tiny, _cfg(max_steps=2, seed=seed, metrics_every=0, sample_every=0), tmp_path / name).train(
            save_model=False)
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
    assert _losses(tmp_path / "a") != _losses(tmp_path / "c")


def test_cli_trains_and_model_loads_in_fresh_process(tiny, tmp_path):
    from fitface.cli import main

    run = tmp_path / "run"
    sets = [x for k, v in FAST.items() if k != "progress" for x in ("--set", f"{k}={str(v).lower()}")]
    code = main(["train", str(tiny), "--config", "cpu", "-o", str(run), "--max-steps", "2", "--device", "cpu",
                 "--no-progress", *sets])
    assert code == 0
    assert (run / "model.safetensors").is_file() and (run / "config.toml").is_file()
    script = (
        "import sys, json, torch\n"
        "from fitface.models.model_file import load_model, read_metadata\n"
        f"m = load_model({str(run / 'model.safetensors')!r})\n"
        "z = m.sample_latent(3, generator=torch.Generator().manual_seed(0))\n"
        "v = m.decode(z)\n"
        "doc = read_metadata(" + repr(str(run / 'model.safetensors')) + ")\n"
        "print(json.dumps({'shape': list(v.shape), 'finite': bool(torch.isfinite(v).all()),"
        " 'scale': doc['metadata']['displacement_scale'], 'recipe': doc['training_config']['recipe'],"
        " 'classes': doc['factors']['expression'][:2], 'sets': doc['landmark_sets']}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["shape"] == [3, 4285, 3] and info["finite"] and info["scale"] > 0
    assert info["recipe"] == "cpu" and info["classes"] == ["neutral", "anger"]
    assert info["sets"] == ["ibug68", "mediapipe"]  # photo fitting works on the final model


def test_cli_errors_are_one_line(tmp_path, capsys):
    from fitface.cli import main

    assert main(["train", str(tmp_path / "missing"), "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "not found" in err and len(err.splitlines()) == 1
    assert main(["train", str(tmp_path), "-o", str(tmp_path / "r"), "--config", "nope"]) == 2
    assert main(["train", str(tmp_path), "-o", str(tmp_path / "r"), "--set", "bogus=1"]) == 2
    assert main(["train", str(tmp_path), "-o", str(tmp_path / "r"), "--resume"]) == 2


def _cli_cmd(tiny, run, steps, extra=()):
    sets = [x for k, v in {**FAST, "checkpoint_every": 4, "metrics_every": 0, "sample_every": 0}.items()
            if k != "progress" for x in ("--set", f"{k}={str(v).lower()}")]
    return [sys.executable, "-m", "fitface", "train", str(tiny), "-c", "cpu", "-o", str(run), "--max-steps",
            str(steps), "--no-progress", *sets, *extra]


def test_kill_9_between_checkpoints_then_resume_matches(tiny, tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    ref = tmp_path / "ref"
    subprocess.run(_cli_cmd(tiny, ref, 8), check=True, env=env, capture_output=True, timeout=300)
    run = tmp_path / "killed"
    proc = subprocess.Popen(_cli_cmd(tiny, run, 8), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # wait until the step-4 checkpoint exists and step 5 (0-based) was logged, then kill -9
        deadline = time.time() + 240
        while time.time() < deadline:
            rows = read_csv(run / "losses.csv") if (run / "losses.csv").exists() else []
            if (run / "checkpoint.safetensors").exists() and len(rows) >= 6:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "model.safetensors").exists()
    subprocess.run(_cli_cmd(tiny, run, 8, ["--resume"]), check=True, env=env, capture_output=True, timeout=300)
    assert _losses(run) == _losses(ref)


def test_ddp_two_gloo_processes_match_one_process(tiny, tmp_path):
    """torchrun, 2 CPU processes (gloo), global batch 16 = 2 x 8 vs 1 process with batch 16.

    Instance noise is off: it is the only per-process draw (see docs/training.md)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    extra = ["--set", "instance_noise=0", "--set", "num_threads=1"]
    one = tmp_path / "one"
    subprocess.run(_cli_cmd(tiny, one, 3, extra), check=True, env=env, capture_output=True, timeout=300)
    two = tmp_path / "two"
    cmd = _cli_cmd(tiny, two, 3, extra)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone"]
    out = subprocess.run(torchrun + cmd[1:], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "data parallel: DistributedDataParallel over 2 processes" in out.stderr
    a, b = _losses(one), _losses(two)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        for k in LOSS_KEYS:
            assert float(rb[k]) == pytest.approx(float(ra[k]), rel=1e-3, abs=1e-4), (ra["step"], k)
    # Compare the *updates* (final - initial weights). Adam normalises each update to about lr
    # whatever the gradient's size, so a parameter whose gradient is ~0 (rounding noise) can move
    # by up to lr per step differently under the all-reduce's other rounding: every weight must
    # agree within steps * lr, and each tensor's update to 5% (relative, Frobenius norm).
    lr, steps = load_config("cpu").lr_g, 3
    init = Trainer(tiny, _cfg(seed=load_config("cpu").seed), tmp_path / "init")
    w0 = {**{f"G.{k}": v for k, v in init.G.state_dict().items()},
          **{f"D.{k}": v for k, v in init.D.state_dict().items()}}
    wa, wb = _weights(one), _weights(two)
    for k, v0 in w0.items():
        diff = (wb[k] - wa[k]).abs()
        assert float(diff.max()) <= steps * lr * 1.01, k
        da, db = wa[k] - v0, wb[k] - v0
        assert float((db - da).norm()) <= 0.05 * float(da.norm()) + 1e-12, k


def test_cli_resume_keeps_run_config_and_refuses_structural_changes(tiny, tmp_path, capsys, monkeypatch):
    from fitface.cli import main
    from fitface.train import checkpoint, trainer

    run = tmp_path / "run"
    sets = [x for k, v in {**FAST, "metrics_every": 0, "sample_every": 0}.items() if k != "progress"
            for x in ("--set", f"{k}={str(v).lower()}")]
    assert main(["train", str(tiny), "-o", str(run), "--max-steps", "2", "--no-progress", *sets]) == 0
    assert main(["train", str(tiny), "-o", str(run), "--max-steps", "4"]) == 2  # a run is there: no silent overwrite
    assert main(["train", str(tiny), "-o", str(run), "--resume", "--batch-size", "32"]) == 2
    assert "cannot change batch_size" in capsys.readouterr().err
    # without --max-steps the run's own max_steps (2) is kept: nothing left to train
    assert main(["train", str(tiny), "-o", str(run), "--resume", "--no-progress"]) == 0
    assert len(read_csv(run / "losses.csv")) == 2
    reads, load = [], checkpoint.load_checkpoint
    for module in (checkpoint, trainer):  # count the reads of the checkpoint file
        monkeypatch.setattr(module, "load_checkpoint", lambda p: reads.append(p) or load(p))
    assert main(["train", str(tiny), "-o", str(run), "--resume", "--max-steps", "3", "--no-progress"]) == 0
    assert [r["step"] for r in read_csv(run / "losses.csv")] == ["0", "1", "2"]
    assert reads == [run / checkpoint.CHECKPOINT_FILE]  # read once: the config and the state
