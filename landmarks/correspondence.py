"""The model's ``"mediapipe"`` landmark set: mediapipe's points located on the template's surface.

Computed once per model (when it is built, or with ``fitface landmarks mediapipe MODEL``) by
the multi-view pipeline of :mod:`fitface.landmarks.lift_scan` run on the template: shaded
renders from :data:`CORRESPONDENCE_VIEWS` (frontal, yaw +-20 deg, pitch +-15 deg), mediapipe on
each, back-projection onto the template, and a robust consensus per point. A candidate point
(:data:`fitface.landmarks.mediapipe_points.CANDIDATE_INDICES`: no face-oval contour, no iris)
is kept when at least :data:`MIN_SUPPORT` of the 5 views agree within the inlier radius; the
others (typically eyelid and inner-lip points that fall into the template's eye and mouth
openings, and cheek points near the template's border) are dropped. On the procedural template
372 of the 432 candidates are kept (median spread between views 1.7 mm).

Convention:
    * The set is stored like any landmark set (``landmarks.mediapipe.face_index`` / ``.bary``)
      in increasing mediapipe-index order; its mediapipe indices are stored in the model
      document's ``metadata["mediapipe_indices"]`` (a list of ints), so that row ``i`` of the set
      is mediapipe point ``indices[i]``.
    * The set's positions are surface points (triangle + barycentrics), so they follow every
      decoded face; they are measured on the template mesh as stored in the model file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from fitface.errors import InputError
from fitface.landmarks.sets import LandmarkSet

#: Name of the landmark set and of the metadata key holding its mediapipe indices.
SET_NAME = "mediapipe"
INDICES_KEY = "mediapipe_indices"
#: Views (yaw, pitch) in degrees used on the template.
CORRESPONDENCE_VIEWS = ((0.0, 0.0), (-20.0, 0.0), (20.0, 0.0), (0.0, -15.0), (0.0, 15.0))
#: Fewest agreeing views for a point to be kept (of 5).
MIN_SUPPORT = 3
#: Render size (pixels) of the template views.
CORRESPONDENCE_SIZE = 512


@dataclass
class MediapipeCorrespondence:
    """The ``"mediapipe"`` landmark set of a template and how it was measured.

    Attributes:
        landmark_set: :class:`LandmarkSet` named ``"mediapipe"`` (L points).
        indices: (L,) int64 mediapipe index of each point (increasing).
        spread: (L,) float64 RMS distance between the views' back-projections, template unit.
        support: (L,) int agreeing views.
        dropped: (M,) int64 candidate indices that were not kept.
    """

    landmark_set: LandmarkSet
    indices: np.ndarray
    spread: np.ndarray
    support: np.ndarray
    dropped: np.ndarray


def build_mediapipe_set(
    vertices: np.ndarray,
    faces: np.ndarray,
    views=CORRESPONDENCE_VIEWS,
    size: int = CORRESPONDENCE_SIZE,
    min_support: int = MIN_SUPPORT,
    mediapipe_model: str | os.PathLike | None = None,
    candidates=None,
) -> MediapipeCorrespondence:
    """Locate mediapipe's candidate points on a template surface.

    Args:
        vertices: (V, 3) float template, any unit, facing +z with +y up.
        faces: (F, 3) int triangles.
        views: (yaw, pitch) pairs in degrees (or a count, see :func:`~.lift_scan.view_angles`).
        size: render size in pixels.
        min_support: fewest agreeing views.
        mediapipe_model: optional ``face_landmarker.task`` file.
        candidates: mediapipe indices to consider (default
            :data:`~fitface.landmarks.mediapipe_points.CANDIDATE_INDICES`).

    Returns:
        :class:`MediapipeCorrespondence`.

    Raises:
        NoFaceError: mediapipe finds no face in the template's frontal render.
        ValueError: fewer than 3 points kept.
    """
    from fitface.landmarks.lift_scan import multiview_landmarks
    from fitface.landmarks.mediapipe_points import CANDIDATE_INDICES, check_indices

    cand = CANDIDATE_INDICES if candidates is None else check_indices(candidates)
    mv = multiview_landmarks(vertices, faces, views, size, mediapipe_model=mediapipe_model, min_support=min_support,
                             search_orientation=False)
    keep = mv.valid[cand] & (mv.face_index[cand] >= 0)
    idx = np.sort(cand[keep]).astype(np.int64)
    if len(idx) < 3:
        raise ValueError(f"only {len(idx)} mediapipe points could be located on the template")
    lset = LandmarkSet(SET_NAME, mv.face_index[idx].astype(np.int64), mv.bary[idx].astype(np.float64))
    return MediapipeCorrespondence(lset, idx, mv.spread[idx], mv.support[idx], np.sort(cand[~keep]))


def attach_to_model(model: Any, correspondence: MediapipeCorrespondence | None = None, required: bool = True,
                    **kwargs) -> Any:
    """Add the ``"mediapipe"`` set to an in-memory :class:`fitface.models.face_model.FaceModel`
    (before :func:`~fitface.models.model_file.save_model`), computing it from ``model.template``
    unless given. Sets ``model.landmark_sets["mediapipe"]`` and ``model.metadata["mediapipe_indices"]``.

    Args:
        required: if False, a template on which mediapipe finds no face (not a face, or a
            partial one) leaves the model without the set and logs a warning instead of raising;
            ``fitface landmarks mediapipe MODEL`` can add it later.

    Returns:
        The model (modified in place).
    """
    if correspondence is None:
        from fitface.errors import NoFaceError

        tmpl = model.template.detach().cpu().double().numpy()
        faces = model.faces.detach().cpu().numpy()
        try:
            correspondence = build_mediapipe_set(tmpl, faces, **kwargs)
        except NoFaceError as exc:
            if required:
                raise
            import logging

            logging.getLogger(__name__).warning("no 'mediapipe' landmark set: %s", exc.problem)
            return model
    model.landmark_sets[SET_NAME] = correspondence.landmark_set
    model.metadata[INDICES_KEY] = correspondence.indices.astype(int).tolist()
    return model


def mediapipe_indices(document: dict[str, Any], path: str | os.PathLike | None = None) -> np.ndarray:
    """The mediapipe index of each point of a model's ``"mediapipe"`` set.

    Args:
        document: the model file's JSON document (:func:`fitface.models.model_file.read_metadata`).
        path: the model file, for messages.

    Returns:
        (L,) int64.

    Raises:
        InputError: the model has no ``"mediapipe"`` set (with the command that adds one), or
            its indices are missing / malformed.
    """
    from fitface.landmarks.mediapipe_points import NUM_MESH_POINTS, check_indices

    where = "" if path is None else f" {path}"
    if SET_NAME not in document.get("landmark_sets", []):
        raise InputError(f"the model has no {SET_NAME!r} landmark set; add it once with "
                         f"`fitface landmarks mediapipe{where or ' MODEL'}`", path)
    raw = (document.get("metadata") or {}).get(INDICES_KEY)
    try:
        return check_indices(np.asarray(raw), NUM_MESH_POINTS)
    except (ValueError, TypeError):
        raise InputError(f"the model's {SET_NAME!r} set has no valid metadata[{INDICES_KEY!r}]; recompute it "
                         f"with `fitface landmarks mediapipe{where or ' MODEL'} --replace`", path) from None


def add_mediapipe_set(model_path: str | os.PathLike, out: str | os.PathLike | None = None, replace: bool = False,
                      mediapipe_model: str | os.PathLike | None = None) -> tuple[str, MediapipeCorrespondence]:
    """Compute the ``"mediapipe"`` set on a model file's template and store it (atomically).

    Returns:
        ``(new model id, correspondence)``.

    Raises:
        InputError: as :func:`fitface.models.model_file.add_landmark_set`; NoFaceError: no face in the template's render.
    """
    from safetensors import safe_open

    from fitface.errors import NoFaceError
    from fitface.models.model_file import add_landmark_set, read_metadata
    from fitface.models.registry import editable_source

    src = editable_source(model_path, out)  # a name or path; a built-in model needs ``out``
    doc = read_metadata(src)
    if SET_NAME in doc["landmark_sets"] and not replace:
        raise InputError(f"the model already has a landmark set {SET_NAME!r} (pass --replace to recompute it)", src)
    with safe_open(str(src), framework="np") as f:
        template = f.get_tensor("template").astype(np.float64)
        faces = f.get_tensor("faces").astype(np.int64)
    try:
        corr = build_mediapipe_set(template, faces, mediapipe_model=mediapipe_model)
    except NoFaceError as exc:
        raise NoFaceError(f"mediapipe finds no face in the rendered template ({exc.problem})", src) from None
    new_id = add_landmark_set(src, corr.landmark_set, out, replace=True,
                              metadata={INDICES_KEY: corr.indices.astype(int).tolist()})
    return new_id, corr


__all__ = [
    "CORRESPONDENCE_VIEWS", "INDICES_KEY", "MIN_SUPPORT", "MediapipeCorrespondence", "SET_NAME",
    "add_mediapipe_set", "attach_to_model", "build_mediapipe_set", "mediapipe_indices",
]
