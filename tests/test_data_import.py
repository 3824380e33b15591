"""``fitface data import``: meshes + labels CSV -> dataset; bad files reported and skipped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from fitface.cli import main
from fitface.data.emotions import EMOTIONS
from fitface.data.format import load_dataset
from fitface.data.importer import import_meshes, procrustes_align, split_by_identity
from fitface.errors import InputError
from fitface.io.mesh import save_mesh


def grid(nx: int = 5, ny: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A bumpy (nx*ny, 3) grid surface in mm and its (2(nx-1)(ny-1), 3) triangles."""
    x, y = np.meshgrid(np.linspace(-40, 40, nx), np.linspace(-50, 50, ny))
    z = 10 * np.cos(x / 30) * np.cos(y / 40)
    v = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)
    idx = np.arange(nx * ny).reshape(ny, nx)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    f = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    return v, f


TPL_V, TPL_F = grid()


def make_folder(tmp_path: Path, rows: list[tuple[str, str, str]], seed: int = 0, rigid: bool = True) -> tuple[Path, Path, dict]:
    """Write one mesh per row (a deformed template, randomly posed) and labels.csv.

    Returns (mesh_dir, csv_path, {file: (posed vertices, unposed vertices)}).
    """
    rng = np.random.default_rng(seed)
    mesh_dir = tmp_path / "meshes"
    mesh_dir.mkdir()
    truth = {}
    for k, (name, _, _) in enumerate(rows):
        shape = TPL_V + rng.normal(scale=0.5, size=TPL_V.shape)  # (V, 3) small deformation
        rot = Rotation.random(random_state=int(rng.integers(1 << 30))).as_matrix() if rigid else np.eye(3)
        posed = shape @ rot.T + rng.normal(scale=20, size=3)
        save_mesh(mesh_dir / name, posed, TPL_F)
        truth[name] = (posed, shape)
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("file,identity,expression\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows))
    return mesh_dir, csv_path, truth


ROWS = [
    ("a_neutral.obj", "alice", "neutral"),
    ("a_happy.ply", "alice", "happiness"),
    ("b_neutral.off", "bob", "neutral"),
    ("b_sad.obj", "bob", "Sadness"),
    ("c_neutral.ply", "cy", "neutral"),
    ("c_unknown.obj", "cy", "-"),
    ("d_anger.obj", "dee", "anger"),
    ("e_x.obj", "", "surprise"),
]


# ------------------------------------------------------------------------------------ procrustes


@pytest.mark.parametrize("scale", [False, True])
def test_procrustes_recovers_a_known_transform(scale):
    rng = np.random.default_rng(1)
    target = rng.normal(size=(50, 3)) * 30
    rot = Rotation.random(random_state=2).as_matrix()
    s = 1.7 if scale else 1.0
    source = (target - [5.0, -3.0, 8.0]) @ rot / s  # so that s * source @ rot.T + t == target
    al = procrustes_align(source, target, scale=scale)
    np.testing.assert_allclose(al.aligned, target, atol=1e-9)
    np.testing.assert_allclose(al.rotation, rot, atol=1e-12)
    assert al.scale == pytest.approx(s, rel=1e-12)
    assert np.linalg.det(al.rotation) == pytest.approx(1.0)


def test_procrustes_never_reflects():
    rng = np.random.default_rng(3)
    target = rng.normal(size=(40, 3))
    mirrored = target * [-1.0, 1.0, 1.0]
    al = procrustes_align(mirrored, target)
    assert np.linalg.det(al.rotation) == pytest.approx(1.0)
    assert np.abs(al.aligned - target).max() > 0.1  # a mirror image cannot be fitted exactly


# ------------------------------------------------------------------------------------ split


def test_split_by_identity_deterministic_and_whole():
    ident = np.repeat(np.arange(20), 3)
    s1, s2 = split_by_identity(ident, seed=7), split_by_identity(ident, seed=7)
    np.testing.assert_array_equal(s1, s2)
    assert not np.array_equal(s1, split_by_identity(ident, seed=8))
    for k in range(20):
        assert len(set(s1[ident == k])) == 1
    per_id = {s: len(set(ident[s1 == s])) for s in ("train", "val", "test")}
    assert per_id == {"train": 16, "val": 2, "test": 2}


@pytest.mark.parametrize("k, want", [(1, (1, 0, 0)), (2, (1, 1, 0)), (3, (1, 1, 1)), (5, (3, 1, 1))])
def test_split_small_identity_counts(k, want):
    s = split_by_identity(np.append(np.arange(k), -1), seed=0)
    assert tuple(int((s[:-1] == x).sum()) for x in ("train", "val", "test")) == want
    assert s[-1] == "train"  # unlabeled identity


# ------------------------------------------------------------------------------------ import


def test_import_good_folder(tmp_path):
    mesh_dir, csv_path, truth = make_folder(tmp_path, ROWS, rigid=False)
    rep = import_meshes(mesh_dir, csv_path, tmp_path / "ds", unit="mm", seed=1)
    assert rep.imported == len(ROWS) and rep.skipped == [] and rep.summary() == f"imported {len(ROWS)}, skipped 0"
    ds = load_dataset(rep.out_dir)
    assert len(ds) == len(ROWS) and ds.unit == "mm" and ds.num_vertices == len(TPL_V)
    np.testing.assert_array_equal(ds.faces, TPL_F)
    # template = first mesh, kept at float64
    np.testing.assert_allclose(ds.template_vertices, truth["a_neutral.obj"][0], rtol=0, atol=1e-12)
    for i, (name, _, _) in enumerate(ROWS):
        np.testing.assert_allclose(ds.vertices[i], truth[name][0].astype(np.float32), rtol=0, atol=0)
    assert ds.factor("identity").classes == ("alice", "bob", "cy", "dee")
    assert ds.factor("expression").classes == EMOTIONS  # emotion names map onto the canonical order
    np.testing.assert_array_equal(ds.label("identity"), [0, 0, 1, 1, 2, 2, 3, -1])
    E = EMOTIONS.index
    np.testing.assert_array_equal(
        ds.label("expression"),
        [E("neutral"), E("happiness"), E("neutral"), E("sadness"), E("neutral"), -1, E("anger"), E("surprise")],
    )
    ident = ds.label("identity")
    for k in range(4):
        assert len(set(ds.split[ident == k])) == 1
    assert ds.info["builder"] == "import" and ds.info["sample_files"] == [r[0] for r in ROWS]
    assert sum(rep.split_counts.values()) == len(ROWS)


def test_import_align_undoes_random_poses(tmp_path):
    mesh_dir, csv_path, truth = make_folder(tmp_path, ROWS[:4], rigid=True)
    save_mesh(tmp_path / "template.ply", TPL_V, TPL_F)
    rep = import_meshes(mesh_dir, csv_path, tmp_path / "ds", template=tmp_path / "template.ply", align=True)
    ds = load_dataset(rep.out_dir)
    np.testing.assert_array_equal(ds.template_vertices, TPL_V)
    for i, (name, _, _) in enumerate(ROWS[:4]):
        posed, shape = truth[name]
        # each mesh is a rigid motion of `shape`; alignment lands it on the least-squares pose
        expected = procrustes_align(shape, TPL_V).aligned
        np.testing.assert_allclose(ds.vertices[i], expected, atol=1e-4)  # float32 storage of ~50 mm
        assert np.abs(ds.vertices[i] - TPL_V).max() < 3.0  # the pose is gone (deformation ~0.5 mm)
        assert np.abs(posed - TPL_V).max() > 10.0


def test_more_factor_columns(tmp_path):
    mesh_dir, _, _ = make_folder(tmp_path, ROWS[:3])
    csv_path = tmp_path / "l.csv"
    csv_path.write_text(
        "file,identity,expression,viseme\n"
        "a_neutral.obj,alice,smile,aa\n"
        "a_happy.ply,alice,,oo\n"
        "b_neutral.off,bob,frown,-\n"
    )
    ds = load_dataset(import_meshes(mesh_dir, csv_path, tmp_path / "ds").out_dir)
    assert ds.factor_names == ["identity", "expression", "viseme"]
    assert ds.factor("expression").classes == ("frown", "smile")  # not emotions: sorted names
    np.testing.assert_array_equal(ds.labels, [[0, 1, 0], [0, -1, 1], [1, 0, -1]])


def _bad_folder(tmp_path: Path) -> tuple[Path, Path]:
    mesh_dir, _, _ = make_folder(tmp_path, ROWS[:3])
    v2, f2 = grid(6, 4)
    save_mesh(mesh_dir / "other_topology.obj", v2, f2)  # 24 vertices, template has 20
    save_mesh(mesh_dir / "flipped.obj", TPL_V, TPL_F[:, ::-1])  # same V, different triangles
    (mesh_dir / "garbage.obj").write_text("v 1 2 three\n")
    (mesh_dir / "nan.obj").write_text(
        "v nan 0 0\n"
        + "".join(f"v {x} {y} {z}\n" for x, y, z in TPL_V[1:].tolist())
        + "".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in TPL_F.tolist())
    )
    (mesh_dir / "scan.xyz").write_text("1 2 3\n")
    (mesh_dir / "stray.obj").write_text("v 0 0 0\n")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text(
        "file,identity,expression\n"
        "a_neutral.obj,alice,neutral\n"
        "other_topology.obj,bob,neutral\n"
        "missing.obj,bob,anger\n"
        "flipped.obj,cy,neutral\n"
        "garbage.obj,cy,neutral\n"
        "nan.obj,dee,neutral\n"
        "scan.xyz,dee,neutral\n"
        "a_happy.ply,alice\n"
        "a_neutral.obj,alice,happiness\n"
        "b_neutral.off,bob,neutral\n"
    )
    return mesh_dir, csv_path


