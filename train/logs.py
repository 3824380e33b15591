"""Training logs: CSV tables, TensorBoard scalars and Fig.-3-like PNG sample grids.

Files in RUN_DIR (written by process rank 0 only):

* ``losses.csv``: one row every ``log_every`` steps (``step`` = 0-based index of the step
  whose values the row holds); loss terms, regulariser share, throughput.
* ``metrics.csv``: one row per metrics evaluation (diversity, specificity, near-training share).
* ``tensorboard/``: the same scalars (``torch.utils.tensorboard``).
* ``samples/step_XXXXXXX.png``: grids like the paper's Fig. 3 (:func:`fitface.preview.sample_grid`).

Convention: on ``--resume`` from a checkpoint at step ``s`` the CSV rows of steps ``>= s``
(written after that checkpoint by the interrupted run) are dropped and TensorBoard purges
events from step ``s``, so the resumed run's logs equal an uninterrupted run's.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from fitface.io.atomic import write_text


class CsvLog:
    """An append-only CSV table with a fixed header.

    Args:
        path: the CSV file.
        columns: header names (the order of the columns).
        resume_step: if not None, keep only existing rows with ``step < resume_step`` (the
            file is rewritten atomically; cells are matched by column name, so a file written
            with other columns keeps its rows, unknown columns dropped); else start a new file.
    """

    def __init__(self, path: str | os.PathLike, columns: Sequence[str], resume_step: int | None = None):
        self.path = Path(path)
        self.columns = list(columns)
        kept: list[list[str]] = []
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="") as fh:
                rows = list(csv.DictReader(fh))  # by column name: a file with other columns keeps its rows
            kept = [[r.get(c) or "" for c in self.columns] for r in rows
                    if (r.get("step") or "").lstrip("-").isdigit() and int(r["step"]) < resume_step]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.columns)
        w.writerows(kept)
        write_text(self.path, buf.getvalue())

    def write(self, row: Mapping[str, float | int | str]) -> None:
        """Append one row (missing columns are left empty); flushed at once."""
        vals = []
        for c in self.columns:
            v = row.get(c, "")
            if isinstance(v, float):
                v = repr(v) if math.isfinite(v) else str(v)
            vals.append(v)
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh, lineterminator="\n").writerow(vals)
            fh.flush()


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """All rows of a CSV log as dicts (strings)."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


class TensorBoardLog:
    """Thin wrapper over ``SummaryWriter`` (no-op when disabled or unavailable)."""

    def __init__(self, log_dir: str | os.PathLike, enabled: bool = True, purge_step: int | None = None):
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard missing: logs still go to CSV
                return
            self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def scalars(self, step: int, values: Mapping[str, float], prefix: str = "") -> None:
        if self.writer is None:
            return
        for k, v in values.items():
            if isinstance(v, (int, float)) and math.isfinite(float(v)):
                self.writer.add_scalar(f"{prefix}{k}", float(v), step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, image, step, dataformats="HWC")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
