"""Benchmark: `fitface batch` against its own engine, and how both grow with the batch (issue #28 section 1).

Run: ``.venv/bin/python benchmarks/bench_batch_scale.py [--sizes 1000 10000] [--meshes]``.

For each size N, in a temporary folder: the ICT-sized benchmark model of ``bench_cli_fit.py``
(V = 9,409, hidden 512, float32) and N landmark files (random codes, pose, 0.5 mm noise, unit
stated). Then, one after the other on the same machine:

* **engine**: :func:`fitface.fitting.landmark_fit.fit_landmarks` in-process on the same targets, in
  the batch's chunks of :data:`fitface.api.inputs.BATCH_CHUNK`, with the default options (no
  reading, no writing, no full-mesh decode; rigid fits, as the files state their unit);
* **batch**: ``fitface batch DIR -o OUT --no-progress`` as a subprocess (process start, model
  load, reading, fitting, writing ``codes.json`` per capture (+ ``fit.ply`` with ``--meshes``)
  and the summaries), with its peak resident memory (``ru_maxrss`` of the child).

Prints a Markdown table: seconds, ms per capture, the batch / engine ratio (issue target <= 1.5)
and the peak memory, for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_cli_fit import build_model
from common import machine


def make_captures(model: Path, folder: Path, n: int) -> np.ndarray:
    """N landmark files; returns their (N, L, 3) targets in mm (as written)."""
    from fitface.fitting.decoder import load_decoder
    from fitface.fitting.similarity import Similarity
    from fitface.geometry.camera import rotation_yaw_pitch
    from fitface.io.landmarks import save_landmarks

    dec = load_decoder(model)
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    out = []
    for s in range(0, n, 1000):
        m = min(1000, n - s)
        pts = dec.points(rng.standard_normal((m, dec.layout.dim)), dec.landmark_rows("ibug68"))  # (m, L, 3)
        for i in range(m):
            t = Similarity(np.array([1.0]), rotation_yaw_pitch(*rng.uniform(-20, 20, 3))[None], rng.normal(0, 50, (1, 3)))
            p = t.apply(pts[i])[0] + rng.normal(0, 0.5, pts[i].shape)
            save_landmarks(folder / f"cap{s + i:06d}.txt", p, unit="mm")
            out.append(p)
    return np.asarray(out)


def engine_seconds(model: Path, targets: np.ndarray) -> float:
    from fitface.api.inputs import BATCH_CHUNK
    from fitface.fitting.decoder import load_decoder
    from fitface.fitting.landmark_fit import FitConfig, fit_landmarks

    dec = load_decoder(model)
    t = time.perf_counter()
    for s in range(0, len(targets), BATCH_CHUNK):
        fit_landmarks(dec, targets[s:s + BATCH_CHUNK], "ibug68", FitConfig(with_scale=False))
    return time.perf_counter() - t


def batch_run(folder: Path, out: Path, model: Path, meshes: bool) -> tuple[float, float]:
    """(wall seconds, peak RSS of the child in MiB)."""
    argv = [sys.executable, "-m", "fitface", "batch", str(folder), "-o", str(out), "-m", str(model), "--no-progress"]
    if not meshes:
        argv.append("--no-meshes")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"batch failed:\n{p.stderr[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak, before) / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--meshes", action="store_true", help="also write fit.ply per capture (350 KB each)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_batch_scale_"))
    rows = []
    try:
        model = tmp / "model.safetensors"
        desc = build_model(model)
        for n in args.sizes:
            folder = tmp / f"caps{n}"
            targets = make_captures(model, folder, n)
            eng = engine_seconds(model, targets)
            wall, rss = batch_run(folder, tmp / f"out{n}", model, args.meshes)
            rows.append((n, eng, wall, rss))
            print(f"N={n}: engine {eng:.2f} s, batch {wall:.2f} s ({wall / eng:.2f}x), peak {rss:.0f} MiB",
                  file=sys.stderr, flush=True)
            shutil.rmtree(folder)
            shutil.rmtree(tmp / f"out{n}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n### `fitface batch` against its engine ({dt.date.today().isoformat()})\n")
    print(f"Machine: {machine()}; load average {os.getloadavg()[0]:.1f}. Model: {desc}, hidden 512, float32. "
          f"Landmark files with a stated unit (rigid fits), default options, "
          f"{'fit.ply and ' if args.meshes else ''}codes.json per capture. Peak memory: the batch process's "
          f"maximum resident set (a running maximum over the runs, so only its growth is informative).\n")
    print("| captures | engine (s) | engine (ms/capture) | `fitface batch` (s) | batch (ms/capture) | batch / engine "
          "| peak RSS (MiB) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n, eng, wall, rss in rows:
        print(f"| {n:,} | {eng:.2f} | {1e3 * eng / n:.2f} | {wall:.2f} | {1e3 * wall / n:.2f} | {wall / eng:.2f}x "
              f"| {rss:.0f} |")
    print(f"\nRun: `.venv/bin/python benchmarks/bench_batch_scale.py --sizes {' '.join(map(str, args.sizes))}"
          f"{' --meshes' if args.meshes else ''}`")


if __name__ == "__main__":
    main()
