"""``fitface batch``: pairing, failures with reasons, summaries, shards, sequences; and fitface.captures."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from input_checks import run_cli
from model_builders import synthetic_capture

from fitface.captures import discover_captures, natural_key, parse_shard
from fitface.errors import InputError


def _write_capture(model_path, folder: Path, name: str, seed: int, suffix=".txt", scan=False):
    from fitface.io.landmarks import save_landmarks
    from fitface.io.mesh import save_mesh

    _, _, lm, verts, faces = synthetic_capture(model_path, seed=seed)
    save_landmarks(folder / f"{name}{suffix}", lm)
    if scan:
        save_mesh(folder / f"{name}.ply", verts, faces)


@pytest.fixture()
def mixed_folder(model_path, tmp_path):
    d = tmp_path / "caps"
    d.mkdir()
    _write_capture(model_path, d, "A", 1, scan=True)
    _write_capture(model_path, d, "B", 2, suffix=".json")
    np.savetxt(d / "C.txt", np.random.default_rng(0).normal(size=(60, 3)))  # wrong count
    (d / "D.ply").write_bytes((d / "A.ply").read_bytes())  # scan without landmarks
    (d / "E.txt").write_text("hello world\n")  # unknown layout
    _write_capture(model_path, d, "F", 3)
    _write_capture(model_path, d, "F", 3, suffix=".json")  # two landmark files for F
    (d / "README.md").write_text("ignored\n")
    return d


def test_batch_mixed_folder_reports_failures_and_completes(model_path, mixed_folder, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_cli(["batch", mixed_folder, "-o", out, "-m", model_path, "--steps", "60", "--json"], capsys)
    assert code == 4, err  # some captures failed (0 only when every capture was fitted)
    summary = json.loads(stdout)
    assert summary["fitted"] == 2 and summary["failed"] == 4 and summary["ignored_files"] == 1
    reasons = {f["name"]: f["reason"] for f in summary["failures"]}
    assert "60 landmarks" in reasons["C"]
    assert "no landmark file" in reasons["D"]
    assert "E.txt" in reasons["E"]
    assert "several landmark files" in reasons["F"]
    assert sorted(p.name for p in (out / "A").iterdir()) == ["codes.json", "fit.ply"]
    assert sorted(p.name for p in (out / "B").iterdir()) == ["codes.json", "fit.ply"]
    assert not (out / "C").exists() and not (out / "E").exists()
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["name"] for r in rows] == ["A", "B", "C", "D", "E", "F"]
    assert {r["name"]: r["status"] for r in rows}["C"] == "failed"
    assert float(rows[0]["landmark_rms"]) < 1.0
    fails = (out / "failures.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in fails] == ["C", "D", "E", "F"]
    assert all(len(line.split("\t")) == 2 for line in fails)


def test_batch_all_failed_exit_2(model_path, tmp_path, capsys):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "x.txt").write_text("nonsense\n")
    code, _, err = run_cli(["batch", d, "-o", tmp_path / "out", "-m", model_path], capsys)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("error: no capture was fitted")
    assert (tmp_path / "out" / "failures.txt").read_text().startswith("x\t")


def test_batch_exit_code_0_only_when_every_capture_fitted(model_path, tmp_path, capsys):
    """0: all fitted; 4 (documented in --help): some failed, the rest fitted, each failure one line."""
    d = tmp_path / "caps"
    d.mkdir()
    for i in range(4):
        _write_capture(model_path, d, f"ok{i}", 40 + i)
    code, _, err = run_cli(["batch", d, "-o", tmp_path / "all", "-m", model_path, "--steps", "10", "--no-progress"],
                           capsys)
    assert code == 0, err
    (d / "bad.txt").write_text("nonsense\n")
    (d / "short.txt").write_text("1 2 3\n4 5 6\n")
    out = tmp_path / "some"
    code, _, err = run_cli(["batch", d, "-o", out, "-m", model_path, "--steps", "10", "--no-progress"], capsys)
    assert code == 4
    lines = err.strip().splitlines()
    failed = [line for line in lines if line.startswith("failed ")]
    assert [line.split(":")[0] for line in failed] == ["failed bad", "failed short"]
    assert lines[-1].startswith("error: 2 of 6 captures failed")
    assert [line.split("\t")[0] for line in (out / "failures.txt").read_text().splitlines()] == ["bad", "short"]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["ok0", "ok1", "ok2", "ok3"]  # the rest completed
    assert all((out / f"ok{i}" / "codes.json").is_file() for i in range(4))
    code, stdout, _ = run_cli(["batch", "--help"], capsys)
    assert code == 0 and "4  some captures failed" in stdout and "0  every capture was fitted" in stdout


@pytest.mark.parametrize("argv, match", [
    (["--shard", "0/3"], "1-based"),
    (["--shard", "4/3"], "1 <= K <= N"),
    (["--shard", "two"], "expected K/N"),
])
def test_batch_bad_shard(model_path, mixed_folder, tmp_path, capsys, argv, match):
    code, _, err = run_cli(["batch", mixed_folder, "-o", tmp_path / "o", "-m", model_path, *argv], capsys)
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_batch_missing_folder(model_path, tmp_path, capsys):
    code, _, err = run_cli(["batch", tmp_path / "nope", "-o", tmp_path / "o", "-m", model_path], capsys)
    assert code == 2 and "no such folder" in err


def test_shards_partition_the_folder(model_path, tmp_path, capsys):
    d = tmp_path / "caps"
    d.mkdir()
    for i in range(7):
        _write_capture(model_path, d, f"cap{i}", 30 + i)
    out = tmp_path / "out"
    seen = []
    for k in (1, 2, 3):
        code, _, err = run_cli(["batch", d, "-o", out, "-m", model_path, "--steps", "5", "--shard", f"{k}/3",
                                "--no-meshes"], capsys)
        assert code == 0, err
        doc = json.loads((out / f"summary-{k}-of-3.json").read_text())
        seen.append([c["name"] for c in doc["captures"]])
    assert sorted(n for names in seen for n in names) == sorted(f"cap{i}" for i in range(7))  # disjoint and complete
    # contiguous blocks: capture i of 7 goes to shard floor(3 i / 7) + 1
    assert seen == [["cap0", "cap1", "cap2"], ["cap3", "cap4"], ["cap5", "cap6"]]
    assert not (out / "cap0" / "fit.ply").exists() and (out / "cap0" / "codes.json").is_file()


def test_sequence_shares_identity(model_path, tmp_path, capsys):
    from fitface.api import load_fit_model
    from fitface.fitting.similarity import Similarity
    from fitface.io.landmarks import save_landmarks

    dec = load_fit_model(model_path)
    rng = np.random.default_rng(3)
    z = rng.standard_normal((4, dec.layout.dim))
    z[:, dec.layout.slice("identity")] = z[0, dec.layout.slice("identity")]  # one subject
    pts = dec.points(z, dec.landmark_rows("ibug68"))
    d = tmp_path / "seq"
    for i in range(4):
        save_landmarks(d / f"frame{i * 5}.txt", Similarity.identity().apply(pts[i])[0])  # frame0, frame5, frame10..
    out = tmp_path / "out"
    code, _, err = run_cli(["batch", d, "-o", out, "-m", model_path, "--sequence", "--steps", "100",
                            "--smoothness", "0.1"], capsys)
    assert code == 0, err
    codes = [json.loads((out / f"frame{i * 5}" / "codes.json").read_text()) for i in range(4)]
    assert all(c["codes"]["identity"] == codes[0]["codes"]["identity"] for c in codes)
    assert codes[0]["codes"]["expression"] != codes[1]["codes"]["expression"]
    assert all(c["landmark_rms"] < 1.0 for c in codes)
    code, _, err = run_cli(["batch", d, "-o", out, "-m", model_path, "--sequence", "--shard", "1/2"], capsys)
    assert code == 2 and "--shard" in err


# ---------------------------------------------------------------------------- captures module


def test_natural_order_and_parse_shard(tmp_path):
    names = ["f10", "f2", "F1", "f1", "g"]
    assert sorted(names, key=natural_key) == ["F1", "f1", "f2", "f10", "g"]
    assert parse_shard("2/5") == (2, 5)
    with pytest.raises(InputError):
        parse_shard("6/5")


def test_discover_pairs_case_insensitive_suffixes(tmp_path):
    (tmp_path / "a.PLY").write_text("x")
    (tmp_path / "a.Pts").write_text("x")
    (tmp_path / ".hidden.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    cs = discover_captures(tmp_path)
    assert [(c.name, c.landmarks.name, c.scan.name) for c in cs.captures] == [("a", "a.Pts", "a.PLY")]
    assert cs.ignored == 2 and cs.problems == []
