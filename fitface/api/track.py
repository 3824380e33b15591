"""Tracking a face through a video: :func:`track` (``fitface track VIDEO -o OUT``).

Pipeline: the frames (:func:`fitface.io.video.open_frames`: a video file or a folder of images,
``fps``/``start``/``end``) -> mediapipe's face mesh in video mode on the largest face
(:func:`fitface.landmarks.lift_video.lift_frames`) -> one sequence fit of every frame with a face
(:func:`fitface.fitting.sequence_fit.fit_sequence_2d`: one identity code, per-frame expression and
noise codes and head poses, smooth expressions and poses) -> frames without a face get
interpolated codes and poses -> the outputs.

Files in ``OUT`` (each written atomically, all computed before the first is written but the
overlay, which is rendered while it is written to a temporary file):

    codes.npz     identity (d_id,), expression (T, d_exp), noise (T, d_noise), scale (T,),
                  rotation (T, 3, 3), translation (T, 3) (model -> photo frame, pixels),
                  landmark_rms (T,) pixels (NaN where invalid), frame_index (T,), time (T,) s,
                  valid (T,) bool, model_id, model, source (see :class:`TrackCodes`)
    track.json    summary: model_id, model, source, frames, valid frames, options, timings, files
    overlay.mp4   the fitted mesh rendered over the frames (``overlay=False``: not written)
    meshes/frame_<index>.ply   every frame's mesh in the photo frame (``meshes=True``)

Convention:
    * The photo frame of :mod:`fitface.landmarks.lift_photo` (pixels: X right, Y up = -row, Z to
      the viewer): a mesh ``v`` projects onto its frame at pixel ``(X, -Y)``.
    * ``T`` counts the selected frames (after ``fps``/``start``/``end``), valid or not.
    * Errors: an unreadable or empty video raises :class:`~fitface.errors.InputError` (exit
      code 2); a video without any face :class:`~fitface.errors.NoFaceError` (exit code 3); in
      both cases nothing is written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fitface.api.inputs import PathLike, load_fit_model, model_reference
from fitface.errors import InputError, NoFaceError

#: Adam steps of the sequence fit, from the mean face. Measured on the rendered 72-frame test
#: sequence (tests/test_track.py, ict): 100, 150 and 250 steps give the same vertex error.
TRACK_STEPS = 100
#: Default ``mu_exp`` of ``mu sum_t ||z_exp(t+1) - z_exp(t)||^2`` (model unit, against squared
#: pixel residuals divided by the scale, i.e. mm^2 summed over ~400 points). On the test sequence
#: (100 steps; mu_exp, mu_pose): (3, 0) vertex RMSE 2.40 mm, mean landmark acceleration
#: 0.76 px/frame^2; (3, 4) 2.40 mm, 0.58; (10, 16) 2.42 mm, 0.56; (3, 64) 2.52 mm, 0.56; every frame
#: fitted alone (400 steps) 2.47 mm, 0.78. The jitter is mostly the pose's.
TRACK_SMOOTHNESS = 10.0
#: The overlay is rendered at this fraction of the frame size, then scaled up (speed).
OVERLAY_SCALE = 0.5
#: Vertices of the overlay's display mesh (the model's mesh decimated once, a row selection of
#: its vertices: rendering 18,460 ICT triangles costs ~28 ms a frame at half size, 3,000
#: vertices ~15 ms).
OVERLAY_VERTICES = 3000
#: Opacity of the mesh in the overlay.
OVERLAY_ALPHA = 0.6
#: Albedo of the fitted mesh in the overlay (a light blue, told apart from skin).
OVERLAY_ALBEDO = (0.55, 0.78, 0.98)
#: Keys of codes.npz (every one is written).
NPZ_KEYS = ("identity", "expression", "noise", "scale", "rotation", "translation", "landmark_rms", "frame_index",
            "time", "valid", "model_id", "model", "source")


@dataclass
class TrackCodes:
    """The codes of a tracked sequence (``codes.npz``).

    Attributes:
        identity: (d_id,) float64, one code for the whole sequence.
        expression: (T, d_exp) float64 per frame. noise: (T, d_noise) float64 per frame
            ((T, 0) for a model without a noise block).
        scale: (T,) float64 pixels per model unit. rotation: (T, 3, 3) float64.
        translation: (T, 3) float64 pixels: ``x_photo = scale R x_model + translation``.
        landmark_rms: (T,) float64 pixels over X, Y (NaN in invalid frames).
        frame_index: (T,) int64 source frame index. time: (T,) float64 seconds.
        valid: (T,) bool, a face was found and fitted (False: interpolated).
        model_id: the model's id. model: its built-in name or file (None in memory).
        source: the video file or folder tracked.
    """

    identity: np.ndarray
    expression: np.ndarray
    noise: np.ndarray
    scale: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    landmark_rms: np.ndarray
    frame_index: np.ndarray
    time: np.ndarray
    valid: np.ndarray
    model_id: str
    model: str | None = None
    source: str | None = None

    def __len__(self) -> int:
        return int(self.expression.shape[0])

    def z(self, layout) -> np.ndarray:
        """(T, D) float64 full codes in ``layout`` order."""
        t = len(self)
        parts = {"identity": np.repeat(self.identity[None], t, axis=0), "expression": self.expression,
                 "noise": self.noise}
        return np.concatenate([parts[n] for n in layout.names], axis=1)

    def transform(self):
        """:class:`fitface.fitting.similarity.Similarity` (T): model -> photo frame."""
        from fitface.fitting.similarity import Similarity

        return Similarity(self.scale, self.rotation, self.translation)

    def save(self, path: PathLike) -> None:
        """Write ``codes.npz`` atomically (uncompressed, no pickle)."""
        from fitface.io.atomic import atomic_path

        arrays = {k: np.asarray(getattr(self, k)) for k in NPZ_KEYS[:10]}
        arrays.update({"model_id": np.asarray(self.model_id), "model": np.asarray(self.model or ""),
                       "source": np.asarray(self.source or "")})
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)


def read_track_codes(path: PathLike) -> TrackCodes:
    """Read and check a ``codes.npz`` of :func:`track`.

    Raises:
        InputError: missing file, not an npz, a missing key, inconsistent shapes (one line).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError("no such file", p)
    with open(p, "rb") as fh:
        if fh.read(4) != b"PK\x03\x04":  # an .npz is a zip archive; np.load would read anything else as a pickle
            raise InputError("not a readable codes.npz (not a zip archive)", p)
    try:
        with np.load(p, allow_pickle=False) as d:
            data = {k: d[k] for k in d.files}
    except (OSError, ValueError, EOFError) as exc:
        from fitface.errors import one_line

        raise InputError(f"not a readable codes.npz ({one_line(exc)})", p) from None
    missing = [k for k in NPZ_KEYS if k not in data]
    if missing:
        raise InputError(f"not a tracked sequence's codes.npz: missing {', '.join(missing)}", p)
    t = data["expression"].shape[0] if data["expression"].ndim == 2 else -1
    shapes = {"identity": (None,), "expression": (t, None), "noise": (t, None), "scale": (t,), "rotation": (t, 3, 3),
              "translation": (t, 3), "landmark_rms": (t,), "frame_index": (t,), "time": (t,), "valid": (t,)}
    for k, shape in shapes.items():
        a = data[k]
        if t < 0 or a.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, a.shape)):
            raise InputError(f"{k}: shape {a.shape} does not fit a sequence of {max(t, 0)} frames", p)
    return TrackCodes(data["identity"].astype(np.float64), data["expression"].astype(np.float64),
                      data["noise"].astype(np.float64), data["scale"].astype(np.float64),
                      data["rotation"].astype(np.float64), data["translation"].astype(np.float64),
                      data["landmark_rms"].astype(np.float64), data["frame_index"].astype(np.int64),
                      data["time"].astype(np.float64), data["valid"].astype(bool), str(data["model_id"]),
                      str(data["model"]) or None, str(data["source"]) or None)


