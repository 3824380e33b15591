"""The fitface training-dataset format: write with :class:`DatasetWriter`, read with :func:`load_dataset`.

A dataset is a folder (format version 1)::

    dataset.json       format name and version, unit, counts, factors with class names,
                       split counts, coefficient and extra descriptions, free provenance ("info")
    template.npz       "vertices" (V, 3) float64 in `unit`; "faces" (F, 3) int64 (no pickle)
    vertices.npy       (N, V, 3) float32 in `unit`, every sample in the template's topology;
                       read through a memory map, so a dataset larger than RAM still trains
    labels.csv         header ``index,<factor 1>,...,<factor K>,split``; one row per sample;
                       an integer class per factor (-1 = unlabeled); split is train|val|test
    coefficients.npz   optional: per factor, (N, k) float32 generating coefficients (ground truth)
    landmarks.json     optional: {"sets": [LandmarkSet.to_json(), ...]}
    extras.npz         optional: per-sample (N,) numeric arrays (sequence, frame, intensity, ...)

Convention: class ``c`` of factor ``f`` is named ``dataset.json["factors"][i]["classes"][c]``;
label ``-1`` means unlabeled. The label columns appear in factor order. The split is by
identity: every labeled identity lies in exactly one of train / val / test (unlabeled
samples may be anywhere). Vertices are float32 in ``unit`` (see :mod:`fitface.units`).
Nothing is pickled: every ``np.load`` uses ``allow_pickle=False``.

Writing is atomic: :class:`DatasetWriter` fills a hidden temporary folder beside the
target and :meth:`DatasetWriter.finish` validates it and renames it into place; an
exception before ``finish`` leaves no output folder.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, NamedTuple, Sequence

import numpy as np

from fitface.checks import check_face_index, check_faces, check_shape
from fitface.errors import InputError
from fitface.units import check_unit

FORMAT_NAME = "fitface-dataset"
FORMAT_VERSION = 1

META_FILE = "dataset.json"
TEMPLATE_FILE = "template.npz"
VERTICES_FILE = "vertices.npy"
LABELS_FILE = "labels.csv"
COEFFICIENTS_FILE = "coefficients.npz"
LANDMARKS_FILE = "landmarks.json"
EXTRAS_FILE = "extras.npz"

SPLITS = ("train", "val", "test")
UNLABELED = -1

#: Bytes of vertex data examined at a time when scanning a memory-mapped file for NaN/inf.
SCAN_CHUNK_BYTES = 64 * 1024 * 1024


# --------------------------------------------------------------------------------------------
# Data types
# --------------------------------------------------------------------------------------------


class Factor(NamedTuple):
    """One labeled factor of variation (a label column).

    Attributes:
        name: e.g. ``"identity"``, ``"expression"``, ``"viseme"``.
        classes: class names; label ``c`` means ``classes[c]``.
    """

    name: str
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class Batch(NamedTuple):
    """A batch read from a dataset.

    Attributes:
        indices: (B,) int64 sample indices.
        vertices: (B, V, 3) float32, in the dataset's unit (an ordinary in-RAM array).
        labels: (B, K) int64, -1 = unlabeled, columns in factor order.
    """

    indices: np.ndarray
    vertices: np.ndarray
    labels: np.ndarray


@dataclass
class Dataset:
    """A loaded dataset (see the module docstring for the folder layout).

    Attributes:
        path: the dataset folder.
        vertices: (N, V, 3) float32 in ``unit``; a read-only ``np.memmap`` when loaded with
            ``mmap=True``. Fancy indexing (``vertices[idx]`` with an index array) returns an
            ordinary in-RAM ``np.ndarray``.
        template_vertices: (V, 3) float64 in ``unit``.
        faces: (F, 3) int64.
        unit: length unit of all vertices, e.g. ``"mm"``.
        factors: label columns in order.
        labels: (N, K) int64, -1 = unlabeled.
        split: (N,) str array of ``"train" | "val" | "test"``.
        coefficients: factor -> (N, k) float32 generating coefficients (may be empty).
        coefficient_names: factor -> k names (only for factors that have them).
        landmark_sets: name -> LandmarkSet on the template.
        extras: name -> (N,) per-sample array.
        info: free JSON provenance written by the builder.
        meta: the whole parsed dataset.json.
    """

    path: Path
    vertices: np.ndarray
    template_vertices: np.ndarray
    faces: np.ndarray
    unit: str
    factors: list[Factor]
    labels: np.ndarray
    split: np.ndarray
    coefficients: dict[str, np.ndarray] = field(default_factory=dict)
    coefficient_names: dict[str, list[str]] = field(default_factory=dict)
    landmark_sets: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[1])

    @property
    def factor_names(self) -> list[str]:
        return [f.name for f in self.factors]

    def factor(self, name: str) -> Factor:
        """The factor called ``name``; ``KeyError`` naming the known factors otherwise."""
        for f in self.factors:
            if f.name == name:
                return f
        raise KeyError(f"no factor {name!r}; the dataset has {', '.join(self.factor_names) or 'none'}")

    def label(self, name: str) -> np.ndarray:
        """(N,) int64 labels of factor ``name`` (-1 = unlabeled)."""
        self.factor(name)
        return self.labels[:, self.factor_names.index(name)]

    def indices(self, split: str) -> np.ndarray:
        """(n,) int64 indices of the samples in ``split`` ("train" | "val" | "test"), ascending."""
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
        return np.flatnonzero(self.split == split).astype(np.int64)

    def read(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """(B, V, 3) float32 in-RAM copy of the given samples (any order, repeats allowed)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        out = self.vertices[idx]  # fancy indexing on a memmap copies into an ndarray
        return np.asarray(out)

    def batches(
        self,
        indices: Sequence[int] | np.ndarray | None = None,
        batch_size: int = 64,
        shuffle: bool = False,
        seed: int | np.random.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator[Batch]:
        """Iterate over ``indices`` (default: all samples) in batches read from the memory map.

        Only one batch is in RAM at a time. With ``shuffle`` the order is a permutation drawn
        from ``np.random.default_rng(seed)``; each batch is read in ascending file order
        (faster on disk) and returned in the permuted order.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        idx = np.arange(len(self), dtype=np.int64) if indices is None else np.asarray(indices, np.int64).reshape(-1)
        if shuffle:
            idx = np.random.default_rng(seed).permutation(idx)
        stop = len(idx) - (len(idx) % batch_size if drop_last else 0)
        for i0 in range(0, stop, batch_size):
            b = idx[i0 : i0 + batch_size]  # (B,)
            order = np.argsort(b, kind="stable")
            verts = np.empty((len(b),) + self.vertices.shape[1:], dtype=self.vertices.dtype)
            verts[order] = self.vertices[b[order]]
            yield Batch(b, verts, self.labels[b])

    @functools.cached_property
    def fingerprint(self) -> str:
        """A short content hash (16 hex digits) of dataset.json, labels, file sizes and a few samples."""
        h = hashlib.sha256()
        for name in (META_FILE, LABELS_FILE):
            h.update((self.path / name).read_bytes())
        h.update(np.asarray(self.faces, dtype=np.int64).tobytes())
        h.update(np.asarray(self.template_vertices, dtype=np.float64).tobytes())
        n = len(self)
        h.update(str(tuple(self.vertices.shape)).encode())
        for i in sorted({0, n // 2, n - 1} if n else set()):
            h.update(np.ascontiguousarray(self.vertices[i]).tobytes())
        return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Validation shared by the writer and the loader
# --------------------------------------------------------------------------------------------


def scan_vertices(vertices: np.ndarray, path: os.PathLike | str, check_unwritten: bool = False) -> None:
    """Scan (N, V, 3) vertices in chunks (constant RAM on a memmap) for NaN / inf.

    Raises:
        InputError: naming the first bad sample (and, with ``check_unwritten``, the first
            sample that is all zeros, i.e. was never written by a builder).
    """
    n = vertices.shape[0]
    per_sample = max(1, int(np.prod(vertices.shape[1:])) * vertices.dtype.itemsize)
    step = max(1, SCAN_CHUNK_BYTES // per_sample)
    for i0 in range(0, n, step):
        chunk = np.asarray(vertices[i0 : i0 + step])  # (n, V, 3)
        flat = chunk.reshape(len(chunk), -1)
        finite = np.isfinite(flat).all(axis=1)  # (n,)
        if not finite.all():
            i = int(np.flatnonzero(~finite)[0])
            kind = "NaN" if np.isnan(flat[i]).any() else "inf"
            raise InputError(f"{VERTICES_FILE}: sample {i0 + i} contains {kind}", path)
        if check_unwritten:
            zero = ~flat.any(axis=1)
            if zero.any():
                i = int(np.flatnonzero(zero)[0])
                raise InputError(f"{VERTICES_FILE}: sample {i0 + i} is all zeros (never written?)", path)


def _check_labels(
    labels: np.ndarray, factors: Sequence[Factor], split: np.ndarray, path: os.PathLike | str
) -> None:
    """Range of every label column, split values, and the split being by identity."""
    n = labels.shape[0]
    for k, f in enumerate(factors):
        col = labels[:, k]
        bad = (col < UNLABELED) | (col >= f.num_classes)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"label {int(col[i])} of factor {f.name!r} at sample {i} is out of range "
                f"[-1, {f.num_classes}) ({f.num_classes} classes)",
                path,
            )
    if split.shape != (n,):
        raise InputError(f"split: expected {n} entries, got {split.shape[0] if split.ndim else 0}", path)
    bad = ~np.isin(split, SPLITS)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"split {str(split[i])!r} at sample {i} is not one of {', '.join(SPLITS)}", path)
    names = [f.name for f in factors]
    if "identity" in names:
        ident = labels[:, names.index("identity")]  # (N,)
        code = np.zeros(n, dtype=np.int64)
        for j, s in enumerate(SPLITS):
            code[split == s] = j
        labeled = ident >= 0
        pairs = np.unique(ident[labeled] * len(SPLITS) + code[labeled])  # distinct (identity, split)
        ids = pairs // len(SPLITS)
        twice = ids[1:][ids[1:] == ids[:-1]]
        if twice.size:
            c = int(twice[0])
            where = np.flatnonzero(ident == c)  # samples of that identity
            first = str(split[where[0]])
            i = int(where[np.flatnonzero(split[where] != first)[0]])
            cname = factors[names.index("identity")].classes[c]
            raise InputError(
                f"split is not by identity: identity {cname!r} is in both {first!r} and "
                f"{str(split[i])!r} (sample {i})",
                path,
            )


def _json_safe(obj: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(obj, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: not JSON-serialisable ({exc})") from None


# --------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------


def is_replaceable(path: str | os.PathLike) -> bool:
    """Whether a dataset builder may replace ``path`` (with overwrite on): an existing folder that
    is empty or a fitface dataset (has :data:`META_FILE`); False for anything else."""
    path = Path(path)
    if not path.is_dir():
        return False
    return (path / META_FILE).is_file() or not any(path.iterdir())


class DatasetWriter:
    """Write a dataset folder atomically.

    Fill :attr:`vertices` ((N, V, 3) float32 memmap, in ``unit``) in chunks, then call
    :meth:`finish`. Use as a context manager (or call :meth:`abort`) to clean up the
    temporary folder on error; it is also removed when the writer is garbage-collected
    or the interpreter exits without ``finish``.

    Args:
        out_dir: the dataset folder to create.
        num_samples: N >= 1.
        template_vertices: (V, 3) float, in ``unit``.
        faces: (F, 3) int, indices into the template's vertices.
        unit: length unit (see :mod:`fitface.units`).
        overwrite: replace an existing dataset (or empty folder) at ``out_dir``; a non-empty
            folder that is not a dataset is never replaced.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        num_samples: int,
        template_vertices: np.ndarray,
        faces: np.ndarray,
        unit: str = "mm",
        overwrite: bool = False,
    ):
        self.out_dir = Path(out_dir)
        self.unit = check_unit(unit)
        self.overwrite = bool(overwrite)
        num_samples = int(num_samples)
        if num_samples < 1:
            raise ValueError(f"num_samples: expected >= 1, got {num_samples}")
        template_vertices = np.asarray(template_vertices, dtype=np.float64)
        check_shape("template_vertices", template_vertices, ("V", 3))
        faces = np.asarray(faces)
        check_faces("faces", faces, template_vertices.shape[0])
        if not np.isfinite(template_vertices).all():
            raise ValueError("template_vertices: contains NaN or inf")
        self._check_target()
        self.num_samples = num_samples
        self.template_vertices = template_vertices
        self.faces = faces.astype(np.int64)
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.tmp-", dir=self.out_dir.parent))
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self._tmp), True)
        #: (N, V, 3) float32 writable memmap; fill it in chunks.
        self.vertices = np.lib.format.open_memmap(
            self._tmp / VERTICES_FILE,
            mode="w+",
            dtype=np.float32,
            shape=(num_samples, template_vertices.shape[0], 3),
        )
        self._done = False

    def _check_target(self) -> None:
        if self.out_dir.exists():
            if not self.overwrite:
                raise InputError("already exists (use --overwrite / overwrite=True to replace it)", self.out_dir)
            if not is_replaceable(self.out_dir):
                raise InputError(
                    "exists and is not a fitface dataset (no dataset.json); refusing to overwrite it",
                    self.out_dir,
                )

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self._done:
            self.abort()

    def abort(self) -> None:
        """Discard everything written so far (idempotent)."""
        if getattr(self, "vertices", None) is not None:
            self.vertices = None  # close the memmap
        self._finalizer()

    def finish(
        self,
        labels: Mapping[str, np.ndarray],
        classes: Mapping[str, Sequence[str]],
        split: Sequence[str] | np.ndarray,
        coefficients: Mapping[str, np.ndarray] | None = None,
        coefficient_names: Mapping[str, Sequence[str]] | None = None,
        landmark_sets: Mapping[str, Any] | None = None,
        info: Mapping[str, Any] | None = None,
        extras: Mapping[str, np.ndarray] | None = None,
    ) -> Path:
        """Validate, write the metadata and rename the folder into place.

        Args:
            labels: factor -> (N,) int labels (-1 = unlabeled); dict order = column order.
            classes: factor -> class names (the same keys as ``labels``).
            split: (N,) "train" | "val" | "test", by identity.
            coefficients: factor name (or any key) -> (N, k) float generating coefficients.
            coefficient_names: key of ``coefficients`` -> k names.
            landmark_sets: name -> LandmarkSet on the template.
            info: free JSON-serialisable provenance.
            extras: name -> (N,) numeric per-sample array.

        Returns:
            The final dataset folder.

        Raises:
            ValueError / InputError naming the problem (the output is not created; the
            writer is aborted).
        """
        if self._done:
            raise RuntimeError("finish() was already called")
        try:
            path = self._finish(labels, classes, split, coefficients, coefficient_names, landmark_sets, info, extras)
        except BaseException:
            self.abort()
            raise
        self._done = True
        return path

    def _finish(self, labels, classes, split, coefficients, coefficient_names, landmark_sets, info, extras) -> Path:
        n, tmp = self.num_samples, self._tmp
        # ---- labels and classes
        labels = dict(labels)
        classes = {k: [str(c) for c in v] for k, v in dict(classes).items()}
        if not labels:
            raise ValueError("labels: at least one factor is required")
        if set(labels) != set(classes):
            raise ValueError(f"labels and classes name different factors: {sorted(labels)} vs {sorted(classes)}")
        factors = []
        for name in labels:
            if not name or not isinstance(name, str) or name in ("index", "split") or "," in name:
                raise ValueError(f"labels: bad factor name {name!r}")
            if len(set(classes[name])) != len(classes[name]):
                raise ValueError(f"classes[{name!r}]: class names must be distinct")
            factors.append(Factor(name, tuple(classes[name])))
        cols = []
        for f in factors:
            col = np.asarray(labels[f.name])
            check_shape(f"labels[{f.name!r}]", col, (n,))
            if col.dtype.kind not in "iu":
                raise ValueError(f"labels[{f.name!r}]: expected integers, got dtype {col.dtype}")
            cols.append(col.astype(np.int64))
        label_arr = np.stack(cols, axis=1)  # (N, K)
        split_arr = np.asarray(split).astype(str)
        check_shape("split", split_arr, (n,))
        _check_labels(label_arr, factors, split_arr, self.out_dir)

        # ---- vertices
        self.vertices.flush()
        scan_vertices(self.vertices, self.out_dir, check_unwritten=True)
        self.vertices = None  # close the memmap before renaming

        # ---- optional per-sample arrays
        coef_meta: dict[str, Any] = {}
        if coefficients:
            arrays = {}
            for key, arr in coefficients.items():
                arr = np.asarray(arr, dtype=np.float32)
                check_shape(f"coefficients[{key!r}]", arr, (n, None))
                if not np.isfinite(arr).all():
                    raise ValueError(f"coefficients[{key!r}]: contains NaN or inf")
                arrays[str(key)] = arr
                names = (coefficient_names or {}).get(key)
                if names is not None and len(names) != arr.shape[1]:
                    raise ValueError(
                        f"coefficient_names[{key!r}]: {len(names)} names for {arr.shape[1]} coefficients"
                    )
                coef_meta[str(key)] = {"dim": int(arr.shape[1]), "names": None if names is None else list(map(str, names))}
            np.savez(tmp / COEFFICIENTS_FILE, **arrays)
        elif coefficient_names:
            raise ValueError("coefficient_names given without coefficients")
        extras_meta: dict[str, str] = {}
        if extras:
            arrays = {}
            for key, arr in extras.items():
                arr = np.asarray(arr)
                check_shape(f"extras[{key!r}]", arr, (n,))
                if arr.dtype.kind not in "biuf":
                    raise ValueError(f"extras[{key!r}]: expected a numeric array, got dtype {arr.dtype}")
                arrays[str(key)] = arr
                extras_meta[str(key)] = str(arr.dtype)
            np.savez(tmp / EXTRAS_FILE, **arrays)
        lm_names: list[str] = []
        if landmark_sets:
            sets = []
            for key, ls in landmark_sets.items():
                check_face_index(f"landmark_sets[{key!r}]", ls.face_index, len(self.faces))
                obj = ls.to_json()
                obj["name"] = str(key)
                sets.append(obj)
                lm_names.append(str(key))
            (tmp / LANDMARKS_FILE).write_text(json.dumps({"sets": sets}), encoding="utf-8")

        # ---- template, labels, metadata (dataset.json last)
        np.savez(tmp / TEMPLATE_FILE, vertices=self.template_vertices, faces=self.faces)
        (tmp / LABELS_FILE).write_text(_labels_csv(label_arr, factors, split_arr), encoding="utf-8")
        from fitface import __version__

        meta = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "unit": self.unit,
            "num_samples": n,
            "num_vertices": int(self.template_vertices.shape[0]),
            "num_faces": int(self.faces.shape[0]),
            "factors": [{"name": f.name, "classes": list(f.classes)} for f in factors],
            "split_counts": {s: int((split_arr == s).sum()) for s in SPLITS},
            "coefficients": coef_meta,
            "extras": extras_meta,
            "landmark_sets": lm_names,
            "files": sorted(p.name for p in tmp.iterdir()) + [META_FILE],
            "fitface_version": __version__,
            "info": _json_safe(dict(info or {}), "info"),
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")

        # ---- validate what a reader will see, then rename into place
        load_dataset(tmp, mmap=True, check_values=False)
        self._check_target()  # the target may have appeared meanwhile
        if self.out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.old-", dir=self.out_dir.parent))
            os.replace(self.out_dir, old / "d")
            try:
                os.replace(tmp, self.out_dir)
            except BaseException:
                os.replace(old / "d", self.out_dir)
                raise
            finally:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, self.out_dir)
        self._finalizer.detach()
        return self.out_dir


