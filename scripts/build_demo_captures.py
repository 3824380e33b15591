"""Build the real-face demo captures shipped in fitface/demo_captures/ict_captures.npz.

Usage:
    python scripts/build_demo_captures.py --data data/ict --ict-source ../shared/data/ict_face_light.npz

Three held-out people of an ICT dataset's **test split** (never seen by a model trained or built
on its train split: ``ict``, ``ict-linear``), posed with the ground-truth machinery of
:mod:`fitface.evaluation.heldout_captures` (the ICT blendshapes deformation-transferred onto each
identity, exactly as the dataset builder does):

* ``A``: the first test identity with the extreme expression ``mouth_extreme``;
* ``B``: the second test identity, neutral (the dataset's own neutral sample of it);
* ``C``: the third test identity with the extreme expression ``high_smile``.

Each capture is what a scanner gives: a partial scan mesh (the triangles facing the scanner,
the top of the forehead cut away) with 0.2 mm Gaussian noise and 68 ibug landmarks with 1 mm
noise, in **metres** in the scanner's own frame (rotated and translated). The truths
(``A``, ``B``, ``C`` and B posing A's and C's expressions, for retargeting) stay in the model
frame in mm. The expressions are outside the training emotions
(fitface/evaluation/heldout_captures.py), so the demo measures what a model does on faces and
expressions it never saw.

npz layout (``np.load(..., allow_pickle=False)``; all float32 unless said):

    names               (3,) str: "A", "B", "C"
    <X>_scan_vertices   (P, 3) metres, scanner frame
    <X>_scan_faces      (Fs, 3) int32 into <X>_scan_vertices
    <X>_landmarks       (68, 3) float64 metres, scanner frame, ibug68 order
    <X>_rotation        (3, 3) float64 model -> scanner rotation
    <X>_translation     (3,) float64 metres: x_scanner = R @ x_model_mm / 1000 + t
    <X>_truth           (V, 3) mm, model frame (V = 9,409, the ICT topology)
    <X>_expression      () str: the expression ("neutral" for B)
    truth_A_on_B        (V, 3) mm: B's face with A's expression (retargeting truth)
    truth_C_on_B        (V, 3) mm: B's face with C's expression
    info                () str: JSON provenance (dataset fingerprint, identities, noise, licence)

The captures derive from ICT-FaceKit (MIT licence; see NOTICE).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from fitface.demo import LANDMARK_NOISE_MM, SCAN_CUT_FRACTION, SCAN_NOISE_MM, _Capture  # the demo's scanner

#: A scan keeps the triangles whose normal makes at most this angle's cosine with the view (+z).
FRONT_COS = 0.15
#: (capture, test identity index, expression or None, yaw, pitch, roll) of the three captures.
CAPTURES = (("A", 0, "mouth_extreme", 25.0, -10.0, 3.0),
            ("B", 1, None, -15.0, -10.0, -2.0),
            ("C", 2, "high_smile", 10.0, 5.0, 4.0))


def partial_noisy_scan(truth_mm: np.ndarray, faces: np.ndarray, rng: np.random.Generator):
    """(vertices (P, 3) float64 mm, faces (Fs, 3) int64): front-facing triangles below the cut.

    Unlike the procedural demo's scan (``fitface.demo._partial_noisy_scan``) it also drops the
    triangles facing away from the scanner, and cuts at a fraction of the face's height rather
    than of its vertices (the ICT mesh has a dense back of the head)."""
    y = truth_mm[:, 1]
    keep_v = y < y.min() + (1.0 - SCAN_CUT_FRACTION) * np.ptp(y)
    tri = truth_mm[faces]  # (F, 3, 3)
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    keep_f = keep_v[faces].all(axis=1) & (n[:, 2] > FRONT_COS)
    kept = faces[keep_f]
    used = np.unique(kept)
    remap = np.full(len(truth_mm), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    verts = truth_mm[used] + rng.normal(0.0, SCAN_NOISE_MM, (len(used), 3))
    return verts, remap[kept]


def main(argv: list[str] | None = None) -> int:
    from fitface.data.format import load_dataset
    from fitface.errors import InputError
    from fitface.evaluation.heldout_captures import build_test_captures, neutral_sample
    from fitface.geometry.camera import rotation_yaw_pitch
    from fitface.io.atomic import atomic_path

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path, help="the ICT dataset (fitface data ict)")
    ap.add_argument("--ict-source", required=True, type=Path, help="ict_face_light.npz or an ICT-FaceKit checkout")
    ap.add_argument("-o", "--out", type=Path,
                    default=Path(__file__).resolve().parents[1] / "fitface" / "demo_captures" / "ict_captures.npz")
    ap.add_argument("--seed", type=int, default=0, help="seed of the noise and scanner poses")
    args = ap.parse_args(argv)
    try:
        ds = load_dataset(args.data, check_values=False)
        tc = build_test_captures(ds, identities=3, ict_source=args.ict_source)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ids = tc.identities  # (3,) dataset identity labels of the first three test identities
    faces = np.asarray(tc.faces, dtype=np.int64)
    lset = tc.landmark_sets["ibug68"]
    expr = {name: k for k, name in enumerate(tc.expression_names)}
    b_sample = neutral_sample(ds, int(ids[1]))
    if b_sample is None:
        print(f"error: {args.data}: test identity {int(ids[1])} has no neutral sample", file=sys.stderr)
        return 2
    truths = {}
    for name, i, e, *_ in CAPTURES:
        truths[name] = (np.asarray(ds.vertices[b_sample], dtype=np.float64) if e is None
                        else tc.vertices[tc.index(int(ids[i]), expr[e])])
    rng = np.random.default_rng([args.seed, 20260101])
    arrays: dict[str, np.ndarray] = {"names": np.array([c[0] for c in CAPTURES])}
    for name, i, e, yaw, pitch, roll in CAPTURES:
        truth = truths[name]
        rot = rotation_yaw_pitch(yaw, pitch, roll)
        trans = rng.uniform(-0.5, 0.5, 3) + np.array([0.0, 1.6, 0.0])  # metres
        cap = _Capture(truth, rot, trans)
        scan_v, scan_f = partial_noisy_scan(truth, faces, rng)
        lm = lset.points(truth, faces) + rng.normal(0.0, LANDMARK_NOISE_MM, (len(lset), 3))  # (68, 3) mm
        arrays[f"{name}_scan_vertices"] = cap.to_scanner(scan_v).astype(np.float32)
        arrays[f"{name}_scan_faces"] = scan_f.astype(np.int32)
        arrays[f"{name}_landmarks"] = cap.to_scanner(lm)
        arrays[f"{name}_rotation"] = rot
        arrays[f"{name}_translation"] = trans
        arrays[f"{name}_truth"] = truth.astype(np.float32)
        arrays[f"{name}_expression"] = np.array(e or "neutral")
    for src in ("A", "C"):
        _, _, e, *_ = next(c for c in CAPTURES if c[0] == src)
        arrays[f"truth_{src}_on_B"] = tc.vertices[tc.index(int(ids[1]), expr[e])].astype(np.float32)
    info = {
        "dataset_fingerprint": ds.fingerprint, "dataset": str(args.data), "ict_source": str(args.ict_source.name),
        "test_identities": {c[0]: int(ids[c[1]]) for c in CAPTURES}, "seed": args.seed,
        "scan_noise_mm": SCAN_NOISE_MM, "landmark_noise_mm": LANDMARK_NOISE_MM,
        "scan_cut_fraction": SCAN_CUT_FRACTION, "front_cos": FRONT_COS, "unit_truth": "mm", "unit_capture": "m",
        "licence": "MIT (ICT-FaceKit, USC Institute for Creative Technologies); see NOTICE",
        "builder": "scripts/build_demo_captures.py", "testsets": tc.info,
    }
    arrays["info"] = np.array(json.dumps(info, default=str))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    size = args.out.stat().st_size
    print(f"wrote {args.out}: {size / 2**20:.2f} MiB; identities {info['test_identities']}; "
          + ", ".join(f"{c[0]} scan {len(arrays[c[0] + '_scan_vertices'])} points" for c in CAPTURES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
