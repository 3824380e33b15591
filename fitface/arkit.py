"""ARKit-52 blendshape weights from ICT-FaceKit shapes, and the Live Link Face CSV.

ICT-FaceKit's expression shapes follow Apple ARKit's names with ``_L`` / ``_R`` suffixes
(``eyeBlink_L`` is ARKit's ``eyeBlinkLeft``). Of the 55 shapes of ``ict_face_light.npz``:

* 49 are ARKit shapes once renamed (:func:`ict_to_arkit_name`);
* ``browInnerUp_L/_R`` and ``cheekPuff_L/_R`` are ARKit's single ``browInnerUp`` and
  ``cheekPuff`` split in two;
* ``cheekRaiser_L/_R`` have no ARKit counterpart (they are solved for, then left out of the 52);
* ARKit's ``tongueOut`` has no ICT shape: it is always 0.

Solve (:func:`solve_weights`): per frame, bounded least squares (``scipy.optimize.lsq_linear``)
of the expression displacement (fitted mesh - fitted identity's neutral) against the K shape
deltas transferred onto that identity, with every weight in [0, 1].

Merge (:func:`to_arkit`): a split pair's ARKit value is the **mean** of its two weights, so a
symmetric pair (w, w) gives w, and ARKit's single shape, read as the sum of the two halves'
deltas, re-synthesises the pair's mean displacement.

Convention:
    * :data:`ARKIT_NAMES` is the order of Apple's ``ARFaceAnchor.BlendShapeLocation`` as Live
      Link Face writes it (eyes left then right, jaw, mouth, brows, cheeks, nose, tongue); the
      CSV (:data:`LIVE_LINK_COLUMNS`) uses the same order with the names capitalised
      (``EyeBlinkLeft``), as Live Link Face's own CSV files do (column list as in the open
      PyLiveLinkFace readers/writers: ``Timecode,BlendShapeCount,`` 52 shapes, then
      ``HeadYaw,HeadPitch,HeadRoll,LeftEyeYaw,LeftEyePitch,LeftEyeRoll,RightEyeYaw,
      RightEyePitch,RightEyeRoll``; ``BlendShapeCount`` is 61 = 52 + 9 rotations).
    * "Left"/"Right" are the subject's own sides, as in ARKit and ICT-FaceKit.
    * Weights: float64 in [0, 1]; displacements and residuals in mm (or whatever unit the deltas
      are given in).
    * Head angles: radians, from the head rotation R (model -> camera, fitface's frame: x right,
      y up, z to the viewer) as intrinsic yaw (about y), pitch (about x), roll (about z):
      ``R = Ry(yaw) Rx(pitch) Rz(roll)``. Eye rotations are not tracked by fitface and are 0.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: The 52 ARKit blendshapes in Live Link Face's order.
ARKIT_NAMES: tuple[str, ...] = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft", "eyeSquintLeft",
    "eyeWideLeft", "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
    "eyeSquintRight", "eyeWideRight", "jawForward", "jawRight", "jawLeft", "jawOpen", "mouthClose", "mouthFunnel",
    "mouthPucker", "mouthRight", "mouthLeft", "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthPressLeft", "mouthPressRight",
    "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight", "browDownLeft",
    "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff", "cheekSquintLeft",
    "cheekSquintRight", "noseSneerLeft", "noseSneerRight", "tongueOut",
)
#: ARKit shapes that ICT-FaceKit splits into ``_L`` and ``_R``.
SPLIT_PAIRS: tuple[str, ...] = ("browInnerUp", "cheekPuff")
#: The head and eye rotation columns of a Live Link Face CSV, after the 52 shapes.
POSE_COLUMNS: tuple[str, ...] = ("HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll",
                                 "RightEyeYaw", "RightEyePitch", "RightEyeRoll")
#: Every column of a Live Link Face CSV.
LIVE_LINK_COLUMNS: tuple[str, ...] = (("Timecode", "BlendShapeCount")
                                      + tuple(n[0].upper() + n[1:] for n in ARKIT_NAMES) + POSE_COLUMNS)


def ict_to_arkit_name(name: str) -> str:
    """An ICT-FaceKit shape name in ARKit's style: ``eyeBlink_L`` -> ``eyeBlinkLeft``,
    ``jawOpen`` -> ``jawOpen``; split halves keep their side (``browInnerUp_L`` ->
    ``browInnerUpLeft``, not an ARKit name); ``cheekRaiser_L`` -> ``cheekRaiserLeft``."""
    if name.endswith("_L"):
        return name[:-2] + "Left"
    if name.endswith("_R"):
        return name[:-2] + "Right"
    return name


def arkit_matrix(ict_names: Sequence[str]) -> np.ndarray:
    """(52, K) float64 map from K ICT weights to the 52 ARKit values (:data:`ARKIT_NAMES` rows):
    1 for a renamed shape, 0.5 for each half of a split pair (the mean), an all-zero row for
    ``tongueOut`` and for any ARKit shape the source lacks, zero columns for shapes without an
    ARKit name (``cheekRaiser``)."""
    col = {ict_to_arkit_name(n): k for k, n in enumerate(ict_names)}
    m = np.zeros((len(ARKIT_NAMES), len(ict_names)))
    for a, name in enumerate(ARKIT_NAMES):
        if name in col:
            m[a, col[name]] = 1.0
        elif name in SPLIT_PAIRS and name + "Left" in col and name + "Right" in col:
            m[a, col[name + "Left"]] = m[a, col[name + "Right"]] = 0.5
    return m


def arkit_deltas(ict_deltas: np.ndarray, ict_names: Sequence[str]) -> np.ndarray:
    """(52, V, 3) float64 deltas of the ARKit shapes from K ICT deltas (K, V, 3): a renamed
    shape's own delta, the sum of a split pair's two deltas, zero for ``tongueOut`` (and for
    shapes the source lacks). With :func:`to_arkit`'s mean, ``sum_a w_a D_a`` equals the ICT
    synthesis wherever each pair's two weights are equal."""
    m = arkit_matrix(ict_names)
    d = np.asarray(ict_deltas, dtype=np.float64)
    return np.tensordot((m > 0).astype(np.float64), d, axes=1)


