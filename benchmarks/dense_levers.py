"""Issue #26: the numpy lever experiments and diagnostics behind docs/benchmarks.md ("Dense
retargeting, noisy Table 2 and the identity-capacity lever"), on the dense pairs of
``fitface evaluate`` (6 fresh ICT identities, 180 pairs, vertex RMSE in mm).

Run from a folder that holds data/ict and the 3DMMs of benchmarks/dense_ict.sh:

  python benchmarks/dense_levers.py diagnose ict-linear          # where the 3DMM's retarget error goes
  python benchmarks/dense_levers.py bilinear ict-linear --identity-dims 65 --faces 6000 --iters 3
  python benchmarks/dense_levers.py bilinear runs/ict_linear_100_15/model.safetensors --identity-dims 100
  python benchmarks/dense_levers.py orthogonalise ict-linear runs/ict_linear_100_15/model.safetensors
  python benchmarks/dense_levers.py fit-speed ict-linear ict       # whitened vs plain L-BFGS (3 identities)

Models are linear (``LinearDecoder``) for diagnose / bilinear / orthogonalise.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fitface.api.inputs import load_fit_model
from fitface.evaluation.dense_transfer import (
    DenseConfig,
    build_dense_truth,
    dense_fit,
    dense_model_errors,
    dense_pairs,
    vertex_rmse,
)

ICT = "../shared/data/ict_face_light.npz"
V = 9409


def _round(d: dict) -> dict:
    return {k: round(v, 3) for k, v in d.items()}


def diagnose(args) -> None:
    """Closed-form ridge fits of a linear model: the joint fit's retarget, the same with A's
    identity code fixed to its neutral fit, B's own expression fit, and the identity-code change
    a pose causes."""
    truth = build_dense_truth(args.ict, V, DenseConfig(samples_per_identity=0))
    dec = load_fit_model(args.model)
    B = dec.basis.astype(np.float64)  # (3V, D)
    off = dec.template.reshape(-1) + dec.offset
    D = B.shape[1]
    ex = list(range(*dec.layout.slice("expression").indices(D)))
    idc = list(range(*dec.layout.slice("identity").indices(D)))

    def solve(t, cols, fixed=None):
        z = np.zeros((len(t), D)) if fixed is None else fixed.copy()
        other = [c for c in range(D) if c not in cols]
        r = t.reshape(len(t), -1) - off - z[:, other] @ B[:, other].T
        Bc = B[:, cols]
        z[:, cols] = np.linalg.solve(Bc.T @ Bc / V + 1e-4 * np.eye(len(cols)), Bc.T @ r.T / V).T
        return z

    I, E = truth.posed.shape[:2]
    posed = truth.posed.reshape(-1, V, 3)
    zn = solve(truth.neutral, list(range(D)))
    zp = solve(posed, list(range(D))).reshape(I, E, D)
    zo = solve(posed, ex, fixed=np.repeat(zn[:, None], E, 1).reshape(-1, D)).reshape(I, E, D)
    a, b, e = dense_pairs(I).T
    gt = truth.posed[b, e]

    def dec_v(z):
        return (z @ B.T + off).reshape(len(z), V, 3)

    def retarget(z_a):
        z = zn[b].copy()
        z[:, ex] = z_a[a, e][:, ex]
        return float(vertex_rmse(dec_v(z), gt).mean())

    dz = zp[a, e][:, idc] - zn[a][:, idc]
    print(dec.layout.describe(), {
        "retarget_joint_fit": round(retarget(zp), 3),
        "retarget_identity_fixed_to_neutral_fit": round(retarget(zo), 3),
        "B_expression_fit_identity_fixed": round(float(vertex_rmse(dec_v(zo[b, e]), gt).mean()), 3),
        "pasted_fitted_displacement": round(float(vertex_rmse(dec_v(zn[b]) + dec_v(zp[a, e]) - dec_v(zn[a]),
                                                               gt).mean()), 3),
        "identity_code_change_when_posed_mm": round(float(np.sqrt(np.mean(np.sum(
            ((dz @ B[:, idc].T).reshape(-1, V, 3)) ** 2, -1)))), 3)})


class BilinearDecoder:
    """``G(z) = B z + mu + W M (z_id (x) z_exp)``: a linear model plus a (rank-R) bilinear term."""

    def __init__(self, lin, C: np.ndarray, ni: int, ne: int, rank: int | None = None):
        self.lin, self.ni, self.ne = lin, ni, ne
        self.layout, self.unit, self.faces = lin.layout, lin.unit, lin.faces
        self.num_vertices, self.latent_dim = lin.num_vertices, lin.latent_dim
        self.B = lin.basis.astype(np.float64)
        self.mu = lin.template.reshape(-1) + lin.offset
        if rank is None:
            self.W, self.M = C, None
        else:
            U, S, Vt = np.linalg.svd(C, full_matrices=False)
            self.W, self.M = U[:, :rank] * S[:rank], Vt[:rank]  # (3V, R), (R, ni ne)

    def _phi(self, z):
        a, e = z[:, :self.ni], z[:, self.ni:self.ni + self.ne]
        phi = (a[:, :, None] * e[:, None, :]).reshape(len(z), -1)
        return phi if self.M is None else phi @ self.M.T

    def vertices(self, z):
        z = np.atleast_2d(z)
        return (z @ self.B.T + self.mu + self._phi(z) @ self.W.T).reshape(len(z), -1, 3)

    def vertices_vjp(self, z, g):
        z = np.atleast_2d(z)
        g = g.reshape(len(z), -1)
        gz = g @ self.B
        gphi = g @ self.W
        if self.M is not None:
            gphi = gphi @ self.M
        gphi = gphi.reshape(len(z), self.ni, self.ne)
        gz[:, :self.ni] += np.einsum("bij,bj->bi", gphi, z[:, self.ni:self.ni + self.ne])
        gz[:, self.ni:self.ni + self.ne] += np.einsum("bij,bi->bj", gphi, z[:, :self.ni])
        return gz


def bilinear(args) -> None:
    """Least-squares bilinear term on training faces: identity codes from each identity's
    neutral mean, expression codes re-solved per identity, alternating with the term."""
    from fitface.data.format import load_dataset

    lin = load_fit_model(args.model)
    ni = args.identity_dims
    ne = lin.layout.slice("expression").stop - lin.layout.slice("expression").start
    B = lin.basis.astype(np.float64)
    mu = lin.template.reshape(-1) + lin.offset
    Bi, Be = B[:, :ni], B[:, ni:ni + ne]
    ds = load_dataset(args.data)
    tr = ds.indices("train")
    neu = tr[ds.label("expression")[tr] == 0]
    nlab = ds.label("identity")[neu]
    uid = np.unique(nlab)
    X = ds.read(neu).reshape(len(neu), -1).astype(np.float64)
    N = np.stack([X[nlab == u].mean(0) for u in uid])  # (I, 3V) each identity's mean neutral
    A = (N - mu) @ np.linalg.pinv(Bi).T  # (I, ni)
    row = {u: k for k, u in enumerate(uid)}
    keep = tr[np.isin(ds.label("identity")[tr], uid)]
    pick = np.sort(np.random.default_rng(0).choice(keep, args.faces, replace=False))
    r_of = np.array([row[u] for u in ds.label("identity")[pick]])
    Dd = ds.read(pick).reshape(len(pick), -1).astype(np.float64) - N[r_of]  # (n, 3V) displacements
    E = Dd @ np.linalg.pinv(Be).T
    a = A[r_of]
    C = np.zeros((B.shape[0], ni * ne))
    t0 = time.perf_counter()
    for it in range(args.iters):
        phi = (a[:, :, None] * E[:, None, :]).reshape(len(a), -1)
        C = np.linalg.solve(phi.T @ phi + 1e-3 * np.eye(phi.shape[1]), phi.T @ (Dd - E @ Be.T)).T  # (3V, ni ne)
        C3 = C.reshape(-1, ni, ne)
        for k in np.unique(r_of):
            s = r_of == k
            E[s] = np.linalg.lstsq(Be + np.einsum("rij,i->rj", C3, A[k]), Dd[s].T, rcond=None)[0].T
        phi = (a[:, :, None] * E[:, None, :]).reshape(len(a), -1)
        res = Dd - E @ Be.T - phi @ C.T
        print(f"iter {it}: training residual {np.sqrt((res ** 2).reshape(len(a), -1, 3).sum(-1).mean()):.3f} mm "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    cfg = DenseConfig()
    truth = build_dense_truth(args.ict, V, cfg)
    for rank in [None] + list(args.ranks):
        err = dense_model_errors(BilinearDecoder(lin, C, ni, ne, rank), truth, cfg)
        print("rank", rank or "full", _round(err.summary()), flush=True)


def orthogonalise(args) -> None:
    """The 65-dim model's expression modes with the identity modes it lacks (from the 100-dim
    model, orthogonal to its own identity span) projected out."""
    from fitface.fitting.decoder import LinearDecoder

    d65, d100 = load_fit_model(args.model), load_fit_model(args.model100)
    lay = d65.layout
    ex, idb = lay.slice("expression"), lay.slice("identity")
    B = d65.basis.astype(np.float64)
    q65, _ = np.linalg.qr(B[:, idb])
    tail = d100.basis.astype(np.float64)[:, idb.stop:100]
    qt, _ = np.linalg.qr(tail - q65 @ (q65.T @ tail))
    cfg = DenseConfig()
    truth = build_dense_truth(args.ict, V, cfg)
    for k in args.counts:
        Bk = B.copy()
        Bk[:, ex] = B[:, ex] - qt[:, :k] @ (qt[:, :k].T @ B[:, ex])
        dec = LinearDecoder(d65.template, Bk, d65.faces, layout=lay, offset=d65.offset)
        print("modes projected out", k, _round(dense_model_errors(dec, truth, cfg).summary()), flush=True)


def fit_speed(args) -> None:
    """Wall time and retarget of the proxy's dense fits (3 identities), whitened codes against
    plain codes, one run, same targets."""
    from fitface.evaluation.proxy import fit_decoder
    from fitface.models.model_file import load_model
    from fitface.models.registry import resolve_model_path

    truth = build_dense_truth(args.ict, V, DenseConfig(identities=3, samples_per_identity=0))
    targets = np.concatenate([truth.neutral, truth.posed.reshape(-1, V, 3)])
    for m in args.models:
        dec = fit_decoder(load_model(resolve_model_path(m)))
        for pre in (True, False):
            t0 = time.perf_counter()
            f = dense_fit(dec, targets, precondition=pre)
            print(m, "whitened" if pre else "plain", f"{time.perf_counter() - t0:.1f} s", f"{f.iterations} iterations",
                  f"mean fit {f.rmse.mean():.4f} mm", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ict", default=ICT)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("diagnose")
    s.add_argument("model")
    s = sub.add_parser("bilinear")
    s.add_argument("model")
    s.add_argument("--identity-dims", type=int, default=65)
    s.add_argument("--faces", type=int, default=6000)
    s.add_argument("--iters", type=int, default=3)
    s.add_argument("--ranks", type=int, nargs="*", default=[128, 64, 32])
    s.add_argument("--data", default="data/ict")
    s = sub.add_parser("orthogonalise")
    s.add_argument("model")
    s.add_argument("model100")
    s.add_argument("--counts", type=int, nargs="*", default=[0, 10, 20, 35])
    s = sub.add_parser("fit-speed")
    s.add_argument("models", nargs="+")
    args = p.parse_args()
    {"diagnose": diagnose, "bilinear": bilinear, "orthogonalise": orthogonalise, "fit-speed": fit_speed}[args.cmd](args)


if __name__ == "__main__":
    main()
