"""Geometry core: Laplacian, parameterisation, geometry mapping, rendering."""
