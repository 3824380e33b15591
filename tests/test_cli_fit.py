"""``fitface fit``: outputs, --json, --freeze, --refine-surface, and every bad input (exit 2, one line, no files)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from input_checks import run_cli
from model_builders import synthetic_capture
from test_api_fit import EXACT_FIT_RMS_MM

from fitface.api import DEFAULT_LAMBDA
from fitface.cli import main


@pytest.fixture()
def capture(model_path, tmp_path):
    """A capture in cm: landmarks (unit stated) and its exact scan."""
    from fitface.io.landmarks import save_landmarks
    from fitface.io.mesh import save_mesh

    _, _, lm, verts, faces = synthetic_capture(model_path, seed=11, scale=0.1)
    save_landmarks(tmp_path / "face.csv", lm, unit="cm")
    save_mesh(tmp_path / "face.obj", verts, faces)
    return tmp_path / "face.csv", tmp_path / "face.obj"


def test_fit_writes_mesh_codes_preview_and_json(model_path, capture, tmp_path, capsys):
    lm, scan = capture
    out = tmp_path / "out"
    code, stdout, err = run_cli(["fit", scan, "--landmarks", lm, "-o", out, "--model", model_path, "--json"], capsys)
    assert code == 0, err
    summary = json.loads(stdout)  # stdout holds the JSON only
    assert sorted(p.name for p in out.iterdir()) == ["codes.json", "fit.obj", "preview.png"]  # scan's format
    on_disk = json.loads((out / "codes.json").read_text())
    assert {k: v for k, v in summary.items() if k != "files"} == on_disk
    assert summary["unit"] == "cm" and summary["landmark_rms"] * 10 < EXACT_FIT_RMS_MM
    assert summary["lambda"] == DEFAULT_LAMBDA and len(summary["landmark_residuals"]) == 68


def test_fit_landmarks_only_with_options(model_path, capture, tmp_path, capsys):
    lm, _ = capture
    out = tmp_path / "o"
    code, stdout, err = run_cli(["fit", "-l", lm, "-o", out, "-m", model_path, "--lambda", "10", "--steps", "30",
                                 "--restarts", "2", "--seed", "4", "--format", "off", "--no-preview",
                                 "--landmark-set", "ibug68"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["codes.json", "fit.off"]
    doc = json.loads((out / "codes.json").read_text())
    assert doc["lambda"] == 10.0 and doc["restarts"] == 2 and doc["seed"] == 4 and doc["steps"] == 30
    assert "landmark RMS" in stdout


def test_fit_freeze_identity_cli(model_path, capture, tmp_path, capsys):
    lm, _ = capture
    assert run_cli(["fit", "-l", lm, "-o", tmp_path / "a", "-m", model_path, "--steps", "20"], capsys)[0] == 0
    code, _, err = run_cli(["fit", "-l", lm, "-o", tmp_path / "b", "-m", model_path, "--steps", "20",
                            "--freeze", f"identity={tmp_path / 'a' / 'codes.json'}"], capsys)
    assert code == 0, err
    a = json.loads((tmp_path / "a" / "codes.json").read_text())
    b = json.loads((tmp_path / "b" / "codes.json").read_text())
    assert a["codes"]["identity"] == b["codes"]["identity"]


def test_refine_surface_ignores_outliers_of_a_partial_scan(model_path, tmp_path, capsys):
    """A partial (lower half cut), noisy scan with 20 % far outliers: the refined fit stays on the face."""
    from fitface.io.landmarks import save_landmarks
    from fitface.io.mesh import save_mesh

    _, _, lm, verts, _ = synthetic_capture(model_path, seed=12)
    rng = np.random.default_rng(0)
    keep = np.flatnonzero(verts[:, 1] > np.median(verts[:, 1]))  # upper half only
    pts = verts[keep] + rng.normal(0, 0.2, (len(keep), 3))
    outl = verts[rng.choice(len(verts), len(keep) // 4)] + rng.normal(0, 40.0, (len(keep) // 4, 3))
    cloud = np.concatenate([pts, outl])
    tri = np.array([[0, 1, 2]])  # the scan must be a mesh; its faces are not used by the refinement
    save_mesh(tmp_path / "scan.ply", cloud, tri)
    save_landmarks(tmp_path / "scan.txt", lm + rng.normal(0, 0.5, lm.shape))
    out = tmp_path / "o"
    code, stdout, err = run_cli(["fit", tmp_path / "scan.ply", "-l", tmp_path / "scan.txt", "-o", out, "-m", model_path,
                                 "--refine-surface", "--json", "--no-preview"], capsys)
    assert code == 0, err
    doc = json.loads(stdout)
    surf = doc["surface"]
    assert 0.6 < surf["inlier_fraction"] < 0.9  # the outliers are recognised as such
    assert surf["median"] < 1.0  # mm: the face lies on the inliers (noise 0.2 mm per axis)
    from fitface.io.mesh import load_mesh

    fitted = load_mesh(out / "fit.ply").vertices
    assert np.sqrt(np.mean(np.sum((fitted - verts) ** 2, axis=1))) < 3.0  # whole face, incl. the cut half


# ---------------------------------------------------------------------------- bad input


def _bad_case(kind, model_path, other_model_path, capture, tmp: Path):
    """Build one bad input; returns argv (without -o)."""
    from fitface.io.landmarks import save_landmarks

    lm, _ = capture
    base = ["-m", model_path]
    if kind == "count":
        pts = np.loadtxt(lm, delimiter=",", skiprows=2)[:60]
        save_landmarks(tmp / "short.txt", pts)
        return ["fit", "-l", tmp / "short.txt", *base], "60 landmarks match no landmark set"
    if kind == "count_for_set":
        pts = np.loadtxt(lm, delimiter=",", skiprows=2)[:60]
        save_landmarks(tmp / "short.txt", pts)
        return ["fit", "-l", tmp / "short.txt", "--landmark-set", "ibug68", *base], "has 68 points"
    if kind == "nan":
        text = Path(lm).read_text().splitlines()
        text[5] = "nan,1.0,2.0"
        (tmp / "nan.csv").write_text("\n".join(text) + "\n")
        return ["fit", "-l", tmp / "nan.csv", *base], "NaN"
    if kind == "layout":
        (tmp / "weird.txt").write_text("<html>not landmarks</html>\n")
        return ["fit", "-l", tmp / "weird.txt", *base], "weird.txt"
    if kind == "2d":
        (tmp / "flat.txt").write_text("".join(f"{i} {i * 2}\n" for i in range(68)))
        return ["fit", "-l", tmp / "flat.txt", *base], "2D landmarks"
    if kind == "no_faces":
        (tmp / "cloud.ply").write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
                                       "property float z\nend_header\n0 0 0\n1 0 0\n0 1 0\n")
        return ["fit", tmp / "cloud.ply", "-l", lm, *base], "no faces"
    if kind == "not_model":
        (tmp / "fake.safetensors").write_bytes(b"this is not a model" * 10)
        return ["fit", "-l", lm, "-m", tmp / "fake.safetensors"], "not a fitface model file"
    if kind == "missing_model":
        return ["fit", "-l", lm, "-m", tmp / "absent.safetensors"], "no such model file"
    if kind == "other_model_codes":
        code = main(["fit", "-l", str(lm), "-o", str(tmp / "other"), "-m", str(other_model_path), "--steps", "3",
                     "--no-preview"])
        assert code == 0
        return ["fit", "-l", lm, "--freeze", f"identity={tmp / 'other' / 'codes.json'}", *base], "another model"
    if kind == "bad_freeze":
        return ["fit", "-l", lm, "--freeze", "identity", *base], "FACTOR=CODES.json"
    if kind == "bad_unit":
        return ["fit", "-l", lm, "--unit", "furlong", *base], "unknown unit"
    if kind == "refine_without_scan":
        return ["fit", "-l", lm, "--refine-surface", *base], "needs a scan"
    if kind == "missing_landmarks":
        return ["fit", "-l", tmp / "absent.txt", *base], "does not exist"
    if kind == "collinear":
        pts = np.zeros((68, 3))
        pts[:, 0] = np.arange(68)
        save_landmarks(tmp / "line.txt", pts)
        return ["fit", "-l", tmp / "line.txt", *base], "collinear"
    raise AssertionError(kind)


BAD = ["count", "count_for_set", "nan", "layout", "2d", "no_faces", "not_model", "missing_model",
       "other_model_codes", "bad_freeze", "bad_unit", "refine_without_scan", "missing_landmarks", "collinear"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_input_exit_2_one_line_nothing_written(kind, model_path, other_model_path, capture, tmp_path, capsys):
    argv, match = _bad_case(kind, model_path, other_model_path, capture, tmp_path)
    capsys.readouterr()
    out = tmp_path / "result"
    code, stdout, err = run_cli([*argv, "-o", out], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert match in lines[0]
    assert stdout == ""
    assert not out.exists()


def test_no_default_model_one_line(capture, tmp_path, no_builtin_models, capsys):
    """An installation without the built-in model file (e.g. a stripped wheel) says so in one line."""
    lm, _ = capture
    assert main(["fit", "-l", str(lm), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not installed" in err and "(the default)" in err
    assert not (tmp_path / "o").exists()


def test_cli_fit_end_to_end_without_torch(model_path, capture, tmp_path):
    """A subprocess fit: files written, torch / trimesh never imported (checked with -X importtime)."""
    lm, scan = capture
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "fitface", "fit", str(scan), "-l", str(lm),
                        "-o", str(tmp_path / "o"), "-m", str(model_path)], capture_output=True, text=True,
                       check=False)
    wall = time.perf_counter() - t0
    assert p.returncode == 0, p.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" not in imported and "trimesh" not in imported and "scipy" not in imported
    assert (tmp_path / "o" / "fit.obj").is_file()
    assert wall < 10.0  # the 2 s budget is measured by benchmarks/bench_cli_fit.py; tests share cores
