"""The evaluation report (``fitface evaluate``): Table 1, Table 2, retargeting, figures.

* **Table 1** (paper §5.3-5.4) per model: ``Dec-Id``, ``Dec-Exp`` (embedder-judged decoupling,
  percent, :func:`fitface.evaluation.decoupling.decoupling_score`; n = m = 100), ``Div``,
  ``Div-Id``, ``Div-Exp`` (mean vertex distance over pairs of generated meshes: independent
  codes, pairs sharing the identity code, pairs sharing the expression code; 10,000 pairs each,
  :func:`fitface.evaluation.diversity_specificity.diversity`) and ``Sp`` (specificity: mean over
  1,000 samples of the mean vertex distance to the nearest training-split face, exact,
  :class:`fitface.evaluation.diversity_specificity.NearestFace`). A "training data" row gives
  the diversity of the training split from its labels (pairs of random samples / same identity
  label / same expression label), as the paper does. Datasets with generating coefficients also
  get the ground-truth coefficient decoupling ratios
  (:func:`fitface.evaluation.decoupling.coefficient_decoupling`; 0 = perfectly decoupled, 1 = not
  at all; beyond the paper).
* **Table 2** (§5.5): :mod:`fitface.evaluation.sparse_reconstruction`; again with landmark
  noise (1.5 mm) and a random rigid motion, the paper's own condition of hand-placed landmarks
  on scans, where an unregularised fit overfits (part ``table2_noisy``).
* **Retargeting** with ground truth: :mod:`fitface.evaluation.retargeting`.
* **Dense retargeting and reconstruction** on fresh ICT identities (every vertex fitted, so no
  landmark fitting error hides how each model transfers an expression):
  :mod:`fitface.evaluation.dense_transfer` (part ``dense``; ICT datasets with ``ict_source``).
* **Figures** (``figures/*.png``): per model a sample grid like the paper's Fig. 3 (rows: random
  samples; a shared expression code with random identities; a shared identity code with
  random expressions); per-vertex error heatmaps of Table 2 (mean surface distance per vertex
  over the test captures, on the dataset template, one tile per model and lambda); examples of
  Table 2 fits and of retargeting coloured by their per-vertex error.

Convention:
    * Distances in mm (model and dataset units are converted). Error colours: blue (0) -> cyan
      -> yellow -> red (>= the stated full scale), :func:`error_colors`.
    * Decoupling needs the dataset's trained embedders (``DATASET/embedders/``); without them
      the Dec- columns are left empty with a note, unless ``train_embedders=True`` trains them
      first (minutes on a CPU).
    * Files are written atomically; ``report.json`` holds every number, ``report.md`` the tables.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fitface.errors import one_line
from fitface.evaluation.dense_transfer import DenseConfig
from fitface.preview import error_colors, nice_scale  # noqa: F401 (part of this module's API)

#: Paper settings of Table 1.
SPECIFICITY_SAMPLES = 1000
DIVERSITY_PAIRS = 10000
DECOUPLING_N = 100
DECOUPLING_M = 100
#: Side of each rendered tile in the figures (pixels).
TILE = 160
#: Background of the rendered tiles (RGB).
TILE_BACKGROUND = (30, 30, 34)
#: Columns of the sample grids.
GRID_COLUMNS = 6


@dataclass
class EvaluationOptions:
    """Settings of :func:`run_evaluation` (CLI ``fitface evaluate``).

    Attributes:
        n_samples: specificity samples (paper 1,000). pairs: diversity pairs (paper 10,000).
        decoupling_n, decoupling_m: anchors and companions of the decoupling score (100, 100).
        lambdas: Table 2 weights. test_captures: Table 2 captures (None: all).
        retarget_pairs: retargeting pairs. dense_retarget: also a dense (all-vertex) retargeting run
            on the held-out test captures.
        skip: parts to skip among :data:`PARTS`: ``"table1"``, ``"table2"``, ``"table2_noisy"`` (Table 2
            with landmark noise ``noisy_noise_mm`` and a random rigid motion: the paper's own
            condition of hand-placed landmarks), ``"retarget"``, ``"dense"`` (dense retargeting and
            dense reconstruction on fresh ICT identities, :mod:`fitface.evaluation.dense_transfer`;
            needs ``ict_source`` and a model on the ICT face area, else it is skipped with a note).
        train_embedders: train the dataset's decoupling embedders when missing.
        seed: seeds every random draw. steps: Adam steps of the fits.
        similarity, noise_mm: Table 2 variants (see :class:`SparseConfig`).
        ict_source: the ICT source model for ICT datasets' test captures.
        figures: write figures.
    """

    n_samples: int = SPECIFICITY_SAMPLES
    pairs: int = DIVERSITY_PAIRS
    decoupling_n: int = DECOUPLING_N
    decoupling_m: int = DECOUPLING_M
    lambdas: tuple[float, ...] = (0.0, 0.01, 10.0)
    test_captures: int | None = 144
    retarget_pairs: int = 100
    dense_retarget: bool = False
    skip: tuple[str, ...] = ()
    train_embedders: bool = False
    seed: int = 0
    steps: int = 400
    similarity: bool = False
    noise_mm: float = 0.0
    ict_source: str | None = None
    figures: bool = True
    noisy_noise_mm: float = 1.5
    dense: DenseConfig = field(default_factory=DenseConfig)

    def to_json(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v.to_json() if hasattr(v, "to_json") else v)
                for k, v in self.__dict__.items()}


#: The parts of an evaluation, in the order they run.
PARTS = ("table1", "table2", "table2_noisy", "retarget", "dense")


@dataclass
class ModelEntry:
    """A model under evaluation: display name, file, id, generator kind."""

    name: str
    path: Path
    model_id: str
    kind: str


# ------------------------------------------------------------------------------ helpers
def model_entries(paths) -> list[ModelEntry]:
    """Display names for model files: ``3DMM`` for linear models, ``MAE`` for multilinear ones,
    ``CoMA`` for CoMA ones, else the file stem (or the
    run folder's name for ``model.safetensors``), made unique with a suffix.

    Raises:
        InputError: a path that is not a fitface model file.
    """
    from fitface.models.model_file import file_model_id, generator_kind, read_metadata

    out, seen = [], {}
    for p in paths:
        p = Path(p)
        doc = read_metadata(p)
        kind = generator_kind(doc)
        stem = p.parent.name if p.stem in ("model", "final", "last") and p.parent.name else p.stem
        base = {"linear": "3DMM", "multilinear": "MAE", "coma": "CoMA"}.get(kind, stem)
        seen[base] = seen.get(base, 0) + 1
        name = base if seen[base] == 1 else f"{base}-{seen[base]}"
        out.append(ModelEntry(name, p, file_model_id(p.read_bytes()), kind))
    return out


def render_tile(vertices, faces, camera, colors=None) -> np.ndarray:
    """(TILE, TILE, 3) uint8 shaded render, optionally with per-vertex colours (V, 3) in [0, 1]."""
    from fitface.geometry.render import render_shaded

    return render_shaded(vertices, faces, camera=camera, vertex_colors=colors, background=TILE_BACKGROUND).image


def _camera(template):
    from fitface.geometry.camera import frame_mesh

    return frame_mesh(np.asarray(template, dtype=np.float64), TILE, margin=0.08)


# ------------------------------------------------------------------------------ Table 1
def training_diversity(ds, num_pairs: int, seed: int) -> dict[str, float]:
    """Diversity of the training split from its labels (mm): ``global`` (random pairs),
    ``shared_identity`` (pairs with the same identity label), ``shared_expression`` (pairs with
    the same expression label; labeled samples only). Pairs are two different samples."""
    from fitface.units import scale_between

    rng = np.random.default_rng([int(seed), 21])
    tr = ds.indices("train")
    to_mm = scale_between(ds.unit, "mm")

    def mvd(ia, ib):
        tot = 0.0
        for s in range(0, len(ia), 500):
            a = ds.read(ia[s:s + 500]).astype(np.float64)
            b = ds.read(ib[s:s + 500]).astype(np.float64)
            tot += float(np.linalg.norm(a - b, axis=-1).mean(-1).sum())
        return tot / max(len(ia), 1) * to_mm

    def same_label_pairs(labels):
        ok = labels >= 0
        idx, lab = tr[ok], labels[ok]
        groups = {int(g): idx[lab == g] for g in np.unique(lab)}
        groups = {g: m for g, m in groups.items() if len(m) >= 2}
        if not groups:
            return None
        keys = np.array(sorted(groups))
        w = np.array([len(groups[g]) for g in keys], dtype=np.float64)
        pick = rng.choice(keys, size=num_pairs, p=w / w.sum())
        ia, ib = np.empty(num_pairs, np.int64), np.empty(num_pairs, np.int64)
        for k, g in enumerate(pick):
            ia[k], ib[k] = rng.choice(groups[int(g)], 2, replace=False)
        return mvd(ia, ib)

    out = {}
    ia, ib = rng.choice(tr, num_pairs), rng.choice(tr, num_pairs)
    same = ia == ib
    ib[same] = tr[(np.searchsorted(tr, ib[same]) + 1) % len(tr)]
    out["global"] = mvd(ia, ib)
    for f in ("identity", "expression"):
        if f in ds.factor_names:
            v = same_label_pairs(ds.label(f)[tr])
            if v is not None:
                out[f"shared_{f}"] = v
    return out


def table1_row(entry: ModelEntry, ds, dataset_path, opts: EvaluationOptions, nearest, log,
               progress=None) -> dict[str, Any]:
    """Table 1 numbers of one model (see the module docstring); missing parts get a note.
    ``progress(label)`` returns one stage's ``(done, total)`` callback (a progress bar), if given."""
    import torch

    from fitface.evaluation.diversity_specificity import diversity
    from fitface.models.model_file import load_model
    from fitface.units import scale_between

    model = load_model(entry.path)
    row: dict[str, Any] = {"notes": []}
    to_mm = scale_between(model.unit, "mm")
    to_ds = scale_between(model.unit, ds.unit)
    t0 = time.perf_counter()

    @torch.no_grad()
    def decode(z):
        return model.decode(z) * to_mm

    bar = progress or (lambda label: None)
    div = diversity(decode, model.layout, int(opts.pairs), torch.Generator().manual_seed(int(opts.seed)),
                    progress=bar(f"table 1: {entry.name}: diversity"))
    row["div"] = div.get("global")
    row["div_id"] = div.get("shared_identity")
    row["div_exp"] = div.get("shared_expression")
    row["diversity_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(int(opts.seed) + 1)
    z = torch.randn(int(opts.n_samples), model.layout.dim, generator=g)
    spec = bar(f"table 1: {entry.name}: specificity samples")
    parts = []
    with torch.no_grad():
        for i in range(0, len(z), 100):
            parts.append(model.decode(z[i:i + 100]) * to_ds)
            if spec is not None:
                spec(min(i + 100, len(z)), len(z))
    samples = torch.cat(parts)
    d, _ = nearest(samples.float())
    row["sp"] = float(d.mean()) * scale_between(ds.unit, "mm")
    row["specificity_seconds"] = time.perf_counter() - t0
    log(f"table 1: {entry.name}: Div {row['div']:.3f}, Div-Id {row['div_id'] or float('nan'):.3f}, "
        f"Div-Exp {row['div_exp'] or float('nan'):.3f}, Sp {row['sp']:.3f} mm")
    # decoupling (embedders) and the coefficient variant
    from fitface.evaluation.decoupling import coefficient_decoupling, decoupling_score
    from fitface.evaluation.embedder import embedder_path

    for factor, key in (("identity", "dec_id"), ("expression", "dec_exp")):
        if factor not in model.layout.factors:
            row["notes"].append(f"the model has no {factor} block")
            continue
        if embedder_path(dataset_path, factor).is_file():
            t0 = time.perf_counter()
            try:
                r = decoupling_score(model, dataset_path, factor, int(opts.decoupling_n), int(opts.decoupling_m),
                                     int(opts.seed), progress=bar(f"table 1: {entry.name}: Dec-{factor[:3]}"))
                row[key] = r.score
                row[f"{key}_unshared"] = r.unshared_score
                row[f"{key}_seconds"] = time.perf_counter() - t0
            except (ValueError, OSError) as exc:
                row["notes"].append(f"{factor} decoupling failed: {one_line(exc)}")
        if factor in ds.coefficients:
            try:
                c = coefficient_decoupling(model, dataset_path, factor, int(opts.decoupling_n),
                                           int(opts.decoupling_m), int(opts.seed),
                                           progress=bar(f"table 1: {entry.name}: {factor} coefficients"))
                row[f"coef_{key}"] = c.ratio
                row[f"coef_{key}_r2"] = c.r2
            except ValueError as exc:
                row["notes"].append(f"{factor} coefficient decoupling failed: {one_line(exc)}")
    log(f"table 1: {entry.name}: Dec-Id {_fmt(row.get('dec_id'), 1)}, Dec-Exp {_fmt(row.get('dec_exp'), 1)}, "
        f"coefficient ratios {_fmt(row.get('coef_dec_id'), 3)} / {_fmt(row.get('coef_dec_exp'), 3)}")
    return row


def samples_figure(entry: ModelEntry, seed: int) -> np.ndarray:
    """Fig. 3-style grid (:func:`fitface.preview.sample_grid`, one camera framed on the
    template): random samples; a shared expression code; a shared identity code."""
    from fitface.api.inputs import load_fit_model
    from fitface.preview import sample_grid

    dec = load_fit_model(entry.path)
    lay = dec.layout
    rng = np.random.default_rng([int(seed), 31])
    n = GRID_COLUMNS
    rows = [rng.standard_normal((n, lay.dim)) for _ in range(3)]
    for r, f in ((1, "expression"), (2, "identity")):
        if f in lay.names:
            rows[r][:, lay.slice(f)] = rows[r][:1, lay.slice(f)]
    v = np.asarray(dec.vertices(np.concatenate(rows)), dtype=np.float64).reshape(3, n, -1, 3)
    return sample_grid(list(v), dec.faces, TILE, ["random", "same expression", "same identity"],
                       camera=_camera(dec.template), background=TILE_BACKGROUND)


# ------------------------------------------------------------------------------ figures
def heatmap_figure(sparse, template, faces) -> tuple[np.ndarray, float]:
    """Mean per-vertex surface error of every (model, lambda) on the template; returns (image, full scale mm)."""
    from fitface.geometry.render import tile_images

    cam = _camera(template)
    errs = [(m, lam, e.vertex_error) for m, per in sparse.errors.items() for lam, e in per.items()]
    scale = nice_scale(np.concatenate([e for *_, e in errs]))
    tiles = [render_tile(template, faces, cam, error_colors(e, scale)) for *_, e in errs]
    labels = [f"{m} lam={lam:g}: {e.mean():.2f}mm" for m, lam, e in errs]
    return tile_images(tiles, labels, ncols=len(sparse.lambdas)), scale


def _add_error_tiles(tiles: list, labels: list, row, faces, cam, scale: float) -> None:
    """Append one tile per (model, vertices, per-vertex error mm) of ``row``, coloured by the
    error on the shared ``scale`` and labelled with the RMS error."""
    for m, v, d in row:
        tiles.append(render_tile(v, faces, cam, error_colors(d, scale)))
        labels.append(f"{m}: {np.sqrt(np.mean(d ** 2)):.2f}mm")


def fit_examples_figure(sparse, captures, lam: float) -> tuple[np.ndarray, float] | None:
    """Rows: test captures; columns: ground truth, then each model's fit at ``lam`` coloured by
    its per-vertex surface distance to the ground truth."""
    from fitface.evaluation.sparse_reconstruction import SurfaceDistance
    from fitface.geometry.render import tile_images

    if not sparse.errors:
        return None
    first = next(iter(sparse.errors.values()))
    if lam not in first:
        lam = next(iter(first))
    idx = sorted(first[lam].examples)
    if not idx:
        return None
    cam = _camera(captures.vertices[idx[0]])
    names = captures.names()
    cells, labels, dists = [], [], []
    for i in idx:
        sd = SurfaceDistance(captures.vertices[i], captures.faces)
        row = []
        for m, per in sparse.errors.items():
            v = per[lam].examples[i]
            row.append((m, v, sd(v)))
        dists.extend(d for *_, d in row)
        cells.append((i, row))
    scale = nice_scale(np.concatenate(dists))
    tiles = []
    for i, row in cells:
        tiles.append(render_tile(captures.vertices[i], captures.faces, cam))
        labels.append(f"GT {names[i]}")
        _add_error_tiles(tiles, labels, row, captures.faces, cam, scale)
    return tile_images(tiles, labels, ncols=1 + len(sparse.errors)), scale


def retarget_figure(result, captures) -> tuple[np.ndarray, float] | None:
    """Rows: pairs; columns: A, B, GT (b, x), then each model's retargeted mesh coloured by error."""
    from fitface.evaluation.sparse_reconstruction import SurfaceDistance
    from fitface.geometry.render import tile_images

    if not result.errors:
        return None
    first = next(iter(result.errors.values()))
    idx = sorted(first.examples)
    if not idx:
        return None
    names = captures.names()
    cam = _camera(captures.vertices[int(result.pairs[idx[0], 2])])
    tiles, labels, pending = [], [], []
    for p in idx:
        a, b, g = (int(x) for x in result.pairs[p])
        sd = SurfaceDistance(captures.vertices[g], captures.faces)
        ds_ = [(m, e.examples[p], sd(e.examples[p])) for m, e in result.errors.items()]
        pending.append(((a, b, g), ds_))
    scale = nice_scale(np.concatenate([d for _, row in pending for *_, d in row]))
    for (a, b, g), row in pending:
        for k, lab in ((a, "A"), (b, "B"), (g, "GT")):
            tiles.append(render_tile(captures.vertices[k], captures.faces, cam))
            labels.append(f"{lab} {names[k]}")
        _add_error_tiles(tiles, labels, row, captures.faces, cam, scale)
    return tile_images(tiles, labels, ncols=3 + len(result.errors)), scale


# ------------------------------------------------------------------------------ writing
def _dec_cell(row: dict, key: str) -> str:
    """A decoupling score with its chance level (pairs sharing no code) in parentheses."""
    if row.get(key) is None:
        return "–"
    chance = row.get(f"{key}_unshared")
    return _fmt(row[key], 1) + ("" if chance is None else f" ({_fmt(chance, 1)})")


def _fmt(x, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown (tables of Table 1, Table 2, retargeting; notes; figure links)."""
    L = ["# fitface evaluation", "",
         f"Dataset: `{report['dataset']['path']}` (builder {report['dataset'].get('builder')}, "
         f"fingerprint {report['dataset']['fingerprint']}, unit {report['dataset']['unit']}). "
         f"Created {report['created']} by fitface {report['fitface_version']}.", "",
         "| model | kind | file | model id |", "|---|---|---|---|"]
    for m in report["models"]:
        L.append(f"| {m['name']} | {m['kind']} | `{m['path']}` | {m['model_id']} |")
    t1 = report.get("table1")
    if t1:
        L += ["", "## Table 1: decoupling, diversity, specificity (paper §5.3)", "",
              "Dec- in %, higher is better; Div- and Sp. in mm (higher diversity is better, lower specificity is "
              f"better). Diversity over {t1['config']['pairs']} pairs, specificity over {t1['config']['n_samples']} "
              f"samples (exact nearest training face), decoupling n = {t1['config']['decoupling_n']}, "
              f"m = {t1['config']['decoupling_m']}; in parentheses the same judgement on pairs that share no "
              "code (the embedder's chance level for this model: a Dec- value is only as good as its "
              "distance above it). Coef-Dec: ground-truth coefficient decoupling ratio "
              "(0 = perfectly decoupled, 1 = not at all; beyond the paper).", "",
              "| | Dec-Id | Dec-Exp | Div | Div-Id | Div-Exp | Sp. | Coef-Dec-Id | Coef-Dec-Exp |",
              "|---|---|---|---|---|---|---|---|---|"]
        td = t1.get("training_data") or {}
        L.append(f"| Training data | – | – | {_fmt(td.get('global'))} | {_fmt(td.get('shared_identity'))} | "
                 f"{_fmt(td.get('shared_expression'))} | – | – | – |")
        for name, r in t1["rows"].items():
            L.append(f"| {name} | {_dec_cell(r, 'dec_id')} | {_dec_cell(r, 'dec_exp')} | {_fmt(r.get('div'))} | "
                     f"{_fmt(r.get('div_id'))} | {_fmt(r.get('div_exp'))} | {_fmt(r.get('sp'))} | "
                     f"{_fmt(r.get('coef_dec_id'), 3)} | {_fmt(r.get('coef_dec_exp'), 3)} |")
        for note in t1.get("notes", []):
            L.append(f"\n*Note:* {note}")
        for name, r in t1["rows"].items():
            for note in r.get("notes", []):
                L.append(f"\n*Note ({name}):* {note}")
    for key, heading in (("table2", "Table 2: reconstruction of sparse data (paper §5.5)"),
                         ("table2_noisy", "Table 2 with noisy landmarks and a random pose (the paper's condition)")):
        t2 = report.get(key)
        if not t2:
            continue
        lams = t2["config"]["lambdas"]
        L += ["", f"## {heading}", "",
              f"{t2['num_captures']} held-out test captures (test-split identities x extreme expressions outside "
              f"the training recipes); {t2['config']['landmark_set']} landmarks fitted from one random code "
              f"(seed {t2['config']['seed']}, {t2['config']['steps']} Adam steps"
              + (", random rigid motion + similarity estimate" if t2["config"]["similarity"] else "")
              + (f", Gaussian landmark noise σ = {t2['config']['noise_mm']:g} mm" if t2["config"]["noise_mm"] else "")
              + "). Surface RMSE (mm) of the fitted vertices to the ground-truth surface, mean over captures; "
              "vertex-to-vertex RMSE in parentheses.", "",
              "| Method | " + " | ".join(f"λ = {x:g}" for x in lams) + " |", "|---" * (1 + len(lams)) + "|"]
        for name, per in t2["models"].items():
            cells = [f"{per[repr(float(x))]['surface_rmse_mm']:.2f} ({per[repr(float(x))]['vertex_rmse_mm']:.2f})"
                     for x in lams]
            L.append(f"| {name} | " + " | ".join(cells) + " |")
    for key, title in (("retargeting", "sparse landmark fits"), ("retargeting_dense", "dense fits (every vertex)")):
        rt = report.get(key)
        if not rt:
            continue
        L += ["", f"## Retargeting with ground truth ({title})", "",
              f"{rt['num_pairs']} pairs A = (a, x), B = (b, y), a ≠ b, x ≠ y; fit both (λ = {rt['config']['lam']:g}), "
              "move x onto b (replace mode), compare with the true mesh of (b, x). Surface RMSE in mm (vertex RMSE). "
              "No transfer: B's fit as is; direct fit: fitting (b, x) itself (the floor).", "",
              "| Method | retarget | no transfer | direct fit |", "|---|---|---|---|"]
        for name, s in rt["models"].items():
            L.append(f"| {name} | {s['retarget_surface_rmse_mm']:.2f} ({s['retarget_vertex_rmse_mm']:.2f}) | "
                     f"{s['no_transfer_surface_rmse_mm']:.2f} ({s['no_transfer_vertex_rmse_mm']:.2f}) | "
                     f"{s['direct_fit_surface_rmse_mm']:.2f} ({s['direct_fit_vertex_rmse_mm']:.2f}) |")
    dn = report.get("dense")
    if dn and dn.get("models"):
        c = dn["config"]
        L += ["", "## Dense retargeting and reconstruction (fresh ICT identities, every vertex fitted)", "",
              f"{c['identities']} fresh identities (never training identities), the six emotions at full intensity, "
              f"{dn['num_pairs']} ordered pairs: A posed, B neutral, truth = B's own transferred expression. Every "
              f"vertex fitted with known correspondence (L-BFGS, ridge {c['ridge']:g}). Vertex RMSE in mm, mean over "
              "pairs. *Pasted*: B's true neutral plus A's exact displacement, moved unchanged (the same "
              "for every model; a model that transfers only a shared expression code can beat it). *Reconstruction*: dense fits of "
              f"{c['identities'] * c['samples_per_identity']} faces drawn by the dataset's own sampler "
              "(mean / median / 90th percentile).", "",
              "| Method | no transfer | pasted (A's exact displacement) | retarget | direct fit | neutral fit | "
              "reconstruction |", "|---|---|---|---|---|---|---|"]
        for name, r in dn["models"].items():
            rec = (f"{r['reconstruction_vertex_rmse_mm']:.3f} / {r['reconstruction_median_mm']:.3f} / "
                   f"{r['reconstruction_p90_mm']:.3f}" if "reconstruction_vertex_rmse_mm" in r else "–")
            L.append(f"| {name} | {r['no_transfer_vertex_rmse_mm']:.3f} | {r['pasted_vertex_rmse_mm']:.3f} | "
                     f"**{r['retarget_vertex_rmse_mm']:.3f}** | {r['direct_fit_vertex_rmse_mm']:.3f} | "
                     f"{r['neutral_fit_vertex_rmse_mm']:.3f} | {rec} |")
    if dn and dn.get("note"):
        L.append(f"\n*Note (dense):* {dn['note']}")
    if report.get("test_captures"):
        tc = report["test_captures"]
        L += ["", "## Test captures", "", f"Builder {tc.get('builder')}; identities: {tc.get('identity_source')}; "
              f"neutral check max {tc.get('neutral_check_max_mm')} mm; expressions: {', '.join(tc['expression_names'])}; "
              f"largest cosine of each with a training emotion recipe: {tc.get('recipe_overlap_max_cosine')}."]
    if report.get("figures"):
        L += ["", "## Figures", ""]
        for f in report["figures"]:
            L += [f"**{f['title']}**" + (f" (error colour scale: blue 0 → red {f['scale_mm']:g} mm)"
                                          if f.get("scale_mm") else ""), "", f"![{f['title']}]({f['file']})", ""]
    L += ["", "## Timings (s)", "", "| part | seconds |", "|---|---|"]
    for k, v in report.get("timings", {}).items():
        L.append(f"| {k} | {v:.1f} |")
    return "\n".join(L) + "\n"


def _json_default(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(type(obj).__name__)


def dense_part(entries, ds, opts: EvaluationOptions, say: Callable[[str], None]) -> dict[str, Any]:
    """The ``dense`` part's report section (``{"note": ...}`` when it cannot run on this dataset)."""
    from fitface.api.inputs import load_fit_model
    from fitface.errors import InputError
    from fitface.evaluation.dense_transfer import dense_truth_for_dataset, run_dense_transfer

    say(f"dense: building the truth ({opts.dense.identities} fresh ICT identities) ...")
    try:
        truth = dense_truth_for_dataset(ds, opts.ict_source, opts.dense)
    except InputError as exc:
        if exc.path is not None:
            raise  # a bad --ict-source file is the user's error; the others are reasons to skip
        say(f"dense: skipped ({one_line(exc)})")
        return {"note": f"dense retargeting skipped: {one_line(exc)} (pass --ict-source on an ICT dataset)."}
    res = run_dense_transfer({e.name: load_fit_model(e.path) for e in entries}, truth, opts.dense, log=say)
    return res.to_json()


def run_evaluation(model_paths, data_dir, out_dir, opts: EvaluationOptions | None = None,
                   log: Callable[[str], None] | None = None,
                   progress: Callable[[str], Callable[[int, int], None]] | None = None) -> dict[str, Any]:
    """Evaluate models on a dataset and write ``report.md``, ``report.json``, ``figures/*.png``.

    Args:
        model_paths: model files (each on the dataset's topology).
        data_dir: the dataset folder (its test split gives the test captures, its train split
            the specificity reference).
        out_dir: the report folder (created).
        opts: :class:`EvaluationOptions`.
        log: progress line logger.
        progress: ``progress(label)`` -> a ``(done, total)`` callback for one stage's loop (the
            CLI draws a tqdm bar with its rate and time left on stderr), or None.

    Returns:
        The report document (as written to ``report.json``).

    Raises:
        InputError: bad model files, a model on another topology, a dataset the test
            captures cannot be built for (when Table 2 / retargeting are not skipped).
    """
    from datetime import datetime, timezone

    from fitface import __version__
    from fitface.data.format import load_dataset
    from fitface.io.atomic import write_text
    from fitface.io.image import write_png

    opts = EvaluationOptions() if opts is None else opts
    say = log or (lambda msg: None)
    out = Path(out_dir)
    t_all = time.perf_counter()
    entries = model_entries(model_paths)
    ds = load_dataset(data_dir)
    report: dict[str, Any] = {
        "format": "fitface-evaluation", "version": 1, "fitface_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": {"path": str(data_dir), "fingerprint": ds.fingerprint, "builder": ds.info.get("builder"),
                    "unit": ds.unit, "num_samples": len(ds), "num_vertices": ds.num_vertices},
        "models": [{"name": e.name, "path": str(e.path), "model_id": e.model_id, "kind": e.kind} for e in entries],
        "options": opts.to_json(), "timings": {}, "figures": []}
    timings = report["timings"]
    figures = out / "figures"

    def figure(name: str, title: str, image, scale=None):
        if image is None:
            return
        write_png(figures / name, image)
        report["figures"].append({"file": f"figures/{name}", "title": title, "scale_mm": scale})

    # ---- topology check up front (cheap, before anything long)
    from fitface.api.inputs import load_fit_model

    for e in entries:
        dec = load_fit_model(e.path)
        if dec.num_vertices != ds.num_vertices or not np.array_equal(np.asarray(dec.faces), ds.faces):
            from fitface.errors import InputError

            raise InputError(f"the model has {dec.num_vertices} vertices, the dataset {ds.num_vertices} (or other "
                             f"faces): a model can only be evaluated on the topology it was trained on", e.path)

    # ---- Table 1
    if "table1" not in opts.skip:
        t0 = time.perf_counter()
        import torch

        from fitface.evaluation.diversity_specificity import NearestFace, vertex_groups
        from fitface.evaluation.embedder import embedder_path

        notes = []
        missing = [f for f in ("identity", "expression")
                   if f in ds.factor_names and not embedder_path(data_dir, f).is_file()]
        if missing and opts.train_embedders:
            from fitface.evaluation.embedder_training import train_embedders

            say(f"training the decoupling embedders of the dataset ({', '.join(missing)}) ...")
            t1 = time.perf_counter()
            train_embedders(data_dir, {"factors": tuple(missing), "seed": int(opts.seed)}, log=say)
            timings["train_embedders"] = time.perf_counter() - t1
        elif missing:
            notes.append(f"Dec-Id / Dec-Exp not computed: the dataset has no trained decoupling embedders for "
                         f"{', '.join(missing)} ({data_dir}/embedders/); pass --train-embedders to train them "
                         f"(or `fitface` embedder training) first.")
        tr = ds.indices("train")
        say(f"table 1: loading {len(tr)} training faces for specificity ...")
        ref = torch.from_numpy(np.ascontiguousarray(ds.read(tr)))
        nearest = NearestFace(ref, vertex_groups(ds.template_vertices))
        td = training_diversity(ds, int(opts.pairs), int(opts.seed))
        rows = {e.name: table1_row(e, ds, data_dir, opts, nearest, say, progress) for e in entries}
        del ref, nearest
        report["table1"] = {"config": {"n_samples": opts.n_samples, "pairs": opts.pairs,
                                       "decoupling_n": opts.decoupling_n, "decoupling_m": opts.decoupling_m,
                                       "seed": opts.seed},
                            "training_data": td, "rows": rows, "notes": notes}
        timings["table1"] = time.perf_counter() - t0
        if opts.figures:
            for e in entries:
                figure(f"samples_{e.name}.png", f"Samples of {e.name}: random; shared expression code; shared "
                       f"identity code", samples_figure(e, opts.seed))

    # ---- test captures, Table 2, retargeting
    want2, wantn, wantr = ("table2" not in opts.skip, "table2_noisy" not in opts.skip,
                           "retarget" not in opts.skip)
    if want2 or wantn or wantr:
        from fitface.evaluation.heldout_captures import build_test_captures

        t0 = time.perf_counter()
        n_expr = 12
        ids = None if opts.test_captures is None else max(2, math.ceil(int(opts.test_captures) / n_expr))
        caps = build_test_captures(ds, ids, opts.ict_source,
                                   progress=lambda i, n: say(f"test captures: identity {i}/{n}"))
        timings["test_captures"] = time.perf_counter() - t0
        report["test_captures"] = {**caps.info, "num_captures": len(caps), "expression_names": list(caps.expression_names)}
        say(f"test captures: {len(caps)} ({len(caps.identities)} test identities x {len(caps.expression_names)} "
            f"expressions) in {timings['test_captures']:.1f} s")
        models = {e.name: load_fit_model(e.path) for e in entries}
        from fitface.evaluation.sparse_reconstruction import SparseConfig, run_sparse_reconstruction

        sub = caps if opts.test_captures is None else caps.subset(slice(0, int(opts.test_captures)))
        t2_cfg = SparseConfig(lambdas=tuple(opts.lambdas), steps=int(opts.steps), seed=int(opts.seed),
                            similarity=bool(opts.similarity), noise_mm=float(opts.noise_mm))
        if want2:
            t0 = time.perf_counter()
            sparse = run_sparse_reconstruction(models, sub, t2_cfg, log=say, progress=progress)
            report["table2"] = sparse.to_json()
            timings["table2"] = time.perf_counter() - t0
            if opts.figures:
                img, scale = heatmap_figure(sparse, ds.template_vertices, ds.faces)
                figure("table2_heatmaps.png", "Table 2: mean per-vertex surface error (rows: models; columns: λ)",
                       img, scale)
                mid = sparse.lambdas[len(sparse.lambdas) // 2]
                ex = fit_examples_figure(sparse, sub, mid)
                if ex is not None:
                    figure("table2_examples.png", f"Table 2 fits at λ = {mid:g} (GT, then each model)", *ex)
        if wantn:
            t0 = time.perf_counter()
            cfg = replace(t2_cfg, similarity=True, noise_mm=float(opts.noisy_noise_mm))
            say(f"table 2, noisy: landmark noise {cfg.noise_mm:g} mm and a random rigid motion ...")
            report["table2_noisy"] = run_sparse_reconstruction(models, sub, cfg, log=say, progress=progress).to_json()
            timings["table2_noisy"] = time.perf_counter() - t0
        if wantr:
            from fitface.evaluation.retargeting import RetargetConfig, run_retargeting

            t0 = time.perf_counter()
            rcfg = RetargetConfig(pairs=int(opts.retarget_pairs), steps=int(opts.steps), seed=int(opts.seed))
            rt = run_retargeting(models, caps, rcfg, log=say)
            report["retargeting"] = rt.to_json()
            timings["retargeting"] = time.perf_counter() - t0
            if opts.figures:
                fig = retarget_figure(rt, caps)
                if fig is not None:
                    figure("retargeting.png", "Retargeting x onto b (A, B, GT (b, x), then each model)", *fig)
            if opts.dense_retarget:
                t0 = time.perf_counter()
                rd = run_retargeting(models, caps, RetargetConfig(pairs=int(opts.retarget_pairs), steps=int(opts.steps),
                                                                  seed=int(opts.seed), dense=True), log=say)
                report["retargeting_dense"] = rd.to_json()
                timings["retargeting_dense"] = time.perf_counter() - t0
    if "dense" not in opts.skip:
        t0 = time.perf_counter()
        report["dense"] = dense_part(entries, ds, opts, say)
        timings["dense"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_all
    write_text(out / "report.json", json.dumps(report, indent=1, default=_json_default) + "\n")
    write_text(out / "report.md", markdown(report))
    return report
