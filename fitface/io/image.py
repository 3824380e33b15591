"""Image files: atomic PNG writing and checked reading.

Convention: images in memory are (H, W, 3) uint8 **RGB** (OpenCV's BGR order, where OpenCV
reads, is converted at this boundary only). Greyscale and alpha files are read as RGB (alpha
dropped); 16-bit files are scaled to 8 bits.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fitface.errors import InputError
from fitface.io.atomic import atomic_path


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Atomically write ``image`` as a PNG.

    Args:
        path: target file (its folder is created); any suffix, the format is always PNG.
        image: (H, W, 3) uint8 RGB or (H, W) uint8 grey.
    """
    from PIL import Image

    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ValueError(f"image: expected dtype uint8, got {a.dtype}")
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)) or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"image: expected shape (H, W, 3) or (H, W), got {a.shape}")
    with atomic_path(path, suffix=".png") as tmp:
        # Pillow, not OpenCV: importing cv2 costs a plain fit ~0.07 s; level 1 is OpenCV's default
        Image.fromarray(np.ascontiguousarray(a)).save(tmp, format="PNG", compress_level=1)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file (PNG, JPEG, ... anything OpenCV decodes).

    Returns:
        (H, W, 3) uint8 RGB.

    Raises:
        InputError: the file is missing, is a folder, is empty, or is not a decodable image.
    """
    import cv2

    p = Path(path)
    if not p.exists():
        raise InputError("no such file", p)
    if not p.is_file():
        raise InputError("not a file", p)
    try:
        data = np.fromfile(p, dtype=np.uint8)
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror or e}", p) from e
    if data.size == 0:
        raise InputError("empty file", p)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise InputError("not a readable image", p)
    if img.dtype == np.uint16:
        img = (img.astype(np.float64) / 257.0).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        raise InputError(f"unsupported image sample type {img.dtype}", p)
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=2)
    if img.shape[2] == 4:
        img = img[..., :3]
    elif img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img[..., ::-1])
