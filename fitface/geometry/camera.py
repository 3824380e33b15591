"""Orthographic / weak-perspective cameras for the software renderer.

Convention:
    * World (mesh) space: x right, y up, z towards the viewer (the ICT and synthetic meshes).
    * Camera space: ``p_cam = rotation @ p_world``; x right, y up, z towards the camera; the
      camera looks along camera-space **-z**. The identity rotation is the frontal view.
    * Image: pixel coordinates as in :mod:`fitface.geometry.raster` (x along columns, y along
      rows downwards, pixel (i, j) centred at (j + 0.5, i + 0.5)):
      ``x_pix = scale * x_cam + tx``, ``y_pix = -scale * y_cam + ty``.
    * Depth handed to the rasteriser is ``-z_cam * scale`` (distance along the viewing
      direction in pixel units, smaller is nearer).
    * A weak-perspective camera is exactly this (a scaled orthographic projection: rotation,
      uniform scale, 2D translation); "orthographic" names the same model with the scale chosen
      from a world-space view window. Perspective is not modelled.
    * Yaw / pitch (degrees): the mesh is viewed through ``rotation = R_x(pitch) @ R_y(yaw)``
      (right-hand rotations about world +y, then +x). Positive yaw turns the face (+z) towards
      image right (+x); positive pitch turns it downwards (towards -y), i.e. the camera sees
      more of the top of the head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fitface.checks import check_finite, check_shape

#: Default margin of :func:`frame_mesh`, as a fraction of the image size on each side.
FRAME_MARGIN = 0.08


def rotation_yaw_pitch(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Camera rotation for a view from yaw/pitch/roll angles in **degrees**.

    Returns:
        (3, 3) float64 ``R = R_z(roll) @ R_x(pitch) @ R_y(yaw)`` (see the module Convention).
    """
    a, b, c = np.deg2rad([yaw, pitch, roll])
    ry = np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(b), -np.sin(b)], [0.0, np.sin(b), np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0.0], [np.sin(c), np.cos(c), 0.0], [0.0, 0.0, 1.0]])
    return rz @ rx @ ry


