"""Benchmark: end-to-end wall time of `fitface fit` and `fitface batch` (process start to files written).

Run: ``.venv/bin/python benchmarks/bench_cli_fit.py [--repeats 5] [--batch-size 1000]``.

Builds, in a temporary folder (never in the repository), an ICT-sized model: the ICT neutral
(V = 9,409, F = 18,460, its ibug68 vertices) when ../shared/data/ict_face_light.npz is present,
else the procedural template (V ~ 4,300, noted in the table), with a random generator whose last
layer gives smooth displacements of a few mm. Then times, as subprocesses
(``python -m fitface ...``), with the median of ``--repeats`` runs:

* ``fitface fit -l LM -o OUT`` (landmarks only),
* ``fitface fit SCAN -l LM -o OUT`` with the exact decoded scan (V vertices, binary PLY),
* ``fitface fit -l A.txt -o OUT`` with the default built-in model (the packaged demo capture A),
* ``fitface batch DIR -o OUT`` on ``--batch-size`` landmark files (meshes + codes.json per capture).

``--compare CHECKOUT`` times another checkout (its own ``.venv``, e.g. a worktree of an earlier
revision: ``git worktree add ../fit_rev_f4f92fc f4f92fc && make -C ../fit_rev_f4f92fc install``)
in the same run, alternating its runs with this checkout's, and prints the ratio.

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
from common import ICT_NPZ, REPO, machine

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


def run_once(argv: list[str], out: Path, cwd: Path | None = None) -> float:
    """Wall time (s) of one subprocess run, deleting ``out`` first."""
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=cwd)
    dt_s = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{p.stderr[-2000:]}")
    return dt_s


def default_model_capture(folder: Path) -> Path | None:
    """The packaged demo capture A's landmarks (held-out ICT face, mm), for a fit with the
    default built-in model; None when the demo captures are absent."""
    from fitface.io.landmarks import save_landmarks

    src = REPO / "fitface" / "demo_captures" / "ict_captures.npz"
    if not src.is_file():
        return None
    with np.load(src) as z:
        pts = z["A_landmarks"]
    folder.mkdir(parents=True, exist_ok=True)
    save_landmarks(folder / "A.txt", pts, unit="m")  # the demo capture is in metres
    save_landmarks(folder / "A_no_unit.txt", pts)  # inferred unit: the scale-mismatch check runs too
    return folder / "A.txt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--compare", type=Path, default=None, metavar="CHECKOUT",
                    help="another checkout with its own .venv (e.g. a git worktree of an earlier revision, "
                         "`make install` run in it): each case alternates its runs with this checkout's")
    ap.add_argument("--skip-batch", action="store_true", help="time the single fits only")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_cli_fit_"))
    try:
        model = tmp / "model.safetensors"
        desc = build_model(model)
        make_captures(model, tmp / "one", 1, scan_too=True)
        if not args.skip_batch:
            make_captures(model, tmp / "many", args.batch_size)
        demo_lm = default_model_capture(tmp / "demo")
        lm, scan = tmp / "one" / "cap0000.txt", tmp / "one" / "cap0000.ply"
        cases = [
            ("fit, landmarks only", ["fit", "-l", str(lm), "-o", str(tmp / "o1"), "-m", str(model)],
             tmp / "o1", args.repeats, "`fitface fit -l LM.txt -o OUT -m MODEL`"),
            ("fit, with scan", ["fit", str(scan), "-l", str(lm), "-o", str(tmp / "o2"), "-m", str(model)],
             tmp / "o2", args.repeats, "`fitface fit SCAN.ply -l LM.txt -o OUT -m MODEL`"),
        ]
        if demo_lm is not None:
            cases.append(("fit, default model (ict)", ["fit", "-l", str(demo_lm), "-o", str(tmp / "o4")],
                          tmp / "o4", args.repeats, "`fitface fit -l A.txt -o OUT` (demo capture A, unit stated)"))
            cases.append(("fit, default model, unit inferred",
                          ["fit", "-l", str(demo_lm.with_name("A_no_unit.txt")), "-o", str(tmp / "o5")],
                          tmp / "o5", args.repeats, "`fitface fit -l A_no_unit.txt -o OUT` (+ the scale check)"))
        if not args.skip_batch:
            cases.append((f"batch, {args.batch_size} landmark files",
                          ["batch", str(tmp / "many"), "-o", str(tmp / "o3"), "-m", str(model), "--no-progress"],
                          tmp / "o3", args.batch_repeats, "`fitface batch DIR -o OUT -m MODEL`"))
        sides = [("this checkout", [sys.executable, "-m", "fitface"], REPO)]
        if args.compare is not None:
            other = args.compare.resolve()
            rev = subprocess.run(["git", "-C", str(other), "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True, check=False).stdout.strip() or other.name
            sides.insert(0, (rev, [str(other / ".venv" / "bin" / "python"), "-m", "fitface"], other))
        rows = []
        for name, argv, out, rep, cmd in cases:
            times: dict[str, list[float]] = {side: [] for side, _, _ in sides}
            for _ in range(rep):  # alternate the sides, so that both see the same machine
                for side, py, cwd in sides:
                    times[side].append(run_once([*py, *argv], out, cwd))
            meds = {side: float(np.median(ts)) for side, ts in times.items()}
            rows.append((name, cmd, meds, times))
            print(f"{name}: " + "; ".join(f"{side} median {meds[side]:.2f} s" for side in meds), file=sys.stderr)
        print(f"\n### End-to-end CLI fitting ({dt.date.today().isoformat()})\n")
        print(f"Machine: {machine()}; load average at start {os.getloadavg()[0]:.1f}. Model: {desc}, "
              f"latent 65+15+5, hidden 512, float32; the default model is the shipped `ict` (float16 file). "
              f"Default fit settings (400 Adam steps, 1 restart, lambda {DEFAULT_LAMBDA:g}, preview PNG on for fit, "
              f"off for batch). Wall time from process start to all files written, median of the runs"
              + (", the two checkouts' runs alternating." if len(sides) > 1 else ".") + "\n")
        names = [side for side, _, _ in sides]
        head = "| case | command | " + " | ".join(f"{n} median (s)" for n in names)
        print(head + (" | ratio |" if len(names) > 1 else " |") + " runs (s) |")
        print("| --- | --- |" + " ---: |" * (len(names) + (len(names) > 1)) + " --- |")
        for name, cmd, meds, times in rows:
            cells = " | ".join(f"{meds[n]:.2f}" for n in names)
            ratio = f" | {meds[names[1]] / meds[names[0]]:.2f}x" if len(names) > 1 else ""
            runs = "; ".join(f"{n}: " + ", ".join(f"{t:.2f}" for t in times[n]) for n in names)
            print(f"| {name} | {cmd} | {cells}{ratio} | {runs} |")
        print(f"\nRun: `.venv/bin/python benchmarks/bench_cli_fit.py --repeats {args.repeats} "
              f"--batch-size {args.batch_size}" + (" --skip-batch" if args.skip_batch else "")
              + (f" --compare {args.compare}" if args.compare else "") + "`")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
