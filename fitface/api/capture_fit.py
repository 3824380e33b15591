"""Fitting one capture: :func:`fit` and its :class:`FitResult` (numpy; never imports torch).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fitface.api.inputs import (
    DEFAULT_LAMBDA,
    PathLike,
    PreparedCapture,
    factor_code,
    fit_error,
    load_fit_model,
    mesh_suffix,
    model_reference,
    parse_assignments,
    prepare_capture,
    warn_unit,
)
from fitface.errors import InputError


# ------------------------------------------------------------------------------ results
@dataclass
class FitResult:
    """One fitted capture.

    Attributes:
        name: the capture's name (landmark file stem).
        vertices: (V, 3) float64, the fitted mesh in the capture's frame and unit.
        faces: (F, 3) int64, the model's triangles.
        codes: the :class:`fitface.io.codes.Codes` written to ``codes.json``.
        targets: (L, 3) float64 target landmarks (capture frame and unit).
        fitted_landmarks: (L, 3) float64 the fitted model's landmarks (capture frame and unit).
        transform: :class:`fitface.fitting.similarity.Similarity` (batch of one), model -> capture
            (unit conversion included).
        files: name -> path of every file written (empty when nothing was written).
        seconds: wall time of the fit.
        photo: for a face of a photo, where it came from
            (:class:`fitface.api.photo_capture.PhotoFace`: the photo, face index, bounding box,
            image size, depth mode); None for a 3D capture. A photo fit is in the photo frame
            (pixels: ``unit`` is None, ``landmark_rms`` in pixels).
    """

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    codes: Any
    targets: np.ndarray
    fitted_landmarks: np.ndarray
    transform: Any
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    photo: Any = None

    @property
    def landmark_rms(self) -> float:
        """RMS landmark distance in the capture's unit."""
        return float(self.codes.extra["landmark_rms"])

    @property
    def unit(self) -> str:
        return self.codes.unit

    @property
    def z(self) -> np.ndarray:
        """(D,) float64 latent code, layout order."""
        return np.concatenate([np.asarray(v, dtype=np.float64) for v in self.codes.codes.values()])

    def summary(self) -> dict[str, Any]:
        """The JSON summary (``--json``): the codes.json document plus ``files``."""
        from fitface.io.codes import FORMAT_VERSION, to_json

        doc = {"format_version": FORMAT_VERSION, "model_id": self.codes.model_id}
        if self.codes.model is not None:
            doc["model"] = self.codes.model
        doc.update({"unit": self.codes.unit, "codes": self.codes.codes, "transform": self.codes.transform})
        doc.update(self.codes.extra)
        doc["files"] = {k: str(v) for k, v in self.files.items()}
        return to_json(doc, "summary")

    def preview(self, size: int = 384) -> np.ndarray:
        """(size, size, 3) uint8 RGB picture of the fit (see :func:`fitface.preview.fit_preview`); for
        a photo, the fit rendered over the photo (its size)."""
        if self.photo is not None:
            from fitface.landmarks.lift_photo import fit_overlay

            return fit_overlay(self.photo.load_image(), self.vertices, self.faces)
        from fitface.preview import fit_preview

        return fit_preview(self.vertices, self.faces, self.targets, self.fitted_landmarks,
                           self.transform.rotation[0], self.unit, self.landmark_rms, size, self.name)




# ------------------------------------------------------------------------------ engine
#: Scale-mismatch check (captures whose unit is only inferred, under ``scale="auto"``): the capture
#: is also fitted with a free scale, and that fit is kept when it lowers the fit's own objective
#: (eq. 13: squared residuals plus lambda ||z||^2, model unit) below this fraction of the rigid
#: fit's (48 held-out ICT faces at their true size: p5 0.73-0.81 over ict / ict-linear and lambda
#: 1 / 10; at 1.3x: p95 0.42-0.45; ``benchmarks/bench_scale_mismatch.py --identities 4``) ...
SCALE_MISMATCH_LOSS_RATIO = 0.6
#: ... with a scale that differs from the unit's by more than this fraction.
SCALE_MISMATCH_MIN_DEVIATION = 0.05


