"""The Python API of fitting, batch reconstruction, retargeting and latent manipulation.

``fitface.fit``, ``fitface.fit_batch``, ``fitface.retarget``, ``fitface.sample``,
``fitface.interpolate`` and ``fitface.add_landmark_set`` mirror the CLI commands (which are thin
layers over them), for notebooks and scripts. Everything here runs on numpy (the fitting engine
:mod:`fitface.fitting` decodes only the landmark rows of the generator); torch is never imported,
so a single fit is fast end to end.

Convention:
    * Frames and units. A capture (landmarks and scan) is in its own frame and unit; the
      model is in its own (``model unit``, usually mm). The fit estimates a similarity ``T``
      with ``x_capture = s R x_model + t`` (Umeyama from the landmarks, refined jointly with
      z) and every result (mesh, landmarks, residuals, transform) is in the capture's frame
      and unit. The capture's unit is ``unit=`` if given, else the unit the landmark file
      states, else it is *assumed* to be the model's unit and the similarity's scale absorbs
      any mismatch (``codes.json`` records ``"unit_source": "assumed"``; a capture in metres
      then shows a scale near 0.001). A known unit is converted before the fit, so ``s``
      stays near 1 and measures the face's size relative to the model.
    * Landmark order: row ``i`` of a landmark file is point ``i`` of the model's landmark set
      (chosen by name, or the set whose size matches the file).
    * Codes: ``codes.json`` holds one list per latent block (factors then ``noise``) and
      ``model_id`` (the model file's hash); codes from another model are refused.
    * Errors: bad input raises :class:`fitface.errors.InputError` (one line, naming the file);
      nothing is written when a fit fails.
"""

from fitface.api.batch_fit import BatchResult, fit_batch
from fitface.api.capture_fit import FitResult, fit
from fitface.api.inputs import (
    DEFAULT_LAMBDA,
    choose_landmark_set,
    load_fit_model,
    parse_assignments,
)
from fitface.api.landmark_sets import add_landmark_set
from fitface.api.latent_edit import CodesResult, interpolate, retarget, sample
from fitface.landmarks.set_files import read_landmark_set_file

__all__ = [
    "DEFAULT_LAMBDA",
    "BatchResult",
    "CodesResult",
    "FitResult",
    "add_landmark_set",
    "choose_landmark_set",
    "fit",
    "fit_batch",
    "interpolate",
    "load_fit_model",
    "parse_assignments",
    "read_landmark_set_file",
    "retarget",
    "sample",
]
