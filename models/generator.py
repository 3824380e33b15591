"""The mesh generator: a two-layer perceptron from a latent code to per-vertex displacements.

Architecture (supplement Fig. 12a): ``Linear(D, 512) -> LeakyReLU(0.2) -> Linear(512, 3V)
-> reshape (V, 3)``. The output is a displacement from the template mesh in the template's
unit (mm by default); :class:`fitface.models.face_model.FaceModel` adds the template.
Fig. 12a and the supplement text say LeakyReLU with slope 0.2, §5.1 says ReLU: we follow the
figure; ``negative_slope=0`` gives the ReLU variant.

Convention:
    * Row ``3 * v + c`` of the last layer (:attr:`Generator.out`) produces coordinate ``c``
      (0 = x, 1 = y, 2 = z) of vertex ``v`` (vertex-major, xyz interleaved), so the output
      vector reshapes to (V, 3) without a copy and a subset of vertices can be decoded from
      a subset of rows (:meth:`Generator.decode_vertices`).
    * Initialisation: the hidden layer uses Kaiming-normal weights for a LeakyReLU of the given
      slope (fan-in) and zero bias; the last layer uses PyTorch's default ``nn.Linear`` init
      scaled by ``out_init_scale`` (0.01) and a zero bias, so an untrained generator outputs
      displacements of order 0.01 model units and training starts at (very near) the template.
"""

from __future__ import annotations

import torch
from torch import nn

from fitface.checks import check_shape

#: Default width of the hidden layer (Fig. 12a).
HIDDEN = 512
#: Default LeakyReLU slope (supplement: "Leaky ReLU with a slope of 0.2").
NEGATIVE_SLOPE = 0.2
#: Scale applied to the last layer's default initial weights (start near the template).
OUT_INIT_SCALE = 0.01


def vertex_rows(vertex_ids: torch.Tensor, num_vertices: int, device: torch.device) -> torch.Tensor:
    """Output rows ``3v + c`` of the given vertices (the row convention of the module doc).

    Args:
        vertex_ids: (L,) int vertex indices in ``[0, num_vertices)`` (any order, repeats allowed).
        num_vertices: ``V``. device: where the result goes.

    Returns:
        (3L,) int64 row indices ``[3v0, 3v0+1, 3v0+2, 3v1, ...]``.

    Raises:
        ValueError: an index out of range.
    """
    ids = torch.as_tensor(vertex_ids, device=device).reshape(-1).long()
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_vertices):
        raise ValueError(f"vertex_ids: out of range [0, {num_vertices}): min {int(ids.min())}, max {int(ids.max())}")
    return (3 * ids[:, None] + torch.arange(3, device=ids.device)).reshape(-1)  # (L, 3) -> (3L,)


class Generator(nn.Module):
    """Latent code -> per-vertex displacements.

    Args:
        latent_dim: ``D``, size of the latent code.
        num_vertices: ``V``, number of template vertices.
        hidden: width of the hidden layer (512 in the paper).
        negative_slope: LeakyReLU slope of the hidden activation (0.2; 0 = ReLU).
        out_init_scale: factor applied to the last layer's initial weights (see module doc).

    Attributes:
        fc: ``nn.Linear(D, hidden)``.
        out: ``nn.Linear(hidden, 3V)``; row ``3v + c`` is vertex ``v``, coordinate ``c``.
    """

    def __init__(
        self,
        latent_dim: int,
        num_vertices: int,
        hidden: int = HIDDEN,
        negative_slope: float = NEGATIVE_SLOPE,
        out_init_scale: float = OUT_INIT_SCALE,
    ):
        super().__init__()
        if latent_dim <= 0 or num_vertices <= 0 or hidden <= 0:
            raise ValueError(
                f"Generator: latent_dim, num_vertices and hidden must be positive, "
                f"got {latent_dim}, {num_vertices}, {hidden}"
            )
        if negative_slope < 0:
            raise ValueError(f"Generator: negative_slope must be >= 0, got {negative_slope}")
        self.latent_dim = int(latent_dim)
        self.num_vertices = int(num_vertices)
        self.hidden_size = int(hidden)
        self.negative_slope = float(negative_slope)
        self.fc = nn.Linear(self.latent_dim, self.hidden_size)
        self.act = nn.LeakyReLU(self.negative_slope)
        self.out = nn.Linear(self.hidden_size, 3 * self.num_vertices)
        self.reset_parameters(out_init_scale)

    @torch.no_grad()
    def reset_parameters(self, out_init_scale: float = OUT_INIT_SCALE) -> None:
        """Re-initialise as described in the module docstring (no-op on the meta device, where
        modules are only shells whose tensors a model file will assign)."""
        if self.out.weight.is_meta:
            return
        nn.init.kaiming_normal_(self.fc.weight, a=self.negative_slope, mode="fan_in", nonlinearity="leaky_relu")
        nn.init.zeros_(self.fc.bias)
        self.out.reset_parameters()
        self.out.weight.mul_(out_init_scale)
        nn.init.zeros_(self.out.bias)

    def config(self) -> dict:
        """Constructor arguments (JSON-serialisable), as stored in model files."""
        return {
            "latent_dim": self.latent_dim,
            "num_vertices": self.num_vertices,
            "hidden": self.hidden_size,
            "negative_slope": self.negative_slope,
        }

    def hidden(self, z: torch.Tensor) -> torch.Tensor:
        """Hidden activation.

        Args:
            z: (B, D) float latent codes.

        Returns:
            (B, hidden) float, after the LeakyReLU (input of :attr:`out`).
        """
        check_shape("z", z, (None, self.latent_dim))
        return self.act(self.fc(z))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Displacements from the template.

        Args:
            z: (B, D) float latent codes.

        Returns:
            (B, V, 3) float displacements, in the template's unit.
        """
        flat = self.out(self.hidden(z))  # (B, 3V), row 3v + c
        return flat.view(flat.shape[0], self.num_vertices, 3)

    def rows(self, vertex_ids: torch.Tensor) -> torch.Tensor:
        """Rows of :attr:`out` that produce the given vertices.

        Args:
            vertex_ids: (L,) int vertex indices in ``[0, V)`` (any order, repeats allowed).

        Returns:
            (3L,) int64 row indices ``[3v0, 3v0+1, 3v0+2, 3v1, ...]``.
        """
        return vertex_rows(vertex_ids, self.num_vertices, self.out.weight.device)

    def decode_vertices(self, h: torch.Tensor, vertex_ids: torch.Tensor) -> torch.Tensor:
        """Displacements of selected vertices only, from the hidden activation.

        Costs ``O(B * hidden * 3L)`` instead of ``O(B * hidden * 3V)``; equals
        ``forward(z)[:, vertex_ids]`` up to float rounding when ``h = hidden(z)``.

        Args:
            h: (B, hidden) float, from :meth:`hidden`.
            vertex_ids: (L,) int vertex indices.

        Returns:
            (B, L, 3) float displacements, in the template's unit.
        """
        check_shape("h", h, (None, self.hidden_size))
        rows = self.rows(vertex_ids)  # (3L,)
        flat = nn.functional.linear(h, self.out.weight[rows], self.out.bias[rows])  # (B, 3L)
        return flat.view(h.shape[0], -1, 3)
