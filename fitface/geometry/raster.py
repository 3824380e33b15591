"""Vectorised numpy triangle rasteriser, shared by the renderer and the geometry mapping layer.

Convention:
    * Pixel ``(row i, col j)`` has its centre at ``(x, y) = (j + 0.5, i + 0.5)`` in pixel
      units; ``x`` grows along columns (to the right), ``y`` along rows (down), row 0 is the
      top of the image. The image covers ``[0, W] x [0, H]``.
    * A pixel belongs to a triangle when its centre is inside the triangle or on one of its
      edges: every barycentric coordinate ``>= -tol.bary_inside`` (closed triangles plus a tiny
      slack, so a centre on an edge shared by two triangles is never dropped by rounding).
    * Tie rule: when several triangles cover a pixel, the nearest fragment wins if ``depth`` is
      given (**smaller depth is nearer**: pass a distance from the camera); on equal depth, or
      without ``depth``, the triangle with the **smallest index** wins.
    * Barycentrics are in screen space (no perspective correction; the cameras here are
      orthographic / weak perspective, for which screen space is exact):
      ``pixel centre == sum_k bary[i, j, k] * xy[face_index[i, j], k]``, and
      ``bary.sum(-1) == 1`` on covered pixels. Empty pixels have ``face_index == -1``,
      ``bary == 0`` and ``depth == +inf``.
    * Triangles of either winding are drawn (no back-face culling here). Degenerate triangles
      (twice the signed area ``<= MIN_AREA2_PX`` pixel^2 in magnitude) and triangles with a
      non-finite corner or depth are skipped.

Algorithm (no Python loop over triangles): per triangle, the pixel centres inside its bounding
box are enumerated with ``np.repeat``/``cumsum`` index arithmetic, tested with barycentric
coordinates computed relative to corner 0 (accurate to ~1e-15 relative), and the surviving
fragments are resolved per pixel with scatter-min (``np.minimum.at``). Work is chunked so that at most
``CHUNK_FRAGMENTS`` candidate pixels are held at once.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fitface.checks import check_shape
from fitface.tolerances import tol

#: Twice the signed area (pixel^2) at or below which (in magnitude) a triangle is degenerate.
MIN_AREA2_PX = 1e-12
#: Upper bound on candidate (triangle, pixel) pairs processed at once (memory ~ 100 B each).
CHUNK_FRAGMENTS = 1 << 21


class Raster(NamedTuple):
    """Result of :func:`rasterize`.

    Attributes:
        face_index: (H, W) int64, covering triangle per pixel, -1 where empty.
        bary: (H, W, 3) float64, screen-space barycentrics of the pixel centre in that
            triangle (over its corners in the order given); 0 where empty.
        depth: (H, W) float64, interpolated depth of the winning fragment (+inf where empty),
            or None when no depth was given.
    """

    face_index: np.ndarray
    bary: np.ndarray
    depth: np.ndarray | None

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool, True where a triangle covers the pixel."""
        return self.face_index >= 0


def _fragments(x0, y0, p1, q1, p2, q2, c0, r0, nx, counts, dz, ids, width):
    """Candidate fragments of triangles ``ids``; returns (pixel, tri, b (N,3), z or None)."""
    cnt = counts[ids]  # (T,)
    n = int(cnt.sum())
    tri = np.repeat(ids, cnt)  # (N,) triangle of each candidate
    start = np.cumsum(cnt) - cnt  # (T,) first candidate of each triangle
    local = np.arange(n, dtype=np.int64) - np.repeat(start, cnt)  # (N,) index inside the bbox
    nxt = nx[tri]
    drow, dcol = np.divmod(local, nxt)  # (N,) offsets inside the bbox
    col = c0[tri] + dcol
    row = r0[tri] + drow
    # pixel centre relative to corner 0 (exact in float64 for pixel-sized coordinates)
    dx = (col + 0.5) - x0[tri]
    dy = (row + 0.5) - y0[tri]
    b1 = dx * p1[tri] + dy * q1[tri]
    b2 = dx * p2[tri] + dy * q2[tri]
    b0 = 1.0 - b1 - b2
    s = -tol.bary_inside
    inside = (b0 >= s) & (b1 >= s) & (b2 >= s)
    tri = tri[inside]
    b = np.stack([b0[inside], b1[inside], b2[inside]], axis=1)  # (M, 3)
    pix = row[inside] * width + col[inside]  # (M,) flat pixel index
    z = None
    if dz is not None:
        # (M,) interpolated depth, relative to corner 0 (exact for constant depth)
        dzt = dz[tri]
        z = dzt[:, 0] + b[:, 1] * (dzt[:, 1] - dzt[:, 0]) + b[:, 2] * (dzt[:, 2] - dzt[:, 0])
    return pix, tri, b, z


_NO_FACE = np.iinfo(np.int64).max


