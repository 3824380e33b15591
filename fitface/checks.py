"""Boundary validation helpers: one place that names the argument and both shapes.

Use these at public entry points instead of ``assert`` (which ``python -O`` strips)::

    check_shape("vertices", vertices, ("B", "V", 3))
    check_shape("faces", faces, ("F", 3))
    check_face_index("landmark set 'ibug68'", lset.face_index, len(faces))

A dimension given as an ``int`` must match exactly; a ``str`` is a named size that
must agree wherever the same name appears in one call (pass ``sizes`` to share names
across calls); ``None`` matches anything.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from fitface.errors import InputError


def _shape_of(x: Any) -> tuple[int, ...]:
    shape = getattr(x, "shape", None)
    if shape is None:
        raise ValueError(f"expected an array or tensor, got {type(x).__name__}")
    return tuple(int(s) for s in shape)


def check_shape(
    name: str,
    x: Any,
    expected: Sequence[int | str | None],
    sizes: dict[str, int] | None = None,
) -> dict[str, int]:
    """Raise ``ValueError`` unless ``x.shape`` matches ``expected``.

    Args:
        name: the argument's name, used in the message.
        x: a numpy array or torch tensor.
        expected: the expected shape; ints match exactly, strings are named sizes,
            None matches anything.
        sizes: named sizes already bound (updated in place and returned).

    Returns:
        The dict of named sizes, so later checks can share them.
    """
    sizes = {} if sizes is None else sizes
    shape = _shape_of(x)
    want = "(" + ", ".join("*" if d is None else str(d) for d in expected) + ")"
    if len(shape) != len(expected):
        raise ValueError(f"{name}: expected shape {want}, got {shape}")
    for axis, (got, exp) in enumerate(zip(shape, expected)):
        if exp is None:
            continue
        if isinstance(exp, str):
            bound = sizes.setdefault(exp, got)
            if bound != got:
                raise ValueError(
                    f"{name}: expected shape {want} with {exp}={bound}, got {shape} (axis {axis} is {got})"
                )
        elif got != exp:
            raise ValueError(f"{name}: expected shape {want}, got {shape} (axis {axis} is {got})")
    return sizes


def check_finite(name: str, x: Any) -> None:
    """Raise ``ValueError`` if ``x`` (array or tensor) holds NaN or inf, naming the first bad row."""
    arr = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    if arr.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(arr)
    if bad.any():
        first = np.argwhere(bad)[0]
        kind = "NaN" if np.isnan(arr[tuple(first)]) else "inf"
        raise ValueError(f"{name}: {kind} at index {tuple(int(i) for i in first)}")


def check_faces(name: str, faces: Any, num_vertices: int) -> None:
    """Raise ``ValueError`` unless ``faces`` is (F, 3) integer with indices in [0, num_vertices)."""
    check_shape(name, faces, (None, 3))
    arr = faces.detach().cpu().numpy() if hasattr(faces, "detach") else np.asarray(faces)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name}: expected integer vertex indices, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= num_vertices):
        raise ValueError(
            f"{name}: vertex index out of range [0, {num_vertices}): min {arr.min()}, max {arr.max()}"
        )


def check_face_index(name: str, face_index: Any, num_faces: int, path: str | os.PathLike | None = None) -> None:
    """Raise unless every triangle index of a landmark set (its ``face_index``) lies in
    [0, num_faces) (an empty set passes).

    Args:
        name: what the indices belong to, e.g. ``"landmark set 'ibug68'"``.
        face_index: (L,) integer array or tensor.
        num_faces: F of the mesh.
        path: the file the indices come from, if any.

    Raises:
        ValueError: ``"<name>: face_index out of range [0, <num_faces>)"``; with ``path``, the
            same message as an :class:`~fitface.errors.InputError` naming the file.
    """
    arr = face_index.detach().cpu().numpy() if hasattr(face_index, "detach") else np.asarray(face_index)
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= num_faces):
        message = f"{name}: face_index out of range [0, {num_faces})"
        if path is not None:
            raise InputError(message, path)
        raise ValueError(message)


def check_mesh(vertices: Any, faces: Any) -> tuple[np.ndarray, np.ndarray]:
    """A triangle mesh checked and converted: ``(vertices (V, 3) float64, faces (F, 3) int64)``.

    Raises:
        ValueError: wrong shapes, non-finite vertices, or a face index outside [0, V).
    """
    sizes = check_shape("vertices", vertices, ("V", 3))
    check_shape("faces", faces, ("F", 3))
    v = np.asarray(vertices, dtype=np.float64)
    check_finite("vertices", v)
    f = np.asarray(faces)
    check_faces("faces", f, sizes["V"])
    return v, f.astype(np.int64, copy=False)