def engine_fit(dec, caps: list[PreparedCapture], lam, steps, restarts, seed, freeze_codes, sequence, smoothness,
               progress=None):
    """Run the landmark fit (and nothing else) for captures of one landmark set (3D captures, or
    faces of photos: their ``depth`` chooses the data term).

    Each capture's ``fit_scale`` chooses a similarity or a rigid fit in the model unit (its
    unit's scale); captures of both kinds are fitted in two calls (a sequence: one, with a scale
    if any frame needs one). Rigid captures whose unit was only inferred are then checked for a
    scale mismatch (:func:`check_scale_mismatch`).

    Returns (z (B, D), T (B) Similarity model -> model-unit capture frame)."""
    from fitface.fitting.similarity import Similarity

    free = np.array([c.fit_scale for c in caps], dtype=bool)  # (B,)
    if not sequence and 0 < free.sum() < len(caps):
        parts = [np.flatnonzero(free), np.flatnonzero(~free)]
        fits = [engine_fit(dec, [caps[i] for i in idx], lam, steps, restarts, seed, freeze_codes, False, smoothness,
                           progress) for idx in parts]
        order = np.argsort(np.concatenate(parts))  # back to the captures' order
        z = np.concatenate([f[0] for f in fits])[order]
        return z, Similarity.stack([f[1] for f in fits])[order]
    if sequence and free.any():
        for c in caps:  # one joint fit: every frame gets the scale (and records it as fitted)
            c.fit_scale = True
    cfg = _fit_config(dec, caps, lam, steps, restarts, seed, freeze_codes, sequence, smoothness, bool(free.any()))
    res = _run_engine(dec, caps, cfg, progress)
    z, t = np.asarray(res.z, dtype=np.float64), res.transform
    if not sequence and not free.any() and any(c.scale_check for c in caps):
        z, t = check_scale_mismatch(dec, caps, cfg, res)
    return z, t


def _fit_config(dec, caps, lam, steps, restarts, seed, freeze_codes, sequence, smoothness, with_scale: bool):
    from fitface.fitting.landmark_fit import FitConfig

    kw: dict[str, Any] = {"lam": float(lam), "seed": int(seed), "freeze": dict(freeze_codes),
                          "with_scale": with_scale}
    if steps is not None:
        kw["steps"] = int(steps)
    if restarts is not None:
        kw["restarts"] = int(restarts)
    if sequence:  # one subject: every frame shares the identity block; expressions are smoothed
        kw["sequence_smoothness"] = float(smoothness)
        if "identity" in dec.layout.names and "identity" not in freeze_codes:
            kw["shared"] = np.zeros(len(caps), dtype=np.int64)
    elif caps and all(c.init_row is not None for c in caps):
        kw["init_rows"] = np.array([c.init_row for c in caps], dtype=np.int64)
    return FitConfig(**kw)


def _run_engine(dec, caps, cfg, progress=None):
    """:func:`fit_landmarks` (or the photo engine) on the captures' targets in the model unit."""
    from fitface.fitting.landmark_fit import fit_landmarks

    targets = np.stack([c.targets * c.to_model for c in caps])  # (B, L, 3) model unit, capture frame
    if caps[0].photo is not None:  # 2D landmarks under a camera, or 3D under weak perspective
        from fitface.landmarks.photo_fit import fit_photo_points

        return fit_photo_points(dec, targets, caps[0].set_name, cfg, caps[0].photo.depth, progress=progress)
    return fit_landmarks(dec, targets, caps[0].set_name, cfg, progress=progress)


