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
