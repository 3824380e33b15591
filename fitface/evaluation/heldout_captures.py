"""Ground-truth test captures: held-out identities with expressions outside the training recipes.

The paper's sparse-reconstruction test (§5.5, Table 2) fits 12 subjects performing 12 extreme
expressions (CoMA's sequences) that the training data does not contain. This module builds
the analogue for fitface's own datasets, with exact ground truth:

* **Identities**: every identity of the dataset's ``"test"`` split (never seen in training).
* **Expressions**: 12 "extreme" recipes (CoMA-like: teeth bared, cheeks sucked in / puffed,
  brows raised high, jaw sideways, a high smile, lips back / up, mouth down / to the side /
  up, the mouth opened to the extreme), none of which is one of the seven training emotion
  recipes or a scaling of one (:func:`recipe_overlap` measures it: the largest cosine with any
  emotion recipe). Each recipe is posed at full intensity, once per identity, through the
  builder's own machinery, so it depends on the identity the way training expressions do:

  - ICT datasets (``info["builder"] == "ict"``): blendshape weights (:data:`ICT_EXTREME_RECIPES`,
    over the ICT blendshape names) applied to the blendshape deltas deformation-transferred
    onto the identity's neutral (:class:`fitface.data.ict.ExpressionTransfer`, exactly as
    :func:`fitface.data.ict.build_ict_dataset` does). One weight is negative: ``cheeks_in`` is
    the cheek-puff shape reversed (ICT has no cheek-suck shape).
  - Synthetic datasets (``"synthetic"``): procedural action vectors
    (:data:`SYNTHETIC_EXTREME_RECIPES`, over :data:`fitface.data.procedural.ACTION_NAMES`)
    through :func:`fitface.data.procedural.apply_actions`. The procedural face has no cheek
    puff, no sideways jaw and only symmetric actions, so its 12 recipes are its own set of
    extreme combinations (named likewise where they match CoMA's).

Exactness of the identities (the choice made here): identities are **regenerated** from the
builder's seed and its random streams, in float64, exactly as the builder drew them:

* synthetic: ``SeedSequence(seed).spawn(4)[2].standard_normal((I, 32))`` (the identity stream);
* ICT: ``default_rng([seed, 1, i]).standard_normal(M)`` for identity ``i``.

They are then **verified** against the dataset: the stored float32 generating coefficients
(``dataset.coefficients["identity"]``) must equal the regenerated ones rounded to float32, and
the identity's neutral sample (intensity 0, if the dataset holds one) must equal the rebuilt
neutral face to float32 precision (:data:`NEUTRAL_CHECK_MM`). If the regenerated coefficients do
not match (another builder version), the stored float32 coefficients are used instead and
:attr:`TestCaptures.info` says ``"identity_source": "stored float32 coefficients"``.

Convention:
    * Unit and frame: the dataset's (mm; x right, y up, z towards the viewer): the model frame
      of every model trained on the dataset.
    * Capture ``c`` is identity ``identity[c]`` (a dataset identity label) with expression
      ``expression[c]`` (an index into ``expression_names``); captures are ordered identity-major
      (all expressions of the first test identity, then the next ...), so the grid is complete:
      every (test identity, expression) pair is present, which retargeting needs.
    * Topology: the dataset's template faces; ``vertices[c]`` corresponds vertex by vertex.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fitface.errors import InputError

#: The 12 extreme expressions of the ICT test set (CoMA-like), blendshape -> weight at full intensity.
ICT_EXTREME_RECIPES: dict[str, dict[str, float]] = {
    "bareteeth": {"mouthUpperUp_L": 1.0, "mouthUpperUp_R": 1.0, "mouthLowerDown_L": 1.0, "mouthLowerDown_R": 1.0,
                  "mouthStretch_L": 0.6, "mouthStretch_R": 0.6, "jawOpen": 0.15},
    "cheeks_in": {"cheekPuff_L": -0.7, "cheekPuff_R": -0.7, "mouthPucker": 0.6, "mouthFunnel": 0.3},
    "cheeks_puffed": {"cheekPuff_L": 1.0, "cheekPuff_R": 1.0, "mouthPress_L": 0.5, "mouthPress_R": 0.5},
    "eyebrow": {"browInnerUp_L": 1.0, "browInnerUp_R": 1.0, "browOuterUp_L": 1.0, "browOuterUp_R": 1.0,
                "eyeWide_L": 0.5, "eyeWide_R": 0.5},
    "high_smile": {"mouthSmile_L": 1.0, "mouthSmile_R": 1.0, "cheekSquint_L": 1.0, "cheekSquint_R": 1.0,
                   "cheekRaiser_L": 0.8, "cheekRaiser_R": 0.8, "eyeSquint_L": 0.5, "eyeSquint_R": 0.5,
                   "mouthUpperUp_L": 0.4, "mouthUpperUp_R": 0.4, "jawOpen": 0.35},
    "jaw_side": {"jawLeft": 1.0, "mouthLeft": 0.5, "jawOpen": 0.2},
    "lips_back": {"mouthStretch_L": 1.0, "mouthStretch_R": 1.0, "mouthPress_L": 0.6, "mouthPress_R": 0.6,
                  "mouthRollLower": 0.5, "mouthRollUpper": 0.5},
    "lips_up": {"mouthUpperUp_L": 1.0, "mouthUpperUp_R": 1.0, "mouthShrugUpper": 0.8, "noseSneer_L": 0.3,
                "noseSneer_R": 0.3},
    "mouth_down": {"mouthFrown_L": 1.0, "mouthFrown_R": 1.0, "mouthLowerDown_L": 0.8, "mouthLowerDown_R": 0.8,
                   "mouthShrugLower": 0.6},
    "mouth_extreme": {"jawOpen": 1.0, "mouthStretch_L": 0.7, "mouthStretch_R": 0.7, "mouthLowerDown_L": 0.6,
                      "mouthLowerDown_R": 0.6, "mouthUpperUp_L": 0.4, "mouthUpperUp_R": 0.4,
                      "eyeWide_L": 0.4, "eyeWide_R": 0.4},
    "mouth_side": {"mouthRight": 1.0, "mouthSmile_R": 0.4, "mouthDimple_R": 0.4},
    "mouth_up": {"mouthShrugLower": 1.0, "mouthShrugUpper": 0.6, "mouthPucker": 0.3, "mouthRollLower": 0.3},
}

#: The 12 extreme expressions of the synthetic test set: procedural action (AU prefix) -> weight.
SYNTHETIC_EXTREME_RECIPES: dict[str, dict[str, float]] = {
    "bareteeth": {"AU10": 1.0, "AU16": 1.0, "AU20": 0.6, "AU26": 0.1},
    "eyebrow": {"AU1": 1.0, "AU2": 1.0, "AU5": 0.6},
    "high_smile": {"AU12": 1.0, "AU6": 1.0, "AU7": 0.5, "AU10": 0.4, "AU26": 0.35},
    "lips_back": {"AU20": 1.0, "AU24": 0.6},
    "lips_up": {"AU10": 1.0, "AU9": 0.3},
    "mouth_down": {"AU15": 1.0, "AU16": 0.8, "AU17": 0.3},
    "mouth_extreme": {"AU26": 1.0, "AU20": 0.7, "AU16": 0.6, "AU10": 0.4, "AU5": 0.4},
    "mouth_open": {"AU26": 1.0},
    "mouth_middle": {"AU18": 1.0, "AU17": 0.5},
    "lips_pressed": {"AU24": 1.0, "AU17": 1.0},
    "squint": {"AU4": 1.0, "AU7": 1.0, "AU6": 0.6, "AU9": 0.5},
    "smile_open": {"AU12": 1.0, "AU26": 0.8, "AU1": 0.5, "AU2": 0.5},
}

#: Largest allowed float32 discrepancy (mm) between a stored neutral sample and the rebuilt
#: neutral face (float32 storage of ~100 mm coordinates: ~1e-5 mm; the transfer's sparse
#: solves add ~1e-9 mm). A larger value means the builder changed: the build refuses.
NEUTRAL_CHECK_MM = 1e-3

#: Builders this module knows.
BUILDERS = ("ict", "synthetic")


@dataclass
class TestCaptures:
    """Ground-truth test meshes (see the module Convention).

    Attributes:
        vertices: (C, V, 3) float64 ground-truth meshes, dataset unit (mm) and frame.
        faces: (F, 3) int64, the dataset's topology.
        identity: (C,) int64 dataset identity label of each capture.
        expression: (C,) int64 index into ``expression_names``.
        expression_names: the recipe names (12).
        recipes: (E, K) float64 the expression coefficients of each recipe (blendshape weights
            for ICT, action vector for synthetic).
        landmark_sets: name -> :class:`fitface.landmarks.sets.LandmarkSet` (the dataset's).
        unit: length unit (the dataset's).
        info: provenance and verification (builder, seed, identity source, neutral check, ...).
    """

    vertices: np.ndarray
    faces: np.ndarray
    identity: np.ndarray
    expression: np.ndarray
    expression_names: tuple[str, ...]
    recipes: np.ndarray
    landmark_sets: dict[str, Any]
    unit: str
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def identities(self) -> np.ndarray:
        """(I,) int64 distinct identity labels, in capture order."""
        _, first = np.unique(self.identity, return_index=True)
        return self.identity[np.sort(first)]

    def landmarks(self, name: str = "ibug68") -> np.ndarray:
        """(C, L, 3) float64 landmark points of set ``name`` on the ground-truth meshes."""
        if name not in self.landmark_sets:
            raise InputError(f"the dataset has no landmark set {name!r} (sets: {', '.join(self.landmark_sets) or 'none'})")
        return self.landmark_sets[name].points(self.vertices, self.faces)

    def index(self, identity: int, expression: int) -> int:
        """Capture index of (identity label, expression index); KeyError if absent."""
        hit = np.flatnonzero((self.identity == identity) & (self.expression == expression))
        if not len(hit):
            raise KeyError(f"no capture of identity {identity} with expression {expression}")
        return int(hit[0])

    def subset(self, rows) -> "TestCaptures":
        """The captures ``rows`` (an index array or slice), same metadata."""
        rows = np.arange(len(self))[rows] if isinstance(rows, slice) else np.asarray(rows, dtype=np.int64)
        return TestCaptures(self.vertices[rows], self.faces, self.identity[rows], self.expression[rows],
                            self.expression_names, self.recipes, self.landmark_sets, self.unit, dict(self.info))

    def names(self) -> list[str]:
        """One label per capture, ``"id<label>/<expression>"``."""
        return [f"id{int(i)}/{self.expression_names[int(e)]}" for i, e in zip(self.identity, self.expression)]


# ------------------------------------------------------------------------------ recipes
def ict_recipe_matrix(expression_names, recipes: dict[str, dict[str, float]] = ICT_EXTREME_RECIPES) -> np.ndarray:
    """(E, K) float64 blendshape weights of the extreme recipes over the source's K blendshapes.

    Raises:
        InputError: a recipe names a blendshape the source lacks.
    """
    from fitface.data.emotions import recipe_weights

    col = {str(n): k for k, n in enumerate(expression_names)}
    for name, rec in recipes.items():
        for shape in rec:
            if shape not in col:
                raise InputError(f"extreme expression {name!r}: the ICT source has no blendshape {shape!r}")
    return recipe_weights(recipes.values(), {n: [k] for n, k in col.items()}, len(col))


def synthetic_recipe_matrix(recipes: dict[str, dict[str, float]] = SYNTHETIC_EXTREME_RECIPES) -> np.ndarray:
    """(E, NUM_ACTIONS) float64 action vectors of the synthetic extreme recipes."""
    from fitface.data.procedural import recipe_matrix

    return recipe_matrix(recipes)


def recipe_overlap(extreme: np.ndarray, emotions: np.ndarray) -> np.ndarray:
    """(E,) float64: the largest cosine between each extreme recipe (E, K) and any non-neutral
    emotion recipe (7, K) (1 = a scaling of a training emotion; lower = further outside)."""
    a = np.asarray(extreme, dtype=np.float64)
    b = np.asarray(emotions, dtype=np.float64)
    b = b[np.linalg.norm(b, axis=1) > 0]
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-300)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (an @ bn.T).max(axis=1)


# ------------------------------------------------------------------------------ builders
def _test_identities(ds, identities: int | None) -> np.ndarray:
    idx = ds.indices("test")
    if not len(idx):
        raise InputError("the dataset has no 'test' split: no held-out identities to evaluate on", ds.path)
    labels = ds.label("identity")[idx]
    ids = np.unique(labels[labels >= 0])
    if not len(ids):
        raise InputError("the dataset's test split has no identity labels", ds.path)
    if identities is not None:
        if int(identities) < 1:
            raise ValueError(f"identities: must be >= 1, got {identities}")
        ids = ids[: int(identities)]
    return ids.astype(np.int64)


def neutral_sample(ds, label: int) -> int | None:
    """Index of a sample of identity ``label`` with intensity 0 (its exact neutral), or None."""
    inten = ds.extras.get("intensity")
    if inten is None:
        return None
    hit = np.flatnonzero((ds.label("identity") == label) & (np.asarray(inten) == 0))
    return int(hit[0]) if len(hit) else None


def _check_coefficients(ds, ids: np.ndarray, regenerated: np.ndarray) -> tuple[np.ndarray, str, float | None]:
    """Compare regenerated float64 identity coefficients (I, M) with the stored float32 ones.

    Returns ``(coefficients (I, M) float64, source, max |difference|)``.
    """
    stored = ds.coefficients.get("identity")
    if stored is None:
        return regenerated, "regenerated from the builder's seed (dataset stores no coefficients to verify)", None
    lab = ds.label("identity")
    first = np.array([int(np.flatnonzero(lab == i)[0]) for i in ids])
    st = np.asarray(stored[first], dtype=np.float64)  # (I, M)
    if st.shape == regenerated.shape and np.array_equal(st, regenerated.astype(np.float32).astype(np.float64)):
        return regenerated, "regenerated from the builder's seed (float64; equals the stored float32 coefficients)", 0.0
    diff = float(np.abs(st - regenerated).max()) if st.shape == regenerated.shape else float("inf")
    return st, "stored float32 coefficients (the seed's regeneration did not match them)", diff


def _verify_neutrals(ds, ids: np.ndarray, neutrals: np.ndarray) -> float | None:
    """Max |stored neutral sample - rebuilt neutral| (mm) over identities that have one."""
    worst = None
    for i, lab in enumerate(ids):
        s = neutral_sample(ds, int(lab))
        if s is None:
            continue
        d = float(np.abs(np.asarray(ds.vertices[s], dtype=np.float64) - neutrals[i]).max())
        worst = d if worst is None else max(worst, d)
    if worst is not None and worst > NEUTRAL_CHECK_MM:
        raise InputError(f"the rebuilt neutral faces of the test identities differ from the dataset's by up to "
                         f"{worst:.3g} {ds.unit}: the dataset was built by another builder version", ds.path)
    return worst


def synthetic_test_captures(ds, identities: int | None = None) -> TestCaptures:
    """Test captures of a synthetic dataset (see the module docstring).

    Args:
        ds: a loaded synthetic :class:`fitface.data.format.Dataset`.
        identities: use only the first this many test identities (None: all).
    """
    from fitface.data.procedural import NUM_IDENTITY_PARAMS, apply_actions, neutral_faces

    info = ds.info
    seed, n_ids = int(info["seed"]), int(info["identities"])
    ids = _test_identities(ds, identities)
    r_id = np.random.default_rng(np.random.SeedSequence(seed).spawn(4)[2])
    params_all = r_id.standard_normal((n_ids, NUM_IDENTITY_PARAMS))  # (I_all, P), the builder's draw
    params, source, diff = _check_coefficients(ds, ids, params_all[ids])
    neutral = neutral_faces(params)  # (I, V, 3) float64 mm
    check = _verify_neutrals(ds, ids, neutral)
    rec = synthetic_recipe_matrix()  # (E, A)
    ne = len(rec)
    n_i = np.repeat(np.arange(len(ids)), ne)  # identity-major
    e_i = np.tile(np.arange(ne), len(ids))
    verts = apply_actions(neutral[n_i], params[n_i], rec[e_i])  # (C, V, 3)
    from fitface.data.procedural import recipe_matrix

    meta = {"builder": "synthetic", "seed": seed, "identity_source": source, "identity_coefficient_max_diff": diff,
            "neutral_check_max_mm": check,
            "expressions": "SYNTHETIC_EXTREME_RECIPES (fitface.evaluation.heldout_captures)",
            "recipe_overlap_max_cosine": [round(float(x), 4) for x in recipe_overlap(rec, recipe_matrix())],
            "test_identities": [int(i) for i in ids]}
    return TestCaptures(verts, np.asarray(ds.faces, dtype=np.int64), ids[n_i], e_i.astype(np.int64),
                        tuple(SYNTHETIC_EXTREME_RECIPES), rec, dict(ds.landmark_sets), ds.unit, meta)


def ict_test_captures(ds, source: str | os.PathLike, identities: int | None = None,
                      progress=None) -> TestCaptures:
    """Test captures of an ICT dataset (see the module docstring).

    Args:
        ds: a loaded ICT :class:`fitface.data.format.Dataset`.
        source: the ICT source the dataset was built from (``ict_face_light.npz`` or a checkout).
        identities: use only the first this many test identities (None: all).
        progress: optional ``progress(done, total)`` after each identity (one deformation
            transfer each).
    """
    from fitface.data.ict import _IDENTITY, ExpressionTransfer, blendshape_recipe_matrix, load_ict, single_threaded_blas

    info = ds.info
    seed = int(info["seed"])
    model = load_ict(source)
    keep = model.narrow_vertex_count if info.get("narrow") else len(model.neutral)
    if keep != ds.num_vertices:
        raise InputError(f"the ICT source gives {keep} vertices, the dataset has {ds.num_vertices}: "
                         f"not the source it was built from", source)
    ids = _test_identities(ds, identities)
    m = len(model.identity_modes)
    regen = np.stack([np.random.default_rng([seed, _IDENTITY, int(i)]).standard_normal(m) for i in ids])  # (I, M)
    weights, src, diff = _check_coefficients(ds, ids, regen)
    rec = ict_recipe_matrix(model.expression_names)  # (E, K)
    ne = len(rec)
    verts = np.empty((len(ids) * ne, keep, 3))
    neutrals = np.empty((len(ids), keep, 3))
    with single_threaded_blas():
        et = ExpressionTransfer(model)
        for i, w in enumerate(weights):
            n_full = et.neutral_of(w)  # (V, 3)
            d = et.deltas(n_full)[:, :keep]  # (K, V', 3) transferred blendshape deltas
            neutrals[i] = n_full[:keep]
            verts[i * ne:(i + 1) * ne] = n_full[None, :keep] + np.einsum("ek,kvc->evc", rec, d)
            if progress is not None:
                progress(i + 1, len(ids))
    check = _verify_neutrals(ds, ids, neutrals)
    meta = {"builder": "ict", "seed": seed, "source": str(source), "identity_source": src,
            "identity_coefficient_max_diff": diff, "neutral_check_max_mm": check,
            "expressions": "ICT_EXTREME_RECIPES (fitface.evaluation.heldout_captures)",
            "recipe_overlap_max_cosine": [round(float(x), 4) for x in
                                          recipe_overlap(rec, blendshape_recipe_matrix(model.expression_names))],
            "test_identities": [int(i) for i in ids]}
    return TestCaptures(verts, np.asarray(ds.faces, dtype=np.int64), np.repeat(ids, ne),
                        np.tile(np.arange(ne), len(ids)).astype(np.int64), tuple(ICT_EXTREME_RECIPES), rec,
                        dict(ds.landmark_sets), ds.unit, meta)


def build_test_captures(dataset, identities: int | None = None, ict_source: str | os.PathLike | None = None,
                        progress=None) -> TestCaptures:
    """Ground-truth test captures of a dataset built by ``fitface data ict`` or ``data synthetic``.

    Args:
        dataset: a loaded :class:`fitface.data.format.Dataset` or its folder.
        identities: use only the first this many test identities (None: all); the captures are
            the full grid of those identities x the 12 extreme expressions.
        ict_source: for ICT datasets, the source model they were built from.
        progress: optional ``progress(done, total)`` (ICT only).

    Raises:
        InputError: another builder (imported scans: no generator to pose new expressions), no
            test split, an ICT dataset without ``ict_source``, or a builder-version mismatch.
    """
    from fitface.data.format import load_dataset

    ds = dataset if hasattr(dataset, "vertices") else load_dataset(dataset)
    builder = ds.info.get("builder")
    if builder == "synthetic":
        return synthetic_test_captures(ds, identities)
    if builder == "ict":
        if ict_source is None:
            raise InputError("an ICT dataset's test captures are posed from the ICT source model: pass it "
                             "(--ict-source ict_face_light.npz)", ds.path)
        return ict_test_captures(ds, ict_source, identities, progress)
    raise InputError(f"cannot build ground-truth test captures for a dataset built by {builder!r} "
                     f"(known: {', '.join(BUILDERS)}): new expressions need the builder's generator", ds.path)
