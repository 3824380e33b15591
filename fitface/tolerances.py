"""Named numerical tolerances (one place, no scattered epsilons; cf. trimesh ``constants.tol``).

Convention: ``*_rel`` values are relative to a stated magnitude; ``*_abs`` are in the
unit of the quantity they guard (stated per constant).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerances:
    #: Triangle area (in squared mesh units) below which a triangle counts as degenerate.
    area_degenerate: float = 1e-14
    #: Cotangent clamp: |cot| is capped so needle triangles cannot blow up a weight.
    cot_max: float = 1e5
    #: Signed UV area below which a triangle counts as flipped (UV units^2, UV in [0,1]^2).
    uv_flip_area: float = 0.0
    #: Barycentric slack when testing whether a pixel centre lies inside a triangle.
    bary_inside: float = 1e-9
    #: Relative agreement expected between our cotangent Laplacian and libigl's.
    laplacian_vs_igl_rel: float = 1e-8


tol = Tolerances()


def dtype_rtol(dtype) -> float:
    """Relative tolerance suited to a floating dtype (numpy or torch): float64 1e-10,
    float32 1e-5, float16/bfloat16 1e-2."""
    name = str(dtype).replace("torch.", "")
    if "64" in name:
        return 1e-10
    if "32" in name:
        return 1e-5
    return 1e-2
