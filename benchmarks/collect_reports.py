"""Merge several ``fitface evaluate`` reports into one set of Markdown tables.

Usage::

    python benchmarks/collect_reports.py reports/ict_paper reports/ict_3dmm ... [--labels a,b,...]

Each REPORT folder holds the ``report.json`` of ``fitface evaluate`` on the *same* dataset with
the same options (checked: dataset fingerprint, counts, seed), of one model or several;
evaluating models one by one lets them run as soon as each training ends, or in parallel. Prints Table 1 (Dec-Id, Dec-Exp, Div, Div-Id, Div-Exp,
Sp., plus the ground-truth coefficient ratios; each Dec- value with its chance level, the
rate on pairs sharing no code, in parentheses), Table 2 (surface RMSE per lambda, vertex RMSE
in parentheses) and the retargeting table, with each evaluation's wall time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

#: Options that must agree between the merged reports.
SAME = ("n_samples", "pairs", "decoupling_n", "decoupling_m", "lambdas", "test_captures", "retarget_pairs", "seed",
        "steps", "similarity", "noise_mm", "skip")


def _f(x, nd=2) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def fail(message: str) -> None:
    """Bad input: one line on stderr, exit code 2 (as the fitface CLI)."""
    print(message, file=sys.stderr)
    raise SystemExit(2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reports", nargs="+", type=Path, help="report folders of `fitface evaluate`")
    ap.add_argument("--labels", default=None,
                    help="comma-separated row labels, one per model (default: the folder name for a "
                         "one-model report, else the report's model names)")
    args = ap.parse_args()
    docs = []
    for r in args.reports:
        p = r / "report.json"
        if not p.is_file():
            fail(f"{p}: no such file")
        try:
            docs.append(json.loads(p.read_text()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            fail(f"{p}: not a readable report ({type(exc).__name__}: {exc})")
    # one row per model: (label, report, model name in the report)
    rows = []
    for r, d in zip(args.reports, docs):
        names = list(d.get("models", []) and [m["name"] for m in d["models"]])
        if not names:
            fail(f"{r}: a report without models")
        rows += [(r.name if len(names) == 1 else n, d, n) for n in names]
    if args.labels:
        labels = args.labels.split(",")
        if len(labels) != len(rows):
            fail(f"--labels: {len(labels)} labels for {len(rows)} models")
        rows = [(lab, d, n) for lab, (_, d, n) in zip(labels, rows)]
    ref = docs[0]
    for r, d in zip(args.reports, docs):
        if d["dataset"]["fingerprint"] != ref["dataset"]["fingerprint"]:
            fail(f"{r}: evaluated on another dataset than {args.reports[0]}")
        diff = [k for k in SAME if d["options"].get(k) != ref["options"].get(k)]
        if diff:
            fail(f"{r}: options differ from {args.reports[0]}: {', '.join(diff)}")

    o = ref["options"]
    print(f"Dataset `{ref['dataset']['path']}` (fingerprint {ref['dataset']['fingerprint']}, "
          f"{ref['dataset']['num_samples']} faces, V = {ref['dataset']['num_vertices']}, {ref['dataset']['unit']}); "
          f"diversity over {o['pairs']} pairs, specificity over {o['n_samples']} samples, decoupling "
          f"n = {o['decoupling_n']}, m = {o['decoupling_m']}; {o['test_captures']} Table-2 captures; "
          f"{o['retarget_pairs']} retargeting pairs; seed {o['seed']}.\n")
    if "table1" in ref:
        print("| model | Dec-Id | Dec-Exp | Div | Div-Id | Div-Exp | Sp. | Coef-Dec-Id | Coef-Dec-Exp | eval time |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        td = ref["table1"].get("training_data", {})
        print(f"| training data | – | – | {_f(td.get('global'))} | {_f(td.get('shared_identity'))} | "
              f"{_f(td.get('shared_expression'))} | – | – | – | |")
        for lab, d, name in rows:
            row = d["table1"]["rows"][name]
            dec = [_f(row.get(k), 1) + ("" if row.get(k + "_unshared") is None else f" ({_f(row[k + '_unshared'], 1)})")
                   for k in ("dec_id", "dec_exp")]
            print(f"| {lab} | {dec[0]} | {dec[1]} | {_f(row.get('div'))} | "
                  f"{_f(row.get('div_id'))} | {_f(row.get('div_exp'))} | {_f(row.get('sp'))} | "
                  f"{_f(row.get('coef_dec_id'), 3)} | {_f(row.get('coef_dec_exp'), 3)} | "
                  f"{d['timings']['total'] / 60:.1f} min |")
    if "table2" in ref:
        lams = [str(float(x)) for x in o["lambdas"]]
        print("\n| model | " + " | ".join(f"λ = {x}" for x in o["lambdas"]) + " |")
        print("|---|" + "---|" * len(lams))
        for lab, d, name in rows:
            res = d["table2"]["models"][name]
            print(f"| {lab} | " + " | ".join(
                f"{_f(res[x]['surface_rmse_mm'])} ({_f(res[x]['vertex_rmse_mm'])})" for x in lams) + " |")
    if "retargeting" in ref:
        print("\n| model | retarget | no transfer | direct fit |")
        print("|---|---|---|---|")
        for lab, d, name in rows:
            res = d["retargeting"]["models"][name]
            print(f"| {lab} | " + " | ".join(
                f"{_f(res.get(k + '_surface_rmse_mm'))} ({_f(res.get(k + '_vertex_rmse_mm'))})"
                for k in ("retarget", "no_transfer", "direct_fit")) + " |")

if __name__ == "__main__":
    main()
