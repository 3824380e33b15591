"""The paper's comparison baseline: an additive linear 3DMM (Amberg et al. 2008, ref. [1]).

Paper §5.5: "an additive linear model as described in [1] using our dataset, and the same
neutral/expression separation selected for CoMA": identity PCA on one neutral face per
identity, expression PCA on the displacements of every sample from its identity's neutral.
:func:`build_linear_3dmm` builds it from a fitface dataset as a :class:`FaceModel` whose
generator is a :class:`fitface.models.linear.LinearGenerator`, with the GAN's latent layout
(identity 65, expression 15, noise 5 by default), so sampling, metrics, fitting and
retargeting use it exactly like a GAN model file.

Convention:
    * Neutral of an identity: the mean of its ``split`` samples labeled expression
      ``"neutral"``. Identities without such a sample are skipped (counted in
      :attr:`Linear3DMMParts.skipped_identities`), as are samples without an identity label.
    * Identity PCA is centred: ``template = mean neutral``; mode ``k`` is scaled by its sample
      standard deviation ``s_k / sqrt(I - 1)`` (``s_k`` the k-th singular value of the centred
      (I, 3V) neutrals).
    * Expression PCA is *about the neutral* (uncentred): the modes are the top eigenvectors of
      ``sum_n d_n d_n^T`` over the displacements ``d_n = x_n - neutral(identity(n))`` (M
      samples, neutral frames included), scaled by ``sqrt(lambda_k / M)``. So ``z_exp = 0`` is
      the neutral expression and ``z = 0`` decodes to the mean neutral face (the offset is 0).
      Explained-variance ratios are ``lambda_k / sum_n |d_n|^2`` (identity: ``s_k^2 / sum s^2``).
    * Mode signs are fixed: the coordinate of largest magnitude of every mode is positive.
    * Columns: identity block = identity modes, expression block = expression modes, in
      decreasing variance; columns beyond what the data supports (rank, or a mode with less than
      :data:`RANK_TOL` of the top variance) and the ``"noise"`` block (and any other block) are
      zero, so the latent layout is the GAN's.
    * Expression PCA never holds the (3V, 3V) covariance nor the (M, M) Gram matrix: a block
      subspace iteration on ``A = D^T D`` streams ``D`` in chunks of :data:`CHUNK_SAMPLES`
      memory-mapped samples per pass (``A Q = sum_c D_c^T (D_c Q)``), with Rayleigh-Ritz
      extraction, until the top modes' residuals ``|A v - lambda v| / lambda`` fall below
      :data:`RESIDUAL_TOL` (at most :data:`MAX_PASSES` passes). Memory: O(3V (k + p) + chunk 3V).
    * Lengths in the dataset's unit (mm for the built-in builders).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fitface.errors import InputError
from fitface.models.latent import PAPER_LAYOUT, LatentLayout

if TYPE_CHECKING:  # pragma: no cover
    from fitface.data.format import Dataset
    from fitface.models.face_model import FaceModel

#: Expression class whose samples are the identity's neutral face.
NEUTRAL_CLASS = "neutral"
#: Fewest identities with a neutral for an identity PCA (one mode needs two faces).
MIN_IDENTITIES = 2
#: Samples read from the memory map at a time while streaming displacements.
CHUNK_SAMPLES = 512
#: Extra subspace vectors beyond the requested expression modes (speeds up convergence).
OVERSAMPLE = 10
#: Convergence: every kept mode's residual ``|A v - lambda v|`` below this fraction of its own
#: ``lambda`` (bounds the mode's angle error by about ``RESIDUAL_TOL * lambda / gap``).
RESIDUAL_TOL = 1e-3
#: Largest number of streaming passes of the subspace iteration.
MAX_PASSES = 40
#: A mode whose variance is below this fraction of the largest is "not supported" (zero column).
RANK_TOL = 1e-9
#: Seed of the subspace iteration's random start (the result does not depend on it beyond
#: the convergence tolerance; fixed so builds are reproducible).
SEED = 0
#: Geometry-image size recorded in the model (as the GAN's; not used by a linear model).
IMAGE_SIZE = 64


@dataclass(frozen=True)
class PCAModes:
    """Principal modes of one factor.

    Attributes:
        modes: (k, 3V) float64 orthonormal rows, row ``3v + c`` layout within each row.
        std: (k,) float64 standard deviation of each mode's coefficient (dataset unit).
        variance: (k,) float64 ``std ** 2`` (unit^2).
        explained_ratio: (k,) float64 share of the total variance (or second moment) per mode.
        total: total variance (identity) or mean squared displacement norm (expression), unit^2.
        count: number of vectors analysed (identities, or displacement samples).
        requested: modes the layout asked for (``k <= requested``).
        passes: streaming passes used (0 for the exact identity SVD).
    """

    modes: np.ndarray
    std: np.ndarray
    variance: np.ndarray
    explained_ratio: np.ndarray
    total: float
    count: int
    requested: int
    passes: int = 0

    @property
    def num_modes(self) -> int:
        return int(self.modes.shape[0])

    def to_json(self) -> dict[str, Any]:
        return {
            "modes": self.num_modes,
            "requested": self.requested,
            "count": self.count,
            "total_variance": float(self.total),
            "std": [float(x) for x in self.std],
            "explained_variance": [float(x) for x in self.variance],
            "explained_variance_ratio": [float(x) for x in self.explained_ratio],
            "cumulative_ratio": [float(x) for x in np.cumsum(self.explained_ratio)],
            "passes": self.passes,
        }


@dataclass(frozen=True)
class Linear3DMMParts:
    """What :func:`linear_3dmm_parts` computes.

    Attributes:
        mean: (V, 3) float64 mean neutral (the template), dataset unit.
        neutrals: (I, V, 3) float64 neutral of each kept identity.
        identity_labels: (I,) int64 identity label of each row of ``neutrals``.
        identity: identity :class:`PCAModes`. expression: expression :class:`PCAModes`.
        basis: (3V, D) float64, the generator basis in layout order (see module Convention).
        layout: the latent layout.
        skipped_identities: identities of the split without a neutral-labeled sample.
        unlabeled_samples: samples of the split without an identity label.
        seconds: wall-clock build time.
    """

    mean: np.ndarray
    neutrals: np.ndarray
    identity_labels: np.ndarray
    identity: PCAModes
    expression: PCAModes
    basis: np.ndarray
    layout: LatentLayout
    skipped_identities: int
    unlabeled_samples: int
    seconds: float


# ------------------------------------------------------------------------------ PCA helpers
def _fix_signs(modes: np.ndarray) -> np.ndarray:
    """(k, n) rows -> rows whose largest-magnitude entry is positive (in place, returned)."""
    if modes.size:
        idx = np.argmax(np.abs(modes), axis=1)  # (k,)
        sign = np.sign(modes[np.arange(len(modes)), idx])
        modes *= np.where(sign == 0, 1.0, sign)[:, None]
    return modes


def identity_pca(neutrals: np.ndarray, k: int) -> tuple[np.ndarray, PCAModes]:
    """Centred PCA of the neutral faces (exact thin SVD).

    Args:
        neutrals: (I, 3V) float64, I >= 2.
        k: modes wanted.

    Returns:
        ``(mean (3V,), PCAModes)`` with at most ``min(k, I - 1)`` supported modes.
    """
    n = neutrals.shape[0]
    mean = neutrals.mean(axis=0)  # (3V,)
    x = neutrals - mean  # (I, 3V)
    _, s, vt = np.linalg.svd(x, full_matrices=False)  # s (min(I, 3V),), vt (., 3V)
    var_all = s**2 / (n - 1)
    total = float(var_all.sum())
    keep = int(np.sum(var_all[: min(k, n - 1)] > RANK_TOL * max(var_all[0] if var_all.size else 0.0, 1e-300)))
    var = var_all[:keep]
    modes = _fix_signs(np.ascontiguousarray(vt[:keep]))
    ratio = var / total if total > 0 else np.zeros_like(var)
    return mean, PCAModes(modes, np.sqrt(var), var, ratio, total, n, int(k))


def streaming_top_eigs(
    apply: Callable[[np.ndarray], tuple[np.ndarray, float]],
    dim: int,
    k: int,
    max_rank: int,
    oversample: int = OVERSAMPLE,
    tol: float = RESIDUAL_TOL,
    max_passes: int = MAX_PASSES,
    seed: int = SEED,
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Top eigenpairs of a symmetric PSD operator ``A`` (dim x dim) by block subspace iteration.

    Args:
        apply: ``apply(Q (dim, r)) -> (A Q (dim, r) float64, trace(A))``, one data pass.
        dim: size of ``A``. k: eigenpairs wanted. max_rank: an upper bound of the rank of ``A``
            (e.g. the number of data rows), caps ``k`` and the subspace size.
        oversample, tol, max_passes, seed: see the module constants.

    Returns:
        ``(values (k',), vectors (dim, k'), trace, passes)``, values decreasing, ``k' <= k``.
    """
    r = int(min(k + oversample, dim, max_rank))
    k = int(min(k, r))
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((dim, r)))  # (dim, r)
    trace, passes = 0.0, 0
    w = np.zeros(r)
    vecs = q
    for passes in range(1, max_passes + 1):
        aq, trace = apply(q)  # (dim, r)
        h = q.T @ aq  # (r, r) Rayleigh quotient
        w, u = np.linalg.eigh(0.5 * (h + h.T))
        order = np.argsort(w)[::-1]
        w, u = w[order], u[:, order]
        vecs, avecs = q @ u, aq @ u  # Ritz vectors and A times them, (dim, r)
        top = max(float(w[0]), 1e-300)
        live = w[:k] > RANK_TOL * top  # modes below the rank tolerance are dropped: no need to converge
        res = np.linalg.norm(avecs[:, :k] - vecs[:, :k] * w[:k], axis=0) / np.where(live, w[:k], 1.0)  # (k,)
        if not np.any(res[live] > tol):
            break
        q, _ = np.linalg.qr(avecs)
    return w[:k].copy(), np.ascontiguousarray(vecs[:, :k]), float(trace), passes


