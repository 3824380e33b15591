"""fitface.io.landmarks: round trip every format, hand-written fixtures, and each bad file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from input_checks import assert_corruptions_raise_only_input_error, assert_one_line_naming

from fitface.errors import InputError
from fitface.io.landmarks import LANDMARK_SUFFIXES, Landmarks, load_landmarks, read_landmarks, save_landmarks

DATA = Path(__file__).parent / "data"


@pytest.fixture
def points3() -> np.ndarray:
    """(L=7, 3) float64 needing all 53 bits, mixed signs and magnitudes."""
    rng = np.random.default_rng(3)
    return rng.normal(size=(7, 3)) * np.array([1e-4, 1.0, 3e3])


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("suffix", LANDMARK_SUFFIXES)
def test_round_trip_points_exact(tmp_path, points3, suffix):
    save_landmarks(tmp_path / f"l{suffix}", points3)
    got = load_landmarks(tmp_path / f"l{suffix}", dims=3)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, points3)


@pytest.mark.parametrize("suffix", [".txt", ".xyz", ".lm", ".csv", ".json", ".npy", ".pts"])
def test_round_trip_2d(tmp_path, points3, suffix):
    save_landmarks(tmp_path / f"l{suffix}", points3[:, :2])
    np.testing.assert_array_equal(load_landmarks(tmp_path / f"l{suffix}", dims=2), points3[:, :2])
    with pytest.raises(InputError) as e:
        load_landmarks(tmp_path / f"l{suffix}", dims=3)
    assert_one_line_naming(e, tmp_path / f"l{suffix}", "2D landmarks", "expected 3D")


@pytest.mark.parametrize("suffix", [".txt", ".csv", ".json", ".pp"])
def test_round_trip_unit(tmp_path, points3, suffix):
    save_landmarks(tmp_path / f"l{suffix}", points3, unit="cm")
    lm = read_landmarks(tmp_path / f"l{suffix}")
    assert isinstance(lm, Landmarks) and lm.unit == "cm"
    np.testing.assert_array_equal(lm.points, points3)


@pytest.mark.parametrize("suffix", [".csv", ".json", ".pp"])
def test_round_trip_names(tmp_path, points3, suffix):
    names = [f"p{i}, \"quoted\" <&>" for i in range(len(points3))]
    save_landmarks(tmp_path / f"l{suffix}", points3, unit="mm", names=names)
    lm = read_landmarks(tmp_path / f"l{suffix}")
    assert lm.names == tuple(names)
    assert lm.unit == "mm"
    np.testing.assert_array_equal(lm.points, points3)


@pytest.mark.parametrize("suffix", [".txt", ".npy", ".pts"])
def test_formats_without_names_read_none(tmp_path, points3, suffix):
    save_landmarks(tmp_path / f"l{suffix}", points3, names=[str(i) for i in range(7)])
    assert read_landmarks(tmp_path / f"l{suffix}").names is None


@pytest.mark.parametrize("suffix", [".npy", ".pts"])
def test_unit_refused_where_it_cannot_be_stored(tmp_path, points3, suffix):
    with pytest.raises(InputError) as e:
        save_landmarks(tmp_path / f"l{suffix}", points3, unit="mm")
    assert_one_line_naming(e, tmp_path / f"l{suffix}", "cannot store a unit")
    assert list(tmp_path.iterdir()) == []


def test_save_unknown_suffix_leaves_folder_empty(tmp_path, points3):
    with pytest.raises(InputError) as e:
        save_landmarks(tmp_path / "l.dat", points3)
    assert_one_line_naming(e, tmp_path / "l.dat", "unknown landmark format")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"points": np.zeros((3, 4))}, "shape"),
        ({"points": np.zeros((0, 3))}, "shape"),
        ({"points": np.array([[0.0, np.nan, 0.0]])}, "NaN"),
        ({"unit": "furlong"}, "unknown unit"),
        ({"names": ["a"]}, "names"),
    ],
)
def test_save_bad_arguments(tmp_path, points3, kw, match):
    args = {"points": points3} | kw
    with pytest.raises(ValueError, match=match):
        save_landmarks(tmp_path / "l.json", **args)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ hand-written files


def test_ibug_pts_fixture():
    got = load_landmarks(DATA / "three.pts", dims=2)
    np.testing.assert_array_equal(got, [[101.5, 200.25], [150, 210], [175.125, 260.5]])


def test_meshlab_pp_fixture_keeps_inactive_points_in_order():
    lm = read_landmarks(DATA / "three.pp")
    np.testing.assert_array_equal(lm.points, [[-3.5, 12.25, 80], [30.125, 40, 55.5], [-30.125, 40, 55.5]])
    assert lm.names == ("nose_tip", "eye_l", "eye_r")
    assert lm.unit is None


def test_text_with_comments_commas_and_unit(tmp_path):
    f = tmp_path / "l.txt"
    f.write_text("# my landmarks\n# unit: mm\n\n1, 2, 3\n4 5 6  # trailing comment\n 7,8 ,9\n")
    lm = read_landmarks(f)
    np.testing.assert_array_equal(lm.points, [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    assert lm.unit == "mm"


def test_csv_header_case_and_extra_columns(tmp_path):
    f = tmp_path / "l.csv"
    f.write_text("Index,Name,X,Y,Z,confidence\n0,nose,1.5,2,3,0.9\n1,chin,4,5,6.25,0.8\n")
    lm = read_landmarks(f)
    np.testing.assert_array_equal(lm.points, [[1.5, 2, 3], [4, 5, 6.25]])
    assert lm.names == ("nose", "chin")


def test_csv_without_header_is_read_as_numbers(tmp_path):
    f = tmp_path / "l.csv"
    f.write_text("1,2,3\n4,5,6\n")
    np.testing.assert_array_equal(load_landmarks(f), [[1, 2, 3], [4, 5, 6]])


@pytest.mark.parametrize(
    "doc",
    [
        [[1, 2, 3], [4, 5, 6]],
        {"landmarks": [[1, 2, 3], [4, 5, 6]], "unit": "mm"},
        [{"x": 1, "y": 2, "z": 3}, {"x": 4, "y": 5, "z": 6}],
        {"landmarks": [{"X": 1, "Y": 2, "Z": 3, "name": "a"}, {"X": 4, "Y": 5, "Z": 6, "name": "b"}]},
    ],
)
def test_json_layouts(tmp_path, doc):
    f = tmp_path / "l.json"
    f.write_text(json.dumps(doc))
    lm = read_landmarks(f)
    np.testing.assert_array_equal(lm.points, [[1, 2, 3], [4, 5, 6]])
    if isinstance(doc, dict) and "unit" in doc:
        assert lm.unit == "mm"


@pytest.mark.parametrize("suffix", [".json", ".npy", ".pp", ".pts", ".txt", ".csv"])
def test_unknown_suffix_is_sniffed(tmp_path, points3, suffix):
    names = [f"n{i}" for i in range(7)] if suffix == ".csv" else None
    save_landmarks(tmp_path / f"l{suffix}", points3, names=names)
    (tmp_path / f"l{suffix}").rename(tmp_path / "landmarks.dat")
    np.testing.assert_array_equal(load_landmarks(tmp_path / "landmarks.dat"), points3)


def test_unsniffable_content(tmp_path):
    f = tmp_path / "l.dat"
    f.write_text("hello world\n")
    with pytest.raises(InputError) as e:
        read_landmarks(f)
    assert_one_line_naming(e, f, "unknown landmark format", ".dat")


# ------------------------------------------------------------------ bad input


def test_missing_and_empty(tmp_path):
    with pytest.raises(InputError) as e:
        read_landmarks(tmp_path / "none.txt")
    assert_one_line_naming(e, tmp_path / "none.txt", "does not exist")
    (tmp_path / "e.json").write_bytes(b"")
    with pytest.raises(InputError) as e:
        read_landmarks(tmp_path / "e.json")
    assert_one_line_naming(e, tmp_path / "e.json", "empty")


@pytest.mark.parametrize(
    "name,text,words",
    [
        ("a.txt", "1 2 3\n4 abc 6\n", ["line 2", "non-numeric", "'abc'"]),
        ("b.txt", "# c\n1 2 3\n\n4 5\n", ["line 4", "column count", "2 fields", "expected 3", "like line 2"]),
        ("c.txt", "1 2 3 4\n", ["line 1", "column count", "4 fields"]),
        ("d.txt", "1 2 3\n4 nan 6\n", ["line 2", "NaN"]),
        ("e.txt", "1 2 3\n4 5 -inf\n", ["line 2", "inf"]),
        ("f.txt", "# only a comment\n\n", ["no landmarks"]),
        ("g.txt", "# unit: furlong\n1 2 3\n", ["unknown unit", "furlong"]),
        ("a.csv", "x,y,z\n1,2,3\n1,2\n", ["line 3", "column count", "2 fields"]),
        ("b.csv", "name,x,y,z\nnose,1,2,3\nchin,4,five,6\n", ["line 3", "non-numeric", "'five'", "'y'"]),
        ("c.csv", "name,a,b\nnose,1,2\n", ["line 1", "no x and y"]),
        ("d.csv", "x,y,z\n", ["no landmarks"]),
        ("a.pts", "version: 1\nn_points: 3\n{\n1 2\n3 4\n}\n", ["n_points", "mismatch", "3", "2 points"]),
        ("b.pts", "version: 1\nn_points: 2\n{\n1 2\n3 4\n", ["truncated", "'}'"]),
        ("c.pts", "version: 1\nn_points: 2\n{\n1 2\n3 x4\n}\n", ["line 5", "non-numeric", "'x4'"]),
        ("d.pts", "version: 1\n{\n1 2\n}\n", ["n_points"]),
        ("e.pts", "version: 1\nn_points: 2\n{\n1 2\n3 4 5\n}\n", ["line 5", "column count"]),
        ("a.json", '{"landmarks": [[1, 2, 3], [4, 5]]}', ["landmark 1", "column count"]),
        ("b.json", '[[1, 2, 3], [4, "5", 6]]', ["landmark 1", "non-numeric", "'5'"]),
        ("c.json", '[[1, 2, 3],\n [4, 5, 6],\n', ["invalid JSON", "line 3"]),
        ("d.json", "[[1, NaN, 3]]", ["NaN"]),
        ("e.json", '{"points2": []}', ["no 'landmarks' key"]),
        ("f.json", "[]", ["no landmarks"]),
        ("g.json", '[[1, true, 3]]', ["landmark 0", "non-numeric"]),
        ("h.json", '{"landmarks": [[1, 2, 3]], "names": ["a", "b"]}', ["2 names for 1 landmarks"]),
        ("i.json", '{"landmarks": [[1, 2, 3]], "unit": "parsec"}', ["unknown unit"]),
        ("a.pp", '<PickedPoints>\n<point x="1" y="2" z="3"/>\n<point x="1" y="q" z="3"/>\n</PickedPoints>\n',
         ["line 3", "point 1", "non-numeric", "'q'"]),
        ("b.pp", '<PickedPoints>\n<point x="1" y="2"/>\n</PickedPoints>\n', ["line 2", "no z attribute"]),
        ("c.pp", '<PickedPoints>\n<point x="1" y="2" z="3"/>\n', ["invalid XML", "line 3"]),
        ("d.pp", "<Other>\n<point x='1' y='2' z='3'/>\n</Other>\n", ["not a MeshLab picked-points"]),
        ("e.pp", "<PickedPoints>\n<DocumentData/>\n</PickedPoints>\n", ["no landmarks"]),
        ("f.pp", '<!DOCTYPE r [<!ENTITY a "aaaa">]>\n<PickedPoints/>\n', ["entity"]),
        ("g.pp", '<PickedPoints>\n<point x="1" y="inf" z="3"/>\n</PickedPoints>\n', ["line 2", "inf"]),
    ],
)  # fmt: skip
def test_bad_text_files(tmp_path, name, text, words):
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(InputError) as e:
        read_landmarks(f)
    assert_one_line_naming(e, f, *words)


def test_bad_npy(tmp_path, points3):
    cases = {
        "obj.npy": np.array([{"a": 1}], dtype=object),
        "shape.npy": np.zeros((4, 4)),
        "flat.npy": np.zeros(9),
        "str.npy": np.array([["a", "b", "c"]]),
        "nan.npy": np.where(np.arange(21).reshape(7, 3) == 10, np.nan, points3),
    }
    words = {
        "obj.npy": ["pickled"],
        "shape.npy": ["shape (4, 4)"],
        "flat.npy": ["shape (9,)"],
        "str.npy": ["dtype"],
        "nan.npy": ["landmark 3", "NaN"],
    }
    for name, arr in cases.items():
        np.save(tmp_path / name, arr, allow_pickle=True)
        with pytest.raises(InputError) as e:
            read_landmarks(tmp_path / name)
        assert_one_line_naming(e, tmp_path / name, *words[name])
    np.save(tmp_path / "good.npy", points3)
    data = (tmp_path / "good.npy").read_bytes()
    (tmp_path / "trunc.npy").write_bytes(data[:-5])
    with pytest.raises(InputError) as e:
        read_landmarks(tmp_path / "trunc.npy")
    assert_one_line_naming(e, tmp_path / "trunc.npy", ".npy")


def test_binary_junk_named_txt(tmp_path):
    f = tmp_path / "j.txt"
    f.write_bytes(bytes(range(128, 256)))
    with pytest.raises(InputError) as e:
        read_landmarks(f)
    assert_one_line_naming(e, f, "not UTF-8")


def test_dims_argument_checked():
    with pytest.raises(ValueError, match="dims"):
        load_landmarks(DATA / "three.pts", dims=4)


@pytest.mark.parametrize("suffix", LANDMARK_SUFFIXES)
def test_corrupted_files_raise_only_input_error(tmp_path, points3, suffix):
    """Truncated, overwritten and inserted bytes: the reader succeeds or raises InputError."""
    save_landmarks(tmp_path / f"l{suffix}", points3[:4], names=list("abcd"))
    data = (tmp_path / f"l{suffix}").read_bytes()
    assert_corruptions_raise_only_input_error(data, tmp_path / f"bad{suffix}", lambda path: read_landmarks(path), seed=5)
