"""fitface.io.codes: exact round trip, extras preserved, each validation error."""

from __future__ import annotations

import json

import numpy as np
import pytest
from input_checks import assert_one_line_naming

from fitface.errors import InputError
from fitface.io.codes import Codes, read_codes, write_codes


def _rotation(seed: int = 0) -> np.ndarray:
    """A random proper rotation (3, 3) float64 from a QR decomposition."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


@pytest.fixture
def codes() -> Codes:
    rng = np.random.default_rng(1)
    return Codes(
        model_id="sha256:0123abcd",
        codes={
            "identity": rng.normal(size=16).tolist(),
            "expression": (rng.normal(size=8) * 1e-7).tolist(),
            "noise": [0.1, -0.0, 1e-300, 5e300],
        },
        transform={"scale": 0.1 + 1e-16, "rotation": _rotation().tolist(), "translation": [1.5, -2.25, 1e-9]},
        unit="mm",
        extra={"lambda": 0.01, "landmark_rms": 1.23456789012345, "landmark_residuals": [0.5, 1.25],
               "notes": {"iterations": 300, "converged": True, "image": "face.jpg"}},
    )  # fmt: skip


def test_round_trip_exact(tmp_path, codes):
    write_codes(tmp_path / "codes.json", codes)
    got = read_codes(tmp_path / "codes.json")
    assert got == codes  # dataclass equality: every float bit-exact, extras kept
    assert got.code("expression").dtype == np.float64
    np.testing.assert_array_equal(got.code("identity"), codes.codes["identity"])
    assert list(tmp_path.iterdir()) == [tmp_path / "codes.json"]


def test_file_is_pretty_json_with_one_line_codes(tmp_path, codes):
    write_codes(tmp_path / "codes.json", codes)
    text = (tmp_path / "codes.json").read_text()
    doc = json.loads(text)
    assert doc["format_version"] == 1 and doc["lambda"] == 0.01
    lines = text.splitlines()
    assert sum(ln.strip().startswith('"identity": [') and ln.rstrip().endswith("],") for ln in lines) == 1
    assert len(lines) < 40


def test_numpy_values_are_written_as_json(tmp_path, codes):
    arr = Codes(
        model_id="m",
        codes={"identity": np.arange(3, dtype=np.float32)},
        transform={"scale": np.float64(2.0), "rotation": np.eye(3), "translation": np.zeros(3)},
        extra={"landmark_residuals": np.array([0.25, 0.5]), "n": np.int64(3)},
    )
    write_codes(tmp_path / "c.json", arr)
    got = read_codes(tmp_path / "c.json")
    assert got.codes == {"identity": [0.0, 1.0, 2.0]}
    assert got.transform == {"scale": 2.0, "rotation": np.eye(3).tolist(), "translation": [0.0, 0.0, 0.0]}
    assert got.extra == {"landmark_residuals": [0.25, 0.5], "n": 3}
    assert got.unit is None


def test_minimal_file(tmp_path):
    f = tmp_path / "c.json"
    f.write_text('{"model_id": "m", "codes": {"identity": [1, 2]}}')
    got = read_codes(f)
    assert got == Codes("m", {"identity": [1.0, 2.0]})
    assert all(isinstance(x, float) for x in got.codes["identity"])


def test_code_lookup_names_factors(codes):
    with pytest.raises(KeyError, match="identity"):
        codes.code("shape")


def _doc(codes: Codes) -> dict:
    return {"model_id": codes.model_id, "codes": codes.codes, "transform": codes.transform, "unit": codes.unit}


@pytest.mark.parametrize(
    "edit,words",
    [
        (lambda d: d.pop("model_id"), ["missing key 'model_id'"]),
        (lambda d: d.pop("codes"), ["missing key 'codes'"]),
        (lambda d: d.update(model_id=3), ["model_id", "string"]),
        (lambda d: d.update(codes=[1, 2]), ["codes", "object"]),
        (lambda d: d.update(codes={}), ["codes", "object"]),
        (lambda d: d["codes"].update(identity=[1.0, "abc"]), ["codes.identity[1]", "non-numeric", "'abc'"]),
        (lambda d: d["codes"].update(identity=[1.0, True]), ["codes.identity[1]", "non-numeric"]),
        (lambda d: d["codes"].update(identity=1.0), ["codes.identity", "list"]),
        (lambda d: d["codes"].update(identity=[]), ["codes.identity", "empty"]),
        (lambda d: d["transform"].pop("rotation"), ["transform", "missing key 'rotation'"]),
        (lambda d: d["transform"].update(rotation=[[1, 0, 0], [0, 1, 0]]), ["transform.rotation", "3x3"]),
        (lambda d: d["transform"].update(rotation=[[1, 0], [0, 1], [0, 0]]), ["transform.rotation[0]", "3 numbers"]),
        (lambda d: d["transform"].update(rotation=[[2, 0, 0], [0, 1, 0], [0, 0, 1]]), ["not a rotation"]),
        (lambda d: d["transform"].update(rotation=np.diag([1, 1, -1]).tolist()), ["not a rotation"]),
        (lambda d: d["transform"].update(translation=[1, 2]), ["transform.translation", "3 numbers", "got 2"]),
        (lambda d: d["transform"].update(scale=-1), ["transform.scale", "positive"]),
        (lambda d: d["transform"].update(scale="big"), ["transform.scale", "non-numeric"]),
        (lambda d: d.update(transform=[1, 2]), ["transform", "object"]),
        (lambda d: d.update(unit="furlong"), ["unit", "furlong"]),
        (lambda d: d.update(format_version=99), ["format_version", "newer"]),
    ],
)
def test_validation_errors(tmp_path, codes, edit, words):
    doc = json.loads(json.dumps(_doc(codes)))
    edit(doc)
    f = tmp_path / "codes.json"
    f.write_text(json.dumps(doc))
    with pytest.raises(InputError) as e:
        read_codes(f)
    assert_one_line_naming(e, f, *words)
    # the writer refuses the same data, naming the key, and writes nothing
    if "model_id" in doc and "codes" in doc and "format_version" not in doc:
        with pytest.raises(ValueError, match=words[0].split("'")[0].split("[")[0]):
            write_codes(tmp_path / "out.json", Codes(doc["model_id"], doc["codes"], doc["transform"], doc["unit"]))
        assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize(
    "text,words",
    [
        ('{"model_id": "m", "codes": {"identity": [1, NaN]}}', ["NaN"]),
        ('{"model_id": "m", "codes": {"identity": [1, Infinity]}}', ["Infinity"]),
        ('{"model_id": "m", "codes": {"identity": [1e999]}}', ["codes.identity[0]", "inf"]),
        ('{"model_id": "m",\n "codes": {"identity": [1, 2]\n', ["invalid JSON", "line 3"]),
        ("[1, 2, 3]", ["JSON object"]),
    ],
)
def test_bad_json(tmp_path, text, words):
    f = tmp_path / "codes.json"
    f.write_text(text)
    with pytest.raises(InputError) as e:
        read_codes(f)
    assert_one_line_naming(e, f, *words)


def test_missing_empty_and_binary(tmp_path):
    with pytest.raises(InputError) as e:
        read_codes(tmp_path / "none.json")
    assert_one_line_naming(e, tmp_path / "none.json", "does not exist")
    (tmp_path / "e.json").write_bytes(b"")
    with pytest.raises(InputError) as e:
        read_codes(tmp_path / "e.json")
    assert_one_line_naming(e, tmp_path / "e.json", "empty")
    (tmp_path / "b.json").write_bytes(bytes(range(128, 256)))
    with pytest.raises(InputError) as e:
        read_codes(tmp_path / "b.json")
    assert_one_line_naming(e, tmp_path / "b.json", "UTF-8")


@pytest.mark.parametrize(
    "extra,match",
    [
        ({"landmark_rms": float("nan")}, "landmark_rms: NaN"),
        ({"landmark_residuals": np.array([1.0, np.inf])}, r"landmark_residuals\[1\]: inf"),
        ({"note": object()}, "note: cannot write"),
        ({"model": "ict"}, "reserved"),  # a Codes field since codes.json records the model
        ({"unit": "mm"}, "reserved"),
    ],
)
def test_write_refuses_bad_extra_and_keeps_old_file(tmp_path, codes, extra, match):
    write_codes(tmp_path / "codes.json", codes)
    before = (tmp_path / "codes.json").read_bytes()
    bad = Codes(codes.model_id, codes.codes, codes.transform, codes.unit, extra)
    with pytest.raises(ValueError, match=match):
        write_codes(tmp_path / "codes.json", bad)
    assert (tmp_path / "codes.json").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["codes.json"]


def test_matrices_are_one_row_per_line_and_nan_in_an_array_names_its_key(tmp_path, codes):
    res = np.random.default_rng(0).normal(size=(68, 3))
    c = Codes(model_id="m", codes={"identity": [1.0]}, extra={"landmark_residuals": res})
    write_codes(tmp_path / "c.json", c)
    text = (tmp_path / "c.json").read_text()
    assert read_codes(tmp_path / "c.json").extra["landmark_residuals"] == res.tolist()  # exact float64
    rows = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("[") and ln.strip().rstrip(",").endswith("]")]
    assert len(rows) == 68 and json.loads(rows[0].rstrip(",")) == res[0].tolist()
    bad = res.copy()
    bad[5, 1] = np.nan
    with pytest.raises(ValueError, match=r"landmark_residuals\[5\]\[1\]: NaN"):
        write_codes(tmp_path / "d.json", Codes(model_id="m", codes={"identity": [1.0]},
                                                extra={"landmark_residuals": bad}))
    assert not (tmp_path / "d.json").exists()