def grouped_mean(ds: Dataset, indices: np.ndarray, groups: np.ndarray, num_groups: int) -> np.ndarray:
    """(G, 3V) float64 mean of ``ds.vertices[indices]`` per group (``groups`` in [0, G)), streamed."""
    nv = ds.num_vertices
    acc = np.zeros((num_groups, 3 * nv))
    order = np.argsort(indices, kind="stable")  # ascending file order
    for s in range(0, len(order), CHUNK_SAMPLES):
        sel = order[s : s + CHUNK_SAMPLES]
        chunk = np.asarray(ds.vertices[indices[sel]], dtype=np.float64).reshape(len(sel), -1)  # (c, 3V)
        np.add.at(acc, groups[sel], chunk)
    counts = np.bincount(groups, minlength=num_groups).astype(np.float64)
    return acc / counts[:, None]


@dataclass(frozen=True)
class NeutralIdentity:
    """What :func:`neutral_identity_pca` computes: each identity's neutral and their PCA.

    Attributes:
        dataset: the loaded dataset.
        mean: (V, 3) float64 mean neutral (dataset unit).
        neutrals: (I, V, 3) float64 neutral of each kept identity.
        identity_labels: (I,) int64 identity label of each row of ``neutrals``.
        identity: the identity :class:`PCAModes` (centred, module Convention).
        sample_indices: (M,) int64 dataset indices (ascending) of the split's samples whose
            identity has a neutral (the ones with a displacement from it).
        sample_rows: (M,) int64 row of ``neutrals`` of each of those samples.
        skipped_identities: identities of the split without a neutral-labeled sample.
        unlabeled_samples: samples of the split without an identity label.
        skipped_samples: samples of the split without a displacement (no identity, or an
            identity without a neutral).
    """

    dataset: Any
    mean: np.ndarray
    neutrals: np.ndarray
    identity_labels: np.ndarray
    identity: PCAModes
    sample_indices: np.ndarray
    sample_rows: np.ndarray
    skipped_identities: int
    unlabeled_samples: int
    skipped_samples: int


