"""Benchmark: geometry mapping layer forward and forward+backward, B=64, 64x64, ~9.4k vertices.

Run: ``.venv/bin/python benchmarks/bench_mapping.py [--repeats 30] [--threads 1]``. Uses the ICT
mesh (9,409 vertices) with ``harmonic_uv`` when the shared data is present, else a planar grid
of 97 x 97 = 9,409 vertices. Reports median wall times (ms) of both implementations
(``method="sparse"`` and ``"gather"``), float32.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import ICT_NPZ, median_ms


def _grid(n: int):
    xs = np.linspace(0.0, 1.0, n + 1)
    gx, gy = np.meshgrid(xs, xs)
    uv = np.stack([gx.ravel(), gy.ravel()], 1)
    idx = np.arange(uv.shape[0]).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]
    f = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    return uv, f


def main() -> None:
    import torch

    from fitface.geometry.mapping import GeometryMapping

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ict = ICT_NPZ
    if ict.is_file():
        from fitface.geometry.parameterization import harmonic_uv

        with np.load(ict) as z:
            v, f = z["neutral"].astype(np.float64), z["faces"].astype(np.int64)
        uv, name = harmonic_uv(v, f).uv, "ICT + harmonic_uv"
    else:
        uv, f = _grid(96)
        name = "planar grid"
    nv = uv.shape[0]
    t = time.perf_counter()
    GeometryMapping(uv, f, args.size)
    t_build = 1e3 * (time.perf_counter() - t)
    print(f"{name}: V={nv}, F={len(f)}, B={args.batch}, {args.size}x{args.size}, "
          f"threads={args.threads}, build {t_build:.1f} ms")
    x = torch.randn(args.batch, nv, 3, requires_grad=True)
    g = torch.randn(args.batch, 3, args.size, args.size)
    for method in ("sparse", "gather"):
        m = GeometryMapping(uv, f, args.size, method=method)

        def fwd():
            with torch.no_grad():
                m(x)

        def fwd_bwd():
            x.grad = None
            m(x).backward(g)

        print(f"  {method:<7} forward {median_ms(fwd, args.repeats):6.2f} ms   "
              f"forward+backward {median_ms(fwd_bwd, args.repeats):6.2f} ms (median of {args.repeats})")


if __name__ == "__main__":
    main()
