"""Identity parameters -> neutral face: a smooth, non-linear map of the face domain into 3D.

A face is ``F(u, v; p)``: the template domain point ``(u, v)`` (:mod:`.template`) is first
*warped* in the plane (face width and height, jaw width, eye spacing and size, mouth width and
height, nose length, brow height ...), then wrapped around a vertical cylinder of
identity-dependent radius with a vertical profile (forehead slope, chin curl), and finally
displaced along the base normal by a sum of smooth features (nose, brow ridge, cheekbones,
eye sockets, lips, chin ...) whose amplitudes and widths depend on the identity. Features are
evaluated at the *template* domain position, so they follow the warp.

Convention:
    * Identity parameters: ``(..., NUM_IDENTITY_PARAMS)`` float, each ~ N(0, 1) for a plausible
      person; ``0`` is the mean face, whose mesh is the template. Values are clipped to
      ``[-PARAM_CLIP, PARAM_CLIP]``. :data:`IDENTITY_PARAM_NAMES` names them.
    * Output coordinates: millimetres, x right, y up, z towards the viewer; the subnasale of
      the mean face is near the origin and the face looks along +z.
    * The map is a deterministic, smooth (C-infinity) function of the parameters; proportions
      enter through ``exp``/``tanh``/trigonometric terms, so it is not linear in them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fitface.checks import check_finite
from fitface.data.procedural.template import EYE_CENTER, MOUTH_CENTER_V, template_mesh

#: Names of the identity parameters (the columns of an identity vector).
IDENTITY_PARAM_NAMES = (
    "face_width", "face_height", "head_roundness", "jaw_width", "chin_projection", "chin_length",
    "nose_length", "nose_projection", "nose_width", "nose_bridge", "eye_spacing", "eye_size",
    "eye_openness", "eye_tilt", "brow_height", "brow_ridge", "mouth_width", "mouth_height",
    "upper_lip", "lower_lip", "cheek_fullness", "cheekbones", "forehead_slope", "face_depth",
    "mouth_protrusion", "eye_socket_depth", "forehead_height", "jaw_pivot_depth",
    "jaw_pivot_height", "asymmetry", "midface_bulge", "temple_hollow",
)
NUM_IDENTITY_PARAMS = len(IDENTITY_PARAM_NAMES)
#: Identity parameters are clipped to this many standard deviations.
PARAM_CLIP = 3.0
#: Cylinder radius of the mean face, mm (the face wraps around it horizontally).
BASE_RADIUS = 84.0
#: Mean distance of the jaw's hinge behind the nose tip, mm (see :mod:`.expression`).
JAW_PIVOT_DEPTH = 78.0


def _gauss(u, v, cu, cv, su, sv):
    """exp(-((u-cu)/su)^2/2 - ((v-cv)/sv)^2/2), broadcasting."""
    return np.exp(-0.5 * ((u - cu) / su) ** 2 - 0.5 * ((v - cv) / sv) ** 2)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


@dataclass(frozen=True)
class IdentityTraits:
    """Per-identity quantities derived from the parameters, each (n,) float64 (lengths in mm)."""

    p: np.ndarray  #: (n, P) the clipped parameters

    def __getattr__(self, name):  # traits by parameter name, e.g. traits.mouth_width -> (n,)
        try:
            k = IDENTITY_PARAM_NAMES.index(name)
        except ValueError:
            raise AttributeError(name) from None
        return self.p[:, k]


def _as_params(params) -> np.ndarray:
    p = np.asarray(params, dtype=np.float64)
    if p.ndim == 1:
        p = p[None]
    if p.ndim != 2 or p.shape[1] != NUM_IDENTITY_PARAMS:
        raise ValueError(f"params: expected shape (n, {NUM_IDENTITY_PARAMS}), got {np.shape(params)}")
    check_finite("params", p)
    return np.clip(p, -PARAM_CLIP, PARAM_CLIP)


def jaw_pivot(params) -> np.ndarray:
    """Jaw hinge position of each identity (before any expression).

    Args:
        params: (n, P) identity parameters.

    Returns:
        (n, 3) float64, mm: the point on the hinge axis (the axis is parallel to x) in the
        face's coordinates; behind and above the mouth, depending on the identity.
    """
    t = IdentityTraits(_as_params(params))
    sh = np.exp(0.05 * t.face_height)
    depth = JAW_PIVOT_DEPTH * np.exp(0.08 * t.jaw_pivot_depth) * np.exp(0.06 * t.face_depth)
    height = sh * (12.0 + 5.0 * np.tanh(t.jaw_pivot_height))
    return np.stack([np.zeros_like(depth), height, -depth], axis=1)


def neutral_faces(params, domain: np.ndarray | None = None) -> np.ndarray:
    """Neutral faces of identities.

    Args:
        params: (n, P) or (P,) float, identity parameters (see Convention).
        domain: optional (V, 2) float64 domain points, mm; default the template's vertices.

    Returns:
        (n, V, 3) float64, mm.
    """
    p = _as_params(params)
    t = IdentityTraits(p)
    dom = template_mesh().domain if domain is None else np.asarray(domain, dtype=np.float64)
    u, v = dom[None, :, 0], dom[None, :, 1]  # (1, V)
    col = lambda x: np.asarray(x)[:, None]  # (n,) -> (n, 1)  # noqa: E731

    ex, ey = EYE_CENTER
    # ---- planar warp (template domain -> identity domain), (n, V) each -----------------------
    du = np.zeros((len(p), dom.shape[0]))
    dv = np.zeros_like(du)
    eye_shift = col(2.2 * np.tanh(0.8 * t.eye_spacing))
    eye_size = col(np.exp(0.07 * t.eye_size))
    eye_open = col(np.exp(0.10 * t.eye_openness))
    tilt = col(0.07 * np.tanh(t.eye_tilt))
    brow = col(2.5 * np.tanh(0.7 * t.brow_height))
    for side in (-1.0, 1.0):
        g = _gauss(u, v, side * ex, ey, 17.0, 11.0)
        lu, lv = u - side * ex, v - ey
        du += g * (side * eye_shift + (eye_size - 1.0) * lu)
        dv += g * ((eye_size * eye_open - 1.0) * lv + side * tilt * lu + 0.4 * brow)
    mouth_w = col(np.exp(0.08 * t.mouth_width))
    g = _gauss(u, v, 0.0, MOUTH_CENTER_V, 30.0, 12.0)
    du += g * (mouth_w - 1.0) * u
    dv += g * col(2.0 * np.tanh(0.7 * t.mouth_height))
    dv += _gauss(u, v, 0.0, 8.0, 14.0, 12.0) * col(-2.5 * np.tanh(0.7 * t.nose_length))
    dv += np.exp(-0.5 * ((v - 57.0) / 8.0) ** 2) * np.exp(-0.5 * (u / 50.0) ** 4) * brow
    dv += _gauss(u, v, 0.0, -58.0, 28.0, 14.0) * col(-3.5 * np.tanh(0.7 * t.chin_length))
    uw, vw = u + du, v + dv
    # global proportions
    sw = col(np.exp(0.05 * t.face_width))
    sh = col(np.exp(0.05 * t.face_height))
    jaw = col(np.exp(0.07 * t.jaw_width))
    fh = col(0.07 * t.forehead_height)
    uw = uw * sw * (1.0 + (jaw - 1.0) * _sigmoid((-15.0 - v) / 10.0))
    vw = sh * (vw + fh * 10.0 * np.logaddexp(0.0, (v - 50.0) / 10.0))

    # ---- base surface: cylinder + vertical profile -------------------------------------------
    radius = col(BASE_RADIUS * np.exp(0.08 * t.head_roundness))
    # the lower face is narrower in depth too: its cross-section radius shrinks towards the chin
    radius = radius * (1.0 - 0.18 * _sigmoid((-20.0 - vw) / 14.0))
    ang = uw / radius
    slope = col(0.0045 * np.exp(0.35 * t.forehead_slope))
    prof = -slope * np.logaddexp(0.0, (vw - 45.0) / 8.0) ** 2 * 64.0 / 8.0  # forehead leans back
    prof += -0.028 * (np.logaddexp(0.0, (-62.0 - vw) / 4.0) * 4.0) ** 2  # curls under the chin
    prof += -0.004 * (np.logaddexp(0.0, (-10.0 - vw) / 8.0) * 8.0) ** 2 * (np.abs(uw) / 60.0) ** 2  # jaw recedes
    # ---- features along the normal (evaluated at the template position), (n, V) -------------
    nt = np.clip((48.0 - v) / 40.0, 0.0, 1.0)  # 0 at the nasion, 1 at the tip (v = 8)
    bridge = col(np.exp(0.2 * t.nose_bridge))
    proj = col(np.exp(0.14 * t.nose_projection))
    nw = col(np.exp(0.12 * t.nose_width))
    nose_h = bridge * (4.0 + 5.0 * nt) + proj * 15.0 * nt**2.2
    nose_w = nw * (5.0 + 5.5 * nt**2)
    under = _smoothstep((v + 1.5) / 9.5)  # the nose's underside, down to the subnasale
    h = nose_h * np.exp(-0.5 * (u / nose_w) ** 2) * under * (v < 60.0)
    for side in (-1.0, 1.0):
        h += nw * 7.0 * _gauss(u, v, side * 12.5 * nw, 4.0, 4.5, 4.0)  # alae
        h += col(6.5 * np.exp(0.3 * t.cheek_fullness)) * _gauss(u, v, side * 42.0, 2.0, 15.0, 14.0)
        h += col(5.0 * np.exp(0.25 * t.cheekbones)) * _gauss(u, v, side * 50.0, 22.0, 13.0, 8.0)
        sock = col(np.exp(0.2 * t.eye_socket_depth))
        h += -9.0 * sock * _gauss(u, v, side * ex, ey + 2.0, 15.0, 10.0)
        h += 5.5 * _gauss(u, v, side * ex, ey, 10.0, 4.5)  # the eyeball under the lids
        h += -3.5 * sock * _gauss(u, v, side * 17.0, ey - 2.0, 4.5, 6.0)  # inner corner
        h += -col(4.0 * np.exp(0.3 * t.temple_hollow)) * _gauss(u, v, side * 72.0, 52.0, 12.0, 18.0)
    h += col(4.5 * np.exp(0.3 * t.brow_ridge)) * np.exp(-0.5 * ((v - 56.0) / 7.0) ** 2 - 0.5 * (u / 44.0) ** 4)
    h += 2.5 * _gauss(u, v, 0.0, 50.0, 10.0, 6.0)  # glabella
    h += 3.0 * _gauss(u, v, 0.0, 82.0, 45.0, 25.0)  # forehead
    lip_u = np.exp(-0.5 * (u / 22.0) ** 4)
    h += col(4.5 * np.exp(0.2 * t.upper_lip)) * lip_u * np.exp(-0.5 * ((v - (MOUTH_CENTER_V + 4.5)) / 4.0) ** 2)
    h += col(5.0 * np.exp(0.2 * t.lower_lip)) * lip_u * np.exp(-0.5 * ((v - (MOUTH_CENTER_V - 5.5)) / 4.5) ** 2)
    h += -1.2 * _gauss(u, v, 0.0, -9.0, 3.0, 5.0)  # philtrum
    h += col(9.0 * np.exp(0.15 * t.mouth_protrusion)) * _gauss(u, v, 0.0, MOUTH_CENTER_V, 30.0, 20.0)
    h += -3.0 * _gauss(u, v, 0.0, -38.0, 14.0, 4.0)  # mentolabial sulcus
    h += col(6.0 * np.exp(0.25 * t.chin_projection)) * _gauss(u, v, 0.0, -53.0, 15.0, 10.0)
    h += col(3.0 * np.tanh(t.midface_bulge)) * _gauss(u, v, 0.0, 10.0, 40.0, 25.0)
    h += col(1.5 * np.tanh(t.asymmetry)) * np.sin(np.pi * u / 120.0) * _gauss(u, v, 0.0, 10.0, 60.0, 60.0)

    # ---- assemble --------------------------------------------------------------------------
    depth = col(np.exp(0.06 * t.face_depth))
    nx, nz = np.sin(ang), np.cos(ang)  # base normal (horizontal part)
    x = radius * np.sin(ang) + nx * h
    y = vw
    z = depth * (radius * (np.cos(ang) - 1.0) + prof + nz * h)
    return np.stack([x, y, z], axis=-1)


def template_vertices() -> np.ndarray:
    """(V, 3) float64, mm: the mean face (all identity parameters 0), the template's geometry."""
    return neutral_faces(np.zeros(NUM_IDENTITY_PARAMS))[0]
