"""Dense retargeting and dense reconstruction on fresh ICT identities (beyond the paper).

Why: a 68-landmark fit leaves about 2 mm of fitting error, which hides the part of an
expression that depends on the identity (8-13 % of its displacement on the ICT data, 0.2-0.6 mm).
Fitting *every* vertex with known correspondence removes that error, so these measures can tell
a model whose expressions act the same on every face (the additive 3DMM) from one whose
expressions act the way each face moves them.

Set-up (:func:`build_dense_truth`): ``identities`` fresh identities drawn as ``fitface data ict``
draws them (ICT identity weights ``N(0, I)``, from a random stream no dataset build uses, so they
are never training identities), the ICT blendshapes moved onto each by deformation transfer
(:class:`fitface.data.ict.ExpressionTransfer`, as the builder does), posed with the six emotion
recipes (:data:`fitface.data.ict.EMOTION_RECIPES` less neutral) at full intensity, no style or
jitter; and, for dense reconstruction, ``samples_per_identity`` faces of each identity drawn by
the builder's own sampler (:func:`fitface.data.plan.plan_samples` and
:func:`fitface.data.ict.expression_coefficients`: posed, spontaneous and neutral frames), i.e.
the whole sampled expression space rather than six recipes.

Fits (:func:`dense_fit`): every vertex, known correspondence, model frame, from ``z = 0``,
L-BFGS (scipy) on ``E(z) = mean_v |G(z)_v - t_v|^2 + ridge |z|^2`` (mm^2; ``ridge`` 1e-4 per
unit code squared), to convergence, in codes whitened by the model's Jacobian at ``z = 0``
(:func:`code_preconditioner`; the same optimum, reached in a few iterations instead of hundreds).

Rows (:class:`DenseTransferResult`), vertex RMSE in mm, mean over the ordered pairs
``(A, B, e)`` of distinct identities and the six emotions (6 identities: 180 pairs); A posed
with ``e``, B neutral, truth ``T`` = B's own transferred expression ``e``:

* ``no_transfer``: the fit of B's neutral against ``T`` (keeping B's expression);
* ``pasted``: B's true neutral plus A's exact displacement (A posed minus A neutral, both true)
  against ``T``: A's whole displacement moved unchanged (model-independent). Not a bound on
  additive models: a model transfers only its expression code, which can drop A's idiosyncratic
  part of the displacement (an additive 3DMM with a 100-dimensional identity code retargets
  these pairs at 0.61 mm against the pasted 0.65; docs/benchmarks.md);
* ``retarget``: ``G(z_id(B), z_exp(A), z_noise(B))`` from the two fits, against ``T``;
* ``direct_fit``: the fit of ``T`` itself (what the model can represent);
* ``neutral_fit``: the fit of B's neutral against B's neutral;
* ``reconstruction``: the fits of the sampled faces (mean, median and 90th percentile).

Convention:
    * Lengths in mm (the ICT source's unit after :func:`fitface.data.ict.load_ict`); models in
      another unit are converted (their fits run in their unit on converted targets).
    * Vertex RMSE of a mesh ``v`` against ``t``: ``sqrt(mean_v |v_v - t_v|^2)``.
    * The truth uses the first ``V`` vertices of the ICT source, ``V`` the model's vertex count
      (9,409: the face area of ``fitface data ict``; 6,706 for ``--narrow``); the model must be
      on that topology.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

#: Random stream of the fresh identities (the builder uses streams 0-4: see ``fitface.data.ict``).
FRESH_IDENTITY_STREAM = 101
#: Random stream of the sampled expressions of the fresh identities.
FRESH_SAMPLE_STREAM = 102
#: The six emotions posed for dense retargeting (the builder's recipes less neutral).
DENSE_EMOTIONS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
#: Ridge of the dense fits (per unit code squared, against mean squared vertex error in mm^2).
RIDGE = 1e-4
#: L-BFGS iteration cap of the dense fits (they converge in well under this on the ICT models).
MAX_ITER = 500
#: Rows of the dense retargeting table, in order.
ROWS = ("no_transfer", "pasted", "retarget", "direct_fit", "neutral_fit")


@dataclass
class DenseConfig:
    """Options of the dense measures.

    Attributes:
        identities: fresh identities (>= 2); ordered pairs = identities x (identities - 1) x 6.
        samples_per_identity: faces per identity for dense reconstruction (0: none).
        ridge: ``ridge`` of :func:`dense_fit`. max_iter: its L-BFGS cap.
        seed: seeds the identities and the sampled expressions.
    """

    identities: int = 6
    samples_per_identity: int = 10
    ridge: float = RIDGE
    max_iter: int = MAX_ITER
    seed: int = 0

    def validate(self) -> None:
        """Raises ValueError naming the first bad field."""
        if int(self.identities) < 2:
            raise ValueError(f"identities: expected an integer >= 2, got {self.identities!r}")
        if int(self.samples_per_identity) < 0:
            raise ValueError(f"samples_per_identity: expected an integer >= 0, got {self.samples_per_identity!r}")
        if not (np.isfinite(self.ridge) and self.ridge >= 0):
            raise ValueError(f"ridge: expected a finite number >= 0, got {self.ridge!r}")
        if int(self.max_iter) < 1:
            raise ValueError(f"max_iter: expected an integer >= 1, got {self.max_iter!r}")

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class DenseTruth:
    """Ground truth of the dense measures (see the module docstring).

    Attributes:
        neutral: (I, V, 3) float64 mm, each fresh identity's neutral face.
        posed: (I, E, V, 3) float64 mm, identity ``i`` with emotion ``DENSE_EMOTIONS[e]``.
        sampled: (S, V, 3) float64 mm, faces from the builder's sampler (S = I x samples).
        sampled_identity: (S,) int64 the fresh identity of each sampled face.
        faces: (F, 3) int64 the topology (the source's faces on the first V vertices).
        info: provenance (source, seed, counts, seconds).
    """

    neutral: np.ndarray
    posed: np.ndarray
    sampled: np.ndarray
    sampled_identity: np.ndarray
    faces: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_vertices(self) -> int:
        return int(self.neutral.shape[1])


def build_dense_truth(ict_source, num_vertices: int, config: DenseConfig | None = None) -> DenseTruth:
    """The fresh identities, their six posed emotions and their sampled faces (mm).

    Args:
        ict_source: the ICT npz (``ict_face_light.npz``) or an ICT-FaceKit checkout.
        num_vertices: ``V``, the model's vertex count (a prefix of the source's vertices).
        config: :class:`DenseConfig`.

    Returns:
        :class:`DenseTruth`.

    Raises:
        InputError: an unreadable source, or ``V`` that is not a closed prefix of its mesh.
    """
    from fitface.data.emotions import EMOTIONS
    from fitface.data.ict import (
        ExpressionTransfer,
        blendshape_recipe_matrix,
        expression_coefficients,
        load_ict,
        mixture_units,
        restrict_vertices,
        single_threaded_blas,
    )
    from fitface.data.plan import plan_samples
    from fitface.errors import InputError

    cfg = DenseConfig() if config is None else config
    cfg.validate()
    t0 = time.perf_counter()
    model = load_ict(ict_source)
    V = int(num_vertices)
    if not 0 < V <= len(model.neutral):
        raise InputError(f"the model has {V} vertices, the ICT source {len(model.neutral)}", ict_source)
    try:
        faces = restrict_vertices(V, model.faces)
    except ValueError as exc:
        raise InputError(f"the first {V} vertices are not a region of the ICT mesh: {exc}", ict_source) from None
    recipes = blendshape_recipe_matrix(model.expression_names)  # (7, K)
    rows = [EMOTIONS.index(e) for e in DENSE_EMOTIONS]
    n_id, n_s = int(cfg.identities), int(cfg.samples_per_identity)
    neutral = np.empty((n_id, V, 3))
    posed = np.empty((n_id, len(rows), V, 3))
    sampled, sampled_id = [], []
    plan = plan_samples(n_id, n_id * n_s, np.random.default_rng([int(cfg.seed), FRESH_SAMPLE_STREAM])) if n_s else None
    blocks = {i: (a, b) for i, a, b in plan.identity_blocks()} if plan is not None else {}
    units = mixture_units(model.expression_names)
    with single_threaded_blas():
        et = ExpressionTransfer(model)
        for i in range(n_id):
            w = np.random.default_rng([int(cfg.seed), FRESH_IDENTITY_STREAM, i]).standard_normal(
                len(model.identity_modes))
            n_i = et.neutral_of(w)  # (V0, 3)
            d = et.deltas(n_i)[:, :V]  # (K, V, 3)
            neutral[i] = n_i[:V]
            posed[i] = n_i[None, :V] + np.tensordot(recipes[rows], d, axes=1)  # (E, V, 3)
            if i in blocks:
                a, b = blocks[i]
                c = expression_coefficients(plan, slice(a, b), recipes, units,
                                            np.random.default_rng([int(cfg.seed), FRESH_SAMPLE_STREAM, 1, i]),
                                            np.random.default_rng([int(cfg.seed), FRESH_SAMPLE_STREAM, 2, i]))
                sampled.append(n_i[None, :V] + np.tensordot(c, d, axes=1))  # (n, V, 3)
                sampled_id.append(np.full(len(c), i, dtype=np.int64))
    sampled_arr = np.concatenate(sampled) if sampled else np.zeros((0, V, 3))
    sid = np.concatenate(sampled_id) if sampled_id else np.zeros(0, dtype=np.int64)
    info = {"source": str(getattr(model, "source", ict_source)), "identities": n_id, "emotions": list(DENSE_EMOTIONS),
            "sampled_faces": int(len(sampled_arr)), "seed": int(cfg.seed),
            "identity_stream": FRESH_IDENTITY_STREAM, "seconds": time.perf_counter() - t0}
    return DenseTruth(neutral, posed, sampled_arr, sid, faces, info)


def dense_truth_for_dataset(dataset, ict_source, config: DenseConfig | None = None) -> DenseTruth:
    """:func:`build_dense_truth` for the models of an ICT dataset (its vertex count and faces).

    Args:
        dataset: a :class:`fitface.data.format.Dataset` built by ``fitface data ict``.
        ict_source: the ICT source it was built from (None: not given).
        config: :class:`DenseConfig`.

    Raises:
        InputError: why the dense measures cannot run on this dataset (not an ICT set, no
            source, an unreadable source, or faces that are not the ICT face area's).
    """
    from fitface.errors import InputError

    if dataset.info.get("builder") != "ict":
        raise InputError("the dataset was not built from ICT (the dense measures pose fresh ICT identities)")
    if ict_source is None:
        raise InputError("no ICT source for the fresh identities")
    truth = build_dense_truth(ict_source, dataset.num_vertices, config)
    if not np.array_equal(truth.faces, np.asarray(dataset.faces)):
        raise InputError("the dataset's faces are not the ICT face area's")
    return truth


def no_transfer_errors(truth: DenseTruth, pairs: np.ndarray) -> np.ndarray:
    """(P,) mm: B's true neutral against B's truth (what transferring nothing scores)."""
    b, e = pairs[:, 1], pairs[:, 2]
    return vertex_rmse(truth.neutral[b], truth.posed[b, e])


# ------------------------------------------------------------------------------ fits
@dataclass
class DenseFit:
    """Dense fits of N targets.

    Attributes:
        z: (N, D) float64 codes.
        vertices: (N, V, 3) float64 decoded meshes, the targets' unit.
        rmse: (N,) float64 vertex RMSE to the targets, the targets' unit.
        iterations: L-BFGS iterations. converged: whether L-BFGS stopped on its tolerance.
    """

    z: np.ndarray
    vertices: np.ndarray
    rmse: np.ndarray
    iterations: int
    converged: bool


def vertex_rmse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(..., V, 3) x (..., V, 3) -> (...) ``sqrt(mean_v |a_v - b_v|^2)``."""
    return np.sqrt(np.mean(np.sum((np.asarray(a) - np.asarray(b)) ** 2, axis=-1), axis=-1))


def code_preconditioner(decoder, ridge: float = RIDGE, unit_scale: float = 1.0, step: float = 0.05) -> np.ndarray:
    """(D, D) lower-triangular ``L`` with ``L L^T = J^T J s^2 / V + ridge I``, ``J`` (3V, D) the
    decoder's Jacobian at ``z = 0`` (central differences, ``step`` per code unit), ``s`` the
    unit scale: half the Hessian of :func:`dense_fit`'s objective for a linear decoder.

    Fitting in ``u = L^T z`` makes that Hessian the identity, so L-BFGS converges in a few
    iterations on near-linear models (a linear one in one or two) instead of hundreds.
    The optimum is unchanged: only the parametrisation is.
    """
    D, V = decoder.latent_dim, decoder.num_vertices
    e = np.eye(D) * float(step)
    plus = np.asarray(decoder.vertices(e), dtype=np.float64).reshape(D, -1)  # (D, 3V)
    minus = np.asarray(decoder.vertices(-e), dtype=np.float64).reshape(D, -1)
    j = (plus - minus).T / (2.0 * float(step))  # (3V, D) model unit per code unit
    h = (float(unit_scale) ** 2 / V) * (j.T @ j) + max(float(ridge), 1e-8) * np.eye(D)  # (D, D)
    return np.linalg.cholesky(h)


def dense_fit(decoder, targets: np.ndarray, ridge: float = RIDGE, max_iter: int = MAX_ITER,
              unit_scale: float = 1.0, precondition: np.ndarray | bool = True) -> DenseFit:
    """Fit every vertex of each target with known correspondence (see the module docstring).

    Args:
        decoder: a numpy decoder (:func:`fitface.api.load_fit_model`) on the targets' topology.
        targets: (N, V, 3) float, in the targets' unit.
        ridge: weight of ``|z|^2`` against the mean squared vertex error (targets' unit squared).
        max_iter: L-BFGS iteration cap.
        unit_scale: target units per model unit (1 when both are mm).
        precondition: True (fit in the coordinates of :func:`code_preconditioner`), False (plain
            ``z``), or a precomputed (D, D) factor.

    Returns:
        :class:`DenseFit` (all N fitted jointly: the objective is a sum of independent terms).

    Raises:
        ValueError: targets of the wrong shape.
    """
    from scipy.linalg import solve_triangular
    from scipy.optimize import minimize

    from fitface.checks import check_shape

    t = np.asarray(targets, dtype=np.float64)
    check_shape("targets", t, (None, decoder.num_vertices, 3))
    n, D, V = len(t), decoder.latent_dim, decoder.num_vertices
    tm = t / float(unit_scale)  # (N, V, 3) model unit
    s2 = float(unit_scale) ** 2
    if precondition is True:
        L = code_preconditioner(decoder, ridge, unit_scale)
    elif precondition is False:
        L = np.eye(D)
    else:
        L = np.asarray(precondition, dtype=np.float64)
        check_shape("precondition", L, (D, D))

    def to_z(u: np.ndarray) -> np.ndarray:  # z = L^-T u, (N, D)
        return solve_triangular(L, u.reshape(n, D).T, lower=True, trans="T").T

    def fun(x: np.ndarray):
        z = to_z(x)
        r = np.asarray(decoder.vertices(z), dtype=np.float64) - tm  # (N, V, 3) model unit
        f = s2 * np.sum(r * r) / V + ridge * np.sum(z * z)
        g = np.asarray(decoder.vertices_vjp(z, (2.0 * s2 / V) * r), dtype=np.float64) + 2.0 * ridge * z  # (N, D)
        gu = solve_triangular(L, g.T, lower=True).T  # dz/du^T g = L^-1 g
        return f, gu.reshape(-1)

    res = minimize(fun, np.zeros(n * D), jac=True, method="L-BFGS-B",
                   options={"maxiter": int(max_iter), "maxcor": 20, "ftol": 1e-13, "gtol": 1e-9})
    z = to_z(res.x)
    v = np.asarray(decoder.vertices(z), dtype=np.float64) * float(unit_scale)
    return DenseFit(z, v, vertex_rmse(v, t), int(res.nit), bool(res.success))


# ------------------------------------------------------------------------------ the measures
@dataclass
class DenseModelErrors:
    """One model's dense errors (mm).

    Attributes:
        pairs: row (:data:`ROWS`) -> (P,) per-pair vertex RMSE.
        reconstruction: (S,) vertex RMSE of the sampled faces' fits (empty without samples).
        seconds: wall time. iterations: L-BFGS iterations of the two joint fits.
    """

    pairs: dict[str, np.ndarray]
    reconstruction: np.ndarray
    seconds: float
    iterations: dict[str, int]

    def summary(self) -> dict[str, float]:
        out = {f"{k}_vertex_rmse_mm": float(v.mean()) for k, v in self.pairs.items()}
        if len(self.reconstruction):
            r = self.reconstruction
            out.update(reconstruction_vertex_rmse_mm=float(r.mean()),
                       reconstruction_median_mm=float(np.median(r)),
                       reconstruction_p90_mm=float(np.percentile(r, 90)))
        return out


@dataclass
class DenseTransferResult:
    """Dense measures per model, with the set-up."""

    errors: dict[str, DenseModelErrors]
    pairs: np.ndarray  # (P, 3) int64 (A identity, B identity, emotion index)
    config: DenseConfig
    truth_info: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"protocol": "fresh ICT identities; A posed with one of six emotions at full intensity, B neutral, "
                            "truth = B's own transferred expression; every vertex fitted (L-BFGS, ridge); "
                            "vertex RMSE in mm, mean over ordered pairs",
                "config": self.config.to_json(), "truth": self.truth_info, "num_pairs": int(len(self.pairs)),
                "models": {m: {**e.summary(), "seconds": e.seconds, "iterations": e.iterations}
                           for m, e in self.errors.items()}}