def _labels_csv(labels: np.ndarray, factors: Sequence[Factor], split: np.ndarray) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", *[f.name for f in factors], "split"])
    for i in range(labels.shape[0]):
        w.writerow([i, *labels[i].tolist(), split[i]])
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# Loader
# --------------------------------------------------------------------------------------------


def _npz(path: Path, what: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise InputError(f"missing {what} file {path.name}", path.parent) from None
    except (ValueError, OSError, EOFError) as exc:  # includes pickled object arrays, truncation
        raise InputError(f"{path.name}: cannot read ({exc})", path.parent) from None


def _read_meta(root: Path) -> dict[str, Any]:
    meta_path = root / META_FILE
    if not root.is_dir():
        raise InputError("not a folder" if root.exists() else "no such dataset folder", root)
    if not meta_path.is_file():
        raise InputError(f"missing {META_FILE} (not a fitface dataset)", root)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{META_FILE}: malformed JSON ({exc})", root) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise InputError(f"{META_FILE}: not a {FORMAT_NAME} file", root)
    if meta.get("version") != FORMAT_VERSION:
        raise InputError(f"{META_FILE}: unsupported format version {meta.get('version')!r} (expected {FORMAT_VERSION})", root)
    for key in ("unit", "num_samples", "num_vertices", "factors"):
        if key not in meta:
            raise InputError(f"{META_FILE}: missing key {key!r}", root)
    try:
        check_unit(meta["unit"])
    except InputError as exc:
        raise InputError(f"{META_FILE}: {exc}", root) from None
    return meta


def _read_factors(meta: dict[str, Any], root: Path) -> list[Factor]:
    factors = []
    try:
        for f in meta["factors"]:
            factors.append(Factor(str(f["name"]), tuple(str(c) for c in f["classes"])))
    except (KeyError, TypeError) as exc:
        raise InputError(f"{META_FILE}: malformed factor entry ({exc})", root) from None
    if not factors:
        raise InputError(f"{META_FILE}: no factors", root)
    return factors


def _read_labels(root: Path, factors: Sequence[Factor], n: int) -> tuple[np.ndarray, np.ndarray]:
    path = root / LABELS_FILE
    if not path.is_file():
        raise InputError(f"missing labels file {LABELS_FILE}", root)
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header:
            raise InputError(f"{LABELS_FILE}: empty", root)
        header = [h.strip() for h in header]
        for col in ["index", *[f.name for f in factors], "split"]:
            if col not in header:
                raise InputError(f"{LABELS_FILE}: missing label column {col!r}", root)
        pos = [header.index(f.name) for f in factors]
        ipos, spos = header.index("index"), header.index("split")
        labels = np.empty((n, len(factors)), dtype=np.int64)
        split = np.empty(n, dtype="<U5")
        rows = 0
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if rows >= n:
                raise InputError(f"{LABELS_FILE}: more rows than the {n} samples", root)
            if len(row) != len(header):
                raise InputError(f"{LABELS_FILE}: line {line} has {len(row)} fields, expected {len(header)}", root)
            try:
                idx = int(row[ipos])
                labels[rows] = [int(row[p]) for p in pos]
            except ValueError:
                raise InputError(f"{LABELS_FILE}: line {line}: non-integer index or label", root) from None
            if idx != rows:
                raise InputError(f"{LABELS_FILE}: line {line}: index {idx}, expected {rows}", root)
            s = row[spos].strip()
            if s not in SPLITS:
                raise InputError(f"split {s!r} at sample {rows} is not one of {', '.join(SPLITS)}", root)
            split[rows] = s
            rows += 1
    if rows != n:
        raise InputError(f"{LABELS_FILE}: {rows} rows for {n} samples", root)
    return labels, split


def load_dataset(path: str | os.PathLike, mmap: bool = True, check_values: bool = True) -> Dataset:
    """Load and validate a dataset folder.

    Args:
        path: the dataset folder.
        mmap: map vertices.npy read-only instead of reading it into RAM.
        check_values: scan all vertices (in chunks) for NaN / inf; one sequential read of
            the file. Everything else is always checked.

    Returns:
        A :class:`Dataset`.

    Raises:
        InputError: ``"<path>: <problem>"`` on one line, e.g. a missing file, a vertex-count
            mismatch between vertices.npy and the template, NaN in a sample, a missing label
            column, a label out of range, a split value that is not train/val/test, or a split
            that is not by identity.
    """
    root = Path(path)
    meta = _read_meta(root)
    factors = _read_factors(meta, root)
    n, v = int(meta["num_samples"]), int(meta["num_vertices"])

    # ---- template
    tpl = _npz(root / TEMPLATE_FILE, "template")
    if "vertices" not in tpl or "faces" not in tpl:
        raise InputError(f"{TEMPLATE_FILE}: needs arrays 'vertices' and 'faces'", root)
    tv, tf = tpl["vertices"].astype(np.float64), tpl["faces"]
    try:
        check_shape("template vertices", tv, (None, 3))
        check_faces("template faces", tf, tv.shape[0])
    except ValueError as exc:
        raise InputError(f"{TEMPLATE_FILE}: {exc}", root) from None
    if tv.shape[0] != v:
        raise InputError(f"{TEMPLATE_FILE}: the template has {tv.shape[0]} vertices but {META_FILE} says {v}", root)

    # ---- vertices
    vpath = root / VERTICES_FILE
    if not vpath.is_file():
        raise InputError(f"missing vertices file {VERTICES_FILE}", root)
    try:
        verts = np.load(vpath, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{VERTICES_FILE}: cannot read ({exc})", root) from None
    if verts.ndim != 3 or verts.shape[2] != 3:
        raise InputError(f"{VERTICES_FILE}: expected shape (N, V, 3), got {verts.shape}", root)
    if verts.shape[1] != v:
        raise InputError(
            f"vertex-count mismatch: {VERTICES_FILE} has {verts.shape[1]} vertices per sample, "
            f"the template has {v}",
            root,
        )
    if verts.shape[0] != n:
        raise InputError(f"{VERTICES_FILE}: {verts.shape[0]} samples but {META_FILE} says {n}", root)
    if verts.dtype != np.float32:
        raise InputError(f"{VERTICES_FILE}: expected float32, got {verts.dtype}", root)
    if check_values:
        scan_vertices(verts, root)

    # ---- labels and split
    labels, split = _read_labels(root, factors, n)
    _check_labels(labels, factors, split, root)

    # ---- optional parts
    coefficients, coefficient_names = {}, {}
    coef_meta = meta.get("coefficients") or {}
    if coef_meta:
        arrays = _npz(root / COEFFICIENTS_FILE, "coefficients")
        for key, desc in coef_meta.items():
            if key not in arrays:
                raise InputError(f"{COEFFICIENTS_FILE}: missing array {key!r}", root)
            arr = arrays[key]
            if arr.ndim != 2 or arr.shape[0] != n:
                raise InputError(f"{COEFFICIENTS_FILE}: {key!r} has shape {arr.shape}, expected ({n}, k)", root)
            if not np.isfinite(arr).all():
                raise InputError(f"{COEFFICIENTS_FILE}: {key!r} contains NaN or inf", root)
            coefficients[key] = arr.astype(np.float32, copy=False)
            if isinstance(desc, dict) and desc.get("names") is not None:
                coefficient_names[key] = list(desc["names"])
    extras = {}
    if meta.get("extras"):
        arrays = _npz(root / EXTRAS_FILE, "extras")
        for key in meta["extras"]:
            if key not in arrays:
                raise InputError(f"{EXTRAS_FILE}: missing array {key!r}", root)
            if arrays[key].shape != (n,):
                raise InputError(f"{EXTRAS_FILE}: {key!r} has shape {arrays[key].shape}, expected ({n},)", root)
            extras[key] = arrays[key]
    landmark_sets = {}
    if meta.get("landmark_sets"):
        from fitface.landmark_set import LandmarkSet

        lpath = root / LANDMARKS_FILE
        if not lpath.is_file():
            raise InputError(f"missing landmarks file {LANDMARKS_FILE}", root)
        try:
            sets = json.loads(lpath.read_text(encoding="utf-8"))["sets"]
            for obj in sets:
                ls = LandmarkSet.from_json(obj)
                landmark_sets[ls.name] = ls
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{LANDMARKS_FILE}: malformed ({exc})", root) from None
        for name, ls in landmark_sets.items():
            check_face_index(f"{LANDMARKS_FILE}: set {name!r}", ls.face_index, len(tf), root)

    return Dataset(
        path=root,
        vertices=verts,
        template_vertices=tv,
        faces=tf.astype(np.int64),
        unit=meta["unit"],
        factors=factors,
        labels=labels,
        split=split,
        coefficients=coefficients,
        coefficient_names=coefficient_names,
        landmark_sets=landmark_sets,
        extras=extras,
        info=dict(meta.get("info") or {}),
        meta=meta,
    )


# --------------------------------------------------------------------------------------------
# Summary (``fitface data info``)
# --------------------------------------------------------------------------------------------


def summary(ds: Dataset) -> dict[str, Any]:
    """The ``fitface data info --json`` structure::

        {"samples": N, "vertices": V, "unit": "mm",
         "factors": {name: {"classes": K, "labeled_fraction": F}, ...}}
    """
    n = len(ds)
    factors = {}
    for k, f in enumerate(ds.factors):
        labeled = int((ds.labels[:, k] >= 0).sum())
        factors[f.name] = {"classes": f.num_classes, "labeled_fraction": labeled / n if n else 0.0}
    return {
        "samples": n,
        "vertices": ds.num_vertices,
        "unit": ds.unit,
        "factors": factors,
    }
