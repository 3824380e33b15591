"""The end-to-end demo behind ``fitface demo``: fit a capture, retarget its expression.

Two demos, chosen by the model's topology:

* **Real faces** (a model on the ICT topology: ``ict``, ``ict-linear``): held-out ICT-FaceKit
  people shipped with the package (``fitface/demo_captures/ict_captures.npz``, built by
  ``scripts/build_demo_captures.py`` from the ICT test split; MIT, see NOTICE): subject A with
  an extreme expression (``mouth_extreme``; or C's ``high_smile`` with
  ``--expression high_smile``), subject B neutral, and the true mesh of B posing A's expression.
* **Procedural faces** (the ``procedural`` model): two captures built on the fly with the
  project's own procedural face model, identities from a seed stream the training set never
  used, A with an emotion (``surprise`` by default), B neutral.

Either way each capture is what a scanner gives: a partial, noisy scan mesh and 68 landmarks,
in **metres**, in the scanner's own frame (rotated and translated). The demo

1. writes the captures (``captures/A_scan.ply``, ``A_landmarks.txt``, ...); the real-face
   landmark files state no unit, so the fits infer it (m) from the landmarks' size;
2. fits A (landmarks + robust surface refinement against the scan) and B (landmarks only) with
   :func:`fitface.fit`; the fits come back in the scanner's frame and unit;
3. retargets A's expression onto B with :func:`fitface.retarget` and compares it with the true
   mesh of B making A's expression, beside B's own fit (``no_transfer``: what not moving the
   expression at all scores);
4. writes meshes, codes, previews and a contact sheet (``contact_sheet.png``), and reports every
   error against the ground truth in mm (``demo.json``).

Without a model it runs the default built-in model, or ``procedural`` when the default is not
installed.

Convention: ground truth, fits and retargets are compared vertex to vertex (the model's
template and the truth share a topology), in mm, in the model frame (fits are mapped back from
the scanner frame with the capture's known pose).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

#: Seed stream of the demo's identities (the training set uses SeedSequence(seed).spawn(4)
#: streams of `fitface data synthetic`; this stream is disjoint from them).
DEMO_STREAM = 7_000_001
#: Scanner noise added to the demo scans (mm, standard deviation per coordinate).
SCAN_NOISE_MM = 0.2
#: Landmark placement noise of the demo captures (mm, standard deviation per coordinate).
LANDMARK_NOISE_MM = 1.0
#: Fraction of the scan (the top of the forehead) cut away to make it partial.
SCAN_CUT_FRACTION = 0.12
#: The shipped real-face captures (scripts/build_demo_captures.py; package data).
REAL_CAPTURES = Path(__file__).resolve().parent / "demo_captures" / "ict_captures.npz"
#: Default expression of each demo: A's emotion (procedural) / the expressive capture (real faces).
DEFAULT_EXPRESSION = {"procedural": "surprise", "real": "mouth_extreme"}
#: Full red on the error maps of the contact sheet (mm).
ERROR_MAP_MM = 5.0


@dataclass
class DemoResult:
    """Where the demo wrote its files, and what it measured.

    Attributes:
        out_dir: the output folder.
        files: name -> path of every file written.
        errors_mm: name -> RMS vertex error against the ground truth, mm (``fit_A``, ``fit_B``,
            ``retarget``, ``no_transfer``).
        seconds: wall time.
        faces: ``"real"`` (ICT-FaceKit captures) or ``"procedural"``.
        model: the model's built-in name or file.
        expression: A's expression.
    """

    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    errors_mm: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    faces: str = ""
    model: str | None = None
    expression: str = ""


@dataclass
class _Capture:
    """A demo capture in the scanner frame (metres) and its ground truth in the model frame (mm)."""

    truth_mm: np.ndarray  # (V, 3) ground-truth mesh, model frame, mm
    rotation: np.ndarray  # (3, 3) model -> scanner rotation
    translation: np.ndarray  # (3,) metres

    def to_scanner(self, points_mm: np.ndarray) -> np.ndarray:
        """(..., 3) mm model frame -> metres, scanner frame."""
        return points_mm @ self.rotation.T / 1000.0 + self.translation

    def to_model(self, points_m: np.ndarray) -> np.ndarray:
        """(..., 3) metres scanner frame -> mm, model frame."""
        return (points_m - self.translation) @ self.rotation * 1000.0


def _rms(a: np.ndarray, b: np.ndarray) -> float:
    """RMS of per-vertex distances between two (V, 3) arrays."""
    return float(np.sqrt(np.mean(np.sum((a - b) ** 2, axis=1))))


def _partial_noisy_scan(truth_mm: np.ndarray, faces: np.ndarray, rng: np.random.Generator):
    """A scan of ``truth_mm``: forehead top cut away, Gaussian noise. Returns (vertices mm, faces)."""
    y = truth_mm[:, 1]
    keep = y < np.quantile(y, 1.0 - SCAN_CUT_FRACTION)  # (V,) drop the top of the forehead
    tri = faces[keep[faces].all(axis=1)]  # triangles fully kept
    used = np.unique(tri)
    remap = np.full(len(truth_mm), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    verts = truth_mm[used] + rng.normal(0.0, SCAN_NOISE_MM, (len(used), 3))
    return verts, remap[tri]


def demo_model(model: Any = None, progress: Callable[[str], None] = print):
    """The decoder the demo runs: ``model`` if given, else the default built-in model, or
    ``procedural`` when the default is not installed (with a progress line saying so)."""
    from fitface import api
    from fitface.models.registry import BUILTIN_MODELS, DEFAULT_MODEL

    if model is None and not BUILTIN_MODELS[DEFAULT_MODEL].installed:
        progress(f"the default model {DEFAULT_MODEL!r} is not installed: running the procedural demo")
        model = "procedural"
    return api.load_fit_model(model)


def run_demo(
    out_dir: str | Path,
    seed: int = 0,
    expression: str | None = None,
    model: Any = None,
    progress: Callable[[str], None] = print,
) -> DemoResult:
    """Run the demo and write its files into ``out_dir``.

    Args:
        out_dir: output folder (created).
        seed: seed of the procedural demo's subjects and scanner poses (the real-face captures
            are fixed files).
        expression: A's expression: procedural demo, one of :data:`fitface.data.emotions.EMOTIONS`
            (default ``surprise``); real faces, one of the shipped expressive captures
            (``mouth_extreme`` = A, default; ``high_smile`` = C).
        model: a built-in name, a model file or a decoder (default: see :func:`demo_model`). A model
            on the procedural template runs the procedural demo, one on the ICT topology the
            real-face demo.
        progress: called with one line of text per stage.

    Returns:
        A :class:`DemoResult` naming every file written and the errors against the ground truth.

    Raises:
        InputError: an unknown expression, a model on neither topology, missing demo captures.
    """
    from fitface.data.procedural import template_mesh
    from fitface.errors import InputError

    t0 = time.perf_counter()
    dec = demo_model(model, progress)
    if dec.num_vertices == len(template_mesh().domain):
        res = _procedural_demo(Path(out_dir), dec, seed, expression or DEFAULT_EXPRESSION["procedural"], progress)
    elif dec.num_vertices == _real_vertex_count():
        res = _real_demo(Path(out_dir), dec, expression or DEFAULT_EXPRESSION["real"], progress)
    elif not REAL_CAPTURES.is_file():
        raise InputError(f"the real-face demo captures are not installed (needed by a model of "
                         f"{dec.num_vertices} vertices; `fitface demo --model procedural` needs none)", REAL_CAPTURES)
    else:
        raise InputError(f"the demo needs a model on the procedural template (procedural) or on the ICT topology "
                         f"(ict, ict-linear); this model has {dec.num_vertices} vertices")
    from fitface.api.inputs import model_reference

    res.model = model_reference(dec)
    res.seconds = time.perf_counter() - t0
    summary = {"unit": "mm", "errors_rms_mm": res.errors_mm, "seconds": round(res.seconds, 3),
               "faces": res.faces, "model": res.model, "model_id": dec.model_id, "expression": res.expression,
               "seed": seed if res.faces == "procedural" else None,
               "files": {k: str(v) for k, v in res.files.items()}}
    from fitface.io.atomic import write_text

    write_text(res.out_dir / "demo.json", json.dumps(summary, indent=2) + "\n")
    res.files["summary"] = res.out_dir / "demo.json"
    return res


def _procedural_demo(out: Path, dec, seed: int, expression: str, progress) -> DemoResult:
    """The demo on procedural faces built on the fly (see the module docstring)."""
    from fitface.data.emotions import EMOTIONS
    from fitface.data.procedural import NUM_IDENTITY_PARAMS, apply_actions, neutral_faces, recipe_matrix, template_mesh
    from fitface.errors import InputError
    from fitface.geometry.camera import rotation_yaw_pitch
    from fitface.io.landmarks import save_landmarks
    from fitface.io.mesh import save_mesh

    if expression not in EMOTIONS:
        raise InputError(f"--expression: expected one of {', '.join(EMOTIONS)}, got {expression!r}")
    res = DemoResult(out, faces="procedural", expression=expression)
    tpl = template_mesh()
    faces = np.asarray(tpl.faces)

    # ---- 1. ground truth: held-out subjects A (expression) and B (neutral)
    rng = np.random.default_rng([seed, DEMO_STREAM])
    params = rng.standard_normal((2, NUM_IDENTITY_PARAMS))  # (2, P)
    neutral = neutral_faces(params)  # (2, V, 3) mm
    actions = recipe_matrix()[EMOTIONS.index(expression)]  # (A,)
    a_truth = apply_actions(neutral[:1], params[:1], actions[None])[0]  # (V, 3) A with the expression
    b_truth = neutral[1]  # (V, 3) B neutral
    retarget_truth = apply_actions(neutral[1:], params[1:], actions[None])[0]  # B with A's expression
    caps = {}
    for name, truth, yaw in (("A", a_truth, 25.0), ("B", b_truth, -15.0)):
        rot = rotation_yaw_pitch(yaw, -10.0, 3.0)
        caps[name] = _Capture(truth, rot, rng.uniform(-0.5, 0.5, 3) + np.array([0.0, 1.6, 0.0]))
    lset = tpl.landmark_sets["ibug68"]
    capture_dir = out / "captures"
    for name, cap in caps.items():
        scan_v, scan_f = _partial_noisy_scan(cap.truth_mm, faces, rng)
        lm = lset.points(cap.truth_mm, faces) + rng.normal(0.0, LANDMARK_NOISE_MM, (len(lset), 3))
        save_mesh(capture_dir / f"{name}_scan.ply", cap.to_scanner(scan_v), scan_f)
        save_landmarks(capture_dir / f"{name}_landmarks.txt", cap.to_scanner(lm), unit="m")
    res.files["captures"] = capture_dir
    progress(f"built held-out procedural captures A ({expression}) and B (neutral): partial noisy scans + 68 "
             f"landmarks, metres, scanner frame, in {capture_dir}")
    _fit_and_retarget(res, dec, caps, faces, retarget_truth, expression, progress)
    return res


def load_real_captures(path: Path = REAL_CAPTURES, keys=None) -> dict[str, np.ndarray]:
    """The shipped real-face captures (layout: scripts/build_demo_captures.py), never unpickled.

    Raises:
        InputError: the file is missing (a stripped installation) or unreadable.
    """
    from fitface.errors import InputError, one_line

    if not path.is_file():
        raise InputError("the real-face demo captures are not installed", path)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in (z.files if keys is None else keys)}
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"unreadable demo captures: {one_line(exc)}", path) from None


def _real_vertex_count() -> int | None:
    """Vertices of the shipped real-face truths (the ICT topology), None when not shipped."""
    if not REAL_CAPTURES.is_file():
        return None
    return int(load_real_captures(keys=("A_truth",))["A_truth"].shape[0])


def _real_demo(out: Path, dec, expression: str, progress) -> DemoResult:
    """The demo on the shipped held-out ICT-FaceKit captures (see the module docstring)."""
    from fitface.errors import InputError
    from fitface.io.landmarks import save_landmarks
    from fitface.io.mesh import save_mesh

    z = load_real_captures()
    expressive = {str(z[f"{n}_expression"]): str(n) for n in z["names"] if str(z[f"{n}_expression"]) != "neutral"}
    if expression not in expressive:
        raise InputError(f"--expression: the real-face captures pose {', '.join(expressive)}; got {expression!r}")
    src = expressive[expression]
    res = DemoResult(out, faces="real", expression=expression)
    caps = {role: _Capture(np.asarray(z[f"{n}_truth"], dtype=np.float64), np.asarray(z[f"{n}_rotation"]),
                           np.asarray(z[f"{n}_translation"])) for role, n in (("A", src), ("B", "B"))}
    capture_dir = out / "captures"
    for role, n in (("A", src), ("B", "B")):
        save_mesh(capture_dir / f"{role}_scan.ply", np.asarray(z[f"{n}_scan_vertices"], dtype=np.float64),
                  np.asarray(z[f"{n}_scan_faces"], dtype=np.int64))
        save_landmarks(capture_dir / f"{role}_landmarks.txt", np.asarray(z[f"{n}_landmarks"]))  # no unit stated
    res.files["captures"] = capture_dir
    progress(f"wrote held-out ICT-FaceKit captures A ({expression}) and B (neutral): partial noisy scans + 68 "
             f"landmarks, metres (stated nowhere: the fits infer it), scanner frame, in {capture_dir}")
    faces = np.asarray(dec.faces)
    _fit_and_retarget(res, dec, caps, faces, np.asarray(z[f"truth_{src}_on_B"], dtype=np.float64), expression,
                      progress)
    return res


def _fit_and_retarget(res: DemoResult, dec, caps: dict, faces: np.ndarray, retarget_truth: np.ndarray,
                      expression: str, progress) -> None:
    """Steps 2-4 of the demo on captures written to ``res.out_dir / "captures"``.

    Args:
        caps: ``{"A": _Capture, "B": _Capture}`` (truths in the model frame, mm).
        faces: (F, 3) int triangles of the truths (the model's topology).
        retarget_truth: (V, 3) float mm, B posing A's expression, model frame.
    """
    from fitface import api
    from fitface.geometry.render import tile_images
    from fitface.io.image import write_png
    from fitface.preview import error_colors, mesh_strip

    out = res.out_dir
    capture_dir = out / "captures"
    a_truth, b_truth = caps["A"].truth_mm, caps["B"].truth_mm

    # ---- 2. fits (results in the scanner's frame and unit)
    fit_a = api.fit(capture_dir / "A_landmarks.txt", capture_dir / "A_scan.ply", model=dec, refine_surface=True,
                    out_dir=out / "fit_A")
    fit_b = api.fit(capture_dir / "B_landmarks.txt", model=dec, out_dir=out / "fit_B")
    a_fit_mm = caps["A"].to_model(fit_a.vertices)
    b_fit_mm = caps["B"].to_model(fit_b.vertices)
    res.errors_mm["fit_A"] = _rms(a_fit_mm, a_truth)
    res.errors_mm["fit_B"] = _rms(b_fit_mm, b_truth)
    res.files.update({"fit_A": out / "fit_A", "fit_B": out / "fit_B"})
    unit = f"unit {fit_a.unit}, {fit_a.codes.extra.get('unit_source')}"
    progress(f"fitted A (landmarks + surface, {fit_a.seconds:.2f} s, {unit}): RMS error to the truth "
             f"{res.errors_mm['fit_A']:.2f} mm; B (landmarks only, {fit_b.seconds:.2f} s): "
             f"{res.errors_mm['fit_B']:.2f} mm")

    # ---- 3. retarget A's expression onto B
    ret_path = out / "retarget" / "A_expression_on_B.ply"
    ret = api.retarget(fit_a.files["codes"], fit_b.files["codes"], model=dec, out=ret_path)
    ret_mm = caps["B"].to_model(ret.vertices[0])  # (V, 3) model frame mm
    res.errors_mm["retarget"] = _rms(ret_mm, retarget_truth)
    res.errors_mm["no_transfer"] = _rms(b_fit_mm, retarget_truth)
    res.files["retarget"] = ret_path
    progress(f"retargeted A's {expression} onto B: RMS error to the true B-with-{expression} "
             f"{res.errors_mm['retarget']:.2f} mm (B's own fit, no transfer: {res.errors_mm['no_transfer']:.2f} mm)")

    # ---- 4. pictures
    scale = ERROR_MAP_MM
    err_a = np.linalg.norm(a_fit_mm - a_truth, axis=1)
    err_r = np.linalg.norm(ret_mm - retarget_truth, axis=1)
    row1 = mesh_strip([a_truth, a_fit_mm, b_truth, b_fit_mm], faces, ["A truth", "A fit", "B truth", "B fit"],
                      size=256)
    row2 = mesh_strip([retarget_truth, ret_mm], faces, [f"truth: B + {expression}", "retarget A->B"], size=256)
    heat = _error_maps([a_fit_mm, ret_mm], [err_a, err_r], faces, scale,
                       [f"A fit error (0-{scale:g} mm)", f"retarget error (0-{scale:g} mm)"], error_colors)
    sheet = tile_images([row1, tile_images([row2, heat], ncols=2, pad=0), fit_a.preview(256)],
                        ["ground truth and fits", "retargeting and per-vertex errors", "fit A: landmark residuals"],
                        ncols=1)
    write_png(out / "contact_sheet.png", sheet)
    res.files["contact_sheet"] = out / "contact_sheet.png"


def _error_maps(meshes, errors, faces, scale, labels, error_colors) -> np.ndarray:
    """Meshes shaded with per-vertex error colours, side by side."""
    from fitface.geometry.camera import frame_mesh
    from fitface.geometry.render import render_shaded, tile_images
    from fitface.preview import BACKGROUND

    cam = frame_mesh(np.concatenate(meshes), size=256)
    ims = [render_shaded(m, faces, camera=cam, vertex_colors=error_colors(e, scale), background=BACKGROUND).image
           for m, e in zip(meshes, errors)]
    return tile_images(ims, labels, ncols=len(ims))