def check_scale_mismatch(dec, caps: list[PreparedCapture], cfg, rigid) -> tuple[np.ndarray, Any]:
    """Keep a fitted scale where an inferred unit's rigid fit is clearly the wrong size.

    A capture whose unit is only inferred (no ``--unit``, none in the file) is fitted rigidly at
    the unit's scale. When its true size differs (photogrammetry, a tracker's own units), the
    identity code stretches to cover the size: the landmarks still fit, but the face is wrong
    (issue #28's capture at 1.3x: landmark RMS 1.16 mm, vertex error 3.77 mm against 2.18 mm with
    a fitted scale).

    Rule: the captures with ``scale_check`` are fitted again with a free scale (same options and
    seed; a warm start from the rigid codes stays in the stretched identity's basin). A capture
    keeps the fitted scale when both
        * the fit's objective (eq. 13, model unit) drops below :data:`SCALE_MISMATCH_LOSS_RATIO`
          of the rigid fit's, and
        * the scale differs from the unit's by more than :data:`SCALE_MISMATCH_MIN_DEVIATION`;
    it then records ``scale_source: "fitted (scale mismatch)"`` and warns once (naming --unit
    and --scale). A known unit (argument or file) is never checked; a sequence is not checked.
    The check doubles the engine's work for such captures only. Calibrated on held-out ICT faces
    (``benchmarks/bench_scale_mismatch.py``): at the true size it never fires; at 1.3x it fires on
    every capture and lowers the median vertex error from 2.91 to 2.14 mm (ict-linear, lambda 1).

    Args:
        caps: the captures of ``rigid`` (all rigid), B of them. cfg: the rigid fit's config.
        rigid: its :class:`fitface.fitting.landmark_fit.LandmarkFitResult`.

    Returns:
        (z (B, D), T (B)): the rigid results with the mismatched captures' replaced.
    """
    from dataclasses import replace

    z = np.array(rigid.z, dtype=np.float64)  # (B, D)
    t = rigid.transform
    idx = np.flatnonzero([c.scale_check for c in caps])
    rows = None if cfg.init_rows is None else np.asarray(cfg.init_rows)[idx]  # the subset's own starts
    free = _run_engine(dec, [caps[i] for i in idx], replace(cfg, with_scale=True, init_rows=rows))
    ratio = np.asarray(free.loss, np.float64) / np.maximum(np.asarray(rigid.loss, np.float64)[idx], 1e-300)
    scale = np.asarray(free.transform.scale, np.float64).reshape(-1)  # (b,) model unit -> model unit: 1 = the unit
    take = (ratio < SCALE_MISMATCH_LOSS_RATIO) & (np.abs(scale - 1.0) > SCALE_MISMATCH_MIN_DEVIATION)
    if not take.any():
        return z, t
    from fitface.fitting.similarity import Similarity

    parts = [t[k] for k in range(len(caps))]
    for j in np.flatnonzero(take):
        i, c = int(idx[j]), caps[int(idx[j])]
        z[i] = np.asarray(free.z[j], dtype=np.float64)
        parts[i] = free.transform[int(j)]
        c.fit_scale = True
        c.scale_mismatch = (
            f"{c.landmarks_path or c.name}: the landmarks are {scale[j]:.3g}x the size of a face in the inferred "
            f"unit {c.unit}: fitted that scale (objective {ratio[j]:.2f}x the rigid fit's); pass --unit to fix "
            f"the unit, or --scale unit / --scale free to choose")
    return z, Similarity.stack(parts)


def engine_refine(dec, cap: PreparedCapture, z, transform, lam, seed):
    """Robust surface refinement of one capture against its scan.

    Works in the model unit (scan and landmarks pre-scaled by ``cap.to_model``); returns
    (z (1, D), T (1) model -> model-unit capture frame, surface statistics in the model unit)."""
    from fitface.fitting.surface_refine import SurfaceRefineConfig, refine_surface

    pts = np.asarray(cap.scan.vertices, dtype=np.float64) * cap.to_model  # (P, 3) model unit
    cfg = SurfaceRefineConfig(lam=float(lam), seed=int(seed), with_scale=cap.fit_scale)
    res = refine_surface(dec, z, transform, pts, cfg, landmark_targets=cap.targets * cap.to_model,
                         landmark_set=cap.set_name)
    d = np.asarray(res.distances, dtype=np.float64)  # (P,) model unit
    stats = {
        "points_used": int(d.shape[0]),
        "median": float(np.median(d)),
        "mean": float(d.mean()),
        "p90": float(np.percentile(d, 90)),
        "inlier_rms": float(res.inlier_rms),
        "inlier_fraction": float(np.mean(res.inliers)),
    }
    return np.asarray(res.z, dtype=np.float64).reshape(1, -1), res.transform, stats


