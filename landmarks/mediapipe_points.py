"""Which of mediapipe's face-mesh points fitface uses, and why.

mediapipe's face mesh returns 468 points (478 with its iris refinement: points 468-477 are the
two irises, 468-472 the subject's right iris centre then its 4 rim points, 473-477 the left).
fitface keeps a fixed *candidate* subset for fitting and for the model's ``"mediapipe"``
landmark set:

* dropped: the **face-oval contour** (:data:`FACE_OVAL`, 36 points running round the face
  from the forehead top, 10, over the subject's left cheek to the chin, 152, and back). These
  are silhouette points: where they sit on the surface depends on the head pose and the
  face's outline in the image (the jaw line of a turned head is a different line on the
  skin), not on a fixed anatomical spot, so they carry pose-dependent errors of several mm;
  on a model template that ends at the cheeks they fall off the mesh.
* dropped: the **iris points** 468-477. The iris moves with the gaze independently of the
  face's geometry, and a face model has no eyeball surface for them to lie on.
* kept: the 432 other points of the 468-point mesh (:data:`CANDIDATE_INDICES`), in increasing
  index order.

A model's stored ``"mediapipe"`` set is the subset of the candidates that back-projected
consistently onto its template (:mod:`fitface.landmarks.correspondence`); its mediapipe
indices are stored with the model (document ``metadata["mediapipe_indices"]``).

Convention: indices are mediapipe's 0-based point indices (the row of a 468/478-point
result). The constants here were written from the published face-mesh topology and are
checked against the installed mediapipe's connection tables by the tests.
"""

from __future__ import annotations

import numpy as np

#: Points of the face mesh without / with the iris refinement.
NUM_MESH_POINTS = 468
NUM_POINTS_WITH_IRIS = 478

#: The face-oval contour, in mediapipe's loop order (forehead top 10, over the subject's left
#: side (image right) to the chin 152 and up the right side back to 109).
FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)

#: Iris points (refined model only): 468 right iris centre, 469-472 its rim; 473 left centre, 474-477.
IRIS = tuple(range(NUM_MESH_POINTS, NUM_POINTS_WITH_IRIS))

#: A few named points, for tests and documentation (mediapipe indices).
NOSE_TIP = 1
CHIN = 152
FOREHEAD_TOP = 10
#: Eye corners: subject's right eye outer 33 / inner 133, left eye inner 362 / outer 263.
RIGHT_EYE_OUTER, RIGHT_EYE_INNER, LEFT_EYE_INNER, LEFT_EYE_OUTER = 33, 133, 362, 263
#: Mouth corners: subject's right 61, left 291.
MOUTH_RIGHT, MOUTH_LEFT = 61, 291

#: The points fitface may use (see the module doc): (432,) int64, increasing.
CANDIDATE_INDICES = np.setdiff1d(np.arange(NUM_MESH_POINTS), np.asarray(FACE_OVAL)).astype(np.int64)
CANDIDATE_INDICES.setflags(write=False)


def check_indices(indices, num_points: int = NUM_MESH_POINTS) -> np.ndarray:
    """Validate mediapipe indices: (L,) ints, unique, in ``[0, num_points)``.

    Returns:
        (L,) int64.

    Raises:
        ValueError: naming the problem.
    """
    idx = np.asarray(indices)
    if idx.ndim != 1 or idx.size == 0 or idx.dtype.kind not in "iu":
        raise ValueError(f"mediapipe indices: expected a non-empty (L,) integer array, got {idx.dtype} {idx.shape}")
    idx = idx.astype(np.int64)
    if idx.min() < 0 or idx.max() >= num_points:
        raise ValueError(f"mediapipe indices: out of range [0, {num_points}): {int(idx.min())}..{int(idx.max())}")
    if len(np.unique(idx)) != len(idx):
        raise ValueError("mediapipe indices: repeated index")
    return idx


def point_names(indices) -> list[str]:
    """Names ``"mp<index>"`` for landmark files that store names (csv, json, pp)."""
    return [f"mp{int(i)}" for i in np.asarray(indices).reshape(-1)]


__all__ = [
    "CANDIDATE_INDICES", "CHIN", "FACE_OVAL", "FOREHEAD_TOP", "IRIS", "LEFT_EYE_INNER", "LEFT_EYE_OUTER",
    "MOUTH_LEFT", "MOUTH_RIGHT", "NOSE_TIP", "NUM_MESH_POINTS", "NUM_POINTS_WITH_IRIS", "RIGHT_EYE_INNER",
    "RIGHT_EYE_OUTER", "check_indices", "point_names",
]