def test_bad_files_reported_and_skipped(tmp_path):
    mesh_dir, csv_path = _bad_folder(tmp_path)
    rep = import_meshes(mesh_dir, csv_path, tmp_path / "ds")
    assert rep.imported == 2 and rep.summary() == "imported 2, skipped 8"
    reasons = {s.file: s.reason for s in rep.skipped}
    assert reasons["other_topology.obj"] == "vertex-count mismatch: 24 vertices, the template has 20"
    assert reasons["missing.obj"] == "no such file"
    assert reasons["flipped.obj"].startswith("different triangles from the template (first at triangle 0)")
    assert "non-numeric" in reasons["garbage.obj"]
    assert "NaN" in reasons["nan.obj"]
    assert "unknown mesh format" in reasons["scan.xyz"]
    assert reasons["a_happy.ply"] == "labels.csv line 9 has 2 fields, expected 3"
    assert reasons["a_neutral.obj"] == "listed twice in labels.csv (line 10)"
    assert all("\n" not in r for r in reasons.values())
    assert rep.unlisted == ["a_happy.ply", "stray.obj"]
    ds = load_dataset(rep.out_dir)
    assert ds.info["sample_files"] == ["a_neutral.obj", "b_neutral.off"]
    assert ds.factor("identity").classes == ("alice", "bob")  # classes of imported rows only


