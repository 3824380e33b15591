"""Fitting many captures in vectorised optimisations: :func:`fit_batch` (one bad capture never
stops the batch). Captures are 3D landmark files (with or without scans) or photos; both go
through the same preparation (:mod:`.inputs`, :mod:`.photo_capture`), engine and writers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fitface.api.capture_fit import FitResult, engine_fit, engine_refine, finish_fit, freeze_arg
from fitface.api.inputs import (
    BATCH_CHUNK,
    DEFAULT_LAMBDA,
    DEFAULT_SMOOTHNESS,
    PathLike,
    PreparedCapture,
    check_scale_mode,
    load_fit_model,
    mesh_suffix,
    model_reference,
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
        resumed: captures kept from a previous run (``resume=True``), included in ``results``.
    """

    results: list[FitResult]
    failures: list[tuple[str, str]]
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    resumed: int = 0

    @property
    def ok(self) -> bool:
        """At least one capture was fitted."""
        return bool(self.results)

    @property
    def complete(self) -> bool:
        """Every capture was fitted (none failed)."""
        return bool(self.results) and not self.failures


@dataclass
class _Run:
    """The options every chunk of a batch is fitted and written with (internal)."""

    lam: float
    steps: int | None
    restarts: int | None
    seed: int
    freeze_codes: dict[str, np.ndarray]
    sequence: bool
    smoothness: float
    refine: bool
    suffix: str | None
    meshes: bool
    previews: bool
    keep_meshes: bool
    out: Path | None


