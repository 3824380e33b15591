"""fitface.io.mesh: exact round trips, vertex order, cross-checks against trimesh, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from input_checks import assert_corruptions_raise_only_input_error, assert_one_line_naming

from fitface.errors import InputError
from fitface.io.mesh import Mesh, load_mesh, save_mesh

DATA = Path(__file__).parent / "data"


@pytest.fixture
def mesh() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random mesh whose coordinates need all 53 bits: (V=40, 3) float64, (F=60, 3), (V, 4) uint8."""
    rng = np.random.default_rng(7)
    v = rng.normal(size=(40, 3)) * np.array([1e-3, 1.0, 1e4])  # mixed magnitudes
    f = np.stack([rng.permutation(40)[:3] for _ in range(60)]).astype(np.int64)
    c = rng.integers(0, 256, size=(40, 4), dtype=np.uint8)
    return v, f, c


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("name,kw", [("m.ply", {}), ("m.ply", {"binary": False}), ("m.obj", {}), ("m.off", {})])
def test_round_trip_exact(tmp_path, mesh, name, kw):
    v, f, _ = mesh
    save_mesh(tmp_path / name, v, f, **kw)
    m = load_mesh(tmp_path / name)
    assert isinstance(m, Mesh)
    assert m.vertices.dtype == np.float64 and m.faces.dtype == np.int64
    np.testing.assert_array_equal(m.vertices, v)  # float64 exactly, same order
    np.testing.assert_array_equal(m.faces, f)
    assert m.vertex_colors is None


@pytest.mark.parametrize("name,kw", [("c.ply", {}), ("c.ply", {"binary": False}), ("c.obj", {}), ("c.off", {})])
def test_round_trip_colors(tmp_path, mesh, name, kw):
    v, f, c = mesh
    if name.endswith(".obj"):
        c = c.copy()
        c[:, 3] = 255  # OBJ stores RGB only
    save_mesh(tmp_path / name, v, f, c, **kw)
    m = load_mesh(tmp_path / name)
    np.testing.assert_array_equal(m.vertex_colors, c)
    np.testing.assert_array_equal(m.vertices, v)


def test_float_rgb_colors_become_opaque_uint8(tmp_path, mesh):
    v, f, _ = mesh
    rgb = np.linspace(0, 1, v.shape[0] * 3).reshape(-1, 3)
    save_mesh(tmp_path / "c.ply", v, f, rgb)
    got = load_mesh(tmp_path / "c.ply").vertex_colors
    np.testing.assert_array_equal(got[:, :3], np.rint(rgb * 255).astype(np.uint8))
    assert (got[:, 3] == 255).all()


def test_stl_round_trip_is_a_triangle_soup(tmp_path, mesh):
    v, f, _ = mesh
    save_mesh(tmp_path / "m.stl", v, f)
    m = load_mesh(tmp_path / "m.stl")
    # three vertices per face, in face order, at float32 precision
    np.testing.assert_array_equal(m.vertices, v[f].reshape(-1, 3).astype(np.float32).astype(np.float64))
    np.testing.assert_array_equal(m.faces, np.arange(3 * len(f)).reshape(-1, 3))


def test_point_cloud(tmp_path, mesh):
    v, _, _ = mesh
    save_mesh(tmp_path / "pc.ply", v, None)
    m = load_mesh(tmp_path / "pc.ply", require_faces=False)
    np.testing.assert_array_equal(m.vertices, v)
    assert m.faces.shape == (0, 3)
    with pytest.raises(InputError) as e:
        load_mesh(tmp_path / "pc.ply")
    assert_one_line_naming(e, tmp_path / "pc.ply", "no faces")


# ------------------------------------------------------------------ vertex order


def test_off_keeps_unreferenced_vertex():
    m = load_mesh(DATA / "square.off")
    np.testing.assert_array_equal(m.vertices, [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [9, 9, 9]])
    np.testing.assert_array_equal(m.faces, [[0, 1, 2], [0, 2, 3]])


