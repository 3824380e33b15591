"""Plot the proxy evaluation curves of one or more training runs (``proxy_*`` columns of metrics.csv).

Usage:
    python scripts/plot_proxy.py RUN [RUN ...] -o OUT.png [--labels a,b] [--reference REF.json] [--title TEXT]

Each RUN is a training run's folder or a metrics CSV file itself (e.g. the committed
``docs/data/*_metrics.csv``, so the docs' figures can be redrawn from the repository). Reads
RUN_DIR/metrics.csv (written by ``fitface train`` with ``proxy_every`` > 0; see
``fitface.evaluation.proxy`` for the columns and units) and draws four panels against the
generator step: the coefficient decoupling ratios of identity and expression (dimensionless,
0 = decoupled); Table 2 surface RMSE at each lambda; retargeting against B's own fit (no
transfer); diversity (global, shared identity, shared expression) and specificity. Lengths in
mm. Rows where the proxy did not run (empty or NaN cells) are skipped column by column.

Runs differ by colour (legend labels: ``--labels``, default the folder names); the quantities of
a panel by marker and line style. The training data's values of the run (``proxy_ref_*``) are
dashed lines: diversity in panel 4, ``ref_no_transfer`` (the ground-truth B scored against GT,
what a perfect fit that transfers nothing gets) in panel 3.

``--reference REF.json``: another model's values as dotted lines in the matching panels::

    {"label": "linear 3DMM", "values": {"coef_ratio_expression": 0.012, "t2_surface_0.01": 2.01}}

(keys as in metrics.csv without the ``proxy_`` prefix: coef_ratio_identity,
coef_ratio_expression, t2_surface_<lambda>, retarget, retarget_no_transfer,
retarget_direct_fit, div, div_identity, div_expression, specificity).

matplotlib is needed (mediapipe installs it); the package itself does not use it.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:  # scripts/ is not a package
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from plot_training import columns, fail  # noqa: E402

#: (quantity key without ``proxy_``, legend text, marker, line style) per panel; the Table 2
#: panel's keys are found in the file (one per lambda of the run's ProxyConfig).
PANELS = {
    "ratio": [("coef_ratio_identity", "identity", "o", "-"),
              ("coef_ratio_expression", "expression", "s", "-.")],
    "t2": [],
    "retarget": [("retarget", "retargeted", "o", "-"),
                 ("retarget_no_transfer", "no transfer (B's own fit)", "s", "-.")],
    "div": [("div", "diversity global", "o", "-"),
            ("div_identity", "diversity shared identity", "^", "-"),
            ("div_expression", "diversity shared expression", "v", "-"),
            ("specificity", "specificity", "s", "-.")],
}
TITLES = {"ratio": "coefficient decoupling ratio (0 = decoupled)",
          "t2": "Table 2: surface RMSE of the landmark fit (mm)",
          "retarget": "retargeting surface RMSE (mm)",
          "div": "diversity and specificity (mm)"}
#: the run's set-up values (``proxy_ref_*``): key -> (panel, line text, legend text)
REFS = {"ref_div": ("div", "training: global", "training data"),
        "ref_div_identity": ("div", "training: shared identity", "training data"),
        "ref_div_expression": ("div", "training: shared expression", "training data"),
        "ref_no_transfer": ("retarget", "GT of B, no transfer", "GT of B, no transfer")}
#: --reference keys beyond the panels' quantities
EXTRA_REFERENCE_KEYS = {"retarget_direct_fit": ("retarget", "direct fit")}
T2_PREFIX = "t2_surface_"
T2_STYLES = [("o", "-"), ("s", "-."), ("^", "-"), ("v", "-.")]


def t2_lambda(key: str) -> float | None:
    """The lambda of a ``t2_surface_<lambda>`` key (None for any other key)."""
    if not key.startswith(T2_PREFIX):
        return None
    try:
        lam = float(key[len(T2_PREFIX):])
    except ValueError:
        return None
    return lam if math.isfinite(lam) else None


def reference_panel(key: str) -> tuple[str, str] | None:
    """(panel, short text) of a ``--reference`` key; None for an unknown key."""
    for panel, items in PANELS.items():
        for k, text, _, _ in items:
            if k == key:
                return panel, text.replace("diversity ", "")
    if key in EXTRA_REFERENCE_KEYS:
        return EXTRA_REFERENCE_KEYS[key]
    lam = t2_lambda(key)
    return ("t2", f"lambda {lam:g}") if lam is not None else None


def finite_points(steps: list[float], values: list[float]) -> tuple[list[float], list[float]]:
    """The (step, value) pairs where both are finite (rows where the proxy did not run dropped)."""
    pts = [(s, v) for s, v in zip(steps, values) if math.isfinite(s) and math.isfinite(v)]
    return [s for s, _ in pts], [v for _, v in pts]


def metrics_path(run: Path) -> Path:
    """The metrics CSV of RUN: RUN itself where it is a file, else RUN/metrics.csv; fails on bad input."""
    if run.is_file():
        return run
    if not run.is_dir():
        fail(f"{run}: no such folder or file (expected a fitface training run or its metrics.csv)")
    path = run / "metrics.csv"
    if not path.is_file():
        fail(f"{path}: no such file (is {run} a fitface training run?)")
    return path


def read_run(run: Path) -> dict[str, tuple[list[float], list[float]]]:
    """``proxy_*`` key (prefix dropped) -> finite (steps, values) of one run (a folder or its
    metrics CSV); fails on bad input."""
    path = metrics_path(run)
    try:
        met = columns(path)
    except TypeError:  # csv.DictReader puts the extra cells of a row under the key None
        fail(f"{path}: not a readable CSV table (a row has more cells than the header)")
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as e:
        from fitface.errors import one_line

        fail(f"{path}: not a readable CSV table ({one_line(e)})")
    if not met:
        fail(f"{path}: no rows yet")
    if "step" not in met:
        fail(f"{path}: no numeric step column")
    proxy = {k[len("proxy_"):]: v for k, v in met.items() if k.startswith("proxy_") and k != "proxy_seconds"}
    if not proxy:
        fail(f"{path}: no proxy_* columns (was the run trained with proxy_every > 0?)")
    out = {k: finite_points(met["step"], v) for k, v in proxy.items()}
    out = {k: pts for k, pts in out.items() if pts[0]}
    if not out:
        fail(f"{path}: the proxy_* columns have no values yet (the proxy evaluation has not run)")
    return out


def read_reference(path: Path) -> tuple[str, dict[str, float]]:
    """(label, key -> value) of a ``--reference`` JSON file; fails on bad input."""
    form = '{"label": "...", "values": {"coef_ratio_expression": 0.012, ...}}'
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        fail(f"{path}: no such file")
    except UnicodeDecodeError:
        fail(f"{path}: not UTF-8 text")
    except json.JSONDecodeError as e:
        fail(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})")
    except OSError as e:
        fail(f"{path}: cannot read ({e.strerror or e})")
    if not isinstance(doc, dict):
        fail(f"{path}: expected a JSON object {form}, got {type(doc).__name__}")
    unknown = sorted(set(doc) - {"label", "values"})
    if unknown:
        fail(f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; expected {form}")
    label = doc.get("label", "reference")
    if not isinstance(label, str) or not label.strip():
        fail(f"{path}: label: expected a non-empty string, got {label!r}")
    values = doc.get("values")
    if not isinstance(values, dict) or not values:
        fail(f"{path}: values: expected a non-empty JSON object of numbers, e.g. {form}")
    for key, v in values.items():
        if reference_panel(key) is None:
            hint = " (write keys without the proxy_ prefix)" if key.startswith("proxy_") else ""
            fail(f"{path}: values: unknown key {key!r}{hint}; known: coef_ratio_identity, coef_ratio_expression, "
                 f"t2_surface_<lambda>, retarget, retarget_no_transfer, retarget_direct_fit, div, div_identity, "
                 f"div_expression, specificity")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            fail(f"{path}: values: {key}: expected a finite number, got {v!r}")
    return label, {k: float(v) for k, v in values.items()}


def run_labels(runs: list[Path], labels: str | None) -> list[str]:
    """The legend label of each run: ``--labels`` or the folder names (a CSV file's name without
    ``.csv`` and a trailing ``_metrics``; with the parent's name when two runs share a name)."""
    if labels is not None:
        out = labels.split(",")
        if len(out) != len(runs):
            fail(f"--labels: {len(out)} label(s) for {len(runs)} run folder(s)")
        return out
    names = [r.resolve().name for r in runs]
    names = [n.removesuffix(".csv").removesuffix("_metrics") if r.is_file() else n for n, r in zip(names, runs)]
    if len(set(names)) == len(names):
        return names
    return ["/".join(r.resolve().parts[-2:]) for r in runs]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+", metavar="RUN",
                    help="run folder(s) of `fitface train`, or their metrics CSV files")
    ap.add_argument("-o", "--out", type=Path, required=True, help="PNG to write")
    ap.add_argument("--labels", default=None, help="comma-separated legend labels, one per run (default: folder names)")
    ap.add_argument("--reference", type=Path, default=None,
                    help='JSON {"label": ..., "values": {key: value}} drawn as dotted lines')
    ap.add_argument("--title", default=None, help="figure title (default: the run labels)")
    args = ap.parse_args(argv)
    if args.out.is_dir():
        fail(f"{args.out}: is a folder (expected the PNG file to write)")
    data = [read_run(r) for r in args.runs]
    labels = run_labels(args.runs, args.labels)
    ref_label, ref_values = read_reference(args.reference) if args.reference is not None else (None, {})

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    lambdas = sorted({lam for d in data for k in d if (lam := t2_lambda(k)) is not None}
                     | {lam for k in ref_values if (lam := t2_lambda(k)) is not None})
    panels = dict(PANELS)
    panels["t2"] = [(f"{T2_PREFIX}{lam:g}", f"lambda {lam:g}", *T2_STYLES[i % len(T2_STYLES)])
                    for i, lam in enumerate(lambdas)]
    fig, axs = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
    ax = dict(zip(("ratio", "t2", "retarget", "div"), axs.ravel()))
    handles: dict[str, list] = {p: [] for p in panels}
    for name, items in panels.items():
        a = ax[name]
        for key, text, marker, ls in items:
            drawn = False
            for i, d in enumerate(data):
                if key in d:
                    a.plot(*d[key], color=f"C{i % 10}", marker=marker, ls=ls, ms=5)
                    drawn = True
            if drawn:
                handles[name].append(Line2D([], [], color="k", marker=marker, ls=ls, ms=5, label=text))

    def hline(a, y: float, text: str, x: float, **style) -> None:
        """A horizontal line across the panel, its text above it at the left (x 0) or right (x 1)."""
        a.axhline(y, lw=1, **style)
        a.annotate(text, (0.01 + 0.98 * x, y), xycoords=("axes fraction", "data"), ha="right" if x else "left",
                   va="bottom", fontsize=7, color=style.get("color", "k"))

    def legend_once(name: str, label: str, **style) -> None:
        if not any(h.get_label() == label for h in handles[name]):
            handles[name].append(Line2D([], [], label=label, **style))

    for key, (name, text, legend) in REFS.items():  # the runs' set-up values: dashed, text at the right
        vals = [(i, d[key][1][-1]) for i, d in enumerate(data) if key in d]
        if not vals:
            continue
        if all(math.isclose(v, vals[0][1], rel_tol=1e-9) for _, v in vals):  # the same data set: one line
            vals = [(None, vals[0][1])]
        for i, v in vals:
            hline(ax[name], v, text, 1, ls="--", color="0.35" if i is None else f"C{i % 10}")
        legend_once(name, legend, color="0.35", ls="--")
    for key, v in ref_values.items():  # --reference: dotted, text at the left
        name, text = reference_panel(key)
        hline(ax[name], v, f"{ref_label}: {text}", 0, ls=":", color="k")
        legend_once(name, ref_label, color="k", ls=":")

    for name, a in ax.items():
        a.set_title(TITLES[name])
        a.set_xlabel("generator step")
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.grid(alpha=0.3)
        if handles[name]:
            a.legend(handles=handles[name], fontsize=8)
        else:
            a.text(0.5, 0.5, "not measured in these runs", transform=a.transAxes, ha="center", va="center",
                   color="0.4")
    steps = [s for d in data for xs, _ in d.values() for s in xs]
    if min(steps) == max(steps):  # one proxy row in all: matplotlib would span +-0.05 steps
        for a in ax.values():
            a.set_xlim(steps[0] - 1, steps[0] + 1)
    ratio_lo = [v for d in data for k in ("coef_ratio_identity", "coef_ratio_expression") if k in d for v in d[k][1]]
    if ratio_lo and min(ratio_lo) >= 0:
        ax["ratio"].set_ylim(bottom=0)
    if len(data) > 1:
        fig.legend(handles=[Line2D([], [], color=f"C{i % 10}", lw=2, label=lab) for i, lab in enumerate(labels)],
                   loc="outside lower center", ncols=min(len(labels), 6), fontsize=9)
    fig.suptitle(args.title or (labels[0] if len(labels) == 1 else "proxy evaluation: " + ", ".join(labels)))
    from fitface.io.atomic import atomic_path

    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
