"""Decoupling embedders: one ResNet-18 per factor, trained with a triplet loss on normal-map renders.

Paper (supplement, "Decoupling Evaluation - Implementation Details"): an identity and an
expression network map an orthographic normal-map render of a mesh to a 128-d embedding
(triplet loss); two meshes are judged "same" when their embedding distance is below a
threshold chosen on validation pairs to maximise accuracy with a false acceptance rate (FAR)
under 10%. The paper reports identity 0.14 (98.66% accuracy, FAR 1.21%) and expression 0.226
(84.2%, FAR 8.03%) on its data. The embedders are trained once per dataset and saved in the
dataset folder, so every model evaluated on that dataset is judged by the same networks.

This module: :class:`Embedder` (a trained one: network, render settings, threshold) and its
file (:func:`save_embedder`, :func:`read_embedder`, :func:`load_embedder`). The parts:

* :mod:`fitface.evaluation.embedder_network`: the ResNet-18;
* :mod:`fitface.evaluation.embedder_rendering`: the normal-map renders it sees, and their cache;
* :mod:`fitface.evaluation.embedder_verification`: triplet loss, validation pairs, threshold;
* :mod:`fitface.evaluation.embedder_training`: training one per factor (``train_embedders``).

Files (in ``DATASET/embedders/``):
    ``{factor}.safetensors``  the network weights; the safetensors header metadata holds one key
                              ``"fitface_embedder"``, a JSON document (format, version, factor,
                              class names, network config, threshold, validation accuracy / FAR /
                              pair counts, render settings incl. the camera, dataset fingerprint,
                              training config and timings). Nothing is pickled.
    ``embedders.json``        a human-readable summary of the last
                              :func:`~fitface.evaluation.embedder_training.train_embedders` run.
    ``renders_{S}px.*``       the render cache
                              (:class:`~fitface.evaluation.embedder_rendering.RenderCache`).

Convention:
    * Distance: squared Euclidean distance of the unit-norm embeddings, in [0, 4]; "same"
      means ``d < threshold`` (strict; :mod:`fitface.evaluation.embedder_verification`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from fitface.checks import check_shape
from fitface.errors import InputError
from fitface.evaluation.embedder_network import ResNet18Embedder, images_to_tensor
from fitface.evaluation.embedder_rendering import EMBEDDER_DIR, RenderSettings, render_meshes

FORMAT_NAME = "fitface-embedder"
FORMAT_VERSION = 1
#: Key of the JSON document in the safetensors header metadata.
METADATA_KEY = "fitface_embedder"


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