def test_obj_keeps_order_across_seams_objects_and_negative_indices():
    m = load_mesh(DATA / "quad_seams.obj")
    # 5 positions exactly as written (trimesh would split at texture seams and drop vertex 4)
    np.testing.assert_array_equal(m.vertices, [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [9, 9, 9]])
    # the quad is fan-triangulated; 'f -4 -3 -1' is relative to the 5 vertices read so far
    np.testing.assert_array_equal(m.faces, [[0, 1, 2], [0, 2, 3], [1, 2, 4]])


def test_binary_ply_mixing_triangles_and_quads(tmp_path):
    v = np.arange(15, dtype="<f4").reshape(5, 3)
    header = (
        "ply\nformat binary_little_endian 1.0\nelement vertex 5\nproperty float x\nproperty float y\n"
        "property float z\nelement face 2\nproperty list uchar int vertex_indices\nend_header\n"
    ).encode()
    body = v.tobytes() + bytes([4]) + np.array([0, 1, 2, 3], "<i4").tobytes()
    body += bytes([3]) + np.array([0, 2, 4], "<i4").tobytes()
    (tmp_path / "mix.ply").write_bytes(header + body)
    m = load_mesh(tmp_path / "mix.ply")
    np.testing.assert_array_equal(m.faces, [[0, 1, 2], [0, 2, 3], [0, 2, 4]])
    np.testing.assert_array_equal(m.vertices, v)
    # the same truncated by one index is reported, not misread
    (tmp_path / "mixt.ply").write_bytes(header + body[:-4])
    with pytest.raises(InputError) as e:
        load_mesh(tmp_path / "mixt.ply")
    assert_one_line_naming(e, tmp_path / "mixt.ply", "truncated")


def test_big_endian_ply_with_extra_properties(tmp_path):
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=">f8")
    rec = np.zeros(3, dtype=[("x", ">f8"), ("nx", ">f4"), ("y", ">f8"), ("z", ">f8"), ("q", ">i2")])
    rec["x"], rec["y"], rec["z"] = v.T
    frec = np.zeros(1, dtype=[("n", ">u1"), ("i", ">u4", (3,)), ("flag", ">u1")])
    frec["n"], frec["i"] = 3, [0, 1, 2]
    header = (
        "ply\nformat binary_big_endian 1.0\ncomment extra properties\nelement vertex 3\n"
        "property double x\nproperty float nx\nproperty double y\nproperty double z\nproperty short q\n"
        "element face 1\nproperty list uchar uint vertex_indices\nproperty uchar flag\nend_header\n"
    ).encode()
    (tmp_path / "be.ply").write_bytes(header + rec.tobytes() + frec.tobytes())
    m = load_mesh(tmp_path / "be.ply")
    np.testing.assert_array_equal(m.vertices, v)
    np.testing.assert_array_equal(m.faces, [[0, 1, 2]])


# ------------------------------------------------------------------ cross-check against trimesh


def test_trimesh_reads_what_we_write(tmp_path, mesh):
    trimesh = pytest.importorskip("trimesh")
    v, f, _ = mesh
    for name in ("m.ply", "m.off", "m.obj"):
        save_mesh(tmp_path / name, v, f)
        ref = trimesh.load(tmp_path / name, force="mesh", process=False, maintain_order=True)
        np.testing.assert_array_equal(np.asarray(ref.vertices), v, err_msg=name)
        np.testing.assert_array_equal(np.asarray(ref.faces), f, err_msg=name)


def test_we_read_what_trimesh_writes(tmp_path, mesh):
    trimesh = pytest.importorskip("trimesh")
    v, f, c = mesh
    tm = trimesh.Trimesh(v, f, vertex_colors=c, process=False)
    for name in ("t.ply", "t.off", "t.obj"):
        tm.export(tmp_path / name)
        ref = trimesh.load(tmp_path / name, force="mesh", process=False, maintain_order=True)
        m = load_mesh(tmp_path / name)
        np.testing.assert_array_equal(m.vertices, np.asarray(ref.vertices), err_msg=name)
        np.testing.assert_array_equal(m.faces, np.asarray(ref.faces), err_msg=name)
    m = load_mesh(tmp_path / "t.ply")  # trimesh writes float32 PLY vertices with RGBA
    np.testing.assert_array_equal(m.vertices, v.astype(np.float32))
    np.testing.assert_array_equal(m.vertex_colors, c)


# ------------------------------------------------------------------ bad input


