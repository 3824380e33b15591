"""The dataset format: round trip, validation on load (one-line errors), atomic writing,
memory-mapped loading under a memory cap, and ``fitface data info``."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fitface.cli import main
from fitface.data.format import (
    LABELS_FILE,
    META_FILE,
    TEMPLATE_FILE,
    VERTICES_FILE,
    Dataset,
    DatasetWriter,
    Factor,
    load_dataset,
    summary,
)
from fitface.errors import InputError
from fitface.landmarks.sets import LandmarkSet

V = 12
FACES = np.array([[0, 1, 2], [2, 3, 4], [4, 5, 6], [6, 7, 8], [8, 9, 10], [10, 11, 0]], dtype=np.int64)
IDENTITY = np.array([0, 0, 1, 1, 2, 2, 3, -1], dtype=np.int64)
EXPRESSION = np.array([0, 4, 0, 6, 1, -1, 2, 3], dtype=np.int64)
SPLIT = np.array(["train", "train", "train", "train", "val", "val", "test", "train"])
N = len(IDENTITY)
EXP_CLASSES = ["neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise"]


def _template(rng) -> np.ndarray:
    return rng.normal(size=(V, 3)) * 50.0  # (V, 3) mm


def write_small(path: Path, seed: int = 0, **overrides) -> tuple[Path, dict]:
    """A complete small dataset with every optional part; returns (path, what was written)."""
    rng = np.random.default_rng(seed)
    tpl = _template(rng)
    verts = (tpl[None] + rng.normal(size=(N, V, 3))).astype(np.float32)  # (N, V, 3)
    lm = LandmarkSet.from_vertex_indices("five", np.array([0, 2, 4, 6, 8]), FACES)
    kw = dict(
        labels={"identity": IDENTITY, "expression": EXPRESSION, "viseme": np.array([-1, 0, 1, -1, 0, 1, 0, 1])},
        classes={"identity": ["ann", "bob", "cy", "dee"], "expression": EXP_CLASSES, "viseme": ["aa", "oo"]},
        split=SPLIT,
        coefficients={"identity": rng.normal(size=(N, 4)), "expression": rng.normal(size=(N, 3))},
        coefficient_names={"expression": ["jaw", "smile", "blink"]},
        landmark_sets={"five": lm},
        info={"builder": "test", "seed": seed},
        extras={"frame": np.arange(N, dtype=np.int64), "intensity": np.linspace(0, 1, N).astype(np.float32)},
    )
    kw.update(overrides)
    w = DatasetWriter(path, num_samples=N, template_vertices=tpl, faces=FACES, unit="mm")
    w.vertices[:5] = verts[:5]  # filled in two chunks, as builders do
    w.vertices[5:] = verts[5:]
    out = w.finish(**kw)
    return out, dict(kw, template=tpl, vertices=verts, landmark=lm)


@pytest.fixture()
def small(tmp_path) -> tuple[Path, dict]:
    return write_small(tmp_path / "ds")


# ------------------------------------------------------------------------------------ round trip


def test_round_trip_every_field(small):
    path, w = small
    ds = load_dataset(path)
    assert isinstance(ds, Dataset) and len(ds) == N and ds.num_vertices == V
    assert isinstance(ds.vertices, np.memmap) and not ds.vertices.flags.writeable
    assert ds.vertices.dtype == np.float32 and ds.vertices.shape == (N, V, 3)
    np.testing.assert_array_equal(np.asarray(ds.vertices), w["vertices"])
    np.testing.assert_array_equal(ds.template_vertices, w["template"])
    assert ds.template_vertices.dtype == np.float64
    np.testing.assert_array_equal(ds.faces, FACES)
    assert ds.faces.dtype == np.int64
    assert ds.unit == "mm"
    assert ds.factors == [
        Factor("identity", ("ann", "bob", "cy", "dee")),
        Factor("expression", tuple(EXP_CLASSES)),
        Factor("viseme", ("aa", "oo")),
    ]
    assert ds.labels.dtype == np.int64 and ds.labels.shape == (N, 3)
    np.testing.assert_array_equal(ds.label("identity"), IDENTITY)
    np.testing.assert_array_equal(ds.label("expression"), EXPRESSION)
    np.testing.assert_array_equal(ds.label("viseme"), w["labels"]["viseme"])
    np.testing.assert_array_equal(ds.split, SPLIT)
    np.testing.assert_array_equal(ds.indices("train"), [0, 1, 2, 3, 7])
    np.testing.assert_array_equal(ds.indices("val"), [4, 5])
    np.testing.assert_array_equal(ds.indices("test"), [6])
    assert set(ds.coefficients) == {"identity", "expression"}
    for k, v in w["coefficients"].items():
        assert ds.coefficients[k].dtype == np.float32
        np.testing.assert_array_equal(ds.coefficients[k], v.astype(np.float32))
    assert ds.coefficient_names == {"expression": ["jaw", "smile", "blink"]}
    assert set(ds.landmark_sets) == {"five"}
    np.testing.assert_array_equal(ds.landmark_sets["five"].face_index, w["landmark"].face_index)
    np.testing.assert_array_equal(ds.landmark_sets["five"].bary, w["landmark"].bary)
    np.testing.assert_array_equal(ds.extras["frame"], np.arange(N))
    assert ds.extras["intensity"].dtype == np.float32
    np.testing.assert_array_equal(ds.extras["intensity"], w["extras"]["intensity"])
    assert ds.info == {"builder": "test", "seed": 0}
    with pytest.raises(KeyError, match="viseme"):
        ds.label("nope")


def test_folder_layout_and_no_pickle(small):
    path, _ = small
    names = {p.name for p in path.iterdir()}
    assert names == {META_FILE, TEMPLATE_FILE, VERTICES_FILE, LABELS_FILE, "coefficients.npz", "extras.npz", "landmarks.json"}
    meta = json.loads((path / META_FILE).read_text())
    assert meta["format"] == "fitface-dataset" and meta["version"] == 1
    assert meta["split_counts"] == {"train": 5, "val": 2, "test": 1}
    assert sorted(meta["files"]) == sorted(names)
    assert (path / LABELS_FILE).read_text().splitlines()[:2] == ["index,identity,expression,viseme,split", "0,0,0,-1,train"]
    for npz in ("template.npz", "coefficients.npz", "extras.npz"):
        with np.load(path / npz, allow_pickle=False) as z:  # no object arrays anywhere
            assert all(z[k].dtype != object for k in z.files)


def test_mmap_false_reads_into_ram(small):
    path, w = small
    ds = load_dataset(path, mmap=False)
    assert type(ds.vertices) is np.ndarray
    np.testing.assert_array_equal(ds.vertices, w["vertices"])


def test_fancy_indexing_and_batches_return_plain_arrays(small):
    path, w = small
    ds = load_dataset(path)
    idx = np.array([5, 1, 1, 7])
    got = ds.vertices[idx]
    assert type(got) is np.ndarray  # not a memmap: safe to hand to torch.from_numpy
    np.testing.assert_array_equal(ds.read(idx), w["vertices"][idx])
    seen = []
    for b in ds.batches(ds.indices("train"), batch_size=2, shuffle=True, seed=3):
        assert type(b.vertices) is np.ndarray and b.vertices.dtype == np.float32
        np.testing.assert_array_equal(b.vertices, w["vertices"][b.indices])
        np.testing.assert_array_equal(b.labels, ds.labels[b.indices])
        seen += b.indices.tolist()
    assert sorted(seen) == [0, 1, 2, 3, 7] and seen != sorted(seen)  # shuffled, complete
    sizes = [len(b.indices) for b in ds.batches(batch_size=3, drop_last=True)]
    assert sizes == [3, 3]


def test_fingerprint_stable_and_content_sensitive(tmp_path):
    a, _ = write_small(tmp_path / "a", seed=0)
    b, _ = write_small(tmp_path / "b", seed=0)
    c, _ = write_small(tmp_path / "c", seed=1)
    fa = load_dataset(a).fingerprint
    assert len(fa) == 16 and fa == load_dataset(a).fingerprint == load_dataset(b).fingerprint
    assert fa != load_dataset(c).fingerprint


def test_optional_parts_absent(tmp_path):
    path, _ = write_small(tmp_path / "ds", coefficients=None, coefficient_names=None, landmark_sets=None, extras=None, info=None)
    ds = load_dataset(path)
    assert ds.coefficients == {} and ds.landmark_sets == {} and ds.extras == {} and ds.info == {}
    assert {p.name for p in path.iterdir()} == {META_FILE, TEMPLATE_FILE, VERTICES_FILE, LABELS_FILE}


# ------------------------------------------------------------------------------------ writer


def test_exception_before_finish_leaves_nothing(tmp_path):
    rng = np.random.default_rng(0)
    with pytest.raises(RuntimeError, match="builder crashed"):
        with DatasetWriter(tmp_path / "ds", N, _template(rng), FACES) as w:
            w.vertices[:] = 1.0
            raise RuntimeError("builder crashed")
    assert list(tmp_path.iterdir()) == []


def test_abandoned_writer_cleans_up(tmp_path):
    rng = np.random.default_rng(0)
    w = DatasetWriter(tmp_path / "ds", N, _template(rng), FACES)
    w.vertices[:] = 1.0
    assert len(list(tmp_path.iterdir())) == 1  # the hidden temporary folder
    del w
    gc.collect()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "override, message",
    [
        ({"split": np.where(SPLIT == "test", "val", SPLIT)[::-1]}, "not by identity"),
        ({"labels": {"identity": IDENTITY, "expression": np.full(N, 7)}}, "out of range"),
        ({"classes": {"identity": ["a", "b", "c", "d"]}}, "different factors"),
        ({"coefficients": {"identity": np.full((N, 2), np.nan)}, "coefficient_names": None}, "NaN"),
        ({"info": {"x": object()}}, "JSON"),
    ],
)
def test_finish_rejects_bad_metadata_and_leaves_nothing(tmp_path, override, message):
    kw = {"labels": {"identity": IDENTITY, "expression": EXPRESSION}, "classes": {"identity": list("abcd"), "expression": EXP_CLASSES}, "split": SPLIT}
    kw.update(override)
    rng = np.random.default_rng(0)
    w = DatasetWriter(tmp_path / "ds", N, _template(rng), FACES)
    w.vertices[:] = 1.0
    with pytest.raises(ValueError, match=message):
        w.finish(**kw)
    assert list(tmp_path.iterdir()) == []


def test_finish_detects_unwritten_and_nan_samples(tmp_path):
    rng = np.random.default_rng(0)
    kw = {"labels": {"identity": IDENTITY}, "classes": {"identity": list("abcd")}, "split": SPLIT}
    w = DatasetWriter(tmp_path / "ds", N, _template(rng), FACES)
    w.vertices[:6] = 1.0
    with pytest.raises(InputError, match="sample 6 is all zeros"):
        w.finish(**kw)
    w = DatasetWriter(tmp_path / "ds", N, _template(rng), FACES)
    w.vertices[:] = 1.0
    w.vertices[3, 5, 1] = np.inf
    with pytest.raises(InputError, match="sample 3 contains inf"):
        w.finish(**kw)
    assert list(tmp_path.iterdir()) == []


def test_overwrite_rules(tmp_path):
    path, _ = write_small(tmp_path / "ds", seed=0)
    with pytest.raises(InputError, match="already exists"):
        write_small(path, seed=1)
    rng = np.random.default_rng(5)
    w = DatasetWriter(path, N, _template(rng), FACES, overwrite=True)
    w.vertices[:] = 2.0
    w.finish(labels={"identity": IDENTITY}, classes={"identity": list("abcd")}, split=SPLIT)
    ds = load_dataset(path)
    assert ds.factor_names == ["identity"] and float(ds.vertices[0, 0, 0]) == 2.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no leftovers
    other = tmp_path / "docs"
    other.mkdir()
    (other / "notes.txt").write_text("precious")
    with pytest.raises(InputError, match="not a fitface dataset"):
        DatasetWriter(other, N, _template(rng), FACES, overwrite=True)
    assert (other / "notes.txt").read_text() == "precious"


# ------------------------------------------------------------------------------------ validation on load


def _rewrite_labels(path: Path, fn) -> None:
    lines = (path / LABELS_FILE).read_text().splitlines()
    (path / LABELS_FILE).write_text("\n".join(fn(lines)) + "\n")


def _break_missing_meta(p):
    (p / META_FILE).unlink()


def _break_missing_vertices(p):
    (p / VERTICES_FILE).unlink()


def _break_vertex_count(p):
    np.save(p / VERTICES_FILE, np.ones((N, V + 1, 3), np.float32))


def _break_nan(p):
    mm = np.load(p / VERTICES_FILE, mmap_mode="r+")
    mm[5, 3, 2] = np.nan
    mm.flush()
    del mm


def _break_sample_count(p):
    np.save(p / VERTICES_FILE, np.ones((N - 1, V, 3), np.float32))


def _break_dtype(p):
    np.save(p / VERTICES_FILE, np.ones((N, V, 3), np.float64))


def _break_truncated(p):
    data = (p / VERTICES_FILE).read_bytes()
    (p / VERTICES_FILE).write_bytes(data[: len(data) - 100])


def _break_missing_column(p):
    _rewrite_labels(p, lambda ls: [",".join(c for j, c in enumerate(l.split(",")) if j != 2) for l in ls])


def _break_label_high(p):
    _rewrite_labels(p, lambda ls: ls[:4] + ["3,1,9,-1,train"] + ls[5:])


def _break_label_low(p):
    _rewrite_labels(p, lambda ls: ls[:3] + ["2,-2,0,1,train"] + ls[4:])


def _break_split_value(p):
    _rewrite_labels(p, lambda ls: ls[:2] + ["1,0,4,0,training"] + ls[3:])


def _break_split_identity(p):
    _rewrite_labels(p, lambda ls: ls[:2] + ["1,0,4,0,test"] + ls[3:])


def _break_template(p):
    np.savez(p / TEMPLATE_FILE, vertices=np.ones((V, 3)), faces=np.array([[0, 1, V]]))


def _break_pickled_template(p):
    np.savez(p / TEMPLATE_FILE, vertices=np.ones((V, 3)), faces=np.array([FACES, None], dtype=object))


def _break_bad_json(p):
    (p / META_FILE).write_text("{not json")


@pytest.mark.parametrize(
    "breaker, message",
    [
        (_break_missing_meta, "missing dataset.json"),
        (_break_bad_json, "malformed JSON"),
        (_break_missing_vertices, "missing vertices file vertices.npy"),
        (_break_vertex_count, f"vertex-count mismatch: vertices.npy has {V + 1} vertices per sample, the template has {V}"),
        (_break_nan, "sample 5 contains NaN"),
        (_break_sample_count, f"{N - 1} samples but dataset.json says {N}"),
        (_break_dtype, "expected float32, got float64"),
        (_break_truncated, "vertices.npy: cannot read"),
        (_break_missing_column, "missing label column 'expression'"),
        (_break_label_high, "label 9 of factor 'expression' at sample 3 is out of range"),
        (_break_label_low, "label -2 of factor 'identity' at sample 2 is out of range"),
        (_break_split_value, "split 'training' at sample 1 is not one of train, val, test"),
        (_break_split_identity, "split is not by identity: identity 'ann' is in both 'train' and 'test'"),
        (_break_template, "template faces: vertex index out of range"),
        (_break_pickled_template, "template.npz: cannot read"),
    ],
)
def test_load_names_what_is_wrong(small, breaker, message):
    path, _ = small
    breaker(path)
    with pytest.raises(InputError) as info:
        load_dataset(path)
    text = str(info.value)
    assert message in text
    assert text.startswith(str(path)) and "\n" not in text
    # the CLI prints the same single line and exits 2
    code = main(["data", "info", str(path)])
    assert code == 2


def test_missing_folder(tmp_path):
    with pytest.raises(InputError, match="no such dataset folder"):
        load_dataset(tmp_path / "nope")


def test_check_values_false_skips_only_the_scan(small):
    path, _ = small
    _break_nan(path)
    ds = load_dataset(path, check_values=False)
    assert np.isnan(ds.vertices[5, 3, 2])


# ------------------------------------------------------------------------------------ data info


def test_info_json_exact_structure(small, capsys):
    path, _ = small
    assert main(["data", "info", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {
        "samples": N,
        "vertices": V,
        "unit": "mm",
        "factors": {
            "identity": {"classes": 4, "labeled_fraction": 7 / 8},
            "expression": {"classes": 7, "labeled_fraction": 7 / 8},
            "viseme": {"classes": 2, "labeled_fraction": 6 / 8},
        },
    }
    assert list(out["factors"]) == ["identity", "expression", "viseme"]  # factor order
    assert summary(load_dataset(path)) == out


def test_info_human_output(small, capsys):
    path, _ = small
    assert main(["data", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "samples   8  (train 5, val 2, test 1)" in out
    assert f"vertices  {V}" in out and "unit mm" in out
    assert "identity" in out and "labeled 7/8 (87.5%)" in out
    assert "viseme" in out and "labeled 6/8 (75.0%)" in out


def test_info_bad_dataset_one_line(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {tmp_path}: missing dataset.json (not a fitface dataset)"


# ------------------------------------------------------------------------------------ memory map


CAPPED_CHILD = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from fitface.data.format import load_dataset
    path, cap, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    # RLIMIT_DATA caps private (anonymous) memory: heap and private mappings. A read-only
    # file mapping is not charged, so a memory-mapped dataset can exceed it; reading the
    # file into RAM cannot.
    resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
    try:
        ds = load_dataset(path, mmap=(mode == "mmap"))  # includes the chunked NaN scan
        total, count = 0.0, 0
        for b in ds.batches(batch_size=64, shuffle=True, seed=0):
            total += float(b.vertices[:, :, 0].sum(dtype=np.float64))
            count += len(b.indices)
    except MemoryError:
        print("MemoryError")
        sys.exit(0)
    rss_anon = [l.split()[1] for l in open("/proc/self/status") if l.startswith("RssAnon")][0]
    print(count, repr(total), rss_anon)
    """
)


