"""Software renderer (numpy, no OpenGL): shaded images, normal maps, point lookup, contact sheets.

Convention:
    * Cameras, pixel coordinates and depth: see :mod:`fitface.geometry.camera` and
      :mod:`fitface.geometry.raster` (pixel (i, j) centred at (j + 0.5, i + 0.5), row 0 at the
      top; camera space x right, y up, z towards the camera).
    * Images are (H, W, 3) uint8 **RGB**.
    * Normals are smooth per-vertex normals (sum of the incident faces' area-weighted normals,
      following the face winding), interpolated with the pixel's barycentrics and normalised.
      With ``two_sided=True`` (default) the normal of a pixel whose triangle is seen from its
      back is flipped, so meshes of either winding shade the same.
    * Normal map: ``RGB = round((n_cam + 1) / 2 * 255)``; a surface facing the camera is
      (128, 128, 255) (exactly 127.5 rounds to 128 or 127). Background pixels get ``background``.
    * Pixel -> surface: ``face_index[i, j]`` and ``bary[i, j]`` of a :class:`Rendering` give the
      triangle and barycentrics of the visible surface point at pixel (i, j)'s centre, so
      ``point = sum_k bary[i, j, k] * vertices[faces[face_index[i, j], k]]``;
      :func:`locate_points` does the same for sub-pixel image points (e.g. detected landmarks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

from fitface.checks import check_faces, check_finite, check_shape
from fitface.geometry.camera import Camera, frame_mesh
from fitface.geometry.raster import Raster, rasterize

#: Default albedo (RGB in [0, 1]): a light, slightly warm plaster / skin tone.
DEFAULT_ALBEDO = (0.86, 0.74, 0.66)
#: Default key-light direction in camera space (from the front, above): x right, y up, z to camera.
DEFAULT_LIGHT = (0.0, 0.55, 1.0)
#: Default ambient and diffuse weights (sum 1: a surface facing the light is lit at albedo).
DEFAULT_AMBIENT = 0.28
DEFAULT_DIFFUSE = 0.72
#: Display gamma applied to the shading term (soft, photo-like fall-off).
DEFAULT_GAMMA = 1.6


@dataclass
class Rendering:
    """One rendered view.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        face_index: (H, W) int64, visible triangle per pixel, -1 on the background.
        bary: (H, W, 3) float64, barycentrics of the pixel centre in that triangle.
        camera: the :class:`~fitface.geometry.camera.Camera` used.
        depth: (H, W) float64, depth in pixel units (smaller is nearer), +inf on the background.
        normals: (H, W, 3) float64, unit camera-space normals (0 on the background).
    """

    image: np.ndarray
    face_index: np.ndarray
    bary: np.ndarray
    camera: Camera
    depth: np.ndarray
    normals: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool, True where the mesh covers the pixel."""
        return self.face_index >= 0


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Smooth unit vertex normals: (V, 3) float vertices, (F, 3) int faces -> (V, 3) float64.

    Area-weighted sum of incident face normals (right-hand rule on the face winding);
    isolated vertices get (0, 0, 0).
    """
    v = np.asarray(vertices, dtype=np.float64)
    tri = v[faces]  # (F, 3, 3)
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # (F, 3), |fn| = 2 * area
    idx = np.asarray(faces, dtype=np.int64).reshape(-1)  # (3F,) corner -> vertex
    fn3 = np.repeat(fn, 3, axis=0)  # (3F, 3) face normal per corner
    vn = np.stack([np.bincount(idx, fn3[:, c], minlength=len(v)) for c in range(3)], axis=1)  # (V, 3)
    n = np.linalg.norm(vn, axis=1, keepdims=True)
    return np.divide(vn, n, out=np.zeros_like(vn), where=n > 0)


def _prepare(vertices, faces, size, camera):
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces)
    check_shape("vertices", v, ("V", 3))
    check_faces("faces", f, v.shape[0])
    check_finite("vertices", v)
    f = f.astype(np.int64, copy=False)
    if camera is None:
        camera = frame_mesh(v, size)
    return v, f, camera


def _rasterize_mesh(v, f, camera: Camera, cull_backfaces: bool):
    """Project and rasterise; returns (raster, front (F,) bool: face seen from its front side)."""
    xy, depth = camera.project(v)  # (V, 2) pixels, (V,) pixel units
    txy = xy[f]  # (F, 3, 2)
    # screen y points down, so a counter-clockwise (front-facing) triangle has negative area
    e1 = txy[:, 1] - txy[:, 0]
    e2 = txy[:, 2] - txy[:, 0]
    front = (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]) < 0  # (F,)
    if cull_backfaces:
        keep = np.flatnonzero(front)
        r = rasterize(txy[keep], camera.height, camera.width, depth[f[keep]])
        fi = np.where(r.face_index >= 0, keep[np.maximum(r.face_index, 0)], -1)
        r = Raster(fi, r.bary, r.depth)
    else:
        r = rasterize(txy, camera.height, camera.width, depth[f])
    return r, front


def _pixel_normals(v, f, camera: Camera, r: Raster, front, two_sided: bool):
    """Unit camera-space normals of covered pixels: returns (idx (P,) flat pixels, n (P, 3))."""
    idx = np.flatnonzero(r.face_index.reshape(-1) >= 0)  # (P,)
    fi = r.face_index.reshape(-1)[idx]  # (P,)
    b = r.bary.reshape(-1, 3)[idx]  # (P, 3)
    vn = vertex_normals(v, f) @ camera.rotation.T  # (V, 3) camera space
    n = np.einsum("pk,pkc->pc", b, vn[f[fi]])  # (P, 3)
    if two_sided:
        n[~front[fi]] *= -1.0
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.divide(n, norm, out=np.zeros_like(n), where=norm > 0)
    return idx, n, fi, b


def _background(background) -> np.ndarray:
    bg = np.asarray(background, dtype=np.float64).reshape(-1)
    if bg.size == 1:
        bg = np.repeat(bg, 3)
    check_shape("background", bg, (3,))
    return np.clip(np.round(bg), 0, 255).astype(np.uint8)


def render_shaded(
    vertices: np.ndarray,
    faces: np.ndarray,
    size=224,
    camera: Camera | None = None,
    *,
    albedo=DEFAULT_ALBEDO,
    vertex_colors: np.ndarray | None = None,
    light=DEFAULT_LIGHT,
    ambient: float = DEFAULT_AMBIENT,
    diffuse: float = DEFAULT_DIFFUSE,
    gamma: float = DEFAULT_GAMMA,
    background=(0, 0, 0),
    two_sided: bool = True,
    cull_backfaces: bool = False,
) -> Rendering:
    """Lambertian rendering of a mesh (grey / skin-toned plaster look).

    ``colour = albedo * (ambient + diffuse * max(0, n . l)) ** (1 / gamma)`` with ``n`` the
    interpolated smooth normal and ``l`` the unit key-light direction, both in camera space.

    Args:
        vertices: (V, 3) float, world units (x right, y up, z towards the viewer).
        faces: (F, 3) int triangles.
        size: int or (H, W) pixels; used only when ``camera`` is None (then the mesh is
            framed frontally with :func:`~fitface.geometry.camera.frame_mesh`).
        camera: optional camera (its size wins over ``size``).
        albedo: RGB in [0, 1], used when ``vertex_colors`` is None.
        vertex_colors: optional (V, 3) float RGB in [0, 1], interpolated per pixel.
        light: (3,) camera-space direction towards the light (default: front, above).
        ambient, diffuse: shading weights.
        gamma: display gamma of the shading term (1 = linear).
        background: RGB 0..255 (or one grey value) for uncovered pixels.
        two_sided: flip normals of triangles seen from the back.
        cull_backfaces: skip triangles seen from the back before rasterising (faster for
            closed, consistently wound meshes; wrong for inconsistent winding).

    Returns:
        :class:`Rendering`.
    """
    v, f, camera = _prepare(vertices, faces, size, camera)
    r, front = _rasterize_mesh(v, f, camera, cull_backfaces)
    idx, n, fi, b = _pixel_normals(v, f, camera, r, front, two_sided)
    l = np.asarray(light, dtype=np.float64).reshape(3)
    l = l / np.linalg.norm(l)
    shade = ambient + diffuse * np.clip(n @ l, 0.0, None)  # (P,)
    shade = np.clip(shade, 0.0, None) ** (1.0 / gamma)
    if vertex_colors is not None:
        vc = np.asarray(vertex_colors, dtype=np.float64)
        check_shape("vertex_colors", vc, (v.shape[0], 3))
        col = np.einsum("pk,pkc->pc", b, vc[f[fi]])  # (P, 3)
    else:
        col = np.asarray(albedo, dtype=np.float64).reshape(1, 3)
    rgb = np.clip(np.round(col * shade[:, None] * 255.0), 0, 255).astype(np.uint8)  # (P, 3)
    h, w = camera.size
    image = np.empty((h * w, 3), dtype=np.uint8)
    image[:] = _background(background)
    image[idx] = rgb
    normals = np.zeros((h * w, 3))
    normals[idx] = n
    return Rendering(image.reshape(h, w, 3), r.face_index, r.bary, camera, r.depth,
                     normals.reshape(h, w, 3))


def render_normals(
    vertices: np.ndarray,
    faces: np.ndarray,
    size=224,
    camera: Camera | None = None,
    *,
    background=(0, 0, 0),
    two_sided: bool = True,
    cull_backfaces: bool = False,
) -> Rendering:
    """Normal map: orthographic projection with ``RGB = (n_cam + 1) / 2 * 255`` (the paper's
    decoupling-embedder input). Arguments as :func:`render_shaded`."""
    v, f, camera = _prepare(vertices, faces, size, camera)
    r, front = _rasterize_mesh(v, f, camera, cull_backfaces)
    idx, n, _, _ = _pixel_normals(v, f, camera, r, front, two_sided)
    h, w = camera.size
    image = np.empty((h * w, 3), dtype=np.uint8)
    image[:] = _background(background)
    image[idx] = np.clip(np.round((n + 1.0) * 127.5), 0, 255).astype(np.uint8)
    normals = np.zeros((h * w, 3))
    normals[idx] = n
    return Rendering(image.reshape(h, w, 3), r.face_index, r.bary, camera, r.depth,
                     normals.reshape(h, w, 3))


class SurfacePoints(NamedTuple):
    """Image points mapped onto the mesh surface.

    Attributes:
        face_index: (N,) int64 triangle per point, -1 where the point hits the background.
        bary: (N, 3) float64 barycentrics (>= 0, sum 1) of the point in that triangle; 0 if -1.
    """

    face_index: np.ndarray
    bary: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        """(N,) bool, True where the point landed on the mesh."""
        return self.face_index >= 0


def locate_points(rendering: Rendering, points_xy: np.ndarray, vertices: np.ndarray,
                  faces: np.ndarray) -> SurfacePoints:
    """Map sub-pixel image points back onto the rendered surface (an exact orthographic ray cast).

    Each point's candidate triangles are those whose projected bounding box covers the
    point's pixel cell; the point's barycentrics are computed in each candidate's projected
    triangle and the nearest (smallest depth) candidate containing the point wins (closed
    triangles with a 1e-9 barycentric slack; the chosen barycentrics are clamped to >= 0 and
    renormalised). At pixel centres this agrees with ``rendering.face_index`` / ``bary``.

    Args:
        rendering: a :class:`Rendering` of ``vertices``/``faces`` (its camera is used).
        points_xy: (N, 2) float pixel coordinates (x along columns, y along rows).
        vertices, faces: the rendered mesh, (V, 3) float and (F, 3) int.

    Returns:
        :class:`SurfacePoints`; points off the mesh, off the image or NaN get -1. Surface
        positions are ``(bary[:, :, None] * vertices[faces[face_index]]).sum(1)`` where valid.
    """
    pts = np.asarray(points_xy, dtype=np.float64)
    check_shape("points_xy", pts, ("N", 2))
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    check_shape("vertices", v, ("V", 3))
    check_faces("faces", f, v.shape[0])
    cam = rendering.camera
    h, w = cam.size
    n = pts.shape[0]
    out_f = np.full(n, -1, dtype=np.int64)
    out_b = np.zeros((n, 3))
    with np.errstate(invalid="ignore"):
        inimg = np.isfinite(pts).all(1) & (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
    q = np.flatnonzero(inimg)  # (Q,) query points inside the image
    if q.size == 0 or f.shape[0] == 0:
        return SurfacePoints(out_f, out_b)
    qcell = np.floor(pts[q, 1]).astype(np.int64) * w + np.floor(pts[q, 0]).astype(np.int64)  # (Q,)

    xy, depth = cam.project(v)  # (V, 2), (V,)
    txy = xy[f]  # (F, 3, 2)
    ok = np.isfinite(txy).all(axis=(1, 2))
    tx = np.where(ok[:, None], txy[..., 0], -1.0)
    ty = np.where(ok[:, None], txy[..., 1], -1.0)
    # pixel cells [j, j+1) x [i, i+1) touched by each triangle's bounding box, clipped
    c0 = np.clip(np.floor(tx.min(1)), 0, w).astype(np.int64)
    c1 = np.clip(np.floor(tx.max(1)), -1, w - 1).astype(np.int64)
    r0 = np.clip(np.floor(ty.min(1)), 0, h).astype(np.int64)
    r1 = np.clip(np.floor(ty.max(1)), -1, h - 1).astype(np.int64)
    nx = np.maximum(c1 - c0 + 1, 0)
    cnt = np.where(ok, nx * np.maximum(r1 - r0 + 1, 0), 0)  # (F,)
    tri = np.repeat(np.arange(f.shape[0]), cnt)  # (M,) (triangle, cell) pairs
    local = np.arange(tri.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    dr, dc = np.divmod(local, np.maximum(nx, 1)[tri])
    cell = (r0[tri] + dr) * w + (c0[tri] + dc)  # (M,)
    wanted = np.zeros(h * w, dtype=bool)
    wanted[qcell] = True
    keep = wanted[cell]
    tri, cell = tri[keep], cell[keep]
    order = np.argsort(cell, kind="stable")
    tri, cell = tri[order], cell[order]
    lo = np.searchsorted(cell, qcell, side="left")  # (Q,) candidate ranges
    hi = np.searchsorted(cell, qcell, side="right")
    k = hi - lo
    qi = np.repeat(np.arange(q.size), k)  # (P,) query of each (query, candidate) pair
    ci = tri[np.repeat(lo, k) + (np.arange(qi.size) - np.repeat(np.cumsum(k) - k, k))]  # (P,)
    t = txy[ci]  # (P, 3, 2)
    e1 = t[:, 1] - t[:, 0]
    e2 = t[:, 2] - t[:, 0]
    d = pts[q[qi]] - t[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    nondeg = np.abs(det) > 0
    det = np.where(nondeg, det, 1.0)
    b1 = (d[:, 0] * e2[:, 1] - d[:, 1] * e2[:, 0]) / det
    b2 = (e1[:, 0] * d[:, 1] - e1[:, 1] * d[:, 0]) / det
    b = np.stack([1.0 - b1 - b2, b1, b2], axis=1)  # (P, 3)
    inside = nondeg & (b.min(1) >= -1e-9)
    dz = depth[f[ci]]
    z = dz[:, 0] + b1 * (dz[:, 1] - dz[:, 0]) + b2 * (dz[:, 2] - dz[:, 0])  # (P,)
    qi, ci, b, z = qi[inside], ci[inside], b[inside], z[inside]
    # nearest containing triangle per query; ties -> lowest triangle index (as the raster)
    order = np.lexsort((ci, z, qi))
    qs = qi[order]
    first = np.ones(qs.shape, dtype=bool)
    first[1:] = qs[1:] != qs[:-1]
    win = order[first]
    bb = np.clip(b[win], 0.0, None)
    bb /= bb.sum(1, keepdims=True)
    out_f[q[qi[win]]] = ci[win]
    out_b[q[qi[win]]] = bb
    return SurfacePoints(out_f, out_b)


def draw_points(image: np.ndarray, points_xy: np.ndarray, color=(255, 0, 0), radius: float = 2.0,
                thickness: int = -1) -> np.ndarray:
    """Draw filled (or outlined) anti-aliased circles on a copy of ``image``.

    Args:
        image: (H, W, 3) uint8 RGB.
        points_xy: (N, 2) float pixel coordinates (x, y), pixel centres at +0.5.
        color: one RGB triple (0..255) or (N, 3) colours.
        radius: pixels. thickness: -1 for filled, else the outline width in pixels.

    Returns:
        (H, W, 3) uint8 RGB, a new array; points that are NaN are skipped.
    """
    import cv2

    img = np.ascontiguousarray(np.array(image, dtype=np.uint8, copy=True))
    check_shape("image", img, (None, None, 3))
    pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    cols = np.asarray(color, dtype=np.float64)
    cols = np.broadcast_to(cols.reshape(-1, 3) if cols.ndim == 2 else cols.reshape(1, 3), (len(pts), 3))
    shift = 4  # sub-pixel bits
    for (x, y), c in zip(pts, cols):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        centre = (int(round((x - 0.5) * (1 << shift))), int(round((y - 0.5) * (1 << shift))))
        cv2.circle(img, centre, int(round(radius * (1 << shift))), tuple(float(v) for v in c),
                   thickness, cv2.LINE_AA, shift)
    return img


def tile_images(images: Sequence[np.ndarray], labels: Sequence[str] | None = None,
                ncols: int | None = None, pad: int = 4, background=(0, 0, 0),
                label_color=(255, 255, 255)) -> np.ndarray:
    """Tile images into a grid (contact sheets, sample grids), with optional labels.

    Args:
        images: K images (H_k, W_k, 3) uint8 RGB (or (H, W) grey); each cell has the largest size.
        labels: optional K strings drawn in a strip above each cell.
        ncols: columns (default ceil(sqrt(K))).
        pad: pixels between cells and around the grid.

    Returns:
        (H_grid, W_grid, 3) uint8 RGB.
    """
    import cv2

    ims = []
    for k, im in enumerate(images):
        a = np.asarray(im)
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        if a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"images[{k}]: expected (H, W, 3) or (H, W), got {a.shape}")
        ims.append(a.astype(np.uint8, copy=False))
    if not ims:
        raise ValueError("images: expected at least one image")
    if labels is not None and len(labels) != len(ims):
        raise ValueError(f"labels: expected {len(ims)} labels, got {len(labels)}")
    k = len(ims)
    ncols = int(np.ceil(np.sqrt(k))) if ncols is None else max(1, int(ncols))
    nrows = int(np.ceil(k / ncols))
    ch = max(a.shape[0] for a in ims)
    cw = max(a.shape[1] for a in ims)
    font, fscale, fthick = cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1
    lh = 0
    if labels is not None:
        lh = cv2.getTextSize("Ag", font, fscale, fthick)[0][1] + 8
    gh = nrows * (ch + lh) + (nrows + 1) * pad
    gw = ncols * cw + (ncols + 1) * pad
    grid = np.empty((gh, gw, 3), dtype=np.uint8)
    grid[:] = _background(background)
    for i, a in enumerate(ims):
        r, c = divmod(i, ncols)
        y0 = pad + r * (ch + lh + pad)
        x0 = pad + c * (cw + pad)
        if labels is not None:
            cv2.putText(grid, str(labels[i]), (x0 + 2, y0 + lh - 5), font, fscale,
                        tuple(int(v) for v in label_color), fthick, cv2.LINE_AA)
        grid[y0 + lh:y0 + lh + a.shape[0], x0:x0 + a.shape[1]] = a
    return grid
