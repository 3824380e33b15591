"""scripts/gpu_check.sh (issue 26, section 4): the GPU machine's check, run here on the CPU.

``GPU_CHECK_DEVICE=cpu`` runs the CUDA stages on the CPU, on a tiny ICT set (4 identities, 60
faces) that the script's data stage builds into tmp_path, with 2-3 steps and small metric counts;
DDP is then skipped with its reason. The fast tests run the stages up to the first training run
and DDP (about 20 s on 2 cores); every stage, the proxy evaluation included, is a slow test (48 s
on a quiet machine, about 2 minutes on a busy one: each training run starts torch and builds its
trainer), and so is the DDP stage forced onto the CPU (two gloo processes).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"
#: Every stage the JSON records, in order.
STAGES = ["env", "install", "data", "train", "train_amp", "ddp", "paper", "proxy"]
#: Small trainer counts for the CPU runs (the metrics at the start and the end dominate otherwise).
TINY_SET = ("batch_size=8 metrics_samples=10 metrics_pairs=10 metrics_max_train=20 metrics_heldout=10 "
            "tensorboard=false")
#: Small proxy counts for the tiny set (one test identity: retargeting is skipped, NaN in the row).
TINY_PROXY = {"captures": 3, "retarget_pairs": 3, "coef_n": 10, "coef_m": 5, "div_pairs": 20, "spec_samples": 6,
              "spec_max_train": 20, "steps": 50}


def run_check(tmp_path: Path, args=(), timeout: float = 400, **env) -> tuple[subprocess.CompletedProcess, dict]:
    """Run the script with GPU_CHECK_* settings ``env`` (on top of a clean copy of os.environ);
    returns the process and the JSON it wrote (``{}`` when none)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("GPU_CHECK_") and k != "OUT"}
    full.update({"GPU_CHECK_PYTHON": sys.executable, "GPU_CHECK_DEVICE": "cpu",
                 "GPU_CHECK_WORK": str(tmp_path / "work")})
    full.update({k: str(v) for k, v in env.items()})
    proc = subprocess.run(["bash", str(SCRIPT), *map(str, args)], env=full, capture_output=True, text=True,
                          timeout=timeout, cwd=tmp_path)
    out = Path(args[0]) if args else Path(env.get("OUT", tmp_path)) / "gpu_check.json"
    doc = json.loads(out.read_text()) if out.is_file() else {}
    return proc, doc


def tiny_env(tmp_path: Path, ict_path: Path, stages: str) -> dict:
    return dict(GPU_CHECK_STAGES=stages, GPU_CHECK_DATA=tmp_path / "ict", GPU_CHECK_ICT_SOURCE=ict_path,
                GPU_CHECK_ICT_IDENTITIES=4, GPU_CHECK_ICT_SAMPLES=60, GPU_CHECK_WORKERS=0, GPU_CHECK_STEPS=2,
                GPU_CHECK_PAPER_STEPS=3, GPU_CHECK_TRAIN_SET=TINY_SET,
                GPU_CHECK_PROXY_CONFIG=json.dumps(TINY_PROXY))


def check_common(doc: dict) -> None:
    """The JSON's top-level structure and the environment record."""
    assert doc["schema"] == "fitface-gpu-check/1"
    assert list(doc["stages"]) == STAGES
    assert doc["device"] == "cpu" and doc["torch"] and "cuda_version" in doc and doc["device_name"]
    env = doc["environment"]
    assert env["cuda_device_count"] == 0 or env["cuda_available"]
    assert isinstance(env["missing_dependencies"], list) and "torch" not in env["missing_dependencies"]
    for name, st in doc["stages"].items():
        assert st["status"] in ("ok", "failed", "timeout", "skipped"), (name, st)
        assert isinstance(st.get("required", False), bool), (name, st)


def check_ddp_skipped(doc: dict) -> None:
    ddp = doc["stages"]["ddp"]
    assert ddp["status"] == "skipped" and ddp["required"] is False
    assert "GPU_CHECK_DEVICE=cpu" in ddp["reason"] and ">= 2" in ddp["reason"]


def check_train(st: dict, steps: int, amp: bool) -> None:
    """A CPU training stage that passed: rc 0, the model written, a finite s/step."""
    assert st["status"] == "ok" and st["rc"] == 0 and st["required"] is True, st.get("log_tail")
    assert st["model_written"] is True and st["model_bytes"] > 0
    assert st["steps_done"] == steps and st["config"]["amp"] is amp and st["config"]["device"] == "cpu"
    for key in ("s_per_step", "it_per_s_median", "s_per_step_overall", "seconds"):
        assert isinstance(st[key], float) and math.isfinite(st[key]) and st[key] > 0, (key, st[key])
    assert st["losses_finite"] is True and st["losses_rows"] >= 1
    assert st["series"]["columns"] == ["step", "it_per_s", "d_loss", "g_loss"]
    assert st["series"]["rows"][-1][0] == steps - 1
    assert st["precision"] in ("float32", "bfloat16 autocast", "float32 (bfloat16 refused)")
    assert "--device cpu" in st["command"] and f"--max-steps {steps}" in st["command"]


