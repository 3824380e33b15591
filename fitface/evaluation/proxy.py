"""A cheap proxy of ``fitface evaluate`` (:func:`fitface.evaluation.report.run_evaluation`) to watch
a training run by: the same measurements at a fraction of the counts, seconds instead of minutes.

:class:`ProxyEvaluator` is set up once per dataset (coefficient regressors, ground-truth test
captures, the training-face reference, reference values) and then called on in-memory models
(:class:`fitface.models.face_model.FaceModel`, e.g. the trainer's generator wrapped by
``Trainer.build_face_model``). Every number comes from the evaluation's own code, at smaller
counts (:class:`ProxyConfig`):

========================  ====================================================================
part                      code (full evaluation setting -> proxy default)
========================  ====================================================================
``coefficients``          :func:`fitface.evaluation.decoupling.coefficient_decoupling` with one
                          :class:`~fitface.evaluation.decoupling.CoefficientRegressor` per factor
                          fitted at set-up (n = m = 100 -> 20)
``diversity``             :func:`fitface.evaluation.diversity_specificity.diversity` (10,000
                          pairs -> 500)
``specificity``           :class:`fitface.evaluation.diversity_specificity.NearestFace`, exact
                          nearest face among the training split (1,000 samples among all
                          training faces -> 100 samples among 2,000 evenly spaced training faces)
``table2``                :func:`fitface.evaluation.sparse_reconstruction.run_sparse_reconstruction`
                          on test captures of
                          :func:`fitface.evaluation.heldout_captures.build_test_captures`
                          (144 captures, lambdas 0 / 0.01 / 10 -> 12 captures spread over 2
                          test identities and all 12 extreme expressions, lambdas 0.01 / 10;
                          400 Adam steps as the evaluation)
``retarget``              :func:`fitface.evaluation.retargeting.run_retargeting` on the grid of
                          those 2 test identities (100 pairs -> 10)
``dense``                 :func:`fitface.evaluation.dense_transfer.dense_model_errors` on a small
                          fixed set of fresh ICT identities (6 identities, 180 pairs -> 3
                          identities, 36 pairs; no sampled reconstruction faces): every vertex
                          fitted, so no landmark error hides how the model transfers an
                          expression (needs the ICT source)
========================  ====================================================================

Time: on the ICT set (9,409 vertices) nearly all of it is the exact point-to-surface distances
of Table 2 and retargeting (:class:`~fitface.evaluation.sparse_reconstruction.SurfaceDistance`,
about 0.3 s per fitted mesh on one busy core, more for meshes far from the ground truth such as
an untrained generator's): ``2 captures + 3 retarget_pairs`` of them per call, the fits
themselves well under a second. ``__call__(model, parts=...)`` runs a subset of the parts (e.g. the
seconds-long ``coefficients``, ``diversity``, ``specificity``) between full proxy calls.

Use::

    from fitface.evaluation.proxy import ProxyEvaluator
    proxy = ProxyEvaluator("data/ict", ict_source="ict_face_light.npz", log=print)  # ~30-50 s, once
    row = proxy(trainer.build_face_model(step)).as_row()                         # a flat dict

Reference values (computed once at set-up, model-independent; ``ref_*`` keys of the row):
    * ``ref_div``, ``ref_div_identity``, ``ref_div_expression``: the training split's diversity
      from its labels (:func:`fitface.evaluation.report.training_diversity`, the "Training data" row
      of Table 1), ``div_pairs`` pairs.
    * ``ref_no_transfer``: over the proxy's retargeting pairs (A = (a, x), B = (b, y), GT =
      (b, x)), the surface RMSE of the *ground-truth* mesh of B to the surface of GT (b, x): what
      a model that fits B perfectly and transfers nothing scores. A model's own
      ``retarget_no_transfer`` is this plus its fitting error; ``retarget`` below it means the
      expression moved.
    * ``ref_dense_pasted``: over the dense pairs, B's true neutral plus A's exact displacement
      against B's truth (A's whole displacement moved unchanged). ``ref_dense_no_transfer``:
      B's true neutral against its truth.

The row (:meth:`ProxyResult.as_row`), lengths in mm:

* ``coef_ratio_identity``, ``coef_ratio_expression``: ground-truth coefficient decoupling ratios
  (dimensionless; 0 = faces sharing the factor's code have identical generating coefficients,
  1 = sharing the code makes them no closer than unrelated faces).
* ``t2_surface_<lam>`` (``<lam>`` as ``format(lam, "g")``: ``t2_surface_0.01``,
  ``t2_surface_10``): Table 2, mean over the captures of the surface RMSE of the landmark fit.
* ``retarget``, ``retarget_no_transfer``, ``retarget_direct_fit``: retargeting surface RMSE
  (mean over pairs) of the retargeted mesh, of B's own fit, and of a fit of (b, x) itself (the
  floor), all against GT (b, x).
* ``div``, ``div_identity``, ``div_expression``: diversity (mean vertex distance of pairs with
  independent codes / a shared identity code / a shared expression code).
* ``specificity``: mean distance of generated samples to their nearest training face (among
  the reference subset: higher than the full evaluation's exact value over all training faces).
* ``dense_retarget``, ``dense_direct_fit``, ``dense_neutral_fit``: dense retargeting vertex RMSE
  (mean over the dense pairs) of ``G(z_id(B), z_exp(A))``, of the dense fit of the truth (what the
  model can represent) and of B's neutral fit. Below ``ref_dense_pasted``: the model transfers
  an expression better than moving A's exact displacement would.
* ``seconds``: wall time of the call.
* ``ref_div``, ``ref_div_identity``, ``ref_div_expression``, ``ref_no_transfer``,
  ``ref_dense_pasted``, ``ref_dense_no_transfer``: above.

Every key of :attr:`ProxyEvaluator.columns` is always present; a part that cannot run (no
generating coefficients, no test captures, a model without that factor) is NaN in the row and
its reason is in :attr:`ProxyResult.skipped` (set-up reasons also in
:attr:`ProxyEvaluator.skipped`).

Convention:
    * Deterministic: every draw is seeded from ``ProxyConfig.seed`` (the same codes, initial fit
      codes and pairs at every call), so the same model gives the same numbers (same thread
      count). The global torch and numpy RNG states and torch's thread settings are left alone.
    * The model is read, never modified: its weights are copied into a numpy decoder
      (:func:`fit_decoder`) for the fits; decoding for the other parts runs under ``no_grad``.
    * The model must be on the dataset's topology (same vertex count and faces); model and
      dataset units may differ (lengths are converted; the row is in mm).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fitface.errors import one_line

#: Expressions per test identity of :func:`fitface.evaluation.heldout_captures.build_test_captures`.
EXPRESSIONS_PER_IDENTITY = 12
#: Factors whose decoupling / diversity the row reports.
FACTORS = ("identity", "expression")
#: Decoded samples per chunk (specificity).
DECODE_CHUNK = 100
#: The parts of a proxy evaluation, in the order they run.
PARTS = ("coefficients", "diversity", "specificity", "table2", "retarget", "dense")


@dataclass
class ProxyConfig:
    """Counts of :class:`ProxyEvaluator` (defaults sized for seconds on the ICT set).

    Attributes:
        captures: Table 2 captures. ``ceil(captures / 12)`` (at least 2) test identities are
            posed with the 12 extreme expressions
            (:func:`fitface.evaluation.heldout_captures.build_test_captures`) and ``captures`` of
            that identity-major grid are taken evenly spaced (12 of 2 x 12: 6 expressions of
            each identity, every expression once; 24: all of them).
            Retargeting uses the whole grid.
        lambdas: Table 2 weights of eq. 13.
        retarget_pairs: retargeting pairs (lambda 0.01, the evaluation's).
        coef_n, coef_m: anchors and companions of the coefficient decoupling ratio.
        div_pairs: pairs per diversity value (model and training data).
        spec_samples: generated samples of the specificity.
        spec_max_train: training faces of the specificity reference (evenly spaced over the
            training split; 0 = all of them, exact like the full evaluation but slower).
        steps: Adam steps per fit (Table 2 and retargeting). The evaluation's 400: the fits cost
            well under a second either way (the surface distances are the time), and 200 steps
            leave the 3DMM's lambda-0.01 fits unconverged (Table 2 2.22 mm instead of 2.01).
        seed: seeds every draw.
        parts: the parts to run (:data:`PARTS`); the others are neither set up nor run.
        dense_identities: fresh ICT identities of the dense retargeting part (a small fixed set:
            3 give 36 ordered pairs, 24 dense fits; see
            :mod:`fitface.evaluation.dense_transfer`; the full evaluation uses 6).
    """

    captures: int = 12
    lambdas: tuple[float, ...] = (0.01, 10.0)
    retarget_pairs: int = 10
    coef_n: int = 20
    coef_m: int = 20
    div_pairs: int = 500
    spec_samples: int = 100
    spec_max_train: int = 2000
    steps: int = 400
    seed: int = 0
    parts: tuple[str, ...] = PARTS
    dense_identities: int = 3

    def validate(self) -> None:
        """Raises ValueError naming the first bad field."""
        unknown = [p for p in self.parts if p not in PARTS]
        if unknown or isinstance(self.parts, str):
            raise ValueError(f"parts: unknown part(s) {unknown or self.parts!r}; known: {', '.join(PARTS)}")
        for name in ("captures", "retarget_pairs", "div_pairs", "spec_samples", "steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {v!r}")
        v = self.dense_identities
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 2:
            raise ValueError(f"dense_identities: expected an integer >= 2, got {v!r}")
        if isinstance(self.coef_n, bool) or not isinstance(self.coef_n, (int, np.integer)) or self.coef_n < 2:
            raise ValueError(f"coef_n: expected an integer >= 2, got {self.coef_n!r}")
        if isinstance(self.coef_m, bool) or not isinstance(self.coef_m, (int, np.integer)) or self.coef_m < 1:
            raise ValueError(f"coef_m: expected an integer >= 1, got {self.coef_m!r}")
        sm = self.spec_max_train
        if isinstance(sm, bool) or not isinstance(sm, (int, np.integer)) or sm < 0:
            raise ValueError(f"spec_max_train: expected an integer >= 0 (0 = all), got {sm!r}")
        lams = tuple(self.lambdas)
        if not lams or any(isinstance(x, bool) or not isinstance(x, (int, float, np.floating, np.integer))
                           or not math.isfinite(x) or x < 0 for x in lams):
            raise ValueError(f"lambdas: expected one or more finite numbers >= 0, got {self.lambdas!r}")
        if len({float(x) for x in lams}) != len(lams):
            raise ValueError(f"lambdas: duplicate values in {self.lambdas!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed: expected an integer >= 0, got {self.seed!r}")


def t2_key(lam: float) -> str:
    """Row key of the Table 2 value at weight ``lam``: ``t2_surface_0.01``, ``t2_surface_10``."""
    return f"t2_surface_{float(lam):g}"


def row_columns(lambdas) -> list[str]:
    """Every key of :meth:`ProxyResult.as_row` for these Table 2 weights, in a fixed order."""
    return (["coef_ratio_identity", "coef_ratio_expression"] + [t2_key(x) for x in lambdas]
            + ["retarget", "retarget_no_transfer", "retarget_direct_fit", "div", "div_identity",
               "div_expression", "specificity", "dense_retarget", "dense_direct_fit", "dense_neutral_fit",
               "seconds", "ref_div", "ref_div_identity", "ref_div_expression", "ref_no_transfer",
               "ref_dense_pasted", "ref_dense_no_transfer"])


@dataclass
class ProxyResult:
    """One proxy evaluation of one model.

    Attributes:
        values: row key -> value (mm, or dimensionless for the ratios) of the parts that ran.
        reference: ``ref_*`` key -> value (mm), the evaluator's set-up reference values.
        skipped: part (``"coefficients"``, ``"coef_identity"``, ``"table2"``, ``"retarget"``,
            ``"specificity"``, ...) -> why it did not run.
        seconds: part -> wall time (s) of this call; ``"total"`` the whole call.
        columns: the row's keys (:attr:`ProxyEvaluator.columns`).
        details: extra numbers not in the row (regression R^2 per factor, Table 2 vertex RMSE,
            landmark RMS, number of captures and pairs).
    """

    values: dict[str, float]
    reference: dict[str, float]
    skipped: dict[str, str]
    seconds: dict[str, float]
    columns: list[str]
    details: dict[str, Any] = field(default_factory=dict)

    def as_row(self) -> dict[str, float]:
        """Flat ``{key: float}`` over :attr:`columns` (NaN where a part was skipped); see the
        module docstring for the keys and units."""
        merged = {**self.values, **self.reference, "seconds": self.seconds.get("total", float("nan"))}
        return {k: float(merged.get(k, float("nan"))) for k in self.columns}


# ------------------------------------------------------------------------------ models
def fit_decoder(model, dtype: Any = np.float32):
    """The numpy decoder of an in-memory FaceModel (what :func:`fitface.api.load_fit_model`
    gives for its model file), without writing a file.

    The generator's weights are copied (the decoder does not follow later training steps).

    Args:
        model: a :class:`fitface.models.face_model.FaceModel` with a GAN
            (:class:`~fitface.models.generator.Generator`, kind ``"mlp"``) or linear
            (:class:`~fitface.models.linear.LinearGenerator`, kind ``"linear"``) or multilinear
            (:class:`~fitface.models.multilinear.MultilinearGenerator`, kind ``"multilinear"``) or CoMA
            (:class:`~fitface.models.coma_generator.ComaGenerator`, kind ``"coma"``) generator, on
            any device and float dtype.
        dtype: computation dtype of the decoder (float32 as model files load; float64 for tests).

    Returns:
        :class:`fitface.fitting.decoder.MLPDecoder`, :class:`~fitface.fitting.decoder.LinearDecoder`
        or :class:`~fitface.fitting.decoder.MultilinearDecoder` or
        :class:`~fitface.fitting.coma_decoder.ComaDecoder`
        with the model's template, faces, layout, unit and landmark sets; ``model_id`` is
        ``"in-memory"`` unless the model was loaded from / saved to a file.

    Raises:
        ValueError: another generator kind.
    """
    import torch

    from fitface.fitting.decoder import LinearDecoder, MLPDecoder, MultilinearDecoder

    wide = np.dtype(dtype) == np.float64

    def arr(t) -> np.ndarray:  # a copy on the CPU, in the decoder's dtype
        return np.array(t.detach().to("cpu", torch.float64 if wide else torch.float32).numpy(), dtype=dtype)

    g = model.generator
    kind = model.generator_kind
    # the file's id when the model was loaded from / saved to one (FaceModel.model_id would
    # otherwise hash every weight); the id only has to match the codes of this decoder
    common = dict(unit=model.unit, landmark_sets=dict(model.landmark_sets),
                  model_id=getattr(model, "_model_id", None) or "in-memory", dtype=dtype)
    template = model.template.detach().cpu().double().numpy()
    faces = model.faces.detach().cpu().numpy()
    if kind == "linear":
        return LinearDecoder(template, arr(g.basis), faces, model.layout, offset=arr(g.offset), **common)
    if kind == "multilinear":
        return MultilinearDecoder(template, arr(g.core), faces, model.layout, offset=arr(g.offset),
                                  id_mean=arr(g.id_mean), id_scale=arr(g.id_scale), exp_mean=arr(g.exp_mean),
                                  exp_scale=arr(g.exp_scale), **common)
    if kind == "coma":
        from fitface.fitting.coma_decoder import ComaDecoder, ComaNetwork

        state = {f"generator.{k}": arr(v) for k, v in g.state_dict().items() if k.startswith("coma.")}
        state.update({f"generator.{k}": v for k, v in g.exact_tensors().items()})
        net = ComaNetwork.from_tensors(state, g.coma.order)
        return ComaDecoder(template, faces, model.layout, arr(g.identity_basis), net, offset=arr(g.offset),
                           exp_mean=arr(g.exp_mean), exp_scale=arr(g.exp_scale), **common)
    if kind == "mlp" and hasattr(g, "fc") and hasattr(g, "out"):
        return MLPDecoder(arr(g.fc.weight), arr(g.fc.bias), arr(g.out.weight), arr(g.out.bias), template, faces,
                          model.layout, negative_slope=float(g.negative_slope), **common)
    raise ValueError(f"model: generator kind {kind!r} ({type(g).__name__}) has no numpy decoder "
                     f"(known: 'mlp', 'linear', 'multilinear', 'coma')")


# ------------------------------------------------------------------------------ the evaluator
class ProxyEvaluator:
    """Set up once (regressors, test captures, training-face reference), call per model.

    Args:
        dataset_path: the dataset folder (``fitface data ict`` / ``data synthetic`` / ``import``).
        ict_source: for ICT datasets, the ICT source model their test captures are posed from
            (``ict_face_light.npz``); without it Table 2 and retargeting are skipped.
        config: :class:`ProxyConfig`.
        log: optional line logger (set-up summary and one line per call).

    Attributes:
        dataset: the loaded :class:`fitface.data.format.Dataset`.
        config: the config.
        columns: the keys of every row (:func:`row_columns`).
        reference: the ``ref_*`` values (mm; NaN when not computable).
        skipped: set-up part -> reason it is skipped at every call.
        setup_seconds: set-up part -> wall time (s).
        captures: the Table 2 :class:`fitface.evaluation.heldout_captures.TestCaptures` (None when
            skipped);
            ``retarget_captures``: those of retargeting (the whole posed grid; None when skipped).

    Raises:
        ValueError: a bad config; InputError (a ValueError): an unreadable dataset.
    """

    def __init__(self, dataset_path: str | os.PathLike, ict_source: str | os.PathLike | None = None,
                 config: ProxyConfig | None = None, log: Callable[[str], None] | None = None):
        from fitface.data.format import load_dataset
        from fitface.units import scale_between

        self.config = ProxyConfig() if config is None else config
        self.config.validate()
        cfg = self.config
        self._say = log or (lambda msg: None)
        self.dataset_path = Path(dataset_path)
        self.dataset = ds = load_dataset(dataset_path)
        self.columns = row_columns(cfg.lambdas)
        self.skipped: dict[str, str] = {p: "not requested (ProxyConfig.parts)" for p in PARTS if p not in cfg.parts}
        self.setup_seconds: dict[str, float] = {}
        self.reference = {k: float("nan") for k in ("ref_div", "ref_div_identity", "ref_div_expression",
                                                    "ref_no_transfer", "ref_dense_pasted",
                                                    "ref_dense_no_transfer")}
        self.dense_truth = None
        self._ds_to_mm = scale_between(ds.unit, "mm")
        self.regressors: dict[str, Any] = {}
        self._nearest = None
        self.captures = self.retarget_captures = None
        t_all = time.perf_counter()
        if "coefficients" in cfg.parts:
            self._setup_regressors()
        if len(ds.indices("train")) < 2:
            self.skipped.setdefault("specificity", "the dataset's training split has fewer than 2 faces")
        else:
            if "specificity" in cfg.parts:
                self._setup_specificity()
            if "diversity" in cfg.parts:
                from fitface.evaluation.report import training_diversity

                t0 = time.perf_counter()
                td = training_diversity(ds, int(cfg.div_pairs), int(cfg.seed))
                for k, key in (("global", "ref_div"), ("shared_identity", "ref_div_identity"),
                               ("shared_expression", "ref_div_expression")):
                    if k in td:
                        self.reference[key] = float(td[k])
                self.setup_seconds["training_diversity"] = time.perf_counter() - t0
        if "table2" in cfg.parts or "retarget" in cfg.parts:
            self._setup_captures(ict_source)
        if "dense" in cfg.parts:
            self._setup_dense(ict_source)
        self.setup_seconds["total"] = time.perf_counter() - t_all
        self._say(f"proxy evaluation set up in {self.setup_seconds['total']:.1f} s"
                  + "".join(f"; {k} skipped: {v}" for k, v in self.skipped.items()))

    # ------------------------------------------------------------------ set-up parts
    def _setup_regressors(self) -> None:
        from fitface.evaluation.decoupling import CoefficientRegressor

        t0 = time.perf_counter()
        ds = self.dataset
        for f in FACTORS:
            if f not in ds.coefficients:
                self.skipped[f"coef_{f}"] = (f"the dataset has no generating coefficients for {f!r} "
                                             f"(it has: {', '.join(ds.coefficients) or 'none'})")
                continue
            try:
                self.regressors[f] = CoefficientRegressor(ds, f, seed=int(self.config.seed))
            except ValueError as exc:
                self.skipped[f"coef_{f}"] = f"no {f} coefficient regression: {one_line(exc)}"
        self.setup_seconds["regressors"] = time.perf_counter() - t0

    def _setup_specificity(self) -> None:
        import torch

        from fitface.evaluation.diversity_specificity import NearestFace, vertex_groups

        t0 = time.perf_counter()
        ds, tr = self.dataset, self.dataset.indices("train")
        m = len(tr) if self.config.spec_max_train == 0 else min(len(tr), int(self.config.spec_max_train))
        pick = tr[np.unique(np.linspace(0, len(tr) - 1, m).round().astype(np.int64))]
        ref = torch.from_numpy(np.ascontiguousarray(ds.read(pick), dtype=np.float32))
        self._nearest = NearestFace(ref, vertex_groups(ds.template_vertices))
        self.setup_seconds["specificity_reference"] = time.perf_counter() - t0

    def _setup_captures(self, ict_source) -> None:
        from fitface.errors import InputError
        from fitface.evaluation.heldout_captures import build_test_captures

        cfg = self.config
        t0 = time.perf_counter()
        ids = max(2, math.ceil(int(cfg.captures) / EXPRESSIONS_PER_IDENTITY))
        try:
            caps = build_test_captures(self.dataset, ids, ict_source)
        except InputError as exc:
            reason = f"no ground-truth test captures: {one_line(exc)}"
            for p in ("table2", "retarget"):
                self.skipped.setdefault(p, reason)
            return
        self.setup_seconds["test_captures"] = time.perf_counter() - t0
        if "table2" in cfg.parts:
            rows = np.unique(np.linspace(0, len(caps) - 1, min(int(cfg.captures), len(caps))).round().astype(np.int64))
            self.captures = caps.subset(rows)
        if "retarget" in cfg.parts:
            t0 = time.perf_counter()
            try:
                self.reference["ref_no_transfer"] = self._no_transfer_reference(caps)
                self.retarget_captures = caps
            except ValueError as exc:
                self.skipped["retarget"] = f"no retargeting pairs: {one_line(exc)}"
            self.setup_seconds["no_transfer_reference"] = time.perf_counter() - t0

    def _setup_dense(self, ict_source) -> None:
        from fitface.errors import InputError
        from fitface.evaluation.dense_transfer import (
            DenseConfig,
            dense_pairs,
            dense_truth_for_dataset,
            no_transfer_errors,
            pasted_errors,
        )

        t0 = time.perf_counter()
        self._dense_cfg = DenseConfig(identities=int(self.config.dense_identities), samples_per_identity=0,
                                      seed=int(self.config.seed))
        try:
            truth = dense_truth_for_dataset(self.dataset, ict_source, self._dense_cfg)
        except InputError as exc:
            self.skipped["dense"] = f"no dense truth: {one_line(exc)}"
            return
        self.dense_truth = truth
        pairs = dense_pairs(len(truth.neutral))
        self.reference["ref_dense_pasted"] = float(pasted_errors(truth, pairs).mean())
        self.reference["ref_dense_no_transfer"] = float(no_transfer_errors(truth, pairs).mean())
        self.setup_seconds["dense_truth"] = time.perf_counter() - t0

    def _no_transfer_reference(self, caps) -> float:
        """Mean over the retargeting pairs of the surface RMSE (mm) of GT B to GT (b, x)."""
        from fitface.evaluation.retargeting import draw_pairs
        from fitface.evaluation.sparse_reconstruction import surface_rmse

        pairs = draw_pairs(caps, int(self.config.retarget_pairs), int(self.config.seed))
        d = [surface_rmse(caps.vertices[ib], caps.vertices[ig], caps.faces) for _, ib, ig in pairs]
        return float(np.mean(d)) * self._ds_to_mm

    # ------------------------------------------------------------------ one model
    def __call__(self, model, parts: tuple[str, ...] | None = None) -> ProxyResult:
        """Proxy evaluation of one model (see the module docstring).

        Args:
            model: a :class:`fitface.models.face_model.FaceModel` on the dataset's topology
                (e.g. ``Trainer.build_face_model(step)``: the trainer's generator, float32, CPU).
            parts: run only these of the configured parts (None: all of them), e.g.
                ``("coefficients", "diversity", "specificity")`` for a call of a few seconds
                between full proxy calls; the others are NaN with reason "not requested".

        Returns:
            :class:`ProxyResult`.

        Raises:
            ValueError: the model is on another topology, has a generator with no numpy decoder,
                or ``parts`` names a part that is unknown or was not set up.
        """
        cfg, ds = self.config, self.dataset
        if isinstance(parts, str):
            raise ValueError(f"parts: expected a tuple of part names, got the string {parts!r}")
        run = tuple(cfg.parts) if parts is None else tuple(parts)
        bad = [p for p in run if p not in cfg.parts]
        if bad:
            raise ValueError(f"parts: {bad!r} not among the configured parts ({', '.join(cfg.parts)})")
        t_all = time.perf_counter()
        if model.num_vertices != ds.num_vertices or not np.array_equal(
                model.faces.detach().cpu().numpy(), np.asarray(ds.faces)):
            raise ValueError(f"model: {model.num_vertices} vertices, the dataset {ds.num_vertices} (or other faces): "
                             "a model can only be evaluated on the topology it was trained on")
        out = ProxyResult({}, dict(self.reference), dict(self.skipped), {}, list(self.columns), {})
        for p in PARTS:
            if p in cfg.parts and p not in run:
                out.skipped[p] = "not requested (parts of this call)"
        if "coefficients" in run:
            self._coefficients(model, out)
        if "diversity" in run:
            self._diversity(model, out)
        if "specificity" in run and self._nearest is not None:
            self._specificity(model, out)
        want2 = "table2" in run and self.captures is not None
        wantr = "retarget" in run and self.retarget_captures is not None
        wantd = "dense" in run and self.dense_truth is not None
        if want2 or wantr or wantd:
            t0 = time.perf_counter()
            dec = fit_decoder(model)
            out.seconds["decoder"] = time.perf_counter() - t0
            if want2:
                self._table2(dec, out)
            if wantr:
                self._retarget(dec, out)
            if wantd:
                self._dense(dec, out)
        out.seconds["total"] = time.perf_counter() - t_all
        row = out.as_row()
        self._say("proxy: " + ", ".join(f"{k} {row[k]:.3f}" for k in self.columns
                                        if not k.startswith("ref_") and math.isfinite(row[k])))
        return out

    # ------------------------------------------------------------------ call parts
    def _coefficients(self, model, out: ProxyResult) -> None:
        from fitface.evaluation.decoupling import coefficient_decoupling

        cfg = self.config
        t0 = time.perf_counter()
        for f, reg in self.regressors.items():
            if f not in model.layout.factors:
                out.skipped[f"coef_{f}"] = f"the model has no {f} block"
                continue
            r = coefficient_decoupling(model, self.dataset_path, f, int(cfg.coef_n), int(cfg.coef_m), int(cfg.seed),
                                       regressor=reg)
            out.values[f"coef_ratio_{f}"] = r.ratio
            out.details[f"coef_r2_{f}"] = r.r2
        out.seconds["coefficients"] = time.perf_counter() - t0

    def _diversity(self, model, out: ProxyResult) -> None:
        import torch

        from fitface.evaluation.diversity_specificity import diversity
        from fitface.units import scale_between

        t0 = time.perf_counter()
        to_mm = scale_between(model.unit, "mm")

        @torch.no_grad()
        def decode_mm(z):
            p = model.template
            return model.decode(z.to(p.device, p.dtype)).float().cpu() * to_mm

        div = diversity(decode_mm, model.layout, int(self.config.div_pairs),
                        torch.Generator().manual_seed(int(self.config.seed)))
        for k, key in (("global", "div"), ("shared_identity", "div_identity"), ("shared_expression", "div_expression")):
            if k in div:
                out.values[key] = div[k]
            else:
                out.skipped[key] = f"the model has no {k.removeprefix('shared_')} block"
        out.seconds["diversity"] = time.perf_counter() - t0

    def _specificity(self, model, out: ProxyResult) -> None:
        import torch

        from fitface.units import scale_between

        t0 = time.perf_counter()
        to_ds = scale_between(model.unit, self.dataset.unit)
        g = torch.Generator().manual_seed(int(self.config.seed) + 1)
        z = torch.randn(int(self.config.spec_samples), model.layout.dim, generator=g)
        p = model.template
        with torch.no_grad():
            samples = torch.cat([model.decode(z[i:i + DECODE_CHUNK].to(p.device, p.dtype)).float().cpu() * to_ds
                                 for i in range(0, len(z), DECODE_CHUNK)])
        d, _ = self._nearest(samples)
        out.values["specificity"] = float(d.mean()) * self._ds_to_mm
        out.seconds["specificity"] = time.perf_counter() - t0

    def _table2(self, dec, out: ProxyResult) -> None:
        from fitface.evaluation.sparse_reconstruction import SparseConfig, run_sparse_reconstruction

        cfg = self.config
        t0 = time.perf_counter()
        sparse = run_sparse_reconstruction(
            {"model": dec}, self.captures,
            SparseConfig(lambdas=tuple(float(x) for x in cfg.lambdas), steps=int(cfg.steps), seed=int(cfg.seed),
                         examples=0))
        for lam, e in sparse.errors["model"].items():
            out.values[t2_key(lam)] = float(e.surface_rmse.mean())
            out.details[f"t2_vertex_{lam:g}"] = float(e.vertex_rmse.mean())
            out.details[f"t2_landmarks_{lam:g}"] = float(e.landmark_rms.mean())
        out.details["t2_captures"] = sparse.num_captures
        out.seconds["table2"] = time.perf_counter() - t0

    def _retarget(self, dec, out: ProxyResult) -> None:
        from fitface.evaluation.retargeting import RetargetConfig, run_retargeting

        cfg = self.config
        t0 = time.perf_counter()
        rt = run_retargeting({"model": dec}, self.retarget_captures,
                             RetargetConfig(pairs=int(cfg.retarget_pairs), steps=int(cfg.steps), seed=int(cfg.seed),
                                            examples=0))
        s = rt.errors["model"].summary()
        out.values["retarget"] = s["retarget_surface_rmse_mm"]
        out.values["retarget_no_transfer"] = s["no_transfer_surface_rmse_mm"]
        out.values["retarget_direct_fit"] = s["direct_fit_surface_rmse_mm"]
        out.details["retarget_pairs"] = len(rt.pairs)
        out.seconds["retarget"] = time.perf_counter() - t0

    def _dense(self, dec, out: ProxyResult) -> None:
        from fitface.evaluation.dense_transfer import dense_model_errors

        t0 = time.perf_counter()
        err = dense_model_errors(dec, self.dense_truth, self._dense_cfg)
        for row, key in (("retarget", "dense_retarget"), ("direct_fit", "dense_direct_fit"),
                         ("neutral_fit", "dense_neutral_fit")):
            out.values[key] = float(err.pairs[row].mean())
        out.details["dense_pairs"] = int(len(err.pairs["retarget"]))
        out.details["dense_iterations"] = err.iterations.get("pairs")
        out.seconds["dense"] = time.perf_counter() - t0