def rotation_look(direction) -> np.ndarray:
    """Rotation whose camera looks along world ``direction`` (3,), keeping world +y up.

    ``direction = (0, 0, -1)`` (looking along -z) is the frontal view and returns the identity.
    """
    d = np.asarray(direction, dtype=np.float64).reshape(3)
    n = np.linalg.norm(d)
    if not np.isfinite(n) or n == 0:
        raise ValueError(f"direction: expected a non-zero finite 3-vector, got {d}")
    back = -d / n  # camera +z axis in world space (towards the camera)
    up = np.array([0.0, 1.0, 0.0])
    if abs(back @ up) > 1 - 1e-9:  # looking straight up/down: use world -z/+z as "up"
        up = np.array([0.0, 0.0, -np.sign(back @ up)])
    right = np.cross(up, back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    return np.stack([right, up, back])  # rows: camera axes in world space


@dataclass(frozen=True)
class Camera:
    """A weak-perspective (scaled orthographic) camera.

    Attributes:
        rotation: (3, 3) float64, world -> camera rotation.
        scale: pixels per world unit.
        translation: (2,) float64, pixel position of the camera-space origin.
        height, width: image size in pixels.
    """

    rotation: np.ndarray
    scale: float
    translation: np.ndarray
    height: int
    width: int

    def __post_init__(self):
        r = np.asarray(self.rotation, dtype=np.float64)
        check_shape("rotation", r, (3, 3))
        if not np.allclose(r @ r.T, np.eye(3), atol=1e-6):
            raise ValueError("rotation: expected an orthonormal (3, 3) matrix")
        t = np.asarray(self.translation, dtype=np.float64).reshape(-1)
        check_shape("translation", t, (2,))
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale: expected a positive finite number, got {self.scale}")
        object.__setattr__(self, "rotation", r)
        object.__setattr__(self, "translation", t)
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "height", int(self.height))
        object.__setattr__(self, "width", int(self.width))

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return (self.height, self.width)

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> (N, 3) camera-space points (same unit)."""
        return np.asarray(points, dtype=np.float64) @ self.rotation.T

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project world points.

        Args:
            points: (N, 3) float, world units.

        Returns:
            ``(xy, depth)``: (N, 2) float64 pixel coordinates and (N,) float64 depth in pixel
            units (``-z_cam * scale``, smaller is nearer).
        """
        pc = self.to_camera(points)  # (N, 3)
        xy = np.empty((pc.shape[0], 2))
        xy[:, 0] = self.scale * pc[:, 0] + self.translation[0]
        xy[:, 1] = -self.scale * pc[:, 1] + self.translation[1]
        return xy, -self.scale * pc[:, 2]

    def unproject(self, xy: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`project`: (N, 2) pixels and (N,) depth -> (N, 3) world points."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        pc = np.empty((xy.shape[0], 3))
        pc[:, 0] = (xy[:, 0] - self.translation[0]) / self.scale
        pc[:, 1] = -(xy[:, 1] - self.translation[1]) / self.scale
        pc[:, 2] = -np.asarray(depth, dtype=np.float64).reshape(-1) / self.scale
        return pc @ self.rotation  # R^T applied to row vectors

def _size(size) -> tuple[int, int]:
    if np.isscalar(size):
        h = w = int(size)
    else:
        h, w = (int(s) for s in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"size: expected positive image size, got {size}")
    return h, w


def orthographic(window, size=224, rotation=None) -> Camera:
    """Orthographic camera showing the camera-space window ``(xmin, xmax, ymin, ymax)``.

    The window (world units, in camera space) is fitted to the image width; give it the
    image's aspect ratio to fill the height too. ``size``: int or (H, W).
    """
    h, w = _size(size)
    xmin, xmax, ymin, ymax = (float(v) for v in window)
    if not (xmax > xmin and ymax > ymin):
        raise ValueError(f"window: expected xmax > xmin and ymax > ymin, got {window}")
    scale = w / (xmax - xmin)
    t = np.array([-scale * xmin, h / 2 + scale * (ymin + ymax) / 2])
    return Camera(np.eye(3) if rotation is None else rotation, scale, t, h, w)


def frame_mesh(vertices, size=224, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0,
               rotation=None, margin: float = FRAME_MARGIN) -> Camera:
    """A camera that fits the mesh's projected bounding box into the image with a margin.

    Args:
        vertices: (V, 3) float, world units.
        size: int or (H, W), pixels.
        yaw, pitch, roll: view angles in degrees (ignored when ``rotation`` is given).
        rotation: optional (3, 3) world -> camera rotation (e.g. :func:`rotation_look`).
        margin: fraction of the image size kept free on each side, in [0, 0.5).

    Returns:
        :class:`Camera` whose projection of every vertex lies inside
        ``[margin * W, (1 - margin) * W] x [margin * H, (1 - margin) * H]``, centred.
    """
    v = np.asarray(vertices, dtype=np.float64)
    check_shape("vertices", v, (None, 3))
    check_finite("vertices", v)
    if v.shape[0] == 0:
        raise ValueError("vertices: expected at least one vertex")
    if not 0 <= margin < 0.5:
        raise ValueError(f"margin: expected 0 <= margin < 0.5, got {margin}")
    h, w = _size(size)
    r = rotation_yaw_pitch(yaw, pitch, roll) if rotation is None else np.asarray(rotation, float)
    pc = v @ r.T
    lo, hi = pc[:, :2].min(0), pc[:, :2].max(0)
    extent = np.maximum(hi - lo, 1e-12)
    scale = min(w * (1 - 2 * margin) / extent[0], h * (1 - 2 * margin) / extent[1])
    centre = (lo + hi) / 2
    t = np.array([w / 2 - scale * centre[0], h / 2 + scale * centre[1]])
    return Camera(r, scale, t, h, w)
