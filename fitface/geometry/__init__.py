"""Geometry core: mesh topology, Laplacians, parameterisation, the mapping layer, rendering.

* :mod:`.topology`: edges, boundary loops, components, the disk-with-holes check.
* :mod:`.laplacian`: the cotangent Laplace-Beltrami operator (libigl's sign) and the paper's
  mesh regulariser (eq. 12).
* :mod:`.parameterization`: harmonic UV maps onto the unit square (paper §5.1).
* :mod:`.mapping`: the geometry mapping layer, mesh -> geometry image (paper §4.1, eq. 5).
* :mod:`.raster`, :mod:`.camera`, :mod:`.render`: the software renderer (shaded and normal maps).
* :mod:`.deformation_transfer`: Sumner & Popovic 2004, used by the ICT dataset builder.

Conventions for all of them: docs/conventions.md.
"""