@dataclass
class TrackResult:
    """Result of :func:`track`.

    Attributes:
        codes: :class:`TrackCodes`.
        faces: (F, 3) int64 the model's triangles.
        summary: the ``track.json`` document.
        files: name -> path of every file written.
        seconds: wall time; timings: wall seconds per stage (open, mediapipe, decode, fit,
            overlay, write, total); cpu_timings: the same in CPU seconds (all threads).
    """

    codes: TrackCodes
    faces: np.ndarray
    summary: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    cpu_timings: dict[str, float] = field(default_factory=dict)

    def vertices(self, model: Any = None, frames: slice | np.ndarray | None = None) -> np.ndarray:
        """(T', V, 3) float64 meshes in the photo frame (pixels) of the frames selected."""
        dec = load_fit_model(model if model is not None else self.codes.model)
        return sequence_vertices(dec, self.codes, frames)


def sequence_vertices(dec, codes: TrackCodes, frames=None, photo_frame: bool = True) -> np.ndarray:
    """(T', V, 3) float64 meshes of a tracked sequence (photo frame, or model frame and unit)."""
    sel = np.arange(len(codes)) if frames is None else np.arange(len(codes))[frames]
    z = codes.z(dec.layout)[sel]  # (T', D)
    v = np.asarray(dec.vertices(z), dtype=np.float64)  # (T', V, 3) model unit
    if not photo_frame:
        return v
    from fitface.fitting.similarity import Similarity

    t = Similarity(codes.scale[sel], codes.rotation[sel], codes.translation[sel])
    return t.apply(v)


