"""Which latent block moves what the ground truth calls expression (docs/benchmarks.md).

For each model and each block set (identity, noise, expression, identity + noise, all), draws
``n`` anchor codes and ``m`` companions per anchor that redraw only those blocks, and reports
the mean spread around each anchor's companions of (a) the faces' ground-truth expression
coefficients, as read by the dataset's :class:`fitface.evaluation.decoupling.CoefficientRegressor`
(standardised units), and (b) their vertices (mean vertex distance, mm). A decoupled model
moves the expression coefficients only through the expression block.

Usage::

    .venv/bin/python benchmarks/block_leak.py DATA_DIR MODEL [MODEL ...] [--n 20] [--m 20]

``DATA_DIR``: a dataset with generating coefficients (``fitface data ict``); ``MODEL``: a model
file or built-in name (e.g. ``ict-linear ict``). Bad input: one line, exit code 2.
"""

from __future__ import annotations

import argparse
import sys

BLOCK_SETS = (("identity",), ("noise",), ("expression",), ("identity", "noise"), ("identity", "noise", "expression"))


def spreads(model, regressor, blocks, n: int, m: int, seed: int) -> tuple[float, float]:
    """(expression-coefficient spread, vertex spread in mm) when ``blocks`` are redrawn."""
    import numpy as np
    import torch

    from fitface.units import scale_between

    layout = model.layout
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 1, layout.dim, generator=g).expand(n, m, layout.dim).clone()  # (n, m, D)
    for b in blocks:
        if b in layout.names:
            sl = layout.slice(b)
            z[:, :, sl] = torch.randn(n, m, sl.stop - sl.start, generator=g)
    with torch.no_grad():
        v = model.decode(z.reshape(n * m, -1)).double().numpy() * scale_between(model.unit, regressor.unit)
    c = regressor.predict(v).reshape(n, m, -1)  # (n, m, c)
    vv = v.reshape(n, m, -1, 3) * scale_between(regressor.unit, "mm")
    coef = np.linalg.norm(c - c.mean(1, keepdims=True), axis=-1).mean()
    vert = np.linalg.norm(vv - vv.mean(1, keepdims=True), axis=-1).mean()
    return float(coef), float(vert)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data")
    ap.add_argument("models", nargs="+")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--m", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import torch

    from fitface.data.format import load_dataset
    from fitface.errors import InputError, one_line
    from fitface.evaluation.decoupling import CoefficientRegressor
    from fitface.models.model_file import load_model

    torch.set_num_threads(1)
    try:
        ds = load_dataset(args.data)
        regressor = CoefficientRegressor(ds, "expression")
        models = {name: load_model(name).float() for name in args.models}
    except (InputError, ValueError) as exc:
        print(one_line(exc), file=sys.stderr)
        raise SystemExit(2)
    print("| model | " + " | ".join("+".join(b) for b in BLOCK_SETS) + " |")
    print("|---" * (len(BLOCK_SETS) + 1) + "|")
    for name, model in models.items():
        cells = [spreads(model, regressor, b, args.n, args.m, args.seed) for b in BLOCK_SETS]
        print(f"| {name} | " + " | ".join(f"{c:.2f} ({v:.2f} mm)" for c, v in cells) + " |")


if __name__ == "__main__":
    main()
