"""Retargeting a tracked sequence: B performing the expressions of a video
(``fitface retarget --expression OUT/codes.npz --identity B/codes.json -o ANIM_DIR``).

Frame ``t`` is ``G(z_id(B), z_exp(A, t), z_noise(B))`` (``mode="replace"``) or
``G(z_id(B), z_exp(A, t) + z_exp(B), z_noise(B))`` (``"add"``), as the single-face
:func:`fitface.api.retarget`, with A the tracked sequence (:func:`fitface.api.track`).

Files in ``ANIM_DIR`` (each written atomically, all computed before the first is written):

    vertices.npy       (T, V, 3) float32 meshes, B's capture frame and unit (``model_frame``:
                       the model's frame and unit)
    faces.npy          (F, 3) int64 the model's triangles
    retarget.json      model_id, model, unit, mode, sources, frames, frame_index, time, files
    preview.mp4        side by side: the source frame (or, when the video is gone, the tracked
                       mesh) and B's mesh, at the source's frame rate (``preview=False``: none)
    frames/frame_<index>.ply   one mesh per frame (``ply=True``)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fitface.api.inputs import PathLike, codes_of, model_for_codes, model_reference
from fitface.errors import InputError

#: Height in pixels of the preview video's panels.
PREVIEW_HEIGHT = 360


@dataclass
class SequenceRetargetResult:
    """Result of :func:`retarget_sequence`.

    Attributes:
        vertices: (T, V, 3) float64 meshes (B's frame and unit, or the model's).
        faces: (F, 3) int64.
        unit: the meshes' unit. frame_index: (T,) int64. time: (T,) float64 seconds.
        summary: the ``retarget.json`` document. files: name -> path written.
    """

    vertices: np.ndarray
    faces: np.ndarray
    unit: str | None
    frame_index: np.ndarray
    time: np.ndarray
    summary: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)


def is_sequence_codes(obj: Any) -> bool:
    """True for a ``codes.npz`` path or a :class:`fitface.api.track.TrackCodes`."""
    from fitface.api.track import TrackCodes

    return isinstance(obj, TrackCodes) or (isinstance(obj, (str, os.PathLike)) and Path(obj).suffix.lower() == ".npz")


def retarget_sequence(
    expression: Any,
    identity: Any,
    out_dir: PathLike | None = None,
    *,
    model: Any = None,
    mode: str = "replace",
    model_frame: bool = False,
    ply: bool = False,
    preview: bool = True,
) -> SequenceRetargetResult:
    """Move a tracked sequence's expressions onto the face of capture B (module doc).

    Args:
        expression: the tracked sequence: ``codes.npz`` of :func:`fitface.api.track` (path or
            :class:`fitface.api.track.TrackCodes`).
        identity: B's codes.json (path or :class:`fitface.io.codes.Codes`) from the same model.
        out_dir: if given, write the files of the module doc there.
        model: the model of both (None: the one the codes record, checked by ``model_id``).
        mode: ``"replace"`` or ``"add"``. model_frame: meshes in the model frame and unit.
        ply: also write one PLY per frame. preview: also write ``preview.mp4``.

    Returns:
        :class:`SequenceRetargetResult`.

    Raises:
        InputError: unreadable files, codes of different models, a bad ``mode``.
    """
    from fitface.api.track import TrackCodes, read_track_codes
    from fitface.fitting.similarity import Similarity
    from fitface.io.codes import Codes

    if mode not in ("replace", "add"):
        raise InputError(f"--mode: expected replace or add, got {mode!r}")
    seq = expression if isinstance(expression, TrackCodes) else read_track_codes(expression)
    b = codes_of(identity, "--identity")
    wa = expression if isinstance(expression, (str, os.PathLike)) else None
    wb = identity if isinstance(identity, (str, os.PathLike)) else None
    a_codes = Codes(seq.model_id, {"identity": seq.identity.tolist()}, model=seq.model)  # A's model, for the check
    dec = model_for_codes([(a_codes, wa or "--expression"), (b, wb or "--identity")], model)
    lay = dec.layout
    if seq.expression.shape[1] != lay.size("expression"):
        raise InputError(f"expression codes have {seq.expression.shape[1]} numbers, the model expects "
                         f"{lay.size('expression')}", wa)
    t = len(seq)
    parts = {}
    for blk in lay.names:
        if blk not in b.codes:
            raise InputError(f"no {blk!r} code in the codes file", wb)
        code = b.code(blk)
        if code.shape != (lay.size(blk),):
            raise InputError(f"{blk} code has {code.shape[0]} numbers, the model expects {lay.size(blk)}", wb)
        parts[blk] = np.repeat(code[None], t, axis=0)  # (T, d)
    parts["expression"] = seq.expression + (parts["expression"] if mode == "add" else 0.0)
    z = np.concatenate([parts[n] for n in lay.names], axis=1)  # (T, D)
    verts = np.asarray(dec.vertices(z), dtype=np.float64)  # (T, V, 3) model frame and unit
    unit, transform = dec.unit, None
    if not model_frame and b.transform is not None:
        tb = Similarity.from_json(b.transform).repeat(t)  # B's one transform, for every frame
        verts = np.asarray(tb.apply(verts), dtype=np.float64)
        unit, transform = (b.unit or dec.unit), b.transform
    faces = np.asarray(dec.faces, dtype=np.int64)
    summary = {"model_id": dec.model_id, "model": model_reference(dec), "unit": unit, "transform": transform,
               "mode": mode, "expression_from": None if wa is None else str(wa),
               "identity_from": None if wb is None else str(wb), "source": seq.source, "frames": t,
               "frame_index": seq.frame_index.tolist(), "time": seq.time.tolist(), "valid": seq.valid.tolist(),
               "frame": "model" if model_frame or b.transform is None else "identity capture (B)"}
    res = SequenceRetargetResult(verts, faces, unit, seq.frame_index, seq.time, summary)
    if out_dir is not None:
        _write(dec, seq, res, Path(out_dir), ply, preview)
    return res


def _save_npy(path: Path, array: np.ndarray) -> None:
    from fitface.io.atomic import atomic_path

    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)


def _write(dec, seq, res: SequenceRetargetResult, out: Path, ply: bool, preview: bool) -> None:
    from fitface.io.atomic import write_text

    frames = list(preview_frames(dec, seq, res)) if preview else None  # computed before writing
    _save_npy(out / "vertices.npy", res.vertices.astype(np.float32))
    _save_npy(out / "faces.npy", res.faces)
    res.files.update({"vertices": out / "vertices.npy", "faces": out / "faces.npy"})
    if ply:
        from fitface.io.mesh import save_mesh

        for i, v in zip(res.frame_index, res.vertices):
            save_mesh(out / "frames" / f"frame_{int(i):06d}.ply", v, res.faces)
        res.files["frames"] = out / "frames"
    if frames is not None:
        from fitface.io.video import write_video

        write_video(out / "preview.mp4", frames, _fps(seq.time))
        res.files["preview"] = out / "preview.mp4"
    res.files["summary"] = out / "retarget.json"
    res.summary["files"] = {k: str(v) for k, v in res.files.items()}
    write_text(res.files["summary"], json.dumps(res.summary, indent=2) + "\n")


def _fps(times: np.ndarray) -> float:
    return 30.0 if times.shape[0] < 2 else float(1.0 / max(np.median(np.diff(times)), 1e-6))


def _source_frames(seq):
    """The source's frames of the sequence (RGB), or None when it cannot be read again."""
    if not seq.source:
        return None
    from fitface.io.video import open_frames

    try:
        src = open_frames(seq.source)
        if int(seq.frame_index.max()) >= int(src.indices.max()) + 1:
            return None
        return src.frames(seq.frame_index)
    except InputError:
        return None


