"""Each training lever alone, at one budget, on the proxy evaluation (issue #12, section 3).

Trains one run per variant (a recipe plus ``--set``-style overrides) for the same number of
generator steps and reports the proxy evaluation (:mod:`fitface.evaluation.proxy`) of its last
step, with the run's time. Runs go to ``OUT/NAME`` (kept: their ``metrics.csv`` holds the curves)
and the table to ``OUT/levers.json`` and ``OUT/levers.md``.

Usage::

    .venv/bin/python benchmarks/bench_levers.py DATA_DIR -o OUT --steps 1050 --threads 1 \\
        --ict-source ../shared/data/ict_face_light.npz \\
        --variant 'no_interaction=ict:{"lambda_interaction": 0}' \\
        --variant 'no_ema=ict:{"ema_decay": 0}'

A variant is ``NAME=RECIPE:JSON`` (the JSON object overrides fields of the recipe).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def fail(message: str) -> None:
    """Bad input: one line on stderr, exit code 2."""
    print(message, file=sys.stderr)
    raise SystemExit(2)


def parse_variant(text: str) -> tuple[str, str, dict]:
    """``NAME=RECIPE:JSON`` -> (name, recipe, overrides); one line and exit code 2 if malformed."""
    try:
        name, rest = text.split("=", 1)
        recipe, _, js = rest.partition(":")
        over = json.loads(js) if js.strip() else {}
        if not name or not recipe or not isinstance(over, dict):
            raise ValueError
    except ValueError:
        fail(f"bench_levers: --variant {text!r}: expected NAME=RECIPE:JSON-object")
    return name, recipe, over


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=1050)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ict-source", type=Path, default=None)
    ap.add_argument("--variant", action="append", required=True)
    args = ap.parse_args()

    from fitface.errors import InputError
    from fitface.train.config import load_config
    from fitface.train.logs import read_csv
    from fitface.train.trainer import Trainer

    variants = [parse_variant(v) for v in args.variant]
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, recipe, over in variants:
        run = args.out / name
        fixed = {"max_steps": args.steps, "num_threads": args.threads, "progress": False, "proxy_every": args.steps,
                 "proxy_ict_source": str(args.ict_source or ""), "snapshot_every": 0, "sample_every": 0,
                 "metrics_every": args.steps}
        try:
            cfg = load_config(recipe, {**over, **fixed})
            t0 = time.perf_counter()
            Trainer(args.data, cfg, run).train(save_model=False)
        except InputError as exc:
            fail(f"bench_levers: {name}: {exc}")
        rows = read_csv(run / "metrics.csv")
        last = {k[len("proxy_"):]: float(v) for k, v in rows[-1].items() if k.startswith("proxy_") and v != ""}
        results[name] = {"recipe": recipe, "overrides": over, "steps": args.steps, "seconds": time.perf_counter() - t0,
                         "proxy": last}
        print(name, json.dumps(results[name]), flush=True)
    doc = {"date": time.strftime("%Y-%m-%d %H:%M"), "data": str(args.data), "threads": args.threads,
           "results": results}
    (args.out / "levers.json").write_text(json.dumps(doc, indent=1) + "\n")
    keys = ["coef_ratio_identity", "coef_ratio_expression", "t2_surface_0.01", "t2_surface_10", "retarget",
            "retarget_no_transfer", "div", "div_identity", "specificity"]
    lines = ["| variant | steps | minutes | " + " | ".join(keys) + " |", "|---" * (len(keys) + 3) + "|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['steps']} | {r['seconds'] / 60:.1f} | "
                     + " | ".join(f"{r['proxy'].get(k, float('nan')):.3f}" for k in keys) + " |")
    (args.out / "levers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
