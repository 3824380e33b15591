"""Benchmark: what a landmark fit costs with a CoMA model file (the numpy ComaDecoder).

Run: ``.venv/bin/python benchmarks/bench_coma_fit.py MODEL.safetensors [--dataset DATA] [--repeats 3]``

MODEL is a CoMA model file (``build_coma`` + ``save_model``; a very short training is enough,
only the sizes matter). Measures, in this process (numpy and scipy's own threading as set by
the environment):

* the decoder's load time (``load_decoder``: parse, validate, build the CSR operators),
* one engine step at B = 1: ``linearize_points`` + its VJP (what the Adam loop calls per step),
  split into the CoMA decoder's forward and backward and the rest,
* ``vertices`` and ``vertices_vjp`` at B = 1,
* one ``fitface.fit`` of landmarks in process (the engine's default steps, or each of ``--steps``), and
* ``fitface fit -l LM -o OUT --model MODEL`` end to end as a subprocess (process start to files
  written), the issue's budget being 2 s on the ICT template.

The landmarks are the model's ``ibug68`` points of a dataset sample (``--dataset``, default
the ICT dataset at ../runs/data/ict when present) or of a random model face.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fitface.fitting.decoder import load_decoder


def best(fun, repeats: int) -> float:
    """Median wall time of ``repeats`` calls (s)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fun()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--dataset", type=Path, default=Path(__file__).resolve().parents[2] / "runs" / "data" / "ict")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, nargs="+", default=[None],
                    help="fit steps to time (default: the engine's; e.g. --steps 150 400)")
    args = ap.parse_args()

    t = time.perf_counter()
    dec = load_decoder(args.model)
    t_load = time.perf_counter() - t
    print(f"model: {args.model} (V = {dec.num_vertices}, sizes {dec.network.sizes}, D = {dec.latent_dim})")
    rows = dec.landmark_rows("ibug68")
    rng = np.random.default_rng(0)
    z = rng.standard_normal((1, dec.latent_dim)).astype(np.float32)
    g = rng.standard_normal((1, rows.num_points, 3)).astype(np.float32)
    gv = rng.standard_normal((1, dec.num_vertices, 3)).astype(np.float32)
    w = dec.coefficients(z)
    reps = max(20, 10 * args.repeats)

    def step():
        _, vjp = dec.linearize_points(z, rows)
        vjp(g)

    out, masks = dec._decode(w)  # noqa: SLF001 (benchmark of the parts)
    n3 = np.ascontiguousarray(rng.standard_normal(out.shape).astype(np.float32))
    rows_t = {
        "load_decoder (parse, validate, CSR operators)": t_load,
        "engine step: linearize_points + VJP, B = 1": best(step, reps),
        "  CoMA decoder forward, whole mesh (vertices path)": best(lambda: dec._decode(w), reps),  # noqa: SLF001
        "  CoMA decoder backward, whole mesh": best(lambda: dec._decode_back(n3.copy(), masks, 1), reps),  # noqa: SLF001
        "vertices, B = 1": best(lambda: dec.vertices(z), reps),
        "vertices_vjp, B = 1": best(lambda: dec.vertices_vjp(z, gv), reps),
    }
    for name, sec in rows_t.items():
        print(f"| {name} | {sec * 1e3:.2f} ms |")

    import fitface

    lset = dec.landmark_sets["ibug68"]
    if (args.dataset / "dataset.json").is_file():
        from fitface.data.format import load_dataset

        ds = load_dataset(args.dataset)
        j = int(ds.indices("test")[0])
        truth = ds.vertices[j].astype(np.float64)
        unit = ds.unit
        src = f"{args.dataset} sample {j} (test split)"
    else:
        truth = dec.vertices(rng.standard_normal((1, dec.latent_dim)))[0].astype(np.float64)
        unit, src = dec.unit, "a random model face"
    lm = lset.points(truth, dec.faces)
    for steps in args.steps:
        label = "default steps" if steps is None else f"{steps} steps"
        t = time.perf_counter()
        res = fitface.fit(lm, model=args.model, unit=unit, preview=False, steps=steps)
        t_fit = time.perf_counter() - t
        print(f"| fitface.fit in process (landmarks of {src}, {label}) | {t_fit:.2f} s "
              f"(landmark RMS {float(res.landmark_rms):.2f} {unit}) |")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "lm.txt"
            np.savetxt(path, lm)
            cmd = [sys.executable, "-m", "fitface", "fit", "-l", str(path), "-o", str(Path(tmp) / "out"),
                   "--model", str(args.model), "--unit", unit, "--no-preview"]
            cmd += [] if steps is None else ["--steps", str(steps)]
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True)
                times.append(time.perf_counter() - t)
            print(f"| `fitface fit -l LM -o OUT --model MODEL --unit {unit} --no-preview"
                  f"{'' if steps is None else f' --steps {steps}'}`, end to end | {statistics.median(times):.2f} s "
                  f"(median of {args.repeats}: {', '.join(f'{x:.2f}' for x in times)}) |")

if __name__ == "__main__":
    main()
