"""``fitface retarget``: replace / add modes through the CLI, frames, and refusal of codes from another model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from input_checks import run_cli
from model_builders import synthetic_capture


@pytest.fixture()
def fitted(model_path, tmp_path, capsys):
    """Two fits: A in mm, B in metres."""
    from fitface.io.landmarks import save_landmarks

    for name, seed, scale, unit in (("A", 1, 1.0, "mm"), ("B", 2, 0.001, "m")):
        _, _, lm, _, _ = synthetic_capture(model_path, seed=seed, scale=scale)
        save_landmarks(tmp_path / f"{name}.json", lm, unit=unit)
        code, _, err = run_cli(["fit", "-l", tmp_path / f"{name}.json", "-o", tmp_path / name, "-m", model_path,
                                "--steps", "60", "--no-preview"], capsys)
        assert code == 0, err
    return tmp_path / "A" / "codes.json", tmp_path / "B" / "codes.json"


def test_retarget_replace_in_identity_frame(model_path, fitted, tmp_path, capsys):
    from fitface.io.mesh import load_mesh

    a, b = fitted
    out = tmp_path / "r.ply"
    code, stdout, err = run_cli(["retarget", "--expression", a, "--identity", b, "-o", out, "-m", model_path,
                                 "--json"], capsys)
    assert code == 0, err
    doc = json.loads(stdout)
    ca, cb = json.loads(a.read_text()), json.loads(b.read_text())
    assert doc["codes"]["expression"] == ca["codes"]["expression"]
    assert doc["codes"]["identity"] == cb["codes"]["identity"] and doc["codes"]["noise"] == cb["codes"]["noise"]
    assert doc["unit"] == "m" and doc["transform"] == cb["transform"]
    # B's fitted mesh and the retargeted one live in the same frame (metres): same size and place
    vb = load_mesh(tmp_path / "B" / "fit.ply").vertices
    vr = load_mesh(out).vertices
    assert np.abs(vr.mean(0) - vb.mean(0)).max() < 0.01  # within 1 cm of each other
    assert (tmp_path / "r.codes.json").is_file()


def test_retarget_add_model_frame(model_path, fitted, tmp_path, capsys):
    from fitface.api import load_fit_model
    from fitface.io.mesh import load_mesh

    a, b = fitted
    code, _, err = run_cli(["retarget", "-e", a, "-i", b, "-o", tmp_path / "r.obj", "-m", model_path, "--mode", "add",
                            "--model-frame"], capsys)
    assert code == 0, err
    ca, cb = json.loads(a.read_text()), json.loads(b.read_text())
    z = np.concatenate([cb["codes"]["identity"],
                        np.add(ca["codes"]["expression"], cb["codes"]["expression"]), cb["codes"]["noise"]])
    want = load_fit_model(model_path).vertices(z[None])[0]
    np.testing.assert_allclose(load_mesh(tmp_path / "r.obj").vertices, want, atol=1e-9)


def test_retarget_refuses_codes_from_another_model(model_path, other_model_path, fitted, tmp_path, capsys):
    a, _ = fitted
    code, _, _ = run_cli(["fit", "-l", tmp_path / "A.json", "-o", tmp_path / "X", "-m", other_model_path,
                          "--steps", "3", "--no-preview"], capsys)
    assert code == 0
    x = tmp_path / "X" / "codes.json"
    for argv, match in (
        (["-e", a, "-i", x, "-m", model_path], "different models"),
        (["-e", x, "-i", x, "-m", model_path], "another model"),
        (["-e", a, "-i", tmp_path / "missing.json", "-m", model_path], "does not exist"),
    ):
        out = tmp_path / "r.ply"
        code, _, err = run_cli(["retarget", *argv, "-o", out], capsys)
        assert code == 2 and match in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists() and not (tmp_path / "r.codes.json").exists()
    code, _, err = run_cli(["retarget", "-e", a, "-i", a, "-m", model_path, "--mode", "swap", "-o", tmp_path / "r.ply"],
                           capsys)
    assert code == 2 and "'swap' is not one of" in err  # a click usage error


def test_retarget_bad_codes_file(model_path, fitted, tmp_path, capsys):
    a, _ = fitted
    (tmp_path / "broken.json").write_text('{"model_id": "x", "codes": {"identity": [1, "a"]}}')
    code, _, err = run_cli(["retarget", "-e", a, "-i", tmp_path / "broken.json", "-o", tmp_path / "r.ply",
                            "-m", model_path], capsys)
    assert code == 2 and "non-numeric" in err
