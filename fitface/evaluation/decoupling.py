"""The decoupling metric of §5.3 (embedder-judged) and a ground-truth coefficient variant.

Embedder score (paper, §5.3, protocol of its reference [11]): for factor f, draw n random
codes z_i and faces ``x_i = G(z_i)``; for each, m faces ``y_ij`` that share z_i's block f while
every other block (other factors and noise) is redrawn. Both are rendered and embedded by the
dataset's embedder of factor f (:mod:`fitface.evaluation.embedder`); the score is the percentage of
the n x m pairs ``(x_i, y_ij)`` judged "same" (squared embedding distance < the embedder's
threshold). 100% = changing the other blocks never changes factor f as the embedder sees it.

Reference rate (reported with it, not in the paper): the same test on n x m pairs that share
nothing, ``(x_i, y_(i+1 mod n) j)``: the share of independent generated faces judged "same",
i.e. what a model whose block f does nothing would score, on this model's faces.

Coefficient variant (ground truth, for datasets with generating ``coefficients``, e.g. ICT and
synthetic): a ridge regression learned on the dataset's training split predicts factor f's
generating coefficients from vertices (:class:`CoefficientRegressor`); on the same pairs,

    ratio = mean_ij ||c(x_i) - c(y_ij)|| / mean_ij ||c(x_i) - c(y_(i+1 mod n) j)||

with ``c`` the predicted coefficients standardised by their training standard deviation.
0 = faces sharing the code have identical factor-f coefficients (perfectly decoupled), 1 =
sharing the code makes them no closer than unrelated faces (not decoupled at all). The
regression's held-out R^2 is reported: the ratio means little when R^2 is low.

Convention:
    * Codes: ``torch.Generator().manual_seed(seed)`` draws z (n, D), then for each anchor its m
      companions (m, D) with block f copied from the anchor: the embedder score and the
      coefficient ratio of one seed use the same faces.
    * Generated vertices are in the model's unit and converted to the dataset's unit before
      rendering / regression; the model must have the dataset's vertex count (same topology).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from fitface.checks import check_shape

#: Codes decoded (and rendered) per chunk.
DECODE_CHUNK = 200
#: Vertices used as regression features (evenly spaced vertex ids; 3 features each).
REGRESSION_VERTICES = 1024
#: Training samples used to fit the regression (random subset when larger).
REGRESSION_SAMPLES = 6000
#: Ridge strengths tried, relative to the mean feature variance; chosen by validation R^2.
RIDGE_GRID = (1e-6, 1e-4, 1e-2, 1e-1, 1.0, 10.0, 100.0)


# ------------------------------------------------------------------------------ codes
def paired_codes(layout, factor: str, n: int, m: int, seed: int, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor codes and their companions sharing ``factor``'s block.

    Returns:
        anchors (n, D); companions (n, m, D) with ``companions[i, :, block] == anchors[i, block]``
        and every other coordinate drawn anew (standard normal).
    """
    if factor not in layout.factors:
        raise ValueError(f"factor: {factor!r} is not a factor of the model ({', '.join(layout.factors)})")
    if n < 2 or m < 1:
        raise ValueError(f"n, m: expected n >= 2 and m >= 1, got n={n}, m={m}")
    g = torch.Generator().manual_seed(int(seed))
    anchors = torch.randn(n, layout.dim, generator=g, dtype=dtype)
    comp = torch.randn(n, m, layout.dim, generator=g, dtype=dtype)
    sl = layout.slice(factor)
    comp[:, :, sl] = anchors[:, None, sl]
    return anchors, comp


def _decoded(model, codes: torch.Tensor, scale: float) -> Iterator[np.ndarray]:
    """Decode (K, D) codes in chunks -> (k, V, 3) float32 numpy arrays in the dataset unit."""
    p = model.template
    with torch.no_grad():
        for k in range(0, len(codes), DECODE_CHUNK):
            v = model.decode(codes[k:k + DECODE_CHUNK].to(p.device, p.dtype))
            yield (v.float().cpu().numpy() * scale).astype(np.float32)


