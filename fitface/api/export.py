"""Exporting results as a rig for animation tools: :func:`export_result` (``fitface export``).

A result folder of ``fitface fit`` (``codes.json``), ``fitface track`` (``codes.npz``) or
``fitface retarget`` of a sequence (``retarget.json`` + ``vertices.npy``) becomes one GLB
(glTF 2.0 binary, :mod:`fitface.io.gltf`):

* the base mesh: the fitted identity's neutral face, i.e. the identity code decoded with a zero
  expression code (and the fit's noise code; a track's mean noise code);
* morph targets, by ``basis``:

  - ``"ict"`` (models with ICT correspondence, :func:`ict_correspondence`): the 55
    ICT-FaceKit expression shapes moved onto that neutral face by deformation transfer
    (:class:`fitface.data.ict.ExpressionTransfer`), named in ARKit's style
    (:func:`fitface.arkit.ict_to_arkit_name`); weights: bounded least squares in [0, 1] of each
    frame's expression displacement (:func:`fitface.arkit.solve_weights`). With
    ``targets="arkit"`` the 52 ARKit shapes instead (split pairs summed, ``tongueOut`` a zero
    target) with the merged ARKit weights;
  - ``"jacobian"``: the model's expression directions linearised at the neutral face (one
    target per expression-code dimension, exact for a linear model); weights: the expression
    codes themselves;
  - ``"pca"`` (sequences): the leading ``pca_components`` principal directions of the
    sequence's displacements from the neutral face (uncentred SVD), scaled so that the weights
    lie in [-1, 1];

* the weights as the mesh's initial weights (frame 0) and, for sequences, a ``LINEAR``
  morph-weight animation at the source's frame times;
* the pose: a fit or a retarget bakes its similarity transform into the vertices (the fit's
  capture frame and unit); a track animates the node's rotation and translation (head pose).

Every export states its error: :attr:`ExportResult.rms`, per frame, the per-vertex RMS
between the GLB's animated mesh (base + sum w_k target_k, posed) and fitface's own mesh of that
frame, in the result's unit.

Convention:
    * Fit: vertices in the capture's frame and unit (``codes.json``'s ``unit``; ``"px"`` for a
      photo's pixel frame). One frame, no animation.
    * Track: the local mesh is in the model's frame and unit (mm); the node's world transform
      at frame t is ``x = R_t x_model + translation_t / scale_t`` (the photo-frame mesh divided
      by that frame's scale: pixels over pixels-per-mm, so mm), with ``R_t``, ``translation_t``,
      ``scale_t`` from ``codes.npz``. Sampler times: ``time - time[0]`` seconds.
    * Retarget: ``vertices.npy``'s frame and unit (B's capture frame), pose baked.
    * ARKit weights (ICT correspondence only): (T, 52) in :data:`fitface.arkit.ARKIT_NAMES`
      order, split pairs merged by their mean, ``tongueOut`` 0; residuals in mm (model frame).
    * The ICT face model (``ict_face_light.npz``) is found, in order, from ``ict_source``, the
      ``FITFACE_ICT_SOURCE`` environment variable, ``../shared/data/ict_face_light.npz`` beside
      the fitface checkout, ``./ict_face_light.npz``.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fitface.api.inputs import PathLike
from fitface.errors import FitfaceWarning, InputError

#: Default number of PCA targets of a sequence without ICT correspondence.
PCA_COMPONENTS = 16
#: ``basis`` values of :func:`export_result`.
BASES = ("auto", "ict", "jacobian", "pca")
#: ``targets`` values of :func:`export_result` (``"arkit"`` needs the ICT basis).
TARGET_SETS = ("ict", "arkit")
#: Environment variable naming the ICT face model file.
ICT_SOURCE_ENV = "FITFACE_ICT_SOURCE"
#: Vertex count of the full ICT face area (the only ICT topology the transfer runs on).
ICT_VERTICES = 9409
#: What the merge does, as written into arkit.json.
MERGE_RULE = ("browInnerUp = mean(browInnerUp_L, browInnerUp_R), cheekPuff = mean(cheekPuff_L, cheekPuff_R); "
              "tongueOut = 0 (no ICT shape); cheekRaiser_L/_R are solved for but are no ARKit shapes")


# ----------------------------------------------------------------------------- results
@dataclass
class ArkitWeights:
    """ARKit-52 weights of an export (ICT basis only).

    Attributes:
        names: the 52 names (:data:`fitface.arkit.ARKIT_NAMES`).
        weights: (T, 52) float64 in [0, 1].
        ict_names: the K ICT shape names solved for. ict_weights: (T, K) float64 in [0, 1].
        residual_rms_mm: (T,) float64 mm, per-vertex RMS of the ICT solve's residual (model frame).
        arkit_residual_rms_mm: (T,) float64 mm, the same for the 52 merged weights on the ARKit
            targets (split pairs summed): what an ARKit rig driven by ``weights`` leaves.
        head_rotation: (T, 3, 3) float64 head rotations (model -> camera) for the CSV.
    """

    names: list[str]
    weights: np.ndarray
    ict_names: list[str]
    ict_weights: np.ndarray
    residual_rms_mm: np.ndarray
    arkit_residual_rms_mm: np.ndarray
    head_rotation: np.ndarray


@dataclass
class ExportResult:
    """Result of :func:`export_result`.

    Attributes:
        glb: the GLB file's bytes.
        path: where the GLB was written (None: not written).
        kind: ``"fit"``, ``"track"`` or ``"retarget"``.
        basis: ``"ict"``, ``"jacobian"`` or ``"pca"`` (module doc).
        target_names: the K morph-target names, in the GLB's order.
        num_frames: T. fps: frames per second (None for a fit).
        times: (T,) float64 seconds of the keyframes (from 0).
        weights: (T, K) float64 morph weights per frame.
        rms: (T,) float64, per frame, per-vertex RMS between the GLB's animated, posed mesh and
            fitface's own mesh, in :attr:`unit`. ``rms_mm`` is the same (named for the common
            case of a mm result; for a fit in metres it is in metres: see :attr:`unit`).
        unit: the unit of the GLB's positions (``"mm"``, ``"m"``, ... or ``"px"``).
        num_vertices: V. model_id, model: the model's id and reference.
        arkit: :class:`ArkitWeights` (ICT basis), else None.
        files: name -> path of every file written (``glb``, ``arkit``, ``csv``).
        vertex_error: (V,) float64 distance of each fitted vertex to the scan (the result's
            unit) when ``colors="error"``, else None. error_scale: the colour ramp's full scale.
        pca_residual_rms: for the PCA basis, (T,) the same as :attr:`rms`: what the
            ``pca_components`` leading directions leave.
        notes: one-line remarks (fallbacks taken).
    """

    glb: bytes
    path: Path | None
    kind: str
    basis: str
    target_names: list[str]
    num_frames: int
    fps: float | None
    times: np.ndarray
    weights: np.ndarray
    rms_mm: np.ndarray
    unit: str
    num_vertices: int
    model_id: str
    model: str | None
    arkit: ArkitWeights | None = None
    files: dict[str, Path] = field(default_factory=dict)
    vertex_error: np.ndarray | None = None
    error_scale: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def rms(self) -> np.ndarray:
        return self.rms_mm

    @property
    def arkit_paths(self) -> dict[str, Path]:
        """The ARKit files written (``arkit``: arkit.json, ``csv``: the Live Link CSV)."""
        return {k: v for k, v in self.files.items() if k in ("arkit", "csv")}

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary (the CLI's ``--json``)."""
        doc = {"kind": self.kind, "basis": self.basis, "targets": len(self.target_names),
               "frames": self.num_frames, "fps": self.fps, "unit": self.unit, "model_id": self.model_id,
               "model": self.model, "rms": {"mean": float(np.mean(self.rms_mm)), "max": float(np.max(self.rms_mm))},
               "glb_bytes": len(self.glb), "files": {k: str(v) for k, v in self.files.items()}, "notes": self.notes}
        if self.arkit is not None:
            doc["arkit_residual_rms_mm"] = {"mean": float(np.mean(self.arkit.residual_rms_mm)),
                                            "max": float(np.max(self.arkit.residual_rms_mm))}
        return doc