def fit_result(dec, name: str, set_name: str, z: np.ndarray, to_capture, targets: np.ndarray, unit: str | None,
               extra: dict[str, Any], decode: bool = True, planar: bool = False) -> FitResult:
    """Express one fit in the capture's frame: mesh, landmarks, residuals and :class:`Codes`.

    Args:
        dec: the decoder. name: the capture's name. set_name: the landmark set fitted.
        z: (D,) or (1, D) latent code.
        to_capture: :class:`~fitface.fitting.similarity.Similarity` (batch of one), model -> capture
            frame and unit.
        targets: (L, 3) target landmarks, capture frame and unit.
        unit: the capture's unit (None for a photo's pixel frame).
        extra: further codes.json keys (``lambda``, ``steps``, sources, ...); None values are dropped.
        decode: also decode the full mesh (batches decode all meshes at once instead).
        planar: residuals in x, y only (photo fits in 2D: depth is not fitted).

    Raises:
        InputError: the fit diverged (non-finite codes or transform).
    """
    from fitface.io.codes import Codes

    z = np.asarray(z, dtype=np.float64).reshape(1, -1)  # (1, D)
    rows = dec.landmark_rows(dec.landmark_sets[set_name])
    fitted = to_capture.apply(dec.points(z, rows))[0]  # (L, 3) capture frame
    if not np.isfinite(z).all() or not np.isfinite(fitted).all() or not np.isfinite(to_capture.scale).all():
        raise InputError(f"{name}: the fit diverged (non-finite codes); check the landmarks")
    residuals = fitted - targets  # (L, 3)
    if planar:
        residuals[:, 2] = 0.0
    dist = np.linalg.norm(residuals, axis=1)  # (L,)
    verts = to_capture.apply(dec.vertices(z))[0] if decode else None  # (V, 3) capture frame
    doc: dict[str, Any] = {
        "landmark_set": set_name,
        "landmark_rms": float(np.sqrt(np.mean(dist**2))),
        "landmark_residuals": residuals,
        "landmark_distances": dist,
        "model_unit": dec.unit,
        "capture": name,
        **extra,
    }
    doc = {k: v for k, v in doc.items() if v is not None}
    parts = dec.layout.split(z[0])
    codes = Codes(dec.model_id, {k: np.asarray(v).tolist() for k, v in parts.items()}, to_capture.to_json(0), unit,
                  doc, model_reference(dec))
    return FitResult(name, verts, np.asarray(dec.faces), codes, targets, fitted, to_capture)


def finish_fit(dec, cap: PreparedCapture, z: np.ndarray, t_model, lam, steps, restarts, seed, surface=None,
               decode: bool = True) -> FitResult:
    """:func:`fit_result` for a capture: converts the engine's model-unit transform to the
    capture's unit and records the fit's options and sources (a photo's face: in pixels, with the
    photo's fields)."""
    from fitface.fitting.similarity import Similarity

    if cap.photo is not None:
        res = fit_result(dec, cap.name, cap.set_name, z, t_model, cap.targets, None,
                         cap.photo.codes_extra(lam, steps, restarts, seed), decode, planar=cap.photo.depth == "2d")
        res.photo = cap.photo
        return res
    to_cap = Similarity.from_scale(1.0 / cap.to_model).compose(t_model)  # model -> capture unit/frame
    extra: dict[str, Any] = {"lambda": float(lam)}
    if surface:
        unitless = ("inlier_fraction", "points_used")
        extra["surface"] = {k: (v if k in unitless else v / cap.to_model) for k, v in surface.items()}
    if cap.size_scale is not None:
        from fitface.units import INFER_TOLERANCE

        extra["unit_inference"] = {"size_scale": float(cap.size_scale), "tolerance": INFER_TOLERANCE}
    extra.update({"steps": steps, "restarts": restarts, "seed": int(seed), "unit_source": cap.unit_source,
                  "scale_source": ("fitted (scale mismatch)" if cap.scale_mismatch else
                                   "fitted" if cap.fit_scale else "unit"),
                  "landmarks_file": None if cap.landmarks_path is None else str(cap.landmarks_path),
                  "scan_file": None if cap.scan_path is None else str(cap.scan_path)})
    res = fit_result(dec, cap.name, cap.set_name, z, to_cap, cap.targets, cap.unit, extra, decode)
    warn_unit(cap)  # only for a capture that was fitted
    return res