def dense_pairs(num_identities: int, num_emotions: int = len(DENSE_EMOTIONS)) -> np.ndarray:
    """(P, 3) int64 every ordered (A, B, emotion) with A != B, A-major."""
    return np.asarray([(a, b, e) for a in range(num_identities) for b in range(num_identities) if a != b
                       for e in range(num_emotions)], dtype=np.int64).reshape(-1, 3)


def pasted_errors(truth: DenseTruth, pairs: np.ndarray) -> np.ndarray:
    """(P,) mm: B's true neutral plus A's exact displacement, against B's truth."""
    a, b, e = pairs.T
    pasted = truth.neutral[b] + (truth.posed[a, e] - truth.neutral[a])  # (P, V, 3)
    return vertex_rmse(pasted, truth.posed[b, e])


def dense_model_errors(decoder, truth: DenseTruth, cfg: DenseConfig, pairs: np.ndarray | None = None
                       ) -> DenseModelErrors:
    """The dense rows of one model (see the module docstring).

    Args:
        decoder: a numpy decoder on the truth's topology.
        truth: :func:`build_dense_truth`. cfg: its config (ridge, iterations).
        pairs: (P, 3) from :func:`dense_pairs` (default: all of them).

    Raises:
        InputError: a model on another topology or without identity and expression blocks.
    """
    from fitface.errors import InputError
    from fitface.units import scale_between

    t0 = time.perf_counter()
    if decoder.num_vertices != truth.num_vertices or not np.array_equal(np.asarray(decoder.faces), truth.faces):
        raise InputError(f"the model has {decoder.num_vertices} vertices (or other faces) than the ICT face area "
                         f"of the dense measures ({truth.num_vertices}): dense measures need the ICT topology")
    layout = decoder.layout
    if not {"identity", "expression"} <= set(layout.names):
        raise InputError(f"the model's codes have no identity and expression blocks ({layout.describe()})")
    pairs = dense_pairs(len(truth.neutral)) if pairs is None else pairs
    unit_scale = scale_between(decoder.unit, "mm")  # mm per model unit
    n_id, n_e = truth.posed.shape[:2]
    V = truth.num_vertices
    targets = np.concatenate([truth.neutral, truth.posed.reshape(-1, V, 3)])  # (I + I E, V, 3)
    pre = code_preconditioner(decoder, cfg.ridge, unit_scale)
    fit = dense_fit(decoder, targets, cfg.ridge, cfg.max_iter, unit_scale, pre)
    zn, zp = fit.z[:n_id], fit.z[n_id:].reshape(n_id, n_e, -1)  # (I, D), (I, E, D)
    vn, vp = fit.vertices[:n_id], fit.vertices[n_id:].reshape(n_id, n_e, V, 3)
    a, b, e = pairs.T
    ex = layout.slice("expression")
    zr = zn[b].copy()  # (P, D): B's identity and noise
    zr[:, ex] = zp[a, e][:, ex]  # A's expression
    vr = np.asarray(decoder.vertices(zr), dtype=np.float64) * unit_scale  # (P, V, 3)
    gt = truth.posed[b, e]
    rows = {"no_transfer": vertex_rmse(vn[b], gt), "pasted": pasted_errors(truth, pairs),
            "retarget": vertex_rmse(vr, gt), "direct_fit": vertex_rmse(vp[b, e], gt),
            "neutral_fit": vertex_rmse(vn[b], truth.neutral[b])}
    iters = {"pairs": fit.iterations}
    recon = np.zeros(0)
    if len(truth.sampled):
        rf = dense_fit(decoder, truth.sampled, cfg.ridge, cfg.max_iter, unit_scale, pre)
        recon = rf.rmse
        iters["reconstruction"] = rf.iterations
    return DenseModelErrors(rows, recon, time.perf_counter() - t0, iters)


