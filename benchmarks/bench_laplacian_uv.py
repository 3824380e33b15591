"""Benchmark: cotangent Laplacian, harmonic UV and the Laplacian regulariser on the ICT face.

Run: ``.venv/bin/python benchmarks/bench_laplacian_uv.py [--repeats 10] [--batch 64]``.
Reports median wall times (ms, one process) on the ICT neutral (9,409 vertices, 18,460
faces; the shared data must be present) of: ``cotangent_laplacian``, ``check_disk_like``,
``harmonic_uv`` (auto weights, with its fallback) and each forced weight scheme, and the
regulariser's forward and forward+backward on a (batch, V, 3) float32 tensor.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
from common import ICT_NPZ, median_ms


def main() -> None:
    import torch

    from fitface.geometry.laplacian import LaplacianRegularizer, cotangent_laplacian
    from fitface.geometry.parameterization import WEIGHTS, harmonic_uv
    from fitface.geometry.topology import check_disk_like

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    npz = ICT_NPZ
    if not npz.is_file():
        raise SystemExit(f"shared ICT data not found at {npz}")
    with np.load(npz) as z:
        v, f = z["neutral"].astype(np.float64), z["faces"].astype(np.int64)

    print(f"ICT neutral: V={len(v)}, F={len(f)}; median of {args.repeats} (ms)")
    print(f"  cotangent_laplacian      {median_ms(lambda: cotangent_laplacian(v, f), args.repeats):8.1f}")
    print(f"  check_disk_like          {median_ms(lambda: check_disk_like(f, len(v)), args.repeats):8.1f}")
    res = harmonic_uv(v, f)
    logging.getLogger("fitface.geometry.parameterization").setLevel(logging.ERROR)  # fallback already shown
    print(f"  harmonic_uv auto         {median_ms(lambda: harmonic_uv(v, f), args.repeats):8.1f}"
          f"   -> {res.weights}, attempts {res.attempts}")
    for w in WEIGHTS:
        r = harmonic_uv(v, f, weights=w)
        ms = median_ms(lambda: harmonic_uv(v, f, weights=w), args.repeats)
        print(f"  harmonic_uv {w:<14} {ms:8.1f}   -> {r.flipped} flipped")

    reg = LaplacianRegularizer(v, f)
    d = torch.randn(args.batch, len(v), 3, requires_grad=True)

    def fwd_bwd():
        reg(d).mean().backward()

    with torch.no_grad():
        ms = median_ms(lambda: reg(d), args.repeats)
    print(f"  regularizer fwd  B={args.batch:<4} {ms:8.1f}")
    print(f"  regularizer f+b  B={args.batch:<4} {median_ms(fwd_bwd, args.repeats):8.1f}")


if __name__ == "__main__":
    main()
