"""The realistic training set built from the ICT-FaceKit face model (``fitface data ict``).

Source: either the shared ``ict_face_light.npz`` (the face area of ICT Face Model Light) or a
checkout of ICT-FaceKit (``FaceXModel/*.obj``). The source model is additive: every identity
gets the same expression deltas. Real faces do not, and a dataset built that way would make a
linear model trivially right, so this builder makes expressions identity-dependent:

1. identity i: ``neutral_i = neutral + sum_m w_im * identity_mode_m`` with ``w_i ~ N(0, I)``;
2. every blendshape (generic neutral -> generic neutral + expression_mode_k) is moved onto
   ``neutral_i`` by deformation transfer (Sumner & Popovic 2004,
   :mod:`fitface.geometry.deformation_transfer`): one sparse system per identity, factorised
   once, all blendshapes solved as right-hand sides; ``D_ik`` = transferred mesh - ``neutral_i``;
3. each sample of identity i is ``neutral_i + sum_k c_k * D_ik`` with ``c`` from the shared
   sampling plan (:mod:`fitface.data.plan`): a basic emotion's FACS recipe
   (:data:`EMOTION_RECIPES` over :data:`AU_BLENDSHAPES`) times the frame's intensity times an
   individual style (per identity and emotion), a per-sequence and a per-frame jitter, or, for
   spontaneous frames, a random sparse mixture of blendshape units.

Convention:
    * Unit: millimetres (the source is in centimetres). Axes as in the source: x right,
      y up, z towards the viewer.
    * Vertices: the ICT face area, 9,409 vertices (18,460 triangles, each source quad split as
      (a, b, c), (a, c, d)); ``narrow=True`` keeps vertices [0, 6706) and the triangles fully
      inside. The transfer always runs on the full face area; a narrow dataset is exactly the
      full one's first 6,706 vertices for the same seed.
    * Landmark set ``ibug68``: the source's 68 Multi-PIE vertex indices, in the iBUG order.
    * Coefficients per sample: ``identity`` (N, M) the weights ``w_i``; ``expression`` (N, K)
      the blendshape weights ``c`` in [0, 1], applied to the *transferred* deltas of that
      identity. Extras: the plan's sequence, frame, part, intensity and generating emotion.
    * A sample of intensity 0 is exactly its identity's neutral face (all ``c`` are 0).
    * Determinism: every random draw comes from ``np.random.default_rng([seed, stream, i])``
      (stream 0 plan, 1 identity weights, 2 styles, 3 per-sample jitter and mixtures, 4 split),
      so identity i's face does not depend on the number of samples, and the bytes written do
      not depend on the number of worker processes (each runs with single-threaded BLAS).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fitface.data.emotions import EMOTIONS, NEUTRAL, recipe_weights
from fitface.data.plan import MIXTURE, SamplePlan, check_build_sizes, plan_samples, split_by_identity
from fitface.errors import InputError
from fitface.io.mesh import load_obj_polygons

#: Millimetres per source unit (the ICT model is in centimetres).
SOURCE_TO_MM = 10.0

#: Vertices of the ICT face area (the full model's first vertices) and its narrow part.
FACE_AREA_VERTEX_COUNT = 9409
NARROW_FACE_VERTEX_COUNT = 6706

#: The 68 Multi-PIE / iBUG landmark vertex indices documented by ICT-FaceKit (0-based).
ICT_IBUG68 = (
    1225, 1888, 1052, 367, 1719, 1722, 2199, 1447, 966, 3661, 4390, 3927, 3924, 2608, 3272, 4088, 3443,
    268, 493, 1914, 2044, 1401, 3615, 4240, 4114, 2734, 2509, 978, 4527, 4942, 4857, 1140, 2075, 1147,
    4269, 3360, 1507, 1542, 1537, 1528, 1518, 1511, 3742, 3751, 3756, 3721, 3725, 3732, 5708, 5695, 2081,
    0, 4275, 6200, 6213, 6346, 6461, 5518, 5957, 5841, 5702, 5711, 5533, 6216, 6207, 6470, 5517, 5966,
)

#: Keys the npz source must hold.
NPZ_KEYS = ("neutral", "faces", "identity_modes", "expression_modes", "expression_names", "landmarks_ibug68")

#: FACS action units -> ICT blendshapes (from the ICT-FaceKit documentation).
AU_BLENDSHAPES: dict[str, tuple[str, ...]] = {
    "AU1": ("browInnerUp_L", "browInnerUp_R"),
    "AU2": ("browOuterUp_L", "browOuterUp_R"),
    "AU4": ("browDown_L", "browDown_R"),
    "AU5": ("eyeWide_L", "eyeWide_R"),
    "AU6": ("cheekSquint_L", "cheekSquint_R"),
    "AU7": ("eyeSquint_L", "eyeSquint_R"),
    "AU9": ("noseSneer_L", "noseSneer_R"),
    "AU10": ("mouthShrugUpper",),
    "AU11": ("mouthUpperUp_L", "mouthUpperUp_R"),
    "AU12": ("mouthSmile_L", "mouthSmile_R"),
    "AU14": ("mouthDimple_L", "mouthDimple_R"),
    "AU15": ("mouthFrown_L", "mouthFrown_R"),
    "AU16": ("mouthLowerDown_L", "mouthLowerDown_R"),
    "AU17": ("mouthShrugLower",),
    "AU18": ("mouthPucker",),
    "AU20": ("mouthStretch_L", "mouthStretch_R"),
    "AU22": ("mouthFunnel",),
    "AU24": ("mouthPress_L", "mouthPress_R"),
    "AU26": ("jawOpen",),
    "AU28": ("mouthRollLower", "mouthRollUpper"),
    "AU29": ("jawForward",),
    "AU33": ("cheekPuff_L", "cheekPuff_R"),
    "AU45": ("eyeBlink_L", "eyeBlink_R"),
}

#: The seven basic emotions as FACS recipes: emotion -> {AU: weight at full intensity}.
#: (EMFACS-style prototypes; AU23, lip tightener, has no blendshape: AU24 stands in for anger;
#: AU25/26 "lips part / jaw drop" use jawOpen.)
EMOTION_RECIPES: dict[str, dict[str, float]] = {
    "neutral": {},
    "anger": {"AU4": 1.0, "AU5": 0.5, "AU7": 0.8, "AU24": 0.8, "AU17": 0.3},
    "disgust": {"AU9": 1.0, "AU10": 0.7, "AU15": 0.5, "AU16": 0.4, "AU17": 0.2},
    "fear": {"AU1": 0.9, "AU2": 0.6, "AU4": 0.6, "AU5": 1.0, "AU7": 0.4, "AU20": 0.8, "AU26": 0.3},
    "happiness": {"AU6": 0.7, "AU12": 1.0, "AU26": 0.15},
    "sadness": {"AU1": 0.8, "AU4": 0.5, "AU15": 0.9, "AU17": 0.3},
    "surprise": {"AU1": 1.0, "AU2": 0.9, "AU5": 0.8, "AU26": 0.6},
}

#: Log-normal spread of an identity's individual style (per emotion and blendshape).
STYLE_SIGMA = 0.15
#: Log-normal spread of the per-sequence (and per static scan) jitter of each blendshape.
SEQUENCE_JITTER_SIGMA = 0.10
#: Log-normal spread of the per-frame jitter of each blendshape.
FRAME_JITTER_SIGMA = 0.03
#: Spontaneous mixtures: number of blendshape units per frame (inclusive range), unit weight
#: range (before the frame's intensity) and the log-normal left/right asymmetry.
MIXTURE_UNITS = (1, 4)
MIXTURE_WEIGHT = (0.2, 1.0)
MIXTURE_ASYMMETRY_SIGMA = 0.15

#: Default build size (the paper's data: ~300 identities, ~30,000 faces).
DEFAULT_IDENTITIES = 300
DEFAULT_SAMPLES = 30000

#: Random streams (see the module Convention).
_PLAN, _IDENTITY, _STYLE, _SAMPLE, _SPLIT = range(5)


# ---------------------------------------------------------------------------------------------
# Source model
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IctModel:
    """The source face model, in millimetres.

    Attributes:
        neutral: (V, 3) float64 mm, the generic neutral face.
        faces: (F, 3) int64 triangles.
        identity_modes: (M, V, 3) float64 mm identity deltas (weights ~ N(0, 1)).
        expression_modes: (K, V, 3) float64 mm blendshape deltas on the generic neutral (weights 0..1).
        expression_names: K names.
        landmarks_ibug68: (68,) int64 vertex indices.
        narrow_vertex_count: vertices [0, narrow_vertex_count) form the narrow face region.
        source: a description of where it came from (for provenance).
    """

    neutral: np.ndarray
    faces: np.ndarray
    identity_modes: np.ndarray
    expression_modes: np.ndarray
    expression_names: tuple[str, ...]
    landmarks_ibug68: np.ndarray
    narrow_vertex_count: int
    source: str


def load_ict(path: str | os.PathLike) -> IctModel:
    """Read the ICT face model from the shared npz or an ICT-FaceKit checkout (see module docs).

    Args:
        path: an ``.npz`` file, an ICT-FaceKit checkout, or its ``FaceXModel`` folder.

    Returns:
        An :class:`IctModel` in mm.

    Raises:
        InputError: one line naming the path and the problem (missing, not an npz or checkout,
            missing keys or files, inconsistent shapes).
    """
    p = Path(path)
    if not p.exists():
        raise InputError("no such file or folder", p)
    if p.is_dir():
        return _load_checkout(p)
    return _load_npz(p)


def _load_npz(p: Path) -> IctModel:
    try:
        z = np.load(p, allow_pickle=False)
    except Exception:  # noqa: BLE001 - any reader failure is a bad file
        raise InputError("not an npz file or ICT-FaceKit checkout", p) from None
    if not hasattr(z, "files"):
        raise InputError("not an npz file (a single .npy array?)", p)
    with z:
        missing = [k for k in NPZ_KEYS if k not in z.files]
        if missing:
            raise InputError(f"missing key(s) {', '.join(missing)}; not an ICT face model npz", p)
        try:
            neutral = z["neutral"].astype(np.float64) * SOURCE_TO_MM
            faces = z["faces"].astype(np.int64)
            id_modes = z["identity_modes"].astype(np.float64) * SOURCE_TO_MM
            ex_modes = z["expression_modes"].astype(np.float64) * SOURCE_TO_MM
            names = tuple(str(n) for n in z["expression_names"])
            lms = z["landmarks_ibug68"].astype(np.int64).reshape(-1)
            narrow = int(z["narrow_face_vertex_count"]) if "narrow_face_vertex_count" in z.files else NARROW_FACE_VERTEX_COUNT
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"unreadable ICT face model npz ({type(exc).__name__}: {exc})", p) from None
    return _checked(IctModel(neutral, faces, id_modes, ex_modes, names, lms, narrow, f"npz:{p.name}"), p)


def _checked(m: IctModel, p: Path) -> IctModel:
    v = m.neutral.shape[0] if m.neutral.ndim == 2 else -1
    problems = []
    if m.neutral.shape != (v, 3) or v < 3:
        problems.append(f"neutral has shape {m.neutral.shape}, expected (V, 3)")
    elif m.faces.ndim != 2 or m.faces.shape[1] != 3 or len(m.faces) == 0:
        problems.append(f"faces has shape {m.faces.shape}, expected (F, 3)")
    elif m.faces.min() < 0 or m.faces.max() >= v:
        problems.append(f"faces index vertices outside [0, {v})")
    elif m.identity_modes.ndim != 3 or m.identity_modes.shape[1:] != (v, 3) or len(m.identity_modes) == 0:
        problems.append(f"identity_modes has shape {m.identity_modes.shape}, expected (M, {v}, 3)")
    elif m.expression_modes.ndim != 3 or m.expression_modes.shape[1:] != (v, 3) or len(m.expression_modes) == 0:
        problems.append(f"expression_modes has shape {m.expression_modes.shape}, expected (K, {v}, 3)")
    elif len(m.expression_names) != len(m.expression_modes):
        problems.append(f"{len(m.expression_names)} expression_names for {len(m.expression_modes)} expression_modes")
    elif m.landmarks_ibug68.shape != (68,) or m.landmarks_ibug68.min() < 0 or m.landmarks_ibug68.max() >= v:
        problems.append("landmarks_ibug68 must be 68 vertex indices within the mesh")
    elif not 0 < m.narrow_vertex_count <= v:
        problems.append(f"narrow_face_vertex_count {m.narrow_vertex_count} not in [1, {v}]")
    else:
        for name in ("neutral", "identity_modes", "expression_modes"):
            if not np.isfinite(getattr(m, name)).all():
                problems.append(f"{name} contains NaN or inf")
                break
    if problems:
        raise InputError(problems[0], p)
    return m


_IDENTITY_FILE = re.compile(r"^identity(\d{3})\.obj$")
_NEUTRAL_FILE = "generic_neutral_mesh.obj"


def _load_checkout(root: Path) -> IctModel:
    folder = root / "FaceXModel" if (root / "FaceXModel").is_dir() else root
    neutral_file = folder / _NEUTRAL_FILE
    if not neutral_file.is_file():
        raise InputError(f"no FaceXModel/{_NEUTRAL_FILE}: not an ICT-FaceKit checkout", root)
    full, polys = load_obj_polygons(neutral_file)
    nv = min(FACE_AREA_VERTEX_COUNT, len(full))
    # the face area: polygons whose vertices all lie in it, split as fans (a, b, c), (a, c, d)
    tris = [(poly[0], poly[j], poly[j + 1]) for poly in polys if max(poly) < nv and min(poly) >= 0 for j in range(1, len(poly) - 1)]
    if not tris:
        raise InputError("no polygons within the face area", neutral_file)
    faces = np.array(tris, dtype=np.int64)
    neutral = full[:nv]

    id_files = sorted((f for f in folder.iterdir() if _IDENTITY_FILE.match(f.name)), key=lambda f: f.name)
    if not id_files:
        raise InputError("no identityNNN.obj files: not an ICT-FaceKit checkout", folder)
    config = folder / "vertex_indices.json"
    names: list[str] | None = None
    if config.is_file():
        import json

        try:
            names = [str(n) for n in json.loads(config.read_text(encoding="utf-8")).get("expressions", [])] or None
        except (ValueError, AttributeError):
            names = None
    if names is None:
        names = sorted(
            f.stem for f in folder.glob("*.obj") if f.name != _NEUTRAL_FILE and not _IDENTITY_FILE.match(f.name)
        )

    def deltas(files: list[Path]) -> np.ndarray:
        out = np.empty((len(files), nv, 3))
        for k, f in enumerate(files):
            verts, _ = load_obj_polygons(f)
            if len(verts) != len(full):
                raise InputError(f"{len(verts)} vertices, expected {len(full)} like {_NEUTRAL_FILE}", f)
            out[k] = verts[:nv] - neutral
        return out

    id_modes = deltas(id_files)
    ex_files = [folder / f"{n}.obj" for n in names]
    missing = [f.name for f in ex_files if not f.is_file()]
    if missing:
        raise InputError(f"missing expression file(s) {', '.join(missing[:3])}", folder)
    ex_modes = deltas(ex_files)
    # shapes that do not move the face area (e.g. pupil dilation) carry no face expression
    moving = np.abs(ex_modes).max(axis=(1, 2)) > 0
    ex_modes, names = ex_modes[moving], [n for n, m in zip(names, moving) if m]
    if not names:
        raise InputError("no expression blendshape moves the face area", folder)
    model = IctModel(
        neutral * SOURCE_TO_MM, faces, id_modes * SOURCE_TO_MM, ex_modes * SOURCE_TO_MM, tuple(names),
        np.array(ICT_IBUG68, dtype=np.int64), min(NARROW_FACE_VERTEX_COUNT, nv), f"checkout:{folder.name}",
    )
    return _checked(model, root)


def restrict_vertices(vertex_count: int, faces: np.ndarray) -> np.ndarray:
    """Triangles of ``faces`` (F, 3) whose three vertices are all < ``vertex_count``: (F', 3) int64."""
    faces = np.asarray(faces, dtype=np.int64)
    return faces[(faces < vertex_count).all(axis=1)]


# ---------------------------------------------------------------------------------------------
# Expression coefficients
# ---------------------------------------------------------------------------------------------


def blendshape_recipe_matrix(expression_names: tuple[str, ...] | list[str]) -> np.ndarray:
    """(7, K) float64 blendshape weights of each emotion at full intensity (rows in ``EMOTIONS`` order):
    :data:`EMOTION_RECIPES` through :data:`AU_BLENDSHAPES` onto the source's K blendshapes
    (:func:`fitface.data.emotions.recipe_weights`; the procedural face's
    :func:`fitface.data.procedural.recipe_matrix` is the same over its actions).

    Raises:
        InputError: if a non-neutral emotion has none of its blendshapes among the names.
    """
    col = {n: k for k, n in enumerate(expression_names)}
    columns = {au: [col[s] for s in shapes if s in col] for au, shapes in AU_BLENDSHAPES.items()}
    out = recipe_weights((EMOTION_RECIPES[emotion] for emotion in EMOTIONS), columns, len(expression_names))
    for e, emotion in enumerate(EMOTIONS):
        if emotion != EMOTIONS[NEUTRAL] and not out[e].any():
            raise InputError(f"the source has none of the blendshapes of the {emotion} recipe")
    return out


def mixture_units(expression_names: tuple[str, ...] | list[str]) -> list[tuple[int, ...]]:
    """Blendshape units of spontaneous mixtures: ``X_L`` + ``X_R`` pairs together, others alone."""
    col = {n: k for k, n in enumerate(expression_names)}
    units, seen = [], set()
    for n, k in col.items():
        if k in seen:
            continue
        if n.endswith("_L") and n[:-2] + "_R" in col:
            unit = (k, col[n[:-2] + "_R"])
        elif n.endswith("_R") and n[:-2] + "_L" in col:
            unit = (col[n[:-2] + "_L"], k)
        else:
            unit = (k,)
        seen.update(unit)
        units.append(unit)
    return units


def expression_coefficients(
    plan: SamplePlan,
    rows: slice,
    recipes: np.ndarray,
    units: list[tuple[int, ...]],
    style_rng: np.random.Generator,
    sample_rng: np.random.Generator,
) -> np.ndarray:
    """Blendshape weights of one identity's samples (see the module docstring).

    Args:
        plan: the sampling plan; ``rows`` selects one identity's contiguous block.
        recipes: (7, K) from :func:`blendshape_recipe_matrix`.
        units: from :func:`mixture_units`.
        style_rng, sample_rng: the identity's random streams.

    Returns:
        (n, K) float64 in [0, 1]; all zero where the plan's intensity is 0.
    """
    emotion = plan.emotion[rows]
    intensity = plan.intensity[rows].astype(np.float64)
    sequence = plan.sequence[rows]
    n, k = len(emotion), recipes.shape[1]
    style = np.exp(STYLE_SIGMA * style_rng.standard_normal(recipes.shape))  # (7, K), this identity's style
    coef = np.zeros((n, k))
    # emotions: recipe * style * per-sequence jitter * per-frame jitter * intensity
    seq_keys = np.where(sequence >= 0, sequence, -1 - np.arange(n))  # static scans: one "sequence" each
    _, seq_of_row = np.unique(seq_keys, return_inverse=True)
    seq_jitter = np.exp(SEQUENCE_JITTER_SIGMA * sample_rng.standard_normal((int(seq_of_row.max()) + 1 if n else 0, k)))
    frame_jitter = np.exp(FRAME_JITTER_SIGMA * sample_rng.standard_normal((n, k)))
    posed = emotion >= 0
    e = np.where(posed, emotion, 0)
    coef[posed] = (recipes[e] * style[e] * seq_jitter[seq_of_row] * frame_jitter)[posed]
    # spontaneous mixtures
    for r in np.flatnonzero(emotion == MIXTURE):
        m = int(sample_rng.integers(MIXTURE_UNITS[0], MIXTURE_UNITS[1] + 1))
        for u in sample_rng.choice(len(units), size=min(m, len(units)), replace=False):
            w = sample_rng.uniform(*MIXTURE_WEIGHT)
            for col in units[u]:
                coef[r, col] = w * np.exp(MIXTURE_ASYMMETRY_SIGMA * sample_rng.standard_normal())
    return np.clip(coef * intensity[:, None], 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Geometry per identity
# ---------------------------------------------------------------------------------------------


class ExpressionTransfer:
    """Transfers the source blendshapes onto any identity (source gradients computed once).

    Args:
        model: the source model (mm).
    """

    def __init__(self, model: IctModel):
        from fitface.geometry.deformation_transfer import DeformationTransfer

        self.model = model
        generic = DeformationTransfer(model.neutral, model.neutral, model.faces)
        deformed = model.neutral[None] + model.expression_modes  # (K, V, 3)
        self.gradients = generic.source_gradients(deformed)  # (K, F, 3, 3)
        self.mean_displacement = model.expression_modes.mean(axis=1)  # (K, 3) mm

    def neutral_of(self, identity_weights: np.ndarray) -> np.ndarray:
        """(V, 3) float64 mm neutral face of identity weights (M,)."""
        return self.model.neutral + np.tensordot(identity_weights, self.model.identity_modes, axes=1)

    def deltas(self, neutral_i: np.ndarray) -> np.ndarray:
        """(K, V, 3) float64 mm blendshape deltas transferred onto the neutral face ``neutral_i`` (V, 3)."""
        from fitface.geometry.deformation_transfer import DeformationTransfer

        dt = DeformationTransfer(self.model.neutral, neutral_i, self.model.faces)
        return dt.transfer_gradients(self.gradients, self.mean_displacement) - neutral_i[None]


def transferred_deltas(model: IctModel, identity_weights: np.ndarray) -> np.ndarray:
    """One-shot: (K, V, 3) float64 mm blendshape deltas of the identity with weights (M,)."""
    et = ExpressionTransfer(model)
    return et.deltas(et.neutral_of(np.asarray(identity_weights, dtype=np.float64)))


# worker-process state (set by _init_worker, or directly for in-process builds)
_STATE: dict = {}


def single_threaded_blas():
    """A context that runs its block with the process's BLAS libraries (numpy's and scipy's
    OpenBLAS, MKL, ...) limited to one thread, restoring their thread counts after
    (``threadpoolctl.threadpool_limits``).

    The transfer's sparse solves make many small BLAS calls; multi-threaded OpenBLAS makes them
    10-20x slower on a busy machine.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _init_worker(model: IctModel, keep: int) -> None:
    with single_threaded_blas():
        _STATE["transfer"] = ExpressionTransfer(model)
    _STATE["keep"] = keep


def _identity_block(task: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """(n, V', 3) float32 mm samples of one identity from (identity weights (M,), coefficients (n, K))."""
    weights, coef = task
    et: ExpressionTransfer = _STATE["transfer"]
    keep = _STATE["keep"]
    with single_threaded_blas():
        neutral_i = et.neutral_of(weights)  # (V, 3)
        d = et.deltas(neutral_i)[:, :keep]  # (K, V', 3)
        flat = coef @ d.reshape(len(d), -1)  # (n, 3V')
    return (neutral_i[:keep].reshape(1, -1) + flat).reshape(len(coef), keep, 3).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------


class BuildResult(NamedTuple):
    """What :func:`build_ict_dataset` did.

    Attributes:
        path: the dataset folder.
        seconds: wall-clock build time.
        num_samples: N.
        num_vertices: V of the written template.
        labeled_fraction: fraction of expression-labeled samples.
    """

    path: Path
    seconds: float
    num_samples: int
    num_vertices: int
    labeled_fraction: float


def build_ict_dataset(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    identities: int = DEFAULT_IDENTITIES,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    narrow: bool = False,
    overwrite: bool = False,
    workers: int = 0,
    progress: bool | Callable[[int], None] = False,
) -> BuildResult:
    """Build the realistic ICT-based dataset (see the module docstring) and write it to ``out_dir``.

    Args:
        source: the ICT npz or an ICT-FaceKit checkout.
        out_dir: the dataset folder to create.
        identities: number of identities I >= 1.
        samples: number of samples N >= I.
        seed: the random seed; the same seed gives the same bytes.
        narrow: keep only the narrow face region (first 6,706 vertices).
        overwrite: replace an existing dataset at ``out_dir``.
        workers: worker processes, each with single-threaded BLAS (the transfer's sparse
            solves are many small BLAS calls that multi-threaded BLAS slows down 10-20x on a
            busy machine); 0 = in this process (BLAS limited to one thread meanwhile, see
            :func:`single_threaded_blas`), the default, safe from any script. The bytes written
            do not depend on it. With workers > 0, a calling script needs the usual
            ``if __name__ == "__main__":`` guard (worker processes are spawned).
        progress: show a tqdm bar (True) or call ``progress(n_done_samples)`` after each identity.

    Returns:
        A :class:`BuildResult`.

    Raises:
        InputError: bad source, bad counts, or an existing ``out_dir`` without ``overwrite``.
    """
    from fitface.data.format import DatasetWriter
    from fitface.landmark_set import LandmarkSet

    t0 = time.perf_counter()
    identities, samples, seed = int(identities), int(samples), int(seed)
    check_build_sizes(identities, samples, seed)
    model = load_ict(source)
    recipes = blendshape_recipe_matrix(model.expression_names)
    units = mixture_units(model.expression_names)

    keep = model.narrow_vertex_count if narrow else len(model.neutral)
    faces_out = restrict_vertices(keep, model.faces)
    lms = model.landmarks_ibug68
    if lms.max() >= keep:
        raise InputError(f"landmark vertex {int(lms.max())} lies outside the narrow region [0, {keep})", source)
    try:
        ibug68 = LandmarkSet.from_vertex_indices("ibug68", lms, faces_out)
    except ValueError as exc:
        raise InputError(f"ibug68 landmarks: {exc}", source) from None

    plan = plan_samples(identities, samples, np.random.default_rng([seed, _PLAN]))
    split_of_id = split_by_identity(identities, np.random.default_rng([seed, _SPLIT]))
    num_modes, num_exp = len(model.identity_modes), len(model.expression_names)
    id_coef = np.zeros((samples, num_modes), dtype=np.float32)
    ex_coef = np.zeros((samples, num_exp), dtype=np.float32)

    def tasks():
        for i, a, b in plan.identity_blocks():
            w = np.random.default_rng([seed, _IDENTITY, i]).standard_normal(num_modes)
            c = expression_coefficients(
                plan, slice(a, b), recipes, units,
                np.random.default_rng([seed, _STYLE, i]), np.random.default_rng([seed, _SAMPLE, i]),
            )
            id_coef[a:b] = w
            ex_coef[a:b] = c
            yield (a, b), (w, c.astype(np.float32).astype(np.float64))

    bar = None
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(total=samples, unit="face", desc="ict", dynamic_ncols=True)

    with DatasetWriter(out_dir, samples, model.neutral[:keep], faces_out, unit="mm", overwrite=overwrite) as w:
        for (a, b), block in _run(model, keep, tasks(), int(workers)):
            w.vertices[a:b] = block
            if bar is not None:
                bar.update(b - a)
            elif callable(progress):
                progress(b)
        if bar is not None:
            bar.close()
        info = {
            "builder": "ict",
            "seed": seed,
            "source": model.source,
            "identities": identities,
            "samples": samples,
            "narrow": bool(narrow),
            "identity_weights": "N(0, 1) per identity mode",
            "expression_transfer": "deformation transfer (Sumner & Popovic 2004) of every blendshape to every identity",
            "emotion_recipes": EMOTION_RECIPES,
            "au_blendshapes": {k: list(v) for k, v in AU_BLENDSHAPES.items()},
            "jitter": {"style": STYLE_SIGMA, "sequence": SEQUENCE_JITTER_SIGMA, "frame": FRAME_JITTER_SIGMA},
        }
        path = w.finish(
            labels={"identity": plan.identity.copy(), "expression": plan.expression_label},
            classes={"identity": [f"id{i:04d}" for i in range(identities)], "expression": list(EMOTIONS)},
            split=split_of_id[plan.identity],
            coefficients={"identity": id_coef, "expression": ex_coef},
            coefficient_names={
                "identity": [f"identity{m:03d}" for m in range(num_modes)],
                "expression": list(model.expression_names),
            },
            landmark_sets={"ibug68": ibug68},
            info=info,
            extras=plan.extras(),
        )
    return BuildResult(Path(path), time.perf_counter() - t0, samples, keep, plan.labeled_fraction)


def _run(model: IctModel, keep: int, tasks, workers: int):
    """Yield ((a, b), block) in task order, computed here (workers=0) or in worker processes."""
    if workers <= 0:
        _init_worker(model, keep)
        try:
            for rows, task in tasks:
                yield rows, _identity_block(task)
        finally:
            _STATE.clear()
        return
    import multiprocessing as mp
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    # worker processes limit their BLAS to one thread in _identity_block / _init_worker, as this
    # process does for workers=0 (the same code path, so the same bytes)
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker, initargs=(model, keep))
    with pool:
        pending: deque = deque()
        it = iter(tasks)
        for rows, task in it:  # keep at most 2 tasks per worker in flight (bounded memory)
            pending.append((rows, pool.submit(_identity_block, task)))
            if len(pending) >= 2 * workers:
                r, fut = pending.popleft()
                yield r, fut.result()
        while pending:
            r, fut = pending.popleft()
            yield r, fut.result()