# ----------------------------------------------------------------------------- sources
@dataclass
class _Source:
    """A result folder read: everything in the model's frame and unit, plus the pose."""

    kind: str
    folder: Path
    dec: Any
    meshes: np.ndarray  # (T, V, 3) float64 fitface's meshes, model frame and unit
    z: np.ndarray  # (T, D) codes, or None for a retarget whose codes are not stored
    z_neutral: np.ndarray  # (D,) the neutral code
    times: np.ndarray  # (T,) s from 0
    fps: float | None
    unit: str
    pose: Any  # Similarity (1 or T): model -> output frame
    animated_pose: bool  # True: node animation (track); False: baked into the vertices
    scan_path: Path | None = None
    frame_index: np.ndarray | None = None


def _fps(times: np.ndarray) -> float:
    return 30.0 if len(times) < 2 else float(1.0 / max(float(np.median(np.diff(times))), 1e-6))


def _check_layout(dec, where) -> None:
    names = dec.layout.names
    if "identity" not in names or "expression" not in names:
        raise InputError(f"export needs a model with identity and expression codes; this one has "
                         f"{', '.join(names)}", where)


def _neutral_code(dec, blocks: dict[str, np.ndarray]) -> np.ndarray:
    parts = []
    for n in dec.layout.names:
        parts.append(np.zeros(dec.layout.size(n)) if n == "expression" else np.asarray(blocks[n], dtype=np.float64))
    return np.concatenate(parts)


