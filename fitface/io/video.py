"""Reading and writing video frames: a video file OpenCV reads, or a folder of images.

:func:`open_frames` checks the input once and returns a :class:`FrameSource`, which can be
iterated any number of times (each pass re-opens the file), yielding :class:`Frame` objects;
:func:`write_video` writes frames to an mp4 atomically.

Convention:
    * Frames in memory are (H, W, 3) uint8 **RGB** (OpenCV's BGR order is converted here only).
    * ``index`` is the frame's 0-based position in the source (in a folder: its position in
      natural name order); ``time`` is ``index / fps`` in seconds (a folder has no frame rate
      of its own: ``folder_fps``, default 30).
    * ``start`` / ``end`` (seconds) keep frames with ``start <= time < end``; ``fps``
      subsamples to at most that rate: frame ``k`` of the selection is kept when it is the first
      whose time reaches ``start + j / fps`` for the next ``j`` (a choice: no frame is
      duplicated, and the kept frames' times are as evenly spaced as the source allows).
    * Every frame of one source has the size of its first frame; a later frame of another
      size, or an unreadable image in a folder, is a one-line :class:`~fitface.errors.InputError`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fitface.errors import InputError

#: Video file suffixes read with OpenCV (lower case).
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg")
#: Image suffixes of a folder of frames (lower case).
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: Frame rate assumed for a folder of frames (frames per second).
FOLDER_FPS = 30.0
#: FFmpeg's log level inside OpenCV unless the user sets ``OPENCV_FFMPEG_LOGLEVEL``: -8 (quiet),
#: so an unreadable file gives fitface's one-line error, not also FFmpeg's own lines
#: ("moov atom not found"). OpenCV reads the variable when its FFmpeg backend first opens a file.
FFMPEG_LOGLEVEL = "-8"
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", FFMPEG_LOGLEVEL)


@dataclass(frozen=True)
class Frame:
    """One frame of a source.

    Attributes:
        index: 0-based frame index in the source.
        time: seconds, ``index / source fps``.
        image: (H, W, 3) uint8 RGB.
    """

    index: int
    time: float
    image: np.ndarray


@dataclass(frozen=True)
class FrameSource:
    """A checked, re-iterable selection of frames (see the module Convention).

    Attributes:
        path: the video file or the folder.
        kind: ``"video"`` or ``"folder"``.
        source_fps: frames per second of the source.
        size: (H, W) of every frame.
        indices: (T,) int64 source indices of the selected frames, in order.
        files: a folder's image files (all of them, in name order); empty for a video.
    """

    path: Path
    kind: str
    source_fps: float
    size: tuple[int, int]
    indices: np.ndarray
    files: tuple[Path, ...] = ()

    @property
    def times(self) -> np.ndarray:
        """(T,) float64 seconds of the selected frames."""
        return self.indices.astype(np.float64) / self.source_fps

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def frames(self, indices: Iterable[int] | None = None) -> Iterator[Frame]:
        """Yield the selected frames (or the given source ``indices``, increasing) in order."""
        want = self.indices if indices is None else np.asarray(list(indices), dtype=np.int64)
        if want.size == 0:
            return
        if self.kind == "folder":
            from fitface.io.image import read_image

            for i in want:
                img = read_image(self.files[int(i)])
                self._check_size(img, int(i))
                yield Frame(int(i), float(i) / self.source_fps, img)
            return
        import cv2

        keep = set(int(i) for i in want)
        last = int(want.max())
        with _capture(self.path) as cap:
            i = 0
            while i <= last:
                if i in keep:
                    ok, bgr = cap.read()
                    if not ok:
                        break
                    img = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # ~10x faster than a strided numpy copy
                    self._check_size(img, i)
                    yield Frame(i, i / self.source_fps, img)
                elif not cap.grab():
                    break
                i += 1

    def _check_size(self, img: np.ndarray, i: int) -> None:
        if img.shape[:2] != tuple(self.size):
            raise InputError(f"frame {i} is {img.shape[1]}x{img.shape[0]}, the first frame "
                             f"{self.size[1]}x{self.size[0]}", self.path)


@contextlib.contextmanager
def _capture(path: Path):
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise InputError("not a readable video", path)
        yield cap
    finally:
        cap.release()


def is_video(path: str | os.PathLike) -> bool:
    """True when ``path``'s suffix is one of :data:`VIDEO_SUFFIXES` (case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def select_indices(count: int, source_fps: float, fps: float | None = None, start: float | None = None,
                   end: float | None = None) -> np.ndarray:
    """(T,) int64 source indices kept by ``start``/``end`` (seconds) and ``fps`` (module Convention).

    Raises:
        InputError: a bad ``fps``, ``start`` or ``end``.
    """
    if fps is not None and not (np.isfinite(fps) and fps > 0):
        raise InputError(f"--fps: expected a positive number, got {fps}")
    if start is not None and not (np.isfinite(start) and start >= 0):
        raise InputError(f"--start: expected seconds >= 0, got {start}")
    if end is not None and not (np.isfinite(end) and end > (start or 0.0)):
        raise InputError(f"--end: expected seconds after --start ({start or 0.0}), got {end}")
    t = np.arange(int(count)) / float(source_fps)  # (N,) seconds
    sel = np.ones(int(count), dtype=bool)
    if start is not None:
        sel &= t >= start - 1e-9
    if end is not None:
        sel &= t < end - 1e-9
    idx = np.flatnonzero(sel)
    if fps is None or fps >= source_fps or idx.size == 0:
        return idx.astype(np.int64)
    t0 = t[idx[0]]
    slot = np.floor((t[idx] - t0) * fps + 1e-6).astype(np.int64)  # (n,) output slot of each frame
    first = np.ones(idx.size, dtype=bool)
    first[1:] = slot[1:] != slot[:-1]
    return idx[first].astype(np.int64)


