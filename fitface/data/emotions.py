"""The seven basic emotions of the static datasets the paper trains on (§5.2), and the
recipes that make expressions of them.

Convention: expression class ``k`` of every dataset fitface builds is ``EMOTIONS[k]``;
``-1`` means "no expression label". A recipe is ``{unit: weight}``: FACS action units
(``"AU12"``) or a source's blendshape names, at full intensity; :func:`recipe_weights`
turns recipes into coefficient vectors of one source (the procedural face's actions, an ICT
model's blendshapes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

EMOTIONS = ("neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise")
NEUTRAL = 0


def recipe_weights(recipes: Iterable[Mapping[str, float]], columns: Mapping[str, Sequence[int]],
                   num_columns: int) -> np.ndarray:
    """(R, num_columns) float64 coefficient vectors of R recipes.

    Args:
        recipes: R recipes ``{unit: weight}``, one row each, in order.
        columns: the coefficient columns each unit drives (every unit of the recipes must be a
            key; an empty list: the source has nothing for it); the unit's weight is set in each.
        num_columns: the width of a row (the source's number of coefficients).

    Raises:
        KeyError: a recipe unit that ``columns`` does not list.
    """
    recipes = list(recipes)
    out = np.zeros((len(recipes), int(num_columns)))
    for r, recipe in enumerate(recipes):
        for unit, weight in recipe.items():
            out[r, list(columns[unit])] = weight
    return out