# ------------------------------------------------------------------------------ batch
def fit_batch(
    captures: PathLike | Sequence[Any],
    out_dir: PathLike | None = None,
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
    shard: str | tuple[int, int] | None = None,
    sequence: bool = False,
    smoothness: float = DEFAULT_SMOOTHNESS,
    format: str | None = None,
    previews: bool = False,
    meshes: bool = True,
    keep_meshes: bool = False,
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
    depth: str | None = None,
    all_faces: bool = False,
    mediapipe_model: PathLike | None = None,
    resume: bool = False,
) -> BatchResult:
    """Fit many captures in vectorised optimisations; one bad capture never stops the batch.

    Args:
        captures: a folder (scans and landmark files paired by name, see
            :mod:`fitface.captures`; a folder with photos and no landmark files is a folder of
            photos) or a list of :class:`fitface.captures.Capture`, landmark files or photos.
        out_dir: if given, write ``OUT/<name>/`` per capture (``fit.<ext>`` unless
            ``meshes=False``, ``codes.json``, ``preview.png`` if ``previews``) and the summary
            files (:func:`fitface.outputs.write_batch_summary`); a photo's faces with
            ``all_faces`` go to ``OUT/<name>/face<k>/``.
        shard: ``"K/N"`` or ``(K, N)``, 1-based: fit only the K-th of N contiguous blocks of the
            naturally sorted captures (summary files get a ``-K-of-N`` suffix).
        sequence: the captures are the frames of one subject in natural name order: one shared
            identity code, plus ``smoothness * sum_t ||z_exp(t+1) - z_exp(t)||^2`` (photos too:
            the largest face of each).
        progress: called as ``progress(done, total)`` while writing results (photos: per photo).
        log: called with one-line messages.
        lam: default 1 for 3D captures, 30 for photos.
        depth, all_faces, mediapipe_model: photos only, as :func:`fitface.api.fit`.
        resume: keep the captures of ``out_dir`` that a previous run of the same batch finished
            (same model and options, recorded in ``OUT/batch.json``; a ``codes.json`` newer than
            its inputs, with every file it lists): they are not refitted, and the summary covers
            them and the rest. Half-written captures are redone (``codes.json`` is written last).
            Exact: a chunk of :data:`BATCH_CHUNK` captures is kept when all of its captures are
            finished, else refitted whole, as in the full run, so a resumed batch gives the results
            of an uninterrupted one (a kill loses at most one chunk's work). 3D captures only; not
            with ``sequence``.
        Other arguments: as :func:`fit` (applied to every capture).

    Returns:
        :class:`BatchResult`.

    Raises:
        InputError: the folder does not exist, a bad shard, a bad model or freeze file, options
            the captures cannot take (see :func:`fitface.api.fit`), ``sequence`` with ``shard`` or
            with ``all_faces``, a list mixing photos and 3D captures.
    """
    from fitface.api.photo_capture import check_capture_options, check_depth, check_photo_options, mediapipe_rows
    from fitface.captures import natural_key, parse_shard

    t0 = time.perf_counter()
    say = log or (lambda _msg: None)
    cset, photos = _capture_set(captures)
    shard_kn = None
    if shard is not None:
        shard_kn = parse_shard(shard) if isinstance(shard, str) else parse_shard(f"{shard[0]}/{shard[1]}")
        cset = cset.shard(*shard_kn)
        if sequence:
            raise InputError("--sequence fits one subject jointly and cannot be split with --shard")
    if photos:
        check_photo_options(unit=unit, refine_surface=refine_surface, landmark_set=landmark_set, scale=scale)
        depth = check_depth(depth)
        if sequence and all_faces:
            raise InputError("--sequence fits one subject (the largest face of each photo) and cannot take --all")
    else:
        check_capture_options(depth=depth, all_faces=all_faces, mediapipe_model=mediapipe_model)
        check_scale_mode(scale)
    if resume and (photos or sequence or out_dir is None):
        raise InputError("--resume continues a batch of 3D captures written to an output folder "
                         "(not photos, not --sequence)")
    dec = load_fit_model(model)
    indices = mediapipe_rows(dec) if photos else None  # a model without the set fails before mediapipe runs
    if lam is None:
        from fitface.landmarks.photo_fit import PHOTO_LAMBDA

        lam = PHOTO_LAMBDA if photos else DEFAULT_LAMBDA
    run = _Run(lam, steps, restarts, seed, freeze_arg(dec, freeze), sequence, smoothness, refine_surface,
               None if format is None else mesh_suffix(format, None), meshes, previews, keep_meshes,
               None if out_dir is None else Path(out_dir))
    failures: list[tuple[str, str]] = [(p.name, p.reason) for p in cset.problems]
    results: list[FitResult] = []
    resumable, kept = False, 0
    if run.out is not None and not photos and not sequence:
        options = _batch_options(dec, run, unit, scale, landmark_set, freeze)
        resumable = _record_options(run.out, options, shard_kn, resume, say)
    rank: dict[str, int] = {}  # result name -> its place in capture order

    def prepared(caps: list[PreparedCapture]) -> list[PreparedCapture]:
        for c in caps:
            rank.setdefault(c.name, len(rank))
        return caps

    if photos:
        from fitface.api.photo_capture import prepare_photo
        from fitface.landmarks.mediapipe_mesh import FaceMeshDetector

        total = len(cset.captures)
        say(f"{total} photos to fit, {len(failures)} unusable")
        with FaceMeshDetector(mediapipe_model) as det:
            def lift(c) -> list[PreparedCapture]:
                try:
                    if c.scan is not None:
                        raise InputError("a photo is a capture of its own: it takes no scan", c.scan)
                    return prepared(prepare_photo(dec, c.landmarks, indices, depth=depth, all_faces=all_faces,
                                                  detector=det, name=c.name, keep_image=previews and not sequence))
                except (InputError, ValueError, OSError) as exc:
                    failures.append((c.name, one_line(exc)))
                    return []

            if sequence:  # one joint fit of every photo's largest face
                _fit_and_write(dec, [f for c in cset.captures for f in lift(c)], run, results, failures,
                               _ticker(progress, total))
            else:  # photo by photo (its faces jointly), as a single fit of the photo
                for i, c in enumerate(cset.captures):
                    _fit_and_write(dec, lift(c), run, results, failures)
                    if progress is not None:
                        progress(i + 1, total)
    else:
        # read every capture; a bad file is that capture's failure
        caps: list[PreparedCapture] = []
        for c in cset.captures:
            try:
                caps.extend(prepared([prepare_capture(dec, c.landmarks, c.scan, unit, landmark_set, c.name, scale)]))
            except InputError as exc:
                failures.append((c.name, str(exc)))
        say(f"{len(caps)} captures to fit, {len(failures)} unusable")
        if sequence and len({c.set_name for c in caps}) > 1:
            raise InputError("--sequence: the frames use different landmark sets")
        groups: dict[str, list[PreparedCapture]] = {}
        for c in caps:
            groups.setdefault(c.set_name, []).append(c)
        chunk = max(len(caps) if sequence else BATCH_CHUNK, 1)
        tick = _ticker(progress, len(caps))
        for group in groups.values():
            for i in range(0, len(group), chunk):
                part = group[i:i + chunk]
                if not sequence:
                    for j, c in enumerate(part):  # its place in its chunk seeds its start, resumed or not
                        c.init_row = j
                if resumable:  # a chunk is kept whole or refitted whole: the engine's float results
                    # depend on which captures share a call (BLAS blocking, amplified by Adam where a
                    # gradient is ~0), so only the full run's chunks reproduce its results exactly
                    done = [_finished_result(dec, c, run) for c in part]
                    if all(d is not None for d in done):
                        results.extend(done)
                        kept += len(done)
                        for _ in done:
                            tick()
                        continue
                _fit_and_write(dec, part, run, results, failures, tick)
        if resume:
            say(f"--resume: kept {kept} captures finished by the previous run, fitted {len(caps) - kept}")
    results.sort(key=lambda r: rank.get(r.name, 0))
    failures.sort(key=lambda f: natural_key(f[0]))
    batch = BatchResult(results, failures, {}, 0.0)
    batch.resumed = kept
    batch.seconds = time.perf_counter() - t0
    if run.out is not None:
        batch.files = write_summary(run.out, batch, dec.model_id, cset.ignored, shard_kn, sequence,
                                    model_reference(dec))
    return batch


