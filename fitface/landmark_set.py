"""Landmark sets: named, ordered lists of points on a template's surface.

Convention: a landmark set is an ordered list of surface points, each a triangle
index into the template's ``faces`` and barycentric weights ``(w0, w1, w2)`` summing
to 1 over that triangle's three vertices (in the order the triangle lists them).
A vertex landmark is the special case ``w = (1, 0, 0)`` on a triangle that starts at
that vertex. The order of the points is the order in which landmark files are read:
row ``i`` of a landmark file is point ``i`` of the set.

Points move with the mesh: ``points = sum_k w_k * vertices[faces[face_index, k]]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fitface.checks import check_faces, check_shape


@dataclass(frozen=True)
class LandmarkSet:
    """An ordered set of surface points on a template.

    Attributes:
        name: the set's name, e.g. ``"ibug68"``.
        face_index: (L,) int64, triangle of each point (index into the template's faces).
        bary: (L, 3) float64, barycentric weights over that triangle's vertices; rows sum to 1.
    """

    name: str
    face_index: np.ndarray
    bary: np.ndarray

    def __post_init__(self):
        check_shape("face_index", self.face_index, ("L",))
        check_shape("bary", self.bary, (len(self.face_index), 3))

    def __len__(self) -> int:
        return int(len(self.face_index))

    @classmethod
    def from_vertex_indices(cls, name: str, vertex_indices: np.ndarray, faces: np.ndarray) -> "LandmarkSet":
        """A set whose points sit exactly on template vertices.

        Args:
            vertex_indices: (L,) int, indices into the template's vertices.
            faces: (F, 3) int, the template's triangles; every listed vertex must be in one.
        """
        vertex_indices = np.asarray(vertex_indices, dtype=np.int64).reshape(-1)
        faces = np.asarray(faces, dtype=np.int64)
        check_faces("faces", faces, int(faces.max()) + 1 if faces.size else 0)
        # first (triangle, corner) incident to each vertex
        flat = faces.reshape(-1)  # (3F,)
        first = np.full(int(max(flat.max(), vertex_indices.max())) + 1, -1, dtype=np.int64)
        order = np.arange(flat.size - 1, -1, -1)
        first[flat[order]] = order  # the smallest flat index wins (written last)
        slot = first[vertex_indices]
        if (slot < 0).any():
            bad = vertex_indices[slot < 0][0]
            raise ValueError(f"vertex_indices: vertex {bad} is in no triangle")
        face_index = slot // 3
        bary = np.zeros((len(vertex_indices), 3))
        bary[np.arange(len(vertex_indices)), slot % 3] = 1.0
        return cls(name, face_index, bary)

    def points(self, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """Landmark positions on a mesh in the template's topology.

        Args:
            vertices: (..., V, 3) float, any unit.
            faces: (F, 3) int.

        Returns:
            (..., L, 3) float, same unit and dtype as ``vertices``.
        """
        corners = np.asarray(faces)[self.face_index]  # (L, 3) vertex ids
        tri = vertices[..., corners, :]  # (..., L, 3 corners, 3 xyz)
        return np.einsum("...lkc,lk->...lc", tri, self.bary.astype(tri.dtype))

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the form stored in datasets and model files)."""
        return {
            "name": self.name,
            "face_index": self.face_index.astype(int).tolist(),
            "bary": np.round(self.bary, 12).tolist(),
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "LandmarkSet":
        """Inverse of :meth:`to_json`; raises ``ValueError`` on a malformed entry."""
        try:
            name = str(obj["name"])
            face_index = np.asarray(obj["face_index"], dtype=np.int64)
            bary = np.asarray(obj["bary"], dtype=np.float64).reshape(-1, 3)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed landmark set: {exc}") from None
        return cls(name, face_index, bary)
