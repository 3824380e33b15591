"""Training the decoupling embedders: a network per factor, its "same" threshold on held-out pairs.

:func:`train_embedders` trains and saves the embedders of a dataset (one
:class:`~fitface.evaluation.embedder.Embedder` per factor,
``DATASET/embedders/{factor}.safetensors``); :func:`train_embedder` trains one
(:class:`EmbedderConfig`: the settings, a CPU recipe by default). The network is :mod:`fitface.evaluation.embedder_network`, its inputs
:mod:`fitface.evaluation.embedder_rendering`, the loss and the threshold
:mod:`fitface.evaluation.embedder_verification`.

Files (in ``DATASET/embedders/``):
    ``embedders.json``        a human-readable summary of the last :func:`train_embedders` run.

Convention:
    * Labels: identity uses every training-split sample (identity labels are on all samples, so
      the identity network sees every expression of a person); expression uses only labeled
      samples (label >= 0).
    * Validation pairs: from the held-out splits (``EmbedderConfig.threshold_splits``, default
      val + test: samples the network never trained on); equal numbers of positive (same class)
      and negative pairs, drawn without replacement, at most ``max_pairs`` of each.
    * Threshold: maximises accuracy on those pairs subject to FAR (share of negative pairs
      judged same) strictly below ``max_far``
      (:func:`~fitface.evaluation.embedder_verification.select_threshold`).
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from fitface.evaluation.embedder import Embedder, embedder_path, save_embedder
from fitface.evaluation.embedder_network import ResNet18Embedder, images_to_tensor
from fitface.evaluation.embedder_rendering import EMBEDDER_DIR, RenderCache, RenderSettings, dataset_camera
from fitface.evaluation.embedder_verification import (
    MAX_FAR,
    TRIPLET_MARGIN,
    balanced_pairs,
    select_threshold,
    triplet_loss,
)

SUMMARY_FILE = "embedders.json"


@dataclass
class EmbedderConfig:
    """Training settings of the decoupling embedders.

    The defaults are a CPU recipe (minutes on 2 cores); the paper's setting is
    ``input_size=224, width=1.0`` (use :meth:`paper`), with more steps on a GPU.

    Attributes:
        factors: factors to train (None = every factor of the dataset).
        input_size: render side S in pixels (paper: 224).
        width: ResNet-18 width multiplier (paper: 1.0).
        embedding_dim: embedding size (paper: 128).
        steps: optimisation steps per factor.
        classes_per_batch: P of the P x K batches (capped by the number of classes).
        samples_per_class: K of the P x K batches.
        lr: Adam learning rate (cosine-decayed to ``lr * final_lr_fraction``).
        final_lr_fraction: see ``lr``.
        weight_decay: Adam weight decay.
        margin: triplet margin on squared distances.
        mining: ``"semi_hard"`` (FaceNet) or ``"batch_hard"`` (see
            :func:`~fitface.evaluation.embedder_verification.triplet_loss`).
        shift: random translation augmentation, in pixels (0 = none).
        max_far: FAR bound of the threshold (strict).
        threshold_splits: held-out splits the validation pairs come from.
        max_pairs: most positive (and as many negative) validation pairs.
        max_train_samples: most training samples per factor (rendered and kept in RAM).
        max_val_samples: most held-out samples embedded for the validation pairs.
        seed: seeds the network, the batches and the pairs.
        device: torch device string.
        threads: CPU threads torch uses while training and embedding (restored afterwards;
            0 = leave torch's setting). The trained network depends on the thread count, since
            reduction order changes the optimiser's path: on the ICT set, with one seed, the
            expression embedder reached 67.3 % accuracy with 1 thread and 61.8 % with 2 on an
            AVX2 CPU (72.8 % with 1 thread on an AVX-512 one: the CPU's kernels matter too).
            The default pins 1, so a seed gives the same embedders on one machine whatever
            torch's thread setting; compare Dec- values only under the same embedders.
    """

    factors: tuple[str, ...] | None = None
    input_size: int = 96
    width: float = 0.5
    embedding_dim: int = 128
    steps: int = 800
    classes_per_batch: int = 8
    samples_per_class: int = 4
    lr: float = 1e-3
    final_lr_fraction: float = 0.05
    weight_decay: float = 1e-4
    margin: float = TRIPLET_MARGIN
    mining: str = "semi_hard"
    shift: int = 3
    max_far: float = MAX_FAR
    threshold_splits: tuple[str, ...] = ("val", "test")
    max_pairs: int = 20000
    max_train_samples: int = 6000
    max_val_samples: int = 2000
    seed: int = 0
    device: str = "cpu"
    threads: int = 1

    @classmethod
    def paper(cls, **overrides) -> "EmbedderConfig":
        """The paper's network size (224 x 224 input, full width), for GPUs."""
        base = dict(input_size=224, width=1.0, steps=5000, shift=6)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any] | "EmbedderConfig" | None) -> "EmbedderConfig":
        """Build from a dict (unknown keys -> ValueError naming them) or pass a config through."""
        if obj is None:
            return cls()
        if isinstance(obj, cls):
            return obj
        known = {f.name for f in fields(cls)}
        extra = set(obj) - known
        if extra:
            raise ValueError(f"config: unknown keys {sorted(extra)}; known: {sorted(known)}")
        kw = dict(obj)
        for k in ("factors", "threshold_splits"):
            if kw.get(k) is not None:
                kw[k] = tuple(kw[k])
        out = cls(**kw)
        if out.threads < 0:
            raise ValueError(f"config: threads must be >= 0 (got {out.threads})")
        return out

    def to_json(self) -> dict:
        d = asdict(self)
        for k in ("factors", "threshold_splits"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d


@contextmanager
def torch_threads(n: int):
    """Run the block with ``torch.set_num_threads(n)`` (0 = unchanged), then restore."""
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _shift(images: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Random integer translation of each image by up to ``max_shift`` px, background filled."""
    if max_shift <= 0:
        return images
    out = np.zeros_like(images)
    s = images.shape[1]
    for b, (dy, dx) in enumerate(rng.integers(-max_shift, max_shift + 1, (len(images), 2))):
        ys, yd = (slice(0, s - dy), slice(dy, s)) if dy >= 0 else (slice(-dy, s), slice(0, s + dy))
        xs, xd = (slice(0, s - dx), slice(dx, s)) if dx >= 0 else (slice(-dx, s), slice(0, s + dx))
        out[b, yd, xd] = images[b, ys, xs]
    return out


def _cap(idx: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(idx, k, replace=False)) if len(idx) > k else idx


def _pk_batch(by_class: list[np.ndarray], p: int, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """P classes x K samples (positions into the training arrays) and their class ids."""
    cls = rng.choice(len(by_class), min(p, len(by_class)), replace=False)
    pos, lab = [], []
    for c in cls:
        members = by_class[c]
        pos.append(rng.choice(members, k, replace=len(members) < k))
        lab.append(np.full(k, c))
    return np.concatenate(pos), np.concatenate(lab)


@dataclass
class TrainReport:
    """What :func:`train_embedder` measured (accuracy / FAR on the validation pairs)."""

    factor: str
    threshold: float
    accuracy: float
    far: float
    frr: float
    pairs: int  # positive pairs (as many negative)
    train_samples: int
    train_classes: int
    val_samples: int
    steps: int
    final_loss: float
    seconds_render: float
    seconds_train: float
    seconds_validate: float
    path: str = ""
    loss_curve: list = field(default_factory=list)


def train_embedder(ds, factor: str, config: EmbedderConfig, cache: RenderCache | None = None,
                   log: Callable[[str], None] | None = None) -> tuple[Embedder, TrainReport]:
    """Train one factor's embedder and choose its threshold (nothing is saved here).

    Args:
        ds: a loaded :class:`fitface.data.format.Dataset`.
        factor: a factor of the dataset.
        config: settings (``config.threads`` torch threads during the call).
        cache: render cache (built with the config's size when None).
        log: optional line logger.
    """
    with torch_threads(config.threads):
        return _train_embedder(ds, factor, config, cache, log)


def _train_embedder(ds, factor: str, config: EmbedderConfig, cache: RenderCache | None,
                    log: Callable[[str], None] | None) -> tuple[Embedder, TrainReport]:
    cfg = config
    log = log or (lambda s: None)
    ds.factor(factor)
    if cache is None:
        cache = RenderCache(ds, RenderSettings(dataset_camera(ds, cfg.input_size), ds.unit))
    if cache.settings.size != cfg.input_size:
        raise ValueError(f"cache: renders are {cache.settings.size} px, config input_size {cfg.input_size}")
    rng = np.random.default_rng([cfg.seed, sum(map(ord, factor))])
    torch.manual_seed(int(rng.integers(2**31)))
    lab = ds.label(factor)

    # training samples: labeled, training split, classes with >= 2 samples
    tr = ds.indices("train")
    tr = tr[lab[tr] >= 0]
    tr = _cap(tr, cfg.max_train_samples, rng)
    classes, inv, counts = np.unique(lab[tr], return_inverse=True, return_counts=True)
    keep = counts[inv] >= 2
    tr, inv = tr[keep], inv[keep]
    by_class = [np.flatnonzero(inv == c) for c in range(len(classes)) if counts[c] >= 2]
    if len(by_class) < 2:
        raise ValueError(f"factor {factor!r}: the training split needs two classes with >= 2 labeled samples")
    # held-out samples for the threshold
    ho = np.concatenate([ds.indices(s) for s in cfg.threshold_splits])
    ho = ho[lab[ho] >= 0]
    ho = _cap(np.sort(ho), cfg.max_val_samples, rng)

    t0 = time.perf_counter()
    log(f"{factor}: rendering {len(tr)} training + {len(ho)} held-out samples at {cfg.input_size} px")
    train_images = cache.get(tr)  # (n, S, S, 3) uint8 in RAM
    val_images = cache.get(ho)
    t_render = time.perf_counter() - t0

    # denormal floats (tiny activations / gradients) slow CPU training by an order of magnitude
    torch.set_flush_denormal(True)
    net = ResNet18Embedder(cfg.embedding_dim, cfg.width, cfg.input_size).to(cfg.device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(cfg.steps, 1), eta_min=cfg.lr * cfg.final_lr_fraction)
    net.train()
    t0 = time.perf_counter()
    curve, running = [], None
    for step in range(cfg.steps):
        pos, y = _pk_batch(by_class, cfg.classes_per_batch, cfg.samples_per_class, rng)
        x = images_to_tensor(_shift(train_images[pos], cfg.shift, rng)).to(cfg.device)
        out = triplet_loss(net(x), torch.as_tensor(y, device=cfg.device), cfg.margin, cfg.mining)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        sched.step()
        lv = float(out.loss.detach())
        running = lv if running is None else 0.95 * running + 0.05 * lv
        if (step + 1) % max(1, cfg.steps // 20) == 0 or step + 1 == cfg.steps:
            curve.append([step + 1, round(running, 5)])
            log(f"{factor}: step {step + 1}/{cfg.steps} loss {running:.4f} active {out.active:.2f}")
    t_train = time.perf_counter() - t0

    t0 = time.perf_counter()
    render = cache.settings
    emb = Embedder(net, factor, 0.0, render)
    e = emb.embed_images(val_images)  # (h, d)
    pairs = balanced_pairs(lab[ho], rng, cfg.max_pairs)
    d = (e[pairs.first] - e[pairs.second]).pow(2).sum(1).numpy()
    thr = select_threshold(d[pairs.same], d[~pairs.same], cfg.max_far)
    t_val = time.perf_counter() - t0
    emb.threshold = thr.threshold
    report = TrainReport(factor, thr.threshold, thr.accuracy, thr.far, thr.frr, int(pairs.same.sum()), len(tr),
                         len(by_class), len(ho), cfg.steps, float(running if running is not None else float("nan")),
                         t_render, t_train, t_val, loss_curve=curve)
    emb.meta = {
        "classes": list(ds.factor(factor).classes),
        "validation": {"accuracy": thr.accuracy, "far": thr.far, "frr": thr.frr, "max_far": cfg.max_far,
                       "positive_pairs": report.pairs, "negative_pairs": report.pairs,
                       "splits": list(cfg.threshold_splits), "samples": len(ho)},
        "training": {"config": cfg.to_json(), "samples": len(tr), "classes": len(by_class),
                     "final_loss": report.final_loss, "loss_curve": curve,
                     "seconds": {"render": t_render, "train": t_train, "validate": t_val}},
        "dataset_fingerprint": ds.fingerprint,
        "dataset_unit": ds.unit,
        "num_vertices": ds.num_vertices,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    log(f"{factor}: threshold {thr.threshold:.4f} accuracy {thr.accuracy:.2%} FAR {thr.far:.2%} "
        f"({report.pairs} + {report.pairs} pairs)")
    return emb, report


def train_embedders(dataset_path: str | os.PathLike, config: EmbedderConfig | Mapping[str, Any] | None = None,
                    log: Callable[[str], None] | None = None) -> dict:
    """Train and save the decoupling embedders of a dataset (one per factor).

    Args:
        dataset_path: a fitface dataset folder (the embedders go to its ``embedders/``).
        config: :class:`EmbedderConfig` or a dict of its fields (None = CPU defaults).
        log: optional line logger (e.g. ``print``).

    Returns:
        ``{"dataset": path, "fingerprint": str, "config": {...}, "factors": {factor:
        TrainReport as dict (threshold, accuracy, far, frr, pairs, timings, path)}}``; the same
        document is written to ``embedders/embedders.json``.
    """
    from fitface.data.format import load_dataset
    from fitface.io.atomic import write_text

    cfg = EmbedderConfig.from_dict(config)
    ds = load_dataset(dataset_path)
    factors = list(cfg.factors) if cfg.factors is not None else ds.factor_names
    for f in factors:
        ds.factor(f)
    if cfg.device != "cpu":
        torch.device(cfg.device)  # validates the string
    cache = RenderCache(ds, RenderSettings(dataset_camera(ds, cfg.input_size), ds.unit))
    out = {"dataset": str(Path(dataset_path)), "fingerprint": ds.fingerprint, "config": cfg.to_json(), "factors": {}}
    for f in factors:
        emb, rep = train_embedder(ds, f, cfg, cache, log)
        path = embedder_path(dataset_path, f)
        save_embedder(path, emb)
        rep.path = str(path)
        out["factors"][f] = asdict(rep)
    write_text(Path(dataset_path) / EMBEDDER_DIR / SUMMARY_FILE, json.dumps(out, indent=1))
    return out
