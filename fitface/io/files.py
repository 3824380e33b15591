"""Reading user files with one-line errors (missing, a folder, unreadable, empty), and the natural
name order of a folder's files."""

from __future__ import annotations

import re
from pathlib import Path

from fitface.errors import InputError


def read_input_bytes(p: Path) -> bytes:
    """Return the bytes of the user file ``p``; :class:`InputError` naming it if it is
    missing, a directory, unreadable or empty."""
    if not p.exists():
        raise InputError("file does not exist", p)
    if p.is_dir():
        raise InputError("is a directory, expected a file", p)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read file ({e.strerror or e})", p) from None
    if not data:
        raise InputError("file is empty (0 bytes)", p)
    return data


_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key: digit runs compare as numbers (``"f2" < "f10"``), the rest case-insensitively;
    the plain name breaks ties."""
    parts = _DIGITS.split(name)
    key = tuple((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts if p != "")
    return key, name
