"""A newcomer's path through the README's workflows, as Python calls of the CLI, in a temporary
folder, with the built-in procedural model (named: the captures are procedural faces, whatever
the default model is; the README's first command, `make demo`, is tests/test_demo.py)."""

from __future__ import annotations

import json

import numpy as np

from fitface.cli import main


def test_readme_workflows(tmp_path, capsys):
    data = tmp_path / "data" / "synth"
    # datasets
    assert main(["data", "synthetic", "-o", str(data), "--identities", "12", "--samples", "1200", "-q"]) == 0
    capsys.readouterr()
    assert main(["data", "info", str(data), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["samples"] == 1200 and info["unit"] == "mm"
    # a capture from the dataset's test split: its 68 landmarks and its mesh as a scan
    from fitface.data.format import load_dataset
    from fitface.io.landmarks import save_landmarks
    from fitface.io.mesh import save_mesh

    ds = load_dataset(data)
    caps = tmp_path / "captures"
    lset = ds.landmark_sets["ibug68"]
    for k, i in enumerate(ds.indices("test")[:3]):
        v = ds.vertices[i].astype(np.float64) / 10.0  # a capture in cm
        save_mesh(caps / f"cap{k}.ply", v, ds.faces)
        save_landmarks(caps / f"cap{k}.txt", lset.points(v, ds.faces), unit="cm")
    # fit one capture (landmarks + scan), then the folder
    assert main(["fit", str(caps / "cap0.ply"), "--landmarks", str(caps / "cap0.txt"), "-o",
                 str(tmp_path / "fits" / "cap0"), "--json", "-m", "procedural"]) == 0
    fit = json.loads(capsys.readouterr().out)
    assert fit["unit"] == "cm" and fit["landmark_rms"] < 0.5  # cm
    assert fit["model"] == "procedural"
    assert main(["batch", str(caps), "-o", str(tmp_path / "fits" / "all"), "--no-progress", "--model",
                 "procedural"]) == 0
    summary = json.loads((tmp_path / "fits" / "all" / "summary.json").read_text())
    assert summary["fitted"] == 3 and summary["failed"] == 0
    # retarget cap1's expression onto cap0 (with the model the codes record), sample, interpolate
    assert main(["retarget", "--expression", str(tmp_path / "fits" / "all" / "cap1" / "codes.json"),
                 "--identity", str(tmp_path / "fits" / "cap0" / "codes.json"),
                 "-o", str(tmp_path / "retarget.ply")]) == 0
    assert (tmp_path / "retarget.ply").is_file()
    assert main(["sample", "-n", "4", "--shared", "identity", "-o", str(tmp_path / "samples")]) == 0
    assert (tmp_path / "samples" / "samples.png").is_file()
    # training on your own data: two steps of the CPU recipe, then fit with the result
    run = tmp_path / "runs" / "synth"
    assert main(["train", str(data), "-c", "cpu", "-o", str(run), "--max-steps", "2", "--no-progress"]) == 0
    assert main(["fit", "--landmarks", str(caps / "cap2.txt"), "-m", str(run / "model.safetensors"),
                 "-o", str(tmp_path / "fits" / "own")]) == 0
