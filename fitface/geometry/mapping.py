"""The paper's geometry mapping layer (§4.1, eq. 5): mesh vertices -> geometry image.

Each pixel of an ``n x n`` image is assigned, once, the UV triangle containing its centre and
the pixel's barycentrics in it; the layer then computes
``I = b1 * v1 + b2 * v2 + b3 * v3`` (eq. 5 with ``IU = b1``, ``IV = b2``), a fixed linear map of
the vertices with 3 non-zeros per pixel, hence differentiable.

Convention:
    * UV in ``[0, 1]^2``; ``u`` runs along image columns (left to right), ``v`` along rows with
      **v = 0 at the bottom** row (so a frontal UV layout looks upright):
      ``x_pix = u * n``, ``y_pix = (1 - v) * n``. Pixel ``(i, j)`` (row i from the top) has its
      centre at ``(u, v) = ((j + 0.5) / n, 1 - (i + 0.5) / n)`` (pixel-centre convention of
      :mod:`fitface.geometry.raster`).
    * A pixel is covered when its centre lies in a UV triangle (closed, tiny slack); where UV
      triangles overlap (flips), the lowest triangle index wins.
    * Holes (pixels whose centre is in no UV triangle: eyes, mouth, outside the boundary):
      ``fill="nearest"`` (default) copies the triangle and barycentrics of the nearest covered
      pixel centre (Euclidean distance transform; ties as scipy resolves them), so the image has
      no artificial edge and every row of the map still has 3 entries; ``fill="zero"`` gives 0.
    * Output layout: (B, 3, n, n), channels (x, y, z) in the vertices' unit; flattening a
      (n, n) image row-major gives the row order of :meth:`GeometryMapping.matrix`.
    * Weights are stored in float64 and cast to the input's dtype in ``forward``; device follows
      the buffers (``.to()``).

Implementation: ``forward`` multiplies a sparse CSR (n*n, V) matrix (built lazily from the
``index``/``weight`` buffers, cached per device/dtype, not saved in the state dict) with the
vertices laid out as (V, 3B); on CPU this was ~2.5x faster than gathering the three corners
(benchmarks/bench_mapping.py). ``method="gather"`` selects the gather + einsum form of eq. 5
(for devices without sparse CSR kernels).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from fitface.checks import check_faces, check_finite, check_shape
from fitface.geometry.interleaved import InterleavedOperator
from fitface.geometry.raster import rasterize

#: Slack allowed outside [0, 1] for UV coordinates (parameterisers round to ~1e-15).
UV_RANGE_SLACK = 1e-9
FILLS = ("nearest", "zero")
METHODS = ("sparse", "gather")


def uv_to_pixel(uv: np.ndarray, size: int) -> np.ndarray:
    """(V, 2) UV in [0, 1] -> (V, 2) float64 pixel coordinates (x, y) of an ``size`` image."""
    uv = np.asarray(uv, dtype=np.float64)
    return np.stack([uv[:, 0] * size, (1.0 - uv[:, 1]) * size], axis=1)


def pixel_uv(size: int) -> np.ndarray:
    """(n, n, 2) float64 UV of each pixel centre (the inverse of :func:`uv_to_pixel`)."""
    c = (np.arange(size) + 0.5) / size
    u = np.broadcast_to(c[None, :], (size, size))
    v = np.broadcast_to(1.0 - c[:, None], (size, size))
    return np.stack([u, v], axis=-1)


def _validate(uv, faces, size, fill, method):
    uv = np.asarray(uv, dtype=np.float64)
    check_shape("uv", uv, ("V", 2))
    check_finite("uv", uv)
    if uv.size and (uv.min() < -UV_RANGE_SLACK or uv.max() > 1 + UV_RANGE_SLACK):
        raise ValueError(f"uv: expected values in [0, 1], got range [{uv.min():.6g}, {uv.max():.6g}]")
    faces = np.asarray(faces)
    check_faces("faces", faces, uv.shape[0])
    if faces.shape[0] == 0:
        raise ValueError("faces: expected at least one triangle")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
        raise ValueError(f"size: expected a positive int, got {size!r}")
    if fill not in FILLS:
        raise ValueError(f"fill: expected one of {FILLS}, got {fill!r}")
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    return np.clip(uv, 0.0, 1.0), faces.astype(np.int64), int(size)


class GeometryMapping(nn.Module):
    """Geometry mapping layer: (B, V, 3) vertices -> (B, 3, n, n) geometry image.

    Args:
        uv: (V, 2) float UV in [0, 1]^2 (e.g. ``harmonic_uv(vertices, faces).uv``).
        faces: (F, 3) int triangles.
        size: image side ``n`` in pixels.
        fill: ``"nearest"`` or ``"zero"`` for pixels not covered by a UV triangle.
        method: ``"sparse"`` (sparse CSR matmul, default) or ``"gather"`` (same result).

    Buffers (follow ``.to()``):
        index: (n*n, 3) int64 vertex indices per pixel (row-major pixels).
        weight: (n*n, 3) float64 barycentric weights (0 rows for ``fill="zero"`` holes).
        mask: (n, n) bool, True where a UV triangle covers the pixel centre.
        face_index: (n, n) int64, covering triangle (-1 in holes, before filling).

    Attributes:
        coverage: fraction of pixels covered by UV triangles (float).
    """

    index: torch.Tensor
    weight: torch.Tensor
    mask: torch.Tensor
    face_index: torch.Tensor

    def __init__(self, uv, faces, size: int = 64, fill: str = "nearest", method: str = "sparse"):
        super().__init__()
        uv, faces, size = _validate(uv, faces, size, fill, method)
        self.method = method
        self._op_cache: tuple | None = None
        self.size = size
        self.num_vertices = int(uv.shape[0])
        self.fill = fill
        r = rasterize(uv_to_pixel(uv, size)[faces], size, size)
        mask = r.face_index >= 0  # (n, n)
        if not mask.any():
            raise ValueError("uv: no pixel centre of the image lies in a UV triangle")
        fi, bary = r.face_index, r.bary  # (n, n), (n, n, 3)
        if fill == "nearest" and not mask.all():
            from scipy.ndimage import distance_transform_edt

            _, (ii, jj) = distance_transform_edt(~mask, return_distances=True, return_indices=True)
            fi, bary = fi[ii, jj], bary[ii, jj]  # nearest covered pixel's triangle / weights
        covered = fi >= 0
        index = np.where(covered[..., None], faces[np.maximum(fi, 0)], 0).reshape(-1, 3)
        weight = np.where(covered[..., None], bary, 0.0).reshape(-1, 3)
        self.coverage = float(mask.mean())
        self.register_buffer("index", torch.from_numpy(index.astype(np.int64)))
        self.register_buffer("weight", torch.from_numpy(weight.astype(np.float64)))
        self.register_buffer("mask", torch.from_numpy(mask))
        self.register_buffer("face_index", torch.from_numpy(r.face_index.astype(np.int64)))

    def extra_repr(self) -> str:
        return f"size={self.size}, num_vertices={self.num_vertices}, fill={self.fill!r}, coverage={self.coverage:.3f}"

    def forward(self, vertices: torch.Tensor) -> torch.Tensor:
        """vertices: (B, V, 3) float -> geometry image (B, 3, n, n), same dtype/unit."""
        check_shape("vertices", vertices, (None, self.num_vertices, 3))
        if not torch.is_floating_point(vertices):
            raise ValueError(f"vertices: expected a floating tensor, got {vertices.dtype}")
        b = vertices.shape[0]
        n = self.size
        if self.method == "sparse":
            img = self._operator()(vertices)  # (B, P, 3), kron(M, I_3) on the batch as it lies in memory
            return img.reshape(b, n, n, 3).permute(0, 3, 1, 2).contiguous()  # (B, 3, n, n)
        w = self.weight.to(dtype=vertices.dtype)  # (P, 3)
        g = vertices.index_select(1, self.index.reshape(-1))  # (B, 3P, 3) corner positions
        g = g.view(b, n * n, 3, 3)  # (B, P, corner, xyz)
        img = torch.einsum("bpkc,pk->bcp", g, w)  # (B, 3, P)
        return img.reshape(b, 3, n, n)

    def _operator(self) -> InterleavedOperator:
        """The cached :class:`~fitface.geometry.interleaved.InterleavedOperator` of :meth:`matrix`
        (rebuilt when the buffers are replaced; it makes its tensors per dtype and device)."""
        key = (self.weight.data_ptr(), self.index.data_ptr())
        if self._op_cache is None or self._op_cache[0] != key:
            self._op_cache = (key, InterleavedOperator(self.matrix("scipy")))
        return self._op_cache[1]

    def matrix(self, kind: str = "scipy"):
        """The layer as a sparse (n*n, V) matrix ``M``: ``image[b, c].reshape(-1) == M @ vertices[b, :, c]``.

        Every row of a pixel with a triangle stores its 3 entries (an entry may be an explicit 0
        when the pixel centre lies on an edge); rows of ``fill="zero"`` holes are empty.

        Args:
            kind: ``"scipy"`` (``scipy.sparse.csr_matrix`` float64) or ``"torch"`` (a sparse
                CSR tensor on the buffers' device and dtype).
        """
        p = self.size * self.size
        w = self.weight.detach().cpu().numpy().astype(np.float64)  # (P, 3)
        live = np.repeat((w != 0).any(1), 3)  # (3P,) rows with a triangle ("zero" holes have none)
        rows = np.repeat(np.arange(p), 3)[live]
        cols = self.index.detach().cpu().numpy().reshape(-1)[live]
        vals = w.reshape(-1)[live]
        if kind == "scipy":
            from scipy.sparse import csr_matrix

            return csr_matrix((vals, (rows, cols)), shape=(p, self.num_vertices))
        if kind == "torch":
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
                coo = torch.sparse_coo_tensor(
                    torch.from_numpy(np.stack([rows, cols])), torch.from_numpy(vals),
                    (p, self.num_vertices), check_invariants=False,
                ).coalesce()
                return coo.to_sparse_csr().to(device=self.weight.device, dtype=self.weight.dtype)
        raise ValueError(f"kind: expected 'scipy' or 'torch', got {kind!r}")


def geometry_image(vertices: torch.Tensor, uv, faces, size: int = 64, fill: str = "nearest") -> torch.Tensor:
    """One-shot :class:`GeometryMapping`: (B, V, 3) vertices -> (B, 3, size, size)."""
    m = GeometryMapping(uv, faces, size, fill).to(vertices.device)
    return m(vertices)
