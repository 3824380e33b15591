"""Refine a landmark fit against a dense (possibly partial, noisy) scan, robustly.

After :func:`fitface.fitting.landmark_fit.fit_landmarks`, the code ``z`` and the transform ``T``
(model -> capture) are refined by minimising, in the model frame and unit,

    E(z, T) = w_lm * sum_i ||v~_i(z) - T^-1(v_i)||^2                    (landmarks, eq. 13)
            + w_s * sigma^2 * mean_j rho(r_j(z, T))                      (scan -> model surface)
            + lam * ||z||^2

with ``r_j = n_k . (T^-1(s_j) - x_k)`` the point-to-plane distance from scan point ``s_j`` to the
model's nearest vertex ``x_k`` (normal ``n_k``), and the Geman-McClure penalty
``rho(r) = r^2 / (r^2 + sigma^2)``. ``sigma^2 * rho(r) ~ r^2`` for ``|r| << sigma`` and saturates
at ``sigma^2`` far away, so outliers (hair, shoulders, background) stop pulling.

Convention:
    * Direction scan -> model: every scan point looks for the model surface, never the reverse,
      so model regions the scan does not cover (a partial scan) are not dragged anywhere.
    * Correspondences (nearest vertex via ``scipy.spatial.cKDTree``, vertex normals) are rebuilt
      every ``rebuild_every`` steps and held fixed in between (ICP style); ``T`` is re-estimated
      at each rebuild by weighted Umeyama (IRLS weights of the robust term, foot points on the
      tangent planes, plus the landmarks).
    * ``sigma`` is in the MODEL unit (mm for the default model): default 3 mm, about the
      landmark noise of a good capture; points farther than ~3 sigma count as outliers.
    * ``surface_weight`` (default 200) weighs the mean robust term against the landmark sum:
      with small residuals the scan counts like 200 landmarks.
    * Scans are subsampled to at most ``max_points`` points (seeded) before fitting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from fitface.checks import check_shape

from .adam import Adam, cosine_lr
from .landmark_fit import BETAS
from .similarity import Similarity, umeyama

#: Default Geman-McClure scale, model unit (mm).
SIGMA = 3.0
#: Default cap on the number of scan points used.
MAX_POINTS = 5000
#: |r| below this many sigma counts as an inlier in the reported statistics.
INLIER_SIGMAS = 3.0


@dataclass
class SurfaceRefineConfig:
    """Options of :func:`refine_surface` (lengths in the model unit).

    Attributes:
        steps, lr, lr_final_fraction, betas: Adam on z (cosine schedule).
        lam: weight of ``||z||^2`` (as in eq. 13).
        sigma: Geman-McClure scale (model unit). robust: False = plain least squares
            ``r^2`` instead of ``sigma^2 rho(r)`` (for comparison; outliers then pull).
        surface_weight: weight of the mean surface term. landmark_weight: of the landmark sum.
        max_points: subsample the scan to at most this many points. seed: for the subsample.
        rebuild_every: correspondence / transform update period (steps).
        estimate_similarity, with_scale: refine T (with scale) at each rebuild.
    """

    steps: int = 100
    lr: float = 0.03
    lr_final_fraction: float = 0.1
    betas: tuple[float, float] = BETAS
    lam: float = 0.01
    sigma: float = SIGMA
    robust: bool = True
    surface_weight: float = 200.0
    landmark_weight: float = 1.0
    max_points: int = MAX_POINTS
    seed: int = 0
    rebuild_every: int = 5
    estimate_similarity: bool = True
    with_scale: bool = True


@dataclass
class SurfaceRefineResult:
    """Result of :func:`refine_surface`.

    Attributes:
        z: (D,) float64 refined code.
        transform: :class:`Similarity` (1): model -> capture.
        vertices: (V, 3) float64 fitted mesh in the capture frame and unit.
        distances: (P,) float64 |point-to-plane distance| of the used scan points, capture unit.
        inliers: (P,) bool, distance below ``INLIER_SIGMAS * sigma`` (model unit).
        scan_points: (P,) int indices of the used scan points in the input.
        inlier_rms: float, RMS distance of the inliers, capture unit.
        history: ``{"step": (S,), "energy": (S,)}``.
    """

    z: np.ndarray
    transform: Similarity
    vertices: np.ndarray
    distances: np.ndarray
    inliers: np.ndarray
    scan_points: np.ndarray
    inlier_rms: float
    history: dict = field(default_factory=dict)


def _scatter_add(num: int, idx: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(num, 3) sums of ``values (P, 3)`` grouped by ``idx (P,)``."""
    return np.stack([np.bincount(idx, values[:, c], minlength=num) for c in range(3)], axis=1)


