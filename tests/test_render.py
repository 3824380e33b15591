"""Tests of the cameras, the software renderer and image I/O."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from fitface.errors import InputError
from fitface.geometry.camera import Camera, frame_mesh, orthographic, rotation_look, rotation_yaw_pitch
from fitface.geometry.render import (
    DEFAULT_ALBEDO,
    DEFAULT_AMBIENT,
    DEFAULT_DIFFUSE,
    DEFAULT_GAMMA,
    DEFAULT_LIGHT,
    draw_points,
    locate_points,
    render_normals,
    render_shaded,
    tile_images,
)
from fitface.io.image import read_image, write_png


def _plane(n=8, half=1.0):
    """A planar grid z = 0 facing +z (counter-clockwise seen from +z)."""
    xs = np.linspace(-half, half, n + 1)
    gx, gy = np.meshgrid(xs, xs)
    v = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], 1)
    idx = np.arange(v.shape[0]).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]
    f = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    return v, f


@pytest.fixture(scope="module")
def sphere():
    m = trimesh.creation.icosphere(subdivisions=5, radius=1.0)
    return np.asarray(m.vertices), np.asarray(m.faces, dtype=np.int64)


def test_sphere_silhouette_area(sphere):
    v, f = sphere
    radius_px = 80.0
    cam = Camera(np.eye(3), radius_px, np.array([112.0, 112.0]), 224, 224)
    r = render_shaded(v, f, camera=cam)
    # the inscribed icosphere and pixel counting: within 1% of pi r^2
    area = np.pi * radius_px**2
    assert abs(r.mask.sum() - area) / area < 0.01
    # culling back faces of a closed mesh changes nothing visible
    rc = render_shaded(v, f, camera=cam, cull_backfaces=True)
    np.testing.assert_array_equal(rc.face_index, r.face_index)
    np.testing.assert_array_equal(rc.image, r.image)
    # the centre pixel sees the front (z > 0) of the sphere, with a normal towards the camera
    fi = r.face_index[112, 112]
    assert v[f[fi]][:, 2].mean() > 0.99
    assert r.normals[112, 112, 2] > 0.99


def test_plane_facing_camera_is_uniformly_lit():
    v, f = _plane()
    cam = orthographic((-1.5, 1.5, -1.5, 1.5), 64)
    r = render_shaded(v, f, camera=cam, background=(7, 8, 9))
    inside = r.mask
    assert inside.sum() == pytest.approx((2 / 3 * 64) ** 2, rel=0.05)
    colours = np.unique(r.image[inside], axis=0)
    assert colours.shape[0] == 1
    l = np.asarray(DEFAULT_LIGHT) / np.linalg.norm(DEFAULT_LIGHT)
    shade = (DEFAULT_AMBIENT + DEFAULT_DIFFUSE * l[2]) ** (1 / DEFAULT_GAMMA)
    expect = np.round(np.asarray(DEFAULT_ALBEDO) * shade * 255)
    np.testing.assert_array_equal(colours[0], expect)
    assert (r.image[~inside] == [7, 8, 9]).all()
    # the opposite winding is lit the same (two-sided), and darker when light comes from the side
    np.testing.assert_array_equal(render_shaded(v, f[:, ::-1], camera=cam).image, render_shaded(v, f, camera=cam).image)
    side = render_shaded(v, f, camera=cam, light=(1.0, 0.0, 0.2)).image[inside]
    assert side.astype(int).sum() < r.image[inside].astype(int).sum()


def test_normal_map_of_plane_facing_camera():
    v, f = _plane()
    r = render_normals(v, f, 48)
    inside = r.mask
    assert inside.mean() > 0.5
    px = r.image[inside].astype(int)
    assert (np.abs(px - np.array([127.5, 127.5, 255.0])) <= 0.5).all()
    assert (r.image[~inside] == 0).all()
    # tilted by yaw 30 degrees: the normal's x component becomes sin(30)
    r = render_normals(v, f, 48, camera=frame_mesh(v, 48, yaw=30.0))
    np.testing.assert_allclose(r.normals[r.mask].mean(0), [0.5, 0.0, np.cos(np.pi / 6)], atol=1e-9)


def test_camera_conventions():
    np.testing.assert_allclose(rotation_look((0, 0, -1)), np.eye(3), atol=1e-15)
    np.testing.assert_allclose(rotation_yaw_pitch(0, 0), np.eye(3))
    # looking along -x from +x: rotation_look sends the world +x axis to camera +z
    np.testing.assert_allclose(rotation_look((-1, 0, 0)) @ [1, 0, 0], [0, 0, 1], atol=1e-15)
    nose = np.array([0.0, 0.0, 1.0])
    assert (rotation_yaw_pitch(yaw=20) @ nose)[0] > 0  # positive yaw: face turns to image right
    assert (rotation_yaw_pitch(pitch=20) @ nose)[1] < 0  # positive pitch: face turns down
    cam = Camera(rotation_yaw_pitch(15, -10, 5), 37.0, np.array([50.0, 60.0]), 120, 100)
    pts = np.random.default_rng(0).normal(size=(20, 3))
    xy, depth = cam.project(pts)
    np.testing.assert_allclose(cam.unproject(xy, depth), pts, atol=1e-12)
    # y up in the world is up in the image (smaller row); z towards the viewer is nearer
    xy, depth = Camera(np.eye(3), 10.0, np.zeros(2), 10, 10).project(np.array([[0, 1.0, 0], [0, 0, 1.0]]))
    assert xy[0, 1] < 0 and depth[1] < 0
    with pytest.raises(ValueError, match="rotation"):
        Camera(np.ones((3, 3)), 1.0, np.zeros(2), 10, 10)


@pytest.mark.parametrize("yaw,pitch", [(0, 0), (35, 0), (-60, 20), (90, -45)])
def test_frame_mesh_keeps_mesh_inside(sphere, yaw, pitch):
    v = sphere[0] * np.array([3.0, 1.5, 1.0]) + np.array([10.0, -4.0, 2.0])
    margin = 0.1
    cam = frame_mesh(v, (90, 160), yaw=yaw, pitch=pitch, margin=margin)
    xy, _ = cam.project(v)
    eps = 1e-9
    assert (xy[:, 0] >= 160 * margin - eps).all() and (xy[:, 0] <= 160 * (1 - margin) + eps).all()
    assert (xy[:, 1] >= 90 * margin - eps).all() and (xy[:, 1] <= 90 * (1 - margin) + eps).all()
    # tight on at least one axis, and centred
    span = xy.max(0) - xy.min(0)
    assert np.isclose(span[0], 160 * (1 - 2 * margin)) or np.isclose(span[1], 90 * (1 - 2 * margin))
    np.testing.assert_allclose((xy.max(0) + xy.min(0)) / 2, [80, 45], atol=1e-9)


def test_locate_points_maps_pixels_back_to_the_surface(sphere):
    v, f = sphere
    r = render_shaded(v, f, 96)
    rows, cols = np.nonzero(r.mask)
    centres = np.stack([cols + 0.5, rows + 0.5], 1).astype(float)
    sp = locate_points(r, centres, v, f)
    assert sp.valid.all()
    np.testing.assert_array_equal(sp.face_index, r.face_index[rows, cols])
    np.testing.assert_allclose(sp.bary, r.bary[rows, cols], atol=1e-9)
    # sub-pixel points: the surface point projects back onto the image point
    rng = np.random.default_rng(3)
    pts = rng.uniform(20, 76, size=(200, 2))
    sp = locate_points(r, pts, v, f)
    assert sp.valid.all()
    surf = (sp.bary[:, :, None] * v[f[sp.face_index]]).sum(1)
    xy, _ = r.camera.project(surf)
    np.testing.assert_allclose(xy, pts, atol=1e-9)
    assert (surf[:, 2] > 0).all()  # the visible (front) side
    # background and off-image points are invalid
    sp = locate_points(r, np.array([[1.0, 1.0], [-50.0, 10.0], [np.nan, 3.0]]), v, f)
    assert not sp.valid.any()


def test_draw_points_and_tiles():
    img = np.zeros((40, 50, 3), np.uint8)
    out = draw_points(img, np.array([[10.5, 20.5], [np.nan, 1.0]]), color=(255, 0, 0), radius=3)
    assert (img == 0).all()  # a copy
    np.testing.assert_array_equal(out[20, 10], [255, 0, 0])
    assert out[..., 1:].max() == 0 and out[0, 0, 0] == 0
    grid = tile_images([img, out, img[:20]], labels=["a", "b", "c"], ncols=2, pad=2)
    assert grid.dtype == np.uint8 and grid.shape[1] == 2 * 50 + 3 * 2 and grid.shape[0] > 2 * 40
    with pytest.raises(ValueError, match="labels"):
        tile_images([img], labels=["a", "b"])


def test_png_round_trip(tmp_path, sphere):
    img = render_shaded(*sphere, (30, 40)).image
    img[0, 0] = (255, 0, 0)  # check the channel order
    p = tmp_path / "sub" / "a.png"
    write_png(p, img)
    back = read_image(p)
    np.testing.assert_array_equal(back, img)
    np.testing.assert_array_equal(back[0, 0], [255, 0, 0])
    assert [x.name for x in p.parent.iterdir()] == ["a.png"]  # no temp file left
    write_png(tmp_path / "g.png", img[..., 0])
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), np.repeat(img[..., :1], 3, 2))
    with pytest.raises(ValueError, match="image"):
        write_png(tmp_path / "f.png", img.astype(np.float32))


def test_read_image_errors(tmp_path):
    with pytest.raises(InputError, match="no such file") as e:
        read_image(tmp_path / "missing.png")
    assert e.value.path.endswith("missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(InputError, match="not a readable image"):
        read_image(tmp_path / "text.png")
    with pytest.raises(InputError, match="not a file"):
        read_image(tmp_path)
