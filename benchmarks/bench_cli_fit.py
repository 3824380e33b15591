"""Benchmark: end-to-end wall time of `fitface fit` and `fitface batch` (process start to files written).

Run: ``.venv/bin/python benchmarks/bench_cli_fit.py [--repeats 5] [--batch-size 1000]``.

Builds, in a temporary folder (never in the repository), an ICT-sized model: the ICT neutral
(V = 9,409, F = 18,460, its ibug68 vertices) when ../shared/data/ict_face_light.npz is present,
else the procedural template (V ~ 4,300, noted in the table), with a random generator whose last
layer gives smooth displacements of a few mm. Then times, as subprocesses
(``python -m fitface ...``), with the median of ``--repeats`` runs:

* ``fitface fit -l LM -o OUT`` (landmarks only),
* ``fitface fit SCAN -l LM -o OUT`` with the exact decoded scan (V vertices, binary PLY),
* ``fitface batch DIR -o OUT`` on ``--batch-size`` landmark files (meshes + codes.json per capture).

Prints a Markdown table for docs/benchmarks.md with the machine, the date and the commands.
Issue budgets: one fit < 2 s, a batch of 1,000 landmark files < 8 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import ICT_NPZ, machine

from fitface.api.inputs import DEFAULT_LAMBDA


def build_model(path: Path) -> str:
    """Write the benchmark model; returns a description of its template."""
    import torch

    from fitface.landmarks.sets import LandmarkSet
    from fitface.models.face_model import FaceModel
    from fitface.models.generator import Generator
    from fitface.models.latent import PAPER_LAYOUT
    from fitface.models.model_file import save_model

    if ICT_NPZ.is_file():
        with np.load(ICT_NPZ) as z:
            v = z["neutral"].astype(np.float64) * 10.0  # cm -> mm
            f = z["faces"].astype(np.int64)
            uv = z["uv"].astype(np.float64)
            lm = z["landmarks_ibug68"].astype(np.int64)
        uv = (uv - uv.min(0)) / np.maximum(uv.max(0) - uv.min(0), 1e-12)
        sets = {"ibug68": LandmarkSet.from_vertex_indices("ibug68", lm, f)}
        desc = f"ICT neutral, V = {len(v):,}"
    else:
        from fitface.data.procedural import template_mesh, template_vertices
        from fitface.geometry.parameterization import harmonic_uv

        tpl = template_mesh()
        v, f = template_vertices(), np.array(tpl.faces)
        uv = harmonic_uv(v, f).uv
        sets = dict(tpl.landmark_sets)
        desc = f"procedural template (ICT data absent), V = {len(v):,}"
    torch.manual_seed(0)
    g = Generator(PAPER_LAYOUT.dim, len(v))
    rng = np.random.default_rng(0)
    xy = (v[:, :2] - v[:, :2].mean(0)) / np.abs(v[:, :2]).max()
    freq, phase = rng.normal(0, 1.5, (16, 2)), rng.uniform(0, 2 * np.pi, 16)
    basis = np.cos(xy @ freq.T + phase)  # (V, 16) smooth fields
    mix = rng.standard_normal((16, 3, g.hidden_size))
    with torch.no_grad():
        g.out.weight.copy_(torch.from_numpy(np.einsum("vk,kch->vch", basis, mix).reshape(-1, g.hidden_size) * 0.03))
    save_model(path, FaceModel(v, f, uv, PAPER_LAYOUT, g, unit="mm", landmark_sets=sets))
    return desc


def make_captures(model: Path, folder: Path, n: int, scan_too: bool = False) -> None:
    """``n`` landmark files (random code, pose and 0.5 mm noise), optionally with exact scans."""
    from fitface.fitting.decoder import load_decoder
    from fitface.fitting.similarity import Similarity
    from fitface.geometry.camera import rotation_yaw_pitch
    from fitface.io.landmarks import save_landmarks
    from fitface.io.mesh import save_mesh

    dec = load_decoder(model)
    rng = np.random.default_rng(1)
    z = rng.standard_normal((n, dec.layout.dim))
    pts = dec.points(z, dec.landmark_rows("ibug68"))  # (n, L, 3)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        t = Similarity(np.array([1.0]), rotation_yaw_pitch(*rng.uniform(-20, 20, 3))[None], rng.normal(0, 50, (1, 3)))
        save_landmarks(folder / f"cap{i:04d}.txt", t.apply(pts[i])[0] + rng.normal(0, 0.5, pts[i].shape), unit="mm")
        if scan_too:
            save_mesh(folder / f"cap{i:04d}.ply", t.apply(dec.vertices(z[i:i + 1]))[0], dec.faces)


def wall(argv: list[str], out: Path, repeats: int) -> tuple[float, list[float]]:
    """Median and all wall times (s) of a subprocess, deleting ``out`` before each run."""
    times = []
    for _ in range(repeats):
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        p = subprocess.run(argv, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - t)
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed:\n{p.stderr[-2000:]}")
    return float(np.median(times)), times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=1000)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_cli_fit_"))
    try:
        model = tmp / "model.safetensors"
        desc = build_model(model)
        make_captures(model, tmp / "one", 1, scan_too=True)
        make_captures(model, tmp / "many", args.batch_size)
        py = [sys.executable, "-m", "fitface"]
        lm, scan = tmp / "one" / "cap0000.txt", tmp / "one" / "cap0000.ply"
        cases = [
            ("fit, landmarks only", [*py, "fit", "-l", str(lm), "-o", str(tmp / "o1"), "-m", str(model)],
             tmp / "o1", args.repeats, "`fitface fit -l LM.txt -o OUT -m MODEL`"),
            ("fit, with scan", [*py, "fit", str(scan), "-l", str(lm), "-o", str(tmp / "o2"), "-m", str(model)],
             tmp / "o2", args.repeats, "`fitface fit SCAN.ply -l LM.txt -o OUT -m MODEL`"),
            (f"batch, {args.batch_size} landmark files",
             [*py, "batch", str(tmp / "many"), "-o", str(tmp / "o3"), "-m", str(model), "--no-progress"],
             tmp / "o3", args.batch_repeats, "`fitface batch DIR -o OUT -m MODEL`"),
        ]
        rows = []
        for name, argv, out, rep, cmd in cases:
            med, ts = wall(argv, out, rep)
            rows.append((name, cmd, med, ts))
            print(f"{name}: median {med:.2f} s  ({', '.join(f'{t:.2f}' for t in ts)})", file=sys.stderr)
        print(f"\n### End-to-end CLI fitting ({dt.date.today().isoformat()})\n")
        print(f"Machine: {machine()}; load average at start {os.getloadavg()[0]:.1f}. Model: {desc}, "
              f"latent 65+15+5, hidden 512, float32. Default fit settings (400 Adam steps, 1 restart, "
              f"lambda {DEFAULT_LAMBDA:g}, preview PNG on for fit, off for batch). Wall time from process start to all "
              f"files written, median of the runs.\n")
        print("| case | command | median (s) | runs (s) |")
        print("| --- | --- | ---: | --- |")
        for name, cmd, med, ts in rows:
            print(f"| {name} | {cmd} | {med:.2f} | {', '.join(f'{t:.2f}' for t in ts)} |")
        print(f"\nRun: `.venv/bin/python benchmarks/bench_cli_fit.py --repeats {args.repeats} "
              f"--batch-size {args.batch_size}`")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
