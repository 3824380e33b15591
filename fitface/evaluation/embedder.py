"""Decoupling embedders: one ResNet-18 per factor, trained with a triplet loss on normal-map renders.

Paper (supplement, "Decoupling Evaluation - Implementation Details"): an identity and an
expression network map an orthographic normal-map render of a mesh to a 128-d embedding
(triplet loss); two meshes are judged "same" when their embedding distance is below a
threshold chosen on validation pairs to maximise accuracy with a false acceptance rate (FAR)
under 10%. The paper reports identity 0.14 (98.66% accuracy, FAR 1.21%) and expression 0.226
(84.2%, FAR 8.03%) on its data. The embedders are trained once per dataset and saved in the
dataset folder, so every model evaluated on that dataset is judged by the same networks.

Files (in ``DATASET/embedders/``):
    ``{factor}.safetensors``  the network weights; the safetensors header metadata holds one key
                              ``"fitface_embedder"``, a JSON document (format, version, factor,
                              class names, network config, threshold, validation accuracy / FAR /
                              pair counts, render settings incl. the camera, dataset fingerprint,
                              training config and timings). Nothing is pickled.
    ``embedders.json``        a human-readable summary of the last :func:`train_embedders` run.
    ``renders_{S}px.npy``     render cache: (N, S, S, 3) uint8 memmap, row i = sample i
                              (rendered lazily, ``renders_{S}px.done.npy`` marks rendered rows,
                              ``renders_{S}px.json`` the settings and dataset fingerprint; a cache
                              whose settings differ is rebuilt).

Convention:
    * Render: :func:`fitface.geometry.render.render_normals` (orthographic, ``RGB = (n_cam + 1)
      / 2 * 255``, black background, two-sided) through ONE fixed frontal camera per dataset
      (:func:`dataset_camera`: the bounding box of the template and of up to
      ``FRAME_SAMPLES`` dataset meshes, framed with a margin), so face size and shape differences
      stay visible (no per-mesh re-framing). Meshes in another unit are converted to the
      dataset's unit first.
    * Distance: squared Euclidean distance of the unit-norm embeddings, in [0, 4] (FaceNet's
      convention, the paper's reference [35]); "same" means ``d < threshold`` (strict).
    * Loss: triplet loss on P x K batches (P classes, K samples each), hinge
      ``max(0, d_ap - d_an + margin)`` with margin ``TRIPLET_MARGIN`` = 0.2 (FaceNet's alpha) on
      squared distances, mean over triplets; negatives mined semi-hard (FaceNet; default) or
      batch-hard (Hermans et al. 2017), see :func:`triplet_loss`. (Batch-hard from a random
      start collapsed every embedding to one point here: loss stuck at the margin.)
    * Labels: identity uses every training-split sample (identity labels are on all samples, so
      the identity network sees every expression of a person); expression uses only labeled
      samples (label >= 0).
    * Validation pairs: from the held-out splits (``EmbedderConfig.threshold_splits``, default
      val + test: samples the network never trained on); equal numbers of positive (same class)
      and negative pairs, drawn without replacement, at most ``max_pairs`` of each.
    * Threshold: maximises accuracy on those pairs subject to FAR (share of negative pairs
      judged same) strictly below ``max_far`` (:func:`select_threshold`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np
import torch

from fitface.checks import check_shape
from fitface.errors import InputError
from fitface.geometry.camera import Camera, frame_mesh
from fitface.geometry.render import render_normals
from fitface.evaluation.embedder_network import ResNet18Embedder, images_to_tensor

FORMAT_NAME = "fitface-embedder"
FORMAT_VERSION = 1
#: Key of the JSON document in the safetensors header metadata.
METADATA_KEY = "fitface_embedder"
#: Folder (inside the dataset folder) that holds the embedders and the render cache.
EMBEDDER_DIR = "embedders"
SUMMARY_FILE = "embedders.json"

#: FaceNet's triplet margin on squared distances of unit embeddings.
TRIPLET_MARGIN = 0.2
#: The paper's FAR bound for the threshold.
MAX_FAR = 0.10
#: Meshes (besides the template) whose bounding box frames the dataset camera.
FRAME_SAMPLES = 256
#: Margin of the dataset camera (fraction of the image on each side).
FRAME_MARGIN = 0.04
#: Meshes rendered / embedded per chunk.
CHUNK = 256


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
        mining: ``"semi_hard"`` (FaceNet) or ``"batch_hard"`` (see :func:`triplet_loss`).
        shift: random translation augmentation, in pixels (0 = none).
        max_far: FAR bound of the threshold (strict).
        threshold_splits: held-out splits the validation pairs come from.
        max_pairs: most positive (and as many negative) validation pairs.
        max_train_samples: most training samples per factor (rendered and kept in RAM).
        max_val_samples: most held-out samples embedded for the validation pairs.
        seed: seeds the network, the batches and the pairs.
        device: torch device string.
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
        return cls(**kw)

    def to_json(self) -> dict:
        d = asdict(self)
        for k in ("factors", "threshold_splits"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d


# ------------------------------------------------------------------------------ rendering
@dataclass(frozen=True)
class RenderSettings:
    """How meshes are turned into embedder inputs.

    Attributes:
        camera: the fixed orthographic camera (pixels per ``unit``).
        unit: length unit the camera expects (the dataset's).
        background: RGB of uncovered pixels.
        two_sided: flip normals of back-facing triangles.
    """

    camera: Camera
    unit: str
    background: tuple[int, int, int] = (0, 0, 0)
    two_sided: bool = True

    @property
    def size(self) -> int:
        return int(self.camera.width)

    def to_json(self) -> dict:
        c = self.camera
        return {"renderer": "fitface.geometry.render.render_normals", "projection": "orthographic",
                "size": [c.height, c.width], "rotation": c.rotation.tolist(), "scale": c.scale,
                "translation": c.translation.tolist(), "unit": self.unit,
                "background": list(self.background), "two_sided": self.two_sided}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "RenderSettings":
        h, w = obj["size"]
        cam = Camera(np.asarray(obj["rotation"], float), float(obj["scale"]),
                     np.asarray(obj["translation"], float), int(h), int(w))
        return cls(cam, str(obj["unit"]), tuple(int(v) for v in obj["background"]), bool(obj["two_sided"]))


def dataset_camera(ds, size: int) -> Camera:
    """The dataset's fixed frontal camera: frames the bounding box of the template and of up to
    :data:`FRAME_SAMPLES` evenly spaced dataset meshes, margin :data:`FRAME_MARGIN`."""
    n = len(ds)
    idx = np.unique(np.linspace(0, n - 1, min(n, FRAME_SAMPLES)).round().astype(np.int64)) if n else []
    pts = [np.asarray(ds.template_vertices, np.float64)]
    if len(idx):
        v = ds.read(idx)  # (k, V, 3)
        pts.append(np.stack([v.reshape(-1, 3).min(0), v.reshape(-1, 3).max(0)]).astype(np.float64))
    return frame_mesh(np.concatenate(pts), size, margin=FRAME_MARGIN)


def render_meshes(vertices: np.ndarray | torch.Tensor, faces: np.ndarray, settings: RenderSettings) -> np.ndarray:
    """Normal-map renders of meshes sharing a topology.

    Args:
        vertices: (B, V, 3) float, in ``settings.unit``.
        faces: (F, 3) int.
        settings: the render settings (camera etc.).

    Returns:
        (B, S, S, 3) uint8 RGB.
    """
    if isinstance(vertices, torch.Tensor):
        vertices = vertices.detach().cpu().numpy()
    v = np.asarray(vertices)
    check_shape("vertices", v, (None, None, 3))
    s = settings.size
    out = np.empty((v.shape[0], s, s, 3), dtype=np.uint8)
    for i in range(v.shape[0]):
        out[i] = render_normals(v[i], faces, camera=settings.camera, background=settings.background,
                                two_sided=settings.two_sided).image
    return out


class RenderCache:
    """Lazily rendered normal maps of a dataset's samples, in a uint8 ``.npy`` memmap.

    Args:
        ds: the loaded dataset.
        settings: render settings (the cache is rebuilt when they, or the dataset, change).
    """

    def __init__(self, ds, settings: RenderSettings):
        self.ds = ds
        self.settings = settings
        folder = Path(ds.path) / EMBEDDER_DIR
        folder.mkdir(parents=True, exist_ok=True)
        s = settings.size
        stem = folder / f"renders_{s}px"
        self.path = stem.with_suffix(".npy")
        self.done_path = Path(str(stem) + ".done.npy")
        self.meta_path = stem.with_suffix(".json")
        meta = {"fingerprint": ds.fingerprint, "render": settings.to_json(), "num_samples": len(ds)}
        fresh = True
        if self.path.is_file() and self.done_path.is_file() and self.meta_path.is_file():
            try:
                fresh = json.loads(self.meta_path.read_text()) != json.loads(json.dumps(meta))
            except (OSError, ValueError):
                fresh = True
        shape = (len(ds), s, s, 3)
        if fresh:
            from fitface.io.atomic import atomic_path, write_text

            with atomic_path(self.path) as tmp:
                np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape).flush()
            self.done = np.zeros(len(ds), dtype=bool)
            self._save_done()
            write_text(self.meta_path, json.dumps(meta, indent=1))
        else:
            self.done = np.load(self.done_path, allow_pickle=False)
        self.images = np.lib.format.open_memmap(self.path, mode="r+")
        if self.images.shape != shape or self.done.shape != (len(ds),):
            raise InputError(f"render cache has shape {self.images.shape}, expected {shape}; delete it", self.path)

    def _save_done(self) -> None:
        from fitface.io.atomic import atomic_path

        with atomic_path(self.done_path) as tmp:
            np.save(tmp, self.done, allow_pickle=False)

    def get(self, indices: np.ndarray, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """(n,) sample indices -> (n, S, S, 3) uint8 renders (rendering the missing ones)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        todo = np.unique(idx[~self.done[idx]])
        for k in range(0, len(todo), CHUNK):
            b = todo[k:k + CHUNK]
            self.images[b] = render_meshes(self.ds.read(b), self.ds.faces, self.settings)
            self.images.flush()
            self.done[b] = True
            self._save_done()
            if progress is not None:
                progress(min(k + CHUNK, len(todo)), len(todo))
        return np.asarray(self.images[idx])


# ------------------------------------------------------------------------------ loss, threshold
def pairwise_sq_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances: (n, d), (m, d) -> (n, m), clamped at 0."""
    return (a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None] - 2 * a @ b.T).clamp_min(0)


class TripletLoss(NamedTuple):
    loss: torch.Tensor  # () mean over the mined triplets
    active: float  # fraction of mined triplets with a positive hinge


#: Negative-mining strategies of :func:`triplet_loss`.
MINING = ("semi_hard", "batch_hard")


def triplet_loss(emb: torch.Tensor, labels: torch.Tensor, margin: float = TRIPLET_MARGIN,
                 mining: str = "semi_hard") -> TripletLoss:
    """Triplet loss with online mining inside a batch (see module Convention).

    ``semi_hard`` (FaceNet): every (anchor, positive) pair with, as negative, the nearest
    negative farther than the positive (``d_an > d_ap``), or the farthest negative when there
    is none. ``batch_hard`` (Hermans et al.): per anchor, the farthest positive and the nearest
    negative. Hinge ``max(0, d_ap - d_an + margin)`` on squared distances, mean over triplets.

    Args:
        emb: (B, d) float embeddings (unit norm in use).
        labels: (B,) int64 class labels; anchors without a positive or a negative in the
            batch are skipped.
        margin: on squared distances.
        mining: one of :data:`MINING`.
    """
    check_shape("emb", emb, ("B", None))
    check_shape("labels", labels, (emb.shape[0],))
    if mining not in MINING:
        raise ValueError(f"mining: expected one of {MINING}, got {mining!r}")
    d = pairwise_sq_distances(emb, emb)  # (B, B)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=emb.device)
    pos = same & ~eye
    neg = ~same
    ok = pos.any(1) & neg.any(1)  # (B,) anchors with both
    if not bool(ok.any()):
        raise ValueError("labels: a batch needs two classes and a class with two samples")
    inf = torch.full_like(d, float("inf"))
    if mining == "batch_hard":
        d_ap = torch.where(pos, d, torch.zeros_like(d)).max(1).values[ok]  # (A,)
        d_an = torch.where(neg, d, inf).min(1).values[ok]  # (A,)
    else:
        a, p = torch.nonzero(pos & ok[:, None], as_tuple=True)  # (T,) anchor-positive pairs
        d_ap = d[a, p]  # (T,)
        dn = torch.where(neg[a], d[a], inf[a])  # (T, B) distances to the anchor's negatives
        semi = torch.where(dn > d_ap[:, None], dn, inf[a]).min(1).values  # nearest beyond the positive
        easiest = torch.where(neg[a], d[a], torch.full_like(dn, -float("inf"))).max(1).values
        d_an = torch.where(torch.isfinite(semi), semi, easiest)
    hinge = torch.relu(d_ap - d_an + margin)
    return TripletLoss(hinge.mean(), float((hinge.detach() > 0).float().mean()))


class ThresholdResult(NamedTuple):
    """A verification threshold and its validation statistics ("same" = distance < threshold)."""

    threshold: float
    accuracy: float  # (true accepts + true rejects) / pairs
    far: float  # accepted negatives / negatives
    frr: float  # rejected positives / positives


def select_threshold(pos: np.ndarray, neg: np.ndarray, max_far: float = MAX_FAR) -> ThresholdResult:
    """Threshold maximising accuracy subject to ``FAR < max_far``.

    Candidates are 0 and the midpoints between consecutive distinct distances of the pooled
    set (and one above the largest); ties in accuracy go to the smallest threshold (the
    lower FAR).

    Args:
        pos: (P,) distances of positive (same-class) pairs.
        neg: (Q,) distances of negative pairs.
        max_far: strict upper bound on the false acceptance rate.
    """
    pos = np.asarray(pos, np.float64).reshape(-1)
    neg = np.asarray(neg, np.float64).reshape(-1)
    if pos.size == 0 or neg.size == 0:
        raise ValueError(f"pos, neg: need at least one pair of each, got {pos.size} and {neg.size}")
    u = np.unique(np.concatenate([pos, neg]))  # sorted distinct distances
    cand = np.concatenate([[min(0.0, u[0])], (u[:-1] + u[1:]) / 2, [u[-1] + 1.0]])
    ps, ns = np.sort(pos), np.sort(neg)
    tp = np.searchsorted(ps, cand, side="left")  # positives with d < t
    fa = np.searchsorted(ns, cand, side="left")  # negatives with d < t
    far = fa / ns.size
    acc = (tp + (ns.size - fa)) / (ps.size + ns.size)
    feasible = far < max_far
    score = np.where(feasible, acc, -1.0)
    k = int(np.argmax(score))  # first (smallest threshold) maximum
    return ThresholdResult(float(cand[k]), float(acc[k]), float(far[k]), float(1 - tp[k] / ps.size))


class PairSet(NamedTuple):
    first: np.ndarray  # (P,) int64 positions into the sample list
    second: np.ndarray  # (P,) int64
    same: np.ndarray  # (P,) bool


def balanced_pairs(labels: np.ndarray, rng: np.random.Generator, max_pairs: int) -> PairSet:
    """Equal numbers of positive and negative pairs (i < j) among labeled samples.

    Args:
        labels: (n,) int64 classes (-1 = skip).
        rng: chooses the pairs (without replacement).
        max_pairs: at most this many of each kind.

    Returns:
        :class:`PairSet` positives first, then negatives (same count).
    """
    lab = np.asarray(labels, np.int64)
    i, j = np.triu_indices(len(lab), k=1)
    keep = (lab[i] >= 0) & (lab[j] >= 0)
    i, j = i[keep], j[keep]
    same = lab[i] == lab[j]
    p, q = np.flatnonzero(same), np.flatnonzero(~same)
    k = min(len(p), len(q), int(max_pairs))
    if k == 0:
        raise ValueError("labels: the held-out samples give no positive or no negative pair")
    p = rng.choice(p, k, replace=False)
    q = rng.choice(q, k, replace=False)
    sel = np.concatenate([p, q])
    return PairSet(i[sel], j[sel], same[sel])


# ------------------------------------------------------------------------------ the embedder
class Embedder:
    """A trained embedder: network + render settings + threshold.

    Attributes:
        net: :class:`~fitface.evaluation.embedder_network.ResNet18Embedder` (eval mode).
        factor: the factor it judges.
        threshold: "same" when the squared embedding distance is below it.
        render: :class:`RenderSettings`.
        meta: the whole JSON document (validation statistics, training config ...).
    """

    def __init__(self, net: ResNet18Embedder, factor: str, threshold: float, render: RenderSettings,
                 meta: Mapping[str, Any] | None = None):
        self.net = net.eval()
        self.factor = factor
        self.threshold = float(threshold)
        self.render = render
        self.meta = dict(meta or {})

    @property
    def input_size(self) -> int:
        return self.net.input_size

    @torch.no_grad()
    def embed_images(self, images: np.ndarray, batch: int = 128) -> torch.Tensor:
        """(B, S, S, 3) uint8 renders -> (B, embedding_dim) float32 unit embeddings (CPU)."""
        check_shape("images", images, (None, self.input_size, self.input_size, 3))
        p = next(self.net.parameters())
        out = [self.net(images_to_tensor(images[k:k + batch]).to(p.device, p.dtype)).float().cpu()
               for k in range(0, len(images), batch)]
        return torch.cat(out) if out else torch.zeros(0, self.net.embedding_dim)

    def render_meshes(self, vertices, faces, unit: str | None = None) -> np.ndarray:
        """(B, V, 3) float meshes (in ``unit``, default the dataset's) -> (B, S, S, 3) uint8."""
        from fitface.units import scale_between

        v = vertices.detach().cpu().numpy() if isinstance(vertices, torch.Tensor) else np.asarray(vertices)
        if unit is not None and unit != self.render.unit:
            v = v * scale_between(unit, self.render.unit)
        return render_meshes(v, np.asarray(faces), self.render)

    def embed_meshes(self, vertices, faces, unit: str | None = None) -> torch.Tensor:
        """(B, V, 3) float meshes -> (B, embedding_dim) float32 unit embeddings."""
        return self.embed_images(self.render_meshes(vertices, faces, unit))

    def same(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Paired embeddings (n, d), (n, d) -> (n,) bool, squared distance < threshold."""
        return (a - b).pow(2).sum(1) < self.threshold


def embedder_path(dataset_path: str | os.PathLike, factor: str) -> Path:
    """``DATASET/embedders/{factor}.safetensors``."""
    return Path(dataset_path) / EMBEDDER_DIR / f"{factor}.safetensors"


def save_embedder(path: str | os.PathLike, embedder: Embedder) -> None:
    """Write the embedder atomically as safetensors (weights) + JSON header metadata."""
    from safetensors.torch import save as st_save

    from fitface.io.atomic import write_bytes

    doc = dict(embedder.meta)
    doc.update(format=FORMAT_NAME, version=FORMAT_VERSION, factor=embedder.factor, threshold=embedder.threshold,
               network=embedder.net.config(), render=embedder.render.to_json(),
               distance="squared euclidean of unit embeddings; same if d < threshold")
    tensors = {k: v.detach().cpu().contiguous() for k, v in embedder.net.state_dict().items()}
    write_bytes(path, st_save(tensors, metadata={METADATA_KEY: json.dumps(doc)}))


def read_embedder(path: str | os.PathLike, device: str = "cpu") -> Embedder:
    """Load an embedder file (never unpickles); InputError when it is missing or not one."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError("no embedder file; train it with `fitface evaluate ... --train-embedders`", path)
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        doc = json.loads(meta[METADATA_KEY])
    except Exception as exc:  # safetensors raises several kinds of error on bad files
        raise InputError(f"not a fitface embedder file ({type(exc).__name__}: {exc})", path) from None
    if doc.get("format") != FORMAT_NAME or int(doc.get("version", -1)) != FORMAT_VERSION:
        raise InputError(f"not a {FORMAT_NAME} v{FORMAT_VERSION} file", path)
    cfg = dict(doc["network"])
    if cfg.pop("arch", "resnet18") != "resnet18":
        raise InputError(f"unknown embedder architecture {doc['network'].get('arch')!r}", path)
    net = ResNet18Embedder(**cfg)
    net.load_state_dict(tensors, strict=True)
    net.to(device)
    return Embedder(net, doc["factor"], doc["threshold"], RenderSettings.from_json(doc["render"]), doc)


def load_embedder(dataset_path: str | os.PathLike, factor: str, device: str = "cpu",
                  check_fingerprint: bool = True) -> Embedder:
    """The dataset's saved embedder of ``factor`` (checked against the dataset's fingerprint).

    Raises:
        InputError: missing file, not an embedder, or trained on different data.
    """
    path = embedder_path(dataset_path, factor)
    emb = read_embedder(path, device)
    if emb.factor != factor:
        raise InputError(f"embedder file is for factor {emb.factor!r}, not {factor!r}", path)
    if check_fingerprint:
        from fitface.data.format import load_dataset

        fp = load_dataset(dataset_path, check_values=False).fingerprint
        if emb.meta.get("dataset_fingerprint") != fp:
            raise InputError(f"embedder was trained on other data (fingerprint "
                             f"{emb.meta.get('dataset_fingerprint')} != dataset {fp}); retrain it", path)
    return emb


# ------------------------------------------------------------------------------ training
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
        config: settings.
        cache: render cache (built with the config's size when None).
        log: optional line logger.
    """
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