# ------------------------------------------------------------------------------ resume
def _batch_options(dec, run: _Run, unit, scale, landmark_set, freeze) -> dict[str, Any]:
    """Everything that decides a capture's result in a batch of 3D captures (``batch.json``)."""
    from fitface.io.codes import to_json

    return to_json({
        "model_id": dec.model_id, "lambda": float(run.lam), "steps": run.steps, "restarts": run.restarts,
        "seed": int(run.seed), "unit": unit, "scale": scale, "landmark_set": landmark_set,
        "refine_surface": bool(run.refine), "freeze": {k: np.asarray(v).tolist() for k, v in sorted(run.freeze_codes.items())},
        "format": run.suffix, "meshes": bool(run.meshes), "previews": bool(run.previews),
        "chunk": BATCH_CHUNK,
    }, "batch")


def _record_options(out: Path, options: dict[str, Any], shard_kn, resume: bool, say) -> bool:
    """Write ``OUT/batch[-K-of-N].json`` (the batch's options); with ``resume``, first compare it
    with the previous run's. Returns whether finished captures may be kept.

    Raises:
        InputError: ``resume`` and the previous run used other options.
    """
    import json

    from fitface.io.atomic import write_text
    from fitface.outputs import shard_tag

    path = out / f"batch{shard_tag(shard_kn)}.json"
    keep = False
    if resume:
        try:
            before = json.loads(path.read_text()).get("options")
        except (OSError, ValueError, AttributeError):
            before = None
        if before is None:
            say(f"--resume: no readable {path.name} in {out} (not a batch's folder, or one from before --resume): "
                f"fitting every capture")
        elif before != options:
            diff = [k for k in options if before.get(k) != options[k]] or sorted(set(before) - set(options))
            raise InputError(f"--resume: the batch in this folder was made with other options ({', '.join(diff)}); "
                             f"rerun without --resume, or into another folder", out)
        else:
            keep = True
    write_text(path, json.dumps({"format_version": 1, "options": options}, indent=1) + "\n")
    return keep


