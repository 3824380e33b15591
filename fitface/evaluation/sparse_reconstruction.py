"""Reconstruction of sparse data (paper §5.5, Table 2): fit 68 landmarks, measure the whole surface.

For every model and every regularisation weight ``lam`` (paper: 0, 0.01, 10), each ground-truth
test capture's 68 iBUG landmarks are fitted with eq. 13 (:func:`fitface.fitting.fit_landmarks`,
all captures in one batch) starting from one random code (fixed seed, the same for every model),
the fitted code is decoded to the full mesh and compared with the capture's ground-truth mesh.

Error measures (both reported; the Table 2 number is the surface one):
    * **surface RMSE**: ``sqrt(mean_v d(x_v, S)^2)`` with ``x_v`` the fitted vertices and
      ``d(x, S)`` the exact Euclidean distance from ``x`` to the ground-truth surface ``S``
      (the closest point on any of its triangles, :class:`SurfaceDistance`); the paper's
      "reconstruction error against the ground-truth surface".
    * **vertex RMSE**: ``sqrt(mean_v ||x_v - y_v||^2)`` with ``y_v`` the ground-truth vertex of
      the same index (every model shares the dataset's topology). Always >= the surface RMSE.
    The table reports, per model and ``lam``, the mean over captures of the per-capture RMSE.

Convention:
    * Frames and units: captures are in the dataset's frame and unit (the model frame of every
      model trained on it); distances are reported in mm. By default the landmarks are given in
      the model frame and only ``z`` is fitted (eq. 13 exactly). With
      ``SparseConfig(similarity=True)`` each capture is first moved by a random rigid motion
      (rotation up to ``rotation_deg`` about each axis, translation ~ N(0, translation_mm^2))
      and the fit estimates a similarity jointly with ``z`` (the engine's block-coordinate
      scheme); errors are measured after mapping the fitted mesh back with the known motion
      (rigid: distances are unchanged). ``noise_mm`` adds isotropic Gaussian noise to the
      landmark targets (after the motion).
    * Initial codes: ``z0 ~ N(0, I)`` from ``FitConfig(seed=seed, init="random", restarts=1)``;
      capture ``c`` gets row ``c`` of the same draw for every model and ``lam``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from fitface.checks import check_faces, check_shape

#: The paper's regularisation weights (Table 2).
PAPER_LAMBDAS = (0.0, 0.01, 10.0)
#: Candidate triangles per query point in the first (k-nearest-centroid) pass of :class:`SurfaceDistance`.
NEAREST_TRIANGLES = 8
#: Triangle groups of :class:`SurfaceDistance` by bounding radius (upper quantiles of each group).
RADIUS_QUANTILES = (0.5, 0.9, 0.99, 1.0)
#: Captures fitted per call of the engine (bounds the (B, V, 3) decodes).
FIT_CHUNK = 128
#: Default Adam steps of the Table 2 fits (the engine's default; converges on the tests in ~300).
STEPS = 400


# ------------------------------------------------------------------------------ point -> surface
def closest_points_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Closest point of each triangle to each point (Ericson, Real-Time Collision Detection 5.1.5).

    Args:
        p: (N, 3) float query points. a, b, c: (N, 3) float triangle corners (paired with ``p``).

    Returns:
        (N, 3) float64 closest points. A degenerate (zero-area) triangle gives the closest of its
        three edges' points it can resolve, else its nearest corner.
    """
    p, a, b, c = (np.asarray(x, dtype=np.float64) for x in (p, a, b, c))
    ab, ac, ap = b - a, c - a, p - a
    bp, cp = p - b, p - c

    def dot(x, y):
        return np.einsum("nc,nc->n", x, y)

    d1, d2 = dot(ab, ap), dot(ac, ap)
    d3, d4 = dot(ab, bp), dot(ac, bp)
    d5, d6 = dot(ab, cp), dot(ac, cp)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = va + vb + vc
        out = a + ab * (vb / denom)[:, None] + ac * (vc / denom)[:, None]  # inside the face
        # Voronoi regions, applied from the lowest to the highest precedence of Ericson's tests
        w_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        m = (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0)
        out[m] = (b + (c - b) * w_bc[:, None])[m]
        w_ac = d2 / (d2 - d6)
        m = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
        out[m] = (a + ac * w_ac[:, None])[m]
        m = (d6 >= 0) & (d5 <= d6)
        out[m] = c[m]
        w_ab = d1 / (d1 - d3)
        m = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
        out[m] = (a + ab * w_ab[:, None])[m]
        m = (d3 >= 0) & (d4 <= d3)
        out[m] = b[m]
        m = (d1 <= 0) & (d2 <= 0)
        out[m] = a[m]
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():  # degenerate triangles: the nearest corner
        corners = np.stack([a[bad], b[bad], c[bad]], axis=1)  # (n, 3, 3)
        k = np.argmin(((corners - p[bad, None]) ** 2).sum(-1), axis=1)
        out[bad] = corners[np.arange(len(k)), k]
    return out