def run_dense_transfer(models: dict[str, Any], truth: DenseTruth, config: DenseConfig | None = None,
                       log: Callable[[str], None] | None = None) -> DenseTransferResult:
    """The dense measures of every model.

    Args:
        models: display name -> numpy decoder or model file.
        truth: :func:`build_dense_truth`.
        config: :class:`DenseConfig` (the one the truth was built with).
        log: optional line logger.
    """
    from fitface.api.inputs import load_fit_model

    cfg = DenseConfig() if config is None else config
    say = log or (lambda msg: None)
    pairs = dense_pairs(len(truth.neutral))
    errors = {}
    for name, model in models.items():
        dec = load_fit_model(model)
        errors[name] = err = dense_model_errors(dec, truth, cfg, pairs)
        s = err.summary()
        say(f"dense: {name}: retarget {s['retarget_vertex_rmse_mm']:.3f} mm (pasted {s['pasted_vertex_rmse_mm']:.3f}, "
            f"no transfer {s['no_transfer_vertex_rmse_mm']:.3f}, direct fit {s['direct_fit_vertex_rmse_mm']:.3f}, "
            f"neutral fit {s['neutral_fit_vertex_rmse_mm']:.3f}"
            + (f", reconstruction {s['reconstruction_vertex_rmse_mm']:.3f}" if "reconstruction_vertex_rmse_mm" in s
               else "") + f"; {len(pairs)} pairs, {err.seconds:.1f} s)")
    return DenseTransferResult(errors, pairs, cfg, dict(truth.info))
