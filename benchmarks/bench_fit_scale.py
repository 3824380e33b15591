"""The fit's scale on real faces: the unit's (``scale="unit"``, the default for a known unit)
against a fitted one (``scale="free"``), on the demo's held-out ICT-FaceKit captures.

Usage::

    .venv/bin/python benchmarks/bench_fit_scale.py [--models ict ict-linear] [--lam 1]

Each capture (68 ibug landmarks in metres, 1 mm noise per axis, a rotated scanner frame) is fitted
from its landmarks alone with ``fitface.api.fit``; the fitted mesh is mapped back to the model frame
and compared vertex to vertex with the ground truth (mm). Prints a markdown table: the fitted
scale, the landmark RMS (mm) and the vertex RMS error against the truth (mm), per capture and mode.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["ict", "ict-linear"])
    ap.add_argument("--lam", type=float, default=1.0)
    args = ap.parse_args()

    from fitface import api
    from fitface.demo import load_real_captures

    z = load_real_captures()
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, lambda {args.lam:g}, landmarks only, steps: the engine's default\n")
    print("| model | capture | expression | scale (unit / free) | landmark RMS mm (unit / free) "
          "| vertex RMS to truth mm (unit / free) |")
    print("|---|---|---|---|---|---|")
    for model in args.models:
        for n in (str(x) for x in z["names"]):
            rot, trans = np.asarray(z[f"{n}_rotation"]), np.asarray(z[f"{n}_translation"])
            truth = np.asarray(z[f"{n}_truth"], dtype=np.float64)  # (V, 3) model frame, mm
            lm = np.asarray(z[f"{n}_landmarks"], dtype=np.float64)  # (68, 3) scanner frame, m
            cells = {"scale": [], "lm": [], "vtx": []}
            for mode in ("unit", "free"):
                res = api.fit(lm, model=model, unit="m", scale=mode, lam=args.lam, preview=False)
                mm = (res.vertices - trans) @ rot * 1000.0  # (V, 3) back to the model frame, mm
                cells["scale"].append(f"{res.transform.scale[0]:.5f}")
                cells["lm"].append(f"{res.landmark_rms * 1000.0:.2f}")
                cells["vtx"].append(f"{np.sqrt(np.mean(np.sum((mm - truth) ** 2, axis=1))):.2f}")
            print(f"| {model} | {n} | {z[f'{n}_expression']} | {' / '.join(cells['scale'])} | "
                  f"{' / '.join(cells['lm'])} | {' / '.join(cells['vtx'])} |")


if __name__ == "__main__":
    main()