def _unit_scale(model, ds_unit: str, num_vertices: int) -> float:
    from fitface.units import scale_between

    if model.num_vertices != num_vertices:
        raise ValueError(f"model: {model.num_vertices} vertices, the dataset has {num_vertices} "
                         "(decoupling needs the dataset's topology)")
    return scale_between(model.unit, ds_unit)


def _check(model, factor: str, n: int, m: int) -> None:
    if factor not in model.layout.factors:
        raise ValueError(f"factor: {factor!r} is not a factor of the model ({', '.join(model.layout.factors)})")
    if n < 2 or m < 1:
        raise ValueError(f"n, m: expected n >= 2 and m >= 1, got n={n}, m={m}")


# ------------------------------------------------------------------------------ embedder score
@dataclass
class DecouplingResult:
    """Embedder-judged decoupling of one factor.

    Attributes:
        factor: the shared block.
        score: percentage (0-100) of the n x m shared-code pairs judged "same".
        unshared_score: percentage of n x m pairs sharing nothing judged "same" (reference).
        threshold: the embedder's threshold (squared embedding distance).
        n, m: anchors and companions per anchor.
        shared_distances: (n, m) float32 squared embedding distances of the shared pairs.
        unshared_distances: (n, m) float32 distances of the reference pairs.
        seconds: wall time.
        embedder: provenance (validation accuracy / FAR, input size, dataset fingerprint).
    """

    factor: str
    score: float
    unshared_score: float
    threshold: float
    n: int
    m: int
    shared_distances: np.ndarray
    unshared_distances: np.ndarray
    seconds: float
    embedder: dict

    def as_row(self) -> dict:
        return {f"decoupling_{self.factor}": self.score, f"decoupling_{self.factor}_unshared": self.unshared_score,
                f"decoupling_{self.factor}_median_distance": float(np.median(self.shared_distances))}