def neutral_identity_pca(
    dataset: Dataset | str | os.PathLike,
    identity_modes: int,
    split: str = "train",
    progress: Callable[[str], None] | None = None,
    model: str = "baseline",
) -> NeutralIdentity:
    """Each identity's neutral face and their centred PCA (module Convention), shared by the
    linear 3DMM and the CoMA baseline.

    Args:
        dataset: a loaded :class:`fitface.data.format.Dataset` or its folder.
        identity_modes: PCA modes wanted (at most ``I - 1`` are supported).
        split: ``"train"`` | ``"val"`` | ``"test"``.
        progress: optional ``progress(message)``.
        model: the model's name, for error messages.

    Returns:
        :class:`NeutralIdentity`.

    Raises:
        InputError: the dataset has no identity / expression factor or no ``"neutral"`` class,
            or fewer than :data:`MIN_IDENTITIES` identities of the split have a neutral sample.
        ValueError: an unknown split.
    """
    from fitface.data.format import load_dataset

    say = progress or (lambda msg: None)
    ds = dataset if hasattr(dataset, "vertices") else load_dataset(dataset)
    names = ds.factor_names
    for factor in ("identity", "expression"):
        if factor not in names:
            raise InputError(f"the dataset has no {factor!r} factor (factors: {', '.join(names) or 'none'}); "
                             f"a {model} needs identity labels and neutral expression labels", ds.path)
    exp_classes = list(ds.factor("expression").classes)
    if NEUTRAL_CLASS not in exp_classes:
        raise InputError(f"the dataset's expression classes have no {NEUTRAL_CLASS!r} "
                         f"({', '.join(exp_classes)}); the {model} needs neutral faces", ds.path)
    neutral = exp_classes.index(NEUTRAL_CLASS)

    idx = ds.indices(split)  # (n,)
    ident = ds.label("identity")[idx]
    expr = ds.label("expression")[idx]
    unlabeled = int(np.sum(ident < 0))
    present = np.unique(ident[ident >= 0])
    is_neutral = (expr == neutral) & (ident >= 0)
    kept = np.unique(ident[is_neutral])  # (I,) identity labels with a neutral
    skipped = int(len(present) - len(kept))
    if len(kept) < MIN_IDENTITIES:
        raise InputError(
            f"only {len(kept)} identities of the {split!r} split ({len(present)} in all, {skipped} without one) "
            f"have a sample labeled {NEUTRAL_CLASS!r}; the {model} needs at least {MIN_IDENTITIES}", ds.path)
    row_of = np.full(int(ident.max()) + 1 if len(ident) else 1, -1, dtype=np.int64)
    row_of[kept] = np.arange(len(kept))

    n_idx = idx[is_neutral]
    neutrals = grouped_mean(ds, n_idx, row_of[ident[is_neutral]], len(kept))  # (I, 3V)
    mean, id_pca = identity_pca(neutrals, identity_modes)
    say(f"identity PCA: {len(kept)} identities ({skipped} skipped without a neutral), {id_pca.num_modes} modes")

    use = (ident >= 0) & (row_of[np.maximum(ident, 0)] >= 0)
    e_idx, e_row = idx[use], row_of[ident[use]]  # (M,), (M,)
    order = np.argsort(e_idx, kind="stable")
    nvert = ds.num_vertices
    return NeutralIdentity(ds, mean.reshape(nvert, 3), neutrals.reshape(-1, nvert, 3), kept.astype(np.int64), id_pca,
                           e_idx[order].astype(np.int64), e_row[order].astype(np.int64), skipped, unlabeled,
                           int(len(idx) - int(use.sum())))


