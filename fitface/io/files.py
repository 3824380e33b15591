"""Reading user files with one-line errors (missing, a folder, unreadable, empty)."""

from __future__ import annotations

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
