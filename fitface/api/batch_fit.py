"""Fitting many captures in vectorised optimisations: :func:`fit_batch` (one bad capture never
stops the batch).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fitface.api.capture_fit import FitResult, engine_fit, engine_refine, finish_fit
from fitface.api.inputs import (
    BATCH_CHUNK,
    DEFAULT_LAMBDA,
    DEFAULT_SMOOTHNESS,
    PathLike,
    PreparedCapture,
    factor_code,
    load_fit_model,
    mesh_suffix,
    model_reference,
    parse_assignments,
    prepare_capture,
)
from fitface.errors import InputError, one_line


@dataclass
class BatchResult:
    """Result of :func:`fit_batch`.

    Attributes:
        results: the successful fits, in capture order (their meshes are not kept:
            ``vertices`` is None unless ``keep_meshes=True``).
        failures: ``(name, reason)`` per capture that could not be fitted.
        files: summary files written.
        seconds: wall time.
    """

    results: list[FitResult]
    failures: list[tuple[str, str]]
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.results)




# ------------------------------------------------------------------------------ batch
def fit_batch(
    captures: PathLike | Sequence[Any],
    out_dir: PathLike | None = None,
    *,
    model: Any = None,
    lam: float = DEFAULT_LAMBDA,
    steps: int | None = None,
    restarts: int | None = None,
    landmark_set: str | None = None,
    unit: str | None = None,
    seed: int = 0,
    refine_surface: bool = False,
    freeze: Mapping[str, Any] | Sequence[str] | None = None,
    shard: str | tuple[int, int] | None = None,
    sequence: bool = False,
    smoothness: float = DEFAULT_SMOOTHNESS,
    format: str | None = None,
    previews: bool = False,
    meshes: bool = True,
    keep_meshes: bool = False,
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> BatchResult:
    """Fit many captures in vectorised optimisations; one bad capture never stops the batch.

    Args:
        captures: a folder (scans and landmark files paired by name, see
            :mod:`fitface.captures`) or a list of :class:`fitface.captures.Capture`.
        out_dir: if given, write ``OUT/<name>/`` per capture (``fit.<ext>`` unless
            ``meshes=False``, ``codes.json``, ``preview.png`` if ``previews``) and the summary
            files (:func:`fitface.outputs.write_batch_summary`).
        shard: ``"K/N"`` or ``(K, N)``, 1-based: fit only the K-th of N contiguous blocks of the
            naturally sorted captures (summary files get a ``-K-of-N`` suffix).
        sequence: the captures are the frames of one subject in natural name order: one shared
            identity code, plus ``smoothness * sum_t ||z_exp(t+1) - z_exp(t)||^2``.
        progress: called as ``progress(done, total)`` while writing results.
        log: called with one-line messages.
        Other arguments: as :func:`fit` (applied to every capture).

    Returns:
        :class:`BatchResult`.

    Raises:
        InputError: the folder does not exist, a bad shard, a bad model or freeze file.
    """
    from fitface.captures import Capture, CaptureSet, discover_captures, parse_shard

    t0 = time.perf_counter()
    say = log or (lambda _msg: None)
    if isinstance(captures, (str, os.PathLike)):
        cset = discover_captures(captures)
    else:
        cset = CaptureSet(list(captures), [], 0)
    shard_kn = None
    if shard is not None:
        shard_kn = parse_shard(shard) if isinstance(shard, str) else parse_shard(f"{shard[0]}/{shard[1]}")
        cset = cset.shard(*shard_kn)
        if sequence:
            raise InputError("--sequence fits one subject jointly and cannot be split with --shard")
    dec = load_fit_model(model)
    freeze_codes = {k: factor_code(dec, k, v, f"--freeze {k}") for k, v in parse_assignments(freeze, "--freeze").items()}
    suffix_override = None if format is None else mesh_suffix(format, None)
    failures: list[tuple[str, str]] = [(p.name, p.reason) for p in cset.problems]
    order = {c.name: i for i, c in enumerate(cset.captures)}

    # read every capture; a bad file is that capture's failure
    prepared: list[PreparedCapture] = []
    for c in cset.captures:
        c = c if isinstance(c, Capture) else Capture(*c)
        try:
            prepared.append(prepare_capture(dec, c.landmarks, c.scan, unit, landmark_set, c.name))
        except InputError as exc:
            failures.append((c.name, str(exc)))
    say(f"{len(prepared)} captures to fit, {len(failures)} unusable")
    if sequence and len({c.set_name for c in prepared}) > 1:
        raise InputError("--sequence: the frames use different landmark sets")

    results: list[FitResult] = []
    groups: dict[str, list[PreparedCapture]] = {}
    for c in prepared:
        groups.setdefault(c.set_name, []).append(c)
    chunk = len(prepared) if sequence else BATCH_CHUNK
    total, done = len(prepared), 0
    out = None if out_dir is None else Path(out_dir)
    for caps in groups.values():
        for i in range(0, len(caps), max(chunk, 1)):
            part = caps[i:i + chunk]
            fitted = _fit_chunk(dec, part, lam, steps, restarts, seed, freeze_codes, sequence, smoothness,
                                refine_surface, failures)
            zs = np.stack([z for _, z, _, _ in fitted]) if fitted else np.zeros((0, dec.layout.dim))
            verts = dec.vertices(zs) if fitted and (meshes or previews or keep_meshes) else None  # (b, V, 3)
            for j, (cap, z, t_model, surface) in enumerate(fitted):
                try:
                    res = finish_fit(dec, cap, z, t_model, lam, steps, restarts, seed, surface, decode=False)
                    if verts is not None:
                        res.vertices = res.transform.apply(verts[j])[0]
                    if out is not None:
                        from fitface.outputs import write_fit_files

                        suffix = suffix_override or mesh_suffix(None, cap.scan_path)
                        pic = res.preview() if previews else None
                        res.files = write_fit_files(out / cap.name, res.vertices, res.faces, res.codes, suffix, pic,
                                                    write_mesh=meshes)
                    if not keep_meshes:
                        res.vertices = None
                    results.append(res)
                except (InputError, ValueError, OSError) as exc:
                    failures.append((cap.name, one_line(exc)))
                done += 1
                if progress is not None:
                    progress(done, total)
    from fitface.captures import natural_key

    results.sort(key=lambda r: order.get(r.name, 0))
    failures.sort(key=lambda f: natural_key(f[0]))
    batch = BatchResult(results, failures, {}, 0.0)
    batch.seconds = time.perf_counter() - t0
    if out is not None:
        batch.files = write_summary(out, batch, dec.model_id, cset.ignored, shard_kn, sequence, model_reference(dec))
    return batch


def _fit_chunk(dec, caps, lam, steps, restarts, seed, freeze_codes, sequence, smoothness, refine, failures):
    """Vectorised fit of captures of one landmark set; isolates failing captures by refitting
    one at a time when the joint call fails. Returns [(cap, z (D,), T (1), surface)]."""
    errors = (ValueError, FloatingPointError, np.linalg.LinAlgError)
    try:
        z, t = engine_fit(dec, caps, lam, steps, restarts, seed, freeze_codes, sequence, smoothness)
        items = [(c, z[k], t[k]) for k, c in enumerate(caps)]
    except errors as exc:
        if sequence or len(caps) == 1:
            failures.extend((c.name, f"fit failed: {one_line(exc)}") for c in caps)
            return []
        items = []
        for c in caps:
            try:
                z1, t1 = engine_fit(dec, [c], lam, steps, restarts, seed, freeze_codes, False, 0.0)
                items.append((c, z1[0], t1[0]))
            except errors as exc1:
                failures.append((c.name, f"fit failed: {one_line(exc1)}"))
    out = []
    for c, z1, t1 in items:
        if not (np.isfinite(z1).all() and np.isfinite(t1.scale).all() and np.isfinite(t1.translation).all()):
            failures.append((c.name, "the fit diverged (non-finite codes); check the landmarks"))
            continue
        surface = None
        if refine and c.scan is not None:
            try:
                zz, t1, surface = engine_refine(dec, c, z1[None], t1, lam, seed)
                z1 = zz[0]
            except errors as exc:
                failures.append((c.name, f"surface refinement failed: {one_line(exc)}"))
                continue
        out.append((c, z1, t1, surface))
    return out


def write_summary(out: Path, batch: BatchResult, model_id: str, ignored: int = 0,
                  shard_kn: tuple[int, int] | None = None, sequence: bool = False,
                  model: str | None = None) -> dict[str, Path]:
    """Write ``summary.csv``, ``summary.json`` and ``failures.txt`` of a batch (3D or photo captures).

    Every capture is a row: its name, status, landmark RMS and unit (``px`` for photo fits), scale,
    sources (landmarks, scan or photo) and output folder, or its failure reason.
    """
    from fitface.captures import natural_key
    from fitface.io.codes import to_json
    from fitface.outputs import write_batch_summary

    rows, captures = [], []
    for r in batch.results:
        ex = r.codes.extra
        surf = ex.get("surface") or {}
        unit = r.unit or "px"
        sources = {k: ex.get(k) for k in ("landmarks_file", "scan_file", "photo", "face") if ex.get(k) is not None}
        rows.append({"name": r.name, "status": "ok", "landmark_rms": r.landmark_rms, "unit": unit,
                     "scale": r.codes.transform["scale"], "surface_median": surf.get("median"),
                     "landmarks": ex.get("landmarks_file") or ex.get("photo"), "scan": ex.get("scan_file"),
                     "out_dir": str(r.files["codes"].parent) if r.files else None, "reason": None})
        captures.append({"name": r.name, "status": "ok", "landmark_rms": r.landmark_rms, "unit": unit,
                         "transform": r.codes.transform, "surface": surf or None, **sources,
                         "files": {k: str(v) for k, v in r.files.items()}})
    for name, reason in batch.failures:
        rows.append({"name": name, "status": "failed", "reason": reason})
        captures.append({"name": name, "status": "failed", "reason": reason})
    rows.sort(key=lambda r: natural_key(r["name"]))
    captures.sort(key=lambda r: natural_key(r["name"]))
    rms = [r.landmark_rms for r in batch.results]
    doc = {
        "model_id": model_id,
        "model": model,  # built-in name or the model file's absolute path
        "fitted": len(batch.results),
        "failed": len(batch.failures),
        "ignored_files": ignored,
        "shard": None if shard_kn is None else f"{shard_kn[0]}/{shard_kn[1]}",
        "sequence": bool(sequence),
        "median_landmark_rms": float(np.median(rms)) if rms else None,
        "seconds": round(batch.seconds, 3),
        "captures": captures,
        "failures": [{"name": n, "reason": r} for n, r in batch.failures],
    }
    return write_batch_summary(out, rows, to_json(doc, "summary"), batch.failures, shard_kn)
