"""A linear generator: latent code -> displacements ``basis @ z + offset`` (an additive 3DMM).

The comparison baseline of the paper (§5.5, "3DMM [1]", Amberg et al. 2008) is an additive
linear model: identity PCA on neutral faces plus expression PCA on displacements from the same
person's neutral. :class:`LinearGenerator` puts such a model behind the GAN generator's
interface (:class:`fitface.models.generator.Generator`), so :class:`FaceModel`, model files,
sampling, metrics, fitting and retargeting treat both alike. It is built from data by
:func:`fitface.models.builders.linear.build_linear_3dmm`.

Convention:
    * Row ``3 * v + c`` of :attr:`LinearGenerator.basis` (3V, D) produces coordinate ``c``
      (0 = x, 1 = y, 2 = z) of vertex ``v`` (vertex-major, xyz interleaved), exactly like the
      last layer of the GAN generator, so ``(basis @ z + offset)`` reshapes to (V, 3).
    * Column ``j`` belongs to the latent block containing index ``j`` (same
      :class:`fitface.models.latent.LatentLayout` as the GAN). A column is a principal mode
      scaled by its standard deviation, so ``z ~ N(0, I)`` samples the Gaussian model, like the
      GAN's prior; columns the data cannot support (and the whole ``"noise"`` block) are zero.
    * Duck-typing the MLP generator: :meth:`hidden` is the identity (``h = z``, ``hidden_size
      = D``) and :attr:`out` exposes ``weight = basis`` and ``bias = offset``, so code that folds
      the GAN's last layer (``G.out.weight[rows] @ G.hidden(z)``) works unchanged.
    * Displacements are in the template's unit (mm by default).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from fitface.checks import check_shape

from .generator import vertex_rows

#: Value of ``config()["kind"]`` (and of the model file's ``generator.kind``).
KIND = "linear"


class LinearLayer(NamedTuple):
    """The GAN-like view of the linear map: ``weight`` (3V, D) and ``bias`` (3V,)."""

    weight: torch.Tensor
    bias: torch.Tensor


class LinearGenerator(nn.Module):
    """Latent code -> per-vertex displacements, linearly.

    Args:
        basis: (3V, D) float, row ``3v + c`` (see module Convention), model unit per unit code.
        offset: (3V,) float displacement at ``z = 0`` (model unit); default zeros.

    Attributes:
        basis: ``nn.Parameter`` (3V, D).
        offset: ``nn.Parameter`` (3V,).
        latent_dim: ``D``. num_vertices: ``V``.
    """

    def __init__(self, basis: torch.Tensor, offset: torch.Tensor | None = None):
        super().__init__()
        basis = torch.as_tensor(basis)
        if not basis.is_floating_point():
            basis = basis.float()
        sizes = check_shape("basis", basis, ("3V", "D"))
        if sizes["3V"] % 3 or sizes["3V"] == 0 or sizes["D"] == 0:
            raise ValueError(f"basis: expected (3V, D) with 3V a positive multiple of 3 and D > 0, "
                             f"got {tuple(basis.shape)}")
        if offset is None:
            offset = basis.new_zeros(sizes["3V"])
        offset = torch.as_tensor(offset).to(device=basis.device, dtype=basis.dtype)
        check_shape("offset", offset, ("3V",), sizes)
        self.latent_dim = int(sizes["D"])
        self.num_vertices = int(sizes["3V"]) // 3
        self.basis = nn.Parameter(basis.detach().clone().contiguous())
        self.offset = nn.Parameter(offset.detach().clone().contiguous())

    @classmethod
    def empty(cls, latent_dim: int, num_vertices: int) -> LinearGenerator:
        """A zero generator of the given size (e.g. a shell on the meta device to load into)."""
        if latent_dim <= 0 or num_vertices <= 0:
            raise ValueError(f"LinearGenerator: latent_dim and num_vertices must be positive, "
                             f"got {latent_dim}, {num_vertices}")
        return cls(torch.zeros(3 * int(num_vertices), int(latent_dim)))

    def config(self) -> dict:
        """Constructor description (JSON-serialisable), as stored in model files."""
        return {"kind": KIND, "latent_dim": self.latent_dim, "num_vertices": self.num_vertices}

    # -- the MLP generator's interface ----------------------------------------------------
    @property
    def hidden_size(self) -> int:
        """Width of the (identity) hidden layer: ``D``."""
        return self.latent_dim

    @property
    def out(self) -> LinearLayer:
        """``LinearLayer(weight=basis (3V, D), bias=offset (3V,))``, like ``Generator.out``."""
        return LinearLayer(self.basis, self.offset)

    def hidden(self, z: torch.Tensor) -> torch.Tensor:
        """The identity: (B, D) -> (B, D) (a linear model has no hidden layer)."""
        check_shape("z", z, (None, self.latent_dim))
        return z

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Displacements from the template.

        Args:
            z: (B, D) float latent codes.

        Returns:
            (B, V, 3) float displacements, in the template's unit.
        """
        check_shape("z", z, (None, self.latent_dim))
        flat = nn.functional.linear(z, self.basis, self.offset)  # (B, 3V), row 3v + c
        return flat.view(flat.shape[0], self.num_vertices, 3)

    def rows(self, vertex_ids: torch.Tensor) -> torch.Tensor:
        """Rows of :attr:`basis` that produce the given vertices: (L,) -> (3L,) int64."""
        return vertex_rows(vertex_ids, self.num_vertices, self.basis.device)

    def decode_vertices(self, h: torch.Tensor, vertex_ids: torch.Tensor) -> torch.Tensor:
        """Displacements of selected vertices only: ``h`` (B, D) (= ``hidden(z)`` = z) and
        (L,) vertex ids -> (B, L, 3), template unit (equals ``forward(z)[:, vertex_ids]``)."""
        check_shape("h", h, (None, self.latent_dim))
        rows = self.rows(vertex_ids)  # (3L,)
        flat = nn.functional.linear(h, self.basis[rows], self.offset[rows])  # (B, 3L)
        return flat.view(h.shape[0], -1, 3)

    def extra_repr(self) -> str:
        return f"latent_dim={self.latent_dim}, num_vertices={self.num_vertices}"