def test_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_bad_usage_exits_2(tmp_path):
    proc, doc = run_check(tmp_path, args=[tmp_path / "a.json", tmp_path / "b.json"])
    assert proc.returncode == 2 and "usage" in proc.stderr and doc == {}
    proc, _ = run_check(tmp_path, GPU_CHECK_STEPS="two")
    assert proc.returncode == 2 and "GPU_CHECK_STEPS must be a non-negative integer" in proc.stderr


def test_no_budget_fails_every_required_stage_and_still_writes_the_json(tmp_path):
    """With no time left, every stage is recorded (failed: budget exhausted), the JSON lands in
    $OUT/gpu_check.json and the exit status is 1."""
    out = tmp_path / "out"
    proc, doc = run_check(tmp_path, timeout=120, OUT=out, GPU_CHECK_BUDGET_S=0,
                          GPU_CHECK_DATA=tmp_path / "absent", GPU_CHECK_ICT_SOURCE=tmp_path / "absent.npz")
    assert proc.returncode == 1, proc.stderr
    assert doc["ok"] is False and list(doc["stages"]) == STAGES
    assert "budget exhausted" in doc["stages"]["env"]["reason"]
    assert {"env", "data", "train", "train_amp", "paper", "proxy"} <= set(doc["failed_required"])
    check_ddp_skipped(doc)


def test_cpu_stages_up_to_the_first_training_run(tmp_path, ict_path):
    """env, install (skipped: fitface imports), data (built), train (2 steps) and DDP (skipped)."""
    proc, doc = run_check(tmp_path, **tiny_env(tmp_path, ict_path, "env,install,data,train,ddp"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_common(doc)
    st = doc["stages"]
    assert doc["ok"] is True and doc["failed_required"] == []
    assert st["env"]["status"] == "ok" and st["env"]["rc"] == 0
    assert st["install"]["status"] == "skipped" and st["install"]["required"] is False
    assert st["data"]["status"] == "ok" and st["data"]["num_samples"] == 60 and st["data"]["num_vertices"] == 9409
    check_train(st["train"], 2, amp=False)
    check_ddp_skipped(doc)
    for name in ("train_amp", "paper", "proxy"):
        assert st[name]["status"] == "skipped" and "not selected" in st[name]["reason"]
    assert not (tmp_path / "work" / "runs" / "train_amp").exists()


@pytest.mark.slow
def test_cpu_all_stages(tmp_path, ict_path):
    """Every stage on the CPU: both training runs, the paper recipe (3 steps) and the proxy
    evaluation of the paper run's model; DDP skipped."""
    proc, doc = run_check(tmp_path, **tiny_env(tmp_path, ict_path, "all"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_common(doc)
    st = doc["stages"]
    assert doc["ok"] is True and doc["failed_required"] == []
    check_train(st["train"], 2, amp=False)
    check_train(st["train_amp"], 2, amp=True)
    assert "--amp" in st["train_amp"]["command"].split()
    check_train(st["paper"], 3, amp=False)
    assert st["paper"]["config"]["recipe"] == "paper" and st["paper"]["steps_planned"] == 3
    check_ddp_skipped(doc)
    proxy = st["proxy"]
    assert proxy["status"] == "ok" and proxy["rc"] == 0 and proxy["required"] is True, proxy.get("log_tail")
    assert proxy["model"].endswith("runs/paper/model.safetensors") and proxy["model_trained_steps"] == 3
    row = proxy["row"]
    assert {"coef_ratio_identity", "div", "specificity", "t2_surface_0.01", "retarget"} <= set(row)
    assert all(isinstance(row[k], float) and math.isfinite(row[k]) for k in ("div", "specificity", "t2_surface_0.01"))
    assert row["retarget"] is None and "retarget" in proxy["skipped"]  # one test identity in the tiny set


@pytest.mark.slow
def test_cpu_ddp_forced(tmp_path, ict_path):
    """GPU_CHECK_DDP=force runs the DDP stage's torchrun command on the CPU (two gloo processes)."""
    proc, doc = run_check(tmp_path, GPU_CHECK_DDP="force", GPU_CHECK_DDP_STEPS=2,
                          **tiny_env(tmp_path, ict_path, "env,data,ddp"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ddp = doc["stages"]["ddp"]
    check_train(ddp, 2, amp=False)
    assert "-m torch.distributed.run --standalone --nproc_per_node 2 -m fitface train" in ddp["command"]
    assert ddp["data_parallel"].startswith("data parallel: DistributedDataParallel over 2 processes")
