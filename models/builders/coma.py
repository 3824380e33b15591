"""The paper's "CoMA [32]" baseline in its DeepFLAME variant: PCA identity + CoMA expression autoencoder.

Paper §5.5: a PCA identity model from the neutral faces (65 modes) and a CoMA mesh autoencoder
(latent 20) trained on each face's displacement from its own identity's neutral; identity and
expression do not interact. :func:`build_coma` builds it from a fitface dataset as a
:class:`FaceModel` whose generator is a :class:`fitface.models.coma_generator.ComaGenerator`
(model-file kind ``"coma"``), so sampling, metrics, fitting and retargeting use it like any model.

Convention:
    * Neutral of an identity and the identity PCA: exactly the linear 3DMM's
      (:func:`fitface.models.builders.linear.neutral_identity_pca`): the mean of the identity's
      ``split`` samples labeled ``"neutral"``; centred PCA, each mode scaled by its standard
      deviation, so ``z_id ~ N(0, I)`` samples it; ``template`` = the mean neutral. Columns
      beyond what the data supports are zero.
    * Displacement of a sample = its vertices - its identity's neutral (dataset unit). Samples
      without an identity label, or whose identity has no neutral, are skipped and counted.
      Displacements are computed batch by batch from the memory-mapped dataset
      (:class:`NeutralDisplacements`); nothing holds the whole split.
    * Normalisation: per-vertex-coordinate mean and population std of all training
      displacements, streamed in float64 (:data:`CHUNK_SAMPLES` at a time), with the
      autoencoder's std floor (:meth:`ComaAutoencoder.set_normalisation_stats`).
    * The mesh hierarchy is built once on the dataset's template (``ds.template_vertices``,
      ``ds.faces``; :func:`fitface.models.mesh_sampling.build_hierarchy`) and stored in the
      model file.
    * Training: :func:`fitface.models.coma.train_coma` (CoMA's SGD settings), seeded; it stops
      at ``max_epochs`` or ``max_minutes``, whichever comes first.
    * The codes' Gaussian: ``code_samples`` training displacements (a seeded random subset,
      all when there are fewer) are encoded; ``(exp_mean, exp_scale)`` =
      :func:`fitface.models.multilinear.gaussian_factor` of those codes, so ``z_exp ~ N(0, I)``
      samples it.
    * Latent layout: ``identity`` (identity_dims) then ``expression`` (expression_dims), no
      noise block.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from fitface.latent import LatentLayout

from .common import BaselineBuild
from .linear import CHUNK_SAMPLES, IMAGE_SIZE, neutral_identity_pca

if TYPE_CHECKING:  # pragma: no cover
    from fitface.data.format import Dataset

__all__ = ["ComaBuildConfig", "BaselineBuild", "NeutralDisplacements", "build_coma", "CODE_BATCH"]

#: Displacements encoded at a time when fitting the codes' Gaussian.
CODE_BATCH = 64


@dataclass(frozen=True)
class ComaBuildConfig:
    """Settings of :func:`build_coma` (CoMA's published training settings by default).

    Attributes:
        identity_dims: PCA identity modes (paper: 65).
        expression_dims: CoMA latent size (paper: 20).
        split: the dataset split to build from.
        max_epochs: epochs of training (may be fractional; the paper's 200).
        max_minutes: wall-clock training budget in minutes (None: none; the issue's 30).
            Training stops at whichever of the two comes first; the report says which.
        batch_size, lr, lr_decay, momentum, weight_decay: CoMA's SGD settings.
        seed: seeds the network's initialisation, the shuffling and the code subset.
        code_samples: training displacements encoded to fit the codes' Gaussian (a seeded
            subset; 2,000 estimate a 20-dim Gaussian's std to about 2 % and cost about 35 s on
            the ICT face at one thread (measured 64 in 1.1 s), where encoding all 24,147 ICT
            training displacements would cost about 7 minutes of a 30-minute budget).
        show_progress: a tqdm bar of the SGD steps on stderr.
    """

    identity_dims: int = 65
    expression_dims: int = 20
    split: str = "train"
    max_epochs: float = 200.0
    max_minutes: float | None = 30.0
    batch_size: int = 16
    lr: float = 8e-3
    lr_decay: float = 0.99
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    code_samples: int = 2000
    show_progress: bool = True

    def __post_init__(self):
        for name in ("identity_dims", "expression_dims", "batch_size", "code_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if not (np.isfinite(float(self.max_epochs)) and self.max_epochs >= 0):
            raise ValueError(f"max_epochs: expected a non-negative number, got {self.max_epochs!r}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"max_minutes: expected a positive number or None, got {self.max_minutes!r}")
        for name in ("lr", "lr_decay"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected a positive number, got {getattr(self, name)!r}")


class NeutralDisplacements:
    """Displacements ``vertices[i] - neutral(identity(i))`` of a sample list, read on demand.

    Args:
        vertices: (N, V, 3) float32 dataset vertices (a memory map; only indexed rows are read).
        sample_indices: (M,) int dataset indices. sample_rows: (M,) int rows of ``neutrals``.
        neutrals: (I, V, 3) float neutrals (dataset unit).

    ``shape`` is (M, V, 3); ``source[idx]`` with an (b,) int array gives (b, V, 3) float32
    (rows read in ascending file order, returned in the order of ``idx``).
    """

    def __init__(self, vertices, sample_indices: np.ndarray, sample_rows: np.ndarray, neutrals: np.ndarray):
        self.vertices = vertices
        self.sample_indices = np.asarray(sample_indices, dtype=np.int64)
        self.sample_rows = np.asarray(sample_rows, dtype=np.int64)
        self.neutrals = np.asarray(neutrals, dtype=np.float32)
        self.shape = (len(self.sample_indices), int(vertices.shape[1]), 3)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        order = np.argsort(self.sample_indices[idx], kind="stable")
        out = np.empty((len(idx), self.shape[1], 3), dtype=np.float32)
        out[order] = np.asarray(self.vertices[self.sample_indices[idx[order]]], dtype=np.float32)
        out -= self.neutrals[self.sample_rows[idx]]
        return out

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-vertex-coordinate mean and population std over all samples, (V, 3) float64 each
        (one streamed pass, :data:`CHUNK_SAMPLES` at a time)."""
        n, nv = self.shape[0], self.shape[1]
        total, squares = np.zeros((nv, 3)), np.zeros((nv, 3))
        for s in range(0, n, CHUNK_SAMPLES):
            d = self[np.arange(s, min(n, s + CHUNK_SAMPLES))].astype(np.float64)
            total += d.sum(axis=0)
            squares += (d * d).sum(axis=0)
        mean = total / n
        return mean, np.sqrt(np.maximum(squares / n - mean * mean, 0.0))


def build_coma(dataset: Dataset | str | os.PathLike, config: ComaBuildConfig = ComaBuildConfig(),
               progress: Callable[[str], None] | None = None) -> BaselineBuild:
    """Build the CoMA (DeepFLAME) baseline from a dataset split (module Convention).

    Args:
        dataset: a loaded :class:`fitface.data.format.Dataset` or its folder.
        config: :class:`ComaBuildConfig`.
        progress: optional ``progress(message)`` called after each stage and epoch.

    Returns:
        :class:`BaselineBuild`: a float32 CPU :class:`FaceModel` (template = mean neutral, the
        dataset's faces, landmark sets and class names, UV = the harmonic parameterisation of
        the dataset template, layout identity + expression) and the report.

    Raises:
        InputError: the dataset lacks identity / neutral labels (see
            :func:`~fitface.models.builders.linear.neutral_identity_pca`) or has no displacement.
        ValueError: an unknown split.
    """
    import torch

    from fitface.data.format import load_dataset
    from fitface.errors import InputError
    from fitface.geometry.parameterization import harmonic_uv
    from fitface.models.coma import ComaAutoencoder, train_coma
    from fitface.models.coma_generator import ComaGenerator
    from fitface.models.face_model import FaceModel
    from fitface.models.mesh_sampling import build_hierarchy
    from fitface.models.multilinear import gaussian_factor

    t0 = time.perf_counter()
    say = progress or (lambda msg: None)
    cfg = config
    ds = dataset if hasattr(dataset, "vertices") else load_dataset(dataset)
    ni = neutral_identity_pca(ds, cfg.identity_dims, cfg.split, say, model="CoMA baseline")
    source = NeutralDisplacements(ds.vertices, ni.sample_indices, ni.sample_rows, ni.neutrals)
    m = len(source)
    if m < 2:
        raise InputError(f"only {m} samples of the {cfg.split!r} split have a displacement from their identity's "
                         f"neutral; the CoMA baseline needs at least 2", ds.path)
    nv = ds.num_vertices

    # --- PCA identity, in the layout's identity block ------------------------------------------
    basis = np.zeros((3 * nv, cfg.identity_dims))
    basis[:, : ni.identity.num_modes] = ni.identity.modes.T * ni.identity.std  # (3V, I)

    # --- hierarchy, normalisation, training ------------------------------------------------------
    t_h = time.perf_counter()
    hierarchy = build_hierarchy(np.asarray(ds.template_vertices, dtype=np.float64), ds.faces)
    say(f"mesh hierarchy: {' -> '.join(str(s) for s in hierarchy.sizes)} vertices "
        f"({time.perf_counter() - t_h:.1f} s)")
    t_n = time.perf_counter()
    mean, std = source.moments()
    say(f"normalisation: {m} displacements ({time.perf_counter() - t_n:.1f} s)")
    ae = ComaAutoencoder(hierarchy, latent_size=cfg.expression_dims, seed=cfg.seed, dtype=torch.float32)
    ae.set_normalisation_stats(mean, std)

    bar = None
    if cfg.show_progress:
        from tqdm import tqdm

        per_epoch = -(-m // cfg.batch_size)
        bar = tqdm(total=int(np.ceil(cfg.max_epochs * per_epoch - 1e-9)), desc="CoMA training", unit="step",
                   file=sys.stderr, leave=False)

    def on_step(step: int, loss: float) -> None:
        if bar is not None:
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{loss:.4f}")

    def on_epoch(record: dict) -> None:
        say(f"epoch {record['epoch']}: L1 {record['loss']:.4f} (normalised), {record['batches']} steps, "
            f"{record['seconds']:.0f} s")

    try:
        run = train_coma(ae, source, cfg.max_epochs, batch_size=cfg.batch_size, lr=cfg.lr, momentum=cfg.momentum,
                         lr_decay=cfg.lr_decay, weight_decay=cfg.weight_decay, seed=cfg.seed, progress=on_epoch,
                         fit_normalisation=False, max_minutes=cfg.max_minutes, step_callback=on_step)
    finally:
        if bar is not None:
            bar.close()
    say(f"training: {run.steps} steps, {run.epochs:.3f} epochs, stopped by {run.stop_reason}")

    # --- the codes' Gaussian ---------------------------------------------------------------------
    t_c = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    chosen = np.sort(rng.choice(m, size=min(m, cfg.code_samples), replace=False))
    codes = []
    with torch.no_grad():
        for s in range(0, len(chosen), CODE_BATCH):
            d = torch.from_numpy(source[chosen[s:s + CODE_BATCH]])
            codes.append(ae.encode(ae.normalise(d)).double())
    exp_mean, exp_scale = gaussian_factor(torch.cat(codes))
    say(f"codes' Gaussian: {len(chosen)} encoded displacements ({time.perf_counter() - t_c:.1f} s)")

    gen = ComaGenerator(ae, torch.from_numpy(basis.astype(np.float32)), exp_mean=exp_mean.float(),
                        exp_scale=exp_scale.float()).eval()
    layout = LatentLayout((("identity", cfg.identity_dims), ("expression", cfg.expression_dims)))
    uv = harmonic_uv(np.asarray(ds.template_vertices, dtype=np.float64), ds.faces, what="template").uv  # (V, 2)
    classes = {f.name: list(f.classes) for f in ds.factors if f.name in layout.factors}
    report = {
        "kind": "coma",
        "variant": "DeepFLAME: PCA identity + CoMA autoencoder on displacements from the identity's neutral",
        "reference": "Ranjan, Bolkart, Sanyal, Black 2018, Generating 3D faces using convolutional mesh "
                     "autoencoders (paper ref. [32]); paper section 5.5",
        "split": cfg.split,
        "identities": len(ni.identity_labels),
        "identities_skipped_without_neutral": ni.skipped_identities,
        "samples_without_identity": ni.unlabeled_samples,
        "samples_skipped": ni.skipped_samples,
        "samples": m,
        "identity": ni.identity.to_json(),
        "hierarchy_sizes": list(hierarchy.sizes),
        "epochs_done": round(run.epochs, 6),
        "steps": run.steps,
        "epoch_loss": [float(r["loss"]) for r in run.history],
        "epoch_batches": [int(r["batches"]) for r in run.history],
        "training_seconds": round(run.seconds, 3),
        "stop_reason": run.stop_reason,
        "code_samples": int(len(chosen)),
        "config": asdict(cfg),
        "build_seconds": round(time.perf_counter() - t0, 3),
    }
    report = json.loads(json.dumps(report, default=str))
    meta = {"baseline": report, "dataset": {"fingerprint": ds.fingerprint, "path": str(ds.path), "info": ds.info}}
    model = FaceModel(ni.mean, ds.faces, uv, layout, gen, unit=ds.unit, landmark_sets=ds.landmark_sets,
                      image_size=IMAGE_SIZE, classes=classes, metadata=json.loads(json.dumps(meta, default=str)))
    return BaselineBuild(model.eval(), report)
