"""Landmark sets (re-export): :class:`LandmarkSet` lives in :mod:`fitface.landmark_set`.

The core (fitting, data, io, geometry) imports nothing from ``fitface.landmarks``, so the type
it shares with this package is defined there; ``from fitface.landmarks.sets import LandmarkSet``
keeps working and names the same class.
"""

from fitface.landmark_set import LandmarkSet

__all__ = ["LandmarkSet"]
