"""mediapipe points, detection and the model's "mediapipe" landmark set (correspondence + CLI)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mediapipe")

from model_builders import small_model

from fitface.cli import main
from fitface.data.procedural import template_mesh, template_vertices
from fitface.errors import InputError
from fitface.geometry.camera import frame_mesh
from fitface.geometry.render import render_shaded
from fitface.landmarks import mediapipe_points as mpp
from fitface.landmarks.correspondence import (
    INDICES_KEY,
    SET_NAME,
    build_mediapipe_set,
    mediapipe_indices,
)
from fitface.landmarks.mediapipe_mesh import FaceMeshDetector, detect_faces
from fitface.models.model_file import add_landmark_set, read_metadata


@pytest.fixture(scope="module")
def template():
    return template_vertices(), template_mesh().faces


@pytest.fixture(scope="module")
def correspondence(template):
    return build_mediapipe_set(*template)


def test_point_constants_match_installed_mediapipe():
    from mediapipe.python.solutions import face_mesh_connections as c

    oval = {i for e in c.FACEMESH_FACE_OVAL for i in e}
    assert set(mpp.FACE_OVAL) == oval and len(mpp.FACE_OVAL) == len(oval) == 36
    iris = {i for e in c.FACEMESH_IRISES for i in e}
    assert iris <= set(mpp.IRIS)
    assert len(mpp.CANDIDATE_INDICES) == 468 - 36
    assert not set(mpp.CANDIDATE_INDICES) & (oval | set(mpp.IRIS))
    left_eye = {i for e in c.FACEMESH_LEFT_EYE for i in e}
    assert {mpp.LEFT_EYE_INNER, mpp.LEFT_EYE_OUTER} <= left_eye
    with pytest.raises(ValueError):
        mpp.check_indices([1, 1])
    with pytest.raises(ValueError):
        mpp.check_indices([0, 478])


def test_detect_points_on_rendered_template(template):
    v, f = template
    cam = frame_mesh(v, 400)
    img = render_shaded(v, f, camera=cam, background=(40, 40, 40)).image
    faces = detect_faces(img)
    assert len(faces) == 1
    p = faces[0].points
    assert p.shape == (478, 3)
    # pixel convention: the nose tip lands within 6 px of the template's most forward point (x)
    # and between the eyes and the mouth (y grows downwards)
    tip = cam.project(v[np.argmax(v[:, 2])][None])[0][0]
    assert abs(p[mpp.NOSE_TIP, 0] - tip[0]) < 6.0
    assert p[mpp.RIGHT_EYE_OUTER, 1] < p[mpp.NOSE_TIP, 1] < p[mpp.MOUTH_RIGHT, 1]
    # the subject's right eye is on the image's left
    assert p[mpp.RIGHT_EYE_OUTER, 0] < p[mpp.LEFT_EYE_OUTER, 0]
    # z: the nose tip is nearer than the eye corners (smaller is nearer)
    assert p[mpp.NOSE_TIP, 2] < p[mpp.RIGHT_EYE_OUTER, 2]


def test_no_face_in_blank_image():
    assert detect_faces(np.full((200, 200, 3), 90, np.uint8)) == []
    with pytest.raises(ValueError, match="uint8"):
        detect_faces(np.zeros((10, 10), np.float32))


def test_tasks_model_errors(tmp_path):
    with pytest.raises(InputError, match="no such mediapipe model"):
        FaceMeshDetector(tmp_path / "missing.task")
    bad = tmp_path / "bad.task"
    bad.write_bytes(b"not a model")
    with pytest.raises(InputError, match="not a usable mediapipe"):
        FaceMeshDetector(bad)


def test_correspondence_set(template, correspondence):
    v, f = template
    c = correspondence
    n = len(c.indices)
    assert 300 <= n <= 432  # measured 372 on the procedural template
    assert np.all(np.diff(c.indices) > 0)
    assert not set(c.indices.tolist()) & set(mpp.FACE_OVAL)
    assert c.landmark_set.name == SET_NAME and len(c.landmark_set) == n
    assert np.allclose(c.landmark_set.bary.sum(1), 1.0) and (c.landmark_set.bary >= 0).all()
    assert (c.support >= 3).all()
    # views agree: spread well below the inlier radius (3 % of a ~140 mm face)
    assert np.median(c.spread) < 2.5
    pts = c.landmark_set.points(v, f)
    k = {int(i): j for j, i in enumerate(c.indices)}
    nose = 4  # just above the tip (the tip, 1, is dropped on this template: the side views disagree)
    # anatomy: the nose tip point is the most forward of the kept nose points, eyes above mouth
    assert pts[k[nose], 2] > pts[k[mpp.RIGHT_EYE_OUTER], 2] + 10.0
    assert pts[k[mpp.RIGHT_EYE_OUTER], 0] < 0 < pts[k[mpp.LEFT_EYE_OUTER], 0]
    assert pts[k[mpp.MOUTH_RIGHT], 1] < pts[k[nose], 1] < pts[k[mpp.RIGHT_EYE_OUTER], 1]
    # the surface points agree with the template's own ibug68 points where both name the same spot
    ib = template_mesh().landmark_sets["ibug68"].points(v, f)
    assert np.linalg.norm(pts[k[nose]] - ib[30]) < 6.0  # ibug 30: nose tip
    assert np.linalg.norm(pts[k[mpp.RIGHT_EYE_OUTER]] - ib[36]) < 6.0  # outer eye corners
    assert np.linalg.norm(pts[k[mpp.LEFT_EYE_OUTER]] - ib[45]) < 6.0


def test_store_and_cli(tmp_path, correspondence):
    model = small_model(tmp_path / "m.safetensors")
    doc = read_metadata(model)
    with pytest.raises(InputError, match="landmarks mediapipe"):
        mediapipe_indices(doc, model)
    out = tmp_path / "m2.safetensors"
    assert main(["landmarks-mediapipe-test"]) == 2  # unknown command: usage error
    from click.testing import CliRunner

    from fitface.cli.landmarks_mediapipe import mediapipe

    r = CliRunner().invoke(mediapipe, [str(model), "-o", str(out)], standalone_mode=False)
    assert r.exception is None, r.output
    doc2 = read_metadata(out)
    idx = mediapipe_indices(doc2, out)
    assert SET_NAME in doc2["landmark_sets"] and "ibug68" in doc2["landmark_sets"]
    np.testing.assert_array_equal(idx, correspondence.indices)  # deterministic
    from fitface.fitting.decoder import load_decoder

    dec = load_decoder(out)
    np.testing.assert_array_equal(dec.landmark_sets[SET_NAME].face_index, correspondence.landmark_set.face_index)
    # a second add without --replace is refused; the original file was not touched
    with pytest.raises(InputError, match="already has"):
        add_landmark_set(out, correspondence.landmark_set)
    assert SET_NAME not in read_metadata(model)["landmark_sets"]
    assert doc2["metadata"][INDICES_KEY] == idx.tolist()