def _codes_blocks(dec, codes, where) -> dict[str, np.ndarray]:
    out = {}
    for n in dec.layout.names:
        if n not in codes.codes:
            raise InputError(f"no {n!r} code in the codes file (the model has {', '.join(dec.layout.names)})", where)
        c = codes.code(n)
        if c.shape != (dec.layout.size(n),):
            raise InputError(f"{n} code has {c.shape[0]} numbers, the model expects {dec.layout.size(n)}", where)
        out[n] = c
    return out


def _read_fit(folder: Path) -> _Source:
    from fitface.api.inputs import model_for_codes
    from fitface.fitting.similarity import Similarity
    from fitface.io.codes import read_codes

    path = folder / "codes.json"
    codes = read_codes(path)
    dec = model_for_codes([(codes, path)])
    _check_layout(dec, path)
    blocks = _codes_blocks(dec, codes, path)
    z = np.concatenate([blocks[n] for n in dec.layout.names])[None]
    meshes = np.asarray(dec.vertices(z), dtype=np.float64)
    try:
        pose = Similarity.from_json(codes.transform) if codes.transform is not None else Similarity.identity()
    except ValueError as exc:
        raise InputError(f"transform: {exc}", path) from None
    photo = codes.extra.get("photo") is not None or codes.unit is None
    unit = codes.unit or ("px" if photo else dec.unit)
    scan = codes.extra.get("scan_file")
    return _Source("fit", folder, dec, meshes, z, _neutral_code(dec, blocks), np.zeros(1), None, unit, pose, False,
                   Path(scan) if scan else None)


def _read_track(folder: Path) -> _Source:
    from fitface.api.inputs import model_for_codes
    from fitface.api.track import read_track_codes
    from fitface.fitting.similarity import Similarity
    from fitface.io.codes import Codes

    path = folder / "codes.npz"
    seq = read_track_codes(path)
    if len(seq) == 0:
        raise InputError("the track has no frames", path)
    dec = model_for_codes([(Codes(seq.model_id, {"identity": seq.identity.tolist()}, model=seq.model), path)])
    _check_layout(dec, path)
    for n, a in (("identity", seq.identity[None]), ("expression", seq.expression), ("noise", seq.noise)):
        size = dec.layout.size(n) if n in dec.layout.names else 0
        if a.shape[1] != size:
            raise InputError(f"{n} codes have {a.shape[1]} numbers, the model expects {size}", path)
    z = seq.z(dec.layout)
    meshes = np.asarray(dec.vertices(z), dtype=np.float64)
    blocks = {"identity": seq.identity, "noise": seq.noise.mean(axis=0) if seq.noise.shape[1] else seq.noise[0]}
    if not (np.isfinite(seq.scale).all() and (seq.scale > 0).all()):
        raise InputError("scale: expected positive finite values", path)
    # the photo frame divided by each frame's scale: pixels -> model unit
    pose = Similarity(np.ones(len(seq)), seq.rotation, seq.translation / seq.scale[:, None])
    times = seq.time - seq.time[0]
    return _Source("track", folder, dec, meshes, z, _neutral_code(dec, blocks), times, _fps(times), dec.unit, pose,
                   True, None, seq.frame_index)


