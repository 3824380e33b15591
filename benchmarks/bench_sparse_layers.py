"""Benchmark: the sparse layers this project made faster, each against its plain formulation, on the ICT face.

Usage::

    .venv/bin/python benchmarks/bench_sparse_layers.py --data DATA [--threads 1] [--repeats 20]

DATA is a dataset on the ICT template (e.g. `fitface data ict ../shared/data/ict_face_light.npz
-o DATA --identities 20 --samples 600`; only the template matters). Medians of ``--repeats``
calls, each pair timed alternately in this process:

* the geometry mapping (64 px) forward + backward at batch 64: the vertex-major product
  ``M @ x.permute(1, 0, 2)`` (what ``GeometryMapping`` did) against ``kron(M, I_3)`` on the batch
  as it lies in memory (``fitface.geometry.interleaved``);
* the folded critic's fakes at batch 64 (hidden width 512): one float32 matmul against one bfloat16
  matmul (what ``--amp`` uses);
* a CoMA autoencoder on the ICT hierarchy: a training step (forward + backward, batch 16) and a
  decode (batch 64), with the Chebyshev layer concatenating its K terms (the formulation before)
  against ``models/chebyshev.cheb_conv`` (terms mixed as made, Clenshaw where F_out < F_in).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def pair(name: str, old, new, repeats: int) -> None:
    """Time ``old`` and ``new`` alternately; print one table row."""
    a, b = [], []
    for _ in range(repeats):
        a.append(median_ms(old, 1))
        b.append(median_ms(new, 1))
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"| {name} | {ma:.2f} ms | {mb:.2f} ms | {ma / mb:.2f}x |")


def concatenating_cheb_conv(x, laplacian, weight, bias=None):
    """The Chebyshev layer as it was: all K terms stacked and permuted, then one matmul."""
    b, v, fin = x.shape
    k = weight.shape[0] // fin
    t0 = x.transpose(0, 1).reshape(v, b * fin)
    terms = [t0]
    if k > 1:
        terms.append(torch.sparse.mm(laplacian, t0))
    for _ in range(2, k):
        terms.append(2.0 * torch.sparse.mm(laplacian, terms[-1]) - terms[-2])
    t = torch.stack(terms, dim=0).reshape(k, v, b, fin).permute(2, 1, 0, 3).reshape(b, v, k * fin)
    y = t @ weight
    return y if bias is None else y + bias


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import fitface.models.chebyshev as chebyshev
    from fitface.data.format import load_dataset
    from fitface.geometry.interleaved import csr_tensor
    from fitface.geometry.mapping import GeometryMapping
    from fitface.geometry.parameterization import harmonic_uv
    from fitface.models.coma import ComaAutoencoder
    from fitface.models.mesh_sampling import build_hierarchy

    ds = load_dataset(args.data)
    template = np.asarray(ds.template_vertices, dtype=np.float64)
    V = ds.num_vertices
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {args.threads} thread(s), V = {V}, medians of {args.repeats}\n")
    print("| part | plain | this project's | speed-up |\n|---|---:|---:|---:|")

    mapping = GeometryMapping(harmonic_uv(template, ds.faces, what="template").uv, ds.faces, 64)
    m = csr_tensor(mapping.matrix("scipy"), torch.float32)  # (P, V)
    x = torch.randn(64, V, 3, requires_grad=True)

    def plain_mapping():
        img = (m @ x.permute(1, 0, 2).reshape(V, -1)).reshape(64, 64, 64, 3).permute(2, 3, 0, 1).contiguous()
        img.backward(torch.ones_like(img))

    def interleaved_mapping():
        img = mapping(x)
        img.backward(torch.ones_like(img))

    pair("geometry mapping, forward + backward, batch 64", plain_mapping, interleaved_mapping, args.repeats)

    h = torch.randn(64, 512)
    w32, b32 = torch.randn(3 * 64 * 64, 512), torch.randn(3 * 64 * 64)
    w16, b16 = w32.to(torch.bfloat16), b32.to(torch.bfloat16)
    pair("folded critic fakes, batch 64 (float32 -> bfloat16 matmul)", lambda: torch.addmm(b32, h, w32.t()),
         lambda: torch.addmm(b16, h.to(torch.bfloat16), w16.t()).float(), args.repeats)

    ae = ComaAutoencoder(build_hierarchy(template, ds.faces), latent_size=20, seed=0)
    xs = torch.randn(16, V, 3)
    z = torch.randn(64, 20)
    new_conv = chebyshev.cheb_conv

    def with_conv(conv, fn):
        def run():
            chebyshev.cheb_conv = conv
            try:
                fn()
            finally:
                chebyshev.cheb_conv = new_conv
        return run

    def train_step():
        ae.zero_grad()
        ae(xs).abs().mean().backward()

    def decode():
        with torch.no_grad():
            ae.decode(z)

    reps = max(3, args.repeats // 4)
    pair("CoMA training step, batch 16", with_conv(concatenating_cheb_conv, train_step), with_conv(new_conv, train_step),
         reps)
    pair("CoMA decode, batch 64", with_conv(concatenating_cheb_conv, decode), with_conv(new_conv, decode), reps)


if __name__ == "__main__":
    main()
