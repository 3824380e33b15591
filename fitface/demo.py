"""The end-to-end demo behind ``fitface demo``: fit a capture, retarget its expression.

What it does, with the built-in model (trained on the project's procedural faces):

1. Builds two held-out captures with the project's own procedural face model: identities drawn
   from a seed stream the training set never used, subject A with an expression (surprise by
   default), subject B neutral. Each capture is what a scanner would give: a partial, noisy scan
   mesh and 68 landmarks, in **metres**, in the scanner's own frame (rotated and translated).
2. Fits A (landmarks + robust surface refinement against the scan) and B (landmarks only) with
   :func:`fitface.fit`; the fits come back in the scanner's frame and unit.
3. Retargets A's expression onto B with :func:`fitface.retarget` and compares it with the true
   mesh of B making A's expression, which the procedural model can produce.
4. Writes meshes, codes, previews and a contact sheet (``contact_sheet.png``), and reports every
   error against the ground truth in mm.

Convention: ground truth, fits and retargets are compared vertex to vertex (the model's
template is the procedural template, so topologies agree), in mm, in the capture's frame.
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


@dataclass
class DemoResult:
    """Where the demo wrote its files, and what it measured.

    Attributes:
        out_dir: the output folder.
        files: name -> path of every file written.
        errors_mm: name -> RMS vertex error against the ground truth, mm.
        seconds: wall time.
    """

    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    errors_mm: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


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


def run_demo(
    out_dir: str | Path,
    seed: int = 0,
    expression: str = "surprise",
    model: Any = None,
    progress: Callable[[str], None] = print,
) -> DemoResult:
    """Run the demo and write its files into ``out_dir``.

    Args:
        out_dir: output folder (created).
        seed: seed of the demo's subjects and scanner poses.
        expression: A's emotion, one of :data:`fitface.data.emotions.EMOTIONS`.
        model: a model file (default: the built-in model, which knows the procedural faces).
        progress: called with one line of text per stage.

    Returns:
        A :class:`DemoResult` naming every file written and the errors against the ground truth.
    """
    from fitface import api
    from fitface.data.emotions import EMOTIONS
    from fitface.data.procedural import NUM_IDENTITY_PARAMS, apply_actions, neutral_faces, recipe_matrix
    from fitface.data.procedural import template_mesh
    from fitface.errors import InputError
    from fitface.geometry.camera import rotation_yaw_pitch
    from fitface.geometry.render import tile_images
    from fitface.io.image import write_png
    from fitface.io.landmarks import save_landmarks
    from fitface.io.mesh import save_mesh
    from fitface.preview import error_colors, mesh_strip

    if expression not in EMOTIONS:
        raise InputError(f"--expression: expected one of {', '.join(EMOTIONS)}, got {expression!r}")
    t0 = time.perf_counter()
    out = Path(out_dir)
    res = DemoResult(out)
    dec = api.load_fit_model(model)
    tpl = template_mesh()
    faces = np.asarray(tpl.faces)
    if dec.num_vertices != len(tpl.domain):
        raise InputError("the demo needs a model on the procedural template (the built-in model)")

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
    progress(f"built held-out captures A ({expression}) and B (neutral): partial noisy scans + 68 landmarks, "
             f"metres, scanner frame, in {capture_dir}")

    # ---- 2. fits (results in the scanner's frame and unit)
    fit_a = api.fit(capture_dir / "A_landmarks.txt", capture_dir / "A_scan.ply", model=dec, refine_surface=True,
                    out_dir=out / "fit_A")
    fit_b = api.fit(capture_dir / "B_landmarks.txt", model=dec, out_dir=out / "fit_B")
    res.errors_mm["fit_A"] = _rms(caps["A"].to_model(fit_a.vertices), a_truth)
    res.errors_mm["fit_B"] = _rms(caps["B"].to_model(fit_b.vertices), b_truth)
    res.files.update({"fit_A": out / "fit_A", "fit_B": out / "fit_B"})
    progress(f"fitted A (landmarks + surface, {fit_a.seconds:.2f} s): RMS error to the truth "
             f"{res.errors_mm['fit_A']:.2f} mm; B (landmarks only, {fit_b.seconds:.2f} s): "
             f"{res.errors_mm['fit_B']:.2f} mm")

    # ---- 3. retarget A's expression onto B
    ret_path = out / "retarget" / "A_expression_on_B.ply"
    ret = api.retarget(fit_a.files["codes"], fit_b.files["codes"], model=dec, out=ret_path)
    ret_mm = caps["B"].to_model(ret.vertices[0])  # (V, 3) model frame mm
    res.errors_mm["retarget"] = _rms(ret_mm, retarget_truth)
    res.errors_mm["no_transfer"] = _rms(caps["B"].to_model(fit_b.vertices), retarget_truth)
    res.files["retarget"] = ret_path
    progress(f"retargeted A's {expression} onto B: RMS error to the true B-with-{expression} "
             f"{res.errors_mm['retarget']:.2f} mm (B's own fit, no transfer: {res.errors_mm['no_transfer']:.2f} mm)")

    # ---- 4. pictures
    a_fit_mm = caps["A"].to_model(fit_a.vertices)
    scale = 5.0  # mm, full red on the error maps
    err_a = np.linalg.norm(a_fit_mm - a_truth, axis=1)
    err_r = np.linalg.norm(ret_mm - retarget_truth, axis=1)
    row1 = mesh_strip([a_truth, a_fit_mm, b_truth, caps["B"].to_model(fit_b.vertices)], faces,
                      ["A truth", "A fit", "B truth", "B fit"], size=256)
    row2 = mesh_strip([retarget_truth, ret_mm], faces, [f"truth: B + {expression}", "retarget A->B"], size=256)
    heat = _error_maps([a_fit_mm, ret_mm], [err_a, err_r], faces, scale,
                       [f"A fit error (0-{scale:g} mm)", f"retarget error (0-{scale:g} mm)"], error_colors)
    sheet = tile_images([row1, tile_images([row2, heat], ncols=2, pad=0), fit_a.preview(256)],
                        ["ground truth and fits", "retargeting and per-vertex errors", "fit A: landmark residuals"],
                        ncols=1)
    write_png(out / "contact_sheet.png", sheet)
    res.files["contact_sheet"] = out / "contact_sheet.png"
    res.seconds = time.perf_counter() - t0
    summary = {"unit": "mm", "errors_rms_mm": res.errors_mm, "seconds": round(res.seconds, 3),
               "model_id": dec.model_id, "expression": expression, "seed": seed,
               "files": {k: str(v) for k, v in res.files.items()}}
    from fitface.io.atomic import write_text

    write_text(out / "demo.json", json.dumps(summary, indent=2) + "\n")
    res.files["summary"] = out / "demo.json"
    return res


def _error_maps(meshes, errors, faces, scale, labels, error_colors) -> np.ndarray:
    """Meshes shaded with per-vertex error colours, side by side."""
    from fitface.geometry.camera import frame_mesh
    from fitface.geometry.render import render_shaded, tile_images
    from fitface.preview import BACKGROUND

    cam = frame_mesh(np.concatenate(meshes), size=256)
    ims = [render_shaded(m, faces, camera=cam, vertex_colors=error_colors(e, scale), background=BACKGROUND).image
           for m, e in zip(meshes, errors)]
    return tile_images(ims, labels, ncols=len(ims))
