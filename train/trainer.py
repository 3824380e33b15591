"""The trainer of the decoupled 3D face GAN (paper §4.3, §5.1).

One *step* is one generator update preceded by ``critic_steps`` critic updates:

1. critic step ``k`` (of step ``s``): real batch ``r = s * critic_steps + k`` of the training
   split (:func:`.sampling.real_batch_indices`); fakes from codes of the step's phase (or
   random codes), computed under ``no_grad`` through the *folded* last layer
   ``W' = M W2 / s`` (:class:`FoldedCritic`; bfloat16 under ``amp``), which gives the normalised geometry image of
   ``G(z)`` directly from G's hidden layer; instance noise on both; the loss of eq. 6
   (:func:`.losses.critic_loss`: WGAN-GP + weighted classification on real labeled samples).
2. generator step: phase batch of the labeled factor ``factors[s % K]`` (fixed codes T +
   random codes shared by pairs); ``G(z)`` -> mapping -> D; the loss of eq. 8 and the
   penalties below (:func:`.losses.generator_loss`).

D sees normalised displacement images: ``(mapping(vertices) - mapping(template)) / s``
``= mapping(vertices - template) / s`` (the mapping is linear), ``s`` the dataset's
displacement std (a scalar computed once from the training split, stored in the checkpoint
and the model file's metadata as ``displacement_scale``). Instance noise ``sigma`` is thus in
units of ``s``.

Levers beyond the paper (config fields, off in the paper's recipe; docs/training.md): a warm
start from the exact linear 3DMM (:mod:`.warm_start`) with class codes T and critic-only warm-up
steps; the interaction, cross-projection, identity-subspace and identity-anchor penalties in the
generator step (code quadruples of :func:`.sampling.interaction_codes`, decoded through :class:`GeneratorPass`);
an exponential moving average of G (``G_eval``: what metrics, grids, snapshots and the model
use); bfloat16 autocast on the CPU; the proxy evaluation (:mod:`fitface.evaluation.proxy`) in metrics.csv.

The trainer writes valid model files (snapshots, the final model.safetensors) but adds no
photo-fitting data to them: ``fitface train`` adds the template's mediapipe landmark set to the
final model (``Trainer.train(finish_model=...)``).

Every draw of step ``s`` is a pure function of ``(seed, s)`` (:mod:`.sampling`), so
``--resume`` repeats an uninterrupted run exactly (bit-exact on CPU with the same thread
count).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fitface.errors import FitfaceWarning, InputError
from fitface.io.atomic import write_text

from . import losses as L
from .checkpoint import CHECKPOINT_FILE, Checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .distributed import DistContext, average_scalars, barrier, init_distributed, wrap_ddp
from .precision import resolve_precision
from .sampling import (
    LabelSampler,
    fixed_codes,
    interaction_codes,
    phase_batch,
    phase_factor,
    random_batch,
    real_batch_indices,
    shared_code_batch,
    torch_generator,
)

if TYPE_CHECKING:
    from fitface.models.discriminator import Discriminator

#: Training splits up to this many bytes of displacements are held in RAM as one tensor (the
#: full ICT training split is 2.7 GB; gathering its batches from the memory map instead cost a
#: real run about a third of its speed).
PRELOAD_BYTES = 6 << 30
#: Training samples used to estimate the displacement std ``s`` (evenly spaced, at most).
SCALE_SAMPLES = 4000
#: Name of the finished model file in the run folder.
MODEL_FILE = "model.safetensors"

#: Config fields a resumed run must keep (they decide shapes, draws or the meaning of a step).
RESUME_FIXED = ("seed", "latent_dims", "default_factor_dim", "noise_dim", "hidden", "negative_slope", "image_size",
                "batch_size", "critic_steps", "split", "classify", "label_sampling", "critic_codes", "log_every")

LOSS_COLUMNS = ["step", "epoch", "phase", "d_loss", "d_gap", "d_gp", "d_cls", "g_loss", "g_gan", "g_cls",
                "g_feat", "g_reg", "g_int", "g_proj", "g_sub", "g_anchor", "reg_share", "it_per_s", "samples_per_s", "elapsed_s"]


class CriticOutput(NamedTuple):
    """What :class:`CriticPass` returns."""

    scores: torch.Tensor  # (2b,) critic scores of [real; fake]
    scores_hat: torch.Tensor | None  # (b,) critic scores of the interpolates (None: no penalty this update)
    logits: dict  # {factor: (r_f, n_f)} class logits of the real rows asked for


class CriticPass(nn.Module):
    """Everything the critic step asks of D, as one forward (DistributedDataParallel reduces
    gradients per forward/backward pair, so the step's three uses of D are one call).

    The interpolates get their own trunk forward: the penalty's input gradient and its double
    backward then run over b samples, not the 3b of a joint forward (about 2x slower, same
    gradients)."""

    def __init__(self, D: "Discriminator", channels_last: bool = False):
        super().__init__()
        self.D = D
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def forward(self, real_fake: torch.Tensor, x_hat: torch.Tensor | None, rows: dict) -> CriticOutput:
        """real_fake: (2b, 3, S, S) [real; fake]; x_hat: (b, 3, S, S), or None on an update without
        the penalty; rows: {factor: (r,) int64 indices into the real half} -> :class:`CriticOutput`."""
        real_fake = real_fake.contiguous(memory_format=self.memory_format)
        trunk = self.D.trunk(real_fake)  # (2b, C, S/4, S/4)
        _, scores = self.D.critic(trunk)  # (2b, 1)
        scores_hat = None
        if x_hat is not None:
            x_hat = x_hat.contiguous(memory_format=self.memory_format)
            scores_hat = self.D.critic(self.D.trunk(x_hat))[1].squeeze(1)  # (b,)
        logits = {f: self.D.classifiers[f](trunk[r])[1] for f, r in rows.items()}
        return CriticOutput(scores.squeeze(1), scores_hat, logits)


class GeneratorPass(nn.Module):
    """Everything the generator step asks of G, as one forward (for DistributedDataParallel).

    ``forward(z)`` is ``G(z)``; with ``zq`` and ``vertex_ids`` it also returns the selected
    vertices of the penalties' quadruple codes, decoded from G's hidden layer for those vertices
    only (:meth:`Generator.decode_vertices`), so the interaction penalty costs a small fraction
    of a full decode."""

    def __init__(self, G):
        super().__init__()
        self.G = G

    def forward(self, z: torch.Tensor, zq: torch.Tensor | None = None, vertex_ids: torch.Tensor | None = None,
                proj: torch.Tensor | None = None, full: int = 0):
        """z: (b, D) -> (b, V, 3) displacements; with zq (q, D) and vertex_ids (L,) also the
        (q, 3L) flattened displacements of those vertices; with proj (K, 3V) also the (q, K)
        projected outputs ``proj @ G(zq)`` (through ``proj @ W2``: K x H, never the full decode);
        with ``full = f`` also the (f, 3V) full decodes of the first f rows of zq."""
        disp = self.G(z)
        if zq is None:
            return disp
        h = self.G.hidden(zq)  # (q, H)
        sub = self.G.decode_vertices(h, vertex_ids).flatten(1)  # (q, L, 3) -> (q, 3L)
        coef = None if proj is None else F.linear(h, proj @ self.G.out.weight, proj @ self.G.out.bias)  # (q, K)
        dense = self.G.out(h[:full]) if full else None  # (f, 3V)
        return disp, sub, coef, dense


#: Adam options that pick a kernel, not the maths (chosen per machine, never restored).
OPTIMIZER_KERNEL_KEYS = ("fused", "foreach")


def adam(params, lr: float, betas) -> torch.optim.Adam:
    """Adam with the fused kernel (one pass over the parameters; 12x faster than the per-tensor
    loops for G's 14.5 M-parameter output layer on the CPU), or the default one where the fused
    kernel is not available for the device. The update is Adam's either way (it differs from
    the unfused one only by rounding)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas), fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas))


