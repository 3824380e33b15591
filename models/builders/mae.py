"""The paper's MAE baseline (Fernandez Abrevaya, Wuhrer, Boyer, WACV 2018; paper ref. [14]).

A multilinear autoencoder: an encoder maps a face to an identity code ``w_id`` (65) and an
expression code ``w_exp`` (20), the multilinear decoder
(:class:`fitface.models.multilinear.MultilinearGenerator`) maps them back,
``displacement = core x2 w_id x3 w_exp + offset``; both are trained jointly on reconstruction,
with label terms where the data has identity / expression labels. :func:`build_mae` builds one
from a fitface dataset and returns a :class:`FaceModel` (generator kind ``"multilinear"``) whose
prior ``z ~ N(0, I)`` samples the Gaussian of the training codes, so model files, sampling,
fitting, retargeting and ``fitface evaluate`` treat it like the GAN and the linear 3DMM. The
encoder is a training device only: it is not part of the model (fitting optimises the code).

Convention:
    * Constant slots (our initialisation, see docs/training.md): the first coefficient of each
      factor is the constant 1, ``w_id = [1, a]`` (a: 64 free), ``w_exp = [1, b]`` (b: 19
      free); the encoder predicts ``a`` and ``b``. With ``core[:, 0, 0]`` the mean shift,
      ``core[:, i, 0]`` the identity modes, ``core[:, 0, j]`` the expression modes and
      ``core[:, i, j]`` (i, j >= 1) the identity-expression interactions, the model is
      ``template + c00 + sum_i a_i c_i0 + sum_j b_j c_0j + sum_ij a_i b_j c_ij``. The builder
      starts it as exactly the additive linear 3DMM (:func:`initial_core`: the 3DMM's
      identity / expression PCA columns, ``c00 = 0``, interactions 0), which needs only neutral
      labels, not the complete identity x expression tensor of the original HOSVD. The constant
      slots also fix the bilinear scale ambiguity ``(s w_id, w_exp / s)`` during training.
    * ``offset`` stays 0 (``core[:, 0, 0]`` plays its role); the template is the mean neutral.
    * Encoder input: the geometry image (:class:`fitface.geometry.mapping.GeometryMapping`,
      harmonic UV of the dataset template, ``image_size`` pixels a side) of the displacement
      from the template, divided by ``s``, the RMS displacement coordinate of the training split
      (:func:`displacement_scale`), i.e. dimensionless, ~unit scale.
    * Losses are on displacements divided by ``s`` (dimensionless); the report's
      ``rmse_mm`` is the per-vertex RMSE in the dataset unit (mm for the built-in sets).
    * Batches are streamed from the memory-mapped dataset (one batch in RAM); the order is a
      function of ``seed`` and the epoch only (:func:`grouped_epoch`), the encoder's initial
      weights of ``seed``: a build with a step budget (``max_steps``/``max_epochs``) is
      deterministic for a seed (on one thread); a wall-clock budget stops after a varying count.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from fitface.checks import check_shape
from fitface.errors import InputError
from fitface.latent import LatentLayout

from .common import BaselineBuild

if TYPE_CHECKING:  # pragma: no cover
    from fitface.data.format import Dataset
    from fitface.models.multilinear import MultilinearGenerator

    from .linear import Linear3DMMParts

#: ``metadata["baseline"]["kind"]`` of a model this module builds.
KIND = "mae"
REFERENCE = ("Fernandez Abrevaya, Wuhrer, Boyer 2018, Multilinear autoencoder for 3D face model learning, "
             "WACV 2018 (paper ref. [14])")
#: Stop reasons in the report.
STOP_REASONS = ("max_epochs", "max_steps", "max_minutes")
#: Samples encoded at a time when collecting the training codes.
ENCODE_BATCH = 64


@dataclass
class MaeBuildConfig:
    """Settings of :func:`build_mae` (all JSON-serialisable; stored in the model's metadata).

    Attributes:
        identity_dims: ``d_id`` (paper 65), constant slot included (so ``d_id - 1`` free).
        expression_dims: ``d_exp`` (paper 20), constant slot included.
        split: the dataset split to train on.
        max_epochs: epochs (fractions allowed); the paper trains 200.
        max_minutes: wall-clock budget of the training loop (None: none). Whichever of
            ``max_epochs``, ``max_steps``, ``max_minutes`` comes first stops training.
        max_steps: optional cap on optimiser steps (deterministic short builds, tests).
        batch_size: samples per step.
        group_size: samples of one label key placed next to each other in the epoch order
            (:func:`grouped_epoch`), so batches contain pairs for the label terms.
        lr_encoder, lr_decoder: Adam learning rates of the encoder and of the core.
        weight_reconstruction, weight_identity, weight_expression: loss weights
            (:func:`reconstruction_loss`, :func:`identity_loss`, :func:`expression_loss`).
        image_size: geometry-image side (pixels; divisible by 2 ** len(encoder_channels)).
        encoder_channels: output channels of the encoder's stride-2 convolutions.
        image_skip: the heads also see the flattened input image (a linear path).
        code_samples: training samples encoded after training for the codes' Gaussian
            (evenly spaced over the split; all of them when the split is smaller).
        log_every: steps per row of the report's ``curve`` (mean losses over those steps).
        seed: seed of the encoder's initialisation and of the batch order.
        show_progress: a tqdm bar on stderr.
    """

    identity_dims: int = 65
    expression_dims: int = 20
    split: str = "train"
    max_epochs: float = 200.0
    max_minutes: float | None = 30.0
    max_steps: int | None = None
    batch_size: int = 16
    group_size: int = 4
    lr_encoder: float = 1e-4
    lr_decoder: float = 1e-4
    weight_reconstruction: float = 1.0
    weight_identity: float = 0.1
    weight_expression: float = 0.1
    image_size: int = 64
    encoder_channels: tuple[int, ...] = (16, 32, 64, 128)
    image_skip: bool = True
    code_samples: int = 4096
    log_every: int = 50
    seed: int = 0
    show_progress: bool = True

    def validate(self) -> None:
        """ValueError naming the first bad setting."""
        if self.identity_dims < 2 or self.expression_dims < 2:
            raise ValueError(f"identity_dims / expression_dims: need >= 2 (one constant slot + free ones), "
                             f"got {self.identity_dims}, {self.expression_dims}")
        if not self.max_epochs > 0:
            raise ValueError(f"max_epochs: must be > 0, got {self.max_epochs}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"max_minutes: must be > 0 or None, got {self.max_minutes}")
        if self.max_steps is not None and self.max_steps < 0:
            raise ValueError(f"max_steps: must be >= 0 or None, got {self.max_steps}")
        for name in ("batch_size", "group_size", "code_samples", "image_size", "log_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("lr_encoder", "lr_decoder", "weight_reconstruction", "weight_identity", "weight_expression"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.image_size % (2 ** len(self.encoder_channels)):
            raise ValueError(f"image_size: {self.image_size} is not divisible by 2 ** {len(self.encoder_channels)} "
                             f"(one halving per encoder convolution)")

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["encoder_channels"] = list(self.encoder_channels)
        return d


# ------------------------------------------------------------------------------ the model parts
def initial_core(parts: Linear3DMMParts, identity_dims: int, expression_dims: int) -> torch.Tensor:
    """The core that makes the multilinear model the additive linear 3DMM (module Convention).

    Args:
        parts: :func:`fitface.models.builders.linear.linear_3dmm_parts` with a layout of blocks
            ``identity (identity_dims - 1), expression (expression_dims - 1)``.
        identity_dims, expression_dims: ``d_id``, ``d_exp`` (constant slots included).

    Returns:
        (3V, d_id, d_exp) float32 core, dataset unit: ``core[:, 1 + i, 0]`` = the 3DMM's identity
        column i (mode times its std), ``core[:, 0, 1 + j]`` = expression column j, all else 0.
        So ``core x2 [1, a] x3 [1, b] = basis @ [a, b]``, the 3DMM's displacement.
    """
    ni, nj = identity_dims - 1, expression_dims - 1
    if parts.layout.blocks != (("identity", ni), ("expression", nj)):
        raise ValueError(f"parts: expected a layout (identity {ni}, expression {nj}), got {parts.layout.describe()}")
    basis = parts.basis  # (3V, ni + nj) float64
    core = np.zeros((basis.shape[0], identity_dims, expression_dims))
    core[:, 1:, 0] = basis[:, :ni]
    core[:, 0, 1:] = basis[:, ni:]
    return torch.from_numpy(core.astype(np.float32))


def displacement_scale(parts: Linear3DMMParts) -> float:
    """``s``: RMS displacement coordinate of the split from the mean neutral (dataset unit).

    ``s = sqrt((T_id + T_exp) / 3V)`` with ``T_id`` the total variance of the identities'
    neutrals and ``T_exp`` the mean squared norm of the displacements from each identity's
    neutral (the 3DMM's ``PCAModes.total``): the variance of the faces about the mean neutral
    when identity and expression parts are uncorrelated. Only a normaliser; needs no data pass.

    Raises:
        InputError: ``s`` is 0 (every face equals the template).
    """
    s = math.sqrt((parts.identity.total + parts.expression.total) / parts.basis.shape[0])
    if not s > 0:
        raise InputError("the training faces do not differ from their mean neutral (displacement scale 0)")
    return s


def initial_generator(parts: Linear3DMMParts, identity_dims: int, expression_dims: int) -> MultilinearGenerator:
    """The untrained multilinear generator equal to the linear 3DMM of ``parts``.

    Its Gaussians are ``w_id = e_0 + diag(0, 1, ..., 1) z_id`` (likewise for the expression), so
    the code ``z = [0, z_id_3dmm, 0, z_exp_3dmm]`` decodes exactly what the 3DMM's code
    ``[z_id_3dmm, z_exp_3dmm]`` decodes (the first slot of each block is unused).
    """
    from fitface.models.multilinear import MultilinearGenerator

    def slot(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.zeros(n)
        mean[0] = 1.0
        scale = torch.eye(n)
        scale[0, 0] = 0.0
        return mean, scale

    (im, isc), (em, esc) = slot(identity_dims), slot(expression_dims)
    return MultilinearGenerator(initial_core(parts, identity_dims, expression_dims), None, im, isc, em, esc)


def with_constant_slot(free: torch.Tensor) -> torch.Tensor:
    """(B, k) free coefficients -> (B, k + 1) mode coefficients ``[1, free]``."""
    return torch.cat([free.new_ones(free.shape[0], 1), free], dim=1)


def decode_coefficients(core: torch.Tensor, offset: torch.Tensor, w_id: torch.Tensor,
                        w_exp: torch.Tensor) -> torch.Tensor:
    """Displacements of mode coefficients: ``einsum('rij,bi,bj->br', core, w_id, w_exp) + offset``.

    Args:
        core: (3V, d_id, d_exp) float. offset: (3V,) float.
        w_id: (B, d_id) float. w_exp: (B, d_exp) float.

    Returns:
        (B, V, 3) float displacements (core's unit).
    """
    n3v, ni, nj = core.shape
    h = (w_id[:, :, None] * w_exp[:, None, :]).reshape(w_id.shape[0], ni * nj)  # (B, I J)
    flat = nn.functional.linear(h, core.reshape(n3v, ni * nj), offset)  # (B, 3V)
    return flat.view(w_id.shape[0], n3v // 3, 3)


class MaeEncoder(nn.Module):
    """Geometry image -> free identity / expression coefficients (our design; no source has one).

    ``len(channels)`` convolutions 4x4, stride 2, padding 1, each followed by LeakyReLU(0.2)
    (size S -> S / 2 ** n), flattened, then two linear heads (identity, expression). With
    ``image_skip`` the heads' input is ``[conv features, flattened input image / sqrt(3 S^2)]``
    (a linear path from the image; the factor keeps Adam's per-weight steps from moving the
    output by ~lr x 3 S^2). The heads start at zero; :meth:`set_linear_projection` sets the
    linear path (the builder sets it to the linear 3DMM's least-squares projection).

    Args:
        identity_free, expression_free: head sizes (``d_id - 1``, ``d_exp - 1``).
        image_size: S. channels: conv output channels. image_skip: see above.
    """

    def __init__(self, identity_free: int, expression_free: int, image_size: int = 64,
                 channels: tuple[int, ...] = (16, 32, 64, 128), image_skip: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for c in channels:
            layers += [nn.Conv2d(cin, int(c), 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            cin = int(c)
        self.convs = nn.Sequential(*layers)
        self.image_size = int(image_size)
        self.image_skip = bool(image_skip)
        side = self.image_size // 2 ** len(channels)
        self.conv_features = cin * side * side
        self.skip_gain = 1.0 / math.sqrt(3 * self.image_size**2)
        features = self.conv_features + (3 * self.image_size**2 if image_skip else 0)
        self.identity_head = nn.Linear(features, int(identity_free))
        self.expression_head = nn.Linear(features, int(expression_free))
        for head in (self.identity_head, self.expression_head):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image: (B, 3, S, S) float normalised displacement image -> ``(a (B, d_id - 1), b (B, d_exp - 1))``."""
        check_shape("image", image, (None, 3, self.image_size, self.image_size))
        f = self.convs(image).flatten(1)  # (B, C side^2)
        if self.image_skip:
            f = torch.cat([f, image.flatten(1) * self.skip_gain], dim=1)  # (B, F)
        return self.identity_head(f), self.expression_head(f)

    @torch.no_grad()
    def set_linear_projection(self, weight: torch.Tensor) -> None:
        """Make the linear path ``[a, b] = weight @ image.flatten()`` (conv path unchanged).

        Args:
            weight: (d_id - 1 + d_exp - 1, 3 S^2) float, per unit of the (normalised) image.
        """
        if not self.image_skip:
            raise ValueError("set_linear_projection: the encoder has no image_skip path")
        ni = self.identity_head.out_features
        check_shape("weight", weight, (ni + self.expression_head.out_features, 3 * self.image_size**2))
        w = weight.to(self.identity_head.weight.dtype) / self.skip_gain
        self.identity_head.weight[:, self.conv_features :] = w[:ni]
        self.expression_head.weight[:, self.conv_features :] = w[ni:]


def linear_projection(basis: np.ndarray, mapping, scale: float) -> torch.Tensor:
    """The least-squares map from a normalised geometry image to the 3DMM's coefficients.

    With ``G`` (3 S^2, k) the geometry images of the basis columns (``mapping`` of each column as
    a (V, 3) displacement, flattened channel-major), a displacement ``d = basis c`` has the
    normalised image ``G c / s``, so ``c = s G^+ image`` (exact in the span of the basis when
    ``G`` has full column rank; zero columns of ``basis`` give zero rows).

    Args:
        basis: (3V, k) float64 3DMM basis (dataset unit). mapping: a
            :class:`~fitface.geometry.mapping.GeometryMapping`. scale: ``s``.

    Returns:
        (k, 3 S^2) float32 ``s G^+``.
    """
    live = np.flatnonzero(np.abs(basis).max(axis=0) > 0)  # (k',) supported columns
    cols = torch.from_numpy(np.ascontiguousarray(basis[:, live].T)).reshape(len(live), -1, 3)  # (k', V, 3)
    g = mapping(cols).reshape(len(live), -1).T  # (3 S^2, k') float64
    out = torch.zeros(basis.shape[1], g.shape[0], dtype=torch.float64)
    out[torch.from_numpy(live)] = scale * torch.linalg.pinv(g, rtol=1e-6)
    return out.float()  # (k, 3 S^2)


# ------------------------------------------------------------------------------ losses
def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, scale: float) -> torch.Tensor:
    """Mean squared normalised vertex error of every sample.

    ``L_rec = 1 / (3 B V) sum_{b, v, c} ((x^_bvc - x_bvc) / s)^2``.

    Args:
        pred, target: (B, V, 3) float displacements (or vertices), dataset unit.
        scale: ``s``, the training split's displacement std (dataset unit).

    Returns:
        () float, dimensionless.
    """
    check_shape("target", target, tuple(pred.shape))
    return ((pred - target) / scale).square().mean()


def label_pull(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of labeled samples to their label's batch mean.

    With ``P`` the samples whose label ``l_b >= 0`` occurs at least twice in the batch and
    ``m_l`` the mean feature of the batch samples labeled ``l``:
    ``L = 1 / (|P| F) sum_{b in P} |f_b - m_{l_b}|^2`` (0 when ``P`` is empty). Samples with
    label -1 (unlabeled) or a label alone in the batch get a zero gradient.

    Args:
        features: (B, F) float. labels: (B,) int64, -1 = unlabeled.

    Returns:
        () float, in the features' unit squared.
    """
    check_shape("labels", labels, (features.shape[0],))
    keep = labels >= 0
    if int(keep.sum()) < 2:
        return features.sum() * 0.0 + 0.0  # an exact +0 that keeps the graph
    f, lab = features[keep], labels[keep]
    uniq, inv, counts = torch.unique(lab, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(uniq), f.shape[1], dtype=f.dtype, device=f.device).index_add_(0, inv, f)  # (G, F)
    means = sums / counts[:, None].to(f.dtype)
    pair = counts[inv] >= 2  # (P',)
    if not bool(pair.any()):
        return features.sum() * 0.0 + 0.0
    return (f[pair] - means[inv[pair]]).square().mean()


def identity_loss(core: torch.Tensor, w_id: torch.Tensor, labels: torch.Tensor, scale: float) -> torch.Tensor:
    """Codes of samples sharing an identity label pulled together, measured as faces.

    ``N(w_id) = core[:, :, 0] w_id / s`` (3V,) is the face the identity code makes with the
    expression slot alone (``w_exp = e_0``, the neutral of the constant slot), normalised;
    ``L_id = label_pull(N(w_id), identity labels)`` (:func:`label_pull`). Measuring codes
    through the core makes the term invariant to re-scaling a code coordinate against its core
    slice (which would otherwise shrink it for free). The core is detached here: the term
    moves the codes (the encoder), the core learns from reconstruction only (this also avoids
    a full-size core gradient per term, which doubled the step time).

    Args:
        core: (3V, d_id, d_exp) float. w_id: (B, d_id) float. labels: (B,) int64 (-1 unlabeled).
        scale: ``s`` (dataset unit).

    Returns:
        () float, dimensionless.
    """
    check_shape("w_id", w_id, (None, core.shape[1]))
    return label_pull(w_id @ core[:, :, 0].detach().T / scale, labels)  # (B, 3V) features


def expression_loss(core: torch.Tensor, w_exp: torch.Tensor, labels: torch.Tensor, scale: float) -> torch.Tensor:
    """Codes of samples sharing an expression label pulled together, measured as displacements.

    ``E(w_exp) = core[:, 0, :] w_exp / s`` (3V,) is the displacement the expression code makes
    on the constant identity slot (``w_id = e_0``), normalised;
    ``L_exp = label_pull(E(w_exp), expression labels)`` (:func:`label_pull`); core detached
    as in :func:`identity_loss`.

    Args:
        core: (3V, d_id, d_exp) float. w_exp: (B, d_exp) float. labels: (B,) int64.
        scale: ``s`` (dataset unit).

    Returns:
        () float, dimensionless.
    """
    check_shape("w_exp", w_exp, (None, core.shape[2]))
    return label_pull(w_exp @ core[:, 0, :].detach().T / scale, labels)


@dataclass(frozen=True)
class MaeLossTerms:
    """The weighted terms of one step (each () float tensor) and their sum ``total``."""

    reconstruction: torch.Tensor
    identity: torch.Tensor
    expression: torch.Tensor
    total: torch.Tensor


def mae_losses(core: torch.Tensor, offset: torch.Tensor, a: torch.Tensor, b: torch.Tensor, target: torch.Tensor,
               identity_labels: torch.Tensor, expression_labels: torch.Tensor, scale: float,
               config: MaeBuildConfig) -> MaeLossTerms:
    """All terms of a batch (unweighted in the fields; ``total`` is the weighted sum).

    ``total = w_rec L_rec + w_id L_id + w_exp L_exp`` (:func:`reconstruction_loss`,
    :func:`identity_loss`, :func:`expression_loss`).

    Args:
        core: (3V, d_id, d_exp). offset: (3V,). a: (B, d_id - 1), b: (B, d_exp - 1) encoder
        outputs. target: (B, V, 3) displacements (dataset unit). identity_labels,
        expression_labels: (B,) int64 (-1 = unlabeled). scale: ``s``. config: the weights.
    """
    w_id, w_exp = with_constant_slot(a), with_constant_slot(b)
    pred = decode_coefficients(core, offset, w_id, w_exp)  # (B, V, 3)
    rec = reconstruction_loss(pred, target, scale)
    lid = identity_loss(core, w_id, identity_labels, scale)
    lexp = expression_loss(core, w_exp, expression_labels, scale)
    total = config.weight_reconstruction * rec + config.weight_identity * lid + config.weight_expression * lexp
    return MaeLossTerms(rec, lid, lexp, total)


# ------------------------------------------------------------------------------ batches
def grouped_epoch(identity_labels: np.ndarray, expression_labels: np.ndarray, group_size: int,
                  seed: int, epoch: int) -> np.ndarray:
    """One epoch's order of the training positions, label-grouped so batches hold label pairs.

    Each sample's key is its expression label when it has one, else its identity label, else
    none. Samples sharing a key are shuffled and cut into groups of ``group_size`` (unkeyed
    samples are groups of one); the groups are shuffled and concatenated. Every position occurs
    exactly once; the order depends only on ``(seed, epoch)``. (ICT: 7 % of the samples have an
    expression label; grouping them by expression puts same-expression, different-identity pairs
    in a batch, the identity groups give same-identity pairs.)

    Args:
        identity_labels, expression_labels: (n,) int64, -1 = unlabeled.
        group_size: >= 1. seed, epoch: the random stream.

    Returns:
        (n,) int64 permutation of ``range(n)``.
    """
    rng = np.random.default_rng([int(seed), int(epoch)])
    n = len(identity_labels)
    key = np.where(expression_labels >= 0, expression_labels, -1).astype(np.int64)
    kind = np.where(expression_labels >= 0, 0, np.where(identity_labels >= 0, 1, 2))
    key = np.where(kind == 1, identity_labels, key)
    groups: list[np.ndarray] = []
    for k in (0, 1):
        sel = np.flatnonzero(kind == k)
        for value in np.unique(key[sel]):
            members = rng.permutation(sel[key[sel] == value])
            groups += [members[i : i + group_size] for i in range(0, len(members), group_size)]
    groups += [np.array([i]) for i in np.flatnonzero(kind == 2)]
    order = rng.permutation(len(groups))
    out = np.concatenate([groups[i] for i in order]) if groups else np.zeros(0, np.int64)
    if len(out) != n:  # pragma: no cover - invariant
        raise RuntimeError("grouped_epoch lost samples")
    return out.astype(np.int64)


# ------------------------------------------------------------------------------ the build
def _encode_all(ds, positions: np.ndarray, indices: np.ndarray, template: torch.Tensor, mapping, scale: float,
                encoder: MaeEncoder) -> tuple[torch.Tensor, torch.Tensor]:
    """``(w_id (N, d_id), w_exp (N, d_exp))`` of the given training positions (no grad)."""
    ids, exps = [], []
    with torch.no_grad():
        for s in range(0, len(positions), ENCODE_BATCH):
            x = torch.from_numpy(ds.read(indices[positions[s : s + ENCODE_BATCH]])) - template  # (b, V, 3)
            a, b = encoder(mapping(x) / scale)
            ids.append(with_constant_slot(a))
            exps.append(with_constant_slot(b))
    return torch.cat(ids), torch.cat(exps)


def build_mae(dataset: Dataset | str, config: MaeBuildConfig | None = None,
              progress: Callable[[str], None] | None = None) -> BaselineBuild:
    """Build the MAE baseline (see the module Convention).

    Stages: the linear 3DMM of the split (identity ``d_id - 1``, expression ``d_exp - 1`` modes)
    -> :func:`initial_core`; joint Adam training of :class:`MaeEncoder` and the core on
    :func:`mae_losses` over label-grouped batches streamed from the memory map, until the first
    of ``max_epochs`` / ``max_steps`` / ``max_minutes``; then ``code_samples`` training samples
    are encoded and :meth:`MultilinearGenerator.from_codes` sets each factor's Gaussian.

    Args:
        dataset: a loaded :class:`fitface.data.format.Dataset` or its folder.
        config: :class:`MaeBuildConfig` (default: the defaults).
        progress: optional ``progress(message)``, called after each stage and each epoch.

    Returns:
        :class:`BaselineBuild`: the float32 CPU :class:`FaceModel` (layout identity ``d_id``,
        expression ``d_exp``, no noise; template = mean neutral, dataset unit; the dataset's
        faces, landmark sets and class names; ``metadata["baseline"]`` = kind ``"mae"``,
        reference, config, report; ``metadata["dataset"]``) and the report: ``epochs`` (float),
        ``steps``, ``epoch_losses`` (per epoch: mean ``reconstruction``, ``identity``,
        ``expression``, ``total``, ``rmse_mm``, ``steps``; the last may be partial),
        ``curve`` (the same means every ``log_every`` steps, with ``step`` and ``seconds``),
        ``initial`` (the terms of the first step's batch), ``seconds`` (training loop),
        ``seconds_per_step``, ``build_seconds``, ``stop_reason`` (:data:`STOP_REASONS`) and
        counts.

    Raises:
        ValueError: a bad config. InputError: a dataset without identity / expression factors,
            neutral labels, or too few training samples (see
            :func:`fitface.models.builders.linear.linear_3dmm_parts`).
    """
    from fitface.data.format import load_dataset
    from fitface.geometry.mapping import GeometryMapping
    from fitface.geometry.parameterization import harmonic_uv
    from fitface.models.face_model import FaceModel
    from fitface.models.multilinear import MultilinearGenerator

    from .linear import linear_3dmm_parts

    cfg = config or MaeBuildConfig()
    cfg.validate()
    t_build = time.perf_counter()
    say = progress or (lambda msg: None)
    ds = dataset if hasattr(dataset, "vertices") else load_dataset(dataset)
    ni, nj = int(cfg.identity_dims), int(cfg.expression_dims)
    parts = linear_3dmm_parts(ds, LatentLayout((("identity", ni - 1), ("expression", nj - 1))), cfg.split, progress)
    say(f"initial core: the linear 3DMM ({parts.identity.num_modes} identity, {parts.expression.num_modes} "
        f"expression modes) in {parts.seconds:.1f} s")
    idx = ds.indices(cfg.split)  # (n,)
    n = len(idx)
    if n < 2:
        raise InputError(f"split {cfg.split!r} has {n} samples; the MAE needs at least 2", ds.path)
    id_lab = ds.label("identity")[idx].astype(np.int64)
    exp_lab = ds.label("expression")[idx].astype(np.int64)
    template = torch.from_numpy(parts.mean.astype(np.float32))  # (V, 3) mean neutral
    scale = displacement_scale(parts)
    uv = harmonic_uv(np.asarray(ds.template_vertices, dtype=np.float64), ds.faces, what="template").uv  # (V, 2)
    mapping = GeometryMapping(uv, ds.faces, cfg.image_size)
    core = nn.Parameter(initial_core(parts, ni, nj))  # (3V, d_id, d_exp)
    offset = torch.zeros(core.shape[0])  # (3V,), fixed (core[:, 0, 0] is the learned shift)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg.seed))
        encoder = MaeEncoder(ni - 1, nj - 1, cfg.image_size, tuple(cfg.encoder_channels), cfg.image_skip)
    if cfg.image_skip:
        encoder.set_linear_projection(linear_projection(parts.basis, mapping, scale))
    opt = torch.optim.Adam([{"params": list(encoder.parameters()), "lr": cfg.lr_encoder},
                            {"params": [core], "lr": cfg.lr_decoder}], fused=True)

    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total_steps = math.ceil(cfg.max_epochs * steps_per_epoch)
    if cfg.max_steps is not None:
        total_steps = min(total_steps, int(cfg.max_steps))
    budget = None if cfg.max_minutes is None else 60.0 * float(cfg.max_minutes)
    bar = None
    if cfg.show_progress:
        from tqdm import tqdm

        bar = tqdm(total=total_steps, desc="mae", unit="step", file=sys.stderr, leave=False)
    names = ("reconstruction", "identity", "expression", "total", "rmse_mm")
    epoch_losses: list[dict[str, Any]] = []
    initial: dict[str, float] | None = None
    acc = dict.fromkeys(names, 0.0)
    acc_steps = 0
    curve: list[dict[str, Any]] = []
    window = dict.fromkeys(names, 0.0)
    window_steps = 0

    def log_window() -> None:
        nonlocal window, window_steps
        if window_steps:
            curve.append({"step": step, "seconds": round(time.perf_counter() - t0, 2),
                          **{k_: window[k_] / window_steps for k_ in names}})
        window, window_steps = dict.fromkeys(names, 0.0), 0
    step, epoch, order = 0, 0, grouped_epoch(id_lab, exp_lab, cfg.group_size, cfg.seed, 0)
    stop = "max_steps" if cfg.max_steps is not None and total_steps == cfg.max_steps else "max_epochs"
    t0 = time.perf_counter()

    def close_epoch(partial: bool) -> None:
        nonlocal acc, acc_steps
        if acc_steps:
            row = {k: acc[k] / acc_steps for k in names}
            row.update(epoch=epoch, steps=acc_steps, partial=partial)
            epoch_losses.append(row)
            say(f"epoch {epoch}{' (partial)' if partial else ''}: reconstruction {row['reconstruction']:.4g}, "
                f"identity {row['identity']:.4g}, expression {row['expression']:.4g}, rmse {row['rmse_mm']:.3f} "
                f"{ds.unit} ({acc_steps} steps)")
        acc, acc_steps = dict.fromkeys(names, 0.0), 0

    encoder.train()
    while step < total_steps:
        if budget is not None and time.perf_counter() - t0 >= budget:
            stop = "max_minutes"
            break
        k = step - epoch * steps_per_epoch
        pos = order[k * cfg.batch_size : (k + 1) * cfg.batch_size]  # (B,) positions in the split
        sel = np.argsort(idx[pos], kind="stable")
        verts = np.empty((len(pos), ds.num_vertices, 3), np.float32)
        verts[sel] = ds.read(idx[pos][sel])  # ascending file order from the memory map
        disp = torch.from_numpy(verts) - template  # (B, V, 3)
        a, b = encoder(mapping(disp) / scale)
        terms = mae_losses(core, offset, a, b, disp, torch.from_numpy(id_lab[pos]), torch.from_numpy(exp_lab[pos]),
                           scale, cfg)
        opt.zero_grad(set_to_none=True)
        terms.total.backward()
        opt.step()
        vals = {k_: float(getattr(terms, k_).detach()) for k_ in names[:4]}
        vals["rmse_mm"] = scale * math.sqrt(3.0 * vals["reconstruction"])
        if initial is None:
            initial = dict(vals)
        for k_ in names:
            acc[k_] += vals[k_]
            window[k_] += vals[k_]
        acc_steps += 1
        step += 1
        window_steps += 1
        if window_steps == cfg.log_every:
            log_window()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(rec=f"{vals['reconstruction']:.4f}", rmse=f"{vals['rmse_mm']:.3f}")
        if step % steps_per_epoch == 0:
            close_epoch(False)
            epoch += 1
            order = grouped_epoch(id_lab, exp_lab, cfg.group_size, cfg.seed, epoch)
    close_epoch(True)
    log_window()
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()

    # --- the codes' Gaussian ---------------------------------------------------------------
    encoder.eval()
    m = min(int(cfg.code_samples), n)
    code_pos = np.unique(np.linspace(0, n - 1, m).round().astype(np.int64))
    w_id, w_exp = _encode_all(ds, code_pos, idx, template, mapping, scale, encoder)
    gen = MultilinearGenerator.from_codes(core.detach(), w_id, w_exp, offset)
    say(f"codes' Gaussian from {len(code_pos)} training samples")

    layout = LatentLayout((("identity", ni), ("expression", nj)))
    report = {
        "epochs": step / steps_per_epoch,
        "steps": step,
        "steps_per_epoch": steps_per_epoch,
        "stop_reason": stop,
        "seconds": round(seconds, 3),
        "seconds_per_step": round(seconds / step, 4) if step else None,
        "build_seconds": round(time.perf_counter() - t_build, 3),
        "threads": torch.get_num_threads(),
        "initial": initial,
        "epoch_losses": epoch_losses,
        "curve": curve,
        "displacement_scale": scale,
        "counts": {
            "samples": n,
            "identity_labeled": int(np.sum(id_lab >= 0)),
            "expression_labeled": int(np.sum(exp_lab >= 0)),
            "identities": int(len(np.unique(id_lab[id_lab >= 0]))),
            "code_samples": int(len(code_pos)),
            "init_identity_modes": parts.identity.num_modes,
            "init_expression_modes": parts.expression.num_modes,
            "init_identities": len(parts.identity_labels),
            "init_identities_skipped_without_neutral": parts.skipped_identities,
        },
    }
    classes = {f.name: list(f.classes) for f in ds.factors if f.name in layout.factors}
    meta = {
        "baseline": {"kind": KIND, "reference": REFERENCE, "split": cfg.split, "config": cfg.to_json(),
                     "report": report},
        "dataset": {"fingerprint": ds.fingerprint, "path": str(ds.path), "info": ds.info},
    }
    meta = json.loads(json.dumps(meta, default=str))
    model = FaceModel(parts.mean, ds.faces, uv, layout, gen, unit=ds.unit, landmark_sets=ds.landmark_sets,
                      image_size=cfg.image_size, classes=classes, metadata=meta).eval()
    return BaselineBuild(model, meta["baseline"]["report"])
