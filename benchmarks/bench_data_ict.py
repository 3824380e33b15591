"""Benchmark: deformation transfer per identity and the `fitface data ict` build.

Run: ``.venv/bin/python benchmarks/bench_data_ict.py [--repeats 5] [--identities 300] [--samples 30000]``
(``--identities 0`` skips the full build).

Needs ../shared/data/ict_face_light.npz (V = 9,409, F = 18,460, 55 blendshapes). Measures, with
single-threaded BLAS as the builder runs it:

* the per-identity set-up (gradient operator + sparse LU of A^T A) and the solve of all 55
  blendshapes x 3 coordinates as right-hand sides;
* the whole build (``fitface data ict``, 2 worker processes) into a temporary folder, deleted after.

Prints a Markdown table for docs/benchmarks.md. Issue budget: 30,000 samples in minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ICT_NPZ, machine, median_ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--identities", type=int, default=300)
    ap.add_argument("--samples", type=int, default=30000)
    args = ap.parse_args()
    if not ICT_NPZ.is_file():
        sys.exit(f"needs {ICT_NPZ}")

    from fitface.data.ict import (
        ExpressionTransfer,
        build_ict_dataset,
        load_ict,
        single_threaded_blas,
    )
    from fitface.geometry.deformation_transfer import DeformationTransfer

    model = load_ict(ICT_NPZ)
    rows = []
    with single_threaded_blas():
        et = ExpressionTransfer(model)
        neutral_i = et.neutral_of(np.random.default_rng(0).standard_normal(len(model.identity_modes)))
        holder = {}

        def setup():
            holder["dt"] = DeformationTransfer(model.neutral, neutral_i, model.faces)

        t_setup = median_ms(setup, args.repeats)
        t_solve = median_ms(lambda: holder["dt"].transfer_gradients(et.gradients, et.mean_displacement), args.repeats)
    k = len(model.expression_names)
    rows.append(("transfer set-up per identity (A, A^T A, sparse LU)", f"{t_setup:.0f} ms"))
    rows.append((f"transfer solve per identity ({k} blendshapes x 3 right-hand sides)", f"{t_solve:.0f} ms"))

    if args.identities > 0:
        tmp = Path(tempfile.mkdtemp(prefix="bench-ict-"))
        try:
            t = time.perf_counter()
            res = build_ict_dataset(ICT_NPZ, tmp / "ict", identities=args.identities, samples=args.samples, workers=2)
            wall = time.perf_counter() - t
            what = (
                f"`fitface data ict` build, {args.identities} identities, {args.samples} samples x "
                f"{res.num_vertices} vertices, 2 workers"
            )
            rows.append((what, f"{wall:.1f} s"))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"Machine: {machine()}; {dt.date.today()}; `python benchmarks/bench_data_ict.py`\n")
    print("| what | time |\n| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
