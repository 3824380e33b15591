"""Markdown table of training runs' proxy evaluations (the ``proxy_*`` columns of metrics.csv).

Usage::

    .venv/bin/python benchmarks/collect_proxy.py RUN_DIR [RUN_DIR ...] [--steps 500,750] [--labels a,b]

One row per run and logged step (all proxy steps, or those of ``--steps``); mm except the
coefficient ratios (0 = decoupled). Bad input: one line, exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

KEYS = [("coef_ratio_identity", "coef id"), ("coef_ratio_expression", "coef exp"), ("t2_surface_0.01", "T2 0.01"),
        ("t2_surface_10", "T2 10"), ("retarget", "retarget"), ("retarget_no_transfer", "no transfer"),
        ("div", "Div"), ("div_identity", "Div-Id"), ("div_expression", "Div-Exp"), ("specificity", "Sp")]


def fail(message: str) -> None:
    """Bad input: one line on stderr, exit code 2."""
    print(message, file=sys.stderr)
    raise SystemExit(2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--steps", default="", help="comma-separated steps (default: every proxy row)")
    ap.add_argument("--labels", default="", help="comma-separated labels (default: folder names)")
    args = ap.parse_args()
    from fitface.train.logs import read_csv

    labels = args.labels.split(",") if args.labels else [p.name for p in args.runs]
    if len(labels) != len(args.runs):
        fail(f"collect_proxy: --labels has {len(labels)} names for {len(args.runs)} runs")
    try:
        want = {int(s) for s in args.steps.split(",") if s.strip()} if args.steps else None
    except ValueError:
        fail(f"collect_proxy: --steps: expected comma-separated integers, got {args.steps!r}")
    for run in args.runs:
        if not (run / "metrics.csv").is_file():
            fail(f"{run / 'metrics.csv'}: no metrics.csv (not a training run folder)")
    print("| run | step | " + " | ".join(h for _, h in KEYS) + " |")
    print("|---" * (len(KEYS) + 2) + "|")
    for run, label in zip(args.runs, labels):
        for r in read_csv(run / "metrics.csv"):
            if not r.get("proxy_coef_ratio_expression") or (want is not None and int(r["step"]) not in want):
                continue
            cells = []
            for k, _ in KEYS:
                v = r.get(f"proxy_{k}", "")
                cells.append(f"{float(v):.3f}" if k.startswith("coef") and v else (f"{float(v):.2f}" if v else "-"))
            print(f"| {label} | {r['step']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