# ------------------------------------------------------------------------------ building
def linear_3dmm_parts(
    dataset: Dataset | str | os.PathLike,
    layout: LatentLayout = PAPER_LAYOUT,
    split: str = "train",
    progress: Callable[[str], None] | None = None,
) -> Linear3DMMParts:
    """Fit the additive linear 3DMM to a dataset split (see the module Convention).

    Args:
        dataset: a loaded :class:`fitface.data.format.Dataset` or its folder.
        layout: latent layout; must have ``"identity"`` and ``"expression"`` blocks.
        split: ``"train"`` | ``"val"`` | ``"test"``.
        progress: optional ``progress(message)`` called after each stage / pass.

    Returns:
        :class:`Linear3DMMParts`.

    Raises:
        InputError: the dataset has no identity / expression factor or no ``"neutral"`` class,
            or fewer than :data:`MIN_IDENTITIES` identities of the split have a neutral sample.
        ValueError: a layout without identity / expression blocks, an unknown split.
    """
    t0 = time.perf_counter()
    say = progress or (lambda msg: None)
    for block in ("identity", "expression"):
        if block not in layout.names:
            raise ValueError(f"layout: a linear 3DMM needs an {block!r} block, got {layout.describe()}")
    ni = neutral_identity_pca(dataset, layout.size("identity"), split, progress, model="linear 3DMM")
    ds, id_pca, kept, skipped = ni.dataset, ni.identity, ni.identity_labels, ni.skipped_identities
    neutrals, mean = ni.neutrals.reshape(len(kept), -1), ni.mean.reshape(-1)  # (I, 3V), (3V,)

    # --- expression PCA on displacements from the identity's neutral -----------------------
    e_idx, e_row = ni.sample_indices, ni.sample_rows  # (M,), (M,)
    neutrals32 = neutrals.astype(np.float32)
    nv3 = 3 * ds.num_vertices

    def apply(q: np.ndarray) -> tuple[np.ndarray, float]:
        """One pass: (D^T D) q and trace(D^T D), streaming D in chunks."""
        q32 = q.astype(np.float32)
        out = np.zeros_like(q)  # (3V, r) float64
        trace = 0.0
        for s in range(0, len(e_idx), CHUNK_SAMPLES):
            d = np.asarray(ds.vertices[e_idx[s : s + CHUNK_SAMPLES]]).reshape(-1, nv3)  # (c, 3V) float32
            d -= neutrals32[e_row[s : s + CHUNK_SAMPLES]]
            out += d.T @ (d @ q32)  # (3V, c) @ (c, r)
            trace += float(np.einsum("ij,ij->", d, d, dtype=np.float64))
        return out, trace

    k_exp = layout.size("expression")
    m = len(e_idx)
    passes_done = []

    def counted(q):
        res = apply(q)
        passes_done.append(1)
        say(f"expression PCA: pass {len(passes_done)} over {m} displacements")
        return res

    lam, vecs, trace, passes = streaming_top_eigs(counted, nv3, k_exp, max_rank=m)
    lam = np.maximum(lam, 0.0)
    keep = int(np.sum(lam > RANK_TOL * max(float(lam[0]) if lam.size else 0.0, 1e-300)))
    lam, modes = lam[:keep], _fix_signs(np.ascontiguousarray(vecs[:, :keep].T))
    var = lam / m
    ratio = lam / trace if trace > 0 else np.zeros_like(lam)
    exp_pca = PCAModes(modes, np.sqrt(var), var, ratio, trace / m, m, int(k_exp), passes)

    # --- basis in layout order ------------------------------------------------------------
    basis = np.zeros((nv3, layout.dim))
    sl = layout.slice("identity")
    basis[:, sl.start : sl.start + id_pca.num_modes] = id_pca.modes.T * id_pca.std
    sl = layout.slice("expression")
    basis[:, sl.start : sl.start + exp_pca.num_modes] = exp_pca.modes.T * exp_pca.std
    nvert = ds.num_vertices
    return Linear3DMMParts(mean.reshape(nvert, 3), neutrals.reshape(-1, nvert, 3), kept.astype(np.int64), id_pca,
                           exp_pca, basis, layout, skipped, ni.unlabeled_samples, time.perf_counter() - t0)