def _count_frames(path: Path) -> int:
    """Frames the video actually decodes (grabbed, not decoded to pixels; the container's
    count is not trusted: it is often missing or wrong)."""
    n = 0
    with _capture(path) as cap:
        while cap.grab():
            n += 1
    return n


def open_frames(path: str | os.PathLike, *, fps: float | None = None, start: float | None = None,
                end: float | None = None, folder_fps: float = FOLDER_FPS) -> FrameSource:
    """Check a video file or a folder of frames and select its frames.

    Args:
        path: a video file OpenCV reads (mp4, avi, mov, ...) or a folder of images (natural
            name order).
        fps: subsample to at most this rate (frames per second); None keeps every frame.
        start, end: seconds; keep ``start <= time < end``.
        folder_fps: the frame rate of a folder of frames.

    Returns:
        :class:`FrameSource` with at least one frame.

    Raises:
        InputError: missing path, unreadable or empty video, a folder without images, no frame
            in ``[start, end)``, bad options (one line, naming the file).
    """
    from fitface.io.files import natural_key

    p = Path(path)
    if not p.exists():
        raise InputError("no such file or folder", p)
    if p.is_dir():
        files = tuple(sorted((f for f in p.iterdir() if f.is_file() and f.suffix.lower() in FRAME_SUFFIXES),
                             key=lambda f: natural_key(f.name)))
        if not files:
            raise InputError(f"no frames in the folder (expected images: {', '.join(FRAME_SUFFIXES)})", p)
        if not (np.isfinite(folder_fps) and folder_fps > 0):
            raise InputError(f"folder_fps: expected a positive number, got {folder_fps}")
        from fitface.io.image import read_image

        first = read_image(files[0])
        kind, source_fps, count, size = "folder", float(folder_fps), len(files), first.shape[:2]
    else:
        import cv2

        if p.stat().st_size == 0:
            raise InputError("empty file (not a readable video)", p)
        with _capture(p) as cap:
            ok, bgr = cap.read()
            source_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not ok or bgr is None or bgr.size == 0:
            raise InputError("no frame could be decoded (an empty or unreadable video)", p)
        if not (np.isfinite(source_fps) and 0 < source_fps < 1000):
            source_fps = FOLDER_FPS  # a stream without a usable rate: assume 30 (a choice)
        kind, count, size, files = "video", _count_frames(p), bgr.shape[:2], ()
    idx = select_indices(count, source_fps, fps, start, end)
    if idx.size == 0:
        raise InputError(f"no frame in the selected time range (the source has {count} frames, "
                         f"{count / source_fps:.3g} s)", p)
    return FrameSource(p, kind, source_fps, (int(size[0]), int(size[1])), idx, files if kind == "folder" else ())


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float) -> int:
    """Write RGB frames to an mp4 (``mp4v``) atomically; returns the frames written.

    Args:
        path: the target file (its folder is created).
        frames: (H, W, 3) uint8 RGB images of one size.
        fps: frames per second of the file.

    Raises:
        ValueError: no frames, frames of different sizes. OSError: OpenCV could not write.
    """
    import cv2

    from fitface.io.atomic import atomic_path

    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps: expected a positive number, got {fps}")
    n = 0
    with atomic_path(path, suffix=".mp4") as tmp:
        writer = None
        try:
            for img in frames:
                a = np.asarray(img)
                if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
                    raise ValueError(f"frame {n}: expected (H, W, 3) uint8 RGB, got {a.dtype} {a.shape}")
                if writer is None:
                    size = (a.shape[1], a.shape[0])
                    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), size)
                    if not writer.isOpened():
                        raise OSError(f"{path}: OpenCV could not open an mp4 writer")
                elif (a.shape[1], a.shape[0]) != size:
                    raise ValueError(f"frame {n}: size {a.shape[1]}x{a.shape[0]}, expected {size[0]}x{size[1]}")
                writer.write(cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2BGR))
                n += 1
        finally:
            if writer is not None:
                writer.release()
        if n == 0:
            raise ValueError("frames: expected at least one frame")
    return n


__all__ = ["FOLDER_FPS", "FRAME_SUFFIXES", "Frame", "FrameSource", "VIDEO_SUFFIXES", "is_video", "open_frames",
           "select_indices", "write_video"]