def _read_retarget(folder: Path) -> _Source:
    from fitface.api.inputs import model_for_codes
    from fitface.fitting.similarity import Similarity
    from fitface.io.codes import read_codes

    path = folder / "retarget.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"not a readable retarget.json ({type(exc).__name__})", path) from None
    if not isinstance(doc, dict) or "model_id" not in doc:
        raise InputError("not a retargeted sequence's retarget.json (no model_id)", path)
    vpath = folder / "vertices.npy"
    try:
        verts = np.load(vpath, allow_pickle=False).astype(np.float64)
    except (OSError, ValueError) as exc:
        raise InputError(f"not a readable vertices.npy ({type(exc).__name__})", vpath) from None
    if verts.ndim != 3 or verts.shape[2] != 3 or len(verts) == 0 or not np.isfinite(verts).all():
        raise InputError(f"vertices.npy: expected finite (T, V, 3) meshes, got shape {verts.shape}", vpath)
    ident = doc.get("identity_from")
    if not ident:
        raise InputError("retarget.json records no identity codes file (identity_from): the neutral face of the "
                         "identity cannot be rebuilt", path)
    codes = read_codes(ident)
    dec = model_for_codes([(codes, ident)])
    if dec.model_id != doc["model_id"]:
        raise InputError(f"the identity codes are from model_id {dec.model_id}, the sequence from {doc['model_id']}",
                         path)
    _check_layout(dec, path)
    if verts.shape[1] != dec.num_vertices:
        raise InputError(f"vertices.npy has {verts.shape[1]} vertices, the model {dec.num_vertices}", vpath)
    blocks = _codes_blocks(dec, codes, ident)
    transform = doc.get("transform")
    try:
        pose = Similarity.from_json(transform) if transform else Similarity.identity()
    except ValueError as exc:
        raise InputError(f"transform: {exc}", path) from None
    meshes = np.asarray(pose.repeat(len(verts)).inverse().apply(verts), dtype=np.float64)  # model frame, unit
    t = np.asarray(doc.get("time") or np.arange(len(verts)) / 30.0, dtype=np.float64)
    if t.shape != (len(verts),):
        raise InputError(f"time: {t.shape[0]} times for {len(verts)} frames", path)
    times = t - t[0]
    unit = doc.get("unit") or dec.unit
    fi = np.asarray(doc.get("frame_index") or np.arange(len(verts)), dtype=np.int64)
    return _Source("retarget", folder, dec, meshes, None, _neutral_code(dec, blocks), times, _fps(times), unit, pose,
                   False, None, fi)


def read_result(result_dir: PathLike) -> _Source:
    """Read and check a result folder (or its codes.json / codes.npz / retarget.json file).

    Raises:
        InputError: not a folder of ``fitface fit``, ``track`` or ``retarget``; unreadable files;
            a model that cannot be found (moved, changed) or does not fit the codes.
    """
    p = Path(result_dir)
    if p.is_file() and p.name in ("codes.json", "codes.npz", "retarget.json"):
        p = p.parent
    if not p.exists():
        raise InputError("no such file or folder", p)
    if not p.is_dir():
        raise InputError("not a result folder (expected the folder of fitface fit, track or retarget)", p)
    if (p / "retarget.json").is_file():
        return _read_retarget(p)
    if (p / "codes.npz").is_file():
        return _read_track(p)
    if (p / "codes.json").is_file():
        return _read_fit(p)
    raise InputError("not a fit, track or retarget folder (no codes.json, codes.npz or retarget.json)", p)


# ----------------------------------------------------------------------------- ICT
_ICT_CACHE: dict[str, Any] = {}


def find_ict_source(ict_source: PathLike | None = None) -> Path | None:
    """The ICT face model file (module Convention's search order), or None where none exists."""
    if ict_source is not None:
        return Path(ict_source)
    env = os.environ.get(ICT_SOURCE_ENV)
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for cand in (here.parents[3] / "shared" / "data" / "ict_face_light.npz",
                 here.parents[2] / "shared" / "data" / "ict_face_light.npz",
                 Path.cwd() / "ict_face_light.npz"):
        if cand.is_file():
            return cand
    return None


def ict_correspondence(dec) -> bool:
    """True where the model shares the full ICT face-area topology: its model file says it was
    trained on an ICT dataset (``metadata.dataset.info.builder == "ict"``, not narrow) and it has
    the ICT face area's 9,409 vertices. :func:`ict_transfer` checks the triangles too."""
    if dec.num_vertices != ICT_VERTICES:
        return False
    path = getattr(dec, "model_path", None)
    if path is None:
        return bool(getattr(dec, "ict_correspondence", False))
    try:
        from fitface.models.model_file import read_metadata

        info = (read_metadata(path).get("metadata") or {}).get("dataset", {}).get("info", {})
    except (OSError, ValueError, KeyError, AttributeError, InputError):
        return False
    return info.get("builder") == "ict" and not info.get("narrow", False)