def build_linear_3dmm(
    dataset: Dataset | str | os.PathLike,
    layout: LatentLayout = PAPER_LAYOUT,
    split: str = "train",
    progress: Callable[[str], None] | None = None,
) -> FaceModel:
    """The additive linear 3DMM baseline as a :class:`FaceModel` (generator kind ``"linear"``).

    Args:
        dataset: a loaded :class:`fitface.data.format.Dataset` or its folder.
        layout: latent layout (default the paper's identity 65, expression 15, noise 5).
        split: the split to build from (``"train"``).
        progress: optional ``progress(message)`` callback.

    Returns:
        A float32 :class:`FaceModel` on the CPU: template = mean neutral (V, 3) in the dataset's
        unit, the dataset's faces, landmark sets and class names, UV = the harmonic
        parameterisation of the dataset template (as the GAN trainer computes it), and
        ``metadata["baseline"]`` = counts and explained variances (:meth:`PCAModes.to_json`).

    Raises:
        InputError / ValueError: see :func:`linear_3dmm_parts`.
    """
    import torch

    from fitface.data.format import load_dataset
    from fitface.geometry.parameterization import harmonic_uv
    from fitface.models.face_model import FaceModel
    from fitface.models.linear import LinearGenerator

    ds = dataset if hasattr(dataset, "vertices") else load_dataset(dataset)
    parts = linear_3dmm_parts(ds, layout, split, progress)
    uv = harmonic_uv(np.asarray(ds.template_vertices, dtype=np.float64), ds.faces, what="template").uv  # (V, 2)
    gen = LinearGenerator(torch.from_numpy(parts.basis.astype(np.float32)))
    classes = {f.name: list(f.classes) for f in ds.factors if f.name in layout.factors}
    meta = {
        "baseline": {
            "kind": "linear_3dmm",
            "reference": "Amberg, Knothe, Vetter 2008, Expression invariant 3D face recognition "
                         "with a morphable model (paper ref. [1]); paper section 5.5",
            "split": split,
            "identities": len(parts.identity_labels),
            "identities_skipped_without_neutral": parts.skipped_identities,
            "samples_without_identity": parts.unlabeled_samples,
            "expression_samples": parts.expression.count,
            "identity": parts.identity.to_json(),
            "expression": parts.expression.to_json(),
            "build_seconds": round(parts.seconds, 3),
        },
        "dataset": {"fingerprint": ds.fingerprint, "path": str(ds.path), "info": ds.info},
    }
    import json

    return FaceModel(parts.mean, ds.faces, uv, layout, gen, unit=ds.unit, landmark_sets=ds.landmark_sets,
                     image_size=IMAGE_SIZE, classes=classes,
                     metadata=json.loads(json.dumps(meta, default=str))).eval()
