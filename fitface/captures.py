"""Capture folders: pair scans with landmark files by name, order them, split them into shards.

A *capture* is one landmark file, optionally with a scan (a mesh or point cloud) of the same
face, or one photo. :func:`discover_captures` looks at the files directly inside a folder (not
recursively) and pairs them by stem; :func:`discover_photos` lists a folder's photos.

Convention:
    * Pairing: ``NAME.ply`` (any of :data:`fitface.io.mesh.MESH_SUFFIXES`) and ``NAME.txt``
      (any of :data:`fitface.io.landmarks.LANDMARK_SUFFIXES`) with the same stem ``NAME``
      form one capture; a landmark file alone is a landmark-only capture. A scan without a
      landmark file, or a stem with two landmark files (``A.txt`` and ``A.json``) or two
      scans, is a *problem*: reported with its reason, never fatal to the other captures.
      Suffixes compare case-insensitively. Hidden files (``.name``) and files with other
      suffixes are ignored (counted in :attr:`CaptureSet.ignored`).
    * Order: natural sort of the stems (``frame2`` before ``frame10``), ties broken by the
      plain string, so every run, process and machine sees the same order.
    * Shards: ``K/N`` with **1-based** ``K`` in ``1..N``. The ordered captures are cut into
      ``N`` contiguous blocks of (almost) equal size; shard ``K`` takes block ``K``
      (capture ``i`` of ``n``, 0-based, belongs to shard ``floor(i * N / n) + 1``). Problems
      are assigned to shards by the same rule over the union of names, so each problem is
      reported by exactly one shard.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from fitface.errors import InputError
from fitface.io.files import natural_key  # the one home of the natural name order (re-exported)


@dataclass(frozen=True)
class Capture:
    """One capture to fit.

    Attributes:
        name: the shared stem (``"A"`` for ``A.ply`` + ``A.txt``); names the output folder.
        landmarks: the landmark file (or the photo).
        scan: the scan file, or None for a landmark-only capture.
    """

    name: str
    landmarks: Path
    scan: Path | None = None


@dataclass(frozen=True)
class CaptureProblem:
    """A file (or stem) that cannot be fitted, and why (one line)."""

    name: str
    reason: str
    path: Path | None = None


@dataclass
class CaptureSet:
    """Result of :func:`discover_captures`.

    Attributes:
        captures: captures in natural order of their names.
        problems: unpairable files, in natural order of their names.
        ignored: number of files ignored (hidden or of another type).
    """

    captures: list[Capture] = field(default_factory=list)
    problems: list[CaptureProblem] = field(default_factory=list)
    ignored: int = 0

    def shard(self, k: int, n: int) -> CaptureSet:
        """Shard ``k`` of ``n`` (1-based ``k``), see the module's convention."""
        names = sorted({c.name for c in self.captures} | {p.name for p in self.problems}, key=natural_key)
        mine = {name for i, name in enumerate(names) if (i * n) // max(len(names), 1) + 1 == k}
        return CaptureSet([c for c in self.captures if c.name in mine],
                          [p for p in self.problems if p.name in mine], self.ignored)


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``1 <= K <= N`` (1-based); InputError otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m:
        raise InputError(f"--shard: expected K/N (e.g. 1/4, 1-based), got {text!r}")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= k <= n:
        raise InputError(f"--shard: K/N needs 1 <= K <= N (shards are 1-based), got {k}/{n}")
    return k, n


def discover_captures(folder: str | os.PathLike) -> CaptureSet:
    """Pair the scans and landmark files directly inside ``folder`` (see module doc).

    Raises:
        InputError: ``folder`` does not exist or is not a folder.
    """
    from fitface.io.landmarks import LANDMARK_SUFFIXES
    from fitface.io.mesh import MESH_SUFFIXES

    root = Path(folder)
    if not root.exists():
        raise InputError("no such folder", root)
    if not root.is_dir():
        raise InputError("not a folder (batch takes a folder of captures)", root)
    scans: dict[str, list[Path]] = {}
    marks: dict[str, list[Path]] = {}
    ignored = 0
    with os.scandir(root) as it:
        entries = [(e.name, e.is_file()) for e in it]
    for name, is_file in entries:
        if name.startswith(".") or not is_file:
            ignored += 1
            continue
        stem, dot, suffix = name.rpartition(".")
        suffix = "." + suffix.lower() if dot else ""
        if not dot or not stem:
            ignored += 1
        elif suffix in MESH_SUFFIXES:
            scans.setdefault(stem, []).append(root / name)
        elif suffix in LANDMARK_SUFFIXES:
            marks.setdefault(stem, []).append(root / name)
        else:
            ignored += 1
    out = CaptureSet(ignored=ignored)
    for stem in sorted(set(scans) | set(marks), key=natural_key):
        s, m = sorted(scans.get(stem, [])), sorted(marks.get(stem, []))
        if len(m) > 1:
            out.problems.append(CaptureProblem(
                stem, f"several landmark files for one capture: {', '.join(p.name for p in m)}", m[0]))
        elif len(s) > 1:
            out.problems.append(CaptureProblem(stem, f"several scans for one capture: {', '.join(p.name for p in s)}",
                                               s[0]))
        elif not m:
            out.problems.append(CaptureProblem(stem, f"scan {s[0].name} has no landmark file of the same name "
                                                     f"({'/'.join(LANDMARK_SUFFIXES)})", s[0]))
        else:
            out.captures.append(Capture(stem, m[0], s[0] if s else None))
    return out


def discover_photos(folder: str | os.PathLike) -> CaptureSet:
    """The photos directly inside ``folder`` as captures ``Capture(stem, photo)``, in natural order.

    Photos are the files with a suffix of :data:`fitface.landmarks.lift_photo.PHOTO_SUFFIXES`
    (case-insensitive); two photos of one stem (``a.jpg`` and ``a.png``) are a problem; hidden and
    other files are ignored (counted).

    Raises:
        InputError: ``folder`` does not exist or is not a folder.
    """
    from fitface.landmarks.lift_photo import is_photo

    root = Path(folder)
    if not root.is_dir():
        raise InputError("no such folder" if not root.exists() else "not a folder", root)
    photos: dict[str, list[Path]] = {}
    ignored = 0
    with os.scandir(root) as it:
        entries = [(e.name, e.is_file()) for e in it]
    for name, is_file in entries:
        if name.startswith(".") or not is_file or not is_photo(name):
            ignored += 1
        else:
            photos.setdefault(Path(name).stem, []).append(root / name)
    out = CaptureSet(ignored=ignored)
    for stem in sorted(photos, key=natural_key):
        files = sorted(photos[stem])
        if len(files) > 1:
            out.problems.append(CaptureProblem(stem, f"several photos for one capture: "
                                                     f"{', '.join(p.name for p in files)}", files[0]))
        else:
            out.captures.append(Capture(stem, files[0]))
    return out


__all__ = ["Capture", "CaptureProblem", "CaptureSet", "discover_captures", "discover_photos", "natural_key",
           "parse_shard"]
