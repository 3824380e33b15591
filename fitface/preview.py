"""Preview pictures of fits and of latent manipulations (numpy, Pillow for a fit's marks and text,
OpenCV for strips and grids; no torch).

Convention:
    * A fit is shown from the *model's* frontal view, whatever the capture's frame: the
      camera rotation is ``R^T`` where ``x_capture = s R x_model + t`` (the fit's transform),
      so a face looks straight at the viewer even when the scanner's axes differ.
    * Target landmarks are drawn as white rings, fitted landmarks as filled dots joined to
      their target by a segment, both coloured by the residual distance: green at 0, yellow at
      half of :data:`RESIDUAL_FULL_SCALE_MM`, red at or above it (converted to the capture's
      unit). A legend line states the RMS and its unit.
    * Images are (H, W, 3) uint8 RGB.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: Residual (in mm) drawn fully red in previews; smaller residuals blend green -> yellow -> red.
RESIDUAL_FULL_SCALE_MM = 5.0
#: Default preview side in pixels.
PREVIEW_SIZE = 384
#: Colour stops of the error ramp (fraction of full scale -> RGB in [0, 1]).
_RAMP_T = (0.0, 0.33, 0.66, 1.0)
_RAMP_RGB = ((0.15, 0.25, 0.85), (0.1, 0.8, 0.85), (0.95, 0.85, 0.15), (0.85, 0.1, 0.1))
#: Background grey of previews (RGB 0..255).
BACKGROUND = (40, 40, 46)


def error_colors(values: np.ndarray, full_scale: float) -> np.ndarray:
    """(V,) float errors -> (V, 3) float RGB in [0, 1]: blue at 0, cyan, yellow, red at ``full_scale``."""
    t = np.clip(np.asarray(values, dtype=np.float64) / max(float(full_scale), 1e-12), 0.0, 1.0)
    rgb = np.asarray(_RAMP_RGB)
    return np.stack([np.interp(t, _RAMP_T, rgb[:, c]) for c in range(3)], axis=1)


def nice_scale(values: np.ndarray, quantile: float = 0.95) -> float:
    """A round full-scale value (1, 2, 2.5, 5 x 10^k) at or above the ``quantile`` of ``values``."""
    v = float(np.quantile(np.asarray(values, dtype=np.float64), quantile)) if np.size(values) else 1.0
    if not v > 0:
        return 1.0
    e = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if m * e >= v:
            return float(m * e)
    return float(10 * e)


def residual_colors(distances: np.ndarray, full_scale: float) -> np.ndarray:
    """Colour per residual: (L,) float distances -> (L, 3) uint8 RGB, green -> yellow -> red
    as ``distance / full_scale`` goes 0 -> 0.5 -> 1 (clipped)."""
    t = np.clip(np.asarray(distances, dtype=np.float64) / max(float(full_scale), 1e-300), 0.0, 1.0)
    r = np.clip(2.0 * t, 0.0, 1.0)
    g = np.clip(2.0 * (1.0 - t), 0.0, 1.0)
    return np.round(np.stack([r, g, np.zeros_like(t)], axis=1) * 230 + 25).astype(np.uint8)


#: Supersampling factor of the landmark overlay (drawn at this scale, box-filtered down).
_OVERLAY_SCALE = 3


def _legend(image: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """Draw text lines on a dark band at the top of ``image`` (in place; Pillow's default
    FreeType font, anti-aliased)."""
    from PIL import Image, ImageDraw, ImageFont

    step = 16
    band = image[: 6 + step * len(lines)]
    band[:] = (band.astype(np.uint16) * 2 // 5).astype(np.uint8)  # darken for contrast
    pil = Image.fromarray(image)
    draw, font = ImageDraw.Draw(pil), ImageFont.load_default(12)
    for i, text in enumerate(lines):
        draw.text((6, 15 + i * step), text, fill=(240, 240, 240), font=font, anchor="ls")
    image[:] = np.asarray(pil)
    return image


def _landmark_overlay(image: np.ndarray, fitted_xy: np.ndarray, target_xy: np.ndarray,
                      colors: np.ndarray) -> np.ndarray:
    """Residual segments, target rings and fitted dots over ``image``, anti-aliased.

    The marks' bounding box is upsampled ``_OVERLAY_SCALE`` times by pixel replication, drawn
    on, and box-filtered back, so the rendered face is unchanged and the marks are smooth.

    Args:
        image: (H, W, 3) uint8 RGB.
        fitted_xy, target_xy: (L, 2) float pixel coordinates (pixel centres at integer + 0.5).
        colors: (L, 3) uint8 RGB per landmark.

    Returns:
        (H, W, 3) uint8 RGB, a new array.
    """
    from PIL import Image, ImageDraw

    k = _OVERLAY_SCALE
    h, w = image.shape[:2]
    fxy, txy = np.asarray(fitted_xy, np.float64), np.asarray(target_xy, np.float64)
    out = np.array(image)
    if not len(fxy):
        return out
    # only the marks' bounding box (+ a ring's radius) is supersampled
    pts = np.concatenate([fxy, txy])
    x0, y0 = np.clip(np.floor(pts.min(0)).astype(int) - 4, 0, [w, h])
    x1, y1 = np.clip(np.ceil(pts.max(0)).astype(int) + 4, 0, [w, h])
    if x1 <= x0 or y1 <= y0:
        return out
    crop = out[y0:y1, x0:x1]
    big = Image.fromarray(np.repeat(np.repeat(crop, k, axis=0), k, axis=1))
    draw = ImageDraw.Draw(big)
    # continuous pixel coordinates (pixel i spans [i, i + 1]) -> Pillow's (pixel centres at integers)
    off = np.array([x0, y0], np.float64)
    fxy, txy = (fxy - off) * k - 0.5, (txy - off) * k - 0.5
    for (fx, fy), (tx, ty), c in zip(fxy, txy, colors):
        col = tuple(int(x) for x in c)
        draw.line([(fx, fy), (tx, ty)], fill=col, width=k)
        r = 2.6 * k
        draw.ellipse([tx - r, ty - r, tx + r, ty + r], outline=(255, 255, 255), width=k)
        r = 1.8 * k
        draw.ellipse([fx - r, fy - r, fx + r, fy + r], fill=col)
    out[y0:y1, x0:x1] = np.asarray(big.resize((x1 - x0, y1 - y0), Image.BOX))
    return out


def fit_preview(
    vertices: np.ndarray,
    faces: np.ndarray,
    targets: np.ndarray,
    fitted: np.ndarray,
    rotation: np.ndarray | None = None,
    unit: str = "mm",
    rms: float | None = None,
    size: int = PREVIEW_SIZE,
    title: str | None = None,
) -> np.ndarray:
    """Shaded fitted mesh with target landmarks, fitted landmarks and residual segments.

    Args:
        vertices: (V, 3) float, the fitted mesh in the capture's frame and ``unit``.
        faces: (F, 3) int.
        targets: (L, 3) float, target landmarks, same frame and unit.
        fitted: (L, 3) float, the fitted model's landmarks, same frame and unit.
        rotation: (3, 3) float, the fit's model -> capture rotation ``R`` (None = identity).
        unit: the capture's unit (for the legend and the colour scale).
        rms: landmark RMS to print (default: computed from ``fitted - targets``).
        size: image side in pixels.
        title: optional first legend line (e.g. the capture's name).

    Returns:
        (size, size, 3) uint8 RGB.
    """
    from fitface.geometry.camera import frame_mesh
    from fitface.geometry.render import render_shaded
    from fitface.units import scale_between

    v = np.asarray(vertices, dtype=np.float64)
    tg = np.asarray(targets, dtype=np.float64).reshape(-1, 3)
    ft = np.asarray(fitted, dtype=np.float64).reshape(-1, 3)
    r = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
    cam = frame_mesh(np.concatenate([v, tg]), size=size, rotation=r.T)
    img = render_shaded(v, faces, camera=cam, background=BACKGROUND).image
    dist = np.linalg.norm(ft - tg, axis=1)  # (L,) capture unit
    full = RESIDUAL_FULL_SCALE_MM * scale_between("mm", unit)
    cols = residual_colors(dist, full)  # (L, 3)
    xy_t, _ = cam.project(tg)  # (L, 2) pixels
    xy_f, _ = cam.project(ft)
    img = _landmark_overlay(img, xy_f, xy_t, cols)
    rms = float(np.sqrt(np.mean(dist**2))) if rms is None else float(rms)
    lines = ([title] if title else []) + [
        f"landmark RMS {rms:.3g} {unit}  max {dist.max():.3g} {unit}",
        f"colour: green 0 .. red >= {full:.3g} {unit}",
    ]
    return _legend(img, lines)


def mesh_strip(
    meshes: Sequence[np.ndarray], faces: np.ndarray, labels: Sequence[str] | None = None, size: int = 192,
    ncols: int | None = None,
) -> np.ndarray:
    """Shaded meshes side by side (one shared camera, so sizes compare).

    Args:
        meshes: K (V, 3) float vertex arrays in one frame (x right, y up, z to the viewer).
        faces: (F, 3) int.
        labels: optional K captions.
        size: side of each cell in pixels.
        ncols: columns (default: all in one row).

    Returns:
        (H, W, 3) uint8 RGB grid.
    """
    from fitface.geometry.camera import frame_mesh
    from fitface.geometry.render import render_shaded, tile_images

    stack = np.asarray(meshes, dtype=np.float64)  # (K, V, 3)
    cam = frame_mesh(stack.reshape(-1, 3), size=size)
    ims = [render_shaded(m, faces, camera=cam, background=BACKGROUND).image for m in stack]
    return tile_images(ims, labels, ncols=len(ims) if ncols is None else ncols)


#: Albedo of the rows of a sample grid, in turn: dark grey, light grey, purple.
ROW_TINTS = ((0.45, 0.45, 0.45), (0.78, 0.78, 0.78), (0.62, 0.45, 0.72))


def sample_grid(rows: Sequence[np.ndarray], faces: np.ndarray, cell: int = 128,
                labels: Sequence[str] | None = None, *, camera=None, background=(0, 0, 0)) -> np.ndarray:
    """Render rows of meshes and tile them like the paper's Fig. 3 (the training run's grids and
    the evaluation report's sample figures).

    Args:
        rows: R arrays (C, V, 3) float of vertex positions (model unit), one block per row
            (e.g. random samples / shared expression code / shared identity code); row ``i``
            is rendered with the albedo ``ROW_TINTS[i % 3]``.
        faces: (F, 3) int.
        cell: pixel size of one rendering (when ``camera`` is None).
        labels: optional R row titles, drawn above the row's first cell.
        camera: one :class:`~fitface.geometry.camera.Camera` for every cell (sizes compare
            across cells; its size wins over ``cell``); None frames each mesh by itself.
        background: RGB 0..255 (or one grey value) behind the meshes.

    Returns:
        (H, W, 3) uint8 RGB grid.
    """
    from fitface.geometry.render import render_shaded, tile_images

    images, names = [], []
    ncols = max(len(r) for r in rows)
    blank = (cell, cell) if camera is None else (camera.height, camera.width)
    for i, block in enumerate(rows):
        for j in range(ncols):
            if j < len(block):
                im = render_shaded(np.asarray(block[j], dtype=np.float64), faces, size=cell, camera=camera,
                                   albedo=ROW_TINTS[i % len(ROW_TINTS)], background=background).image
            else:
                im = np.zeros((*blank, 3), np.uint8)
            images.append(im)
            names.append((labels[i] if labels is not None and j == 0 else ""))
    return tile_images(images, labels=names if labels is not None else None, ncols=ncols)


__all__ = ["BACKGROUND", "PREVIEW_SIZE", "RESIDUAL_FULL_SCALE_MM", "ROW_TINTS", "fit_preview", "mesh_strip",
           "residual_colors", "sample_grid"]