def checkpoint_config(ckpt: Checkpoint) -> TrainConfig:
    """The config a checkpoint was trained with (as saved)."""
    return TrainConfig.from_dict(ckpt.config, where=str(ckpt.path))


def resume_config(run: str | Path | Checkpoint, overrides: dict | None = None) -> TrainConfig:
    """The config of a checkpointed run with ``overrides`` applied (validated).

    Args:
        run: the run folder, or its checkpoint already loaded (:func:`.checkpoint.load_checkpoint`).
        overrides: config fields to change.
    """
    from .config import apply_overrides

    ckpt = run if isinstance(run, Checkpoint) else load_checkpoint(Path(run) / CHECKPOINT_FILE)
    return apply_overrides(checkpoint_config(ckpt), overrides or {}, where="override").validate()


def resolve_device(name: str, ctx: DistContext | None = None) -> torch.device:
    """``"auto"`` -> CUDA (this process's local rank) when available, else CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", (ctx.local_rank if ctx else 0) % torch.cuda.device_count())
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is None and ctx is not None and ctx.enabled:
        dev = torch.device("cuda", ctx.local_rank % torch.cuda.device_count())
    return dev


@dataclass
class TrainingData:
    """The training split prepared for the trainer.

    Attributes:
        dataset: the loaded :class:`fitface.data.format.Dataset`.
        indices: (n,) int64 sample indices of the training split.
        labels: (n, K) int64 labels of those samples (-1 = unlabeled).
        template: (V, 3) float32 template (dataset unit).
        displacements: (n, V, 3) float32 tensor in RAM, or None (then read per batch).
        scale: ``s``, the displacement std (dataset unit).
    """

    dataset: Any
    indices: np.ndarray
    labels: np.ndarray
    template: np.ndarray
    displacements: torch.Tensor | None
    scale: float

    @property
    def num_train(self) -> int:
        return len(self.indices)

    def batch(self, positions: np.ndarray) -> torch.Tensor:
        """(b, V, 3) float32 displacements of the given positions of the training split."""
        if self.displacements is not None:
            return self.displacements.index_select(0, torch.from_numpy(positions))
        v = self.dataset.read(self.indices[positions])
        return torch.from_numpy(v - self.template[None])


def displacement_scale(ds, indices: np.ndarray, template: np.ndarray) -> float:
    """``s``: std of all displacement coordinates ``v - template`` over (a spread subset of) the
    training split (dataset unit). Raises ``InputError`` when it is 0 (all faces equal the template)."""
    take = indices if len(indices) <= SCALE_SAMPLES else indices[np.linspace(0, len(indices) - 1, SCALE_SAMPLES).astype(np.int64)]
    total, total_sq, count = 0.0, 0.0, 0
    for i0 in range(0, len(take), 256):
        d = ds.read(take[i0:i0 + 256]).astype(np.float64) - template[None]
        total += d.sum()
        total_sq += np.square(d).sum()
        count += d.size
    mean = total / count
    var = max(total_sq / count - mean * mean, 0.0)
    s = math.sqrt(var)
    if not s > 0:
        raise InputError("training faces do not differ from the template (displacement std 0)", ds.path)
    return s


def prepare_data(data_dir, cfg: TrainConfig) -> TrainingData:
    """Load the dataset and its training split; ``InputError`` (one line) on anything wrong."""
    from fitface.data.format import load_dataset

    p = Path(data_dir)
    if not p.exists():
        raise InputError("dataset folder not found", p)
    ds = load_dataset(p, mmap=True)
    idx = ds.indices(cfg.split)
    if len(idx) < 2:
        raise InputError(f"split {cfg.split!r} has {len(idx)} samples; at least 2 are needed", p)
    if not ds.factors:
        raise InputError("the dataset has no label factors (identity/expression); the trainer needs them", p)
    template = np.asarray(ds.template_vertices, dtype=np.float32)
    scale = displacement_scale(ds, idx, template.astype(np.float64))
    disp = None
    if len(idx) * ds.num_vertices * 3 * 4 <= PRELOAD_BYTES:
        disp = torch.empty(len(idx), ds.num_vertices, 3)
        for i0 in range(0, len(idx), 1024):
            disp[i0:i0 + 1024] = torch.from_numpy(ds.read(idx[i0:i0 + 1024]) - template[None])
    return TrainingData(ds, idx, ds.labels[idx].copy(), template, disp, scale)


class FoldedCritic:
    """Normalised geometry images of ``G(z)`` from G's hidden layer in one matmul.

    ``image = M (W2 h + b2) / s`` is linear in ``h``; with ``W' = K W2`` and ``b' = K b2``, where
    ``K`` (3P x 3V) is ``kron(M, I_3) / s`` with its rows reordered channel-major (row ``c * P +
    p`` = channel c, pixel p; G's rows are ``3 v + c``), it is ``W' h + b'``. ``W'`` is
    recomputed after every generator update (:meth:`refresh`): one sparse product, straight
    into the image's channel-major layout. Exact up to float rounding.

    Args:
        mapping_matrix: (P, V) scipy sparse mapping matrix (:meth:`GeometryMapping.matrix`).
        image_size: S (P = S * S).
        scale: s.
        device: where the folded weights live.
        compute_dtype: dtype of the images' matmul (``torch.bfloat16`` under mixed precision:
            about 4x faster than float32 on this CPU's AVX512-BF16; the critic casts its input
            to bfloat16 anyway). Images are returned in float32 either way.
    """

    def __init__(self, mapping_matrix, image_size: int, scale: float, device=None,
                 compute_dtype: torch.dtype = torch.float32):
        from fitface.geometry.interleaved import csr_tensor, interleaved_matrix

        self.S = int(image_size)
        p = self.S * self.S
        if mapping_matrix.shape[0] != p:
            raise ValueError(f"mapping_matrix: expected {p} rows (image_size {self.S} squared), "
                             f"got {mapping_matrix.shape[0]}")
        order = np.arange(3 * p).reshape(p, 3).T.reshape(-1)  # row c * P + p <- row 3 p + c
        k = interleaved_matrix(mapping_matrix)[order] * (1.0 / float(scale))  # (3P, 3V), channel-major rows
        self.K = csr_tensor(k, torch.float32, device)  # (3P, 3V)
        self.compute_dtype = compute_dtype
        self.weight: torch.Tensor | None = None  # (3P, H) in compute_dtype
        self.bias: torch.Tensor | None = None  # (3P,) in compute_dtype

    @torch.no_grad()
    def refresh(self, generator) -> None:
        W2 = generator.out.weight  # (3V, H), row 3v + c
        b2 = generator.out.bias  # (3V,)
        self.weight = (self.K @ W2).to(self.compute_dtype)  # (3P, H), row c * P + p
        self.bias = (self.K @ b2[:, None]).squeeze(1).to(self.compute_dtype)  # (3P,)

    @torch.no_grad()
    def images(self, generator, z: torch.Tensor) -> torch.Tensor:
        """z (B, D) -> (B, 3, S, S) float32 normalised displacement images."""
        h = generator.hidden(z).to(self.compute_dtype)  # (B, H)
        return torch.addmm(self.bias, h, self.weight.t()).float().view(-1, 3, self.S, self.S)


@dataclass
class TrainResult:
    """What :meth:`Trainer.train` returns."""

    run_dir: Path
    steps: int
    model_path: Path | None
    last: dict


@dataclass
class RunLogs:
    """The main process's logs of a run (:mod:`.logs`): losses.csv, metrics.csv, TensorBoard."""

    losses: Any
    metrics: Any
    tb: Any