def _normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) area-weighted unit vertex normals of (V, 3) vertices."""
    e1 = vertices[faces[:, 1]] - vertices[faces[:, 0]]
    e2 = vertices[faces[:, 2]] - vertices[faces[:, 0]]
    fn = np.cross(e1, e2)  # (F, 3)
    n = sum(_scatter_add(len(vertices), faces[:, k], fn) for k in range(3))
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return np.divide(n, norm, out=np.zeros_like(n), where=norm > 0)


def refine_surface(
    decoder,
    z: np.ndarray,
    transform: Similarity,
    scan_points: np.ndarray,
    cfg: SurfaceRefineConfig | None = None,
    landmark_targets: np.ndarray | None = None,
    landmark_set=None,
    progress: Callable[[int, int], None] | None = None,
) -> SurfaceRefineResult:
    """Refine one capture's code and transform against its scan (see the module docstring).

    Args:
        decoder: a :class:`fitface.fitting.decoder.Decoder`.
        z: (D,) or (1, D) code from the landmark fit.
        transform: :class:`Similarity` (1), model -> capture, from the landmark fit.
        scan_points: (P, 3) float scan points (vertices or surface samples), capture frame and
            unit; NaN rows are dropped.
        cfg: :class:`SurfaceRefineConfig`.
        landmark_targets: optional (L, 3) capture-frame landmarks (NaN = missing) kept as a term.
        landmark_set: the landmark set (name or LandmarkSet) of ``landmark_targets``.
        progress: ``progress(step_done, steps)``.

    Returns:
        :class:`SurfaceRefineResult`.
    """
    from scipy.spatial import cKDTree

    cfg = SurfaceRefineConfig() if cfg is None else cfg
    if not cfg.sigma > 0:
        raise ValueError(f"sigma: must be > 0, got {cfg.sigma}")
    dt = decoder.dtype
    zc = np.array(np.asarray(z, dtype=np.float64).reshape(1, -1), dtype=dt)
    check_shape("z", zc, (1, decoder.latent_dim))
    if len(transform) != 1:
        raise ValueError(f"transform: expected a batch of 1, got {len(transform)}")
    scan = np.asarray(scan_points, dtype=np.float64)
    check_shape("scan_points", scan, (None, 3))
    keep = np.flatnonzero(np.isfinite(scan).all(axis=1))
    if len(keep) < 3:
        raise ValueError(f"scan_points: {len(keep)} finite points; need at least 3")
    rng = np.random.default_rng(cfg.seed)
    if len(keep) > cfg.max_points:
        keep = np.sort(rng.choice(keep, size=cfg.max_points, replace=False))
    scan = scan[keep]  # (P, 3) capture frame
    npts = len(scan)

    lm_rows = lm_tg = lm_ok = None
    if landmark_targets is not None:
        if landmark_set is None:
            raise ValueError("landmark_set: required with landmark_targets")
        lm_rows = decoder.landmark_rows(landmark_set)
        lm_tg = np.asarray(landmark_targets, dtype=np.float64)
        check_shape("landmark_targets", lm_tg, (lm_rows.num_points, 3))
        lm_ok = np.isfinite(lm_tg).all(axis=1)
        lm_tg = np.where(lm_ok[:, None], lm_tg, 0.0)

    sig2 = cfg.sigma**2
    ws = cfg.surface_weight / npts  # per-point weight of sigma^2 rho
    t_inv = transform.inverse()  # capture -> model
    faces = decoder.faces
    nv = decoder.num_vertices
    opt = Adam(zc, lr=cfg.lr, betas=cfg.betas)
    hist_step, hist_e = [], []
    idx = normals = None

    def residuals(verts: np.ndarray, q: np.ndarray) -> np.ndarray:
        return np.einsum("pc,pc->p", normals[idx], q - verts[idx])  # (P,) signed, model unit

    def quad_weight(r: np.ndarray) -> np.ndarray:
        """IRLS weight: sigma^2 rho(r) ~ weight * r^2 locally (robust), 1 for least squares."""
        return sig2**2 / (r * r + sig2) ** 2 if cfg.robust else np.ones_like(r)

    q = t_inv.apply(scan[None])[0]  # (P, 3) model frame
    for step in range(cfg.steps + 1):
        verts = decoder.vertices(zc)[0].astype(np.float64)  # (V, 3) model frame
        if step % cfg.rebuild_every == 0 or step == cfg.steps:
            normals = _normals(verts, faces)
            if cfg.estimate_similarity and idx is not None:
                r = residuals(verts, q)
                foot = q - r[:, None] * normals[idx]  # (P, 3) on the tangent planes
                src, dst, w = [scan], [foot], [ws * quad_weight(r)]
                if lm_rows is not None:
                    src.append(lm_tg)
                    dst.append(decoder.points(zc, lm_rows)[0].astype(np.float64))
                    w.append(cfg.landmark_weight * lm_ok)
                t_inv = umeyama(np.concatenate(src), np.concatenate(dst), scale=cfg.with_scale,
                                weights=np.concatenate(w))
                q = t_inv.apply(scan[None])[0]
            idx = cKDTree(verts).query(q)[1]  # (P,) nearest vertex
        if step == cfg.steps:
            break
        opt.lr = cosine_lr(step, cfg.steps, cfg.lr, cfg.lr_final_fraction)
        r = residuals(verts, q)  # (P,)
        if cfg.robust:
            e_s = ws * sig2 * (r * r / (r * r + sig2))
            dr = ws * sig2 * 2.0 * r * sig2 / (r * r + sig2) ** 2  # d(sigma^2 rho)/dr
        else:
            e_s = ws * r * r
            dr = ws * 2.0 * r
        grad_v = _scatter_add(nv, idx, -dr[:, None] * normals[idx])  # (V, 3); dr_j/dx_k = -n_k
        g = decoder.vertices_vjp(zc, grad_v[None]).astype(np.float64)  # (1, D)
        energy = float(e_s.sum()) + cfg.lam * float((zc.astype(np.float64) ** 2).sum())
        if lm_rows is not None:
            pts, vjp = decoder.linearize_points(zc, lm_rows)
            lt = t_inv.apply(lm_tg[None])[0]
            rl = (pts[0].astype(np.float64) - lt) * lm_ok[:, None]
            g += vjp((2.0 * cfg.landmark_weight * rl)[None]).astype(np.float64)
            energy += cfg.landmark_weight * float((rl * rl).sum())
        g += 2.0 * cfg.lam * zc
        hist_step.append(step)
        hist_e.append(energy)
        opt.step(g.astype(dt))
        if progress is not None:
            progress(step + 1, cfg.steps)

    to_capture = t_inv.inverse()
    r = residuals(verts, q)
    dist = np.abs(r) * to_capture.scale[0]
    inl = np.abs(r) < INLIER_SIGMAS * cfg.sigma
    return SurfaceRefineResult(
        z=zc[0].astype(np.float64),
        transform=to_capture,
        vertices=to_capture.apply(verts[None])[0],
        distances=dist,
        inliers=inl,
        scan_points=keep,
        inlier_rms=float(np.sqrt(np.mean(dist[inl] ** 2))) if inl.any() else float("nan"),
        history={"step": np.asarray(hist_step), "energy": np.asarray(hist_e)},
    )