def test_cli_import_summary_and_exit_codes(tmp_path, capsys):
    mesh_dir, csv_path = _bad_folder(tmp_path)
    out = tmp_path / "ds"
    assert main(["data", "import", str(mesh_dir), "--labels", str(csv_path), "-o", str(out), "--unit", "cm"]) == 0
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    assert lines[0] == "imported 2, skipped 8"
    assert "  skipped missing.obj: no such file" in lines
    assert cap.out.startswith(f"wrote {out}")
    assert load_dataset(out).unit == "cm"
    # existing output without --overwrite: one line, exit 2
    assert main(["data", "import", str(mesh_dir), "--labels", str(csv_path), "-o", str(out)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {out}: already exists (use --overwrite to replace it)"
    assert main(["data", "import", str(mesh_dir), "--labels", str(csv_path), "-o", str(out), "--overwrite", "--align"]) == 0
    assert load_dataset(out).info["aligned"] is True
    capsys.readouterr()
    assert main(["data", "info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 2


def test_cli_nothing_imported_exit_2_and_no_output(tmp_path, capsys):
    mesh_dir, _, _ = make_folder(tmp_path, ROWS[:2])
    v2, f2 = grid(3, 3)
    save_mesh(tmp_path / "tpl.obj", v2, f2)
    csv_path = tmp_path / "labels.csv"
    out = tmp_path / "ds"
    code = main(["data", "import", str(mesh_dir), "--labels", str(csv_path), "-o", str(out), "--template", str(tmp_path / "tpl.obj")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "imported 0, skipped 2"
    assert err[-1] == "error: no mesh imported (2 skipped); nothing written"
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv", "meshes", "tpl.obj"]  # no temp leftovers


@pytest.mark.parametrize(
    "csv_text, message",
    [
        ("file,identity\nx.obj,a\n", "labels.csv: missing column 'expression' (header is file,identity)"),
        ("", "labels.csv: empty labels file"),
        ("file,identity,expression,split\n", "labels.csv: column name 'split' is reserved"),
    ],
)
def test_cli_bad_csv_one_line(tmp_path, capsys, csv_text, message):
    mesh_dir, _, _ = make_folder(tmp_path, ROWS[:1])
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text(csv_text)
    assert main(["data", "import", str(mesh_dir), "--labels", str(csv_path), "-o", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err and "Traceback" not in err


def test_cli_bad_arguments(tmp_path, capsys):
    mesh_dir, csv_path, _ = make_folder(tmp_path, ROWS[:1])
    assert main(["data", "import", str(tmp_path / "nope"), "--labels", str(csv_path), "-o", str(tmp_path / "ds")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nope'}: no such mesh folder"
    assert main(["data", "import", str(mesh_dir), "--labels", str(csv_path), "-o", str(tmp_path / "ds"), "--split", "0.5,0.6,0.1"]) == 2
    assert "summing to 1" in capsys.readouterr().err
    with pytest.raises(InputError, match="no such labels file"):
        import_meshes(mesh_dir, tmp_path / "none.csv", tmp_path / "ds")


def test_cli_help(capsys):
    assert main(["data", "import", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--labels" in out and "--template" in out and "--align" in out and "imported N, skipped K" in out
    assert main(["data", "info", "--help"]) == 0
    assert "labeled_fraction" in capsys.readouterr().out
