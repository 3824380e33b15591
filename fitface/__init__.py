"""fitface: a decoupled identity/expression 3D face model (Fernandez Abrevaya et al.,
ICCV 2019), its trainer, and fast landmark fitting, batch reconstruction and
retargeting on top of it.

Importing ``fitface`` is cheap: heavy modules (torch, trimesh, mediapipe) load
only when a function that needs them is called.
"""

__version__ = "0.1.0"

from fitface.errors import FitfaceError, InputError, NoFaceError  # noqa: E402

__all__ = ["__version__", "FitfaceError", "InputError", "NoFaceError", "load_model",
           "fit", "fit_batch", "track", "retarget", "retarget_sequence", "sample", "interpolate",
           "add_landmark_set"]

#: Public functions of :mod:`fitface.api` (numpy only; importing them never imports torch).
_API = ("fit", "fit_batch", "track", "retarget", "retarget_sequence", "sample", "interpolate", "add_landmark_set")


def __getattr__(name: str):
    """Lazy attributes (PEP 562): ``fitface.load_model`` imports torch and the model code
    (:mod:`fitface.models.model_file`) only when it is first used."""
    if name == "load_model":
        from fitface.models.model_file import load_model

        return load_model
    if name in _API:
        from fitface import api

        return getattr(api, name)
    raise AttributeError(f"module 'fitface' has no attribute {name!r}")