def _resolve_into(pix, tri, b, z, face, bary, zbuf):
    """Write the winning fragment of each pixel into the flat buffers (in place).

    Winner: smallest depth, then smallest triangle index (scatter-min with ``ufunc.at``,
    which is much faster than a lexsort). Fragments of earlier calls (chunks of lower
    triangle indices) are replaced only by strictly nearer ones, so the tie rule holds
    across chunks.
    """
    hw = face.size
    if z is not None:
        zmin = np.full(hw, np.inf)
        np.minimum.at(zmin, pix, z)
        w = z == zmin[pix]  # nearest fragments (several on exact depth ties)
        pix, tri, b, z = pix[w], tri[w], b[w], z[w]
    fmin = np.full(hw, _NO_FACE, dtype=np.int64)
    np.minimum.at(fmin, pix, tri)
    w = tri == fmin[pix]  # now one fragment per pixel
    pix, tri, b = pix[w], tri[w], b[w]
    if z is not None:
        z = z[w]
        better = z < zbuf[pix]
        zbuf[pix[better]] = z[better]
    else:
        better = face[pix] < 0
    pix = pix[better]
    face[pix] = tri[better]
    bary[pix] = b[better]


def rasterize(xy: np.ndarray, height: int, width: int, depth: np.ndarray | None = None) -> Raster:
    """Rasterise triangles given in pixel coordinates.

    Args:
        xy: (F, 3, 2) float, pixel coordinates ``(x, y)`` of each triangle's corners
            (x along columns, y along rows, see the module Convention).
        height, width: image size in pixels.
        depth: optional (F, 3) float, per-corner depth; **smaller is nearer**.

    Returns:
        :class:`Raster` with ``face_index`` (H, W) int64, ``bary`` (H, W, 3) float64 and
        ``depth`` (H, W) float64 or None.
    """
    height, width = int(height), int(width)
    if height <= 0 or width <= 0:
        raise ValueError(f"height, width: expected positive sizes, got {(height, width)}")
    xy = np.asarray(xy, dtype=np.float64)
    sizes = check_shape("xy", xy, ("F", 3, 2))
    dz = None
    if depth is not None:
        dz = np.asarray(depth, dtype=np.float64)
        check_shape("depth", dz, ("F", 3), sizes)

    face_index = np.full(height * width, -1, dtype=np.int64)
    bary = np.zeros((height * width, 3), dtype=np.float64)
    zbuf = None if dz is None else np.full(height * width, np.inf, dtype=np.float64)
    f = xy.shape[0]
    if f == 0:
        return Raster(face_index.reshape(height, width), bary.reshape(height, width, 3),
                      None if zbuf is None else zbuf.reshape(height, width))

    x = xy[..., 0]  # (F, 3)
    y = xy[..., 1]
    e1x, e1y = x[:, 1] - x[:, 0], y[:, 1] - y[:, 0]  # (F,) edge 0->1
    e2x, e2y = x[:, 2] - x[:, 0], y[:, 2] - y[:, 0]  # (F,) edge 0->2
    area2 = e1x * e2y - e1y * e2x  # (F,) twice the signed area
    ok = np.isfinite(xy).all(axis=(1, 2)) & (np.abs(area2) > MIN_AREA2_PX)
    if dz is not None:
        ok &= np.isfinite(dz).all(axis=1)
    inv = np.where(ok, 1.0 / np.where(ok, area2, 1.0), 0.0)
    # b1 = (d x e2) / area2, b2 = (e1 x d) / area2 with d = p - corner0
    p1, q1 = e2y * inv, -e2x * inv
    p2, q2 = -e1y * inv, e1x * inv

    with np.errstate(invalid="ignore"):
        xs = np.where(ok[:, None], x, 0.0)
        ys = np.where(ok[:, None], y, 0.0)
        # columns j whose centre j + 0.5 lies in [xmin, xmax]
        c0 = np.clip(np.ceil(xs.min(1) - 0.5), 0, width).astype(np.int64)
        c1 = np.clip(np.floor(xs.max(1) - 0.5), -1, width - 1).astype(np.int64)
        r0 = np.clip(np.ceil(ys.min(1) - 0.5), 0, height).astype(np.int64)
        r1 = np.clip(np.floor(ys.max(1) - 0.5), -1, height - 1).astype(np.int64)
    nx = np.maximum(c1 - c0 + 1, 0)
    ny = np.maximum(r1 - r0 + 1, 0)
    counts = np.where(ok, nx * ny, 0)  # (F,) candidate pixels per triangle
    nx = np.maximum(nx, 1)  # avoid division by zero for empty boxes (count 0 anyway)

    ids_all = np.flatnonzero(counts)
    if ids_all.size == 0:
        return Raster(face_index.reshape(height, width), bary.reshape(height, width, 3),
                      None if zbuf is None else zbuf.reshape(height, width))
    csum = np.cumsum(counts[ids_all])
    # chunk boundaries: consecutive runs of triangles with <= CHUNK_FRAGMENTS candidates
    bounds = [0]
    while bounds[-1] < ids_all.size:
        base = csum[bounds[-1] - 1] if bounds[-1] > 0 else 0
        nxt = int(np.searchsorted(csum, base + CHUNK_FRAGMENTS, side="right"))
        bounds.append(max(nxt, bounds[-1] + 1))

    for a, bnd in zip(bounds[:-1], bounds[1:]):
        frag = _fragments(x[:, 0], y[:, 0], p1, q1, p2, q2, c0, r0, nx, counts, dz,
                          ids_all[a:bnd], width)
        _resolve_into(*frag, face_index, bary, zbuf)
    return Raster(face_index.reshape(height, width), bary.reshape(height, width, 3),
                  None if zbuf is None else zbuf.reshape(height, width))
