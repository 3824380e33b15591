"""Plot a training run's curves (docs/img/train_*_curves.png): losses and progress metrics.

Usage:
    python scripts/plot_training.py RUN_DIR -o docs/img/train_cpu_curves.png [--title TEXT]

Reads RUN_DIR/losses.csv and RUN_DIR/metrics.csv (written by ``fitface train``) and draws four
panels: the critic's gap and gradient penalty; G's terms; diversity (global and with a shared
code) against specificity, in the model unit (mm); the near-training share of generated faces
against the held-out real faces' value (see
``fitface.evaluation.diversity_specificity.near_training_share``).
matplotlib is needed (mediapipe installs it); the package itself does not use it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def columns(path: Path) -> dict[str, list[float]]:
    """Numeric columns of a training CSV log (empty cells -> NaN; text columns left out)."""
    from fitface.train.logs import read_csv

    rows = read_csv(path)
    cols: dict[str, list[float]] = {}
    for key in rows[0] if rows else []:
        try:  # empty cells (a term a recipe does not have) are NaN
            cols[key] = [float(r[key]) if r[key] not in ("", None) else float("nan") for r in rows]
        except ValueError:
            continue  # a text column (phase)
    return cols


def fail(message: str) -> None:
    """Bad input: one line on stderr, exit code 2 (as the fitface CLI)."""
    print(message, file=sys.stderr)
    raise SystemExit(2)


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="run folder of `fitface train`")
    ap.add_argument("-o", "--out", type=Path, required=True, help="PNG to write")
    ap.add_argument("--title", default=None, help="figure title (default: the run folder's name)")
    args = ap.parse_args()
    for name in ("losses.csv", "metrics.csv"):
        if not (args.run / name).is_file():
            fail(f"{args.run / name}: no such file (is {args.run} a fitface training run?)")
    loss, met = columns(args.run / "losses.csv"), columns(args.run / "metrics.csv")
    if not loss.get("step") or not met.get("step"):
        fail(f"{args.run}: losses.csv or metrics.csv has no rows yet")

    fig, ax = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
    s = loss["step"]
    curves = {(0, 0): [("d_gap", 1, "critic gap E[D(real)] - E[D(fake)]"), ("d_gp", 1, "gradient penalty")],
              (0, 1): [("g_gan", 1, "L_GAN (G)"), ("g_cls", 1, "L_CL (G)"), ("g_feat", 1, "L_FEAT (G)"),
                       ("g_reg", 100, "100 x ||L v||^2")]}
    for (i, j), items in curves.items():
        for key, k, label in items:
            if key in loss:
                ax[i, j].plot(s, [k * v for v in loss[key]], label=label)
    ax[0, 0].set_title("critic")
    ax[0, 1].set_title("generator terms")
    m = met["step"]
    for key in sorted(k for k in met if k.startswith("div_")):
        ax[1, 0].plot(m, met[key], marker="o", label=key.replace("div_", "diversity ").replace("_", " "))
    if "specificity" in met:
        ax[1, 0].plot(m, met["specificity"], marker="s", color="k", label="specificity")
    ax[1, 0].set_title("diversity and specificity (mm)")
    if "near_share" in met:
        ax[1, 1].plot(m, [100 * v for v in met["near_share"]], marker="o", label="generated faces")
    if "heldout_near_share" in met:
        ax[1, 1].plot(m, [100 * v for v in met["heldout_near_share"]], ls="--", color="gray",
                      label="held-out real faces")
    ax[1, 1].set_ylim(-5, 105)
    ax[1, 1].set_title("near-training share (%)")
    for a in ax.ravel():
        a.set_xlabel("generator step")
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.suptitle(args.title or args.run.name)
    from fitface.io.atomic import atomic_path

    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
