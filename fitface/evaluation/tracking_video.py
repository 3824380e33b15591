"""Rendered face videos with a known truth, for measuring ``fitface track`` without videos of people.

:func:`render_sequence` renders a known identity of a model performing an expression trajectory
(a jaw opening and closing, a smile, a blink) under a moving head pose with the project's
renderer (:func:`fitface.geometry.render.render_shaded`, skin-toned albedo, grey-blue
background); :func:`write_sequence_video` encodes it with OpenCV.

Expression directions: the model's expression code has no named units, so each action is a
direction of the expression block found from the model itself (:func:`action_directions`): the
unit direction of steepest increase, at the identity's neutral face, of a landmark measure on the
``"ibug68"`` set: the inner-lip gap plus the chin drop (``jaw``), the mouth-corner distance
(``smile``), minus the eyelid gaps (``blink``), by central finite differences. The blink a model
can make is whatever that direction gives (the ICT GAN's training emotions have no closed eyes).

Convention:
    * Truth meshes are in the model frame and unit (mm); frame ``t`` is rendered through the
      camera ``camera[t]`` (weak perspective, :class:`fitface.geometry.camera.Camera`) whose
      pixels map to the photo frame of :mod:`fitface.landmarks.lift_photo` as ``(x, -y)``.
    * Poses: yaw, pitch, roll in degrees (:func:`fitface.geometry.camera.rotation_yaw_pitch`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

#: Mouth corners, inner-lip middles, chin, eyelid pairs of the ibug 68-point layout.
_CORNERS, _INNER_LIPS, _CHIN = (48, 54), (62, 66), 8
_EYELIDS = ((37, 41), (38, 40), (43, 47), (44, 46))
#: The actions of :func:`action_directions`.
ACTIONS = ("jaw", "smile", "blink")


@dataclass
class RenderedSequence:
    """A rendered sequence and its truth.

    Attributes:
        frames: (T, H, W, 3) uint8 RGB.
        z: (T, D) float64 true codes (layout order; one identity code).
        vertices: (T, V, 3) float64 true meshes, model frame and unit.
        cameras: T :class:`fitface.geometry.camera.Camera`.
        weights: (T, 3) float64 the actions' amplitudes (``jaw``, ``smile``, ``blink``) in [0, 1].
        fps: frames per second.
    """

    frames: np.ndarray
    z: np.ndarray
    vertices: np.ndarray
    cameras: list
    weights: np.ndarray
    fps: float


def _measures(dec, z: np.ndarray) -> np.ndarray:
    """(N, 3) jaw, smile, blink measures (mm) of codes ``z`` (N, D)."""
    p = dec.points(z, dec.landmark_rows("ibug68")).astype(np.float64)  # (N, 68, 3)
    gap = np.linalg.norm(p[:, _INNER_LIPS[0]] - p[:, _INNER_LIPS[1]], axis=1)
    chin = -p[:, _CHIN, 1]
    width = np.linalg.norm(p[:, _CORNERS[0]] - p[:, _CORNERS[1]], axis=1)
    lids = sum(np.linalg.norm(p[:, a] - p[:, b], axis=1) for a, b in _EYELIDS)
    return np.stack([gap + chin, width, -lids], axis=1)


def action_directions(dec, identity: np.ndarray, step: float = 0.05) -> np.ndarray:
    """(3, d_exp) float64 unit expression directions of ``jaw``, ``smile``, ``blink`` (module doc).

    Args:
        dec: a decoder with ``identity`` and ``expression`` blocks and an ``"ibug68"`` set.
        identity: (d_id,) the identity code.
        step: finite-difference step in code units.
    """
    lay = dec.layout
    ex = lay.slice("expression")
    d = lay.size("expression")
    z0 = np.zeros(lay.dim)
    z0[lay.slice("identity")] = identity
    zp = np.repeat(z0[None], 2 * d, axis=0)  # (2d, D)
    zp[np.arange(d), ex.start + np.arange(d)] += step
    zp[d + np.arange(d), ex.start + np.arange(d)] -= step
    m = _measures(dec, zp)  # (2d, 3)
    g = (m[:d] - m[d:]).T / (2 * step)  # (3, d) gradient of each measure
    return g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)


def action_weights(t: np.ndarray) -> np.ndarray:
    """(T, 3) amplitudes in [0, 1] over normalised time ``t`` in [0, 1): the jaw opens and closes
    (0-0.35), a smile (0.3-0.7), a blink (0.72-0.82), each a raised-cosine bump."""
    def bump(a, b):
        u = np.clip((t - a) / (b - a), 0.0, 1.0)
        return 0.5 - 0.5 * np.cos(2 * np.pi * u)

    return np.stack([bump(0.02, 0.35), bump(0.3, 0.7), bump(0.72, 0.82)], axis=1)


def head_pose(t: np.ndarray, yaw: float = 18.0, pitch: float = 8.0, roll: float = 5.0) -> np.ndarray:
    """(T, 3) yaw, pitch, roll (degrees): smooth sinusoids of normalised time ``t``."""
    return np.stack([yaw * np.sin(2 * np.pi * t), pitch * np.sin(2 * np.pi * 1.5 * t + 0.5),
                     roll * np.sin(2 * np.pi * t + 1.0)], axis=1)


def sequence_codes(dec, identity: np.ndarray, frames: int, amplitude: float = 2.5) -> tuple[np.ndarray, np.ndarray]:
    """``(z (T, D), weights (T, 3))``: the identity, expression ``amplitude * weights @ dirs``, noise 0."""
    lay = dec.layout
    t = np.arange(frames) / frames
    w = action_weights(t)  # (T, 3)
    dirs = action_directions(dec, identity)  # (3, d_exp)
    z = np.zeros((frames, lay.dim))
    z[:, lay.slice("identity")] = identity
    z[:, lay.slice("expression")] = amplitude * w @ dirs
    return z, w


def render_sequence(dec, identity: np.ndarray, frames: int = 72, size: tuple[int, int] = (480, 640),
                    fps: float = 24.0, amplitude: float = 2.5, margin: float = 0.14,
                    background=(96, 112, 128)) -> RenderedSequence:
    """Render a known identity performing the trajectory under a moving head (module doc).

    Args:
        dec: a decoder (identity, expression blocks; ``"ibug68"`` set).
        identity: (d_id,) identity code.
        frames: T. size: (H, W) pixels. fps: the video's rate.
        amplitude: length of the expression code at an action's peak.
        margin: the head's framing margin (:func:`fitface.geometry.camera.frame_mesh`).
    """
    from fitface.geometry.camera import Camera, frame_mesh, rotation_yaw_pitch
    from fitface.geometry.render import render_shaded

    z, w = sequence_codes(dec, identity, frames, amplitude)
    verts = np.asarray(dec.vertices(z), dtype=np.float64)  # (T, V, 3)
    t = np.arange(frames) / frames
    pose = head_pose(t)
    base = frame_mesh(verts[0], size, margin=margin)
    h, wd = size
    imgs, cams = [], []
    for k in range(frames):
        rot = rotation_yaw_pitch(*pose[k])
        shift = np.array([0.04 * wd * np.sin(2 * np.pi * t[k]), 0.03 * h * np.cos(2 * np.pi * t[k])])
        cam = Camera(rot, base.scale * (1.0 + 0.05 * np.sin(2 * np.pi * 2 * t[k])), base.translation + shift, h, wd)
        imgs.append(render_shaded(verts[k], dec.faces, camera=cam, background=background).image)
        cams.append(cam)
    return RenderedSequence(np.stack(imgs), z, verts, cams, w, float(fps))


def write_sequence_video(path: str | os.PathLike, seq: RenderedSequence) -> None:
    """Encode the frames as an mp4 with OpenCV (``mp4v``), atomically."""
    from fitface.io.video import write_video

    write_video(path, seq.frames, seq.fps)


def aligned_rmse(v: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(T,) float64 per-frame vertex RMSE after a similarity alignment (Umeyama) of ``v`` onto ``truth``.

    Args:
        v, truth: (T, V, 3) float meshes (truth in mm: the result is in mm).
    """
    from fitface.fitting.similarity import umeyama

    out = np.empty(v.shape[0])
    for k in range(v.shape[0]):
        tr = umeyama(v[k], truth[k])
        out[k] = np.sqrt(((tr.apply(v[k][None])[0] - truth[k]) ** 2).sum(1).mean())
    return out


def mean_acceleration(points: np.ndarray) -> float:
    """Mean norm of the second difference over time of (T, L, C) points (jitter), their unit per frame^2."""
    p = np.asarray(points, dtype=np.float64)
    a = p[2:] - 2 * p[1:-1] + p[:-2]
    return float(np.linalg.norm(a, axis=-1).mean())


__all__ = ["ACTIONS", "RenderedSequence", "action_directions", "action_weights", "aligned_rmse", "head_pose",
           "mean_acceleration", "render_sequence", "sequence_codes", "write_sequence_video"]
