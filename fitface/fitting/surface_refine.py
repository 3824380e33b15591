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
    * The optimisation is the loop every fit shares (:func:`fitface.fitting.fit_loop.run_fit_loop`,
      one capture, one restart from the landmark fit's code); the data term is :class:`SurfaceTerm`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from fitface.checks import check_shape

from .fit_loop import DataTerm, run_fit_loop
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


class SurfaceTerm(DataTerm):
    """Scan points against the model surface (robust point-to-plane), plus the capture's landmarks
    sharing its similarity: a data term of :func:`run_fit_loop` for one capture (see the module
    doc). Its value is ``w_s sigma^2 mean_j rho(r_j) + w_lm sum_i ||v~_i(z) - T^-1(v_i)||^2``.

    The correspondences (nearest vertex, vertex normals) and ``T`` (joint weighted Umeyama over
    the surface's foot points and the landmarks) are rebuilt at the codes being evaluated, every
    ``rebuild_every`` steps and once more at the end. The landmarks are part of this term, not a
    :class:`fitface.fitting.landmark_fit.LandmarkTerm`, because both share one similarity that is
    estimated from both at once. Arguments: as :func:`refine_surface`.
    """

    num_captures = 1

    def __init__(self, decoder, transform: Similarity, scan_points, cfg: SurfaceRefineConfig,
                 landmark_targets=None, landmark_set=None):
        if not cfg.sigma > 0:
            raise ValueError(f"sigma: must be > 0, got {cfg.sigma}")
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
        self.decoder, self.cfg, self.keep = decoder, cfg, keep
        self.scan = scan[keep]  # (P, 3) capture frame
        self.lm_rows = self.lm_tg = self.lm_ok = None
        if landmark_targets is not None:
            if landmark_set is None:
                raise ValueError("landmark_set: required with landmark_targets")
            self.lm_rows = decoder.landmark_rows(landmark_set)
            lm_tg = np.asarray(landmark_targets, dtype=np.float64)
            check_shape("landmark_targets", lm_tg, (self.lm_rows.num_points, 3))
            self.lm_ok = np.isfinite(lm_tg).all(axis=1)
            self.lm_tg = np.where(self.lm_ok[:, None], lm_tg, 0.0)
        self.sig2 = cfg.sigma**2
        self.ws = cfg.surface_weight / len(self.scan)  # per-point weight of sigma^2 rho
        self.t_inv = transform.inverse()  # capture -> model
        self.q = self.t_inv.apply(self.scan[None])[0]  # (P, 3) model frame
        self.idx = self.normals = None

    def start(self, mean_codes, restarts):
        if restarts != 1:
            raise ValueError(f"restarts: the surface refinement starts from the landmark fit (1), got {restarts}")

    def residuals(self, verts: np.ndarray) -> np.ndarray:
        """(P,) signed point-to-plane distances of the scan points, model unit."""
        return np.einsum("pc,pc->p", self.normals[self.idx], self.q - verts[self.idx])

    def _quad_weight(self, r: np.ndarray) -> np.ndarray:
        """IRLS weight: sigma^2 rho(r) ~ weight * r^2 locally (robust), 1 for least squares."""
        return self.sig2**2 / (r * r + self.sig2) ** 2 if self.cfg.robust else np.ones_like(r)

    def _rebuild(self, verts: np.ndarray, z: np.ndarray) -> None:
        """Normals, then T (joint weighted Umeyama), then the nearest vertices, at ``verts``."""
        cfg, dec = self.cfg, self.decoder
        self.normals = _normals(verts, dec.faces)
        if cfg.estimate_similarity and self.idx is not None:
            r = self.residuals(verts)
            foot = self.q - r[:, None] * self.normals[self.idx]  # (P, 3) on the tangent planes
            src, dst, w = [self.scan], [foot], [self.ws * self._quad_weight(r)]
            if self.lm_rows is not None:
                src.append(self.lm_tg)
                dst.append(dec.points(z, self.lm_rows)[0].astype(np.float64))
                w.append(cfg.landmark_weight * self.lm_ok)
            self.t_inv = umeyama(np.concatenate(src), np.concatenate(dst), scale=cfg.with_scale,
                                 weights=np.concatenate(w))
            self.q = self.t_inv.apply(self.scan[None])[0]
        from scipy.spatial import cKDTree

        self.idx = cKDTree(verts).query(self.q)[1]  # (P,) nearest vertex

    def _value_and_grad(self, z: np.ndarray, verts: np.ndarray, want_grad: bool):
        cfg, dec, sig2, ws = self.cfg, self.decoder, self.sig2, self.ws
        r = self.residuals(verts)  # (P,)
        if cfg.robust:
            e_s = ws * sig2 * (r * r / (r * r + sig2))
            dr = ws * sig2 * 2.0 * r * sig2 / (r * r + sig2) ** 2  # d(sigma^2 rho)/dr
        else:
            e_s = ws * r * r
            dr = ws * 2.0 * r
        energy = float(e_s.sum())
        g = None
        if want_grad:
            grad_v = _scatter_add(dec.num_vertices, self.idx, -dr[:, None] * self.normals[self.idx])  # dr_j/dx_k = -n_k
            g = dec.vertices_vjp(z, grad_v[None]).astype(np.float64)  # (1, D)
        if self.lm_rows is not None:
            pts, vjp = dec.linearize_points(z, self.lm_rows)
            lt = self.t_inv.apply(self.lm_tg[None])[0]
            rl = (pts[0].astype(np.float64) - lt) * self.lm_ok[:, None]
            if want_grad:
                g += vjp((2.0 * cfg.landmark_weight * rl)[None]).astype(np.float64)
            energy += cfg.landmark_weight * float((rl * rl).sum())
        return np.array([energy]), g

    def evaluate(self, z, step, want_value):
        self.verts = verts = self.decoder.vertices(z)[0].astype(np.float64)  # (V, 3) model frame
        if step % self.cfg.rebuild_every == 0:
            self._rebuild(verts, z)
        return self._value_and_grad(z, verts, True)

    def finish(self, z):
        self.verts = verts = self.decoder.vertices(z)[0].astype(np.float64)
        self._rebuild(verts, z)
        return self._value_and_grad(z, verts, False)[0]


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

    :class:`SurfaceTerm` in :func:`fitface.fitting.fit_loop.run_fit_loop`, from ``z``.

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
        :class:`SurfaceRefineResult`; its history has the energy before every step and, last
        (at ``step == steps``), the final one.
    """
    from .landmark_fit import FitConfig

    cfg = SurfaceRefineConfig() if cfg is None else cfg
    z0 = np.asarray(z, dtype=np.float64).reshape(1, -1)
    check_shape("z", z0, (1, decoder.latent_dim))
    term = SurfaceTerm(decoder, transform, scan_points, cfg, landmark_targets, landmark_set)
    loop_cfg = FitConfig(lam=cfg.lam, steps=cfg.steps, lr=cfg.lr, lr_final_fraction=cfg.lr_final_fraction,
                         betas=cfg.betas, history_every=1)
    loop = run_fit_loop(decoder, [term], loop_cfg, init_z=z0, progress=progress)
    to_capture = term.t_inv.inverse()
    r = term.residuals(term.verts)
    dist = np.abs(r) * to_capture.scale[0]
    inl = np.abs(r) < INLIER_SIGMAS * cfg.sigma
    return SurfaceRefineResult(
        z=loop.z[0].copy(),
        transform=to_capture,
        vertices=to_capture.apply(term.verts[None])[0],
        distances=dist,
        inliers=inl,
        scan_points=term.keep,
        inlier_rms=float(np.sqrt(np.mean(dist[inl] ** 2))) if inl.any() else float("nan"),
        history={"step": loop.history["step"], "energy": loop.history["objective"]},
    )
