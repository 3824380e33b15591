"""Accuracy of fitface's ARKit-52 weights on faces whose true ICT blendshape weights are known.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/arkit_accuracy.py [--identities 6] [--frames 24]
[--video-frames 48] [--json OUT.json]`` (needs ../shared/data/ict_face_light.npz; ~2-4 minutes on 2 cores).

Ground truth: fresh ICT identities (``w_id ~ N(0, I)``, seeds 1000+i, none of the training set's
``[0, seed, stream 1, i]`` draws), each performing frames whose 55 ICT weights are known: the
seven emotion recipes of the ICT builder (:data:`fitface.data.ict.EMOTION_RECIPES`) at random
intensities, and random sparse mixtures of 1-4 units (a ``_L``/``_R`` pair moves together) with
weights in [0.2, 1]. The true mesh is ``neutral_i + sum_k w_k D_ik`` (mm), ``D_ik`` the shapes
transferred onto the identity (the builder's own construction). True ARKit values: the same
merge fitface writes (:func:`fitface.arkit.to_arkit`: split pairs by their mean, tongueOut 0).

Three measures, each as the mean absolute error of the 51 ARKit values (tongueOut, always 0, left
out) per shape and averaged over shapes, beside the error of answering 0 everywhere, and the
vertex RMSE (mm) of the re-synthesised face (the GLB's mesh) against the true mesh:

1. ``exact``: the solve alone, from the exact displacement onto the true neutral (a check of
   the bounded least squares: it must recover the weights);
2. ``fit <model>``: the true mesh's 68 iBUG landmarks (3D, mm, noise-free) -> ``fitface fit``
   (default options) -> ``export_result`` -> weights; the face is re-synthesised from the fitted
   identity's neutral and its transferred shapes, in the capture's frame;
3. ``track ict``: one identity rendered (shaded, 480 x 640, moving head) over ``--video-frames``
   frames -> ``fitface track`` (mediapipe's face mesh, the sequence fit) -> ``export_result``;
   mesh error after a similarity alignment per frame (a video has no metric frame).

mediapipe's own 52 blendshape scores are not compared: mediapipe 0.10.14's bundled legacy face
mesh has no blendshape head, and its FaceLandmarker task needs ``face_landmarker.task``
(with ``face_blendshapes.tflite``), which is not shipped with the wheel and cannot be downloaded
on an offline machine; the script says so when it cannot find one (``--mediapipe-task FILE``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import ICT_NPZ, machine


def true_weights(names, frames: int, rng) -> np.ndarray:
    """(frames, K) known ICT weights: emotion recipes at random intensities and sparse mixtures."""
    from fitface.data.ict import blendshape_recipe_matrix, mixture_units

    recipes = blendshape_recipe_matrix(names)[1:]  # the six non-neutral emotions
    units = mixture_units(names)
    w = np.zeros((frames, len(names)))
    for t in range(frames):
        if t % 2 == 0:
            w[t] = recipes[rng.integers(len(recipes))] * rng.uniform(0.3, 1.0)
        else:
            for u in rng.choice(len(units), size=rng.integers(1, 5), replace=False):
                w[t, list(units[u])] = rng.uniform(0.2, 1.0)
    return np.clip(w, 0.0, 1.0)


def errors(pred52: np.ndarray, true52: np.ndarray) -> dict:
    from fitface.arkit import ARKIT_NAMES

    keep = [i for i, n in enumerate(ARKIT_NAMES) if n != "tongueOut"]
    per_shape = np.abs(pred52[:, keep] - true52[:, keep]).mean(axis=0)
    zero = np.abs(true52[:, keep]).mean(axis=0)
    names = [ARKIT_NAMES[i] for i in keep]
    worst = np.argsort(-per_shape)[:5]
    return {"mae": float(per_shape.mean()), "mae_zero": float(zero.mean()),
            "per_shape": {n: float(e) for n, e in zip(names, per_shape)},
            "worst": [(names[i], round(float(per_shape[i]), 3)) for i in worst]}


def rms(a, b) -> np.ndarray:
    return np.sqrt(np.mean(np.sum((np.asarray(a) - np.asarray(b)) ** 2, axis=-1), axis=-1))


def synthetic_faces(identities: int, frames: int):
    from fitface.data.ict import ExpressionTransfer, load_ict

    model = load_ict(ICT_NPZ)
    et = ExpressionTransfer(model)
    out = []
    for i in range(identities):
        rng = np.random.default_rng([1000 + i])
        neutral = et.neutral_of(rng.standard_normal(len(model.identity_modes)))
        d = et.deltas(neutral)
        w = true_weights(model.expression_names, frames, rng)
        out.append((neutral, d, w, neutral[None] + np.tensordot(w, d, axes=1)))
    return model, out


def measure_exact(model, faces) -> dict:
    from fitface.arkit import solve_weights, to_arkit

    names = model.expression_names
    preds, trues, mesh = [], [], []
    for neutral, d, w, verts in faces:
        s = solve_weights(d, verts - neutral[None])
        preds.append(to_arkit(s.weights, names))
        trues.append(to_arkit(w, names))
        mesh.append(s.residual_rms)
    out = errors(np.concatenate(preds), np.concatenate(trues))
    out["mesh_rmse_mm"] = float(np.mean(np.concatenate(mesh)))
    return out


def measure_fit(model, faces, model_name: str, tmp: Path) -> dict:
    from fitface.api import fit
    from fitface.api.export import build_export
    from fitface.arkit import arkit_deltas, to_arkit

    names = model.expression_names
    lms = model.landmarks_ibug68
    preds, trues, mesh, secs = [], [], [], []
    for i, (_, _, w, verts) in enumerate(faces):
        for t in range(len(verts)):
            out = tmp / f"{model_name}_{i}_{t}"
            t0 = time.perf_counter()
            fit(verts[t][lms], model=model_name, unit="mm", out_dir=out, preview=False)
            res = build_export(out)
            secs.append(time.perf_counter() - t0)
            preds.append(res.arkit.weights[0])
            trues.append(to_arkit(w[t:t + 1], names)[0])
            # the re-synthesised face: the GLB's mesh (capture frame: the truth's)
            from fitface.io.gltf import accessor_array, read_glb

            g = read_glb(res.glb)
            prim = g.meshes[0].primitives[0]
            base = accessor_array(g, prim.attributes.POSITION)
            tg = np.stack([accessor_array(g, x["POSITION"] if isinstance(x, dict) else x.POSITION)
                           for x in prim.targets])
            mesh.append(float(rms(base + np.tensordot(res.weights[0], tg, axes=1), verts[t])))
    del arkit_deltas
    out = errors(np.array(preds), np.array(trues))
    out["mesh_rmse_mm"] = float(np.mean(mesh))
    out["seconds_per_face"] = float(np.median(secs))
    return out


def measure_track(model, frames: int, tmp: Path) -> dict:
    from fitface.api.export import build_export
    from fitface.api.track import track
    from fitface.arkit import to_arkit
    from fitface.data.ict import ExpressionTransfer
    from fitface.evaluation.tracking_video import aligned_rmse, head_pose
    from fitface.geometry.camera import Camera, frame_mesh, rotation_yaw_pitch
    from fitface.geometry.render import render_shaded
    from fitface.io.video import write_video

    et = ExpressionTransfer(model)
    rng = np.random.default_rng([2000])
    neutral = et.neutral_of(rng.standard_normal(len(model.identity_modes)))
    d = et.deltas(neutral)
    # a smooth performance: keyframes of known weights every 6 frames, linearly interpolated
    keys = true_weights(model.expression_names, frames // 6 + 2, rng)
    keys[0] = 0.0
    kt = np.arange(len(keys)) * 6
    w = np.stack([np.interp(np.arange(frames), kt, keys[:, k]) for k in range(keys.shape[1])], axis=1)
    verts = neutral[None] + np.tensordot(w, d, axes=1)
    size = (480, 640)
    base = frame_mesh(verts[0], size, margin=0.14)
    tt = np.arange(frames) / frames
    pose = head_pose(tt)
    imgs = []
    for k in range(frames):
        cam = Camera(rotation_yaw_pitch(*pose[k]), base.scale, base.translation, *size)
        imgs.append(render_shaded(verts[k], model.faces, camera=cam, background=(96, 112, 128)).image)
    video = tmp / "ict_sequence.mp4"
    write_video(video, np.stack(imgs), 30.0)
    t0 = time.perf_counter()
    track(video, tmp / "track", model="ict", overlay=False)
    res = build_export(tmp / "track")
    seconds = time.perf_counter() - t0
    pred = res.arkit.weights
    out = errors(pred, to_arkit(w, model.expression_names))
    # the re-synthesised face (model frame) against the truth, aligned per frame
    from fitface.io.gltf import accessor_array, read_glb

    g = read_glb(res.glb)
    prim = g.meshes[0].primitives[0]
    b = accessor_array(g, prim.attributes.POSITION)
    tg = np.stack([accessor_array(g, x["POSITION"] if isinstance(x, dict) else x.POSITION) for x in prim.targets])
    synth = b[None] + np.tensordot(res.weights, tg, axes=1)
    out["mesh_rmse_mm"] = float(np.mean(aligned_rmse(synth, verts)))
    out["glb_vs_fitface_rms_mm"] = float(np.mean(res.rms_mm))
    out["seconds"] = seconds
    out["frames"] = frames
    return out


def mediapipe_blendshapes_available(task: str | None) -> str:
    if task is None:
        return ("not compared: mediapipe 0.10.14 ships no face_landmarker.task (the FaceLandmarker with "
                "blendshapes needs it; none on this offline machine; pass --mediapipe-task FILE)")
    return f"--mediapipe-task {task} given, but the comparison is not implemented in this script"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--identities", type=int, default=6)
    ap.add_argument("--frames", type=int, default=24, help="frames per identity (exact and fit measures)")
    ap.add_argument("--video-frames", type=int, default=48)
    ap.add_argument("--models", default="ict,ict-linear")
    ap.add_argument("--mediapipe-task", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not ICT_NPZ.is_file():
        print(f"needs {ICT_NPZ}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    model, faces = synthetic_faces(args.identities, args.frames)
    results = {"exact": measure_exact(model, faces)}
    with tempfile.TemporaryDirectory() as tmp:
        for m in args.models.split(","):
            results[f"fit {m}"] = measure_fit(model, faces, m, Path(tmp))
        if args.video_frames > 0:
            results["track ict"] = measure_track(model, args.video_frames, Path(tmp))
    results["mediapipe"] = mediapipe_blendshapes_available(args.mediapipe_task)
    total = time.perf_counter() - t0
    n = args.identities * args.frames
    print(f"ARKit-52 accuracy ({dt.date.today()}, {machine()}, {total:.0f} s)")
    print(f"command: OMP_NUM_THREADS=1 python benchmarks/arkit_accuracy.py --identities {args.identities} "
          f"--frames {args.frames} --video-frames {args.video_frames}")
    print()
    print("| measure | faces | mean abs ARKit weight error (51 shapes) | answering 0 | re-synthesised mesh "
          "RMSE (mm) | worst shapes |")
    print("|---|---:|---:|---:|---:|---|")
    for k, r in results.items():
        if not isinstance(r, dict):
            continue
        count = r.get("frames", n)
        worst = ", ".join(f"{a} {b}" for a, b in r["worst"][:3])
        print(f"| {k} | {count} | {r['mae']:.4f} | {r['mae_zero']:.4f} | {r['mesh_rmse_mm']:.3f} | {worst} |")
    print()
    print(f"mediapipe blendshapes: {results['mediapipe']}")
    if "track ict" in results:
        print(f"track: GLB vs fitface mesh RMS {results['track ict']['glb_vs_fitface_rms_mm']:.3f} mm; "
              f"track + export {results['track ict']['seconds']:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
