"""The Python API of fitting, batch reconstruction, retargeting and latent manipulation.

``fitface.fit``, ``fitface.fit_batch``, ``fitface.track``, ``fitface.retarget`` (and
``fitface.retarget_sequence``), ``fitface.sample``, ``fitface.interpolate`` and
``fitface.add_landmark_set`` mirror the CLI commands (which are thin
layers over them), for notebooks and scripts. Everything here runs on numpy (the fitting engine
:mod:`fitface.fitting` decodes only the landmark rows of the generator); torch is never imported,
so a single fit is fast end to end.

Convention:
    * Frames and units. A capture (landmarks and scan) is in its own frame and unit; the
      model is in its own (``model unit``, usually mm). The fit estimates a similarity ``T``
      with ``x_capture = s R x_model + t`` (Umeyama from the landmarks, refined jointly with
      z) and every result (mesh, landmarks, residuals, transform) is in the capture's frame
      and unit. The capture's unit is ``unit=`` if given, else the unit the landmark file
      states, else it is *inferred* from the landmarks' size against the model's mean face: m,
      cm or mm when that ratio is within a factor 1.6 of the unit's conversion (0.001, 0.1, 1
      for a model in mm; ``"unit_source": "inferred"``); when none fits, the model's unit is
      assumed (``"assumed"``, with a one-line :class:`fitface.errors.FitfaceWarning`) and the
      similarity's scale absorbs the mismatch. The unit is converted before the fit, so ``s``
      stays near 1 and measures the face's size relative to the model; the transform written
      includes the conversion (a capture in metres shows a scale near 0.001).
    * Models: a built-in name (``"procedural"``, ``"ict"``, ``"ict-linear"``;
      :mod:`fitface.models.registry`), a model file, or None for the default built-in model.
    * Landmark order: row ``i`` of a landmark file is point ``i`` of the model's landmark set
      (chosen by name, or the set whose size matches the file).
    * Codes: ``codes.json`` holds one list per latent block (factors then ``noise``),
      ``model_id`` (the model file's hash) and ``model`` (the built-in name or the file's
      absolute path); codes from another model are refused, and :func:`retarget` /
      :func:`interpolate` without a model load the one the codes record.
    * Photos: a photo (jpg, png, ...) is a capture like a landmark file: ``fit("photo.jpg")``
      and ``fit_batch("photos/")`` lift its faces with mediapipe (:mod:`fitface.api.photo_capture`)
      and fit them through the model's ``"mediapipe"`` set in the photo frame (pixels), with the
      same engine and options (freeze, sequences, shards); :attr:`FitResult.photo` says where
      the face came from.
    * Errors: bad input raises :class:`fitface.errors.InputError` (one line, naming the file);
      nothing is written when a fit fails.
"""

# ``track`` is both a submodule and its function: importing the submodule (the CLI does) would
# rebind ``fitface.api.track`` to the module, so it is imported here (~2 ms) and the name bound
# to the function after it. Every other name loads lazily.
from fitface.api.track import TrackCodes, TrackResult, read_track_codes, track  # noqa: E402

#: Public name -> the submodule that defines it. Submodules load on first use (PEP 562), so
#: ``from fitface.api import fit`` imports the single-capture path only, not the batch, track
#: or retarget code (a plain ``fitface fit`` stays fast).
_EXPORTS = {
    "BatchResult": "batch_fit", "fit_batch": "batch_fit",
    "FitResult": "capture_fit", "fit": "capture_fit",
    "DEFAULT_LAMBDA": "inputs", "choose_landmark_set": "inputs", "load_fit_model": "inputs",
    "parse_assignments": "inputs",
    "add_landmark_set": "landmark_sets",
    "CodesResult": "latent_edit", "interpolate": "latent_edit", "retarget": "latent_edit", "sample": "latent_edit",
    "SequenceRetargetResult": "sequence_retarget", "retarget_sequence": "sequence_retarget",
}
_OTHER = {"read_landmark_set_file": "fitface.landmarks.set_files"}


def __getattr__(name: str):
    """Import the submodule that defines ``name`` on first use (PEP 562)."""
    import importlib

    if name in _EXPORTS:
        module = importlib.import_module(f"fitface.api.{_EXPORTS[name]}")
    elif name in _OTHER:
        module = importlib.import_module(_OTHER[name])
    else:
        raise AttributeError(f"module 'fitface.api' has no attribute {name!r}")
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "DEFAULT_LAMBDA",
    "BatchResult",
    "CodesResult",
    "FitResult",
    "SequenceRetargetResult",
    "TrackCodes",
    "TrackResult",
    "add_landmark_set",
    "choose_landmark_set",
    "fit",
    "fit_batch",
    "interpolate",
    "load_fit_model",
    "parse_assignments",
    "read_landmark_set_file",
    "read_track_codes",
    "retarget",
    "retarget_sequence",
    "sample",
    "track",
]
