"""Benchmark: batch landmark fitting (numpy engine) vs a naive per-capture full-mesh loop (torch).

Run: ``.venv/bin/python benchmarks/bench_fit.py [--captures 1000] [--steps 500] [--naive 5]``.

In one run, on an ICT-sized model (V = 9,409, D = 85 = 65 + 15 + 5, hidden 512; random smooth
weights: timing does not depend on training) with 68 landmarks:

(a) ``fit_landmarks`` on all captures as one batch (Umeyama similarity every 2nd step), plus
    the one full-mesh decode of every result at the end; float32 numpy.
(b) a naive script: one capture at a time, torch Adam on z, decoding the whole mesh through
    ``fitface.models.generator.Generator`` every step and gathering the landmarks from it
    (no similarity estimation: strictly less work than (a) per step), timed on ``--naive``
    captures and extrapolated per capture.

Prints the median per-capture times, the speed-up (target >= 100x) and a Markdown table for
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time

import numpy as np
from common import machine


def naive_fit(gen, template, corners, bary, target, steps, lr, lam, torch):
    """One capture: torch autograd through the full generator every step."""
    z = torch.randn(1, gen.latent_dim, requires_grad=True)
    opt = torch.optim.Adam([z], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        verts = template + gen(z)[0]  # (V, 3) full decode
        pts = (verts[corners] * bary[..., None]).sum(1)  # (L, 3)
        loss = ((pts - target) ** 2).sum() + lam * (z**2).sum()
        loss.backward()
        opt.step()
    return z.detach()


def main() -> None:
    from fitface.fitting.decoder import synthetic_mlp_decoder
    from fitface.fitting.landmark_fit import FitConfig, fit_landmarks

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--captures", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--naive", type=int, default=5, help="captures timed in the naive loop")
    ap.add_argument("--repeats", type=int, default=1, help="repeats of the batch fit (median)")
    args = ap.parse_args()

    dec = synthetic_mlp_decoder(grid=97, latent=(65, 15, 5), hidden=512, seed=0, dtype=np.float32, landmarks=68)
    rows = dec.landmark_rows("lm")
    rng = np.random.default_rng(0)
    z_true = rng.standard_normal((args.captures, dec.latent_dim)).astype(np.float32)
    targets = dec.points(z_true, rows).astype(np.float64) + rng.normal(size=(args.captures, 68, 3))
    print(f"model: V={dec.num_vertices}, D={dec.latent_dim}, hidden={dec.hidden_size}, L=68; "
          f"{args.captures} captures x {args.steps} steps; load {os.getloadavg()[0]:.2f}", flush=True)

    cfg = FitConfig(lam=0.01, steps=args.steps, restarts=1, seed=0)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        res = fit_landmarks(dec, targets, "lm", cfg)
        t_fit = time.perf_counter() - t0
        meshes = dec.vertices(res.z)  # the one full decode per capture
        times.append((t_fit, time.perf_counter() - t0))
        del meshes
    t_fit, t_batch = np.median(np.asarray(times), axis=0)
    per_batch = t_batch / args.captures
    print(f"(a) batch: fit {t_fit:.2f} s + decode = {t_batch:.2f} s -> {1e3 * per_batch:.2f} ms/capture; "
          f"median landmark RMS {np.median(res.rms):.3f} mm (1 mm noise)", flush=True)

    import torch

    from fitface.models.generator import Generator

    torch.manual_seed(0)
    gen = Generator(dec.latent_dim, dec.num_vertices, hidden=dec.hidden_size)
    with torch.no_grad():
        gen.fc.weight.copy_(torch.from_numpy(dec.w1))
        gen.fc.bias.copy_(torch.from_numpy(dec.b1))
        gen.out.weight.copy_(torch.from_numpy(dec.w2))
        gen.out.bias.copy_(torch.from_numpy(dec.b2))
    gen.requires_grad_(False)
    lset = dec.landmark_sets["lm"]
    template = torch.from_numpy(dec.template.astype(np.float32))
    corners = torch.from_numpy(dec.faces[lset.face_index])
    bary = torch.from_numpy(lset.bary.astype(np.float32))
    naive = []
    for i in range(args.naive):
        target = torch.from_numpy(targets[i].astype(np.float32))
        t0 = time.perf_counter()
        z = naive_fit(gen, template, corners, bary, target, args.steps, 0.05, 0.01, torch)
        (template + gen(z)[0]).numpy()
        naive.append(time.perf_counter() - t0)
    per_naive = float(np.median(naive))
    ratio = per_naive / per_batch
    print(f"(b) naive: {per_naive:.2f} s/capture (median of {args.naive}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads)")
    print(f"speed-up: {ratio:.0f}x (target >= 100x)\n")
    cmd = "python benchmarks/bench_fit.py " + " ".join(sys.argv[1:])
    print(f"Machine: {machine()}; load average {os.getloadavg()[0]:.2f}; {dt.date.today().isoformat()}; "
          f"`{cmd.strip()}`\n")
    print("| method | captures | steps | total (s) | per capture (ms) | speed-up |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(f"| batch numpy, landmark rows only (+1 full decode) | {args.captures} | {args.steps} | "
          f"{t_batch:.2f} | {1e3 * per_batch:.2f} | {ratio:.0f}x |")
    print(f"| naive torch loop, full mesh every step | {args.naive} (extrapolated) | {args.steps} | "
          f"{per_naive * args.captures:.0f} | {1e3 * per_naive:.0f} | 1x |")


if __name__ == "__main__":
    main()
