"""A warm start for the GAN's generator: the exact additive linear 3DMM as a two-layer MLP.

The generator is ``out(act(fc(z)))`` with ``act`` a LeakyReLU of slope ``a``. For any ``z``,
``act(z) - act(-z) = (1 + a) z``, so a hidden layer holding ``[z, -z]`` (2D units) and a last
layer holding ``[B, -B] / (1 + a)`` gives ``G(z) = B z + b`` *exactly*: G starts as the linear
model of :mod:`fitface.models.builders.linear` (the paper's own baseline) and training moves it
from there. The remaining ``H - 2D`` hidden units keep their random input weights with zero output
weights, so they add nothing at the start and get gradients at once.

Convention:
    * ``basis``: (3V, D) float, row ``3v + c`` = coordinate ``c`` of vertex ``v`` (the
      generator's row order), columns in latent-layout order, dataset unit per unit code.
    * ``offset``: (3V,) float, the linear model's mean face minus the dataset template (G
      outputs displacements from the dataset template).
    * Fixed codes T ("model"): each labeled class's code is the least-squares code of the
      class's mean training face under the linear model (codes are linear in the face, so this
      is the mean of the class's codes); classes without a labeled training sample keep their
      random code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fitface.checks import check_shape


@dataclass
class LinearInit:
    """The linear model a generator starts from.

    Attributes:
        basis: (3V, D) float64, dataset unit per unit code.
        offset: (3V,) float64 displacement of the linear model's mean face from the template.
        codes: ``{factor: (n_classes, d_factor) float32}`` class codes (see module Convention),
            rows of classes without labeled samples NaN.
        seconds: time to build.
    """

    basis: np.ndarray
    offset: np.ndarray
    codes: dict
    seconds: float


@torch.no_grad()
def set_linear(generator, basis: torch.Tensor, offset: torch.Tensor) -> None:
    """Make ``generator`` compute ``basis @ z + offset`` exactly (in place).

    Args:
        generator: a :class:`fitface.models.generator.Generator` with ``hidden >= 2 D``.
        basis: (3V, D) float (dataset unit).
        offset: (3V,) float.

    Raises:
        ValueError: shapes do not match the generator, or its hidden layer is narrower than 2 D.
    """
    D, H = generator.latent_dim, generator.hidden_size
    check_shape("basis", basis, (3 * generator.num_vertices, D))
    check_shape("offset", offset, (3 * generator.num_vertices,))
    if H < 2 * D:
        raise ValueError(f"generator: a linear warm start needs hidden >= 2 x latent ({2 * D}), got {H}")
    a = generator.negative_slope
    W1, W2 = generator.fc.weight, generator.out.weight  # (H, D), (3V, H)
    eye = torch.eye(D, dtype=W1.dtype, device=W1.device)
    W1[:D] = eye
    W1[D:2 * D] = -eye
    generator.fc.bias.zero_()
    B = basis.to(W2) / (1.0 + a)
    W2.zero_()
    W2[:, :D] = B
    W2[:, D:2 * D] = -B
    generator.out.bias.copy_(offset.to(W2))


def class_codes(ds, indices: np.ndarray, basis: np.ndarray, mean_face: np.ndarray, layout) -> dict:
    """Least-squares codes of each labeled class's mean face (see module Convention).

    Args:
        ds: the dataset. indices: (n,) training sample indices.
        basis: (3V, D) float64. mean_face: (3V,) float64 the linear model's mean.
        layout: the latent layout (blocks named like the dataset's factors).

    Returns:
        ``{factor: (n_classes, d) float32}``; rows of classes without samples are NaN.
    """
    from fitface.models.builders.linear import grouped_mean

    live = np.flatnonzero(np.abs(basis).sum(0) > 0)  # (k,) columns the data supports
    out = {}
    for f in ds.factors:
        if f.name not in layout.factors:
            continue
        lab = ds.label(f.name)[indices]
        sel = lab >= 0
        codes = np.full((f.num_classes, layout.size(f.name)), np.nan, dtype=np.float32)
        if sel.any():
            present = np.unique(lab[sel])  # (c,)
            row = np.full(f.num_classes, -1, dtype=np.int64)
            row[present] = np.arange(len(present))
            means = grouped_mean(ds, indices[sel], row[lab[sel]], len(present))  # (c, 3V)
            z = np.zeros((len(present), basis.shape[1]))
            z[:, live] = np.linalg.lstsq(basis[:, live], (means - mean_face).T, rcond=None)[0].T
            sl = layout.slice(f.name)
            codes[present] = z[:, sl].astype(np.float32)
        out[f.name] = codes
    return out


def linear_warm_start(ds, indices_split: str, layout, template: np.ndarray, log=None,
                      with_codes: bool = True) -> LinearInit:
    """Build the additive linear 3DMM of a training split and what a warm start needs from it.

    Args:
        ds: the dataset (with identity labels and "neutral" expression labels).
        indices_split: the training split's name.
        layout: the GAN's latent layout (the 3DMM fills its identity and expression blocks).
        template: (V, 3) float the dataset template G's displacements are relative to.
        log: optional ``log(message)``.
        with_codes: also compute the class codes (a pass over the labeled training faces);
            False leaves :attr:`LinearInit.codes` empty (for the penalties' projector alone).

    Returns:
        :class:`LinearInit`.
    """
    import time

    from fitface.models.builders.linear import linear_3dmm_parts

    t0 = time.perf_counter()
    parts = linear_3dmm_parts(ds, layout, indices_split, progress=log)
    mean = parts.mean.reshape(-1)  # (3V,)
    offset = mean - np.asarray(template, np.float64).reshape(-1)
    codes = class_codes(ds, ds.indices(indices_split), parts.basis, mean, layout) if with_codes else {}
    return LinearInit(parts.basis, offset, codes, time.perf_counter() - t0)
