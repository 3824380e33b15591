"""Discrete Laplacians of a triangle mesh and the paper's Laplacian regulariser (eq. 12).

Shapes: ``vertices: (V, 3) float`` (any length unit), ``faces: (F, 3) int``. Every
builder returns a ``scipy.sparse.csr_matrix`` of shape (V, V), float64.

Convention:
    Sign and scale match libigl's ``igl.cotmatrix``: for an edge (i, j),
    ``L[i, j] = +w_ij`` with ``w_ij = 0.5 * (cot a_ij + cot b_ij)`` (a, b the angles
    opposite the edge in its one or two triangles), and ``L[i, i] = -sum_j L[i, j]``.
    So every row sums to 0, L is symmetric and negative semi-definite
    (``x^T L x = -0.5 * sum_edges w_ij (x_i - x_j)^2 <= 0`` when weights are
    positive), and ``(L x)_i = sum_j w_ij (x_j - x_i)``. No mass matrix is applied:
    cotangents are ratios of lengths, so the entries are dimensionless and
    independent of the mesh's unit and size; ``L x`` has the unit of ``x``.
    The uniform (graph) and mean-value matrices use the same sign convention
    (positive off-diagonal weights, diagonal = minus the row sum); the mean-value
    matrix is not symmetric.

Regulariser normalisation (the paper's ``||L v||^2``, weighted by lambda4 = 100, does
not say how it is normalised; this fixes it): :class:`LaplacianRegularizer` uses the
*row-normalised* cotangent Laplacian ``L_norm = D^-1 L`` with ``D = diag(-L_ii)``
(``-L_ii`` is positive for every non-degenerate triangle fan), so
``(L_norm v)_i = (cotangent-weighted mean of v over i's neighbours) - v_i``: the
displacement's deviation from its neighbourhood average, in the unit of ``v``, with
every vertex weighted equally whatever its valence or triangle shapes. The loss per
sample is the mean over vertices and coordinates of ``(L_norm v)^2`` (unit^2 of the
model, mm^2 by default). Reasons: it is invariant to the template's size and unit
(only ``v``'s unit matters), bounded by ``4 * max|v|^2`` per entry, and does not let
a few needle triangles (huge cotangents) dominate the loss as the raw ``L`` would.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from fitface.checks import check_faces, check_mesh, check_shape
from fitface.geometry.interleaved import InterleavedOperator
from fitface.tolerances import tol

__all__ = [
    "cotangent_weights",
    "cotangent_laplacian",
    "uniform_laplacian",
    "mean_value_laplacian",
    "normalize_laplacian",
    "laplacian_tensor",
    "LaplacianRegularizer",
]


def _assemble(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n: int) -> sp.csr_matrix:
    """Sum off-diagonal entries (duplicates added) and set the diagonal to minus the row sum."""
    off = sp.csr_matrix((vals, (rows, cols)), shape=(n, n), dtype=np.float64)
    off.sum_duplicates()
    diag = -np.asarray(off.sum(axis=1)).ravel()  # (V,)
    return (off + sp.diags(diag, format="csr")).tocsr()


def cotangent_weights(vertices, faces) -> np.ndarray:
    """Per-corner cotangents: ``(F, 3) float64``, entry ``[f, k]`` = cot of the angle at
    corner k of triangle f (opposite the edge ``faces[f, k+1] - faces[f, k+2]``).

    Dimensionless. Degenerate triangles (twice the area below
    ``tol.area_degenerate``, squared mesh units) and needle angles are clamped to
    ``+-tol.cot_max`` so they cannot produce inf/NaN.
    """
    v, f = check_mesh(vertices, faces)
    p = v[f]  # (F, 3 corners, 3 xyz)
    e1 = np.roll(p, -1, axis=1) - p  # (F, 3, 3): corner k -> k+1
    e2 = np.roll(p, 1, axis=1) - p  # (F, 3, 3): corner k -> k-1
    dot = np.einsum("fkd,fkd->fk", e1, e2)  # (F, 3)
    dbl_area = np.linalg.norm(np.cross(e1[:, 0], e2[:, 0]), axis=-1)  # (F,) = |e1 x e2| (same at every corner)
    dbl_area = np.maximum(dbl_area, tol.area_degenerate)[:, None]  # (F, 1)
    return np.clip(dot / dbl_area, -tol.cot_max, tol.cot_max)


def cotangent_laplacian(vertices, faces) -> sp.csr_matrix:
    """Cotangent Laplace-Beltrami matrix (libigl ``cotmatrix`` convention, see module docstring).

    Args:
        vertices: (V, 3) float, any unit (the result is dimensionless).
        faces: (F, 3) int vertex indices.

    Returns:
        (V, V) ``csr_matrix`` float64: symmetric, rows sum to 0, off-diagonal
        ``0.5 * (cot a + cot b)``, negative semi-definite for non-obtuse meshes.
    """
    v, f = check_mesh(vertices, faces)
    cot = cotangent_weights(v, f)  # (F, 3), corner k opposite edge (k+1, k+2)
    i = np.roll(f, -1, axis=1)  # (F, 3): edge start faces[f, k+1]
    j = np.roll(f, 1, axis=1)  # (F, 3): edge end   faces[f, k+2]
    w = 0.5 * cot.ravel()
    rows = np.r_[i.ravel(), j.ravel()]
    cols = np.r_[j.ravel(), i.ravel()]
    return _assemble(rows, cols, np.r_[w, w], len(v))


def uniform_laplacian(num_vertices: int, faces) -> sp.csr_matrix:
    """Graph (umbrella/Tutte) Laplacian: ``L[i, j] = 1`` per edge, ``L[i, i] = -degree(i)``.

    Args:
        num_vertices: V.
        faces: (F, 3) int vertex indices.

    Returns:
        (V, V) ``csr_matrix`` float64, symmetric, rows sum to 0.
    """
    check_shape("faces", faces, (None, 3))
    f = np.asarray(faces)
    check_faces("faces", f, num_vertices)
    und = np.unique(np.sort(np.stack([f, np.roll(f, -1, axis=1)], axis=2).reshape(-1, 2), axis=1), axis=0)
    ones = np.ones(len(und))
    return _assemble(np.r_[und[:, 0], und[:, 1]], np.r_[und[:, 1], und[:, 0]], np.r_[ones, ones], num_vertices)


def mean_value_laplacian(vertices, faces) -> sp.csr_matrix:
    """Floater's mean-value weights: ``L[i, j] = (tan(alpha/2) + tan(beta/2)) / |v_i - v_j|``
    where alpha, beta are the angles AT v_i of the triangles sharing edge (i, j).

    Weights are positive for every non-degenerate triangle (angles < pi), so a
    Dirichlet problem on a convex boundary gives an embedding (Floater 2003).

    Args:
        vertices: (V, 3) float, any unit.
        faces: (F, 3) int vertex indices.

    Returns:
        (V, V) ``csr_matrix`` float64, NOT symmetric, rows sum to 0; entries have
        unit 1/length (the scale cancels in the Laplace equation).
    """
    v, f = check_mesh(vertices, faces)
    p = v[f]  # (F, 3, 3)
    e1 = np.roll(p, -1, axis=1) - p  # (F, 3, 3) corner k -> k+1
    e2 = np.roll(p, 1, axis=1) - p  # (F, 3, 3) corner k -> k-1
    l1 = np.linalg.norm(e1, axis=-1)  # (F, 3)
    l2 = np.linalg.norm(e2, axis=-1)  # (F, 3)
    dot = np.einsum("fkd,fkd->fk", e1, e2)  # (F, 3)
    sin_ = np.linalg.norm(np.cross(e1, e2), axis=-1)  # (F, 3) = |e1||e2| sin(theta)
    # tan(theta/2) = sin / (1 + cos) = |e1 x e2| / (|e1||e2| + e1.e2)
    denom = np.maximum(l1 * l2 + dot, tol.area_degenerate)
    tan_half = np.minimum(sin_ / denom, tol.cot_max)  # (F, 3)
    eps = np.sqrt(tol.area_degenerate)
    w1 = tan_half / np.maximum(l1, eps)  # (F, 3): weight of corner k -> k+1
    w2 = tan_half / np.maximum(l2, eps)  # (F, 3): weight of corner k -> k-1
    rows = np.r_[f.ravel(), f.ravel()]
    cols = np.r_[np.roll(f, -1, axis=1).ravel(), np.roll(f, 1, axis=1).ravel()]
    return _assemble(rows, cols, np.r_[w1.ravel(), w2.ravel()], len(v))


def normalize_laplacian(L: sp.spmatrix) -> sp.csr_matrix:
    """Row-normalised Laplacian ``D^-1 L`` with ``D = diag(-L_ii)``: diagonal -1, rows sum to 0.

    Raises:
        ValueError: if a diagonal entry is not negative (isolated vertex or
            degenerate fan), naming the first such vertex.
    """
    L = sp.csr_matrix(L, dtype=np.float64)
    d = -L.diagonal()  # (V,)
    bad = np.flatnonzero(~(d > 0))
    if len(bad):
        raise ValueError(f"L: diagonal entry {int(bad[0])} is {-d[bad[0]]:g}, expected < 0 "
                         f"({len(bad)} such rows: isolated or degenerate vertices)")
    return (sp.diags(1.0 / d) @ L).tocsr()


def laplacian_tensor(L: sp.spmatrix, device=None, dtype=None):
    """Convert a scipy sparse (V, V) matrix to a coalesced torch sparse COO tensor.

    Args:
        L: (V, V) scipy sparse matrix.
        device: torch device (default CPU).
        dtype: torch floating dtype (default ``torch.float32``).

    Returns:
        (V, V) ``torch.sparse_coo_tensor``; multiply with ``torch.sparse.mm(L, x)``
        (differentiable w.r.t. the dense ``x``).
    """
    coo = sp.coo_matrix(L)
    idx = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    val = torch.from_numpy(coo.data.astype(np.float64))
    t = torch.sparse_coo_tensor(idx, val, coo.shape, dtype=torch.float64, check_invariants=True).coalesce()
    return t.to(device=device, dtype=dtype or torch.float32)


class LaplacianRegularizer(nn.Module):
    """Laplacian smoothness loss of eq. 12 on output displacements (see the module
    docstring for the normalisation).

    Args:
        vertices: (V, 3) float template positions (any unit; only angles matter).
        faces: (F, 3) int template triangles.
        reduction: ``"mean"`` (default: mean over V and the 3 coordinates) or
            ``"sum"`` (sum over them), per sample.
        normalized: use ``D^-1 L`` (default) or the raw cotangent ``L``.

    Forward:
        displacements: (B, V, 3) float in the model's unit (mm by default).
        returns: (B,) per-sample loss in unit^2, same dtype/device as the input.

    ``L`` is stored as a non-persistent sparse COO buffer (float64; not in
    ``state_dict``), so it follows ``.to()``. ``forward`` multiplies ``kron(L, I_3)`` into the
    batch as it lies in memory (:class:`~fitface.geometry.interleaved.InterleavedOperator`, made
    once per input dtype and device).
    """

    def __init__(self, vertices, faces, reduction: str = "mean", normalized: bool = True):
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction: expected 'mean' or 'sum', got {reduction!r}")
        v = vertices.detach().cpu().numpy() if hasattr(vertices, "detach") else vertices
        f = faces.detach().cpu().numpy() if hasattr(faces, "detach") else faces
        L = cotangent_laplacian(v, f)
        if normalized:
            L = normalize_laplacian(L)
        self.reduction = reduction
        self.normalized = normalized
        self.num_vertices = L.shape[0]
        # Non-persistent: derived from the template, and sparse tensors cannot go into
        # safetensors checkpoints.
        self.register_buffer("L", laplacian_tensor(L, dtype=torch.float64), persistent=False)
        self._op = InterleavedOperator(L)  # what forward multiplies (its tensors made per dtype and device)

    def forward(self, displacements: torch.Tensor) -> torch.Tensor:
        check_shape("displacements", displacements, (None, self.num_vertices, 3))
        sq = self._op(displacements).square()  # (B, V, 3): (L v)^2 per vertex coordinate
        return sq.mean(dim=(1, 2)) if self.reduction == "mean" else sq.sum(dim=(1, 2))

    def extra_repr(self) -> str:
        return f"V={self.num_vertices}, reduction={self.reduction!r}, normalized={self.normalized}"
