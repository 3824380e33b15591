"""Benchmark: 224 x 224 software renders (raster, shaded, normal map) of ~20k-triangle meshes.

Run: ``.venv/bin/python benchmarks/bench_render.py [--repeats 30]``. Reports the median wall
time (ms, one process; numpy may use its own threads) of an icosphere (subdivisions=5, 20,480
faces) and, when the shared data is present, of the ICT neutral (18,460 faces).
"""

from __future__ import annotations

import argparse

import numpy as np
from common import ICT_NPZ, median_ms


def main() -> None:
    import trimesh

    from fitface.geometry.camera import frame_mesh
    from fitface.geometry.raster import rasterize
    from fitface.geometry.render import render_normals, render_shaded

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()

    meshes = {}
    m = trimesh.creation.icosphere(subdivisions=5)
    meshes["icosphere5"] = (np.asarray(m.vertices), np.asarray(m.faces, dtype=np.int64))
    ict = ICT_NPZ
    if ict.is_file():
        with np.load(ict) as z:
            meshes["ict"] = (z["neutral"].astype(np.float64), z["faces"].astype(np.int64))

    s = args.size
    print(f"{'mesh':<12} {'faces':>6} {'raster':>8} {'shaded':>8} {'shaded+cull':>12} {'normals':>8}  (median ms, {s}x{s})")
    for name, (v, f) in meshes.items():
        cam = frame_mesh(v, s)
        xy, depth = cam.project(v)
        t_r = median_ms(lambda: rasterize(xy[f], s, s, depth[f]), args.repeats)
        t_s = median_ms(lambda: render_shaded(v, f, camera=cam), args.repeats)
        t_c = median_ms(lambda: render_shaded(v, f, camera=cam, cull_backfaces=True), args.repeats)
        t_n = median_ms(lambda: render_normals(v, f, camera=cam), args.repeats)
        print(f"{name:<12} {len(f):>6} {t_r:>8.1f} {t_s:>8.1f} {t_c:>12.1f} {t_n:>8.1f}")


if __name__ == "__main__":
    main()
