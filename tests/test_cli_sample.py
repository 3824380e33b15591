"""``fitface sample``, ``fitface interpolate`` and ``fitface landmarks add`` through the CLI."""

from __future__ import annotations

import json

import numpy as np
from input_checks import run_cli


def test_sample_writes_meshes_codes_and_grid(model_path, tmp_path, capsys):
    from fitface.io.image import read_image

    out = tmp_path / "s"
    code, _, err = run_cli(["sample", "-n", "4", "-o", out, "-m", model_path, "--shared", "identity", "--seed", "2"],
                           capsys)
    assert code == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["sample_000.codes.json", "sample_000.ply", "sample_001.codes.json", "sample_001.ply",
                     "sample_002.codes.json", "sample_002.ply", "sample_003.codes.json", "sample_003.ply",
                     "samples.png"]
    codes = [json.loads((out / f"sample_{i:03d}.codes.json").read_text()) for i in range(4)]
    assert all(c["codes"]["identity"] == codes[0]["codes"]["identity"] for c in codes)
    img = read_image(out / "samples.png")
    assert img.shape[0] > 100 and img.std() > 5  # faces drawn, not a blank picture


def test_sample_fix_and_bad_factor(model_path, tmp_path, capsys):
    run_cli(["sample", "-n", "1", "-o", tmp_path / "a", "-m", model_path], capsys)
    code, _, err = run_cli(["sample", "-n", "2", "-o", tmp_path / "b", "-m", model_path, "--fix",
                            f"expression={tmp_path / 'a' / 'sample_000.codes.json'}", "--no-picture"], capsys)
    assert code == 0, err
    a = json.loads((tmp_path / "a" / "sample_000.codes.json").read_text())
    b = [json.loads((tmp_path / "b" / f"sample_{i:03d}.codes.json").read_text()) for i in range(2)]
    assert all(x["codes"]["expression"] == a["codes"]["expression"] for x in b)
    assert b[0]["codes"]["identity"] != b[1]["codes"]["identity"]
    code, _, err = run_cli(["sample", "-n", "2", "-o", tmp_path / "c", "-m", model_path, "--shared", "mood"], capsys)
    assert code == 2 and "no latent block 'mood'" in err and not (tmp_path / "c").exists()


def test_interpolate_strip_and_range(model_path, tmp_path, capsys):
    run_cli(["sample", "-n", "2", "-o", tmp_path / "s", "-m", model_path, "--no-picture"], capsys)
    a, b = tmp_path / "s" / "sample_000.codes.json", tmp_path / "s" / "sample_001.codes.json"
    out = tmp_path / "i"
    code, _, err = run_cli(["interpolate", a, b, "-o", out, "-m", model_path, "--steps", "5", "--range", "-0.5", "1.5",
                            "--factor", "expression"], capsys)
    assert code == 0, err
    assert (out / "strip.png").is_file() and len(list(out.glob("interp_*.ply"))) == 5
    ca, cb = json.loads(a.read_text()), json.loads(b.read_text())
    mid = json.loads((out / "interp_02.codes.json").read_text())  # t = 0.5
    np.testing.assert_allclose(mid["codes"]["expression"],
                               (np.array(ca["codes"]["expression"]) + cb["codes"]["expression"]) / 2, atol=1e-12)
    assert mid["codes"]["identity"] == ca["codes"]["identity"]
    code, _, err = run_cli(["interpolate", a, b, "-o", tmp_path / "j", "-m", model_path, "--range", "1", "1"], capsys)
    assert code == 2 and "--range" in err


def test_landmarks_add_cli(model_path, tmp_path, capsys):
    import shutil

    m = tmp_path / "m.safetensors"
    shutil.copy(model_path, m)
    (tmp_path / "pts.txt").write_text("0 0.2 0.3 0.5\n3 1 0 0\n9 0 0.5 0.5\n")
    code, stdout, err = run_cli(["landmarks", "add", m, "nose3", tmp_path / "pts.txt"], capsys)
    assert code == 0, err
    assert "new model_id" in stdout
    code, stdout, _ = run_cli(["landmarks", "list", m], capsys)
    assert code == 0 and stdout.splitlines() == ["ibug68\t68", "nose3\t3"]
    code, _, err = run_cli(["landmarks", "add", m, "nose3", tmp_path / "pts.txt"], capsys)
    assert code == 2 and "already has" in err
    code, _, err = run_cli(["landmarks", "add", m, "bad.name", tmp_path / "pts.txt"], capsys)
    assert code == 2 and "no '.'" in err
    (tmp_path / "fake.safetensors").write_bytes(b"\x00" * 64)
    code, _, err = run_cli(["landmarks", "add", tmp_path / "fake.safetensors", "x", tmp_path / "pts.txt"], capsys)
    assert code == 2 and "not a fitface model file" in err