def _check_layout(dec) -> None:
    names = dec.layout.names
    if "identity" not in names or "expression" not in names or set(names) - {"identity", "expression", "noise"}:
        raise InputError(f"tracking needs a model with identity and expression codes (and optionally noise); "
                         f"this one has {', '.join(names)}")


def track(
    video: PathLike,
    out_dir: PathLike | None = None,
    *,
    model: Any = None,
    lam: float | None = None,
    smoothness: float = TRACK_SMOOTHNESS,
    pose_smoothness: float | None = None,
    fps: float | None = None,
    start: float | None = None,
    end: float | None = None,
    steps: int | None = None,
    seed: int = 0,
    meshes: bool = False,
    overlay: bool = True,
    mediapipe_model: PathLike | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> TrackResult:
    """Track the largest face of a video (or a folder of frames) and fit it as one sequence.

    Args:
        video: a video file OpenCV reads (mp4, avi, mov, ...) or a folder of frames (name order).
        out_dir: if given, write ``codes.npz``, ``track.json``, ``overlay.mp4`` (unless
            ``overlay=False``) and with ``meshes`` ``meshes/frame_<index>.ply`` (module doc).
        model: built-in name, model file, decoder, or None (the default model).
        lam: eq. 13's ``lambda`` (default :data:`fitface.landmarks.photo_fit.PHOTO_LAMBDA`, 30).
        smoothness: ``mu_exp``, the expression smoothness (:data:`TRACK_SMOOTHNESS`).
        pose_smoothness: ``mu_pose`` (default
            :data:`fitface.fitting.sequence_fit.POSE_SMOOTHNESS`; 0: poses per frame).
        fps, start, end: subsampling and time range (seconds), :func:`fitface.io.video.open_frames`.
        steps: Adam steps (default :data:`TRACK_STEPS`). seed: the loop's seed.
        meshes: write every frame's mesh. overlay: write ``overlay.mp4``.
        mediapipe_model: a ``face_landmarker.task`` file for mediapipe releases without the
            bundled face mesh.
        progress: ``progress(stage, done, total)`` with stage ``"landmarks"``, ``"fit"``,
            ``"overlay"``.

    Returns:
        :class:`TrackResult`.

    Raises:
        InputError: unreadable or empty video, bad options, a model without the needed codes
            or ``"mediapipe"`` set (exit code 2). NoFaceError: no face in any frame (exit code 3).
    """
    from fitface.api.photo_capture import mediapipe_rows
    from fitface.fitting.landmark_fit import FitConfig
    from fitface.fitting.sequence_fit import (
        POSE_SMOOTHNESS,
        fit_sequence_2d,
        interpolate_frames,
        interpolate_similarity,
    )
    from fitface.io.video import open_frames
    from fitface.landmarks.lift_video import lift_frames
    from fitface.landmarks.photo_fit import PHOTO_LAMBDA

    t0 = _now()
    timings: dict[str, np.ndarray] = {}  # stage -> (wall, CPU) seconds
    lam = PHOTO_LAMBDA if lam is None else float(lam)
    pose_smoothness = POSE_SMOOTHNESS if pose_smoothness is None else float(pose_smoothness)
    for name, v in (("--lambda", lam), ("--smoothness", smoothness), ("--pose-smoothness", pose_smoothness)):
        if not (np.isfinite(v) and v >= 0):
            raise InputError(f"{name}: expected a number >= 0, got {v}")
    steps = TRACK_STEPS if steps is None else int(steps)
    if steps < 0:
        raise InputError(f"--steps: expected >= 0, got {steps}")
    src = open_frames(video, fps=fps, start=start, end=end)
    dec = load_fit_model(model)
    _check_layout(dec)
    indices = mediapipe_rows(dec)
    n = len(src)
    timings["open"] = _now() - t0

    # ---- landmarks, frame by frame (decoding interleaved with mediapipe)
    t1 = _now()
    tick = (lambda k: progress("landmarks", k, n)) if progress is not None else None
    lifted = lift_frames((f.image for f in src), indices, mediapipe_model, tick, times=src.times)
    if lifted.points.shape[0] != n:
        raise InputError(f"only {lifted.points.shape[0]} of {n} frames could be decoded", src.path)
    timings["mediapipe"] = np.array([lifted.seconds, lifted.cpu_seconds])
    timings["decode"] = _now() - t1 - timings["mediapipe"]
    valid = lifted.valid
    if not valid.any():
        raise NoFaceError(f"no face found in any of the {n} frames", src.path)

    # ---- one sequence fit of the valid frames
    t2 = _now()
    cfg = FitConfig(lam=lam, steps=steps, seed=int(seed), init="zero", sequence_smoothness=float(smoothness),
                    history_every=0)
    fit_tick = (lambda k, total: progress("fit", k, total)) if progress is not None else None
    try:
        runs = np.cumsum(np.r_[0, np.diff(np.flatnonzero(valid)) > 1])  # (T_valid,) runs without a gap
        res = fit_sequence_2d(dec, lifted.points[valid], "mediapipe", cfg, pose_smoothness, runs=runs,
                              progress=fit_tick)
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
        from fitface.errors import one_line

        raise InputError(f"the sequence fit failed: {one_line(exc)}", src.path) from None
    if not (np.isfinite(res.z).all() and np.isfinite(res.transform.scale).all()):
        raise InputError("the sequence fit diverged (non-finite codes)", src.path)
    times = src.times
    lay = dec.layout
    z = interpolate_frames(times, valid, res.z)  # (T, D)
    tr = interpolate_similarity(times, valid, res.transform)
    rms = np.full(n, np.nan)
    rms[valid] = res.rms
    codes = TrackCodes(
        identity=res.z[0, lay.slice("identity")].copy(), expression=z[:, lay.slice("expression")],
        noise=z[:, lay.slice("noise")] if "noise" in lay.names else np.zeros((n, 0)),
        scale=tr.scale, rotation=tr.rotation, translation=tr.translation, landmark_rms=rms,
        frame_index=src.indices.copy(), time=times, valid=valid.copy(), model_id=dec.model_id,
        model=model_reference(dec), source=str(Path(src.path).resolve()))
    timings["fit"] = _now() - t2

    summary: dict[str, Any] = {
        "model_id": dec.model_id, "model": codes.model, "source": codes.source, "source_kind": src.kind,
        "source_fps": src.source_fps, "image_size": list(src.size), "frames": n, "valid_frames": int(valid.sum()),
        "invalid_frames": np.flatnonzero(~valid).tolist(), "start": start, "end": end, "fps": fps,
        "lambda": lam, "smoothness": float(smoothness), "pose_smoothness": pose_smoothness, "steps": steps,
        "landmark_rms_px": {"mean": float(np.nanmean(rms)), "median": float(np.nanmedian(rms)),
                            "max": float(np.nanmax(rms))},
        "frame": "photo (pixels: X right, Y up = -row, Z to the viewer; projects to pixel (X, -Y))",
        "layout": {k: lay.size(k) for k in lay.names},
    }
    result = TrackResult(codes, np.asarray(dec.faces), summary)
    if out_dir is not None:
        _write(dec, src, result, Path(out_dir), meshes, overlay, timings, progress)
    timings["total"] = _now() - t0
    result.seconds = float(timings["total"][0])
    result.timings = {k: float(v[0]) for k, v in timings.items()}
    result.cpu_timings = {k: float(v[1]) for k, v in timings.items()}
    result.summary["seconds"] = {k: round(v, 4) for k, v in result.timings.items()}
    result.summary["cpu_seconds"] = {k: round(v, 4) for k, v in result.cpu_timings.items()}
    if out_dir is not None:  # the summary last: it records every other file and the timings
        from fitface.io.atomic import write_text

        result.files["summary"] = Path(out_dir) / "track.json"
        result.summary["files"] = {k: str(v) for k, v in result.files.items()}
        write_text(result.files["summary"], json.dumps(result.summary, indent=2) + "\n")
    return result


def _write(dec, src, result: TrackResult, out: Path, meshes: bool, overlay: bool, timings: dict[str, np.ndarray],
           progress) -> None:
    """codes.npz, the meshes and the overlay (track.json is written by the caller)."""
    codes = result.codes
    n = len(codes)
    if overlay:
        t = _now()
        from fitface.io.video import write_video

        path = out / "overlay.mp4"
        frames = overlay_frames(dec, src, codes, progress)
        write_video(path, frames, src.source_fps if src.kind == "video" and len(src) == src.indices[-1] + 1
                    else _effective_fps(codes.time))
        result.files["overlay"] = path
        timings["overlay"] = _now() - t
    t = _now()
    codes.save(out / "codes.npz")
    result.files["codes"] = out / "codes.npz"
    if meshes:
        from fitface.io.mesh import save_mesh

        folder = out / "meshes"
        for a in range(0, n, 64):
            verts = sequence_vertices(dec, codes, slice(a, a + 64))
            for k, v in enumerate(verts):
                save_mesh(folder / f"frame_{int(codes.frame_index[a + k]):06d}.ply", v, result.faces)
        result.files["meshes"] = folder
    timings["write"] = _now() - t


def _now() -> np.ndarray:
    """(2,) float64 ``(wall, CPU)`` clocks in seconds (CPU: every thread of the process)."""
    return np.array([time.perf_counter(), time.process_time()])


def _effective_fps(times: np.ndarray) -> float:
    """Frames per second of a subsampled sequence (median spacing; 30 for one frame)."""
    if times.shape[0] < 2:
        return 30.0
    return float(1.0 / max(np.median(np.diff(times)), 1e-6))


def display_mesh(dec, target: int = OVERLAY_VERTICES) -> tuple[np.ndarray, np.ndarray]:
    """``(kept (V',) int64 vertex indices, faces (F', 3) int64 on them)``: the model's mean face
    decimated (quadric edge collapse, :func:`fitface.models.mesh_sampling.decimate_mesh`) for
    display; the full mesh when it has no more than ``target`` vertices or cannot be decimated."""
    faces = np.asarray(dec.faces, dtype=np.int64)
    n = dec.num_vertices
    if n <= target:
        return np.arange(n), faces
    from fitface.models.mesh_sampling import decimate_mesh

    mean = np.asarray(dec.vertices(np.zeros((1, dec.latent_dim))), dtype=np.float64)[0]
    try:
        return decimate_mesh(mean, faces, target)
    except ValueError:
        return np.arange(n), faces


def overlay_frames(dec, src, codes: TrackCodes, progress=None, scale: float = OVERLAY_SCALE,
                   alpha: float = OVERLAY_ALPHA, chunk: int = 32):
    """Yield every frame with its fitted mesh rendered over it ((H, W, 3) uint8 RGB).

    The mesh, decimated once to :data:`OVERLAY_VERTICES` vertices (:func:`display_mesh`), is
    rendered shaded (:func:`fitface.geometry.render.render_shaded`) at ``scale`` of the frame
    size and scaled up (bilinear, soft mask edge); invalid frames are drawn with a red border
    (their codes are interpolated).
    """
    import cv2

    from fitface.geometry.camera import Camera
    from fitface.geometry.render import render_shaded

    keep, tri = display_mesh(dec)

    h, w = src.size
    hs, ws = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    cam = Camera(np.eye(3), ws / w, np.zeros(2), hs, ws)  # photo frame -> the reduced image
    n = len(codes)
    verts = None
    for k, frame in enumerate(src):
        if k % chunk == 0:
            verts = sequence_vertices(dec, codes, slice(k, k + chunk))[:, keep]  # (chunk, V', 3) photo frame
        r = render_shaded(verts[k % chunk], tri, camera=cam, albedo=OVERLAY_ALBEDO, cull_backfaces=True)
        img = frame.image
        out = img.copy()
        rows, cols = np.flatnonzero(r.mask.any(1)), np.flatnonzero(r.mask.any(0))
        if rows.size:  # blend inside the mesh's box only (scaled up, one pixel of slack)
            y0, y1 = max(int(rows[0] / scale) - 2, 0), min(int((rows[-1] + 1) / scale) + 2, h)
            x0, x1 = max(int(cols[0] / scale) - 2, 0), min(int((cols[-1] + 1) / scale) + 2, w)
            mesh = cv2.resize(r.image, (w, h), interpolation=cv2.INTER_LINEAR)[y0:y1, x0:x1].astype(np.float32)
            m = cv2.resize(r.mask.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)[y0:y1, x0:x1, None]
            m *= alpha
            out[y0:y1, x0:x1] = np.round(img[y0:y1, x0:x1] * (1 - m) + mesh * m).astype(np.uint8)
        if not codes.valid[k]:
            cv2.rectangle(out, (1, 1), (w - 2, h - 2), (230, 40, 40), 3)
        if progress is not None:
            progress("overlay", k + 1, n)
        yield out


__all__ = ["NPZ_KEYS", "OVERLAY_SCALE", "OVERLAY_VERTICES", "display_mesh", "TRACK_SMOOTHNESS", "TRACK_STEPS", "TrackCodes", "TrackResult",
           "overlay_frames", "read_track_codes", "sequence_vertices", "track"]