def test_missing_file(tmp_path):
    with pytest.raises(InputError) as e:
        load_mesh(tmp_path / "nope.ply")
    assert_one_line_naming(e, tmp_path / "nope.ply", "does not exist")


@pytest.mark.parametrize("name", ["e.ply", "e.obj", "e.off", "e.stl"])
def test_empty_file(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(InputError) as e:
        load_mesh(tmp_path / name)
    assert_one_line_naming(e, tmp_path / name, "empty")


def test_directory(tmp_path):
    (tmp_path / "d.ply").mkdir()
    with pytest.raises(InputError) as e:
        load_mesh(tmp_path / "d.ply")
    assert_one_line_naming(e, tmp_path / "d.ply", "directory")


def test_unknown_suffix(tmp_path):
    (tmp_path / "m.xyz").write_text("0 0 0\n")
    with pytest.raises(InputError) as e:
        load_mesh(tmp_path / "m.xyz")
    assert_one_line_naming(e, tmp_path / "m.xyz", "unknown mesh format", ".xyz")


@pytest.mark.parametrize("cut", [1, 7, 13 * 3])
def test_truncated_binary_ply(tmp_path, mesh, cut):
    v, f, _ = mesh
    save_mesh(tmp_path / "m.ply", v, f)
    data = (tmp_path / "m.ply").read_bytes()
    (tmp_path / "t.ply").write_bytes(data[:-cut])
    with pytest.raises(InputError) as e:
        load_mesh(tmp_path / "t.ply")
    assert_one_line_naming(e, tmp_path / "t.ply", "truncated")


def test_truncated_binary_point_cloud(tmp_path, mesh):
    v, _, _ = mesh
    save_mesh(tmp_path / "pc.ply", v, None)
    data = (tmp_path / "pc.ply").read_bytes()
    (tmp_path / "t.ply").write_bytes(data[:-8])  # one coordinate missing
    with pytest.raises(InputError) as e:
        load_mesh(tmp_path / "t.ply", require_faces=False)
    assert_one_line_naming(e, tmp_path / "t.ply", "truncated", "vertex")


def test_truncated_header(tmp_path):
    (tmp_path / "h.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 3\n")
    with pytest.raises(InputError) as e:
        load_mesh(tmp_path / "h.ply")
    assert_one_line_naming(e, tmp_path / "h.ply", "truncated", "header")


def test_ascii_ply_count_mismatch(tmp_path, mesh):
    v, f, _ = mesh
    save_mesh(tmp_path / "a.ply", v, f, binary=False)
    text = (tmp_path / "a.ply").read_text()
    # header promises more vertices than written: trimesh misreads this silently
    (tmp_path / "more.ply").write_text(text.replace("element vertex 40", "element vertex 41"))
    with pytest.raises(InputError) as e:
        load_mesh(tmp_path / "more.ply")
    assert_one_line_naming(e, tmp_path / "more.ply", "line")
    (tmp_path / "cut.ply").write_text("\n".join(text.splitlines()[:-3]) + "\n")
    with pytest.raises(InputError) as e:
        load_mesh(tmp_path / "cut.ply")
    assert_one_line_naming(e, tmp_path / "cut.ply", "truncated")
    (tmp_path / "extra.ply").write_text(text + "3 0 1 2\n")
    with pytest.raises(InputError) as e:
        load_mesh(tmp_path / "extra.ply")
    assert_one_line_naming(e, tmp_path / "extra.ply", "extra data")


def test_binary_ply_with_trailing_data(tmp_path, mesh):
    v, f, _ = mesh
    save_mesh(tmp_path / "m.ply", v, f)
    (tmp_path / "x.ply").write_bytes((tmp_path / "m.ply").read_bytes() + b"\x01" * 13)
    with pytest.raises(InputError) as e:
        load_mesh(tmp_path / "x.ply")
    assert_one_line_naming(e, tmp_path / "x.ply", "unexpected bytes")


@pytest.mark.parametrize(
    "name,text,words",
    [
        ("t.ply", "hello world\n", ["not a PLY"]),
        ("t.obj", "hello world\nthis is text\n", ["no vertices"]),
        ("t.off", "hello world\n", ["not an OFF", "line 1"]),
        ("t.stl", "hello world\n", ["STL"]),
    ],
)
def test_text_that_is_not_a_mesh(tmp_path, name, text, words):
    (tmp_path / name).write_text(text)
    with pytest.raises(InputError) as e:
        load_mesh(tmp_path / name)
    assert_one_line_naming(e, tmp_path / name, *words)


def test_binary_junk_named_obj(tmp_path):
    (tmp_path / "j.obj").write_bytes(bytes(range(256)))
    with pytest.raises(InputError) as e:
        load_mesh(tmp_path / "j.obj")
    assert_one_line_naming(e, tmp_path / "j.obj", "binary")


@pytest.mark.parametrize("bad,word", [("nan", "NaN"), ("inf", "inf"), ("-inf", "inf")])
@pytest.mark.parametrize("fmt", ["obj", "off", "ply"])
def test_non_finite_coordinates(tmp_path, fmt, bad, word):
    v = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    f = np.array([[0, 1, 2]])
    save_mesh(tmp_path / f"m.{fmt}", v, f, binary=False)
    text = (tmp_path / f"m.{fmt}").read_text()
    lines = text.splitlines()
    target = {"obj": "v 1.0 0.0 0.0", "off": "1.0 0.0 0.0", "ply": "1.0 0.0 0.0"}[fmt]
    lines[lines.index(target)] = target.replace("0.0 0.0", f"{bad} 0.0")
    (tmp_path / f"bad.{fmt}").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as e:
        load_mesh(tmp_path / f"bad.{fmt}")
    assert_one_line_naming(e, tmp_path / f"bad.{fmt}", word, "vertex 1")


def test_non_finite_binary_ply(tmp_path):
    v = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    save_mesh(tmp_path / "m.ply", v, [[0, 1, 2]])
    data = bytearray((tmp_path / "m.ply").read_bytes())
    at = data.index(b"end_header\n") + len(b"end_header\n") + 8 * 4  # vertex 1, y (fields x0 y0 z0 x1 y1)
    data[at : at + 8] = np.array([np.nan], "<f8").tobytes()
    (tmp_path / "n.ply").write_bytes(bytes(data))
    with pytest.raises(InputError) as e:
        load_mesh(tmp_path / "n.ply")
    assert_one_line_naming(e, tmp_path / "n.ply", "NaN", "vertex 1", "(y)")


@pytest.mark.parametrize(
    "name,text,words",
    [
        ("n.obj", "v 0 0 0\nv 1 abc 0\nv 0 1 0\nf 1 2 3\n", ["line 2", "non-numeric", "'abc'"]),
        ("n.off", "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 zz\n3 0 1 2\n", ["line 5", "non-numeric", "'zz'"]),
        ("n.ply", "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\n"
         "property float z\nend_header\n0 x1 0\n", ["line 8", "non-numeric", "'x1'"]),
        ("c.obj", "v 0 0\n", ["line 1", "2 fields"]),
        ("c.off", "OFF\n3 1 0\n0 0 0\n1 0\n0 1 0\n3 0 1 2\n", ["line 4", "2 fields"]),
        ("c.ply", "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\n"
         "property float z\nend_header\n0 1 2 3\n", ["line 8", "4 values"]),
        ("t.off", "OFF\n3 2 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n", ["truncated", "2 faces"]),
    ],
)  # fmt: skip
def test_malformed_text_fields_name_the_line(tmp_path, name, text, words):
    (tmp_path / name).write_text(text)
    with pytest.raises(InputError) as e:
        load_mesh(tmp_path / name)
    assert_one_line_naming(e, tmp_path / name, *words)


@pytest.mark.parametrize(
    "name,text,words",
    [
        ("o.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 7\n", ["line 4", "out of range"]),
        ("z.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 0 1 2\n", ["line 4", "index 0"]),
        ("o.off", "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 3\n", ["line 6", "out of range"]),
        ("o.ply", "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
         "property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n"
         "0 0 0\n1 0 0\n0 1 0\n3 0 1 9\n", ["face 0", "out of range"]),
    ],
)  # fmt: skip
def test_face_index_out_of_range(tmp_path, name, text, words):
    (tmp_path / name).write_text(text)
    with pytest.raises(InputError) as e:
        load_mesh(tmp_path / name)
    assert_one_line_naming(e, tmp_path / name, *words)


def test_obj_without_faces(tmp_path):
    (tmp_path / "v.obj").write_text("v 0 0 0\nv 1 0 0\n")
    with pytest.raises(InputError) as e:
        load_mesh(tmp_path / "v.obj")
    assert_one_line_naming(e, tmp_path / "v.obj", "no faces")
    assert load_mesh(tmp_path / "v.obj", require_faces=False).vertices.shape == (2, 3)


def test_ply_without_vertex_xyz(tmp_path):
    (tmp_path / "p.ply").write_text("ply\nformat ascii 1.0\nelement vertex 1\nproperty float a\nend_header\n1\n")
    with pytest.raises(InputError) as e:
        load_mesh(tmp_path / "p.ply")
    assert_one_line_naming(e, tmp_path / "p.ply", "x/y/z")


# ------------------------------------------------------------------ failed saves leave nothing behind


def test_save_unknown_suffix_leaves_folder_empty(tmp_path, mesh):
    v, f, _ = mesh
    with pytest.raises(InputError) as e:
        save_mesh(tmp_path / "m.xyz", v, f)
    assert_one_line_naming(e, tmp_path / "m.xyz", "unknown mesh format")
    assert list(tmp_path.iterdir()) == []


def test_save_point_cloud_as_stl_refused(tmp_path, mesh):
    v, _, _ = mesh
    with pytest.raises(InputError, match="STL"):
        save_mesh(tmp_path / "m.stl", v, None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda v, f: (np.where(np.arange(v.size).reshape(v.shape) == 4, np.nan, v), f), "NaN"),
        (lambda v, f: (v, f + 1), "out of range"),
        (lambda v, f: (v[:, :2], f), "vertices"),
        (lambda v, f: (v, f.astype(np.float64)), "integer"),
    ],
)
def test_save_bad_arrays_raise_value_error_and_keep_old_file(tmp_path, mesh, change, match):
    v, f, _ = mesh
    save_mesh(tmp_path / "m.ply", v, f)
    before = (tmp_path / "m.ply").read_bytes()
    bv, bf = change(v, f)
    with pytest.raises(ValueError, match=match):
        save_mesh(tmp_path / "m.ply", bv, bf)
    assert (tmp_path / "m.ply").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.ply"]


