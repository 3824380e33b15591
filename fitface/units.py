"""Length units. Convention: every dataset, model file and output states its unit;
the paper reports millimetres, and mm is the internal default."""

from __future__ import annotations

from fitface.errors import InputError

#: Millimetres per unit.
MM_PER_UNIT = {"mm": 1.0, "cm": 10.0, "m": 1000.0, "in": 25.4}

UNITS = tuple(MM_PER_UNIT)


def check_unit(unit: str, what: str = "unit") -> str:
    """Return ``unit`` if known, else raise :class:`InputError` listing the known units."""
    if unit not in MM_PER_UNIT:
        raise InputError(f"{what}: unknown unit {unit!r}; use one of {', '.join(UNITS)}")
    return unit


def scale_between(src: str, dst: str) -> float:
    """Factor that converts lengths in ``src`` units to ``dst`` units (``x_dst = x_src * f``)."""
    return MM_PER_UNIT[check_unit(src)] / MM_PER_UNIT[check_unit(dst)]


#: Units a capture's unit is inferred among when none is given (:func:`infer_unit`); inches
#: (25.4 mm, only 2.5x from cm) are never inferred: pass ``--unit in``.
INFERRED_UNITS = ("m", "cm", "mm")
#: How far (a factor, either way) a capture's size relative to the model may be from a unit's
#: nominal conversion for that unit to be inferred. 1.6 accepts faces from 0.63x to 1.6x the
#: model's mean face (children to large adults, partial landmark sets) and leaves gaps between
#: the bands of m, cm and mm (nominal factors 1000 and 10 apart), so a size in a gap is refused,
#: never silently misread.
INFER_TOLERANCE = 1.6


def nominal_scale(capture_unit: str, model_unit: str) -> float:
    """Capture numbers per model unit when the capture is in ``capture_unit`` (e.g. 0.001 for a
    capture in m against a model in mm): the similarity scale of a face of the model's size."""
    return scale_between(model_unit, capture_unit)


def infer_unit(scale: float, model_unit: str, candidates=INFERRED_UNITS,
               tolerance: float = INFER_TOLERANCE) -> str | None:
    """The capture unit whose nominal scale (:func:`nominal_scale`) is within a factor
    ``tolerance`` of ``scale``, or None when none is.

    Args:
        scale: the similarity scale model -> capture (capture numbers per model unit), e.g. the
            size of the capture's landmarks relative to the model's mean face.
        model_unit: the model's unit.
        candidates: units to consider.
        tolerance: the factor (> 1); bands must not overlap, so it must stay under the square
            root of the smallest ratio between two candidates' factors (sqrt(10) for m, cm, mm).

    Raises:
        ValueError: a non-positive scale or tolerance <= 1.
    """
    import math

    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale: expected a positive finite number, got {scale!r}")
    if not tolerance > 1:
        raise ValueError(f"tolerance: expected a factor > 1, got {tolerance!r}")
    hits = [u for u in candidates if abs(math.log(scale / nominal_scale(u, model_unit))) <= math.log(tolerance)]
    return hits[0] if len(hits) == 1 else None
