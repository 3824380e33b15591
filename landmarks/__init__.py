"""Landmark sets and image lifting (installed as ``fitface.landmarks``)."""
