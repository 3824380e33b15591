"""Adding a user-defined landmark set to a model file (``fitface landmarks add``)."""

from __future__ import annotations

import os

PathLike = str | os.PathLike


def add_landmark_set(model_path: PathLike, name: str, file: PathLike, out: PathLike | None = None,
                     replace: bool = False) -> str:
    """Add the landmark set in ``file`` (see :func:`fitface.landmarks.set_files.read_landmark_set_file`)
    to a model file, atomically (``out`` = another file, default in place).

    The model file's hash, hence its ``model_id``, changes: codes fitted before refer to the old id
    (the weights are unchanged, but fitface cannot know that from the id).

    Returns:
        The new file's model id.

    Raises:
        InputError: not a model file, bad name, a set of that name exists (unless ``replace``),
            a bad landmark-set file.
    """
    from fitface.landmarks.set_files import read_landmark_set_file
    from fitface.models import model_file
    from fitface.models.registry import editable_source

    model_path = editable_source(model_path, out)  # a name or path; a built-in model needs ``out``
    doc = model_file.read_metadata(model_path)
    faces = model_file.read_tensor(model_path, "faces")
    lset = read_landmark_set_file(file, name, faces, int(doc["num_vertices"]))
    return model_file.add_landmark_set(model_path, lset, out=out, replace=replace)
