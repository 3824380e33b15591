"""A sparse per-vertex operator applied to every coordinate of a (B, V, 3) batch in place of memory order.

The geometry-image mapping and the Laplacian regulariser multiply a sparse (R, V) matrix ``M``
into each coordinate of each face of a batch. The usual way, ``M @ x.permute(1, 0, 2).reshape(V,
3B)``, first copies the batch into vertex-major order; that strided copy (and its twin in the
backward pass) was most of the product's time on the ICT face (V = 9,409, B = 64: 5 ms of 9 ms).
:class:`InterleavedOperator` multiplies ``kron(M, I_3)`` (3R, 3V) into the batch as it lies in
memory instead, ``x.reshape(B, 3V)``, and keeps the transpose for the backward pass.

Convention:
    * ``x`` is (B, V, 3), coordinate-minor (the layout of every vertex array in fitface); the
      result ``y`` is (B, R, 3) with ``y[b, r, c] = sum_v M[r, v] x[b, v, c]``, in ``x``'s unit
      times ``M``'s.
    * Row ``3 r + c`` of ``kron(M, I_3)`` holds row ``r`` of ``M`` in columns ``3 v + c``, in
      ``M``'s column order, so each output is the same sum of the same products in the same order
      as the vertex-major product: the two agree bit for bit.
    * The product is differentiable to any order with respect to ``x`` (its backward is the same
      product with the transpose); ``M`` is a constant.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch

from fitface.checks import check_shape

__all__ = ["InterleavedOperator", "interleaved_matrix", "csr_tensor"]


def interleaved_matrix(matrix: sp.spmatrix) -> sp.csr_matrix:
    """``kron(M, I_3)``: a (R, V) matrix as the (3R, 3V) float64 CSR matrix that acts on
    coordinate-minor arrays (row ``3 r + c``, columns ``3 v + c``; module Convention)."""
    m = sp.csr_matrix(matrix, dtype=np.float64)
    return sp.kron(m, sp.identity(3, dtype=np.float64, format="csr"), format="csr")


def csr_tensor(m: sp.spmatrix, dtype: torch.dtype, device=None) -> torch.Tensor:
    """A scipy sparse (R, C) matrix as a torch sparse CSR tensor of ``dtype`` on ``device`` (sorted indices)."""
    m = sp.csr_matrix(m)
    m.sort_indices()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(np.int64)),
                                       torch.from_numpy(m.indices.astype(np.int64)),
                                       torch.from_numpy(m.data.astype(np.float64)), size=m.shape,
                                       dtype=torch.float64, check_invariants=False).to(device=device, dtype=dtype)


class _Product(torch.autograd.Function):
    """``(B, 3V) -> (3R, B)``: ``K @ x2.T``; backward ``(K^T @ g).T`` through the same function."""

    @staticmethod
    def forward(ctx, x2: torch.Tensor, k: torch.Tensor, kt: torch.Tensor) -> torch.Tensor:
        ctx.ops = (k, kt)
        return k @ x2.T.contiguous()  # (3R, B); an explicit transpose copy is faster than the product's own

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # g: (3R, B)
        k, kt = ctx.ops
        return _Product.apply(g.T, kt, k).T, None, None  # (B, 3V)


class InterleavedOperator:
    """A sparse (R, V) matrix applied to every coordinate of (B, V, 3) arrays (module Convention).

    Args:
        matrix: (R, V) scipy sparse matrix (any unit; stored as float64).

    The (3R, 3V) operator and its transpose are built once per dtype and device on first use.
    Call: ``op(x)`` with ``x`` (B, V, 3) float -> (B, R, 3), same dtype and device (a view of a
    contiguous (3R, B) product's transpose: reshape or ``.contiguous()`` as needed).
    """

    def __init__(self, matrix: sp.spmatrix):
        self._kron = interleaved_matrix(matrix)  # (3R, 3V)
        self.shape = (self._kron.shape[0] // 3, self._kron.shape[1] // 3)  # (R, V)
        self._cache: dict = {}

    def tensors(self, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(kron(M, I_3), its transpose)`` as torch sparse CSR tensors of ``dtype`` on ``device`` (cached)."""
        key = (dtype, torch.device(device if device is not None else "cpu"))
        if key not in self._cache:
            self._cache[key] = (csr_tensor(self._kron, dtype, device), csr_tensor(self._kron.T, dtype, device))
        return self._cache[key]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        check_shape("x", x, (None, self.shape[1], 3))
        b = x.shape[0]
        k, kt = self.tensors(x.dtype, x.device)
        y = _Product.apply(x.reshape(b, 3 * self.shape[1]), k, kt)  # (3R, B)
        return y.T.reshape(b, self.shape[0], 3)  # (B, R, 3)