def _run_capped(path: Path, cap: int, mode: str) -> str:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    res = subprocess.run(
        [sys.executable, "-c", CAPPED_CHILD, str(path), str(cap), mode],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout.strip()


@pytest.mark.skipif(sys.platform != "linux", reason="uses RLIMIT_DATA semantics and /proc of Linux")
def test_dataset_larger_than_memory_cap_iterates_by_mmap(tmp_path):
    n, v = 4096, 5000  # 4096 * 5000 * 3 * 4 bytes = 246 MB of vertices
    file_bytes = n * v * 3 * 4
    cap = file_bytes // 2
    tpl = np.zeros((v, 3))
    tpl[:, 0] = np.arange(v)
    faces = np.stack([np.arange(v - 2), np.arange(1, v - 1), np.arange(2, v)], axis=1)
    w = DatasetWriter(tmp_path / "big", n, tpl, faces)
    step = 256
    for i0 in range(0, n, step):  # x of sample i, vertex j = i + j (an analytic sum)
        i = np.arange(i0, min(n, i0 + step), dtype=np.float32)[:, None]
        chunk = np.ones((len(i), v, 3), np.float32)
        chunk[:, :, 0] = i + np.arange(v, dtype=np.float32)[None]
        w.vertices[i0 : i0 + len(i)] = chunk
    ident = np.arange(n) % 10
    path = w.finish(
        labels={"identity": ident}, classes={"identity": [str(k) for k in range(10)]},
        split=np.where(ident < 8, "train", np.where(ident == 8, "val", "test")),
    )  # fmt: skip
    assert (path / VERTICES_FILE).stat().st_size >= file_bytes == 2 * cap

    out = _run_capped(path, cap, "mmap")
    count, total, rss_anon_kb = out.split()
    assert int(count) == n
    expected = n * (v * (v - 1) / 2) + v * (n * (n - 1) / 2)  # sum over i, j of (i + j)
    assert float(total) == pytest.approx(expected, rel=1e-12)
    assert int(rss_anon_kb) * 1024 < cap  # the private memory in use stayed under the cap
    # control: the same cap really forbids holding the vertices in RAM (Linux >= 4.7 charges
    # private anonymous mappings to RLIMIT_DATA)
    if _run_capped(path, cap, "ram") != "MemoryError":
        pytest.skip("RLIMIT_DATA does not limit anonymous memory on this kernel")
