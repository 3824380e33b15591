"""Exceptions that the CLI turns into one-line messages and exit codes.

Convention: a user error (a bad file, a bad argument) raises :class:`InputError`
whose message already names the file or argument and the problem, e.g.
``"scan.ply: no faces"``. The CLI prints ``error: <message>`` on one line and exits
with :attr:`InputError.exit_code` (2); :class:`NoFaceError` exits with 3. Library
callers catch them as ordinary exceptions (both are ``ValueError`` subclasses).
An exception from elsewhere (numpy, safetensors, mediapipe, ...) that becomes part of such a
message goes through :func:`one_line` first.
:class:`SomeFailedError` (exit code 4) is raised by the CLI only, when a batch fitted some
captures but not all (the Python API returns the failures in its result instead).

Exit codes (:data:`EXIT_CODES`): 0 success; 1 an unexpected internal error; 2 bad input or
usage; 3 no face found in an image; 4 some captures of a batch failed (the rest were fitted);
130 interrupted.
"""

from __future__ import annotations

import os

#: The most characters :func:`one_line` keeps.
ONE_LINE_MAX = 300


def one_line(exc: object) -> str:
    """``str(exc)`` (an exception's message, or any object) as one line for an error message:
    every run of white space, newlines included, becomes one space, and the text is cut to its
    first :data:`ONE_LINE_MAX` characters."""
    return " ".join(str(exc).split())[:ONE_LINE_MAX]


class FitfaceError(Exception):
    """Base of every error fitface raises on purpose."""

    exit_code = 1


class InputError(FitfaceError, ValueError):
    """Bad input: a missing, empty, truncated or malformed file, or a bad argument.

    Args:
        message: what is wrong, e.g. ``"landmark 3 has a non-numeric field 'abc'"``.
        path: the file concerned, if any; it prefixes the message as ``path: message``.
    """

    exit_code = 2

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        self.problem = message
        super().__init__(message if path is None else f"{self.path}: {message}")


class FitfaceWarning(UserWarning):
    """Something the user should know that does not stop the work (e.g. a capture whose unit
    could not be inferred). The CLI prints it as one line ``warning: <message>`` on stderr."""


class NoFaceError(InputError):
    """An image in which no face was detected (exit code 3, distinct from bad input)."""

    exit_code = 3


class SomeFailedError(FitfaceError):
    """A batch fitted some of its captures, and the others failed (exit code 4, distinct from bad
    input): every failure is listed, one line each, in the batch's ``failures.txt``."""

    exit_code = 4


#: Every exit code of the ``fitface`` command and its meaning.
EXIT_CODES = {
    0: "success",
    1: "an unexpected internal error",
    2: "bad input or usage (one line on stderr, nothing half-written)",
    3: "no face found in an image",
    4: "some captures of a batch failed (the others were fitted; see failures.txt)",
    130: "interrupted",
}
