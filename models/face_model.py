"""A complete face model: template mesh + generator + latent layout + landmarks + metadata.

Convention:
    * ``decode(z) = template + G(z)``: vertices (B, V, 3) in the model unit (``unit``,
      mm by default), in the template's topology ``faces`` (F, 3).
    * All arrays that the model needs on a device are buffers (``template``, ``faces``,
      ``uv`` and, per landmark set, ``face_index``/``bary``/``vertex_ids`` under
      ``landmark_buffers[name]``), so ``.to(device, dtype)`` moves and casts everything;
      device and dtype are read from the ``template`` buffer, never assumed.
    * The geometry mapping (:class:`fitface.geometry.mapping.GeometryMapping`) is built on
      first access of :attr:`FaceModel.mapping` and then kept as the submodule
      ``geometry_mapping`` (its buffers follow ``.to()``). Fitting and decoding never need
      it, so loading a model file does not pay for rasterising the UV layout.
    * ``uv`` is the per-vertex UV parameterisation in [0, 1]^2 used by the mapping.
    * The generator is duck-typed: any ``nn.Module`` with ``latent_dim``, ``num_vertices``,
      ``forward(z (B, D)) -> (B, V, 3)`` displacements and a JSON ``config()`` (the GAN's
      :class:`~fitface.models.generator.Generator` or the linear 3DMM's
      :class:`~fitface.models.linear.LinearGenerator` or the MAE's
      :class:`~fitface.models.multilinear.MultilinearGenerator` or the CoMA baseline's
      :class:`~fitface.models.coma_generator.ComaGenerator`). :attr:`FaceModel.generator_kind`
      names it. A generator with a ``check_layout(layout)`` method (multilinear, CoMA) has it
      called on the layout, which raises ValueError when the blocks do not fit it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from fitface.checks import check_face_index, check_faces, check_shape
from fitface.landmarks.sets import LandmarkSet
from fitface.units import check_unit

from .latent import LatentLayout
from .model_file import MODEL_ID_HEX


def _as_tensor(x: Any, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """numpy array / tensor / nested list -> tensor on ``device`` (of ``dtype`` if given)."""
    t = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))
    return t.to(device=device, dtype=dtype) if dtype is not None else t.to(device)


class LandmarkBuffers(nn.Module):
    """Device-side copy of one :class:`LandmarkSet` (buffers follow ``.to()``).

    Attributes:
        face_index: (L,) int64 triangle of each point.
        bary: (L, 3) float barycentric weights (model dtype).
        vertex_ids: (L, 3) int64 ``faces[face_index]``, the corner vertices of each point.
    """

    def __init__(self, lset: LandmarkSet, faces: torch.Tensor, dtype: torch.dtype):
        super().__init__()
        face_index = torch.as_tensor(np.asarray(lset.face_index), dtype=torch.long, device=faces.device)
        self.register_buffer("face_index", face_index)
        self.register_buffer("bary", torch.as_tensor(np.asarray(lset.bary), dtype=dtype, device=faces.device))
        self.register_buffer("vertex_ids", faces[face_index].clone())

    def points(self, vertices: torch.Tensor) -> torch.Tensor:
        """Landmark positions: (B, V, 3) vertices -> (B, L, 3), same unit and dtype."""
        tri = vertices[:, self.vertex_ids]  # (B, L, 3 corners, 3 xyz)
        return torch.einsum("blkc,lk->blc", tri, self.bary.to(vertices.dtype))


class FaceModel(nn.Module):
    """Template + generator + latent layout, decoding latent codes to meshes.

    Args:
        template_vertices: (V, 3) float, the reference mesh, in ``unit``.
        faces: (F, 3) int, triangles (indices into the V vertices).
        uv: (V, 2) float, UV parameterisation in [0, 1]^2 (for the geometry mapping).
        layout: the :class:`LatentLayout`; ``layout.dim == generator.latent_dim``.
        generator: a :class:`~fitface.models.generator.Generator` or
            :class:`~fitface.models.linear.LinearGenerator` (any module with ``latent_dim``,
            ``num_vertices``, ``forward(z) -> (B, V, 3)`` and ``config()``), ``num_vertices == V``.
        unit: length unit of the template and of decoded vertices ("mm", "cm", "m", "in").
        landmark_sets: ``{name: LandmarkSet}`` on this template (names without ".").
        image_size: side of the geometry image used in training (paper: 64).
        classes: ``{factor: [class names]}`` for the layout's factors (the training labels).
        metadata: free JSON-serialisable information (kept in the model file).

    Buffers take the generator's parameter dtype and device.
    """

    def __init__(
        self,
        template_vertices: Any,
        faces: Any,
        uv: Any,
        layout: LatentLayout,
        generator: nn.Module,
        unit: str = "mm",
        landmark_sets: Mapping[str, LandmarkSet] | None = None,
        image_size: int = 64,
        classes: Mapping[str, list[str]] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        ref = next(iter(generator.parameters()), None)
        if ref is None:
            ref = next(iter(generator.buffers()), None)
        if ref is None or not callable(getattr(generator, "config", None)):
            raise ValueError(f"generator: expected a module with tensors and a config() "
                             f"(Generator or LinearGenerator), got {type(generator).__name__}")
        dtype, device = ref.dtype, ref.device
        template = _as_tensor(template_vertices, device, dtype)
        sizes = check_shape("template_vertices", template, ("V", 3))
        faces_t = _as_tensor(faces, device)
        check_faces("faces", faces_t, sizes["V"])
        uv_t = _as_tensor(uv, device, dtype)
        check_shape("uv", uv_t, ("V", 2), sizes)
        if generator.num_vertices != sizes["V"]:
            raise ValueError(f"generator: built for {generator.num_vertices} vertices, template has {sizes['V']}")
        if generator.latent_dim != layout.dim:
            raise ValueError(
                f"generator: latent_dim {generator.latent_dim} != layout dim {layout.dim} ({layout.describe()})"
            )
        check_layout = getattr(generator, "check_layout", None)
        if callable(check_layout):
            check_layout(layout)
        self.unit = check_unit(unit)
        self.layout = layout
        self.image_size = int(image_size)
        classes = {str(k): [str(c) for c in v] for k, v in dict(classes or {}).items()}
        extra = set(classes) - set(layout.factors)
        if extra:
            raise ValueError(f"classes: {sorted(extra)} are not factors of the layout {list(layout.factors)}")
        self.classes = classes
        self.metadata = dict(metadata or {})
        json.dumps(self.metadata)  # must be JSON-serialisable (raises TypeError otherwise)

        self.register_buffer("template", template.contiguous())
        self.register_buffer("faces", faces_t.long().contiguous())
        self.register_buffer("uv", uv_t.contiguous())
        self.generator = generator

        self.landmark_sets: dict[str, LandmarkSet] = {}
        self.landmark_buffers = nn.ModuleDict()
        num_faces = self.faces.shape[0]
        for name, lset in dict(landmark_sets or {}).items():
            if not name or "." in name:
                raise ValueError(f"landmark_sets: invalid name {name!r} (no '.' allowed)")
            check_face_index(f"landmark_sets[{name!r}]", lset.face_index, num_faces)
            self.landmark_sets[name] = lset
            self.landmark_buffers[name] = LandmarkBuffers(lset, self.faces, dtype)
        self._model_id: str | None = None

    # -- sizes -------------------------------------------------------------------------
    @property
    def num_vertices(self) -> int:
        return int(self.template.shape[0])

    @property
    def latent_dim(self) -> int:
        return self.layout.dim

    @property
    def factors(self) -> tuple[str, ...]:
        return self.layout.factors

    @property
    def generator_kind(self) -> str:
        """``"mlp"`` (the GAN generator), ``"linear"`` (the linear 3DMM baseline),
        ``"multilinear"`` (the MAE baseline's decoder) or ``"coma"`` (the CoMA / DeepFLAME
        baseline: PCA identity + CoMA mesh decoder, :mod:`fitface.models.coma_generator`)."""
        return str(self.generator.config().get("kind", "mlp"))

    # -- decoding ----------------------------------------------------------------------
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent codes -> vertices.

        Args:
            z: (B, D) float latent codes (layout order).

        Returns:
            (B, V, 3) float vertices, model unit (``template + G(z)``).
        """
        check_shape("z", z, (None, self.latent_dim))
        return self.template + self.generator(z)

    def sample_latent(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Draw latent codes ``z ~ N(0, I)``.

        Args:
            n: number of codes.
            generator: optional ``torch.Generator`` (RNG) on ``device``, for reproducibility.
            device: defaults to the model's device.

        Returns:
            (n, D) float, the model's dtype.
        """
        device = self.template.device if device is None else torch.device(device)
        return torch.randn(n, self.latent_dim, generator=generator, device=device, dtype=self.template.dtype)

    def landmark_points(self, vertices: torch.Tensor, name: str) -> torch.Tensor:
        """Positions of landmark set ``name`` on decoded meshes.

        Args:
            vertices: (B, V, 3) float, model unit.

        Returns:
            (B, L, 3) float, model unit.
        """
        if name not in self.landmark_buffers:
            raise KeyError(f"no landmark set {name!r}; the model has {sorted(self.landmark_sets)}")
        check_shape("vertices", vertices, (None, self.num_vertices, 3))
        return self.landmark_buffers[name].points(vertices)

    # -- geometry mapping ----------------------------------------------------------------
    @property
    def mapping(self) -> nn.Module:
        """The :class:`GeometryMapping` for ``image_size`` (built on first access; see module doc)."""
        if "geometry_mapping" not in self._modules:
            from fitface.geometry.mapping import GeometryMapping

            mapping = GeometryMapping(
                self.uv.detach().cpu().double().numpy(), self.faces.detach().cpu().numpy(), self.image_size
            )
            # device only: the mapping keeps its weights in float64 and casts in forward
            self.add_module("geometry_mapping", mapping.to(device=self.template.device))
        return self._modules["geometry_mapping"]

    # -- identity ----------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        """Short id: the first 16 hex digits of the sha256 of the model file this model was
        loaded from (or last saved to); for a model never saved, of its current tensors and
        descriptive metadata (so it changes when the weights change)."""
        if self._model_id is not None:
            return self._model_id
        h = hashlib.sha256()
        desc = {"layout": self.layout.to_json(), "unit": self.unit, "classes": self.classes,
                "image_size": self.image_size, "landmarks": sorted(self.landmark_sets)}
        h.update(json.dumps(desc, sort_keys=True).encode())
        for name, t in sorted(self.generator.state_dict().items()) + [
            ("template", self.template), ("faces", self.faces), ("uv", self.uv)
        ]:
            arr = t.detach().cpu().contiguous()
            h.update(f"{name}:{arr.dtype}:{tuple(arr.shape)}".encode())
            h.update(arr.reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:MODEL_ID_HEX]

    def extra_repr(self) -> str:
        return (f"V={self.num_vertices}, F={self.faces.shape[0]}, layout={self.layout.describe()}, "
                f"unit={self.unit}, landmarks={sorted(self.landmark_sets)}")