def preview_frames(dec, seq, res: SequenceRetargetResult, height: int = PREVIEW_HEIGHT):
    """Yield (height, W, 3) uint8 RGB frames: the source (or the tracked mesh) beside B's mesh.

    B's meshes are rendered frontally (shaded, the project's renderer) through one camera framing
    every frame, in the meshes' own frame.
    """
    import cv2

    from fitface.api.track import sequence_vertices
    from fitface.geometry.camera import frame_mesh
    from fitface.geometry.render import render_shaded

    src = _source_frames(seq)
    pts = res.vertices[:, ::7].reshape(-1, 3)  # a subsample of every frame's vertices
    cam_b = frame_mesh(pts, (height, height), margin=0.06)
    cam_a = None
    for k in range(len(seq)):
        if src is not None:
            left = next(src).image
            left = cv2.resize(left, (max(1, round(left.shape[1] * height / left.shape[0])), height),
                              interpolation=cv2.INTER_AREA)
        else:
            va = sequence_vertices(dec, seq, slice(k, k + 1), photo_frame=False)[0]
            if cam_a is None:
                cam_a = frame_mesh(va, (height, height), margin=0.06)
            left = render_shaded(va, dec.faces, camera=cam_a, cull_backfaces=True).image
        right = render_shaded(res.vertices[k], res.faces, camera=cam_b, cull_backfaces=True, background=(32, 32, 32)).image
        yield np.concatenate([left, right], axis=1)


__all__ = ["PREVIEW_HEIGHT", "SequenceRetargetResult", "is_sequence_codes", "preview_frames", "retarget_sequence"]