def _finished_result(dec, cap: PreparedCapture, run: _Run) -> FitResult | None:
    """The previous run's result of ``cap`` when it is complete and current, else None.

    Complete: ``codes.json`` (written last) reads, names this model, the capture's own files and
    the run's fit options, is not older than those files, and every output file exists."""
    from fitface.fitting.similarity import Similarity
    from fitface.io.codes import read_codes
    from fitface.outputs import CODES_NAME, MESH_NAME, PREVIEW_NAME

    folder = _out_folder(run.out, cap)
    path = folder / CODES_NAME
    try:
        made = path.stat().st_mtime
        codes = read_codes(path)
    except (OSError, InputError):
        return None
    ex = codes.extra
    same = (codes.model_id == dec.model_id and ex.get("lambda") == float(run.lam) and ex.get("steps") == run.steps
            and ex.get("restarts") == run.restarts and ex.get("seed") == int(run.seed)
            and ex.get("landmarks_file") == (None if cap.landmarks_path is None else str(cap.landmarks_path))
            and ex.get("scan_file") == (None if cap.scan_path is None else str(cap.scan_path)))
    if not same:
        return None
    files = {"codes": path}
    if run.meshes:
        files["mesh"] = folder / f"{MESH_NAME}{run.suffix or mesh_suffix(None, cap.scan_path)}"
    if run.previews:
        files["preview"] = folder / PREVIEW_NAME
    try:
        inputs = [p.stat().st_mtime for p in (cap.landmarks_path, cap.scan_path) if p is not None]
        if any(t > made for t in inputs) or not all(f.is_file() for f in files.values()):
            return None
    except OSError:
        return None
    try:
        transform = Similarity.from_json(codes.transform)
    except ValueError:
        return None
    return FitResult(cap.name, None, np.asarray(dec.faces), codes, cap.targets, None, transform, files)


def _capture_set(captures: PathLike | Sequence[Any]):
    """``(CaptureSet, photos: bool)`` of a folder or a list (a folder with photos and no landmark
    captures is a photo folder)."""
    from fitface.api.photo_capture import is_photo_file
    from fitface.captures import Capture, CaptureSet, discover_captures, discover_photos

    if isinstance(captures, (str, os.PathLike)):
        cset = discover_captures(captures)
        if not cset.captures:
            pics = discover_photos(captures)
            if pics.captures or pics.problems:
                return pics, True
        return cset, False
    items = []
    for c in captures:
        if isinstance(c, Capture):
            items.append(c)
        elif isinstance(c, (str, os.PathLike)):
            items.append(Capture(Path(c).stem, Path(c)))
        else:
            items.append(Capture(*c))
    kinds = {is_photo_file(c.landmarks) for c in items}
    if len(kinds) > 1:
        raise InputError("a batch takes photos or 3D landmark captures, not both")
    return CaptureSet(items, [], 0), kinds == {True}


def _ticker(progress: Callable[[int, int], None] | None, total: int) -> Callable[[], None]:
    """A callback counting done items and calling ``progress(done, total)``."""
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    return tick


def _out_folder(out: Path, cap: PreparedCapture) -> Path:
    """``OUT/<name>`` (a photo's face with all_faces: ``OUT/<photo>/face<k>``)."""
    return out / cap.photo.stem / cap.photo.subdir if cap.photo is not None else out / cap.name


def _fit_and_write(dec, caps: list[PreparedCapture], run: _Run, results: list[FitResult],
                   failures: list[tuple[str, str]], tick: Callable[[], None] | None = None) -> None:
    """Fit captures jointly (:func:`_fit_chunk`), then finish, write and collect each; ``tick``
    after every fitted capture."""
    if not caps:
        return
    fitted = _fit_chunk(dec, caps, run.lam, run.steps, run.restarts, run.seed, run.freeze_codes, run.sequence,
                        run.smoothness, run.refine, failures)
    zs = np.stack([z for _, z, _, _ in fitted]) if fitted else np.zeros((0, dec.layout.dim))
    verts = dec.vertices(zs) if fitted and (run.meshes or run.previews or run.keep_meshes) else None  # (b, V, 3)
    for j, (cap, z, t_model, surface) in enumerate(fitted):
        try:
            res = finish_fit(dec, cap, z, t_model, run.lam, run.steps, run.restarts, run.seed, surface, decode=False)
            if verts is not None:
                res.vertices = res.transform.apply(verts[j])[0]
            if run.out is not None:
                from fitface.outputs import write_fit_files

                suffix = run.suffix or mesh_suffix(None, cap.scan_path)
                pic = res.preview() if run.previews else None
                res.files = write_fit_files(_out_folder(run.out, cap), res.vertices, res.faces, res.codes, suffix, pic,
                                            write_mesh=run.meshes)
            if not run.keep_meshes:
                res.vertices = None
            if res.photo is not None:
                res.photo.image = None  # a batch keeps no photos (PhotoFace.load_image reads it again)
            results.append(res)
        except (InputError, ValueError, OSError) as exc:
            failures.append((cap.name, one_line(exc)))
        if tick is not None:
            tick()


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
