"""What the embedder-judged Dec-Exp score rewards, measured on an exactly decoupled model.

An additive linear 3DMM (``fitface baseline``) is decoupled by construction: faces that share
the expression code carry exactly the same expression displacement, whatever their identity.
Its Dec-Exp score (§5.3, :func:`fitface.evaluation.decoupling.decoupling_score`) is therefore what
the dataset's expression embedder grants to perfect decoupling on this data, not 100%: the
embedder is not identity-invariant. This script scales the identity block's columns by each
``s`` of ``--identity-scales`` (s = 1: the model as it is; s = 0: every face has the mean
identity) and reports Dec-Exp and its no-shared-code reference for each, at the paper's
counts. A score that rises as identity variation shrinks, with decoupling unchanged, says the
metric rewards a narrower identity distribution as much as decoupling.

Usage::

    .venv/bin/python benchmarks/dec_exp_ceiling.py DATA_DIR [--model ict-linear]
        [--identity-scales 1 0.75 0.5 0.25 0] [--n 100] [--m 100] [--threads 1]
        [--write DIR [--no-score]]   # the scaled models as files, for `fitface evaluate`

``DATA_DIR``: a dataset with a trained expression embedder (``fitface evaluate
--train-embedders``). Bad input: one line, exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data")
    ap.add_argument("--model", default="ict-linear", help="a linear model file or built-in name")
    ap.add_argument("--identity-scales", type=float, nargs="+", default=[1.0, 0.75, 0.5, 0.25, 0.0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--m", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--write", metavar="DIR", help="also write each scaled model to DIR/identity_x{s}.safetensors "
                    "(for `fitface evaluate`) ")
    ap.add_argument("--no-score", action="store_true", help="only write the scaled models (with --write)")
    args = ap.parse_args()
    import numpy as np
    import torch

    from fitface.errors import InputError, one_line
    from fitface.evaluation.decoupling import decoupling_score
    from fitface.evaluation.embedder import load_embedder
    from fitface.models.model_file import load_model, save_model

    torch.set_num_threads(args.threads)
    try:
        model = load_model(args.model).float()
        if model.generator_kind != "linear":
            raise ValueError(f"{args.model}: a linear model is needed (generator kind {model.generator_kind!r})")
        embedder = load_embedder(args.data, "expression")
    except (InputError, ValueError, OSError) as exc:
        print(one_line(exc), file=sys.stderr)
        raise SystemExit(2)
    basis = model.generator.basis
    original = basis.detach().clone()
    sl = model.layout.slice("identity")
    print("| identity scale | Dec-Exp % | no shared code % | median shared distance | seconds |")
    print("|---:|---:|---:|---:|---:|")
    for s in args.identity_scales:
        with torch.no_grad():
            basis.copy_(original)
            basis[:, sl] *= s
        if args.write:
            out = Path(args.write) / f"identity_x{s:g}.safetensors"
            out.parent.mkdir(parents=True, exist_ok=True)
            save_model(out, model, notes=f"{args.model} with its identity block scaled by {s:g} "
                       "(benchmarks/dec_exp_ceiling.py)")
            print(f"wrote {out}", file=sys.stderr)
        if args.no_score:
            continue
        t0 = time.perf_counter()
        r = decoupling_score(model, args.data, "expression", n=args.n, m=args.m, seed=args.seed, embedder=embedder)
        print(f"| {s:g} | {r.score:.1f} | {r.unshared_score:.1f} | "
              f"{float(np.median(r.shared_distances)):.3f} | {time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
