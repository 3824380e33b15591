"""CoMA's mesh autoencoder (Ranjan et al., ECCV 2018), the expression part of the "DeepFLAME" baseline.

The paper's "CoMA" baseline is a PCA identity plus a CoMA autoencoder (latent 20) trained on
each face's displacement from its own identity's neutral face. This module is the autoencoder
and a small trainer; the PCA identity, model files and the CLI live elsewhere.

Architecture (:class:`ComaAutoencoder`, on a :class:`fitface.models.mesh_sampling.MeshHierarchy`
with ``L`` down-sampling steps, CoMA: ``L = 4``, sizes ``V_0 > V_1 > ... > V_L``):
    * Encoder: for level ``l = 0 .. L-1``: Chebyshev convolution on level ``l`` (filters
      3 -> 16 -> 16 -> 16 -> 32, order ``K = 6``) + ReLU, then down-sampling ``down[l]``
      (level ``l`` -> ``l + 1``); then the (B, V_L * 32) features, flattened vertex-major, go
      through one linear layer to the latent (20). No ReLU on the latent (the original TF code
      has one; we leave the code unconstrained, a documented choice).
    * Decoder: linear latent -> V_L * 32 + ReLU, reshaped to (B, V_L, 32); for level
      ``l = L-1 .. 0``: up-sampling ``up[l]`` (level ``l + 1`` -> ``l``), Chebyshev convolution
      on level ``l`` + ReLU (filters 32 -> 32 -> 16 -> 16 -> 16); a last Chebyshev convolution
      16 -> 3 on level 0, without bias or ReLU.

Convention:
    * Displacements ``d`` are (B, V_0, 3) float, vertex-major (x, y, z) in the template's unit
      (mm for the procedural template; the ICT file is in cm). The network sees them
      normalised per vertex coordinate, ``n = (d - mean) / std``, with ``mean`` and ``std``
      (V_0, 3) buffers (the training set's statistics, :meth:`ComaAutoencoder.set_normalisation`).
      :meth:`~ComaAutoencoder.encode`, :meth:`~ComaAutoencoder.decode` and ``forward`` work on
      normalised displacements (unitless); :meth:`~ComaAutoencoder.normalise` /
      :meth:`~ComaAutoencoder.denormalise` convert, :meth:`~ComaAutoencoder.decode_displacements`
      decodes straight to the template's unit.
    * The latent code ``z`` is (B, latent_size) float, unitless.
    * Every tensor is in the model's dtype (float32 by default) and on its device.
    * State: parameters and the ``mean``/``std`` buffers are in ``state_dict()``; the sparse
      operators (``down_l``, ``up_l`` and each convolution's ``L^``) are non-persistent
      buffers (they follow ``.to()``), rebuilt from the hierarchy: a model file stores
      :meth:`ComaAutoencoder.hierarchy_arrays` and rebuilds with
      ``ComaAutoencoder(MeshHierarchy.from_arrays(arrays), ...)`` then ``load_state_dict``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fitface.checks import check_shape

from .chebyshev import ORDER, ChebConv, hierarchy_tensors, resample

__all__ = ["ComaAutoencoder", "coma_l1_loss", "train_coma", "ComaTrainResult", "ENCODER_FILTERS", "DECODER_FILTERS",
           "LATENT_SIZE", "STD_FLOOR"]

#: CoMA's encoder filters (level 0 first); the input has 3 channels.
ENCODER_FILTERS = (16, 16, 16, 32)
#: CoMA's decoder filters after each up-sampling (coarsest level first); a last 16 -> 3 follows.
DECODER_FILTERS = (32, 16, 16, 16)
#: The paper's expression latent size for every model.
LATENT_SIZE = 20
#: ``std`` is floored at this fraction of its mean over all vertex coordinates, so vertex
#: coordinates that (nearly) never move in the training set do not blow up when normalised.
STD_FLOOR = 1e-3


class ComaAutoencoder(nn.Module):
    """CoMA's mesh autoencoder on a fixed hierarchy (module docstring for layers and Convention).

    Args:
        hierarchy: a :class:`fitface.models.mesh_sampling.MeshHierarchy` with ``L`` levels,
            ``L == len(encoder_filters) == len(decoder_filters)``.
        latent_size: size of the code (CoMA here: 20).
        encoder_filters: output channels of the encoder's convolutions, level 0 first.
        decoder_filters: output channels of the decoder's convolutions after each
            up-sampling, coarsest first; the last convolution maps ``decoder_filters[-1]`` to 3.
        order: Chebyshev order K (CoMA: 6).
        seed: if given, the parameters are initialised from this seed (the global torch RNG is
            left untouched); otherwise from the global RNG.
        dtype, device: of the parameters, buffers and operators (default float32, CPU).

    Attributes:
        hierarchy: the hierarchy (plain Python, for model files).
        sizes: vertices per level, (V_0, ..., V_L).
        mean, std: (V_0, 3) buffers, the normalisation (template unit); 0 and 1 until
            :meth:`set_normalisation`.
        encoder_convs, decoder_convs: ``nn.ModuleList`` of :class:`ChebConv` (``L`` each);
            ``final_conv``: :class:`ChebConv` (16 -> 3, no bias).
        encoder_linear, decoder_linear: ``nn.Linear`` (V_L * 32 -> latent, latent -> V_L * 32).
    """

    def __init__(self, hierarchy, latent_size: int = LATENT_SIZE, encoder_filters=ENCODER_FILTERS,
                 decoder_filters=DECODER_FILTERS, order: int = ORDER, seed: int | None = None,
                 dtype: torch.dtype | None = None, device=None):
        super().__init__()
        levels = hierarchy.num_levels
        enc, dec = tuple(int(f) for f in encoder_filters), tuple(int(f) for f in decoder_filters)
        if len(enc) != levels or len(dec) != levels:
            raise ValueError(f"encoder_filters, decoder_filters: expected {levels} each (one per level of the "
                             f"hierarchy), got {len(enc)} and {len(dec)}")
        if int(latent_size) != latent_size or latent_size < 1:
            raise ValueError(f"latent_size: expected a positive integer, got {latent_size!r}")
        dtype = torch.get_default_dtype() if dtype is None else dtype
        self.hierarchy = hierarchy
        self.sizes = tuple(hierarchy.sizes)
        self.latent_size = int(latent_size)
        self.encoder_filters, self.decoder_filters, self.order = enc, dec, int(order)
        ops = hierarchy_tensors(hierarchy, device=device, dtype=dtype)
        for level in range(levels):
            self.register_buffer(f"down_{level}", ops.down[level].coalesce(), persistent=False)
            self.register_buffer(f"up_{level}", ops.up[level].coalesce(), persistent=False)
        v0, vl = self.sizes[0], self.sizes[-1]
        self.register_buffer("mean", torch.zeros(v0, 3, dtype=dtype, device=device))
        self.register_buffer("std", torch.ones(v0, 3, dtype=dtype, device=device))

        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(int(seed))
            channels = (3,) + enc
            self.encoder_convs = nn.ModuleList(
                ChebConv(channels[i], channels[i + 1], ops.laplacians[i], order=self.order) for i in range(levels))
            self.encoder_linear = nn.Linear(vl * enc[-1], self.latent_size, dtype=dtype, device=device)
            self.decoder_linear = nn.Linear(self.latent_size, vl * enc[-1], dtype=dtype, device=device)
            channels = (enc[-1],) + dec
            self.decoder_convs = nn.ModuleList(
                ChebConv(channels[i], channels[i + 1], ops.laplacians[levels - 1 - i], order=self.order)
                for i in range(levels))
            self.final_conv = ChebConv(dec[-1], 3, ops.laplacians[0], order=self.order, bias=False)

    # -- operators -------------------------------------------------------------------------
    @property
    def num_levels(self) -> int:
        return len(self.sizes) - 1

    def down(self, level: int) -> torch.Tensor:
        """(V_{l+1}, V_l) sparse down-sampling of ``level`` (model dtype/device)."""
        return getattr(self, f"down_{level}")

    def up(self, level: int) -> torch.Tensor:
        """(V_l, V_{l+1}) sparse up-sampling to ``level`` (model dtype/device)."""
        return getattr(self, f"up_{level}")

    def hierarchy_arrays(self) -> dict[str, np.ndarray]:
        """The hierarchy as plain arrays (``MeshHierarchy.to_arrays``), enough to rebuild the operators."""
        return self.hierarchy.to_arrays()

    def config(self) -> dict:
        """JSON-able constructor arguments (besides the hierarchy, seed, dtype and device)."""
        return {"latent_size": self.latent_size, "encoder_filters": list(self.encoder_filters),
                "decoder_filters": list(self.decoder_filters), "order": self.order}

    # -- normalisation ---------------------------------------------------------------------
    @torch.no_grad()
    def set_normalisation(self, displacements) -> None:
        """Set ``mean`` and ``std`` (V_0, 3) from training displacements (N, V_0, 3) (template unit).

        ``std`` is the population standard deviation per vertex coordinate, floored at
        :data:`STD_FLOOR` x its mean over all coordinates (statistics in float64); if nothing
        moves at all (every std 0), ``std`` is 1 (:meth:`set_normalisation_stats`).
        """
        d = displacements if torch.is_tensor(displacements) else torch.from_numpy(np.asarray(displacements))
        check_shape("displacements", d, ("N", self.sizes[0], 3))
        if d.shape[0] < 1 or not bool(torch.isfinite(d).all()):
            raise ValueError("displacements: expected at least one finite displacement")
        d = d.to(torch.float64)
        self.set_normalisation_stats(d.mean(dim=0), d.std(dim=0, unbiased=False))

    @torch.no_grad()
    def set_normalisation_stats(self, mean, std) -> None:
        """Set ``mean`` and ``std`` from precomputed statistics (V_0, 3) (template unit; e.g. streamed
        over a memory-mapped dataset), with :meth:`set_normalisation`'s floor on ``std``.

        Raises:
            ValueError: wrong shapes, non-finite or negative values.
        """
        mean = torch.as_tensor(np.asarray(mean) if not torch.is_tensor(mean) else mean).to(torch.float64)
        std = torch.as_tensor(np.asarray(std) if not torch.is_tensor(std) else std).to(torch.float64)
        check_shape("mean", mean, (self.sizes[0], 3))
        check_shape("std", std, (self.sizes[0], 3))
        if not (bool(torch.isfinite(mean).all()) and bool(torch.isfinite(std).all()) and bool((std >= 0).all())):
            raise ValueError("mean, std: expected finite values and a non-negative std")
        floor = STD_FLOOR * float(std.mean()) if float(std.mean()) > 0 else 1.0
        self.mean.copy_(mean.to(self.mean))
        self.std.copy_(std.clamp_min(floor).to(self.std))

    def normalise(self, displacements: torch.Tensor) -> torch.Tensor:
        """(B, V_0, 3) displacements (template unit) -> (B, V_0, 3) normalised (unitless)."""
        return (displacements - self.mean) / self.std

    def denormalise(self, normalised: torch.Tensor) -> torch.Tensor:
        """(B, V_0, 3) normalised (unitless) -> (B, V_0, 3) displacements (template unit)."""
        return normalised * self.std + self.mean

    # -- the network -----------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, V_0, 3) normalised displacements -> (B, latent_size) codes."""
        check_shape("x", x, ("B", self.sizes[0], 3))
        h = x
        for level, conv in enumerate(self.encoder_convs):
            h = resample(self.down(level), torch.relu(conv(h)))  # (B, V_{l+1}, F_l)
        return self.encoder_linear(h.reshape(h.shape[0], -1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_size) codes -> (B, V_0, 3) normalised displacements."""
        check_shape("z", z, ("B", self.latent_size))
        h = torch.relu(self.decoder_linear(z)).reshape(z.shape[0], self.sizes[-1], self.encoder_filters[-1])
        for i, conv in enumerate(self.decoder_convs):
            level = self.num_levels - 1 - i
            h = torch.relu(conv(resample(self.up(level), h)))  # (B, V_l, F)
        return self.final_conv(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, V_0, 3) normalised displacements -> (B, V_0, 3) reconstruction, normalised."""
        return self.decode(self.encode(x))

    def decode_displacements(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_size) codes -> (B, V_0, 3) displacements in the template's unit."""
        return self.denormalise(self.decode(z))

    def linear_parameters(self) -> list[nn.Parameter]:
        """The two linear layers' weights and biases (the parameters CoMA weight-decays)."""
        return [*self.encoder_linear.parameters(), *self.decoder_linear.parameters()]


def coma_l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CoMA's reconstruction loss, the mean absolute error on normalised vertices.

    ``loss = 1 / (B V 3) * sum_{b, v, c} |pred[b, v, c] - target[b, v, c]|``, with both
    arguments normalised displacements ``(d - mean) / std`` (:meth:`ComaAutoencoder.normalise`),
    so each vertex coordinate is weighted by ``1 / std[v, c]`` of the training set.

    Args:
        pred, target: (B, V, 3) float, same dtype and device.

    Returns:
        A scalar tensor (unitless), differentiable w.r.t. both.
    """
    sizes = check_shape("pred", pred, ("B", "V", 3))
    check_shape("target", target, ("B", "V", 3), sizes)
    return (pred - target).abs().mean()


@dataclass
class ComaTrainResult:
    """What :func:`train_coma` did.

    Attributes:
        history: one record per epoch run (the last one may be partial): ``{"epoch": 1-based
            int, "loss": mean batch loss (float, unitless), "lr": learning rate used, "seconds":
            wall time of the epoch, "batches": SGD steps in it}``.
        steps: SGD steps run in all.
        epochs: epochs done, ``steps / batches per epoch`` (float).
        seconds: wall time of the whole run.
        stop_reason: ``"max_epochs"`` (the epoch budget was reached) or ``"max_minutes"`` (the
            wall-clock budget ran out first).
    """

    history: list[dict]
    steps: int
    epochs: float
    seconds: float
    stop_reason: str


def train_coma(model: ComaAutoencoder, displacements, epochs: float, batch_size: int = 16, lr: float = 8e-3,
               momentum: float = 0.9, lr_decay: float = 0.99, weight_decay: float = 5e-4, seed: int = 0,
               progress: Callable[[dict], None] | None = None, fit_normalisation: bool = True,
               max_minutes: float | None = None,
               step_callback: Callable[[int, float], None] | None = None) -> ComaTrainResult:
    """Train ``model`` in place as CoMA does: SGD with momentum, L1 on normalised vertices.

    Per epoch the samples are shuffled (a ``torch.Generator`` seeded with ``seed``) and cut
    into batches of ``batch_size`` (the last one may be smaller); each batch takes one SGD step
    on :func:`coma_l1_loss`. Weight decay ``weight_decay`` applies to the linear layers'
    weights and biases only (gradient ``+ weight_decay * w``, i.e. a penalty
    ``weight_decay / 2 * ||w||^2``, CoMA's ``decay * tf.nn.l2_loss``); the learning rate is
    ``lr * lr_decay ** epoch`` (epoch counted from 0). Training stops after
    ``ceil(epochs * batches per epoch)`` steps (a fractional ``epochs`` ends inside an epoch) or,
    if ``max_minutes`` is given, after the first step that ends past that wall-clock budget,
    whichever comes first. Deterministic for a seed and a model initialisation (single-threaded
    CPU runs are bit-identical; a time-limited run is a prefix of the unlimited one).

    Args:
        model: the autoencoder (trained in place, left in eval mode).
        displacements: (N, V_0, 3) float, template unit: a tensor, a numpy array, or any
            source with ``shape`` (N, V_0, 3), ``len()`` and ``source[index_array]`` -> (b, V_0, 3)
            float array (e.g. displacements computed batch by batch from a memory-mapped dataset).
        epochs: passes over the data (>= 0, may be fractional).
        batch_size, lr, momentum, lr_decay, weight_decay: CoMA's optimiser settings.
        seed: seeds the shuffling.
        progress: called after each (possibly partial) epoch with that epoch's history record.
        fit_normalisation: first set the model's ``mean``/``std`` from ``displacements``
            (:meth:`ComaAutoencoder.set_normalisation`, needs a tensor or array); False keeps the
            model's (set them with :meth:`ComaAutoencoder.set_normalisation_stats` for a source).
        max_minutes: wall-clock budget in minutes (None: none).
        step_callback: called after each SGD step with ``(steps so far, batch loss)``.

    Returns:
        :class:`ComaTrainResult`.

    Raises:
        ValueError: negative ``epochs``, a non-positive ``batch_size`` or ``max_minutes``, no
            samples, or ``fit_normalisation`` with a source that is not a tensor or array.
    """
    if not np.isfinite(float(epochs)) or epochs < 0:
        raise ValueError(f"epochs: expected a non-negative number, got {epochs!r}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    if max_minutes is not None and not max_minutes > 0:
        raise ValueError(f"max_minutes: expected a positive number or None, got {max_minutes!r}")
    if torch.is_tensor(displacements):
        source = displacements
    elif isinstance(displacements, np.ndarray) and not isinstance(displacements, np.memmap):
        source = torch.from_numpy(displacements)
    else:
        source = displacements
    check_shape("displacements", source, ("N", model.sizes[0], 3))
    n = int(source.shape[0])
    if n < 1:
        raise ValueError("displacements: expected at least one sample")
    if fit_normalisation:
        if not torch.is_tensor(source):
            raise ValueError("fit_normalisation: needs the displacements as a tensor or array; for a streamed "
                             "source set the statistics first (ComaAutoencoder.set_normalisation_stats)")
        model.set_normalisation(source)

    def batch_of(index: torch.Tensor) -> torch.Tensor:
        """(b,) sample indices -> (b, V_0, 3) normalised displacements (model dtype and device)."""
        if torch.is_tensor(source):
            raw = source[index.to(source.device)]
        else:
            raw = torch.from_numpy(np.ascontiguousarray(source[index.numpy()]))
        return model.normalise(raw.to(model.mean)).detach()

    linear = {id(p) for p in model.linear_parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) not in linear], "weight_decay": 0.0},
              {"params": model.linear_parameters(), "weight_decay": float(weight_decay)}]
    opt = torch.optim.SGD(groups, lr=float(lr), momentum=float(momentum))
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=float(lr_decay))
    gen = torch.Generator().manual_seed(int(seed))
    bs = int(batch_size)
    per_epoch = -(-n // bs)
    total = int(np.ceil(float(epochs) * per_epoch - 1e-9))
    budget = None if max_minutes is None else float(max_minutes) * 60.0
    history: list[dict] = []
    steps, reason = 0, "max_epochs"
    t_run = time.perf_counter()
    model.train()
    epoch = 0
    while steps < total and reason == "max_epochs":
        start = time.perf_counter()
        rate = opt.param_groups[0]["lr"]
        order = torch.randperm(n, generator=gen)
        loss_sum, count, batches = 0.0, 0, 0
        for i in range(0, n, bs):
            batch = batch_of(order[i:i + bs])
            loss = coma_l1_loss(model(batch), batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            value = float(loss.detach())
            loss_sum += value * batch.shape[0]
            count += batch.shape[0]
            steps += 1
            batches += 1
            if step_callback is not None:
                step_callback(steps, value)
            if budget is not None and time.perf_counter() - t_run > budget and steps < total:
                reason = "max_minutes"
            if steps >= total or reason != "max_epochs":
                break
        sched.step()
        record = {"epoch": epoch + 1, "loss": loss_sum / count, "lr": rate, "seconds": time.perf_counter() - start,
                  "batches": batches}
        history.append(record)
        if progress is not None:
            progress(record)
        epoch += 1
    model.eval()
    return ComaTrainResult(history, steps, steps / per_epoch, time.perf_counter() - t_run, reason)
