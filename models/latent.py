"""Latent-code layout (re-export): :class:`LatentLayout`, :data:`NOISE` and :data:`PAPER_LAYOUT`
live in :mod:`fitface.latent`.

The core (fitting, data, io, geometry) imports nothing from ``fitface.models``, so the layout it
shares with the networks is defined there; ``from fitface.models.latent import ...`` keeps
working and names the same objects.
"""

from fitface.latent import NOISE, PAPER_LAYOUT, LatentLayout

__all__ = ["NOISE", "PAPER_LAYOUT", "LatentLayout"]
