"""Checks on bad-input handling shared by the I/O and CLI tests, and the CLI runner they use."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from fitface.errors import InputError


def assert_one_line_naming(excinfo, path: Path, *words: str) -> None:
    """The raised InputError is one line, starts with ``path: `` and mentions every word."""
    msg = str(excinfo.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: "), msg
    for w in words:
        assert w.lower() in msg.lower(), f"{w!r} not in {msg!r}"


def assert_corruptions_raise_only_input_error(data: bytes, bad: Path, read: Callable[[Path], object],
                                              seed: int, trials: int = 150) -> None:
    """Truncate, overwrite or insert bytes of ``data`` ``trials`` times (written to ``bad``):
    ``read(bad)`` must succeed or raise a one-line InputError naming ``bad``, nothing else."""
    rng = np.random.default_rng(seed)
    for trial in range(trials):
        b = bytearray(data)
        i = int(rng.integers(0, len(b)))
        if trial % 3 == 0:
            b = b[:i]
        elif trial % 3 == 1:
            b[i] = int(rng.integers(0, 256))
        else:
            b[i:i] = rng.integers(0, 256, int(rng.integers(1, 4))).astype(np.uint8).tobytes()
        bad.write_bytes(bytes(b))
        try:
            read(bad)
        except InputError as e:
            assert "\n" not in str(e) and str(e).startswith(str(bad))


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """Run ``fitface ARGV`` in-process: (exit code, stdout, stderr)."""
    from fitface.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err
