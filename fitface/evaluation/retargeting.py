"""Retargeting against ground truth (beyond the paper, which shows retargeting only in pictures).

Protocol: pairs of test captures A = (identity a, expression x) and B = (identity b,
expression y) with ``a != b`` and ``x != y``. Both are fitted (the 68 landmarks, eq. 13, or
optionally every vertex: ``dense=True``), the expression of A is moved onto B with
:func:`fitface.api.retarget` in ``"replace"`` mode (``G(z_id(B), z_exp(A), z_noise(B))``), and
the result is compared with the true mesh of (b, x), which the test set holds (it is the full
grid of test identities x extreme expressions).

Reported per model (mm, mean over pairs; surface and vertex RMSE as in
:mod:`fitface.evaluation.sparse_reconstruction`):
    * ``retarget``: the retargeted mesh vs GT (b, x): the number of interest;
    * ``no_transfer``: B's own fit vs GT (b, x): what keeping B's expression costs (a model
      whose retargeting does nothing scores this);
    * ``direct_fit``: a fit of (b, x)'s own landmarks vs GT (b, x): the reconstruction floor
      (retargeting cannot beat what fitting that capture directly achieves, up to luck).

Convention: captures and meshes in the dataset's (= model) frame; fits estimate no similarity
(the landmarks are in the model frame), so ``retarget(..., model_frame=True)`` is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from fitface.evaluation.sparse_reconstruction import STEPS, SurfaceDistance, check_topology, fit_captures

#: Default number of (A, B) pairs.
PAIRS = 100
#: Default eq. 13 weight of the retargeting fits (the API's default).
LAMBDA = 0.01


@dataclass
class RetargetConfig:
    """Options of :func:`run_retargeting`.

    Attributes:
        pairs: number of (A, B) pairs (drawn without repeats when possible).
        lam: eq. 13 weight of the fits.
        dense: fit every vertex instead of the landmark set (an upper bound on what the
            model's latent space allows).
        landmark_set: the sparse set fitted.
        steps: Adam steps. seed: seeds the pairs and the initial codes.
        examples: pairs whose meshes are kept for figures.
    """

    pairs: int = PAIRS
    lam: float = LAMBDA
    dense: bool = False
    landmark_set: str = "ibug68"
    steps: int = STEPS
    lr: float | None = None
    seed: int = 0
    examples: int = 3

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RetargetErrors:
    """Per-pair errors of one model (mm): ``surface[kind]`` and ``vertex[kind]`` are (P,) arrays
    for kind in ``retarget``, ``no_transfer``, ``direct_fit``; ``examples`` maps a pair index to
    its retargeted mesh (V, 3)."""

    surface: dict[str, np.ndarray]
    vertex: dict[str, np.ndarray]
    examples: dict[int, np.ndarray] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        out = {}
        for k in self.surface:
            out[f"{k}_surface_rmse_mm"] = float(self.surface[k].mean())
            out[f"{k}_vertex_rmse_mm"] = float(self.vertex[k].mean())
        return out


@dataclass
class RetargetResult:
    """Retargeting errors per model; ``pairs`` (P, 3) capture indices (A, B, GT (b, x))."""

    errors: dict[str, RetargetErrors]
    pairs: np.ndarray
    config: RetargetConfig
    pair_names: list[str]
    seconds: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"protocol": "fit A=(a,x) and B=(b,y); retarget x onto b (replace mode); RMSE to GT (b,x) in mm",
                "config": self.config.to_json(), "num_pairs": len(self.pairs), "pairs": self.pair_names,
                "seconds": self.seconds,
                "models": {m: {**e.summary(),
                               "per_pair_retarget_surface_rmse_mm": [round(float(x), 5) for x in e.surface["retarget"]]}
                           for m, e in self.errors.items()}}


def draw_pairs(captures, n: int, seed: int) -> np.ndarray:
    """(P, 3) int64 capture indices (A, B, GT) with distinct identities and expressions.

    Raises:
        ValueError: fewer than 2 identities or 2 expressions in the captures.
    """
    ids = np.unique(captures.identity)
    exps = np.unique(captures.expression)
    if len(ids) < 2 or len(exps) < 2:
        raise ValueError(f"retargeting needs at least 2 test identities and 2 expressions, got {len(ids)} and {len(exps)}")
    rng = np.random.default_rng([int(seed), 11])
    # every candidate (a, b, x, y), drawn without replacement when there are few
    cand = [(a, b, x, y) for a in ids for b in ids if a != b for x in exps for y in exps if x != y]
    pick = rng.choice(len(cand), size=min(int(n), len(cand)), replace=False)
    out = []
    for k in pick:
        a, b, x, y = cand[k]
        out.append((captures.index(a, x), captures.index(b, y), captures.index(b, x)))
    return np.asarray(out, dtype=np.int64)


def run_retargeting(models: dict[str, Any], captures, config: RetargetConfig | None = None,
                    log: Callable[[str], None] | None = None) -> RetargetResult:
    """Retargeting errors of every model (see the module docstring).

    Args:
        models: display name -> numpy decoder or model file.
        captures: :class:`fitface.evaluation.heldout_captures.TestCaptures`.
        config: :class:`RetargetConfig`.
        log: optional line logger.
    """
    import time

    from fitface.api import retarget
    from fitface.api.inputs import load_fit_model
    from fitface.evaluation.sparse_reconstruction import SparseConfig, resolve_landmark_set
    from fitface.io.codes import Codes
    from fitface.landmarks.sets import LandmarkSet
    from fitface.units import scale_between

    cfg = RetargetConfig() if config is None else config
    say = log or (lambda msg: None)
    pairs = draw_pairs(captures, cfg.pairs, cfg.seed)
    used = np.unique(pairs)  # captures to fit
    row = {int(c): k for k, c in enumerate(used)}
    gt = captures.vertices
    to_mm = scale_between(captures.unit, "mm")
    dist = {int(c): SurfaceDistance(gt[c], captures.faces) for c in np.unique(pairs[:, 2])}
    fit_cfg = SparseConfig(lambdas=(cfg.lam,), steps=cfg.steps, lr=cfg.lr, seed=cfg.seed)
    names = captures.names()
    errors, seconds = {}, {}
    for name, model in models.items():
        t0 = time.perf_counter()
        dec = load_fit_model(model)
        check_topology(dec, captures, name)
        if cfg.dense:
            lset = LandmarkSet.from_vertex_indices("dense", np.arange(dec.num_vertices), captures.faces)
            targets = gt[used]
        else:
            lset = resolve_landmark_set(dec, captures, cfg.landmark_set)
            ls = dec.landmark_sets[lset] if isinstance(lset, str) else lset
            targets = ls.points(gt[used], captures.faces)
        unit_scale = scale_between(dec.unit, captures.unit)
        z, _, _ = fit_captures(dec, targets, lset, cfg.lam, fit_cfg, False, unit_scale)
        fitted = np.asarray(dec.vertices(z), dtype=np.float64) * unit_scale  # (U, V, 3) capture unit
        codes = [Codes(dec.model_id, {k: v.tolist() for k, v in dec.layout.split(zz).items()}, None, dec.unit)
                 for zz in z]
        surf = {k: np.empty(len(pairs)) for k in ("retarget", "no_transfer", "direct_fit")}
        vert = {k: np.empty(len(pairs)) for k in surf}
        kept = {}
        for p, (ia, ib, ig) in enumerate(pairs):
            res = retarget(codes[row[int(ia)]], codes[row[int(ib)]], model=dec, mode="replace", model_frame=True)
            meshes = {"retarget": res.vertices[0] * unit_scale, "no_transfer": fitted[row[int(ib)]],
                      "direct_fit": fitted[row[int(ig)]]}
            for k, v in meshes.items():
                d = dist[int(ig)](v)
                surf[k][p] = np.sqrt(np.mean(d**2)) * to_mm
                vert[k][p] = np.sqrt(np.mean(((v - gt[ig]) ** 2).sum(-1))) * to_mm
            if p < cfg.examples:
                kept[p] = meshes["retarget"]
        errors[name] = RetargetErrors(surf, vert, kept)
        seconds[name] = time.perf_counter() - t0
        s = errors[name].summary()
        say(f"retargeting: {name}: {s['retarget_surface_rmse_mm']:.3f} mm (no transfer "
            f"{s['no_transfer_surface_rmse_mm']:.3f}, direct fit {s['direct_fit_surface_rmse_mm']:.3f}; "
            f"{len(pairs)} pairs, {seconds[name]:.1f} s)")
    pair_names = [f"{names[a]} -> {names[b]} (GT {names[g]})" for a, b, g in pairs]
    return RetargetResult(errors, pairs, cfg, pair_names, seconds)
