"""Chebyshev spectral graph convolution (Defferrard et al. 2016), CoMA's mesh convolution.

A filter of order ``K`` is a polynomial of the rescaled normalised graph Laplacian of the mesh,
``y = sum_{k<K} T_k(L^) x W_k + b``, with the Chebyshev terms computed by the recurrence
``T_0 x = x``, ``T_1 x = L^ x``, ``T_k x = 2 L^ T_{k-1} x - T_{k-2} x`` (sparse matmuls only).
:func:`hierarchy_tensors` turns a :class:`fitface.models.mesh_sampling.MeshHierarchy` into the
torch sparse D, U and ``L^`` of every level, and :func:`resample` applies D or U to features.

Convention:
    * ``L^ = L - I`` with ``L = I - D^-1/2 A D^-1/2`` (``A`` the 0/1 vertex adjacency without
      self-loops, ``D`` its degrees): ``L^ = -D^-1/2 A D^-1/2``, zero diagonal, spectrum in
      [-1, 1]. This is ``2 L / lambda_max - I`` with ``lambda_max = 2`` (the upper bound of the
      normalised Laplacian's spectrum), as in CoMA and ``torch_geometric.nn.ChebConv``
      (``normalization="sym"``, default ``lambda_max``).
    * Inputs are (B, V, F_in) vertex features, outputs (B, V, F_out), any float dtype matching
      the Laplacian's. The ``K`` terms are concatenated term-major along features, so row
      ``k * F_in + f`` of the (F_in * K, F_out) weight mixes feature ``f`` of ``T_k x``
      (``torch_geometric``'s ``lins[k].weight`` is ``weight[k * F_in:(k + 1) * F_in].T``).
    * Features are unitless here: the layer is linear in ``x`` up to the bias.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import scipy.sparse as sp
import torch
from torch import nn

from fitface.checks import check_shape
from fitface.fitting.coma_decoder import rescaled_laplacian  # noqa: F401 (the numpy home; re-exported)
from fitface.geometry.laplacian import laplacian_tensor

__all__ = ["rescaled_laplacian", "rescaled_laplacian_tensor", "cheb_conv", "ChebConv", "ORDER",
           "resample", "HierarchyTensors", "hierarchy_tensors"]

#: CoMA's Chebyshev order (terms T_0 .. T_5).
ORDER = 6


def rescaled_laplacian_tensor(adjacency: sp.spmatrix, device=None, dtype=None) -> torch.Tensor:
    """:func:`rescaled_laplacian` as a coalesced (V, V) torch sparse COO tensor (default float32, CPU)."""
    return laplacian_tensor(rescaled_laplacian(adjacency), device=device, dtype=dtype)


def cheb_conv(x: torch.Tensor, laplacian: torch.Tensor, weight: torch.Tensor,
              bias: torch.Tensor | None = None) -> torch.Tensor:
    """Chebyshev convolution of order ``K = weight.shape[0] // F_in`` (module Convention).

    Args:
        x: (B, V, F_in) float vertex features.
        laplacian: (V, V) torch sparse ``L^`` (:func:`rescaled_laplacian_tensor`), x's dtype and device.
        weight: (F_in * K, F_out) float, term-major rows.
        bias: (F_out,) float or None.

    Returns:
        (B, V, F_out), differentiable w.r.t. ``x``, ``weight`` and ``bias``.

    Raises:
        ValueError: on mismatched shapes or dtypes, or ``weight`` rows not a multiple of F_in.
    """
    sizes = check_shape("x", x, ("B", "V", "F_in"))
    check_shape("laplacian", laplacian, ("V", "V"), sizes)
    check_shape("weight", weight, ("FK", "F_out"))
    b, v, fin = sizes["B"], sizes["V"], sizes["F_in"]
    if fin == 0 or weight.shape[0] % fin or weight.shape[0] == 0:
        raise ValueError(f"weight: expected (F_in * K, F_out) rows with F_in = {fin}, got {tuple(weight.shape)}")
    if bias is not None:
        check_shape("bias", bias, (weight.shape[1],))
    if laplacian.dtype != x.dtype:
        raise ValueError(f"laplacian: dtype {laplacian.dtype} differs from x's {x.dtype}")
    k = weight.shape[0] // fin
    w = weight.reshape(k, fin, -1)  # (K, F_in, F_out), term-major rows
    fout = w.shape[2]
    x0 = x.transpose(0, 1)  # (V, B, F_in)
    if fout < fin and k > 1:
        # Clenshaw's recurrence on the mixed terms p_k = x W_k: the sparse products then run on
        # F_out channels instead of F_in (CoMA's last layer: 3 instead of 16).
        # b_k = p_k + 2 L^ b_{k+1} - b_{k+2}, y = p_0 + L^ b_1 - b_2.
        def lap(t):  # (V, B, F_out) -> L^ t, one sparse matmul for the batch
            return torch.sparse.mm(laplacian, t.reshape(v, b * fout)).reshape(v, b, fout)

        b2, b1 = None, x0 @ w[k - 1]
        for i in range(k - 2, 0, -1):
            nxt = x0 @ w[i] + 2.0 * lap(b1)
            b2, b1 = b1, (nxt if b2 is None else nxt - b2)
        y = x0 @ w[0] + lap(b1)
        if b2 is not None:
            y = y - b2
    else:
        # The three-term recurrence on x, each term mixed into the output as soon as it exists:
        # this never materialises the (B, V, K * F_in) concatenation, whose permuted copy was
        # most of the layer's time.
        prev = x0.reshape(v, b * fin)  # T_0 x, (V, B * F_in)
        y = x0 @ w[0]  # (V, B, F_out)
        if k > 1:
            cur = torch.sparse.mm(laplacian, prev)  # T_1 x
            y = y + cur.reshape(v, b, fin) @ w[1]
            for i in range(2, k):
                prev, cur = cur, 2.0 * torch.sparse.mm(laplacian, cur) - prev  # T_i x
                y = y + cur.reshape(v, b, fin) @ w[i]
    y = y.transpose(0, 1)  # (B, V, F_out)
    return y if bias is None else y + bias


class ChebConv(nn.Module):
    """A Chebyshev graph convolution layer on one fixed mesh (wraps :func:`cheb_conv`).

    Args:
        in_channels, out_channels: F_in, F_out.
        laplacian: the mesh's ``L^``, a (V, V) torch sparse tensor or scipy sparse matrix
            (converted as is, so pass :func:`rescaled_laplacian`'s output, not an adjacency; a
            scipy matrix becomes float32). The parameters take the tensor's dtype and device.
        order: K, the number of Chebyshev terms (CoMA: :data:`ORDER` = 6).
        bias: add a learned (F_out,) bias.

    Attributes:
        weight: ``nn.Parameter`` (F_in * K, F_out), Glorot-uniform initialised.
        bias: ``nn.Parameter`` (F_out,) zeros, or None.
        laplacian: non-persistent buffer (it follows ``.to()`` / ``.double()``, but is not in
            ``state_dict()``: model files store the hierarchy's arrays instead).

    Forward: (B, V, F_in) -> (B, V, F_out).
    """

    def __init__(self, in_channels: int, out_channels: int, laplacian, order: int = ORDER, bias: bool = True):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("order", order)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if sp.issparse(laplacian):
            laplacian = laplacian_tensor(laplacian)
        if not (isinstance(laplacian, torch.Tensor) and laplacian.is_sparse):
            raise ValueError(f"laplacian: expected a torch sparse tensor or scipy sparse matrix, "
                             f"got {type(laplacian).__name__}")
        check_shape("laplacian", laplacian, ("V", "V"))
        self.in_channels, self.out_channels, self.order = int(in_channels), int(out_channels), int(order)
        self.register_buffer("laplacian", laplacian.coalesce(), persistent=False)
        self.weight = nn.Parameter(torch.empty(self.in_channels * self.order, self.out_channels,
                                               dtype=laplacian.dtype, device=laplacian.device))
        self.bias = (nn.Parameter(torch.zeros(self.out_channels, dtype=laplacian.dtype, device=laplacian.device))
                     if bias else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot-uniform weight over its (F_in * K, F_out) shape, zero bias."""
        bound = math.sqrt(6.0 / (self.weight.shape[0] + self.weight.shape[1]))
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.zero_()

    @property
    def num_vertices(self) -> int:
        return int(self.laplacian.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cheb_conv(x, self.laplacian, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, order={self.order}, "
                f"vertices={self.num_vertices}, bias={self.bias is not None}")


def resample(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Apply a (V_out, V_in) sparse sampling matrix (``down[l]`` or ``up[l]``) to (B, V_in, F) features.

    Returns:
        (B, V_out, F), differentiable w.r.t. ``x``.

    Raises:
        ValueError: on mismatched shapes or dtypes.
    """
    sizes = check_shape("x", x, ("B", "V_in", "F"))
    check_shape("matrix", matrix, ("V_out", "V_in"), sizes)
    if matrix.dtype != x.dtype:
        raise ValueError(f"matrix: dtype {matrix.dtype} differs from x's {x.dtype}")
    b, v, f = sizes["B"], sizes["V_in"], sizes["F"]
    y = torch.sparse.mm(matrix, x.transpose(0, 1).reshape(v, b * f))  # (V_out, B * F)
    return y.reshape(-1, b, f).transpose(0, 1)


class HierarchyTensors(NamedTuple):
    """A :class:`fitface.models.mesh_sampling.MeshHierarchy`'s operators as torch sparse tensors.

    Attributes (tuples indexed by level, as in the hierarchy):
        down: L tensors (V_{l+1}, V_l). up: L tensors (V_l, V_{l+1}).
        laplacians: L + 1 tensors (V_l, V_l), each level's ``L^`` (:func:`rescaled_laplacian`).
    """

    down: tuple
    up: tuple
    laplacians: tuple


def hierarchy_tensors(hierarchy, device=None, dtype=None) -> HierarchyTensors:
    """Convert a mesh hierarchy's D, U and ``L^`` to coalesced torch sparse tensors (default float32, CPU)."""
    def convert(mats):
        return tuple(laplacian_tensor(m, device=device, dtype=dtype) for m in mats)

    laps = tuple(rescaled_laplacian_tensor(a, device=device, dtype=dtype) for a in hierarchy.adjacency)
    return HierarchyTensors(convert(hierarchy.down), convert(hierarchy.up), laps)