def ict_transfer(source: Path, faces: np.ndarray):
    """The cached :class:`fitface.data.ict.ExpressionTransfer` of the ICT model at ``source``.

    Raises:
        InputError: an unreadable ICT source, or triangles that are not the ICT face area's.
    """
    from fitface.data.ict import ExpressionTransfer, load_ict

    key = str(Path(source).resolve())
    if key not in _ICT_CACHE:
        model = load_ict(source)
        _ICT_CACHE.clear()
        _ICT_CACHE[key] = ExpressionTransfer(model)
    et = _ICT_CACHE[key]
    if et.model.faces.shape != np.shape(faces) or not np.array_equal(et.model.faces, faces):
        raise InputError("the model's triangles are not the ICT face area's: no ICT correspondence", source)
    return et


def ict_deltas(neutral_mm: np.ndarray, faces: np.ndarray, source: Path) -> tuple[np.ndarray, list[str]]:
    """(K, V, 3) float64 mm ICT blendshape deltas transferred onto ``neutral_mm`` (V, 3) mm, and
    their K ICT names."""
    from fitface.data.ict import single_threaded_blas

    et = ict_transfer(source, faces)
    with single_threaded_blas():
        d = et.deltas(np.asarray(neutral_mm, dtype=np.float64))
    return d, list(et.model.expression_names)


def expression_jacobian(dec, z0: np.ndarray) -> np.ndarray:
    """(d_exp, V, 3) float64 derivative of the decoded vertices with respect to each expression
    code dimension at ``z0`` (D,): exact for the GAN's MLP (LeakyReLU slopes at ``z0``) and
    linear decoders, central differences (step 1e-3) otherwise. Model unit per code unit."""
    from fitface.fitting.decoder import LinearDecoder, MLPDecoder

    sl = dec.layout.slice("expression")
    z0 = np.asarray(z0, dtype=np.float64).reshape(1, -1)
    v = dec.num_vertices
    if isinstance(dec, MLPDecoder):
        _, slope = dec.hidden(z0)
        w1 = np.asarray(dec.w1, dtype=np.float64)[:, sl]  # (H, d_exp)
        j = np.asarray(dec.w2, dtype=np.float64) @ (slope[0].astype(np.float64)[:, None] * w1)  # (3V, d_exp)
        return j.T.reshape(-1, v, 3)
    if isinstance(dec, LinearDecoder):
        return np.asarray(dec.basis, dtype=np.float64)[:, sl].T.reshape(-1, v, 3)
    h = 1e-3
    cols = range(sl.start, sl.stop)
    zs = np.repeat(z0, 2 * len(cols), axis=0)
    for i, c in enumerate(cols):
        zs[2 * i, c] += h
        zs[2 * i + 1, c] -= h
    out = np.asarray(dec.vertices(zs), dtype=np.float64)
    return (out[0::2] - out[1::2]) / (2 * h)


def pca_deltas(displacement: np.ndarray, components: int) -> tuple[np.ndarray, np.ndarray]:
    """The leading principal directions of (T, V, 3) displacements (uncentred SVD):
    ``(targets (K, V, 3), weights (T, K))`` with K = min(components, rank), scaled so each
    target's weights lie in [-1, 1] and ``weights @ targets`` is the rank-K approximation."""
    x = np.asarray(displacement, dtype=np.float64)
    t, v = x.shape[0], x.shape[1]
    u, s, vt = np.linalg.svd(x.reshape(t, -1), full_matrices=False)
    keep = int(min(components, int(np.sum(s > s[0] * 1e-9)) if s.size and s[0] > 0 else 0))
    c = u[:, :keep] * s[:keep]  # (T, K)
    scale = np.abs(c).max(axis=0) if keep else np.zeros(0)
    scale = np.where(scale > 0, scale, 1.0)
    return (vt[:keep] * scale[:, None]).reshape(keep, v, 3), c / scale


# ----------------------------------------------------------------------------- colours
def scan_distances(result_dir: PathLike) -> tuple[np.ndarray, float, Path]:
    """Distance of each vertex of a fit to its scan's surface: ``(distances (V,) float64 in the
    fit's unit, colour ramp full scale, scan path)``.

    Raises:
        InputError: not a fit, or a fit without a scan (or whose scan moved).
    """
    src = read_result(result_dir)
    return _scan_distances(src)