def pair_distances(embeddings: torch.Tensor, n: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared embedding distances of the protocol's pairs.

    Args:
        embeddings: (n + n m, d) float, the n anchors first, then each anchor's m companions.

    Returns:
        ``shared`` (n, m): anchor i against its own companions; ``unshared`` (n, m): anchor i
        against the companions of anchor i + 1 (mod n), pairs that share nothing.
    """
    ea, ec = embeddings[:n], embeddings[n:].reshape(n, m, -1)  # (n, d), (n, m, d)
    return (ec - ea[:, None]).pow(2).sum(-1), (ec.roll(-1, dims=0) - ea[:, None]).pow(2).sum(-1)


def decoupling_score(model, dataset_path: str | os.PathLike, factor: str, n: int = 100, m: int = 100,
                     seed: int = 0, embedder=None, progress: Callable[[int, int], None] | None = None
                     ) -> DecouplingResult:
    """The paper's decoupling score of ``factor`` for ``model`` (see module docstring).

    Args:
        model: a :class:`fitface.models.face_model.FaceModel` on the dataset's topology.
        dataset_path: the dataset whose embedder judges (``DATASET/embedders/{factor}.safetensors``).
        factor: e.g. ``"identity"`` or ``"expression"``.
        n, m: anchors and companions per anchor (paper: 100, 100).
        seed: fixes the codes.
        embedder: an already loaded :class:`fitface.evaluation.embedder.Embedder` (skips loading).
        progress: optional ``progress(done, total)`` over the n (1 + m) faces.

    Returns:
        :class:`DecouplingResult`.
    """
    from fitface.evaluation.embedder import load_embedder

    t0 = time.perf_counter()
    _check(model, factor, n, m)
    emb = embedder if embedder is not None else load_embedder(dataset_path, factor)
    if emb.factor != factor:
        raise ValueError(f"embedder: judges {emb.factor!r}, not {factor!r}")
    nv = int(emb.meta.get("num_vertices", model.num_vertices))
    scale = _unit_scale(model, emb.render.unit, nv)
    anchors, comp = paired_codes(model.layout, factor, n, m, seed, dtype=torch.float32)
    codes = torch.cat([anchors, comp.reshape(n * m, -1)])  # (n + n m, D)
    faces = model.faces.cpu().numpy()
    out, done = [], 0
    for v in _decoded(model, codes, scale):
        out.append(emb.embed_meshes(v, faces))
        done += len(v)
        if progress is not None:
            progress(done, len(codes))
    shared, unshared = pair_distances(torch.cat(out), n, m)
    val = emb.meta.get("validation", {})
    info = {"threshold": emb.threshold, "accuracy": val.get("accuracy"), "far": val.get("far"),
            "input_size": emb.input_size, "width": emb.net.width,
            "dataset_fingerprint": emb.meta.get("dataset_fingerprint")}
    return DecouplingResult(factor, 100.0 * float((shared < emb.threshold).float().mean()),
                            100.0 * float((unshared < emb.threshold).float().mean()), emb.threshold, n, m,
                            shared.numpy().astype(np.float32), unshared.numpy().astype(np.float32),
                            time.perf_counter() - t0, info)


# ------------------------------------------------------------------------------ coefficient variant
class CoefficientRegressor:
    """Ridge regression vertices -> one factor's generating coefficients, fitted on a dataset.

    Features: the coordinates of :data:`REGRESSION_VERTICES` evenly spaced vertices, centred
    by the training mean (dataset unit). Targets: the factor's coefficients standardised by
    their training mean and standard deviation (constant coefficients are dropped). The ridge
    strength is chosen from :data:`RIDGE_GRID` (relative to the mean feature variance) by R^2
    on the ``val`` split (when it has samples); R^2 is reported on ``test`` (else ``val``).

    Attributes:
        vertex_ids: (k,) int64 feature vertices.
        x_mean: (3k,) float64. weights: (3k, c) float64. y_mean, y_std: (c,) float64.
        kept: (c,) int64 indices of the kept coefficients. alpha: chosen relative strength.
        r2: held-out R^2 = 1 - mean squared error of the standardised coefficients (i.e. in
            units of the training variance); NaN when there are no held-out samples.
    """

    def __init__(self, ds, factor: str, seed: int = 0):
        if factor not in ds.coefficients:
            raise ValueError(f"factor: the dataset has no generating coefficients for {factor!r} "
                             f"(it has: {', '.join(ds.coefficients) or 'none'})")
        rng = np.random.default_rng(seed)
        self.unit = ds.unit
        self.num_vertices = ds.num_vertices
        V = ds.num_vertices
        self.vertex_ids = np.unique(np.linspace(0, V - 1, min(V, REGRESSION_VERTICES)).round().astype(np.int64))
        coef = np.asarray(ds.coefficients[factor], np.float64)  # (N, c)
        tr = ds.indices("train")
        if len(tr) < 2:
            raise ValueError("dataset: the training split needs at least 2 samples for the regression")
        if len(tr) > REGRESSION_SAMPLES:
            tr = np.sort(rng.choice(tr, REGRESSION_SAMPLES, replace=False))
        X = self._features_of(ds, tr)  # (n, 3k)
        Y = coef[tr]
        self.x_mean = X.mean(0)
        self.y_mean = Y.mean(0)
        std = Y.std(0)
        self.kept = np.flatnonzero(std > 1e-12 * max(1.0, float(np.abs(Y).max(initial=0.0))))
        if len(self.kept) == 0:
            raise ValueError(f"factor: the {factor!r} coefficients are constant on the training split")
        self.y_mean, self.y_std = self.y_mean[self.kept], std[self.kept]
        Xc = X - self.x_mean
        Ys = (Y[:, self.kept] - self.y_mean) / self.y_std
        xtx = Xc.T @ Xc  # (p, p)
        xty = Xc.T @ Ys  # (p, c)
        scale = np.trace(xtx) / xtx.shape[0]
        val, test = ds.indices("val"), ds.indices("test")
        held = test if len(test) else val
        fits = {}
        for a in RIDGE_GRID:
            fits[a] = np.linalg.solve(xtx + a * scale * np.eye(len(xtx)), xty)
        if len(val):
            Xv, Yv = self._features_of(ds, val), coef[val]
            self.alpha = max(RIDGE_GRID, key=lambda a: self._r2(Xv, Yv, fits[a]))
        else:
            self.alpha = 1e-4
        self.weights = fits[self.alpha]
        self.r2 = self._r2(self._features_of(ds, held), coef[held], self.weights) if len(held) else float("nan")

    def _features_of(self, ds, idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), 3 * len(self.vertex_ids)))
        for k in range(0, len(idx), 512):
            out[k:k + 512] = ds.read(idx[k:k + 512])[:, self.vertex_ids].reshape(-1, 3 * len(self.vertex_ids))
        return out

    def _r2(self, X, Y, W) -> float:
        """1 - mean squared error in units of the training variance (mean over coefficients):
        stable with few held-out identities, where the held-out variance itself is tiny."""
        Ys = (Y[:, self.kept] - self.y_mean) / self.y_std
        pred = (X - self.x_mean) @ W
        return float(1.0 - ((Ys - pred) ** 2).mean())

    def predict(self, vertices: np.ndarray) -> np.ndarray:
        """(B, V, 3) float vertices (dataset unit) -> (B, c) standardised coefficients."""
        v = np.asarray(vertices)
        check_shape("vertices", v, (None, self.num_vertices, 3))
        x = v[:, self.vertex_ids].reshape(len(v), -1).astype(np.float64)
        return (x - self.x_mean) @ self.weights


@dataclass
class CoefficientDecouplingResult:
    """Ground-truth decoupling of one factor (see module docstring).

    Attributes:
        factor: the shared block.
        ratio: shared_spread / unshared_spread (0 = perfectly decoupled, 1 = not at all).
        shared_spread: mean distance of predicted (standardised) coefficients, shared pairs.
        unshared_spread: the same for pairs sharing nothing.
        r2: held-out R^2 of the regression (how well vertices determine the coefficients).
        n, m, seconds.
    """

    factor: str
    ratio: float
    shared_spread: float
    unshared_spread: float
    r2: float
    n: int
    m: int
    seconds: float

    def as_row(self) -> dict:
        return {f"coef_decoupling_{self.factor}": self.ratio, f"coef_decoupling_{self.factor}_r2": self.r2}


def coefficient_decoupling(model, dataset_path: str | os.PathLike, factor: str, n: int = 100, m: int = 100,
                           seed: int = 0, regressor: CoefficientRegressor | None = None,
                           progress: Callable[[int, int], None] | None = None) -> CoefficientDecouplingResult:
    """Ground-truth decoupling ratio of ``factor`` (datasets with generating coefficients).

    Args:
        model: a FaceModel on the dataset's topology.
        dataset_path: a dataset with ``coefficients[factor]``.
        factor: the shared block.
        n, m, seed: as :func:`decoupling_score` (the same faces for the same seed).
        regressor: a fitted :class:`CoefficientRegressor` (reuse across models; fitted here
            when None).
        progress: optional ``progress(done, total)`` over the n (1 + m) faces.

    Raises:
        ValueError: the dataset has no coefficients for ``factor``, or topologies differ.
    """
    from fitface.data.format import load_dataset

    t0 = time.perf_counter()
    _check(model, factor, n, m)
    if regressor is None:
        regressor = CoefficientRegressor(load_dataset(dataset_path), factor, seed=seed)
    scale = _unit_scale(model, regressor.unit, regressor.num_vertices)
    anchors, comp = paired_codes(model.layout, factor, n, m, seed, dtype=torch.float32)
    codes = torch.cat([anchors, comp.reshape(n * m, -1)])
    preds, done = [], 0
    for v in _decoded(model, codes, scale):
        preds.append(regressor.predict(v))
        done += len(v)
        if progress is not None:
            progress(done, len(codes))
    c = np.concatenate(preds)  # (n + n m, c)
    ca, cc = c[:n], c[n:].reshape(n, m, -1)
    shared = np.linalg.norm(cc - ca[:, None], axis=-1).mean()
    unshared = np.linalg.norm(np.roll(cc, -1, axis=0) - ca[:, None], axis=-1).mean()
    ratio = float(shared / unshared) if unshared > 0 else float("nan")
    return CoefficientDecouplingResult(factor, ratio, float(shared), float(unshared), regressor.r2, n, m,
                                       time.perf_counter() - t0)