class StepClock:
    """Wall-clock of a run and of its current log window (the losses.csv speed columns)."""

    def __init__(self):
        self.start = time.perf_counter()
        self.window_start, self.window_steps = time.perf_counter(), 0

    def lap(self) -> tuple[float, float]:
        """(steps per second over the window, seconds since the start); starts the next window."""
        now = time.perf_counter()
        rate = self.window_steps / max(now - self.window_start, 1e-9)
        self.window_start, self.window_steps = now, 0
        return rate, now - self.start


@contextmanager
def frozen(module: nn.Module):
    """No gradients for ``module``'s parameters inside the block (gradients still flow through it)."""
    params = list(module.parameters())
    for p in params:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p in params:
            p.requires_grad_(True)


def identity_changes(quads: torch.Tensor) -> torch.Tensor:
    """(q, 4, F) rows ``[X(a, e), X(a, e'), X(b, e), X(b, e')]`` of code quadruples ->
    (2q, F) identity changes ``X(a, .) - X(b, .)``."""
    return (quads[:, [0, 1]] - quads[:, [2, 3]]).reshape(-1, quads.shape[2])


#: losses.csv column of each :class:`.losses.GeneratorLoss` field.
GENERATOR_COLUMNS = {"g_loss": "total", "g_gan": "gan", "g_cls": "cls", "g_feat": "feat", "g_reg": "reg",
                     "g_int": "interaction", "g_proj": "projection", "g_sub": "subspace", "g_anchor": "anchor"}