# ------------------------------------------------------------------------------ fit
def photo_input(landmarks: Any, scan: Any) -> Any:
    """The photo when the capture is one (``landmarks`` or, without landmarks, ``scan`` a photo
    file), else None; refuses a photo together with a landmark file or a scan."""
    from fitface.api.photo_capture import is_photo_file

    if is_photo_file(landmarks):
        if scan is not None:
            raise InputError("a photo is a capture of its own: pass it without a scan", landmarks)
        return landmarks
    if is_photo_file(scan):
        if landmarks is not None:
            raise InputError("a photo's landmarks come from mediapipe: pass it without --landmarks", scan)
        return scan
    return None


def fit(
    landmarks: Any = None,
    scan: Any = None,
    *,
    model: Any = None,
    lam: float | None = None,
    steps: int | None = None,
    restarts: int | None = None,
    landmark_set: str | None = None,
    unit: str | None = None,
    scale: str = "auto",
    seed: int = 0,
    refine_surface: bool = False,
    freeze: Mapping[str, Any] | Sequence[str] | None = None,
    out_dir: PathLike | None = None,
    format: str | None = None,
    preview: bool = True,
    name: str | None = None,
    depth: str | None = None,
    all_faces: bool = False,
    mediapipe_model: PathLike | None = None,
) -> FitResult | list[FitResult]:
    """Fit the model to one capture: 3D landmarks (optionally refined against its scan), or a photo.

    Args:
        landmarks: a landmark file (any format :mod:`fitface.io.landmarks` reads) or an
            (L, 3) float array, in the capture's frame and unit, ordered as the landmark set;
            or a photo (jpg, png, ... :data:`fitface.landmarks.lift_photo.PHOTO_SUFFIXES`),
            whose faces are lifted with mediapipe and fitted through the model's
            ``"mediapipe"`` set, in the photo frame (pixels).
        scan: optional scan (mesh file path or :class:`fitface.io.mesh.Mesh`); needed for
            ``refine_surface``; also sets the output mesh format. A photo here, without
            ``landmarks``, is the same as a photo as ``landmarks``.
        model: a built-in model name (``"procedural"``, ``"ict"``, ``"ict-linear"``), a model
            file, None for the default built-in model, or a loaded decoder.
        lam: ``lambda`` of eq. 13 (weight of ``||z||^2``); default
            :data:`~fitface.api.inputs.DEFAULT_LAMBDA` (1), for photos
            :data:`~fitface.landmarks.photo_fit.PHOTO_LAMBDA` (30).
        steps, restarts: optimiser steps and random restarts (None = engine defaults); the
            best of the restarts is kept.
        landmark_set: name of the model's landmark set (default: the one matching L).
        unit: the capture's unit (default: the landmark file's, else inferred from the capture's
            size against the model: m, cm or mm, see :func:`fitface.api.inputs.infer_capture_unit`;
            when none fits, the model's unit with a :class:`fitface.errors.FitfaceWarning`).
        scale: ``"auto"`` (default: the model -> capture scale is the unit's wherever the unit
            is known, given, stated or inferred, and fitted where it is only assumed), ``"unit"``
            (always the unit's: a rigid fit) or ``"free"`` (always fitted: a similarity, as
            before 2026-12-04). Recorded as ``scale_source`` (``"unit"`` / ``"fitted"``) in
            codes.json. Photos always fit a scale (the camera's); ``"unit"`` is refused for them.
        seed: random seed (restarts).
        refine_surface: refine against the scan with a robust point-to-surface term.
        freeze: ``{factor: codes.json | Codes | (d,) array}`` blocks kept fixed (e.g. a known
            identity); codes files must come from the same model.
        out_dir: if given, write ``fit.<ext>``, ``codes.json`` and ``preview.png`` there
            (a photo with ``all_faces``: ``out_dir/face<k>/``).
        format: mesh suffix (``ply``, ``obj``, ``off``, ``stl``); default: the scan's, else ply.
        preview: also write the preview picture (for a photo: the fit over the photo).
        name: capture name (default: the landmark file's or the photo's stem).
        depth: photos only: ``"2d"`` (default; mediapipe's x, y under a scaled orthographic
            camera) or ``"3d"`` (also its relative depth, under weak perspective).
        all_faces: photos only: fit every face (largest first) and return a list of results.
        mediapipe_model: photos only: a ``face_landmarker.task`` file for newer mediapipe releases.

    Returns:
        :class:`FitResult` (capture frame and unit; a photo's: pixels, with ``photo`` set), or
        a list of them (one per face) for a photo with ``all_faces``.

    Raises:
        InputError: any bad input (nothing is written), including options a photo cannot take
            (a scan, ``unit``, ``refine_surface``, a set other than ``"mediapipe"``) and photo
            options for 3D landmarks. NoFaceError: no face in the photo (exit code 3).
    """
    from fitface.api.photo_capture import check_capture_options, check_depth, check_photo_options

    t0 = time.perf_counter()
    photo = photo_input(landmarks, scan)
    if photo is None:
        check_capture_options(depth=depth, all_faces=all_faces, mediapipe_model=mediapipe_model)
        if landmarks is None:
            raise InputError("--landmarks is required (a photo needs none; for a raw scan run `fitface lift SCAN` "
                             "first)")
    else:
        check_photo_options(unit=unit, refine_surface=refine_surface, landmark_set=landmark_set, scale=scale)
        depth = check_depth(depth)
    dec = load_fit_model(model)
    if photo is not None:
        from fitface.api.photo_capture import mediapipe_rows, prepare_photo
        from fitface.landmarks.photo_fit import PHOTO_LAMBDA

        suffix = mesh_suffix(format, None)
        indices = mediapipe_rows(dec)  # a model without the set fails before mediapipe runs
        freeze_codes = freeze_arg(dec, freeze)
        caps = prepare_photo(dec, photo, indices, depth=depth, all_faces=all_faces, mediapipe_model=mediapipe_model,
                             name=name)
        lam = PHOTO_LAMBDA if lam is None else lam
    else:
        if refine_surface and scan is None:
            raise InputError("--refine-surface needs a scan (SCAN argument)")
        caps = [prepare_capture(dec, landmarks, scan, unit, landmark_set, name, scale)]
        suffix = mesh_suffix(format, caps[0].scan_path)
        freeze_codes = freeze_arg(dec, freeze)
        lam = DEFAULT_LAMBDA if lam is None else lam
    try:
        z, t_model = engine_fit(dec, caps, lam, steps, restarts, seed, freeze_codes, False, 0.0)
        surface = None
        if refine_surface:
            z, t_model, surface = engine_refine(dec, caps[0], z, t_model, lam, seed)
    except InputError:
        raise
    except (ValueError, KeyError, FloatingPointError, np.linalg.LinAlgError) as exc:
        raise fit_error(exc, caps[0].source) from None
    results = [finish_fit(dec, c, z[k], t_model[k], lam, steps, restarts, seed, surface) for k, c in enumerate(caps)]
    if out_dir is not None:
        from fitface.outputs import write_fit_files

        pics = [r.preview() if preview else None for r in results]  # computed before anything is written
        for r, c, pic in zip(results, caps, pics):
            where = Path(out_dir) / (c.photo.subdir if c.photo is not None else "")
            r.files = write_fit_files(where, r.vertices, r.faces, r.codes, suffix, pic)
    seconds = time.perf_counter() - t0
    for r in results:
        r.seconds = seconds
    return results if photo is not None and all_faces else results[0]


def freeze_arg(dec, freeze: Mapping[str, Any] | Sequence[str] | None) -> dict[str, np.ndarray]:
    """``--freeze`` as ``{factor: (d,) code}`` (checked against the model)."""
    return {k: factor_code(dec, k, v, f"--freeze {k}") for k, v in parse_assignments(freeze, "--freeze").items()}
