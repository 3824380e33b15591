"""Photos are captures of the API like landmark files: ``fitface.fit(photo)``, ``fitface.fit_batch``
(folders and lists), freeze and sequences for photos, the CLI as a thin layer over them, and one-line
refusals of the options a photo (or a 3D capture) cannot take.

The photographs are scikit-image's astronaut (and its mirror image) and two rendered procedural
faces side by side; the model is the built-in ``procedural`` one (it has a ``"mediapipe"`` set).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from input_checks import run_cli

pytest.importorskip("mediapipe")

import fitface  # noqa: E402
from fitface.errors import InputError  # noqa: E402
from fitface.io.image import write_png  # noqa: E402
from fitface.landmarks.photo_fit import PHOTO_LAMBDA, fit_photo  # noqa: E402

MODEL = "procedural"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder with astronaut.png and mirror.png (the same photograph flipped left-right)."""
    skdata = pytest.importorskip("skimage.data")
    d = tmp_path_factory.mktemp("photos")
    img = skdata.astronaut()
    write_png(d / "astronaut.png", img)
    write_png(d / "mirror.png", np.ascontiguousarray(img[:, ::-1]))
    return d


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory):
    """A photo of two rendered procedural faces, the larger on the left."""
    from fitface.data.procedural import NUM_IDENTITY_PARAMS, neutral_faces, template_mesh
    from fitface.geometry.render import render_shaded

    ids = np.random.default_rng(5).standard_normal((2, NUM_IDENTITY_PARAMS))
    verts = neutral_faces(ids)
    f = template_mesh().faces
    canvas = np.full((300, 560, 3), 60, np.uint8)
    canvas[:, :300] = render_shaded(verts[0], f, size=300, background=(60, 60, 60)).image
    canvas[40:260, 320:540] = render_shaded(verts[1], f, size=220, background=(60, 60, 60)).image
    path = tmp_path_factory.mktemp("two") / "two.png"
    write_png(path, canvas)
    return path


def test_fit_takes_a_photo_like_any_capture(photos, tmp_path, capsys):
    photo = photos / "astronaut.png"
    res = fitface.fit(photo, model=MODEL, steps=120, out_dir=tmp_path / "api")
    assert isinstance(res, fitface.api.FitResult)
    assert res.photo is not None and res.photo.face == 0 and res.photo.depth == "2d"
    assert res.unit is None and res.codes.extra["photo"] == str(photo) and res.codes.extra["lambda"] == PHOTO_LAMBDA
    assert res.landmark_rms < 5.0  # pixels, on a 512 x 512 photograph
    assert sorted(p.name for p in (tmp_path / "api").iterdir()) == ["codes.json", "fit.ply", "preview.png"]
    assert res.preview().shape == (512, 512, 3)  # the fit over the photo
    # the CLI is a thin layer over fitface.fit: the same codes.json
    code, _, err = run_cli(["fit", photo, "-m", MODEL, "--steps", "120", "-o", tmp_path / "cli"], capsys)
    assert code == 0, err
    assert (json.loads((tmp_path / "cli" / "codes.json").read_text())
            == json.loads((tmp_path / "api" / "codes.json").read_text()))
    # the photo helper of fitface.landmarks is the same fit
    np.testing.assert_array_equal(fit_photo(photo, model=MODEL, steps=120)[0].z, res.z)
    # 3D weak perspective through the same call
    res3 = fitface.fit(photo, model=MODEL, steps=60, depth="3d")
    assert res3.codes.extra["depth"] == "3d" and np.isfinite(res3.z).all()


def test_every_face_of_a_photo(two_faces, tmp_path):
    res = fitface.fit(two_faces, model=MODEL, steps=60, all_faces=True, out_dir=tmp_path / "o", preview=False)
    assert [r.name for r in res] == ["two-face0", "two-face1"] and [r.photo.face for r in res] == [0, 1]
    assert res[0].fitted_landmarks[:, 0].mean() < 300 < res[1].fitted_landmarks[:, 0].mean()  # largest first
    assert (tmp_path / "o" / "face0" / "codes.json").is_file() and (tmp_path / "o" / "face1" / "fit.ply").is_file()
    batch = fitface.fit_batch([two_faces], tmp_path / "b", model=MODEL, steps=60, all_faces=True)
    assert batch.complete and [r.name for r in batch.results] == ["two-face0", "two-face1"]
    assert (tmp_path / "b" / "two" / "face1" / "codes.json").is_file()