class Trainer:
    """Builds models, optimisers, codes and logs for a run folder; :meth:`train` runs it.

    Args:
        data_dir: dataset folder (:mod:`fitface.data.format`).
        cfg: resolved :class:`TrainConfig`.
        run_dir: output folder (created); rank 0 writes ``config.json``/``config.toml``,
            logs, checkpoints and ``model.safetensors`` there.
        resume: continue from ``RUN_DIR/checkpoint.safetensors`` (True), or from that file
            already loaded (its :class:`.checkpoint.Checkpoint`: ``fitface train --resume`` reads
            the run's config from it, so the file is read once); ``cfg`` must keep the
            checkpoint's :data:`RESUME_FIXED` fields (use :func:`resume_config`), other fields
            (steps, learning rates, logging ...) may change.
        ctx: distributed context (default: joined from the torchrun environment).
    """

    def __init__(self, data_dir, cfg: TrainConfig, run_dir, resume: bool | Checkpoint = False,
                 ctx: DistContext | None = None):
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        ckpt = self._resume_checkpoint(resume)
        self._join_processes(ctx)
        self.data = prepare_data(data_dir, cfg)
        if ckpt is not None and ckpt.extras.get("data_fingerprint") not in (None, self.data.dataset.fingerprint):
            raise InputError("the checkpoint was trained on another dataset (fingerprint differs)", data_dir)
        self._build_layout()
        template64 = np.asarray(self.data.dataset.template_vertices, dtype=np.float64)
        self._build_geometry(template64)
        self.scale = float(ckpt.extras["displacement_scale"]) if ckpt is not None else self.data.scale
        self._build_networks()
        self._build_codes_and_levers(template64, warm_start=ckpt is None)
        self.start_step = 0 if ckpt is None else self._restore(ckpt)
        self._wrap_for_processes()
        self._build_label_sampling()
        self._build_step_options()
        #: Sums and counts of the current log window (restored on resume: logs stay exact).
        self.window: dict[str, list] = dict(ckpt.extras.get("log_window", {})) if ckpt is not None else {}
        self.timings = {"generator": 0.0, "mapping": 0.0, "discriminator": 0.0, "regularizer": 0.0}
        self.profile = False
        self._evaluator = self._proxy = None  # the metrics' evaluators (built by train() on first use)

    # ------------------------------------------------------------------ building
    def _resume_checkpoint(self, resume: bool | Checkpoint) -> Checkpoint | None:
        """The checkpoint to continue from (None: a new run); ``InputError`` when :attr:`cfg`
        changes one of its :data:`RESUME_FIXED` fields."""
        if not resume:
            return None
        ckpt = resume if isinstance(resume, Checkpoint) else load_checkpoint(self.run_dir / CHECKPOINT_FILE)
        saved = checkpoint_config(ckpt)
        changed = [n for n in RESUME_FIXED if getattr(saved, n) != getattr(self.cfg, n)]
        if changed:
            raise InputError(f"--resume: cannot change {', '.join(changed)} of the checkpointed run "
                             f"({', '.join(f'{n}={getattr(saved, n)!r}' for n in changed)})", self.run_dir)
        return ckpt

    def _join_processes(self, ctx: DistContext | None) -> None:
        """The process group (torchrun), this process's device and threads; the batch shapes it allows."""
        cfg = self.cfg
        self.ctx = ctx if ctx is not None else init_distributed(cfg.device if cfg.device != "auto" else
                                                                ("cuda" if torch.cuda.is_available() else "cpu"))
        if cfg.batch_size % (2 * self.ctx.world_size):
            raise InputError(f"batch_size {cfg.batch_size} must be a multiple of 2 x {self.ctx.world_size} processes")
        if (cfg.lambda_interaction > 0 or cfg.lambda_projection > 0) and cfg.interaction_pairs % self.ctx.world_size:
            raise InputError(f"interaction_pairs {cfg.interaction_pairs} must be a multiple of {self.ctx.world_size} "
                             f"processes")
        self.device = resolve_device(cfg.device, self.ctx)
        if cfg.num_threads > 0:
            torch.set_num_threads(cfg.num_threads)

    def _build_layout(self) -> None:
        """The dataset's factors, their classes, the classified ones and the latent layout."""
        from fitface.models.latent import LatentLayout

        cfg, ds = self.cfg, self.data.dataset
        self.factors = tuple(ds.factor_names)
        self.num_classes = {f.name: f.num_classes for f in ds.factors}
        self.classify = tuple(self.factors if cfg.classify is None else cfg.classify)
        unknown = set(self.classify) - set(self.factors)
        if unknown:
            raise InputError(f"config: classify names {sorted(unknown)}, not factors of the dataset "
                             f"({', '.join(self.factors)})")
        blocks = [(f, int(cfg.latent_dims.get(f, cfg.default_factor_dim))) for f in self.factors]
        if cfg.noise_dim > 0:
            blocks.append(("noise", cfg.noise_dim))
        self.layout = LatentLayout(tuple(blocks))

    def _build_geometry(self, template64: np.ndarray) -> None:
        """The template's UV parameterisation, its geometry-image mapping and the Laplacian regulariser."""
        from fitface.geometry.laplacian import LaplacianRegularizer
        from fitface.geometry.mapping import GeometryMapping
        from fitface.geometry.parameterization import harmonic_uv

        cfg, faces = self.cfg, self.data.dataset.faces
        self.uv = harmonic_uv(template64, faces, what="template").uv  # (V, 2)
        self.mapping = GeometryMapping(self.uv, faces, cfg.image_size).to(self.device)
        self.regularizer = LaplacianRegularizer(template64, faces, reduction=cfg.reg_reduction,
                                                normalized=cfg.reg_normalized).to(self.device)

    def _build_networks(self) -> None:
        """G and D (initialised from the seed) and their Adam optimisers."""
        from fitface.models.discriminator import Discriminator
        from fitface.models.generator import Generator

        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        V = self.data.dataset.num_vertices
        self.G = Generator(self.layout.dim, V, cfg.hidden, cfg.negative_slope).to(self.device)
        self.D = Discriminator(self.num_classes, cfg.image_size, cfg.negative_slope).to(self.device)
        if cfg.channels_last:
            self.D.to(memory_format=torch.channels_last)
        self.opt_g = adam(self.G.parameters(), cfg.lr_g, cfg.betas_g)
        self.opt_d = adam(self.D.parameters(), cfg.lr_d, cfg.betas_d)

    def _build_codes_and_levers(self, template64: np.ndarray, warm_start: bool) -> None:
        """The fixed codes T; the linear warm start (a new run only), the penalties' projector and
        G's moving average where the config asks for them."""
        cfg = self.cfg
        self.codes = fixed_codes(self.layout, self.num_classes, cfg.seed)
        self.warm_start = None
        if cfg.init == "linear_3dmm" and warm_start:
            self._warm_start(template64)
        self.projector = None  # (K, 3V) [P_I; P_E] of the cross-projection penalty
        if cfg.lambda_projection > 0 or cfg.lambda_subspace > 0 or cfg.lambda_anchor > 0:
            self._build_projector(template64)
        self.G_ema = None
        if cfg.ema_decay > 0:
            import copy

            self.G_ema = copy.deepcopy(self.G).requires_grad_(False)

    def _restore(self, ckpt: Checkpoint) -> int:
        """Networks, optimisers, fixed codes and EMA from ``ckpt``; returns the step to run next."""
        self.G.load_state_dict(ckpt.generator)
        self.D.load_state_dict(ckpt.discriminator)
        for opt, state in ((self.opt_g, ckpt.opt_g), (self.opt_d, ckpt.opt_d)):
            chosen = [{k: g.get(k) for k in OPTIMIZER_KERNEL_KEYS} for g in opt.param_groups]
            opt.load_state_dict(state)  # also restores the saved groups' kernel flags:
            for g, keep in zip(opt.param_groups, chosen):  # keep this machine's choice
                g.update(keep)
        self.codes = {k: v.clone() for k, v in ckpt.codes.items()}
        if self.G_ema is not None:
            self.G_ema.load_state_dict(ckpt.ema if ckpt.ema else ckpt.generator)
        return ckpt.step

    def _wrap_for_processes(self) -> None:
        """The modules trained through DDP under torchrun (:class:`GeneratorPass`, :class:`CriticPass`
        themselves otherwise); self.G / self.D stay the plain networks (checkpoints, sampling, the
        G step's frozen D)."""
        self.G_train = wrap_ddp(GeneratorPass(self.G), self.ctx, self.device)
        self.critic_pass = wrap_ddp(CriticPass(self.D, self.cfg.channels_last), self.ctx, self.device,
                                    find_unused_parameters=True)

    def _build_label_sampling(self) -> None:
        """Class weights of the critic's classification losses and the label sampler of the phase batches."""
        cfg = self.cfg
        self.weights = {}
        probs = {}
        for j, f in enumerate(self.factors):
            lab = self.data.labels[:, j]
            self.weights[f] = torch.from_numpy(L.class_weights(lab, self.num_classes[f], cfg.class_weighting)).to(self.device)
            counts = np.bincount(lab[lab >= 0], minlength=self.num_classes[f]).astype(np.float64)
            if counts.sum() == 0:  # no labeled training sample: draw uniformly over all classes
                counts[:] = 1.0
            p = counts / counts.sum() if cfg.label_sampling == "empirical" else (counts > 0) / (counts > 0).sum()
            probs[f] = p
        self.sampler = LabelSampler(self.num_classes, probs)
        self.labels_t = torch.from_numpy(self.data.labels)  # (n, K)

    def _build_step_options(self) -> None:
        """The folded critic input, the run's length and mixed precision."""
        cfg = self.cfg
        self.total_steps = cfg.total_steps(self.data.num_train)
        self.steps_per_epoch = cfg.steps_per_epoch(self.data.num_train)
        # mixed precision: bfloat16 autocast (float32's exponent range, so the penalty's double
        # backward needs no loss scaling) where the device has native bfloat16 (precision.py)
        self.precision = resolve_precision(cfg.amp, self.device, emulated=cfg.amp_emulated)
        if self.precision.warning and self.ctx.rank == 0:
            warnings.warn(self.precision.warning, FitfaceWarning, stacklevel=2)
        self.folded = FoldedCritic(self.mapping.matrix("scipy"), cfg.image_size, self.scale, device=self.device,
                                   compute_dtype=torch.bfloat16 if self.use_amp else torch.float32) \
            if cfg.fold_mapping else None
        if self.folded is not None:
            self.folded.refresh(self.G)

    # ------------------------------------------------------------------ helpers
    def _warm_start(self, template64: np.ndarray) -> None:
        """G := the exact linear 3DMM of the training split; T := its class codes (config)."""
        from .warm_start import linear_warm_start, set_linear

        ws = linear_warm_start(self.data.dataset, self.cfg.split, self.layout, template64)
        set_linear(self.G, torch.from_numpy(ws.basis), torch.from_numpy(ws.offset))
        if self.cfg.fixed_codes_init == "model":
            for f, c in ws.codes.items():
                have = ~torch.isnan(torch.from_numpy(c[:, 0]))
                self.codes[f][have] = torch.from_numpy(c)[have]
        self.warm_start = ws

    def _build_projector(self, template64: np.ndarray) -> None:
        """The linear 3DMM's least-squares coefficient projector (rebuilt identically on resume)."""
        from .warm_start import linear_warm_start

        ws = self.warm_start or linear_warm_start(self.data.dataset, self.cfg.split, self.layout, template64,
                                                  with_codes=False)
        sl_i, sl_e = self.layout.slice("identity"), self.layout.slice(self.factors[-1])
        cols = [c for c in list(range(sl_i.start, sl_i.stop)) + list(range(sl_e.start, sl_e.stop))
                if np.abs(ws.basis[:, c]).sum() > 0]
        pinv = np.linalg.pinv(ws.basis[:, cols])  # (K, 3V)
        n_id = sum(1 for c in cols if c < sl_i.stop)
        self.identity_code_cols = torch.tensor(cols[:n_id], device=self.device)  # latent columns of P_I
        self.projector = torch.from_numpy(pinv.astype(np.float32)).to(self.device)
        self.proj_slices = (slice(0, n_id), slice(n_id, len(cols)))
        q, _ = np.linalg.qr(ws.basis[:, cols[:n_id]])  # (3V, k) orthonormal identity modes
        self.identity_basis = torch.from_numpy(q.astype(np.float32)).to(self.device)

    @torch.no_grad()
    def _update_ema(self) -> None:
        """G_ema <- decay * G_ema + (1 - decay) * G (every parameter; G has no buffers)."""
        ema = list(self.G_ema.parameters())
        torch._foreach_lerp_(ema, [p.detach() for p in self.G.parameters()], 1.0 - self.cfg.ema_decay)

    @property
    def G_eval(self):
        """The generator metrics, grids and the saved model use (the EMA when enabled)."""
        return self.G_ema if self.G_ema is not None else self.G

    def _interaction_batch(self, step: int):
        """This process's quadruple codes (4q, D) and sampled vertex ids (L,) of step ``step``."""
        cfg = self.cfg
        g = torch_generator(cfg.seed, step, "interaction")
        factor = self.factors[-1] if len(self.factors) < 3 else self.factors[1 + step % (len(self.factors) - 1)]
        zq = interaction_codes(self.layout, factor, cfg.interaction_pairs, g)  # (4n, D)
        zq = zq.view(cfg.interaction_pairs, 4, -1)[self.ctx.shard(cfg.interaction_pairs)].reshape(-1, zq.shape[1])
        V = self.data.dataset.num_vertices
        L_ = V if cfg.interaction_vertices == 0 else min(V, cfg.interaction_vertices)
        ids = torch.randperm(V, generator=g)[:L_]
        return zq.to(self.device), ids.to(self.device)

    def fingerprint(self) -> str:
        return self.data.dataset.fingerprint

    def _images(self, disp: torch.Tensor) -> torch.Tensor:
        """(b, V, 3) displacements -> (b, 3, S, S) normalised images (differentiable)."""
        return self.mapping(disp) * (1.0 / self.scale)

    def _noise(self, like: torch.Tensor, step: int, tag: str) -> torch.Tensor:
        if self.cfg.instance_noise <= 0:
            return like
        g = torch_generator(self.cfg.seed, step, f"noise/{tag}", self.ctx.rank, device=self.device)
        return like + self.cfg.instance_noise * torch.randn(like.shape, generator=g, device=self.device,
                                                            dtype=like.dtype)

    def _codes(self, step: int, stream: str, k: int = 0, mode: str = "phase"):
        """Global phase batch of ``step`` (CPU draws) -> this process's shard on the device."""
        g = torch_generator(self.cfg.seed, step, stream, k)
        n = self.cfg.batch_size
        if mode == "random":
            pb = random_batch(self.layout, n, g)
        else:
            pb = phase_batch(self.layout, self.codes, self.sampler, phase_factor(self.factors, step), n, g)
        sh = self.ctx.shard(n)
        z = pb.z[sh].to(self.device)
        labels = None if pb.labels is None else pb.labels[sh].to(self.device)
        return z, pb.factor, labels

    def _fake_images_nograd(self, z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self.folded is not None:
                return self.folded.images(self.G, z)
            return self._images(self.G(z))

    def _tick(self, key: str, t0: float) -> float:
        if self.profile:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            t = time.perf_counter()
            self.timings[key] += t - t0
            return t
        return t0

    @property
    def use_amp(self) -> bool:
        """bfloat16 autocast on (:attr:`precision`, resolved once from ``amp`` and the device)."""
        return self.precision.autocast

    def _amp(self):
        """bfloat16 autocast where :attr:`use_amp` (a no-op context otherwise)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp)

    # ------------------------------------------------------------------ one step
    def _critic_batch(self, step: int, k: int, t0: float) -> tuple:
        """The inputs of critic step ``k`` of step ``step``: this process's real and fake (G's, no
        gradient) normalised images with instance noise (b, 3, S, S), their interpolates (the
        penalty's input, ``requires_grad``; None on an update without it), the global batch's (B, K) labels (CPU) and ``t0``
        after the timing ticks."""
        cfg, B = self.cfg, self.cfg.batch_size
        pos = real_batch_indices(cfg.seed, step * max(1, cfg.critic_steps) + k, self.data.num_train, B)  # global (B,)
        real_disp = self.data.batch(pos[self.ctx.shard(B)]).to(self.device)  # (b, V, 3)
        z, _, _ = self._codes(step, "critic_codes", k, mode=cfg.critic_codes)
        t0 = self._tick("discriminator", t0)
        real = self._images(real_disp)
        t0 = self._tick("mapping", t0)
        fake = self._fake_images_nograd(z)
        t0 = self._tick("generator", t0)
        real, fake = self._noise(real, step, f"real{k}"), self._noise(fake, step, f"fake{k}")
        x_hat = None
        if self.penalised_update(step, k):
            eps = torch.rand(B, generator=torch_generator(cfg.seed, step, "gp", k))[self.ctx.shard(B)].to(self.device)
            x_hat = L.interpolate(real, fake, eps).requires_grad_(True)
        return real, fake, x_hat, self.labels_t[torch.from_numpy(pos)], t0

    def penalised_update(self, step: int, k: int) -> bool:
        """Whether critic update ``k`` of step ``step`` carries the gradient penalty: every
        ``gp_every``-th update, counted over the run (``step * critic_steps + k``)."""
        return (step * max(1, self.cfg.critic_steps) + k) % self.cfg.gp_every == 0

    def _classified_rows(self, labels_g: torch.Tensor) -> tuple[dict, dict, dict]:
        """For each classified factor with labels in the global batch ``labels_g`` (B, K): this
        process's labeled rows (r,) and their labels (r,) on the device (possibly none), and the
        global batch's weighted label count (:func:`.losses.weighted_ce_denominator`)."""
        rows, labels, denoms = {}, {}, {}
        for j, f in enumerate(self.factors):
            if f not in self.classify or self.cfg.lambda_c == 0:
                continue
            denom = L.weighted_ce_denominator(labels_g[:, j], self.weights[f].cpu())
            if denom > 0:  # a global batch without labels of f leaves its branch out
                local = labels_g[self.ctx.shard(self.cfg.batch_size), j]  # (b,) on the CPU: no device sync
                have = torch.nonzero(local >= 0).squeeze(1)
                rows[f], labels[f], denoms[f] = have.to(self.device), local[have].to(self.device), denom
        return rows, labels, denoms

    def critic_step(self, step: int, k: int) -> dict:
        """Critic update ``k`` of step ``step``: D minimises eq. 6's loss (:func:`.losses.critic_loss`)
        on a real batch, G's fakes and their interpolates."""
        cfg = self.cfg
        real, fake, x_hat, labels_g, t0 = self._critic_batch(step, k, time.perf_counter())
        rows, labels, denoms = self._classified_rows(labels_g)
        with self._amp():
            out = self.critic_pass(torch.cat([real, fake]), x_hat, rows)
        b = real.shape[0]
        scores = out.scores.float()  # (2b,)
        scores_hat = out.scores_hat.float() if out.scores_hat is not None else None  # (b,)
        # lazy penalty: every gp_every-th update, weighted gp_every times (the same mean pull)
        loss = L.critic_loss(scores[:b], scores[b:], scores_hat, x_hat, out.logits, labels, self.weights, denoms,
                             cfg.gp_weight * cfg.gp_every, cfg.lambda_c, self.ctx.world_size)
        self.opt_d.zero_grad(set_to_none=True)
        loss.total.backward()  # under torchrun, DDP averages D's gradients here
        self.opt_d.step()
        self._tick("discriminator", t0)
        vals = {"d_loss": loss.total.item(), "d_gap": loss.gap.item(), "d_cls": sum(v.item() for v in loss.cls.values())}
        if x_hat is not None:  # lazy penalty: d_gp only from the updates that computed it
            vals["d_gp"] = loss.gp.item()
        return vals

    def _generate(self, z: torch.Tensor, step: int) -> tuple[torch.Tensor, L.GeneratorPenalties | None]:
        """``G(z)`` as (b, V, 3) float32 displacements, and the penalties beyond the paper on the
        quadruple codes of step ``step`` (None when they are all off): one :class:`GeneratorPass`."""
        cfg = self.cfg
        use_proj = cfg.lambda_projection > 0 or cfg.lambda_anchor > 0
        if not (cfg.lambda_interaction > 0 or use_proj or cfg.lambda_subspace > 0):
            with self._amp():
                disp = self.G_train(z)  # (b, V, 3)
            return disp.float(), None
        n_full = 4 * cfg.subspace_pairs // self.ctx.world_size if cfg.lambda_subspace > 0 else 0
        zq, ids = self._interaction_batch(step)
        with self._amp():
            disp, sub, coef, dense = self.G_train(z, zq, ids, self.projector if use_proj else None,
                                                  n_full)  # (b,V,3) (4q,3L) (4q,K) (f,3V)
        return disp.float(), self._penalties(zq, sub, coef, dense)

    def _penalties(self, zq: torch.Tensor, sub: torch.Tensor, coef: torch.Tensor | None,
                   dense: torch.Tensor | None) -> L.GeneratorPenalties:
        """The penalties from the quadruple outputs of :class:`GeneratorPass` (codes ``zq``; 0 where off)."""
        cfg = self.cfg
        proj, subsp, anchor = (torch.zeros((), device=self.device) for _ in range(3))
        inter = L.interaction_penalty(sub.float().view(-1, 4, sub.shape[1]) * (1.0 / self.scale))
        if cfg.lambda_projection > 0:
            proj = L.cross_projection_penalty(coef.float().view(-1, 4, coef.shape[1]), *self.proj_slices)
        if cfg.lambda_anchor > 0:
            c4 = coef.float().view(-1, 4, coef.shape[1])[..., self.proj_slices[0]]  # (q, 4, k)
            z4 = zq.view(-1, 4, zq.shape[1])[..., self.identity_code_cols]  # (q, 4, k)
            anchor = L.identity_anchor_penalty(identity_changes(c4), identity_changes(z4))
        if dense is not None:
            d = dense.float().view(-1, 4, dense.shape[1]) * (1.0 / self.scale)  # (f/4, 4, 3V)
            subsp = L.subspace_penalty(identity_changes(d), self.identity_basis)
        return L.GeneratorPenalties(inter, proj, subsp, anchor)

    def generator_step(self, step: int) -> dict:
        """The generator update of step ``step``: G minimises eq. 8 and the penalties beyond the
        paper (:func:`.losses.generator_loss`) on a phase batch, through the frozen D."""
        cfg = self.cfg
        t0 = time.perf_counter()
        z, factor, labels = self._codes(step, "codes")
        with frozen(self.D):
            disp, penalties = self._generate(z, step)
            t0 = self._tick("generator", t0)
            reg = self.regularizer(disp).mean() if cfg.lambda_reg > 0 else disp.new_zeros(())
            t0 = self._tick("regularizer", t0)
            img = self._noise(self._images(disp), step, "gen")
            t0 = self._tick("mapping", t0)
            if cfg.channels_last:
                img = img.contiguous(memory_format=torch.channels_last)
            with self._amp():
                out = self.D(img)
            loss = L.generator_loss(out.critic, out.logits[factor] if factor in self.classify else None, labels,
                                    {f: out.features[f] for f in self.factors if f != factor}, reg, cfg, penalties)
            self.opt_g.zero_grad(set_to_none=True)
            loss.total.backward()  # under torchrun, DDP averages G's gradients here
        self.opt_g.step()
        if self.G_ema is not None:
            self._update_ema()
        if self.folded is not None:
            self.folded.refresh(self.G)
        self._tick("discriminator", t0)  # D forward/backward dominate the remainder
        return self._generator_values(loss, factor)

    def _generator_values(self, loss: L.GeneratorLoss, factor: str) -> dict:
        """The generator step's losses.csv values: the terms, the regulariser's share of eq. 8, the phase."""
        cfg = self.cfg
        v: dict[str, Any] = {col: getattr(loss, name).item() for col, name in GENERATOR_COLUMNS.items()}
        terms = [abs(cfg.lambda_gan * v["g_gan"]), abs(cfg.lambda_cls * v["g_cls"]),
                 abs(cfg.lambda_feat * v["g_feat"]), abs(cfg.lambda_reg * v["g_reg"])]
        v["reg_share"] = terms[3] / sum(terms) if sum(terms) > 0 else 0.0
        v["phase"] = factor
        return v

    def step(self, step: int) -> dict:
        """Run step ``step`` (0-based): the critic steps then the generator step."""
        vals: dict[str, Any] = {}
        gp = {}
        for k in range(self.cfg.critic_steps):
            vals = self.critic_step(step, k)  # the last critic step's values are logged,
            gp = {"d_gp": vals["d_gp"]} if "d_gp" in vals else gp  # and its last penalty (lazy: if any)
        vals = {**vals, **gp}
        if step < self.cfg.critic_warmup:  # the critic learns the current G's fakes first
            vals["phase"] = "critic_warmup"
            return vals
        vals.update(self.generator_step(step))
        return vals

    # ------------------------------------------------------------------ log windows
    def loss_columns(self) -> list[str]:
        """CSV columns: LOSS_COLUMNS plus ``g_cls_<factor>`` (the classification loss of each phase)."""
        i = LOSS_COLUMNS.index("g_feat")
        return LOSS_COLUMNS[:i] + [f"g_cls_{f}" for f in self.factors] + LOSS_COLUMNS[i:]

    def _accumulate(self, vals: dict) -> None:
        """Add one step's values to the current log window (sums and counts; saved in checkpoints)."""
        acc = self.window
        for k, v in vals.items():
            if k == "phase":
                continue
            acc.setdefault(k, [0.0, 0])
            acc[k][0] += float(v)
            acc[k][1] += 1
        if "g_cls" not in vals:
            return
        key = f"g_cls_{vals['phase']}"
        acc.setdefault(key, [0.0, 0])
        acc[key][0] += float(vals["g_cls"])
        acc[key][1] += 1

    def _window_means(self) -> dict:
        """Means over the steps of the window (each ``g_cls_<f>`` over its own phase's steps); resets it."""
        out = {k: s / n for k, (s, n) in sorted(self.window.items()) if n}
        self.window = {}
        return out

    # ------------------------------------------------------------------ run
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D) codes -> (B, V, 3) vertex positions (CPU float32)."""
        with torch.no_grad():
            t = torch.from_numpy(self.data.template).to(self.device)
            return (self.G_eval(z.to(self.device)) + t).float().cpu()

    def save_checkpoint(self, steps_done: int) -> None:
        if self.ctx.is_main:
            save_checkpoint(self.run_dir, steps_done, self.cfg.to_dict(), self.G, self.D, self.opt_g, self.opt_d,
                            self.codes, ema=self.G_ema, extras={"data_fingerprint": self.fingerprint(),
                                                "displacement_scale": self.scale, "log_window": self.window})
        barrier(self.ctx)

    def build_face_model(self, steps_done: int):
        from fitface.models.face_model import FaceModel

        ds = self.data.dataset
        meta = {"displacement_scale": self.scale, "trained_steps": int(steps_done),
                "dataset": {"fingerprint": ds.fingerprint, "path": str(ds.path), "num_train": self.data.num_train,
                            "info": ds.info},
                "recipe": self.cfg.recipe, "ema_decay": self.cfg.ema_decay, "init": self.cfg.init}
        classes = {f.name: list(f.classes) for f in ds.factors}
        G = self.G_eval.to("cpu") if self.device.type != "cpu" else self.G_eval
        model = FaceModel(ds.template_vertices, ds.faces, self.uv, self.layout, G, unit=ds.unit,
                          landmark_sets=ds.landmark_sets, image_size=self.cfg.image_size, classes=classes,
                          metadata=json.loads(json.dumps(meta, default=str)))
        return model

    def save_model(self, steps_done: int, finish_model: Callable[[Any], Any] | None = None) -> Path:
        """RUN_DIR/model.safetensors: the evaluated G at this step, with D.

        Args:
            finish_model: called on the :class:`fitface.models.face_model.FaceModel` before it is
                written (``fitface train`` adds the template's mediapipe landmark set there).
        """
        from fitface.models.model_file import save_model

        path = self.run_dir / MODEL_FILE
        model = self.build_face_model(steps_done)
        if finish_model is not None:
            finish_model(model)
        D = self.D.to("cpu") if self.device.type != "cpu" else self.D
        save_model(path, model, discriminator=D, training_config=self.cfg.to_dict(), data_fingerprint=self.fingerprint())
        self.G_eval.to(self.device)
        self.D.to(self.device)
        return path

    def save_snapshot(self, steps_done: int) -> Path:
        """RUN_DIR/snapshots/model_STEP.safetensors: the evaluated G at this step (no D)."""
        from fitface.models.model_file import save_model

        path = self.run_dir / "snapshots" / f"model_{steps_done:07d}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_model(path, self.build_face_model(steps_done), training_config=self.cfg.to_dict(),
                   data_fingerprint=self.fingerprint())
        self.G_eval.to(self.device)
        return path

    def train(self, callback: Callable[[int, dict], None] | None = None, save_model: bool = True,
              finish_model: Callable[[Any], Any] | None = None) -> TrainResult:
        """Run from :attr:`start_step` to :attr:`total_steps`; returns a :class:`TrainResult`.

        Args:
            callback: called as ``callback(step, values)`` after each step.
            save_model: write RUN_DIR/model.safetensors at the end (rank 0).
            finish_model: called once, on the final model before it is written (:meth:`save_model`).
        """
        cfg = self.cfg
        self._evaluator = self._proxy = None  # built when first used (as each train() call did)
        logs = self._open_logs() if self.ctx.is_main else None
        bar = self._progress_bar()
        last: dict = {}
        if self.start_step == 0 and (cfg.metrics_every or cfg.proxy_every) and self.total_steps > 0:
            self._log_metrics(0, logs)  # the baseline: an untrained G outputs (almost) the template
        clock = StepClock()
        for s in range(self.start_step, self.total_steps):
            last = self.step(s)
            self._log_step(s, last, logs, clock, bar)
            if callback is not None:
                callback(s, last)
            self._periodic(s + 1, logs)
        if bar is not None:
            bar.close()
        final, model_path = self._finish(logs, save_model, finish_model)
        if logs is not None:
            logs.tb.close()
        return TrainResult(self.run_dir, final, model_path, last)

    # ------------------------------------------------------------------ run: parts
    def metric_columns(self) -> list[str]:
        """metrics.csv columns (with the proxy evaluation's when the config runs it)."""
        cols = ["step", "div_global"] + [f"div_shared_{f}" for f in self.factors] + \
               ["specificity", "nearest_p10", "nearest_p50", "nearest_p90", "near_share",
                "mean_face_distance", "heldout_near_share", "heldout_nearest", "template_distance"]
        if self.cfg.proxy_every:
            from fitface.evaluation.proxy import ProxyConfig, row_columns

            cols += [f"proxy_{c}" for c in row_columns(ProxyConfig().lambdas)]
        return cols

    def _open_logs(self) -> RunLogs:
        """Write the run folder's config; open its logs (continued from :attr:`start_step` on resume)."""
        from .logs import CsvLog, TensorBoardLog

        resuming = self.start_step > 0
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_text(self.run_dir / "config.json", self.cfg.to_json() + "\n")
        write_text(self.run_dir / "config.toml", self.cfg.to_toml())
        (self.run_dir / "samples").mkdir(exist_ok=True)
        losses = CsvLog(self.run_dir / "losses.csv", self.loss_columns(),
                        resume_step=self.start_step if resuming else None)
        metrics = CsvLog(self.run_dir / "metrics.csv", self.metric_columns(),  # rows hold steps *done*
                         resume_step=self.start_step + 1 if resuming else None)
        tb = TensorBoardLog(self.run_dir / "tensorboard", self.cfg.tensorboard,
                            purge_step=self.start_step if resuming else None)
        return RunLogs(losses, metrics, tb)

    def _progress_bar(self):
        """A tqdm bar on the main process when the config asks for one, else None."""
        if not (self.ctx.is_main and self.cfg.progress):
            return None
        from tqdm import tqdm

        return tqdm(total=self.total_steps, initial=self.start_step, unit="it", dynamic_ncols=True, leave=True)

    def _log_step(self, s: int, vals: dict, logs: RunLogs | None, clock: StepClock, bar) -> None:
        """Add step ``s``'s values to the log window; write its losses.csv row at the window's end."""
        cfg = self.cfg
        self._accumulate(vals)
        clock.window_steps += 1
        done = s + 1
        if done % cfg.log_every == 0 or done == self.total_steps:
            rate, elapsed = clock.lap()
            means = average_scalars(self._window_means(), self.ctx)
            row = {"step": s, "epoch": done / self.steps_per_epoch, "phase": vals["phase"], **means,
                   "it_per_s": rate, "samples_per_s": rate * cfg.batch_size, "elapsed_s": elapsed}
            if logs is not None:
                logs.losses.write(row)
                logs.tb.scalars(s, {k: v for k, v in row.items() if k not in ("step", "phase")}, prefix="train/")
        if bar is not None:
            bar.update(1)
            bar.set_postfix(d=f"{vals['d_loss']:.3g}", g=f"{vals.get('g_loss', math.nan):.3g}",
                            reg=f"{vals.get('g_reg', math.nan):.3g}", refresh=False)

    def _periodic(self, done: int, logs: RunLogs | None) -> None:
        """What is due after ``done`` steps: metrics, sample grid, checkpoint (the end has its own,
        :meth:`_finish`), snapshot."""
        cfg = self.cfg
        due = [n for n in (cfg.metrics_every, cfg.proxy_every) if n]
        if any(done % n == 0 for n in due) and done != self.total_steps:
            self._log_metrics(done, logs)
        if cfg.sample_every and done % cfg.sample_every == 0 and done != self.total_steps:
            self._write_grid(done, logs)
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done != self.total_steps:
            self.save_checkpoint(done)
        if cfg.snapshot_every and done % cfg.snapshot_every == 0 and self.ctx.is_main:
            self.save_snapshot(done)

    def _finish(self, logs: RunLogs | None, save_model: bool, finish_model) -> tuple[int, Path | None]:
        """The end of the run: metrics, grid, checkpoint and model of the final step (when steps
        ran or no model was written yet). Returns (steps done, model path or None)."""
        final = max(self.total_steps, self.start_step)
        model_path = None
        if final > self.start_step or not (self.run_dir / MODEL_FILE).exists():
            if logs is not None:
                self._log_metrics(final, logs)
                self._write_grid(final, logs)
            self.save_checkpoint(final)
            if save_model and self.ctx.is_main:
                model_path = self.save_model(final, finish_model)
        else:
            model_path = self.run_dir / MODEL_FILE
        barrier(self.ctx)
        return final, model_path

    def _progress_evaluator(self):
        """The :class:`.metrics.ProgressEvaluator` of this run (built on first use)."""
        from fitface.evaluation.diversity_specificity import ProgressEvaluator

        if self._evaluator is None:
            cfg = self.cfg
            n = self.data.num_train
            m = n if cfg.metrics_max_train == 0 else min(n, cfg.metrics_max_train)
            pos = np.linspace(0, n - 1, m).astype(np.int64)
            ref = self.data.batch(pos) + torch.from_numpy(self.data.template)[None]
            ds = self.data.dataset
            other = "test" if cfg.split == "val" else "val"  # held out from *this* run's training
            val = ds.indices(other)[:cfg.metrics_heldout]
            heldout = torch.from_numpy(np.asarray(ds.read(val), dtype=np.float32)) if len(val) else None
            self._evaluator = ProgressEvaluator(ref, self.data.template, self.layout, cfg.metrics_samples,
                                                cfg.metrics_pairs, seed=cfg.seed + 12345, near_ratio=cfg.near_ratio,
                                                heldout=heldout)
        return self._evaluator

    def _proxy_row(self, step_done: int, logs: RunLogs) -> dict:
        """The proxy evaluation of G (the EMA when enabled) as ``proxy_*`` columns."""
        from fitface.evaluation.proxy import ProxyEvaluator

        if self._proxy is None:
            self._proxy = ProxyEvaluator(self.data.dataset.path, self.cfg.proxy_ict_source or None)
        row = self._proxy(self.build_face_model(step_done)).as_row()
        self.G_eval.to(self.device)
        logs.tb.scalars(step_done, row, prefix="proxy/")
        return {f"proxy_{k}": v for k, v in row.items()}

    def _log_metrics(self, step_done: int, logs: RunLogs | None):
        """The progress metrics (and the proxy evaluation when due) after ``step_done`` steps, in
        metrics.csv (main process only)."""
        if logs is None:
            return None
        cfg = self.cfg
        evaluator = self._progress_evaluator()
        pm = evaluator(self.decode)
        row = {"step": step_done, **pm.as_row(), "heldout_near_share": evaluator.heldout_share,
               "heldout_nearest": evaluator.heldout_nearest, "template_distance": evaluator.template_distance}
        if cfg.proxy_every and (step_done % cfg.proxy_every == 0 or step_done == self.total_steps):
            row.update(self._proxy_row(step_done, logs))
        logs.metrics.write(row)
        logs.tb.scalars(step_done, pm.as_row(), prefix="metrics/")
        return pm

    def _write_grid(self, step_done: int, logs: RunLogs | None) -> None:
        """samples/step_STEP.png: random faces, then faces sharing each factor's code (Fig. 3)."""
        if logs is None:
            return
        from fitface.io.image import write_png
        from fitface.preview import sample_grid

        cfg = self.cfg
        g = torch.Generator().manual_seed(cfg.seed + 777)
        n = cfg.grid_columns
        blocks = [self.decode(shared_code_batch(self.layout, None, n, g))]
        titles = ["random"]
        for f in reversed(self.factors):  # Fig. 3: shared expression, then shared identity
            blocks.append(self.decode(shared_code_batch(self.layout, f, n, g)))
            titles.append(f"same {f}")
        img = sample_grid([b.numpy() for b in blocks], self.data.dataset.faces, cfg.grid_cell, titles)
        write_png(self.run_dir / "samples" / f"step_{step_done:07d}.png", img)
        logs.tb.image("samples", img, step_done)
