"""Benchmark: seconds per MAE training step (models/builders/mae.py) on a dataset, one thread.

Run: ``.venv/bin/python benchmarks/bench_mae_step.py DATA [--batch-size 16] [--steps 30] [--threads 1]``
(DATA: a fitface dataset folder, e.g. ../runs/data/ict, read only).

Times exactly what one step of :func:`build_mae`'s loop does (a streamed batch read from the
memory map, geometry images, the encoder, :func:`mae_losses`, backward, fused Adam on the
encoder and the (3V, 65, 20) core), split into read / forward / backward / optimiser, after 3
warm-up steps. The core is random (timing does not depend on its values), so no 3DMM is built.
Prints one Markdown table row per part: median and mean seconds.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from fitface.data.format import load_dataset
    from fitface.geometry.mapping import GeometryMapping
    from fitface.geometry.parameterization import harmonic_uv
    from fitface.models.builders.mae import MaeBuildConfig, MaeEncoder, grouped_epoch, mae_losses

    cfg = MaeBuildConfig(batch_size=args.batch_size)
    ds = load_dataset(args.data)
    idx = ds.indices("train")
    ids, exps = ds.label("identity")[idx], ds.label("expression")[idx]
    order = grouped_epoch(ids, exps, cfg.group_size, 0, 0)
    template = torch.from_numpy(np.asarray(ds.template_vertices, dtype=np.float32))
    uv = harmonic_uv(np.asarray(ds.template_vertices, dtype=np.float64), ds.faces, what="template").uv
    mapping = GeometryMapping(uv, ds.faces, cfg.image_size)
    g = torch.Generator().manual_seed(0)
    core = torch.nn.Parameter(torch.randn(3 * ds.num_vertices, cfg.identity_dims, cfg.expression_dims, generator=g) * 0.01)
    offset = torch.zeros(core.shape[0])
    enc = MaeEncoder(cfg.identity_dims - 1, cfg.expression_dims - 1, cfg.image_size, cfg.encoder_channels)
    opt = torch.optim.Adam([{"params": list(enc.parameters()), "lr": 1e-4}, {"params": [core], "lr": 1e-5}], fused=True)
    parts: dict[str, list[float]] = {"read": [], "forward": [], "backward": [], "optimiser": [], "step": []}
    b = args.batch_size
    for k in range(args.steps + 3):
        t0 = time.perf_counter()
        pos = order[k * b : (k + 1) * b]
        sel = np.argsort(idx[pos], kind="stable")
        verts = np.empty((len(pos), ds.num_vertices, 3), np.float32)
        verts[sel] = ds.read(idx[pos][sel])
        disp = torch.from_numpy(verts) - template
        t1 = time.perf_counter()
        a, e = enc(mapping(disp) / 3.0)
        terms = mae_losses(core, offset, a, e, disp, torch.from_numpy(ids[pos]), torch.from_numpy(exps[pos]), 3.0, cfg)
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        terms.total.backward()
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        if k >= 3:
            for name, dt_ in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
                parts[name].append(dt_)
    print(f"MAE step, batch {b}, V = {ds.num_vertices}, core {tuple(core.shape)} "
          f"({core.numel() / 1e6:.1f} M), {args.threads} thread(s), {args.steps} steps")
    print("| part | median s | mean s |\n|---|---|---|")
    for name, v in parts.items():
        print(f"| {name} | {statistics.median(v):.3f} | {statistics.mean(v):.3f} |")


if __name__ == "__main__":
    main()
