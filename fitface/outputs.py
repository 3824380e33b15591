"""Writing a fit's results: the fitted mesh, ``codes.json``, a preview PNG, batch summaries.

Files in a fit's output folder (``fitface fit -o OUT`` and ``OUT/<capture>/`` of a batch):

    fit.<ext>      the fitted mesh in the capture's frame and unit (``ext`` = the scan's format,
                   ``.ply`` without a scan, or ``--format``)
    codes.json     :mod:`fitface.io.codes` layout (model_id, model, unit, codes, transform); the
                   keys after ``transform`` are lambda, landmark_set, landmark_rms,
                   landmark_residuals (L x 3, fitted - target), landmark_distances (L), loss,
                   steps, restarts, seed, unit_source, unit_inference (when inferred), capture,
                   and surface (distances to the scan) when refined (docs/formats.md)
    preview.png    shaded fit, targets and residuals coloured (:func:`fitface.preview.fit_preview`)

A batch adds, in its output folder: ``summary.csv`` (one row per capture, failures included),
``summary.json`` (every capture's summary and the failure list) and ``failures.txt``
(``name<TAB>reason`` per line); with ``--shard K/N`` they are named ``summary-K-of-N.csv`` etc.
so shards can share a folder.

Convention: every file is written atomically (temporary file + rename), and all of a fit's
files are computed in memory before the first one is written, so a failure before writing
leaves nothing behind; the output folder is created only when the first file is written.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fitface.io.atomic import write_text

#: Name (without suffix) of the fitted mesh in an output folder.
MESH_NAME = "fit"
#: Name of the codes file in an output folder.
CODES_NAME = "codes.json"
#: Name of the preview picture in an output folder.
PREVIEW_NAME = "preview.png"
#: Columns of ``summary.csv``, in order.
SUMMARY_COLUMNS = ("name", "status", "landmark_rms", "unit", "scale", "surface_median", "landmarks", "scan",
                   "out_dir", "reason")


def write_fit_files(
    out_dir: str | os.PathLike,
    vertices: np.ndarray,
    faces: np.ndarray,
    codes: Any,
    mesh_suffix: str = ".ply",
    preview: np.ndarray | None = None,
    write_mesh: bool = True,
) -> dict[str, Path]:
    """Write one fit's files (each atomically).

    Args:
        out_dir: output folder (created if needed).
        vertices: (V, 3) float, the fitted mesh, capture frame and unit.
        faces: (F, 3) int.
        codes: a :class:`fitface.io.codes.Codes`.
        mesh_suffix: ``.ply``, ``.obj``, ``.off`` or ``.stl``.
        preview: optional (H, W, 3) uint8 RGB picture.
        write_mesh: False skips the mesh.

    Returns:
        ``{"mesh": path, "codes": path, "preview": path}`` for the files written.
    """
    from fitface.io.atomic import write_text
    from fitface.io.codes import format_codes
    from fitface.io.mesh import save_mesh

    out = Path(out_dir)
    files: dict[str, Path] = {}
    if write_mesh:
        files["mesh"] = out / f"{MESH_NAME}{mesh_suffix}"
    files["codes"] = out / CODES_NAME
    if preview is not None:
        files["preview"] = out / PREVIEW_NAME
    # the codes are validated first (every number), but written last: a codes.json in a folder
    # means its mesh and picture are complete (what `fitface batch --resume` relies on)
    text = format_codes(codes)
    if write_mesh:
        save_mesh(files["mesh"], vertices, faces)
    if preview is not None:
        from fitface.io.image import write_png

        write_png(files["preview"], preview)
    write_text(files["codes"], text)
    return files


def shard_tag(shard: tuple[int, int] | None) -> str:
    """The suffix of a shard's batch files: ``"-K-of-N"`` (``""`` for the whole batch)."""
    return "" if shard is None else f"-{shard[0]}-of-{shard[1]}"


def summary_names(shard: tuple[int, int] | None) -> tuple[str, str, str]:
    """File names of (summary CSV, summary JSON, failure list) for a shard (or the whole batch)."""
    tag = shard_tag(shard)
    return f"summary{tag}.csv", f"summary{tag}.json", f"failures{tag}.txt"


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


def write_batch_summary(
    out_dir: str | os.PathLike,
    rows: Iterable[Mapping[str, Any]],
    document: Mapping[str, Any],
    failures: Iterable[tuple[str, str]],
    shard: tuple[int, int] | None = None,
) -> dict[str, Path]:
    """Write ``summary.csv``, ``summary.json`` and ``failures.txt`` (atomically).

    Args:
        rows: one mapping per capture with the keys of :data:`SUMMARY_COLUMNS`.
        document: the JSON summary (written as is).
        failures: ``(name, reason)`` pairs.
        shard: ``(K, N)`` to suffix the names (see module doc).

    Returns:
        ``{"csv": path, "json": path, "failures": path}``.
    """
    out = Path(out_dir)
    csv_name, json_name, fail_name = summary_names(shard)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SUMMARY_COLUMNS)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in SUMMARY_COLUMNS])
    files = {"csv": out / csv_name, "json": out / json_name, "failures": out / fail_name}
    write_text(files["csv"], buf.getvalue())
    write_text(files["json"], json.dumps(document, indent=1, allow_nan=False) + "\n")
    lines = "".join(f"{name}\t{' '.join(str(reason).split())}\n" for name, reason in failures)
    write_text(files["failures"], lines)
    return files


__all__ = ["CODES_NAME", "MESH_NAME", "PREVIEW_NAME", "SUMMARY_COLUMNS", "shard_tag", "summary_names",
           "write_batch_summary", "write_fit_files"]
