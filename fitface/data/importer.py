"""Import a folder of registered meshes plus a labels CSV into the fitface dataset format.

The CSV has a header with at least the columns ``file``, ``identity`` and ``expression``;
every further column is one more factor (e.g. ``viseme``). ``file`` is a path relative to
the mesh folder (or absolute). A label cell that is empty or ``-`` means unlabeled (-1).

Convention:
    * Class names are the distinct strings of a column among the imported rows, sorted;
      except the expression column when every name is one of the seven basic emotions
      (:data:`fitface.data.emotions.EMOTIONS`, case-insensitive): then the classes are
      exactly ``EMOTIONS`` in that order, so that class k is ``EMOTIONS[k]`` as in every
      fitface dataset.
    * Topology: every mesh must have the template's vertex count and the identical
      ``faces`` array (same triangles, same order). The template is ``template`` if given,
      else the first mesh that loads.
    * Rigid alignment (``align=True``) is the closed-form least-squares Procrustes (Kabsch)
      fit of each mesh onto the template over all vertices: rotation (no reflection) and
      translation, plus a uniform scale only with ``scale=True``.
    * Split by identity, deterministic given ``seed``: the identities that have imported
      samples are permuted by ``np.random.default_rng(seed)``; with K >= 3 identities val and
      test get ``max(1, round(fraction * K))`` identities each and train the rest; with K == 2
      one is train, one val; with K == 1 all is train. Samples without an identity label go
      to train.
    * Units are not converted: ``unit`` states the unit the meshes are in.

A file that cannot be used (missing, unreadable, wrong vertex count or triangles, NaN,
bad CSV row) is skipped and reported with its reason in the :class:`ImportReport`; it is
never silently accepted.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from fitface.errors import InputError
from fitface.units import check_unit

REQUIRED_COLUMNS = ("file", "identity", "expression")
UNLABELED_CELLS = ("", "-")
DEFAULT_SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


class Skipped(NamedTuple):
    """A CSV row or file that was not imported, and why (one line)."""

    file: str
    reason: str


@dataclass
class ImportReport:
    """What :func:`import_meshes` did.

    Attributes:
        out_dir: the dataset folder written, or None when nothing was imported.
        imported: number of samples written.
        skipped: rows / files not imported, with reasons, in CSV order.
        unlisted: mesh-folder files not named in the CSV (ignored).
        split_counts: samples per split.
        template: where the template came from (a path, or "first mesh: <file>").
    """

    out_dir: Path | None
    imported: int
    skipped: list[Skipped] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)
    split_counts: dict[str, int] = field(default_factory=dict)
    template: str = ""

    def summary(self) -> str:
        """One line: ``imported N, skipped K``."""
        return f"imported {self.imported}, skipped {len(self.skipped)}"

    def lines(self) -> list[str]:
        """The summary line followed by one line per skipped file."""
        out = [self.summary()]
        out += [f"  skipped {s.file}: {s.reason}" for s in self.skipped]
        if self.unlisted:
            out.append(f"  {len(self.unlisted)} file(s) in the mesh folder are not in the CSV (ignored)")
        return out


class Alignment(NamedTuple):
    """A similarity transform ``aligned = scale * source @ rotation.T + translation``.

    Attributes:
        rotation: (3, 3) float64, proper rotation (det +1).
        translation: (3,) float64, in the mesh unit.
        scale: float (1.0 for a rigid fit).
        aligned: (V, 3) float64, the transformed source.
    """

    rotation: np.ndarray
    translation: np.ndarray
    scale: float
    aligned: np.ndarray


def procrustes_align(source: np.ndarray, target: np.ndarray, scale: bool = False) -> Alignment:
    """Least-squares rigid (or similarity) fit of ``source`` onto ``target`` (Kabsch / Umeyama).

    Minimises ``sum_i |s R source_i + t - target_i|^2`` over rotations R (det +1),
    translations t and, if ``scale``, s > 0.

    Args:
        source: (V, 3) float, points in correspondence with ``target``.
        target: (V, 3) float, same unit.
        scale: also fit a uniform scale.

    Raises:
        ValueError: shapes differ, or the points are coincident or collinear (no unique rotation).
    """
    from fitface.fitting.similarity import umeyama  # the project's one similarity solver

    src = np.asarray(source, dtype=np.float64)
    dst = np.asarray(target, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3:
        raise ValueError(f"source, target: expected equal (V, 3) shapes, got {src.shape} and {dst.shape}")
    sim = umeyama(src, dst, scale=scale)  # ValueError on coincident / collinear points
    rot, t, s = sim.rotation[0], sim.translation[0], float(sim.scale[0])
    return Alignment(rot, t, s, s * src @ rot.T + t)


# --------------------------------------------------------------------------------------------


class _Row(NamedTuple):
    line: int
    file: str
    labels: dict[str, str]  # factor -> raw cell


def _read_labels_csv(labels_csv: Path) -> tuple[list[str], list[_Row], list[Skipped]]:
    """Factor names (CSV order, identity and expression first) and rows; bad rows are skipped."""
    if not labels_csv.is_file():
        raise InputError("no such labels file", labels_csv)
    try:
        text = labels_csv.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError("not a UTF-8 text file", labels_csv) from None
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if not header:
        raise InputError("empty labels file (expected a header: file,identity,expression,...)", labels_csv)
    header = [h.strip() for h in header]
    for col in REQUIRED_COLUMNS:
        if col not in header:
            raise InputError(f"missing column {col!r} (header is {','.join(header)})", labels_csv)
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise InputError(f"duplicate column {dup[0]!r}", labels_csv)
    if "" in header:
        raise InputError("a column has an empty name", labels_csv)
    factors = ["identity", "expression"] + [h for h in header if h not in REQUIRED_COLUMNS]
    for bad in ("index", "split"):
        if bad in factors:
            raise InputError(f"column name {bad!r} is reserved; rename it", labels_csv)
    rows, skipped, seen = [], [], set()
    for line, cells in enumerate(reader, start=2):
        if not cells or all(not c.strip() for c in cells):
            continue
        name = cells[header.index("file")].strip() if len(cells) > header.index("file") else ""
        label = name or f"{labels_csv.name} line {line}"
        if len(cells) != len(header):
            skipped.append(Skipped(label, f"{labels_csv.name} line {line} has {len(cells)} fields, expected {len(header)}"))
            continue
        if not name:
            skipped.append(Skipped(label, "empty 'file' cell"))
            continue
        if name in seen:
            skipped.append(Skipped(name, f"listed twice in {labels_csv.name} (line {line})"))
            continue
        seen.add(name)
        rows.append(_Row(line, name, {f: cells[header.index(f)].strip() for f in factors}))
    return factors, rows, skipped


def _classes(factor: str, cells: Sequence[str]) -> list[str]:
    from fitface.data.emotions import EMOTIONS

    names = sorted({c for c in cells if c not in UNLABELED_CELLS})
    if factor == "expression" and names and all(n.lower() in EMOTIONS for n in names):
        return list(EMOTIONS)
    return names


def _label_of(factor: str, cell: str, classes: list[str]) -> int:
    if cell in UNLABELED_CELLS:
        return -1
    if factor == "expression" and cell not in classes and cell.lower() in classes:
        return classes.index(cell.lower())
    return classes.index(cell)


def split_by_identity(
    identity: np.ndarray, seed: int = 0, fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS
) -> np.ndarray:
    """Assign whole identities to train / val / test (rules of :func:`fitface.data.plan.split_by_identity`).

    Args:
        identity: (N,) int, identity label per sample (-1 = unlabeled -> train).
        seed: seed of the permutation of identities.
        fractions: (train, val, test) fractions; non-negative, summing to 1.

    Returns:
        (N,) str array of "train" | "val" | "test".
    """
    from fitface.data import plan

    fr = np.asarray(fractions, dtype=np.float64)
    if fr.shape != (3,) or (fr < 0).any() or abs(fr.sum() - 1.0) > 1e-6:
        raise InputError(f"split fractions: expected three non-negative numbers summing to 1, got {list(fractions)}")
    identity = np.asarray(identity, dtype=np.int64)
    out = np.full(identity.shape, "train", dtype="<U5")
    ids = np.unique(identity[identity >= 0])  # (K,) sorted
    if len(ids):
        per_id = plan.split_by_identity(len(ids), np.random.default_rng(seed), tuple(fr))  # (K,)
        labeled = identity >= 0
        out[labeled] = per_id[np.searchsorted(ids, identity[labeled])]
    return out


def import_meshes(
    mesh_dir: str | os.PathLike,
    labels_csv: str | os.PathLike,
    out_dir: str | os.PathLike,
    template: str | os.PathLike | None = None,
    align: bool = False,
    scale: bool = False,
    unit: str = "mm",
    seed: int = 0,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    overwrite: bool = False,
    progress: bool | None = False,
) -> ImportReport:
    """Import registered meshes listed in a labels CSV into a dataset folder.

    Args:
        mesh_dir: folder of meshes (any format :func:`fitface.io.mesh.load_mesh` reads).
        labels_csv: CSV with columns file, identity, expression[, more factors].
        out_dir: dataset folder to create (atomically).
        template: mesh defining the topology (and the alignment target); default: the first
            mesh that loads.
        align: rigidly align every mesh onto the template (Procrustes).
        scale: with ``align``, also fit a uniform scale.
        unit: the unit the meshes are in (stored; not converted).
        seed: seed of the identity split.
        split_fractions: (train, val, test) fractions of identities.
        overwrite: replace an existing dataset at ``out_dir``.
        progress: show a tqdm progress bar (None: only on a terminal).

    Returns:
        An :class:`ImportReport`. When no mesh could be imported nothing is written and
        ``report.out_dir`` is None.

    Raises:
        InputError: a missing mesh folder or labels file, a CSV without the required
            columns, an unreadable --template, an existing ``out_dir`` without overwrite.
    """
    from tqdm import tqdm

    from fitface.data.format import META_FILE, DatasetWriter, is_replaceable
    from fitface.io.mesh import load_mesh

    mesh_dir, labels_csv, out_dir = Path(mesh_dir), Path(labels_csv), Path(out_dir)
    check_unit(unit)
    split_by_identity(np.zeros(0, dtype=np.int64), seed, split_fractions)  # validate fractions early
    if not mesh_dir.is_dir():
        raise InputError("no such mesh folder", mesh_dir)
    if out_dir.exists() and not overwrite:
        raise InputError("already exists (use --overwrite to replace it)", out_dir)
    if out_dir.exists() and not is_replaceable(out_dir):
        raise InputError(f"exists and is not a fitface dataset (no {META_FILE}); refusing to overwrite it", out_dir)
    factors, rows, skipped = _read_labels_csv(labels_csv)

    tpl_v = tpl_f = None
    tpl_source = ""
    if template is not None:
        tm = load_mesh(template, require_faces=True)  # InputError names the file
        tpl_v, tpl_f = np.asarray(tm.vertices, np.float64), np.asarray(tm.faces, np.int64)
        tpl_source = str(template)

    listed = {(mesh_dir / r.file).resolve() for r in rows}
    unlisted = sorted(
        p.name for p in mesh_dir.iterdir() if p.is_file() and p.resolve() not in listed and p.resolve() != labels_csv.resolve()
    )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.import-", dir=out_dir.parent))
    try:
        scratch = None  # (R, V, 3) float32 memmap, one row per CSV row, filled for good rows
        good: list[_Row] = []
        good_rows: list[int] = []
        bar = tqdm(rows, desc="import", unit="mesh", disable=(None if progress is None else not progress))
        for r_i, row in enumerate(bar):
            path = mesh_dir / row.file
            if not path.is_file():
                skipped.append(Skipped(row.file, "no such file"))
                continue
            try:
                mesh = load_mesh(path, require_faces=True)
            except InputError as exc:
                skipped.append(Skipped(row.file, exc.problem))
                continue
            v = np.asarray(mesh.vertices, np.float64)  # (V, 3) in `unit`
            f = np.asarray(mesh.faces, np.int64)  # (F, 3)
            if not np.isfinite(v).all():
                bad = int(np.flatnonzero(~np.isfinite(v).all(axis=1))[0])
                skipped.append(Skipped(row.file, f"vertex {bad} is NaN or inf"))
                continue
            if tpl_v is None:
                tpl_v, tpl_f, tpl_source = v, f, f"first mesh: {row.file}"
            reason = _topology_mismatch(v, f, tpl_v, tpl_f)
            if reason:
                skipped.append(Skipped(row.file, reason))
                continue
            if align:
                v = procrustes_align(v, tpl_v, scale=scale).aligned
            if scratch is None:
                scratch = np.lib.format.open_memmap(
                    scratch_dir / "vertices.npy", mode="w+", dtype=np.float32, shape=(len(rows), len(tpl_v), 3)
                )
            scratch[r_i] = v.astype(np.float32)
            good.append(row)
            good_rows.append(r_i)
        bar.close()

        report = ImportReport(None, len(good), skipped, unlisted, {}, tpl_source)
        if not good:
            return report

        # ---- labels from the imported rows
        classes = {f: _classes(f, [r.labels[f] for r in good]) for f in factors}
        labels = {f: np.array([_label_of(f, r.labels[f], classes[f]) for r in good], dtype=np.int64) for f in factors}
        split = split_by_identity(labels["identity"], seed, split_fractions)

        with DatasetWriter(out_dir, len(good), tpl_v, tpl_f, unit=unit, overwrite=overwrite) as w:
            src = np.asarray(good_rows, dtype=np.int64)
            step = max(1, (64 << 20) // (len(tpl_v) * 12))
            for i0 in range(0, len(src), step):
                w.vertices[i0 : i0 + step] = scratch[src[i0 : i0 + step]]
            del scratch
            report.out_dir = w.finish(
                labels=labels,
                classes=classes,
                split=split,
                info={
                    "builder": "import",
                    "source": str(mesh_dir),
                    "labels_csv": str(labels_csv),
                    "template": tpl_source,
                    "aligned": bool(align),
                    "scale": bool(align and scale),
                    "seed": int(seed),
                    "split_fractions": [float(x) for x in split_fractions],
                    "sample_files": [r.file for r in good],
                    "skipped": [list(s) for s in skipped],
                },
            )
        report.split_counts = {s: int((split == s).sum()) for s in ("train", "val", "test")}
        return report
    finally:
        shutil.rmtree(scratch_dir, ignore_errors=True)


def _topology_mismatch(v: np.ndarray, f: np.ndarray, tpl_v: np.ndarray, tpl_f: np.ndarray) -> str:
    """'' when (v, f) has the template's topology, else a one-line reason."""
    if len(v) != len(tpl_v):
        return f"vertex-count mismatch: {len(v)} vertices, the template has {len(tpl_v)}"
    if f.shape != tpl_f.shape:
        return f"triangle-count mismatch: {len(f)} triangles, the template has {len(tpl_f)}"
    diff = np.flatnonzero((f != tpl_f).any(axis=1))
    if diff.size:
        return f"different triangles from the template (first at triangle {int(diff[0])})"
    return ""
