"""fitface's procedural face space: the project's own faces (no external data).

* :mod:`.template`: the template mesh (a face domain meshed as a disk with eye and mouth
  holes, ~4,300 vertices) and its ``"ibug68"`` landmark set.
* :mod:`.identity`: identity parameters (32, ~ N(0, 1)) -> neutral face, smooth and non-linear.
* :mod:`.expression`: action parameters (16 FACS-like, in [0, 1]) -> posed face, depending on
  the identity non-linearly (jaw rotation about an identity-dependent hinge, a smile scaled to
  the mouth, ...); the seven emotions as action recipes.

Convention: millimetres; x right, y up, z towards the viewer (see each module).

Example::

    from fitface.data.procedural import template_mesh, neutral_faces, apply_actions, recipe_matrix
    neutral = neutral_faces(params)                      # (n, V, 3) mm
    happy = apply_actions(neutral, params, recipe_matrix()[[4] * n])
"""

from fitface.data.procedural.expression import (
    ACTION_NAMES,
    EMOTION_RECIPES,
    NUM_ACTIONS,
    apply_actions,
    recipe_matrix,
)
from fitface.data.procedural.identity import (
    IDENTITY_PARAM_NAMES,
    NUM_IDENTITY_PARAMS,
    jaw_pivot,
    neutral_faces,
    template_vertices,
)
from fitface.data.procedural.template import TemplateMesh, template_mesh

__all__ = [
    "ACTION_NAMES", "EMOTION_RECIPES", "NUM_ACTIONS", "apply_actions", "recipe_matrix",
    "IDENTITY_PARAM_NAMES", "NUM_IDENTITY_PARAMS", "jaw_pivot", "neutral_faces", "template_vertices",
    "TemplateMesh", "template_mesh",
]
