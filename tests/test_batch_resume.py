"""`fitface batch --resume` (issue #28 section 3): a batch killed part-way (SIGKILL) and resumed
gives the results of an uninterrupted run; finished captures are kept, half-written ones redone."""

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
from input_checks import run_cli

from fitface.io.landmarks import save_landmarks


def _captures(model_path: Path, folder: Path, n: int) -> Path:
    from fitface.fitting.decoder import load_decoder
    from fitface.fitting.similarity import Similarity
    from fitface.geometry.camera import rotation_yaw_pitch

    dec = load_decoder(model_path)
    rng = np.random.default_rng(7)
    z = rng.standard_normal((n, dec.layout.dim))
    pts = dec.points(z, dec.landmark_rows("ibug68"))  # (n, L, 3) mm
    folder.mkdir(parents=True)
    for i in range(n):
        t = Similarity(np.ones(1), rotation_yaw_pitch(*rng.uniform(-20, 20, 3))[None], rng.normal(0, 30, (1, 3)))
        save_landmarks(folder / f"cap{i:05d}.txt", t.apply(pts[i])[0] + rng.normal(0, 0.3, pts[i].shape), unit="mm")
    return folder


def _results(out: Path) -> dict[str, dict]:
    """name -> (codes, transform, rms) of every capture folder."""
    got = {}
    for p in sorted(out.glob("*/codes.json")):
        d = json.loads(p.read_text())
        got[p.parent.name] = {"codes": d["codes"], "transform": d["transform"], "rms": d["landmark_rms"]}
    return got


def _same(a: dict, b: dict) -> None:
    """Bit-identical codes, transforms and RMS (JSON holds exact float64 values)."""
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], name


@pytest.mark.slow
def test_a_killed_batch_of_2000_resumes_to_the_uninterrupted_result(tmp_path, model_path):
    caps = _captures(model_path, tmp_path / "caps", 2000)
    cmd = [sys.executable, "-m", "fitface", "batch", str(caps), "-m", str(model_path), "--no-progress"]
    full = tmp_path / "full"
    subprocess.run([*cmd, "-o", str(full)], check=True, capture_output=True)
    part = tmp_path / "part"
    proc = subprocess.Popen([*cmd, "-o", str(part)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while len(list(part.glob("*/codes.json"))) < 600 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(part.glob("*/codes.json")))
    assert 0 < done < 2000 and not (part / "summary.json").exists()
    (part / "cap00003" / "codes.json").unlink()  # as if killed before its codes.json was written
    r = subprocess.run([*cmd, "-o", str(part), "--resume"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    kept = int(r.stderr.split("kept ")[1].split()[0])
    # whole finished chunks only: chunks are written in order, and chunk 0 lost cap00003's codes
    assert done >= 512 and kept == 256 * (done // 256 - 1)
    _same(_results(part), _results(full))
    summary = json.loads((part / "summary.json").read_text())
    assert summary["fitted"] == 2000 and summary["failed"] == 0
    assert len(summary["captures"]) == 2000


def test_resume_keeps_finished_chunks_and_refits_the_others_whole(tmp_path, capsys, model_path, monkeypatch):
    import fitface.api.batch_fit as batch_fit

    monkeypatch.setattr(batch_fit, "BATCH_CHUNK", 4)  # 12 captures: chunks 0-3, 4-7, 8-11
    caps = _captures(model_path, tmp_path / "caps", 12)
    out = tmp_path / "out"
    argv = ["batch", caps, "-o", out, "-m", model_path, "--no-progress"]
    assert run_cli(argv, capsys)[0] == 0
    full = _results(out)
    before = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/codes.json")}
    (out / "cap00002" / "fit.ply").unlink()  # half-written: no mesh (chunk 0)
    (out / "cap00005" / "codes.json").unlink()  # half-written: no codes (chunk 1)
    (out / "summary.json").unlink()
    time.sleep(0.01)
    code, _, err = run_cli([*argv, "--resume"], capsys)
    assert code == 0 and "kept 4 captures" in err, err
    after = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/codes.json")}
    redone = sorted(k for k in after if after[k] != before.get(k))
    assert redone == [f"cap{i:05d}" for i in range(8)]
    assert (out / "cap00002" / "fit.ply").is_file()
    _same(_results(out), full)
    assert json.loads((out / "summary.json").read_text())["fitted"] == 12


def test_resume_refuses_other_options_and_photos_or_sequences(tmp_path, capsys, model_path):
    caps = _captures(model_path, tmp_path / "caps", 3)
    out = tmp_path / "out"
    assert run_cli(["batch", caps, "-o", out, "-m", model_path, "--no-progress"], capsys)[0] == 0
    code, _, err = run_cli(["batch", caps, "-o", out, "-m", model_path, "--no-progress", "--resume",
                            "--lambda", "10"], capsys)
    assert code == 2 and "other options (lambda)" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["batch", caps, "-o", out, "-m", model_path, "--resume", "--sequence"], capsys)
    assert code == 2 and "--resume" in err
