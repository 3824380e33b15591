"""Expressions of the procedural face: action parameters (FACS-like) -> deformation of a neutral.

An expression is a vector of :data:`NUM_ACTIONS` action intensities in [0, 1] (named after
the FACS action units they imitate, :data:`ACTION_NAMES`). Each action deforms an identity's
neutral face, and every deformation depends on that identity, non-linearly:

* the jaw drop (AU26) *rotates* the lower face about the identity's jaw hinge
  (:func:`.identity.jaw_pivot`, an axis parallel to x behind and above the mouth): the lower
  lip, chin and jaw swing down and back and the lips part (the mouth slit opens); the
  rotation angle fades smoothly to zero above the mouth line;
* lip-corner actions (smile AU12, depressor AU15, stretcher AU20, pucker AU18) move the
  corners by amounts proportional to the identity's own mouth half-width, measured on its
  neutral face, with a non-linear (power) dependence;
* lid actions (AU5, AU7) move the lids by fractions of the identity's own eye opening;
* brow and lip actions scale with the identity's brow-to-eye distance and lip heights.

The seven emotions (:data:`fitface.data.emotions.EMOTIONS`) are recipes: action vectors at
full intensity (:data:`EMOTION_RECIPES`), after EMFACS prototypes.

Convention:
    * ``actions``: (..., NUM_ACTIONS) float in [0, 1]; all zeros is the neutral face exactly.
    * Deformations are in the face's own frame (mm; x right, y up, z towards the viewer).
      Additive actions are applied first (a sum of fixed smooth masks on the template domain
      times per-sample displacement vectors), then the jaw rotation.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from fitface.checks import check_finite
from fitface.data.emotions import EMOTIONS, recipe_weights
from fitface.data.procedural.identity import _as_params, _gauss, _smoothstep, jaw_pivot
from fitface.data.procedural.template import (
    EYE_CENTER,
    EYE_LOWER,
    EYE_UPPER,
    MOUTH_CENTER_V,
    MOUTH_HALF_HEIGHT,
    MOUTH_HALF_WIDTH,
    template_mesh,
)

#: Action parameters (FACS-like); the columns of an action vector.
ACTION_NAMES = (
    "AU1_inner_brow_raiser", "AU2_outer_brow_raiser", "AU4_brow_lowerer", "AU5_upper_lid_raiser",
    "AU6_cheek_raiser", "AU7_lid_tightener", "AU9_nose_wrinkler", "AU10_upper_lip_raiser",
    "AU12_lip_corner_puller", "AU15_lip_corner_depressor", "AU16_lower_lip_depressor",
    "AU17_chin_raiser", "AU18_lip_pucker", "AU20_lip_stretcher", "AU24_lip_pressor", "AU26_jaw_drop",
)
NUM_ACTIONS = len(ACTION_NAMES)
_A = {name.split("_")[0]: k for k, name in enumerate(ACTION_NAMES)}

#: Full-intensity action vectors of the seven emotions (EMFACS-style prototypes).
EMOTION_RECIPES: dict[str, dict[str, float]] = {
    "neutral": {},
    "anger": {"AU4": 1.0, "AU5": 0.5, "AU7": 0.8, "AU17": 0.4, "AU24": 0.9},
    "disgust": {"AU4": 0.4, "AU6": 0.3, "AU9": 1.0, "AU10": 0.9, "AU15": 0.5, "AU17": 0.4},
    "fear": {"AU1": 0.9, "AU2": 0.7, "AU4": 0.5, "AU5": 1.0, "AU7": 0.2, "AU20": 0.9, "AU26": 0.45},
    "happiness": {"AU6": 0.9, "AU12": 1.0, "AU26": 0.2},
    "sadness": {"AU1": 1.0, "AU4": 0.6, "AU15": 0.9, "AU17": 0.6},
    "surprise": {"AU1": 1.0, "AU2": 1.0, "AU5": 0.9, "AU26": 0.9},
}
#: Maximum jaw rotation (AU26 = 1), radians.
JAW_MAX_ANGLE = np.deg2rad(19.0)


def recipe_matrix(recipes: dict[str, dict[str, float]] | None = None) -> np.ndarray:
    """(R, NUM_ACTIONS) float64 action vectors of recipes ``{name: {AU: intensity}}`` (AU as in
    ``"AU12"``, one action each; :func:`fitface.data.emotions.recipe_weights`); by default the
    seven emotions: (7, NUM_ACTIONS), row k the full-intensity action vector of ``EMOTIONS[k]``.

    The ICT builder's :func:`fitface.data.ict.blendshape_recipe_matrix` is the same over an ICT model's
    blendshapes (an AU drives one or two of them there, and it has recipes of its own)."""
    recipes = {name: EMOTION_RECIPES[name] for name in EMOTIONS} if recipes is None else recipes
    return recipe_weights(recipes.values(), {au: [k] for au, k in _A.items()}, NUM_ACTIONS)


def _mouth_line(u):
    """v of the lip line (the slit's mid-curve) at u, extended beyond the corners."""
    c = np.clip(u / MOUTH_HALF_WIDTH, -1.0, 1.0)
    return MOUTH_CENTER_V + (c * c - 0.5)


@lru_cache(maxsize=1)
def _masks() -> dict[str, np.ndarray]:
    """Fixed per-vertex weights on the template domain, each (V,) float64 in [0, 1]."""
    tm = template_mesh()
    u, v = tm.domain[:, 0], tm.domain[:, 1]
    ex, ey = EYE_CENTER
    line = _mouth_line(u)
    d = v - line  # > 0 above the lip line
    # half gap of the slit at u (0 beyond the corners), the jaw's blending band around the line
    c = np.clip(u / MOUTH_HALF_WIDTH, -1.0, 1.0)
    s = np.sqrt(1.0 - c * c)
    gap = MOUTH_HALF_HEIGHT * s * (0.55 + 0.45 * s)
    band = np.maximum(gap, 0.35) + 20.0 * _smoothstep((np.abs(u) - MOUTH_HALF_WIDTH) / 30.0)
    jaw = _smoothstep(0.5 - 0.5 * d / band)
    # rim vertices: exactly on their lip
    rim = tm.mouth_rim
    jaw[rim] = np.where(d[rim] > 0, 0.0, 1.0)
    jaw[tm.mouth_corners] = 0.5
    lips_u = np.exp(-0.5 * (u / (MOUTH_HALF_WIDTH + 2.0)) ** 4)
    upper = lips_u * _smoothstep(d / 1.0) * np.exp(-0.5 * (np.maximum(d, 0) / 8.0) ** 2)
    lower = lips_u * _smoothstep(-d / 1.0) * np.exp(-0.5 * (np.maximum(-d, 0) / 9.0) ** 2)
    # the lower lip follows the jaw less towards the corners: the opening is oval, not square
    jaw = jaw * (1.0 - 0.55 * lower * c * c)
    m = {
        "jaw": jaw,
        "upper_lip": upper,
        "lower_lip": lower,
        "lips_u": (upper + lower) * u / MOUTH_HALF_WIDTH,  # signed, for pucker / stretch
        "chin": _gauss(u, v, 0.0, -48.0, 18.0, 10.0),
        "glabella": _gauss(u, v, 0.0, 50.0, 8.0, 8.0),
    }
    for name, side in (("r", -1.0), ("l", 1.0)):
        # lip corner: stronger near the corner, reaching over the lips and the cheek
        m[f"corner_{name}"] = _gauss(u, v, side * MOUTH_HALF_WIDTH, MOUTH_CENTER_V, 12.0, 10.0)
        m[f"smile_cheek_{name}"] = _gauss(u, v, side * 38.0, -6.0, 12.0, 11.0)
        m[f"inner_brow_{name}"] = _gauss(u, v, side * 16.0, 55.0, 9.0, 10.0)
        m[f"outer_brow_{name}"] = _gauss(u, v, side * 42.0, 55.0, 11.0, 10.0)
        m[f"brow_{name}"] = _gauss(u, v, side * 25.0, 55.0, 15.0, 9.0)
        lu, lv = u - side * ex, v - ey
        across = np.exp(-0.5 * (lu / (0.8 * 14.0)) ** 4)
        m[f"upper_lid_{name}"] = across * _smoothstep(lv / 1.5 + 0.5) * np.exp(-0.5 * (np.maximum(lv - EYE_UPPER, 0) / 4.0) ** 2)
        m[f"lower_lid_{name}"] = across * _smoothstep(-lv / 1.5 + 0.5) * np.exp(-0.5 * (np.maximum(-lv - EYE_LOWER, 0) / 4.0) ** 2)
        m[f"cheek_{name}"] = _gauss(u, v, side * 36.0, 18.0, 13.0, 9.0)
        m[f"nose_side_{name}"] = _gauss(u, v, side * 9.0, 22.0, 6.0, 8.0)
    return m


@lru_cache(maxsize=1)
def _mask_matrix() -> tuple[tuple[str, ...], np.ndarray]:
    names = tuple(sorted(_masks()))
    return names, np.stack([_masks()[n] for n in names])  # (K, V)


def _identity_measures(neutral: np.ndarray) -> dict[str, np.ndarray]:
    """Per-identity sizes measured on neutral faces (n, V, 3) mm -> dict of (n,) mm."""
    tm = template_mesh()
    corners = neutral[:, tm.mouth_corners]  # (n, 2, 3)
    mouth_half = 0.5 * np.linalg.norm(corners[:, 1] - corners[:, 0], axis=-1)
    ey = []
    for rim in tm.eye_rims:
        y = neutral[:, rim, 1]
        ey.append(y.max(1) - y.min(1))
    eye_open = 0.5 * (ey[0] + ey[1])  # (n,)
    lm = tm.landmark_sets["ibug68"]
    pts = lm.points(neutral, tm.faces)  # (n, 68, 3)
    brow_eye = pts[:, 17:27, 1].mean(1) - pts[:, 36:48, 1].mean(1)
    lips = pts[:, 51, 1] - pts[:, 57, 1]
    return {"mouth_half": mouth_half, "eye_open": eye_open, "brow_eye": brow_eye, "lips": lips}


def apply_actions(neutral: np.ndarray, params, actions) -> np.ndarray:
    """Posed faces: (n, V, 3) neutral faces (mm) + (n, P) identity params + (n, A) actions -> (n, V, 3) mm.

    Zero actions return ``neutral`` exactly (as float64).
    """
    neutral = np.asarray(neutral, dtype=np.float64)
    a = np.clip(np.asarray(actions, dtype=np.float64), 0.0, 1.0)
    p = _as_params(params)
    n = neutral.shape[0]
    if a.shape != (n, NUM_ACTIONS) or p.shape[0] != n:
        raise ValueError(
            f"neutral, params, actions: expected (n, V, 3), (n, P), (n, {NUM_ACTIONS}); "
            f"got {neutral.shape}, {p.shape}, {a.shape}"
        )
    check_finite("actions", a)
    meas = _identity_measures(neutral)
    mh = meas["mouth_half"]  # (n,)
    mouth = mh * (mh / 25.0) ** 0.6  # corner travel grows faster than the mouth
    eo, be, lips = meas["eye_open"], meas["brow_eye"], meas["lips"]
    names, M = _mask_matrix()
    vec = {k: np.zeros((n, 3)) for k in names}  # per-mask displacement vectors (n, 3)
    A = {k: a[:, i] for k, i in _A.items()}

    def add(mask, *xyz):
        vec[mask] += np.stack(np.broadcast_arrays(*xyz), axis=-1)

    z = np.zeros(n)
    brow = be / 20.0
    for side, s in (("r", -1.0), ("l", 1.0)):
        add(f"inner_brow_{side}", -s * 0.8 * A["AU1"], 6.0 * brow * A["AU1"], 0.5 * A["AU1"])
        add(f"outer_brow_{side}", s * 0.5 * A["AU2"], 6.0 * brow * A["AU2"], z)
        add(f"brow_{side}", -s * 3.0 * A["AU4"], -4.0 * brow * A["AU4"], 1.0 * A["AU4"])
        add(f"upper_lid_{side}", z, 0.30 * eo * A["AU5"] - 0.22 * eo * A["AU7"] - 0.1 * eo * A["AU6"], 0.6 * A["AU5"])
        add(f"lower_lid_{side}", z, -0.10 * eo * A["AU5"] + 0.28 * eo * A["AU7"] + 0.18 * eo * A["AU6"], 0.3 * A["AU7"])
        add(f"cheek_{side}", s * 0.5 * A["AU6"], 3.0 * A["AU6"], 2.5 * A["AU6"])
        add(f"nose_side_{side}", z, 2.5 * A["AU9"], 1.2 * A["AU9"])
        add(f"corner_{side}",
            s * mouth * (0.16 * A["AU12"] + 0.04 * A["AU15"] + 0.20 * A["AU20"] - 0.22 * A["AU18"]),
            mouth * (0.30 * A["AU12"] - 0.20 * A["AU15"] - 0.04 * A["AU20"]),
            mouth * (-0.22 * A["AU12"] - 0.10 * A["AU20"] + 0.10 * A["AU18"]))
        add(f"smile_cheek_{side}", s * 0.8 * A["AU12"], 2.0 * A["AU12"], 3.0 * A["AU12"])
    add("glabella", z, -1.0 * A["AU4"] + 1.0 * A["AU9"], -1.0 * A["AU4"])
    add("upper_lip", z, 0.45 * lips * A["AU10"] + 0.4 * A["AU9"] - 0.5 * A["AU24"] + 0.3 * A["AU17"],
        1.0 * A["AU10"] - 1.2 * A["AU24"] + 3.0 * A["AU18"])
    add("lower_lip", z, -0.35 * lips * A["AU16"] + 0.6 * A["AU24"] + 1.0 * A["AU17"],
        1.5 * A["AU16"] - 1.2 * A["AU24"] + 1.5 * A["AU17"] + 3.0 * A["AU18"])
    add("lips_u", -0.25 * mouth * A["AU18"], z, z)
    add("chin", z, 3.0 * A["AU17"], 2.0 * A["AU17"])

    V3 = np.stack([vec[k] for k in names], axis=1)  # (n, K, 3)
    out = neutral + np.matmul(V3.transpose(0, 2, 1), M).transpose(0, 2, 1)  # (n, 3, K) @ (K, V) -> (n, V, 3)

    # jaw: rotation about the hinge axis (parallel to x) by an angle fading above the lip line
    pivot = jaw_pivot(p)  # (n, 3)
    ang = (JAW_MAX_ANGLE * A["AU26"])[:, None] * _masks()["jaw"][None]  # (n, V)
    if np.any(ang):
        cy, cz = out[..., 1] - pivot[:, None, 1], out[..., 2] - pivot[:, None, 2]  # (n, V)
        co, si = np.cos(ang), np.sin(ang)
        out[..., 1] = pivot[:, None, 1] + co * cy - si * cz
        out[..., 2] = pivot[:, None, 2] + si * cy + co * cz
    return out
