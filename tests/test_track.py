"""``fitface track``: a rendered face video with a known truth, tracked end to end, and sequence retargeting.

No videos of people: a known identity of the built-in ``ict`` model (real faces) performs an
expression trajectory (jaw open/close, a smile, a blink; directions found from the model,
:mod:`fitface.evaluation.tracking_video`) under a moving head (yaw +-18, pitch +-8, roll +-5
degrees, a moving translation and scale), rendered with the project's renderer (skin-toned
albedo on a grey-blue background: mediapipe finds the face on these shaded renders, no texture
needed), 72 frames at 640x480, four of them blank (no face), encoded as mp4 with OpenCV.

Measured (ict as shipped since 2026-12-02, defaults: lam 30, mu_exp 10, mu_pose 16, 100 steps):
per-frame vertex RMSE after a similarity alignment 2.27 mm mean, 3.17 mm max (the mean face:
3.00 mm); head rotation within 3.5 degrees of the camera's; mean landmark acceleration over the
first 40 frames 0.52 px/frame^2 against 0.78 for the frames fitted each alone; the retargeted
sequence 1.18 mm from the true (B, expression(t)) meshes against 1.86 mm without transfer (the 24
frames with a visible expression). The ict shipped before gave 2.41 / 3.29 (3.20), 0.52 / 0.74,
1.23 / 2.25 (31 frames): the same bounds hold for both.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("mediapipe")

from input_checks import run_cli

from fitface.api.inputs import load_fit_model
from fitface.evaluation.tracking_video import (
    aligned_rmse,
    mean_acceleration,
    render_sequence,
    write_sequence_video,
)
from fitface.fitting.landmark_fit import FitConfig
from fitface.fitting.projection_fit import fit_landmarks_2d
from fitface.fitting.sequence_fit import interpolate_frames, nearest_rotation, smooth_poses, smooth_series
from fitface.io.video import open_frames, select_indices, write_video

MODEL = "ict"
FRAMES = 72
#: Frames replaced by the background only (no face): invalid, interpolated.
BLANK = (40, 41, 42, 43)
#: Bounds (mm) of the per-frame aligned vertex RMSE (module doc: measured 2.27 mean, 3.17 max).
RMSE_MEAN_MM, RMSE_MAX_MM = 2.5, 3.6  # ~10 % over the measured; the mean face is 3.00


@pytest.fixture(scope="module")
def dec():
    return load_fit_model(MODEL)


@pytest.fixture(scope="module")
def rendered(dec, tmp_path_factory):
    rng = np.random.default_rng(1)
    ident = rng.standard_normal(dec.layout.size("identity")) * 0.8
    seq = render_sequence(dec, ident, frames=FRAMES)
    bg = seq.frames[0, 0, 0]
    for k in BLANK:
        seq.frames[k] = bg
    path = tmp_path_factory.mktemp("video") / "face.mp4"
    write_sequence_video(path, seq)
    return seq, path


@pytest.fixture(scope="module")
def tracked(rendered, tmp_path_factory):
    """``fitface track`` through the CLI (in-process), overlay and meshes on."""
    from fitface.cli import main

    _, path = rendered
    out = tmp_path_factory.mktemp("track") / "out"
    code = main(["track", str(path), "-o", str(out), "--meshes", "--no-progress"])
    assert code == 0
    from fitface.api.track import read_track_codes

    return out, read_track_codes(out / "codes.npz")


# ------------------------------------------------------------------------------ frames
def test_select_indices_fps_and_range():
    np.testing.assert_array_equal(select_indices(10, 10.0), np.arange(10))
    np.testing.assert_array_equal(select_indices(30, 30.0, fps=10.0), np.arange(0, 30, 3))
    np.testing.assert_array_equal(select_indices(30, 30.0, start=0.5, end=0.7), np.arange(15, 21))
    # 25 -> 10 fps: never a duplicate, spacing 2 or 3 source frames
    idx = select_indices(50, 25.0, fps=10.0)
    assert len(idx) == 20 and set(np.diff(idx)) <= {2, 3}
    np.testing.assert_array_equal(select_indices(30, 30.0, fps=60.0), np.arange(30))


def test_folder_of_frames_in_natural_order(tmp_path):
    from fitface.io.image import write_png

    for i in (2, 10, 1):
        img = np.full((8, 6, 3), i * 20, np.uint8)
        write_png(tmp_path / f"frame{i}.png", img)
    src = open_frames(tmp_path)
    assert src.kind == "folder" and src.size == (8, 6) and len(src) == 3
    assert [int(f.image[0, 0, 0]) for f in src] == [20, 40, 200]
    np.testing.assert_allclose(src.times, np.arange(3) / 30.0)


def test_video_round_trip_and_subsampling(tmp_path):
    frames = [np.full((32, 48, 3), 8 * k, np.uint8) for k in range(12)]
    path = tmp_path / "v.mp4"
    assert write_video(path, frames, 12.0) == 12
    src = open_frames(path, fps=4.0, start=0.25)
    assert src.source_fps == pytest.approx(12.0) and src.size == (32, 48)
    np.testing.assert_array_equal(src.indices, [3, 6, 9])
    grey = [float(f.image.mean()) for f in src]
    np.testing.assert_allclose(grey, [24, 48, 72], atol=3)  # lossy codec


# ------------------------------------------------------------------------------ smoothing
@pytest.mark.parametrize("order", [1, 2])
def test_smooth_series_is_the_whittaker_solve(order):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(9, 2))
    d = np.diff(np.eye(9), n=order, axis=0)  # (9 - order, 9) finite differences
    ref = np.linalg.solve(np.eye(9) + 3.0 * d.T @ d, x)
    np.testing.assert_allclose(smooth_series(x, 3.0, order), ref, atol=1e-12)
    np.testing.assert_allclose(smooth_series(x, 0.0, order), x)
    np.testing.assert_allclose(smooth_series(np.ones((5, 1)), 10.0, order), 1.0, atol=1e-12)
    # second order keeps a straight line exactly, ends included (first order pulls the ends in)
    line = np.arange(7.0)[:, None]
    np.testing.assert_allclose(smooth_series(line, 50.0, 2), line, atol=1e-9)
    assert abs(smooth_series(line, 50.0, 1)[0, 0]) > 0.5


def test_smooth_poses_keeps_a_constant_pose_and_rotations_proper():
    from fitface.geometry.camera import rotation_yaw_pitch

    r = np.stack([rotation_yaw_pitch(20, -5, 3)] * 6)
    s, rot, t = smooth_poses(np.full(6, 2.0), r, np.ones((6, 2)), 5.0)
    np.testing.assert_allclose(s, 2.0)
    np.testing.assert_allclose(rot, r, atol=1e-12)
    np.testing.assert_allclose(t, 1.0)
    noisy = r + np.random.default_rng(1).normal(scale=0.05, size=r.shape)
    q = nearest_rotation(noisy)
    np.testing.assert_allclose(q @ np.swapaxes(q, 1, 2), np.broadcast_to(np.eye(3), q.shape), atol=1e-12)
    assert (np.linalg.det(q) > 0).all()


def test_interpolate_frames_linear_in_time():
    t = np.array([0.0, 1.0, 2.0, 4.0, 5.0])
    valid = np.array([False, True, False, True, False])
    out = interpolate_frames(t, valid, np.array([[1.0], [7.0]]))
    np.testing.assert_allclose(out[:, 0], [1.0, 1.0, 3.0, 7.0, 7.0])


# ------------------------------------------------------------------------------ tracking
def test_track_outputs(tracked, rendered):
    out, codes = tracked
    seq, path = rendered
    doc = json.loads((out / "track.json").read_text())
    assert doc["model"] == MODEL and doc["model_id"] == codes.model_id
    assert doc["frames"] == FRAMES and doc["invalid_frames"] == list(BLANK)
    assert sorted(doc["files"]) == ["codes", "meshes", "overlay", "summary"]
    assert codes.identity.shape == (65,) and codes.expression.shape == (FRAMES, 15)
    assert codes.noise.shape == (FRAMES, 5) and codes.rotation.shape == (FRAMES, 3, 3)
    np.testing.assert_array_equal(codes.frame_index, np.arange(FRAMES))
    np.testing.assert_allclose(codes.time, np.arange(FRAMES) / seq.fps)
    assert codes.valid.sum() == FRAMES - len(BLANK) and not codes.valid[list(BLANK)].any()
    assert np.isnan(codes.landmark_rms[list(BLANK)]).all() and (codes.landmark_rms[codes.valid] < 5).all()
    # invalid frames: codes interpolated in time between the neighbouring valid frames
    a, b = BLANK[0] - 1, BLANK[-1] + 1
    for k in BLANK:
        w = (k - a) / (b - a)
        np.testing.assert_allclose(codes.expression[k], (1 - w) * codes.expression[a] + w * codes.expression[b],
                                   atol=1e-9)
    assert len(list((out / "meshes").glob("frame_*.ply"))) == FRAMES
    ov = open_frames(out / "overlay.mp4")
    assert len(ov) == FRAMES and ov.size == seq.frames.shape[1:3]
    assert not list(out.glob(".*"))  # no temporary file left


def test_track_accuracy_against_the_truth(tracked, rendered, dec):
    """Per-frame vertex error, one identity, the head pose, each against the rendered truth."""
    from fitface.api.track import sequence_vertices

    _, codes = tracked
    seq, _ = rendered
    ok = codes.valid
    v = sequence_vertices(dec, codes, photo_frame=False)  # (T, V, 3) model frame, mm
    err = aligned_rmse(v[ok], seq.vertices[ok])
    mean_face = aligned_rmse(np.repeat(dec.vertices(np.zeros((1, dec.latent_dim))), ok.sum(), 0), seq.vertices[ok])
    assert err.mean() < RMSE_MEAN_MM and err.max() < RMSE_MAX_MM
    assert err.mean() < 0.85 * mean_face.mean()
    # one identity code: every frame decodes with the same identity block
    z = codes.z(dec.layout)
    assert np.ptp(z[:, dec.layout.slice("identity")], axis=0).max() == 0.0
    # the neutral face of the fitted identity is nearer the true one than the mean face is
    lay = dec.layout
    zi = np.zeros((2, lay.dim))
    zi[0, lay.slice("identity")] = codes.identity
    zi[1, lay.slice("identity")] = seq.z[0, lay.slice("identity")]
    n = dec.vertices(zi)
    assert aligned_rmse(n[:1], n[1:])[0] < aligned_rmse(dec.vertices(np.zeros((1, lay.dim))), n[1:])[0]
    # head pose: the fitted rotation is the camera's within 6 degrees in every valid frame
    ang = [np.degrees(np.arccos(np.clip((np.trace(codes.rotation[k] @ seq.cameras[k].rotation.T) - 1) / 2, -1, 1)))
           for k in np.flatnonzero(ok)]
    assert max(ang) < 6.0


def test_sequence_jitter_below_fitting_each_frame_alone(tracked, rendered, dec):
    """Mean landmark acceleration (px/frame^2) of the sequence against independent per-frame fits."""
    from fitface.api.photo_capture import mediapipe_rows
    from fitface.landmarks.lift_video import lift_frames

    _, codes = tracked
    _, path = rendered
    rows = dec.landmark_rows("ibug68")
    run = slice(0, BLANK[0])  # the valid run before the blank frames

    def accel(z, transform):
        return mean_acceleration(transform.apply(dec.points(z, rows).astype(np.float64))[..., :2])

    seq_acc = accel(codes.z(dec.layout)[run], _slice(codes.transform(), run))
    lifted = lift_frames((f.image for f in open_frames(path)), mediapipe_rows(dec))
    alone = fit_landmarks_2d(dec, lifted.points[run], "mediapipe",
                             FitConfig(lam=30.0, steps=100, init="zero", history_every=0))
    alone_acc = accel(alone.z, alone.transform)
    assert seq_acc < 0.88 * alone_acc, (seq_acc, alone_acc)


def _slice(t, sel):
    from fitface.fitting.similarity import Similarity

    return Similarity(t.scale[sel], t.rotation[sel], t.translation[sel])


def test_retarget_sequence_against_the_true_meshes(tracked, rendered, dec, tmp_path, capsys):
    """B performing the tracked expressions, against the true (B, expression(t)) meshes."""
    from fitface.io.codes import Codes, write_codes

    out, codes = tracked
    seq, _ = rendered
    lay = dec.layout
    zb = np.zeros(lay.dim)
    zb[lay.slice("identity")] = np.random.default_rng(7).standard_normal(lay.size("identity")) * 0.8
    parts = lay.split(zb)
    write_codes(tmp_path / "B" / "codes.json",
                Codes(dec.model_id, {k: np.asarray(v).tolist() for k, v in parts.items()}, None, "mm", {}, MODEL))
    anim = tmp_path / "anim"
    code, stdout, err = run_cli(["retarget", "--expression", out / "codes.npz", "--identity",
                                 tmp_path / "B" / "codes.json", "-o", anim, "--ply", "--json"], capsys)
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["frames"] == FRAMES and doc["model"] == MODEL
    v = np.load(anim / "vertices.npy")
    assert v.shape == (FRAMES, dec.num_vertices, 3) and v.dtype == np.float32
    assert len(list((anim / "frames").glob("*.ply"))) == FRAMES
    assert len(open_frames(anim / "preview.mp4")) == FRAMES
    truth_z = seq.z.copy()
    truth_z[:, lay.slice("identity")] = zb[lay.slice("identity")]
    truth = dec.vertices(truth_z)  # (T, V, 3) B with the true expressions, model frame
    ok = codes.valid
    err_rt = np.sqrt(((v - truth) ** 2).sum(-1).mean(-1))[ok]
    err_none = np.sqrt(((dec.vertices(zb[None]) - truth) ** 2).sum(-1).mean(-1))[ok]
    moving = err_none > 1.0  # frames with a visible expression
    assert moving.sum() > 20
    assert err_rt[moving].mean() < 0.7 * err_none[moving].mean(), (err_rt[moving].mean(), err_none[moving].mean())


# ------------------------------------------------------------------------------ bad input
def test_bad_inputs_exit_codes_and_nothing_written(tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    folder = tmp_path / "nothing"
    folder.mkdir()
    import cv2

    no_frames = tmp_path / "no_frames.mp4"  # a container OpenCV wrote, without a frame
    w = cv2.VideoWriter(str(no_frames), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    w.release()
    for src in (bad, empty, folder, tmp_path / "missing.mp4", no_frames):
        out = tmp_path / f"out_{src.name}"
        code, _, err = run_cli(["track", src, "-o", out, "--no-progress"], capsys)
        assert code == 2, err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert not out.exists()
    code, _, err = run_cli(["track", bad.parent / "x.mp4", "-o", tmp_path / "o", "--fps", "-1"], capsys)
    assert code == 2


def test_unreadable_video_is_one_line_in_a_real_process(tmp_path):
    """FFmpeg inside OpenCV writes to file descriptor 2 itself ("moov atom not found"), which
    capsys cannot see: a real process's stderr must still be fitface's one line."""
    import subprocess
    import sys

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_FFMPEG_LOGLEVEL"}
    p = subprocess.run([sys.executable, "-m", "fitface", "track", str(bad), "-o", str(tmp_path / "out")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2
    assert p.stderr.splitlines() == [f"error: {bad}: not a readable video"], p.stderr


def test_no_face_at_all_exits_3(tmp_path, capsys):
    path = tmp_path / "grey.mp4"
    write_video(path, [np.full((240, 320, 3), 110, np.uint8)] * 6, 10.0)
    out = tmp_path / "out"
    code, _, err = run_cli(["track", path, "-o", out, "--no-progress"], capsys)
    assert code == 3 and "no face" in err and err.count("\n") == 1, err
    assert not out.exists()


def test_python_api_on_a_folder_of_frames(rendered, dec, tmp_path):
    """``fitface.track`` mirrors the CLI: a folder of frames, --fps / --start / --end, no overlay;
    ``fitface.retarget`` with a codes.npz is the sequence retarget."""
    import fitface
    from fitface.io.image import write_png

    seq, _ = rendered
    for k in range(24):
        write_png(tmp_path / "frames" / f"f{k}.png", seq.frames[k])
    res = fitface.track(tmp_path / "frames", tmp_path / "out", fps=15.0, start=0.1, end=0.7, overlay=False)
    # a folder plays at 30 fps: frames 3..20, every other one
    np.testing.assert_array_equal(res.codes.frame_index, np.arange(3, 21, 2))
    assert res.codes.valid.all() and sorted(res.files) == ["codes", "summary"]
    assert not (tmp_path / "out" / "overlay.mp4").exists()
    assert set(res.timings) >= {"mediapipe", "fit", "total"} and set(res.cpu_timings) == set(res.timings)
    assert res.vertices(dec).shape == (9, dec.num_vertices, 3)
    out = fitface.retarget(tmp_path / "out" / "codes.npz", _b_codes(dec, tmp_path), out=tmp_path / "anim")
    assert out.vertices.shape == (9, dec.num_vertices, 3) and (tmp_path / "anim" / "preview.mp4").is_file()


def _b_codes(dec, folder):
    from fitface.io.codes import Codes, write_codes

    lay = dec.layout
    z = np.zeros(lay.dim)
    parts = {k: np.asarray(v).tolist() for k, v in lay.split(z).items()}
    write_codes(folder / "b.json", Codes(dec.model_id, parts, None, "mm", {}, MODEL))
    return folder / "b.json"


def test_retarget_sequence_onto_a_fit_with_a_transform(tracked, dec, tmp_path):
    """B from a real fit carries a transform: every frame is placed in B's capture frame
    (crashed with `points: expected shape (1, *, 3)` before)."""
    import fitface
    from fitface.fitting.similarity import Similarity
    from fitface.geometry.camera import rotation_yaw_pitch
    from fitface.io.codes import Codes, write_codes

    out, codes = tracked
    lay = dec.layout
    parts = {k: np.asarray(v).tolist() for k, v in lay.split(np.zeros(lay.dim)).items()}
    tb = Similarity(np.array([0.001]), rotation_yaw_pitch(20.0, -10.0, 5.0)[None], np.array([[0.1, 1.5, 0.3]]))
    write_codes(tmp_path / "b.json", Codes(dec.model_id, parts, tb.to_json(), "m", {}, MODEL))
    res = fitface.retarget(out / "codes.npz", tmp_path / "b.json")
    model = fitface.retarget(out / "codes.npz", tmp_path / "b.json", model_frame=True)
    assert res.unit == "m" and res.vertices.shape == model.vertices.shape == (len(codes.expression),
                                                                                dec.num_vertices, 3)
    np.testing.assert_allclose(res.vertices, tb.repeat(len(res.vertices)).apply(model.vertices), atol=1e-9)
