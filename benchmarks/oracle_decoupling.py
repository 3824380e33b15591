"""Dec-Id / Dec-Exp of the ICT set's own generator (the "oracle"): what §5.3's embedder-judged
decoupling gives when the faces that share a factor share it *exactly*.

Usage::

    .venv/bin/python benchmarks/oracle_decoupling.py DATA --ict-source ../shared/data/ict_face_light.npz \
        [--pool 100] [--n 100] [--m 100] [--seed 0]

DATA is a dataset built by ``fitface data ict`` with its embedders trained (``fitface evaluate
... --train-embedders``). The generator is the builder's (fitface.data.ict): identity weights
w ~ N(0, I) and, for every identity, the source blendshapes moved onto its neutral by deformation
transfer; a face is ``neutral_w + c @ D_w``. ``--pool`` identities are drawn once; expression
coefficients ``c`` are rows of the dataset's own generating coefficients (any split).

For factor f, n anchors (identity, expression) and m companions each that keep the anchor's f
and redraw the other factor (an identity from the pool other than the anchor's, or another
row's c), judged by the dataset's embedder of f; in parentheses the rate on pairs sharing
nothing (anchor i against the companions of anchor i + 1), as ``fitface evaluate`` reports.
No model can score higher than the generator's own pairs by sharing its factors better; a model
can only score higher by making its factors *easier for the embedder to see*.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--ict-source", type=Path, required=True)
    ap.add_argument("--pool", type=int, default=100, help="identities drawn (deformation transfers)")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--m", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from fitface.data.ict import ExpressionTransfer, load_ict
    from fitface.evaluation.decoupling import pair_distances
    from fitface.evaluation.embedder import load_embedder

    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    src = load_ict(args.ict_source)
    et = ExpressionTransfer(src)
    meta = json.loads((args.data / "dataset.json").read_text())
    nv = int(meta["num_vertices"])
    weights = rng.standard_normal((args.pool, src.identity_modes.shape[0]))  # (P, M)
    neutrals = np.empty((args.pool, nv, 3), dtype=np.float32)  # (P, V, 3) mm
    deltas = np.empty((args.pool, src.expression_modes.shape[0], nv * 3), dtype=np.float32)  # (P, K, 3V) mm
    for p in range(args.pool):
        n_p = et.neutral_of(weights[p])
        neutrals[p] = n_p[:nv]
        deltas[p] = et.deltas(n_p)[:, :nv].reshape(len(deltas[p]), -1)
    print(f"{args.pool} identities transferred in {time.perf_counter() - t0:.0f} s")
    coef = np.load(args.data / "coefficients.npz")["expression"].astype(np.float32)  # (N, K)

    def faces_of(ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(B,) identity indices, (B,) coefficient rows -> (B, V, 3) float32 mm."""
        flat = np.einsum("bk,bkx->bx", coef[rows], deltas[ids])  # (B, 3V)
        return neutrals[ids] + flat.reshape(len(ids), nv, 3)

    n, m = args.n, args.m
    faces_idx = np.asarray(src.faces, dtype=np.int64)
    for factor in ("identity", "expression"):
        emb = load_embedder(args.data, factor)
        a_id = rng.integers(0, args.pool, n)  # (n,)
        a_row = rng.integers(0, len(coef), n)  # (n,)
        if factor == "identity":  # companions keep the identity, redraw the expression
            c_id = np.repeat(a_id, m)
            c_row = rng.integers(0, len(coef), n * m)
        else:  # companions keep c, redraw the identity (never the anchor's)
            c_id = (np.repeat(a_id, m) + rng.integers(1, args.pool, n * m)) % args.pool
            c_row = np.repeat(a_row, m)
        ids, rows = np.concatenate([a_id, c_id]), np.concatenate([a_row, c_row])
        out = []
        for k in range(0, len(ids), 200):
            out.append(emb.embed_meshes(faces_of(ids[k:k + 200], rows[k:k + 200]), faces_idx))
        shared, unshared = pair_distances(torch.cat(out), n, m)  # (n, m) each
        score = 100.0 * float((shared < emb.threshold).float().mean())
        chance = 100.0 * float((unshared < emb.threshold).float().mean())
        val = emb.meta.get("validation", {})
        print(f"oracle Dec-{'Id' if factor == 'identity' else 'Exp'}: {score:.1f} ({chance:.1f})  [embedder accuracy "
              f"{100 * float(val.get('accuracy', float('nan'))):.2f} %, n={n}, m={m}, pool {args.pool}, "
              f"{time.perf_counter() - t0:.0f} s]")


if __name__ == "__main__":
    main()