class SurfaceDistance:
    """Exact Euclidean distance from points to a triangle mesh's surface (set up once per mesh).

    Method: triangles are split into groups by their bounding radius ``r_T = max_k |v_k - c_T|``
    (``c_T`` the centroid; group boundaries at :data:`RADIUS_QUANTILES`), with a k-d tree over
    each group's centroids. A triangle is at least ``|q - c_T| - r_T`` away from a query ``q``.
    Each query measures the :data:`NEAREST_TRIANGLES` nearest-centroid triangles of every group
    exactly (best distance ``d*``); every unmeasured triangle of group ``g`` is then at least
    ``D_g - r_g`` away (``D_g`` the k-th centroid distance in the group, ``r_g`` the group's
    largest radius). Where ``d* > D_g - r_g``, every triangle of group ``g`` whose centroid
    lies within ``d* + r_g`` is measured too (a ball query). The result is exact.

    Args:
        vertices: (V, 3) float. faces: (F, 3) int.
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray):
        from scipy.spatial import cKDTree

        v = np.asarray(vertices, dtype=np.float64)
        check_shape("vertices", v, ("V", 3))
        f = np.asarray(faces, dtype=np.int64)
        check_faces("faces", f, v.shape[0])
        if not len(f):
            raise ValueError("faces: the mesh has no triangles")
        self.tri = v[f]  # (F, 3, 3)
        cen = self.tri.mean(axis=1)  # (F, 3)
        rad = np.linalg.norm(self.tri - cen[:, None], axis=-1).max(axis=1)  # (F,)
        cuts = np.quantile(rad, RADIUS_QUANTILES)
        gid = np.searchsorted(cuts, rad, side="left").clip(0, len(cuts) - 1)  # (F,) group per triangle
        self.groups = []  # (triangle ids, tree, max radius)
        for g in np.unique(gid):
            ids = np.flatnonzero(gid == g)
            self.groups.append((ids, cKDTree(cen[ids]), float(rad[ids].max())))
        #: share of (query, group) pairs of the last call that needed a ball query (diagnostics)
        self.fallback_share = 0.0

    def _exact(self, q: np.ndarray, tri_idx: np.ndarray) -> np.ndarray:
        """Squared distances of q (N, 3) to triangles tri_idx (N,)."""
        t = self.tri[tri_idx]
        cp = closest_points_on_triangles(q, t[:, 0], t[:, 1], t[:, 2])
        return ((cp - q) ** 2).sum(axis=1)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """(P, 3) float points -> (P,) float64 distances to the surface (the mesh's unit)."""
        q = np.asarray(points, dtype=np.float64)
        check_shape("points", q, ("P", 3))
        n = len(q)
        best2 = np.full(n, np.inf)
        bounds = []
        for ids, tree, _ in self.groups:
            k = min(NEAREST_TRIANGLES, len(ids))
            dk, idx = tree.query(q, k=k)
            dk, idx = dk.reshape(n, k), idx.reshape(n, k)
            d2 = self._exact(np.repeat(q, k, axis=0), ids[idx.reshape(-1)]).reshape(n, k)
            best2 = np.minimum(best2, d2.min(axis=1))
            bounds.append(dk[:, -1] if k < len(ids) else np.full(n, np.inf))
        best = np.sqrt(best2)
        pending = 0
        for (ids, tree, r), dk in zip(self.groups, bounds):
            todo = np.flatnonzero(best > dk - r)
            pending += len(todo)
            if not len(todo):
                continue
            lists = tree.query_ball_point(q[todo], best[todo] + r)
            counts = np.array([len(x) for x in lists])
            if not counts.sum():
                continue
            cand = ids[np.concatenate([np.asarray(x, dtype=np.int64) for x in lists])]
            rows = np.repeat(np.arange(len(todo)), counts)
            m = np.full(len(todo), np.inf)
            np.minimum.at(m, rows, self._exact(q[todo][rows], cand))
            best[todo] = np.minimum(best[todo], np.sqrt(m))
        self.fallback_share = pending / max(n * len(self.groups), 1)
        return best


def surface_rmse(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> float:
    """One-shot surface RMSE: ``sqrt(mean ||p - closest point of the mesh||^2)`` of (P, 3) points."""
    d = SurfaceDistance(vertices, faces)(points)
    return float(np.sqrt(np.mean(d**2)))


# ------------------------------------------------------------------------------ the experiment
@dataclass
class SparseConfig:
    """Options of :func:`run_sparse_reconstruction`.

    Attributes:
        lambdas: eq. 13 weights (paper 0, 0.01, 10).
        landmark_set: the set fitted (``"ibug68"``: 68 landmarks).
        steps, lr: Adam settings (None = the engine's defaults).
        seed: seeds the initial codes (and the random motions / noise).
        similarity: move each capture by a random rigid motion and estimate a similarity.
        rotation_deg, translation_mm: size of the random motion.
        noise_mm: std of isotropic Gaussian noise added to the landmark targets.
        examples: captures whose fitted meshes are kept for figures.
    """

    lambdas: tuple[float, ...] = PAPER_LAMBDAS
    landmark_set: str = "ibug68"
    steps: int = STEPS
    lr: float | None = None
    seed: int = 0
    similarity: bool = False
    rotation_deg: float = 20.0
    translation_mm: float = 30.0
    noise_mm: float = 0.0
    examples: int = 4

    def validate(self) -> None:
        if not self.lambdas or any(not np.isfinite(x) or x < 0 for x in self.lambdas):
            raise ValueError(f"lambdas: expected non-negative numbers, got {self.lambdas}")
        if self.noise_mm < 0 or self.rotation_deg < 0 or self.translation_mm < 0:
            raise ValueError("noise_mm, rotation_deg, translation_mm: must be >= 0")

    def to_json(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass
class FitErrors:
    """Errors of one model at one ``lam`` over the C captures (mm).

    Attributes:
        surface_rmse: (C,) per-capture surface RMSE. vertex_rmse: (C,) per-capture vertex RMSE.
        landmark_rms: (C,) landmark RMS of the fit (model frame, mm).
        vertex_error: (V,) mean over captures of each vertex's surface distance (heatmaps).
        code_norm: (C,) ``||z||`` of the fitted codes.
        examples: {capture index: (V, 3) fitted mesh in the ground truth's frame}.
    """

    surface_rmse: np.ndarray
    vertex_rmse: np.ndarray
    landmark_rms: np.ndarray
    vertex_error: np.ndarray
    code_norm: np.ndarray
    examples: dict[int, np.ndarray] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        return {"surface_rmse_mm": float(self.surface_rmse.mean()),
                "surface_rmse_median_mm": float(np.median(self.surface_rmse)),
                "vertex_rmse_mm": float(self.vertex_rmse.mean()),
                "landmark_rms_mm": float(self.landmark_rms.mean()),
                "code_norm": float(self.code_norm.mean())}


@dataclass
class SparseResult:
    """Table 2: ``errors[model][lam]`` -> :class:`FitErrors`, plus the setting."""

    errors: dict[str, dict[float, FitErrors]]
    lambdas: tuple[float, ...]
    config: SparseConfig
    num_captures: int
    capture_names: list[str]
    seconds: dict[str, float]

    def table(self) -> dict[str, dict[float, float]]:
        """model -> lam -> mean surface RMSE (mm): the Table 2 numbers."""
        return {m: {lam: float(e.surface_rmse.mean()) for lam, e in per.items()} for m, per in self.errors.items()}

    def to_json(self) -> dict[str, Any]:
        out = {"protocol": "paper §5.5 Table 2: fit the landmarks from one random code (eq. 13), decode, "
                           "RMSE to the ground-truth surface (mm); mean over captures",
               "config": self.config.to_json(), "num_captures": self.num_captures,
               "captures": self.capture_names, "seconds": self.seconds, "models": {}}
        for m, per in self.errors.items():
            out["models"][m] = {
                repr(float(lam)): {**e.summary(),
                                   "per_capture_surface_rmse_mm": [round(float(x), 5) for x in e.surface_rmse],
                                   "per_capture_vertex_rmse_mm": [round(float(x), 5) for x in e.vertex_rmse]}
                for lam, e in per.items()}
        return out


def random_motions(n: int, rng: np.random.Generator, rotation_deg: float, translation_mm: float):
    """n random rigid motions (:class:`fitface.fitting.similarity.Similarity`, scale 1)."""
    from fitface.fitting.similarity import Similarity
    from fitface.geometry.camera import rotation_yaw_pitch

    rot = np.stack([rotation_yaw_pitch(*rng.uniform(-rotation_deg, rotation_deg, 3)) for _ in range(n)])
    return Similarity(np.ones(n), rot, rng.normal(0.0, translation_mm, (n, 3)) if translation_mm > 0
                      else np.zeros((n, 3)))


def resolve_landmark_set(decoder, captures, name: str):
    """The landmark set named ``name`` to fit ``captures`` with (Table 2 and retargeting): the
    model's set of that name (returned as its name), else the captures' dataset's
    :class:`~fitface.landmarks.sets.LandmarkSet` (same topology).

    Raises:
        InputError: neither has a set of that name.
    """
    from fitface.errors import InputError

    if name in decoder.landmark_sets:
        return name
    if name in captures.landmark_sets:
        return captures.landmark_sets[name]
    raise InputError(f"neither the model nor the dataset has a landmark set {name!r}")


def check_topology(decoder, captures, model_name: str) -> None:
    """InputError unless the model has the captures' vertex count and faces."""
    from fitface.errors import InputError

    if decoder.num_vertices != captures.vertices.shape[1] or not np.array_equal(
            np.asarray(decoder.faces), np.asarray(captures.faces)):
        raise InputError(f"model {model_name!r} has {decoder.num_vertices} vertices, the dataset "
                         f"{captures.vertices.shape[1]}: a model can only be evaluated on the topology it was "
                         f"trained on")


def fit_captures(decoder, targets: np.ndarray, landmark_set, lam: float, cfg: SparseConfig,
                 estimate_similarity: bool, unit_scale: float = 1.0, progress=None):
    """Fit (C, L, 3) targets in chunks of :data:`FIT_CHUNK`; returns (z (C, D), transform or None, rms_model (C,)).

    Restart codes are drawn per chunk with ``seed + chunk index`` so capture c always gets the
    same initial code.
    """
    from fitface.fitting.landmark_fit import FitConfig, fit_landmarks
    from fitface.fitting.similarity import Similarity

    zs, ts, rms = [], [], []
    for k, s in enumerate(range(0, len(targets), FIT_CHUNK)):
        fc = FitConfig(lam=float(lam), steps=int(cfg.steps), seed=int(cfg.seed) + k, restarts=1, init="random",
                       estimate_similarity=estimate_similarity, history_every=0)
        if cfg.lr is not None:
            fc.lr = float(cfg.lr)
        chunks, steps = -(-len(targets) // FIT_CHUNK), int(cfg.steps)
        step_progress = None if progress is None else (
            lambda i, n, k=k: progress(k * steps + i, chunks * steps))  # (done, total) in Adam steps
        res = fit_landmarks(decoder, targets[s:s + FIT_CHUNK], landmark_set, fc, unit_scale=unit_scale,
                            progress=step_progress)
        zs.append(res.z)
        ts.append(res.transform)
        rms.append(res.rms_model)
    transform = Similarity.stack(ts) if estimate_similarity else None
    return np.concatenate(zs), transform, np.concatenate(rms)


def run_sparse_reconstruction(models: dict[str, Any], captures, config: SparseConfig | None = None,
                              log: Callable[[str], None] | None = None,
                              progress: Callable[[str], Callable[[int, int], None]] | None = None) -> SparseResult:
    """Table 2 for every model (see the module docstring); ``progress(label)`` returns the
    ``(done, total)`` callback of one model x lambda's fits (a progress bar), if given.

    Args:
        models: display name -> numpy decoder (:func:`fitface.api.load_fit_model`) or model file.
        captures: :class:`fitface.evaluation.heldout_captures.TestCaptures` (dataset frame and unit).
        config: :class:`SparseConfig`.
        log: optional line logger.

    Returns:
        :class:`SparseResult`.
    """
    import time

    from fitface.api.inputs import load_fit_model
    from fitface.units import scale_between

    cfg = SparseConfig() if config is None else config
    cfg.validate()
    say = log or (lambda msg: None)
    to_mm = scale_between(captures.unit, "mm")
    gt = captures.vertices  # (C, V, 3) capture unit
    c = len(gt)
    lms = captures.landmarks(cfg.landmark_set) if cfg.landmark_set in captures.landmark_sets else None
    rng = np.random.default_rng([int(cfg.seed), 7])
    motion = random_motions(c, rng, cfg.rotation_deg, cfg.translation_mm) if cfg.similarity else None
    noise = rng.normal(0.0, cfg.noise_mm / to_mm, (c, 1 if lms is None else lms.shape[1], 3)) if cfg.noise_mm > 0 else 0.0
    t0 = time.perf_counter()
    dist = [SurfaceDistance(gt[i], captures.faces) for i in range(c)]
    seconds = {"surface_setup": time.perf_counter() - t0}
    examples = list(range(min(cfg.examples, c)))
    errors: dict[str, dict[float, FitErrors]] = {}
    for name, model in models.items():
        dec = load_fit_model(model)
        check_topology(dec, captures, name)
        lset = resolve_landmark_set(dec, captures, cfg.landmark_set)
        if lms is None:
            lm_set = dec.landmark_sets[lset] if isinstance(lset, str) else lset
            lms = lm_set.points(gt, captures.faces)
            if cfg.noise_mm > 0:
                noise = rng.normal(0.0, cfg.noise_mm / to_mm, lms.shape)
        targets = lms if motion is None else motion.apply(lms)
        targets = targets + noise
        unit_scale = scale_between(dec.unit, captures.unit)  # capture units per model unit
        errors[name] = {}
        for lam in cfg.lambdas:
            t1 = time.perf_counter()
            bar = None if progress is None else progress(f"table 2: {name} lambda={lam:g}")
            z, transform, rms_model = fit_captures(dec, targets, lset, lam, cfg, motion is not None, unit_scale,
                                                   progress=bar)
            errs = _measure(dec, z, transform, motion, unit_scale, gt, dist, examples)
            errs.landmark_rms = rms_model * scale_between(dec.unit, "mm")
            errs.surface_rmse *= to_mm
            errs.vertex_rmse *= to_mm
            errs.vertex_error *= to_mm
            errors[name][float(lam)] = errs
            seconds[f"{name} lam={lam:g}"] = time.perf_counter() - t1
            say(f"table 2: {name} lambda={lam:g}: surface RMSE {errs.surface_rmse.mean():.3f} mm, vertex RMSE "
                f"{errs.vertex_rmse.mean():.3f} mm, landmarks {errs.landmark_rms.mean():.3f} mm "
                f"({time.perf_counter() - t1:.1f} s)")
    return SparseResult(errors, tuple(float(x) for x in cfg.lambdas), cfg, c, captures.names(), seconds)


def _measure(dec, z, transform, motion, unit_scale, gt, dist, examples) -> FitErrors:
    """Decode z, bring the meshes into the ground truth's frame, measure (capture unit)."""
    c, nv = gt.shape[:2]
    surf, vert = np.empty(c), np.empty(c)
    vacc = np.zeros(nv)
    kept = {}
    for s in range(0, c, FIT_CHUNK):
        v = np.asarray(dec.vertices(z[s:s + FIT_CHUNK]), dtype=np.float64)  # (b, V, 3) model frame/unit
        if transform is not None:  # capture frame, then back through the known rigid motion
            v = motion[s:s + FIT_CHUNK].inverse().apply(transform[s:s + FIT_CHUNK].apply(v))
        else:
            v = v * unit_scale
        for j in range(len(v)):
            i = s + j
            d = dist[i](v[j])  # (V,)
            surf[i] = np.sqrt(np.mean(d**2))
            vert[i] = np.sqrt(np.mean(((v[j] - gt[i]) ** 2).sum(-1)))
            vacc += d
            if i in examples:
                kept[i] = v[j]
    return FitErrors(surf, vert, np.zeros(c), vacc / c, np.linalg.norm(z, axis=1), kept)