def test_save_bad_colors(tmp_path, mesh):
    v, f, c = mesh
    with pytest.raises(ValueError, match="vertex_colors"):
        save_mesh(tmp_path / "m.ply", v, f, c[:-1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        save_mesh(tmp_path / "m.ply", v, f, c.astype(np.float64))
    assert list(tmp_path.iterdir()) == []


def test_save_creates_parent_folders(tmp_path, mesh):
    v, f, _ = mesh
    save_mesh(tmp_path / "a" / "b" / "m.obj", v, f)
    np.testing.assert_array_equal(load_mesh(tmp_path / "a" / "b" / "m.obj").vertices, v)


def test_ict_mesh_round_trip(tmp_path, ict_mesh):
    v, f = ict_mesh
    save_mesh(tmp_path / "ict.ply", v, f)
    m = load_mesh(tmp_path / "ict.ply")
    np.testing.assert_array_equal(m.vertices, v)
    np.testing.assert_array_equal(m.faces, f)


@pytest.mark.parametrize("name,kw", [("a.ply", {}), ("b.ply", {"binary": False}), ("a.obj", {}), ("a.off", {})])
def test_corrupted_files_raise_only_input_error(tmp_path, mesh, name, kw):
    """Truncated, overwritten and inserted bytes: the loader succeeds or raises InputError."""
    v, f, c = mesh
    save_mesh(tmp_path / name, v[:6], f[(f < 6).all(axis=1)][:4], c[:6], **kw)
    data = (tmp_path / name).read_bytes()
    assert_corruptions_raise_only_input_error(data, tmp_path / f"bad{Path(name).suffix}", lambda path: load_mesh(path, require_faces=False), seed=11)


def test_written_files_get_the_usual_mode(tmp_path):
    """Atomic writes go through mkstemp (mode 0600); the final file follows the umask instead."""
    import os

    from fitface.io.atomic import write_text

    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