def to_arkit(ict_weights: np.ndarray, ict_names: Sequence[str]) -> np.ndarray:
    """(T, 52) float64 ARKit values (:data:`ARKIT_NAMES` order) of (T, K) ICT weights (module doc)."""
    w = np.asarray(ict_weights, dtype=np.float64)
    return np.clip(w @ arkit_matrix(ict_names).T, 0.0, 1.0)


@dataclass
class WeightSolve:
    """Result of :func:`solve_weights`.

    Attributes:
        weights: (T, K) float64 in [0, 1].
        residual_rms: (T,) float64, per-vertex RMS of ``sum_k w_k D_k - displacement`` (the
            deltas' unit, e.g. mm).
        displacement_rms: (T,) float64, per-vertex RMS of the displacement itself (what
            weights 0 would leave).
    """

    weights: np.ndarray
    residual_rms: np.ndarray
    displacement_rms: np.ndarray


def solve_weights(deltas: np.ndarray, displacement: np.ndarray, lower: float = 0.0,
                  upper: float = 1.0) -> WeightSolve:
    """Bounded least squares of displacements against shape deltas, frame by frame.

    ``w_t = argmin ||sum_k w_k D_k - d_t||^2`` subject to ``lower <= w_k <= upper``, solved with
    ``scipy.optimize.lsq_linear`` on the QR-reduced (K x K) system (the same minimiser as the
    full (3V x K) one, far cheaper per frame).

    Args:
        deltas: (K, V, 3) float shape deltas (any unit).
        displacement: (T, V, 3) or (V, 3) float displacements in the same unit.
        lower, upper: the weight bounds.

    Returns:
        :class:`WeightSolve`.

    Raises:
        ValueError: shapes that do not match, non-finite values, lower >= upper.
    """
    from scipy.linalg import qr
    from scipy.optimize import lsq_linear

    d = np.asarray(deltas, dtype=np.float64)
    x = np.asarray(displacement, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    if d.ndim != 3 or d.shape[2] != 3 or len(d) == 0:
        raise ValueError(f"deltas: expected (K, V, 3), got {d.shape}")
    if x.ndim != 3 or x.shape[1:] != d.shape[1:]:
        raise ValueError(f"displacement: expected (T, {d.shape[1]}, 3), got {np.shape(displacement)}")
    if not (np.isfinite(d).all() and np.isfinite(x).all()):
        raise ValueError("deltas, displacement: NaN or inf values")
    if not lower < upper:
        raise ValueError(f"bounds: expected lower < upper, got {lower}, {upper}")
    k, v = d.shape[0], d.shape[1]
    a = d.reshape(k, -1).T  # (3V, K)
    q, r = qr(a, mode="economic")  # (3V, K), (K, K)
    b = x.reshape(len(x), -1) @ q  # (T, K)
    w = np.empty((len(x), k))
    for t in range(len(x)):
        w[t] = lsq_linear(r, b[t], bounds=(lower, upper), method="bvls", tol=1e-12).x
    w = np.clip(w, lower, upper)
    res = (w @ d.reshape(k, -1)) - x.reshape(len(x), -1)  # (T, 3V)
    rms = np.sqrt(np.sum(res**2, axis=1) / v)
    disp = np.sqrt(np.sum(x.reshape(len(x), -1) ** 2, axis=1) / v)
    return WeightSolve(w, rms, disp)


def head_angles(rotation: np.ndarray) -> np.ndarray:
    """(T, 3) float64 ``(yaw, pitch, roll)`` radians of (T, 3, 3) head rotations (module doc:
    ``R = Ry(yaw) Rx(pitch) Rz(roll)``)."""
    from scipy.spatial.transform import Rotation

    r = np.asarray(rotation, dtype=np.float64).reshape(-1, 3, 3)
    return Rotation.from_matrix(r).as_euler("YXZ")  # intrinsic y, then x, then z


def timecodes(times: np.ndarray, fps: float) -> list[str]:
    """Live Link Face timecodes ``HH:MM:SS:FF.fff`` of (T,) times in seconds (from 0) at ``fps``:
    ``FF`` counts frames of the nominal rate ``round(fps)`` within the second, ``.fff`` the
    sub-frame fraction (0 for times on the frame grid)."""
    fps = float(fps)
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps: expected > 0, got {fps}")
    nominal = max(1, int(round(fps)))
    out = []
    for t in np.asarray(times, dtype=np.float64).reshape(-1):
        n = max(0.0, float(t)) * fps
        frame = int(np.floor(n + 1e-6))
        sub = max(0.0, n - frame)
        sec, ff = divmod(frame, nominal)
        h, rem = divmod(sec, 3600)
        m, s = divmod(rem, 60)
        out.append(f"{h:02d}:{m:02d}:{s:02d}:{ff:02d}.{int(round(sub * 1000)) % 1000:03d}")
    return out


def live_link_csv(arkit_weights: np.ndarray, times: np.ndarray, fps: float,
                  head_rotation: np.ndarray | None = None) -> str:
    """The text of a Live Link Face CSV (:data:`LIVE_LINK_COLUMNS`, one row per frame).

    Args:
        arkit_weights: (T, 52) float in [0, 1], :data:`ARKIT_NAMES` order.
        times: (T,) float seconds from the first frame.
        fps: the frame rate of the timecodes.
        head_rotation: (T, 3, 3) float head rotations (model -> camera), or None (zeros).

    Returns:
        The CSV text (header line + T lines, ``\\n`` line ends).

    Raises:
        ValueError: inconsistent shapes, weights outside [0, 1], non-finite values.
    """
    w = np.asarray(arkit_weights, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != len(ARKIT_NAMES):
        raise ValueError(f"arkit_weights: expected (T, {len(ARKIT_NAMES)}), got {w.shape}")
    ts = np.asarray(times, dtype=np.float64).reshape(-1)
    if ts.shape != (len(w),):
        raise ValueError(f"times: expected ({len(w)},), got {ts.shape}")
    if not (np.isfinite(w).all() and np.isfinite(ts).all()) or w.min(initial=0) < 0 or w.max(initial=0) > 1:
        raise ValueError("arkit_weights: expected finite values in [0, 1]")
    pose = np.zeros((len(w), len(POSE_COLUMNS)))
    if head_rotation is not None:
        pose[:, :3] = head_angles(head_rotation)
    lines = [",".join(LIVE_LINK_COLUMNS)]
    count = len(ARKIT_NAMES) + len(POSE_COLUMNS)
    for tc, row, p in zip(timecodes(ts, fps), w, pose):
        lines.append(",".join([tc, str(count)] + [f"{x:.6f}" for x in row] + [f"{x:.6f}" for x in p]))
    return "\n".join(lines) + "\n"


def write_live_link_csv(path: str | os.PathLike, arkit_weights: np.ndarray, times: np.ndarray, fps: float,
                        head_rotation: np.ndarray | None = None) -> None:
    """Write :func:`live_link_csv` atomically to ``path``."""
    from fitface.io.atomic import write_text

    write_text(path, live_link_csv(arkit_weights, times, fps, head_rotation))


__all__ = ["ARKIT_NAMES", "LIVE_LINK_COLUMNS", "POSE_COLUMNS", "SPLIT_PAIRS", "WeightSolve", "arkit_deltas",
           "arkit_matrix", "head_angles", "ict_to_arkit_name", "live_link_csv", "solve_weights", "timecodes",
           "to_arkit", "write_live_link_csv"]