def test_freeze_sequence_and_shards_work_for_photos(photos, tmp_path, capsys):
    a = fitface.fit(photos / "astronaut.png", model=MODEL, steps=60, out_dir=tmp_path / "a", preview=False)
    b = fitface.fit(photos / "mirror.png", model=MODEL, steps=60, freeze={"identity": tmp_path / "a" / "codes.json"})
    assert b.codes.codes["identity"] == a.codes.codes["identity"]
    assert b.codes.codes["expression"] != a.codes.codes["expression"]
    # a folder of photos as the frames of one subject: one identity
    code, _, err = run_cli(["batch", photos, "-m", MODEL, "--steps", "60", "--sequence", "--no-progress",
                            "-o", tmp_path / "seq"], capsys)
    assert code == 0, err
    docs = [json.loads((tmp_path / "seq" / n / "codes.json").read_text()) for n in ("astronaut", "mirror")]
    assert docs[0]["codes"]["identity"] == docs[1]["codes"]["identity"]
    assert docs[0]["codes"]["expression"] != docs[1]["codes"]["expression"]
    assert json.loads((tmp_path / "seq" / "summary.json").read_text())["sequence"] is True
    # shards split a photo folder like any other
    code, _, err = run_cli(["batch", photos, "-m", MODEL, "--steps", "20", "--shard", "2/2", "--no-progress",
                            "-o", tmp_path / "sh"], capsys)
    assert code == 0, err
    assert [c["name"] for c in json.loads((tmp_path / "sh" / "summary-2-of-2.json").read_text())["captures"]] == [
        "mirror"]
    # a list of photos, in the order given
    batch = fitface.fit_batch([photos / "mirror.png", photos / "astronaut.png"], model=MODEL, steps=20)
    assert [r.name for r in batch.results] == ["mirror", "astronaut"] and batch.complete
    assert all(r.unit is None and r.codes.extra["frame"].startswith("photo") for r in batch.results)


@pytest.mark.parametrize("argv, match", [
    (["--unit", "mm"], "--unit"),
    (["--refine-surface"], "--refine-surface"),
    (["--landmark-set", "ibug68"], "--landmark-set"),
    (["-l", "lm.txt"], "--landmarks"),
])
def test_photo_refuses_what_it_cannot_take(photos, tmp_path, capsys, argv, match):
    code, stdout, err = run_cli(["fit", photos / "astronaut.png", "-m", MODEL, "-o", tmp_path / "o", *argv], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], err
    assert stdout == "" and not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv, match", [
    (["fit", "-l", "{lm}", "--all"], "--all is for photos"),
    (["fit", "-l", "{lm}", "--depth", "3d"], "--depth is for photos"),
    (["batch", "{caps}", "--mediapipe-model", "x.task"], "--mediapipe-model is for photos"),
    (["batch", "{photos}", "--sequence", "--all"], "cannot take --all"),
    (["batch", "{photos}", "--unit", "cm"], "--unit"),
])
def test_photo_options_refused_where_they_do_not_apply(photos, tmp_path, capsys, argv, match):
    caps = tmp_path / "caps"
    caps.mkdir()
    np.savetxt(caps / "a.txt", np.random.default_rng(0).normal(size=(68, 3)) * 50)
    names = {"lm": caps / "a.txt", "caps": caps, "photos": photos}
    argv = [a.format(**names) for a in argv]
    code, _, err = run_cli([*argv, "-m", MODEL, "-o", tmp_path / "o"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and match in lines[0], err
    assert not (tmp_path / "o").exists()


def test_api_refusals_are_input_errors(photos):
    with pytest.raises(InputError, match="without a scan"):
        fitface.fit(photos / "astronaut.png", photos / "mirror.png", model=MODEL)
    with pytest.raises(InputError, match="photos or 3D landmark captures, not both"):
        fitface.fit_batch([photos / "astronaut.png", photos / "a.txt"], model=MODEL)
    with pytest.raises(InputError, match="--depth: expected one of"):
        fitface.fit(photos / "astronaut.png", model=MODEL, depth="4d")
