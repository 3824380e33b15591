"""``fitface export``: GLB rigs of fits and tracks (fitface.api.export, fitface.io.gltf).

Small inputs: fits of landmarks decoded from the built-in models, and 4-frame tracks built
directly as :class:`fitface.api.track.TrackCodes` (no video). The ICT tests need
../shared/data/ict_face_light.npz and skip without it; the Blender test needs ``blender``
(Debian: ``apt-get install -y blender``) and skips without it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fitface.api.export import build_export, export_result, glb_of
from fitface.api.inputs import load_fit_model
from fitface.errors import InputError
from fitface.io.gltf import accessor_array, read_glb, srgb_to_linear

REPO = Path(__file__).resolve().parents[1]
#: GLB positions are float32: ~1e-7 relative, so ~2e-5 mm on a face 100 mm from the origin.
FLOAT32_MM = 1e-3


def _rms(a, b) -> float:
    return float(np.sqrt(np.mean(np.sum((np.asarray(a) - np.asarray(b)) ** 2, axis=-1))))


def _glb_mesh(data: bytes, weights=None):
    """(base (V, 3), targets (K, V, 3), names, initial weights (K,), gltf) of a GLB's one mesh."""
    g = read_glb(data)
    prim = g.meshes[0].primitives[0]
    base = accessor_array(g, prim.attributes.POSITION)
    pos = [t["POSITION"] if isinstance(t, dict) else t.POSITION for t in (prim.targets or [])]  # dicts once parsed
    targets = np.stack([accessor_array(g, i) for i in pos]) if pos else np.zeros((0,) + base.shape)
    names = g.meshes[0].extras["targetNames"] if g.meshes[0].extras else []
    return base, targets, names, np.asarray(g.meshes[0].weights or []), g


def _animation(g):
    """{path: (times (T,), values)} of the GLB's one animation."""
    out = {}
    for ch in g.animations[0].channels:
        s = g.animations[0].samplers[ch.sampler]
        out[ch.target.path] = (accessor_array(g, s.input), accessor_array(g, s.output))
    return out


def _fit_dir(tmp, model, unit="mm", seed=0, scan=False):
    """A fit folder of ``fitface fit`` on landmarks decoded from ``model`` (and optionally a scan)."""
    from fitface.api import fit
    from fitface.io.mesh import save_mesh

    dec = load_fit_model(model)
    rng = np.random.default_rng(seed)
    z = np.zeros((1, dec.layout.dim))
    z[0, dec.layout.slice("identity")] = 0.5 * rng.standard_normal(dec.layout.size("identity"))
    z[0, dec.layout.slice("expression")] = rng.standard_normal(dec.layout.size("expression"))
    factor = {"mm": 1.0, "m": 1e-3}[unit]
    lm = dec.points(z, dec.landmark_rows("ibug68"))[0] * factor
    scan_path = None
    if scan:
        scan_path = tmp / "scan.ply"
        save_mesh(scan_path, np.asarray(dec.vertices(z)[0], dtype=np.float64) * factor, dec.faces)
    out = tmp / f"fit_{model}_{unit}"
    fit(lm, str(scan_path) if scan else None, model=model, unit=unit, out_dir=out, preview=False)
    return out


def _track_codes(model, frames=4, fps=25.0, seed=1):
    from scipy.spatial.transform import Rotation

    from fitface.api.track import TrackCodes

    dec = load_fit_model(model)
    lay = dec.layout
    rng = np.random.default_rng(seed)
    angles = np.c_[np.linspace(-0.3, 0.3, frames), np.linspace(0.1, -0.1, frames), np.linspace(0, 0.05, frames)]
    noise = lay.size("noise") if "noise" in lay.names else 0
    return TrackCodes(
        identity=0.5 * rng.standard_normal(lay.size("identity")),
        expression=rng.standard_normal((frames, lay.size("expression"))),
        noise=0.1 * rng.standard_normal((frames, noise)), scale=np.linspace(2.0, 2.2, frames),
        rotation=Rotation.from_euler("YXZ", angles).as_matrix(), translation=rng.normal(0, 30, (frames, 3)) + [320, -240, 0],
        landmark_rms=np.ones(frames), frame_index=np.arange(frames), time=np.arange(frames) / fps,
        valid=np.ones(frames, bool), model_id=dec.model_id, model=model, source=None)


def _track_dir(tmp, model, **kw):
    out = tmp / f"track_{model}"
    out.mkdir()
    codes = _track_codes(model, **kw)
    codes.save(out / "codes.npz")
    return out, codes