def _scan_distances(src: _Source) -> tuple[np.ndarray, float, Path]:
    from fitface.evaluation.sparse_reconstruction import SurfaceDistance
    from fitface.io.mesh import load_mesh
    from fitface.preview import nice_scale

    if src.kind != "fit" or src.scan_path is None:
        raise InputError("error colours need a fit with a scan (codes.json records no scan_file)", src.folder)
    if not src.scan_path.is_file():
        raise InputError("the fit's scan is gone (codes.json scan_file)", src.scan_path)
    scan = load_mesh(src.scan_path, require_faces=True)
    verts = src.pose.apply(src.meshes)[0]
    dist = np.asarray(SurfaceDistance(scan.vertices, scan.faces)(verts), dtype=np.float64)
    return dist, nice_scale(dist), src.scan_path


def _colors(src: _Source, colors) -> tuple[np.ndarray | None, np.ndarray | None, float | None]:
    if colors is None:
        return None, None, None
    if isinstance(colors, str):
        if colors != "error":
            raise InputError(f"--colors: expected 'error' or none, got {colors!r}")
        from fitface.preview import error_colors

        dist, scale, _ = _scan_distances(src)
        return error_colors(dist, scale), dist, scale
    c = np.asarray(colors)
    if c.dtype == np.uint8:
        c = c.astype(np.float64) / 255.0
    c = np.asarray(c, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != src.meshes.shape[1] or c.shape[1] not in (3, 4) or not np.isfinite(c).all():
        raise ValueError(f"colors: expected ({src.meshes.shape[1]}, 3) sRGB values, got {c.shape}")
    return np.clip(c[:, :3], 0.0, 1.0), None, None


# ----------------------------------------------------------------------------- export
def build_export(
    result_dir: PathLike,
    *,
    colors: Any = None,
    basis: str = "auto",
    targets: str = "ict",
    ict_source: PathLike | None = None,
    pca_components: int = PCA_COMPONENTS,
    morph_normals: bool = False,
    need_arkit: bool = False,
) -> ExportResult:
    """Everything :func:`export_result` computes, writing nothing (``path`` and ``files`` empty).

    Args: as :func:`export_result`; ``need_arkit``: refuse (InputError) a result without ICT
    correspondence instead of falling back to another basis.
    """
    from fitface.arkit import ARKIT_NAMES, arkit_deltas, ict_to_arkit_name, solve_weights, to_arkit
    from fitface.io.gltf import glb_bytes

    if basis not in BASES:
        raise InputError(f"--basis: expected one of {', '.join(BASES)}, got {basis!r}")
    if targets not in TARGET_SETS:
        raise InputError(f"--targets: expected one of {', '.join(TARGET_SETS)}, got {targets!r}")
    if int(pca_components) < 1:
        raise InputError(f"--pca-components: expected >= 1, got {pca_components}")
    src = read_result(result_dir)
    dec = src.dec
    notes: list[str] = []
    nt = src.meshes.shape[0]
    neutral = np.asarray(dec.vertices(src.z_neutral[None]), dtype=np.float64)[0]  # (V, 3) model frame
    disp = src.meshes - neutral[None]  # (T, V, 3)
    has_ict = ict_correspondence(dec)
    source = find_ict_source(ict_source) if has_ict else None
    chosen = basis
    if basis == "auto":
        if has_ict and source is not None and source.is_file():
            chosen = "ict"
        else:
            if has_ict:
                notes.append(f"the ICT face model was not found (--ict-source or ${ICT_SOURCE_ENV}): "
                             f"no ICT targets, no ARKit weights")
            chosen = "pca" if nt > 1 else "jacobian"
    if (need_arkit or targets == "arkit") and chosen != "ict":
        if not has_ict:
            raise InputError(f"ARKit weights need a model with ICT-FaceKit correspondence (the ICT face area's "
                             f"{ICT_VERTICES} vertices); model {dec.model_name or dec.model_id} has "
                             f"{dec.num_vertices} vertices and none", src.folder)
        raise InputError(f"ARKit weights need the ICT face model (ict_face_light.npz): pass --ict-source or set "
                         f"${ICT_SOURCE_ENV}", src.folder)
    if chosen == "ict":
        if not has_ict:
            raise InputError(f"--basis ict: model {dec.model_name or dec.model_id} has no ICT correspondence",
                             src.folder)
        if source is None or not source.is_file():
            raise InputError("the ICT face model (ict_face_light.npz) is not found: pass --ict-source or set "
                             f"${ICT_SOURCE_ENV}", source)
    if chosen == "pca" and nt < 2:
        raise InputError("--basis pca needs a sequence (a track or retarget), not a single fit", src.folder)

    from fitface.units import scale_between

    to_mm = scale_between(dec.unit, "mm")
    arkit = None
    if chosen == "ict":
        d_mm, ict_names = ict_deltas(neutral * to_mm, dec.faces, source)
        solve = solve_weights(d_mm, disp * to_mm)
        a_w = to_arkit(solve.weights, ict_names)
        a_d = arkit_deltas(d_mm, ict_names)
        a_res = np.sqrt(np.sum(((a_w @ a_d.reshape(len(a_d), -1)) - (disp * to_mm).reshape(nt, -1)) ** 2, axis=1)
                        / dec.num_vertices)
        rot = src.pose.rotation if len(src.pose) == nt else np.repeat(src.pose.rotation, nt, axis=0)
        arkit = ArkitWeights(list(ARKIT_NAMES), a_w, ict_names, solve.weights, solve.residual_rms, a_res, rot)
        if targets == "arkit":
            tgt, w, names = a_d / to_mm, a_w, list(ARKIT_NAMES)
        else:
            tgt, w, names = d_mm / to_mm, solve.weights, [ict_to_arkit_name(n) for n in ict_names]
    elif chosen == "jacobian":
        tgt = expression_jacobian(dec, src.z_neutral)
        if src.z is not None:
            w = src.z[:, dec.layout.slice("expression")]
        else:  # retarget without codes: least squares on the linearised directions
            a = tgt.reshape(len(tgt), -1).T
            w = np.linalg.lstsq(a, disp.reshape(nt, -1).T, rcond=None)[0].T
        names = [f"expression{j:02d}" for j in range(len(tgt))]
    else:
        tgt, w = pca_deltas(disp, int(pca_components))
        names = [f"pca{j:02d}" for j in range(len(tgt))]
        notes.append(f"{len(tgt)} PCA targets of the sequence's displacements")

    # the GLB's animated mesh against fitface's, in the output frame and unit
    synth = neutral[None] + np.tensordot(w, tgt, axes=1) if len(tgt) else np.repeat(neutral[None], nt, axis=0)
    pose_t = src.pose if len(src.pose) == nt else src.pose.repeat(nt)
    rms = np.sqrt(np.mean(np.sum((pose_t.apply(synth) - pose_t.apply(src.meshes)) ** 2, axis=-1), axis=1))
    col, verr, escale = _colors(src, colors)
    extras = {"unit": src.unit, "kind": src.kind, "basis": chosen, "model_id": dec.model_id,
              "model": getattr(dec, "model_name", None), "rms": rms.tolist(), "source": str(src.folder),
              "frame": ("model frame; node = head pose (x = R x_model + translation / scale)" if src.animated_pose
                        else "the result's frame (pose baked into the vertices)")}
    if src.animated_pose:
        glb = glb_bytes(neutral, dec.faces, tgt, names, w, times=src.times, rotation=src.pose.rotation,
                        translation=src.pose.translation, colors=col, morph_normals=morph_normals, extras=extras)
    else:
        s, r = float(src.pose.scale[0]), src.pose.rotation[0]
        base = src.pose.apply(neutral)[0]
        tgt_out = s * (tgt @ r.T)
        glb = glb_bytes(base, dec.faces, tgt_out, names, w, times=src.times if nt > 1 else None, colors=col,
                        morph_normals=morph_normals, extras=extras)
    return ExportResult(glb, None, src.kind, chosen, names, nt, src.fps, src.times, np.asarray(w, dtype=np.float64),
                        rms, src.unit, dec.num_vertices, dec.model_id, getattr(dec, "model_name", None), arkit,
                        vertex_error=verr, error_scale=escale, notes=notes)


def glb_of(result_dir: PathLike, **kwargs) -> bytes:
    """The GLB bytes of a result folder, writing nothing (keyword arguments: as :func:`export_result`)."""
    return build_export(result_dir, **kwargs).glb


def arkit_document(res: ExportResult, source: PathLike | None = None) -> dict[str, Any]:
    """The ``arkit.json`` document of an export with ARKit weights."""
    a = res.arkit
    if a is None:
        raise ValueError("the export has no ARKit weights (no ICT correspondence)")
    return {
        "format": "fitface-arkit", "version": 1, "kind": res.kind, "source": None if source is None else str(source),
        "model_id": res.model_id, "model": res.model, "fps": res.fps, "frames": res.num_frames,
        "times": res.times.tolist(), "names": a.names, "weights": np.round(a.weights, 6).tolist(),
        "residual_rms_mm": a.residual_rms_mm.tolist(), "arkit_residual_rms_mm": a.arkit_residual_rms_mm.tolist(),
        "merge": MERGE_RULE, "solve": "bounded least squares (scipy lsq_linear, weights in [0, 1]) of the expression "
                                      "displacement against the ICT shapes transferred onto the fitted neutral face",
        "ict_names": a.ict_names, "ict_weights": np.round(a.ict_weights, 6).tolist(),
    }


def export_result(
    result_dir: PathLike,
    output: PathLike | None = None,
    *,
    colors: Any = None,
    arkit: PathLike | bool | None = None,
    csv: PathLike | bool | None = None,
    basis: str = "auto",
    targets: str = "ict",
    ict_source: PathLike | None = None,
    pca_components: int = PCA_COMPONENTS,
    morph_normals: bool = False,
) -> ExportResult:
    """Export a fit, track or retargeted sequence as a GLB rig (module doc), with ARKit weights.

    Args:
        result_dir: the folder of ``fitface fit``, ``track`` or ``retarget`` (or its codes file).
        output: the GLB file to write; None: only build the bytes (:attr:`ExportResult.glb`).
        colors: None (no vertex colours), ``"error"`` (a fit's distance to its scan, blue 0 ->
            red at a round full scale, :attr:`ExportResult.vertex_error`), or (V, 3) float sRGB
            in [0, 1] (or uint8) per vertex; written linear as ``COLOR_0``.
        arkit: where to write ``arkit.json``: a path; True: ``<output stem>.arkit.json`` beside the
            GLB; None/False: not written. ``csv``: the same for the Live Link Face CSV
            (True: ``<output stem>.livelink.csv``). Either one needs ICT correspondence.
        basis: ``"auto"`` (ICT where the model has ICT correspondence and the ICT model file is
            found, else ``"pca"`` for sequences and ``"jacobian"`` for fits), ``"ict"``,
            ``"jacobian"`` or ``"pca"``.
        targets: ``"ict"`` (the 55 ICT shapes) or ``"arkit"`` (the 52 ARKit shapes).
        ict_source: the ICT face model file (module Convention for the default search).
        pca_components: the number of PCA targets (``basis="pca"``).
        morph_normals: also write morph-target normal deltas.

    Returns:
        :class:`ExportResult`.

    Raises:
        InputError: not a result folder, unreadable files, a model that moved, ARKit output
            asked of a model without ICT correspondence (one line; exit code 2 in the CLI).
            Nothing is written then: every output is computed before the first is written, and
            each is written atomically.
    """
    from fitface.arkit import live_link_csv
    from fitface.io.atomic import write_bytes, write_text

    out = None if output is None else Path(output)

    def where(value, suffix):
        if value is None or value is False:
            return None
        if value is True:
            if out is None:
                raise InputError(f"{suffix}: a default path needs the GLB's output path")
            return out.with_name(out.stem + suffix)
        return Path(value)

    arkit_path, csv_path = where(arkit, ".arkit.json"), where(csv, ".livelink.csv")
    for p in (out, arkit_path, csv_path):
        if p is not None and p.is_dir():
            raise InputError("is a folder; expected a file path", p)
    res = build_export(result_dir, colors=colors, basis=basis, targets=targets, ict_source=ict_source,
                       pca_components=pca_components, morph_normals=morph_normals,
                       need_arkit=arkit_path is not None or csv_path is not None)
    texts = {}
    if arkit_path is not None:
        texts["arkit"] = (arkit_path, json.dumps(arkit_document(res, result_dir), indent=1) + "\n")
    if csv_path is not None:
        a = res.arkit
        texts["csv"] = (csv_path, live_link_csv(a.weights, res.times, res.fps or 30.0, a.head_rotation))
    if out is not None:
        write_bytes(out, res.glb)
        res.path = out
        res.files["glb"] = out
    for key, (p, text) in texts.items():
        write_text(p, text)
        res.files[key] = p
    for n in res.notes:
        warnings.warn(FitfaceWarning(n), stacklevel=2)
    return res


__all__ = ["ArkitWeights", "BASES", "ExportResult", "PCA_COMPONENTS", "TARGET_SETS", "arkit_document",
           "build_export", "expression_jacobian", "export_result", "find_ict_source", "glb_of",
           "ict_correspondence", "ict_deltas", "pca_deltas", "read_result", "scan_distances"]
