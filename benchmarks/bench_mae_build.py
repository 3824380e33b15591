"""Benchmark: a real, budgeted MAE build on a dataset, saved the CLI's way, then loaded and fitted.

Run: ``.venv/bin/python benchmarks/bench_mae_build.py DATA OUT_DIR [--minutes 5] [--threads 1]``
(DATA read only; OUT_DIR gets model.safetensors and report.json).

Builds with :func:`fitface.models.builders.mae.build_mae` (``MaeBuildConfig(max_minutes=...)``,
curve every 25 steps), saves with ``save_model(..., training_config, data_fingerprint)``, prints
the report's curve (training-batch vertex RMSE), then reloads the file with
``fitface.load_model`` and fits 68 exact landmarks of 5 test-split faces with ``fitface.fit``,
printing each fit's vertex RMSE against the rigidly aligned mean face's.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("out_dir")
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import fitface
    from fitface.data.format import load_dataset
    from fitface.fitting.similarity import umeyama
    from fitface.models.builders.mae import MaeBuildConfig, build_mae
    from fitface.models.model_file import save_model

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(args.data)
    cfg = MaeBuildConfig(max_minutes=args.minutes, show_progress=False, log_every=25)
    t0 = time.perf_counter()
    build = build_mae(ds, cfg, progress=lambda m: print(f"[{time.perf_counter() - t0:7.1f} s] {m}", flush=True))
    path = out / "model.safetensors"
    save_model(path, build.model, training_config=cfg.to_json(), data_fingerprint=ds.fingerprint)
    (out / "report.json").write_text(json.dumps(build.report, indent=1))
    r = build.report
    print(f"{r['steps']} steps ({r['epochs']:.2f} epochs, {r['seconds_per_step']} s a step), stop: {r['stop_reason']}")
    print("rmse curve (mm):", ", ".join(f"{c['rmse_mm']:.3f}" for c in r["curve"]))

    model = fitface.load_model(path)
    with torch.no_grad():  # the mean face: z = 0, the mean codes
        mean = model.decode(torch.zeros(1, model.latent_dim))[0].double().numpy()
    lset = ds.landmark_sets["ibug68"]
    test = ds.indices("test")
    for j in test[:: max(1, len(test) // 5)][:5]:
        truth = ds.vertices[j].astype(np.float64)
        res = fitface.fit(lset.points(truth, ds.faces), model=path, unit=ds.unit, preview=False)
        aligned = umeyama(mean[None], truth[None], scale=False).apply(mean[None])[0]
        base = np.sqrt(((aligned - truth) ** 2).sum(-1).mean())
        err = np.sqrt(((res.vertices - truth) ** 2).sum(-1).mean())
        print(f"sample {j}: fit {err:.2f} {ds.unit}, aligned mean face {base:.2f} {ds.unit}, ratio {err / base:.3f}")


if __name__ == "__main__":
    main()
