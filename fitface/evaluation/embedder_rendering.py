"""What the decoupling embedders see: normal-map renders through one camera per dataset; their cache.

The embedders (:mod:`fitface.evaluation.embedder`) judge a mesh from an orthographic
normal-map render (paper supplement, "Decoupling Evaluation - Implementation Details").
:class:`RenderSettings` fixes how (camera, unit, background), :func:`dataset_camera` frames a
dataset once, :func:`render_meshes` renders, :class:`RenderCache` keeps a dataset's renders on
disk for training the embedders.

Files (in ``DATASET/embedders/``, :data:`EMBEDDER_DIR`):
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
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from fitface.checks import check_shape
from fitface.errors import InputError
from fitface.geometry.camera import Camera, frame_mesh
from fitface.geometry.render import render_normals

#: Folder (inside the dataset folder) that holds the embedders and the render cache.
EMBEDDER_DIR = "embedders"
#: Meshes (besides the template) whose bounding box frames the dataset camera.
FRAME_SAMPLES = 256
#: Margin of the dataset camera (fraction of the image on each side).
FRAME_MARGIN = 0.04
#: Meshes rendered / embedded per chunk.
CHUNK = 256


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