def _fitface_track_meshes(model, codes):
    """fitface's own meshes of a track in the export's frame: photo frame / scale (mm)."""
    from fitface.api.track import sequence_vertices

    return sequence_vertices(load_fit_model(model), codes) / codes.scale[:, None, None]


# ----------------------------------------------------------------------------- fits
@pytest.fixture(scope="module")
def ict_fit(ict_path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ict_fit")
    return _fit_dir(tmp, "ict", unit="m")


def test_fit_glb_targets_and_mesh(ict_fit, ict_path, tmp_path):
    from fitface.arkit import ict_to_arkit_name
    from fitface.data.ict import load_ict
    from fitface.io.mesh import load_mesh

    res = export_result(ict_fit, tmp_path / "face.glb")
    assert res.kind == "fit" and res.basis == "ict" and res.unit == "m" and res.num_frames == 1
    assert (tmp_path / "face.glb").read_bytes() == res.glb
    base, targets, names, w0, g = _glb_mesh(res.glb)
    ict_names = load_ict(ict_path).expression_names
    assert len(names) == len(targets) == 55 and names == res.target_names
    assert names == [ict_to_arkit_name(n) for n in ict_names] and "eyeBlinkLeft" in names
    assert not g.animations  # a fit has no animation
    np.testing.assert_allclose(w0, res.weights[0], atol=1e-6)
    assert w0.min() >= 0 and w0.max() <= 1
    fitted = load_mesh(ict_fit / "fit.ply").vertices  # fitface's own mesh (capture frame, metres)
    glb_mesh = base + np.tensordot(w0, targets, axes=1)
    err = _rms(glb_mesh, fitted)
    assert abs(err - res.rms_mm[0]) < FLOAT32_MM * 1e-3  # metres
    # < 1.5 mm: the GAN's decoded expression (N(0, 1) code) against the ICT shapes' span (measured 0.71 mm)
    assert res.rms_mm[0] < 1.5e-3
    assert res.arkit.residual_rms_mm[0] == pytest.approx(res.rms_mm[0] * 1e3, rel=1e-6)


def test_fit_error_colours_are_linear(ict_path, tmp_path):
    from fitface.preview import error_colors

    d = _fit_dir(tmp_path, "ict-linear", scan=True)
    res = build_export(d, colors="error")
    assert res.vertex_error is not None and res.vertex_error.shape == (9409,) and res.error_scale > 0
    g = read_glb(res.glb)
    col = accessor_array(g, g.meshes[0].primitives[0].attributes.COLOR_0)
    np.testing.assert_allclose(col, srgb_to_linear(error_colors(res.vertex_error, res.error_scale)), atol=1e-6)
    assert g.meshes[0].primitives[0].attributes.COLOR_0 is not None


def test_linear_model_jacobian_is_exact(ict_path, tmp_path):
    d = _fit_dir(tmp_path, "ict-linear")
    res = build_export(d, basis="jacobian")
    assert res.basis == "jacobian" and len(res.target_names) == 15
    assert res.rms_mm[0] < 1e-3  # a linear model's expression directions are exact (float32 decode)


def test_procedural_fit_linearised_targets(tmp_path):
    d = _fit_dir(tmp_path, "procedural")
    res = build_export(d)
    assert res.basis == "jacobian" and res.arkit is None and res.num_vertices == 4285
    base, targets, names, w0, _ = _glb_mesh(res.glb)
    assert len(names) == 15
    from fitface.io.mesh import load_mesh

    err = _rms(base + np.tensordot(w0, targets, axes=1), load_mesh(d / "fit.ply").vertices)
    assert abs(err - res.rms_mm[0]) < FLOAT32_MM
    assert res.rms_mm[0] < 1.0  # mm: the GAN's linearisation at the identity (measured 0.036 mm)


def test_glb_of_writes_nothing(tmp_path):
    d = _fit_dir(tmp_path, "procedural")
    before = sorted(p.name for p in d.iterdir())
    data = glb_of(d)
    assert data[:4] == b"glTF" and sorted(p.name for p in d.iterdir()) == before


# ----------------------------------------------------------------------------- tracks
@pytest.fixture(scope="module")
def ict_track(ict_path, tmp_path_factory):
    return _track_dir(tmp_path_factory.mktemp("ict_track"), "ict")


def test_track_glb_animation_and_mesh(ict_track, tmp_path):
    folder, codes = ict_track
    res = export_result(folder, tmp_path / "t.glb", arkit=True, csv=True)
    assert res.kind == "track" and res.num_frames == 4 and res.fps == pytest.approx(25.0) and res.unit == "mm"
    base, targets, names, w0, g = _glb_mesh(res.glb)
    assert len(names) == 55
    anim = _animation(g)
    assert set(anim) == {"weights", "rotation", "translation"}
    times, weights = anim["weights"]
    assert len(times) == 4 and times[-1] == pytest.approx(3 / 25.0) and times[0] == 0  # (T - 1) / fps
    weights = weights.reshape(4, 55)
    assert weights.min() >= 0 and weights.max() <= 1
    from scipy.spatial.transform import Rotation

    rot = Rotation.from_quat(anim["rotation"][1]).as_matrix()
    truth = _fitface_track_meshes("ict", codes)
    for k in range(4):
        local = base + np.tensordot(weights[k], targets, axes=1)
        world = local @ rot[k].T + anim["translation"][1][k]
        assert abs(_rms(world, truth[k]) - res.rms_mm[k]) < FLOAT32_MM
    assert res.rms_mm.max() < 1.5  # mm; random N(0, 1) expression codes of the GAN (measured 0.46-0.67)
    # arkit.json and the CSV beside the GLB
    doc = json.loads((tmp_path / "t.arkit.json").read_text())
    assert len(doc["names"]) == 52 and np.shape(doc["weights"]) == (4, 52) and len(doc["residual_rms_mm"]) == 4
    lines = (tmp_path / "t.livelink.csv").read_text().splitlines()
    assert len(lines) == 5 and len(lines[0].split(",")) == 2 + 52 + 9
    assert [r.split(",")[0] for r in lines[1:]] == ["00:00:00:00.000", "00:00:00:01.000", "00:00:00:02.000",
                                                    "00:00:00:03.000"]


def test_track_arkit_target_set(ict_track):
    from fitface.arkit import ARKIT_NAMES

    folder, _ = ict_track
    res = build_export(folder, targets="arkit")
    assert res.target_names == list(ARKIT_NAMES)
    # the GLB's mesh with the 52 merged weights leaves what arkit_residual_rms_mm says
    np.testing.assert_allclose(res.rms_mm, res.arkit.arkit_residual_rms_mm, rtol=1e-6, atol=1e-9)


def test_procedural_track_pca(tmp_path):
    folder, codes = _track_dir(tmp_path, "procedural", frames=5)
    res = build_export(folder)
    assert res.basis == "pca" and res.arkit is None
    assert len(res.target_names) == 5  # min(16, rank): 5 frames -> 5 components, exact
    assert res.rms_mm.max() < 1e-3
    res3 = build_export(folder, pca_components=3)
    assert len(res3.target_names) == 3 and res3.rms_mm.max() > res.rms_mm.max()
    assert np.abs(res3.weights).max() <= 1 + 1e-9


# ----------------------------------------------------------------------------- bad input (CLI)
def _cli(args):
    import contextlib
    import io

    from fitface.cli import main

    err = io.StringIO()
    out = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


def test_cli_export_fit_writes_glb_and_arkit(ict_fit, tmp_path):
    code, out, err = _cli(["export", str(ict_fit), "-o", str(tmp_path / "face.glb")])
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face.arkit.json", "face.glb", "face.livelink.csv"]
    assert "RMS" in out


def test_cli_not_a_result_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = _cli(["export", str(tmp_path / "empty"), "-o", str(tmp_path / "x.glb")])
    assert code == 2 and err.count("\n") == 1 and err.startswith("error:") and "not a fit" in err
    assert not (tmp_path / "x.glb").exists()
    code, _, err = _cli(["export", str(tmp_path / "nothing"), "-o", str(tmp_path / "x.glb")])
    assert code == 2 and err.count("\n") == 1


def test_cli_arkit_without_ict_correspondence(tmp_path):
    folder, _ = _track_dir(tmp_path, "procedural")
    out = tmp_path / "out"
    code, _, err = _cli(["export", str(folder), "-o", str(out / "t.glb"), "--csv", str(out / "t.csv")])
    assert code == 2 and err.count("\n") == 1 and "ICT" in err
    assert not out.exists() or not any(out.iterdir())
    # without --csv/--arkit the same track exports (PCA targets, no ARKit files)
    code, _, err = _cli(["export", str(folder), "-o", str(out / "t.glb")])
    assert code == 0 and sorted(p.name for p in out.iterdir()) == ["t.glb"]


def test_cli_model_file_moved(tmp_path, model_path):
    """codes.json naming a model file that is gone (and no built-in model with its id)."""
    from model_builders import synthetic_capture

    model = tmp_path / "mine.safetensors"
    shutil.copy(model_path, model)
    _, _, lm, _, _ = synthetic_capture(model)
    from fitface.api import fit

    fit(lm, model=str(model), unit="mm", out_dir=tmp_path / "fit", preview=False)
    model.rename(tmp_path / "moved.safetensors")
    code, _, err = _cli(["export", str(tmp_path / "fit"), "-o", str(tmp_path / "x.glb")])
    assert code == 2 and err.count("\n") == 1 and "--model" in err
    assert not (tmp_path / "x.glb").exists()


def test_track_of_a_model_without_expression_block(tmp_path):
    folder, _ = _track_dir(tmp_path, "procedural")
    with np.load(folder / "codes.npz") as z:
        data = {k: z[k] for k in z.files}
    data["expression"] = data["expression"][:, :3]  # codes that do not fit the model
    np.savez(folder / "codes.npz", **data)
    with pytest.raises(InputError, match="expression codes have 3 numbers"):
        build_export(folder)


def test_api_refuses_bad_options(tmp_path):
    d = _fit_dir(tmp_path, "procedural")
    for kw in ({"basis": "nope"}, {"targets": "x"}, {"basis": "pca"}, {"colors": "error"}):
        with pytest.raises(InputError):
            build_export(d, **kw)
    with pytest.raises(InputError):
        export_result(d, tmp_path / "a.glb", arkit=True)
    assert not (tmp_path / "a.glb").exists()


# ----------------------------------------------------------------------------- Blender
BLENDER = shutil.which("blender")


@pytest.mark.skipif(BLENDER is None, reason="blender is not installed (Debian: apt-get install -y blender)")
def test_blender_imports_track_glb(ict_track, tmp_path):
    """Blender 3.4's own glTF importer: shape keys, frame range, evaluated mesh at frames 0 and 2."""
    folder, codes = ict_track
    res = export_result(folder, tmp_path / "t.glb")
    out = tmp_path / "blender.json"
    # Debian's Blender takes its Python from the python3 on PATH (Blender's importer needs numpy):
    # put this interpreter first, as an activated venv does; `make test` runs .venv/bin/python
    # without activating it, and /usr/bin/python3 has no numpy
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([BLENDER, "-b", "--factory-startup", "--python", str(REPO / "tests" / "blender_glb_check.py"),
                           "--", str(tmp_path / "t.glb"), "25", "0,2", str(out)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0 and out.is_file(), proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["shape_keys"] == res.target_names and len(doc["shape_keys"]) == 55
    assert doc["num_vertices"] == 9409 and doc["fps"] == pytest.approx(25.0)
    assert doc["ranges"]["shape_keys"] == [0.0, 3.0]  # frames t * fps: 4 frames at 25 fps
    assert doc["ranges"]["object"] == [0.0, 3.0]  # the head pose
    truth = _fitface_track_meshes("ict", codes)
    for f in (0, 2):
        err = _rms(np.asarray(doc["meshes"][str(f)]), truth[f])
        assert abs(err - res.rms_mm[f]) < 0.01, (f, err, res.rms_mm[f])


# ----------------------------------------------------------------------------- retargeted sequences
def test_retargeted_sequence(ict_track, tmp_path):
    """``fitface retarget --expression TRACK/codes.npz --identity FIT/codes.json``. (``model_frame``:
    retarget_sequence cannot yet apply B's single transform to T > 1 frames, Similarity.apply's
    batch check; the export handles a recorded transform like a fit's.)"""
    from fitface.api.sequence_retarget import retarget_sequence

    folder, _ = ict_track
    fit_dir = _fit_dir(tmp_path, "ict", unit="m", seed=4)
    anim = retarget_sequence(folder / "codes.npz", fit_dir / "codes.json", tmp_path / "anim", preview=False,
                             model_frame=True)
    res = export_result(tmp_path / "anim", tmp_path / "a.glb", arkit=True)
    assert res.kind == "retarget" and res.unit == "mm" and res.num_frames == 4 and res.basis == "ict"
    base, targets, names, _, g = _glb_mesh(res.glb)
    times, weights = _animation(g)["weights"]
    assert set(_animation(g)) == {"weights"}  # B's pose is baked into the vertices
    weights = weights.reshape(4, len(names))
    for k in range(4):
        err = _rms(base + np.tensordot(weights[k], targets, axes=1), anim.vertices[k])
        assert abs(err - res.rms_mm[k]) < FLOAT32_MM
    assert res.rms_mm.max() < 1.5  # mm
    assert (tmp_path / "a.arkit.json").is_file()
