"""The model file: safetensors + JSON header document; round trips and every bad-file case."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from model_builders import grid_mesh
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import fitface
from fitface.errors import InputError
from fitface.landmarks.sets import LandmarkSet
from fitface.models.discriminator import Discriminator
from fitface.models.face_model import FaceModel
from fitface.models.generator import Generator
from fitface.models.latent import PAPER_LAYOUT, LatentLayout
from fitface.models.model_file import (
    DEFAULT_MODEL_PATH,
    METADATA_KEY,
    load_discriminator,
    load_model,
    read_metadata,
    save_model,
)


def make_model(n: int = 12) -> FaceModel:
    """A 12 x 12 grid model with the paper's layout, two landmark sets and 3 classes per factor."""
    torch.manual_seed(0)
    v, f, uv = grid_mesh(n)
    sets = {"corners": LandmarkSet.from_vertex_indices("corners", [0, n - 1, n * n - 1], f),
            "inner": LandmarkSet("inner", np.array([3, 40, 41]),
                                 np.array([[0.2, 0.3, 0.5], [1 / 3] * 3, [0.9, 0.05, 0.05]]))}
    classes = {f_: [f"{f_}{i}" for i in range(3)] for f_ in PAPER_LAYOUT.factors}
    return FaceModel(v, f, uv, PAPER_LAYOUT, Generator(PAPER_LAYOUT.dim, len(v)), unit="mm",
                     landmark_sets=sets, classes=classes)

#: Relative agreement required between a half-stored model and its float32 original (brief).
HALF_RTOL = 1e-3


def _trained_like(m: FaceModel, seed: int = 1) -> FaceModel:
    """Give the last layer weights of a trained size (displacements of several mm), so precision
    tests are not trivially met by the near-zero initial output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        m.generator.out.weight.copy_(torch.randn(m.generator.out.weight.shape, generator=g) * 0.2)
        m.generator.out.bias.copy_(torch.randn(m.generator.out.bias.shape, generator=g))
    return m


@pytest.fixture()
def model():
    return _trained_like(make_model())


@pytest.fixture()
def disc():
    torch.manual_seed(3)
    return Discriminator({"identity": 3, "expression": 3}, image_size=64)


@pytest.fixture()
def saved(tmp_path, model, disc):
    path = tmp_path / "model.safetensors"
    save_model(path, model, disc, training_config={"lr": 2e-4, "epochs": 200, "data": Path("/x/y")},
               data_fingerprint="abc123", notes="unit test")
    return path


def _rewrite(src: Path, dst: Path, tensors=None, doc=None, metadata=None):
    """Write a modified copy of a model file (tensors / document / raw metadata replaced)."""
    t = load_file(src) if tensors is None else tensors
    with safe_open(src, "pt") as f:
        meta = dict(f.metadata())
    if doc is not None:
        meta[METADATA_KEY] = json.dumps(doc)
    save_file(t, dst, metadata=meta if metadata is None else metadata)
    return dst


def _doc(path):
    with safe_open(path, "pt") as f:
        return json.loads(f.metadata()[METADATA_KEY])


# ------------------------------------------------------------------------------ round trip
def test_round_trip(saved, model, disc):
    m2 = load_model(saved)
    z = model.sample_latent(5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model.decode(z), m2.decode(z))  # float32 stored: bit-exact
    assert m2.layout == model.layout and m2.unit == "mm" and m2.image_size == 64
    assert m2.classes == model.classes
    assert list(m2.landmark_sets) == list(model.landmark_sets)
    for name, lset in model.landmark_sets.items():
        assert np.array_equal(m2.landmark_sets[name].face_index, lset.face_index)
        assert np.array_equal(m2.landmark_sets[name].bary, lset.bary)  # float64 stored
        assert torch.equal(m2.landmark_buffers[name].vertex_ids, model.landmark_buffers[name].vertex_ids)
    assert torch.equal(m2.faces, model.faces) and torch.equal(m2.uv, model.uv)
    assert not m2.training  # eval mode
    # model id = first 16 hex of the file's sha256, also set on the saved model
    assert m2.model_id == hashlib.sha256(saved.read_bytes()).hexdigest()[:16] == model.model_id
    # discriminator restored
    d2 = load_discriminator(saved)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = disc(x), d2(x)
    assert torch.equal(a.critic, b.critic) and torch.equal(a.logits["identity"], b.logits["identity"])


def test_metadata_document(saved):
    doc = read_metadata(saved)
    assert doc["format"] == "fitface-model" and doc["version"] == 1
    assert doc["fitface_version"] == fitface.__version__
    assert doc["unit"] == "mm" and doc["image_size"] == 64
    assert LatentLayout.from_json(doc["latent_layout"]) == PAPER_LAYOUT
    assert doc["factors"] == {"identity": ["identity0", "identity1", "identity2"],
                              "expression": ["expression0", "expression1", "expression2"]}
    assert doc["generator"] == {"latent_dim": 85, "num_vertices": 144, "hidden": 512, "negative_slope": 0.2}
    assert doc["landmark_sets"] == ["corners", "inner"]
    assert doc["discriminator"]["num_classes"] == {"identity": 3, "expression": 3}
    assert doc["training_config"] == {"lr": 2e-4, "epochs": 200, "data": "/x/y"}
    assert doc["data_fingerprint"] == "abc123" and doc["notes"] == "unit test"
    assert doc["storage_dtype"] == "float32"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", doc["created"])


def test_tensor_names(saved):
    names = set(load_file(saved))
    assert {"generator.fc.weight", "generator.fc.bias", "generator.out.weight", "generator.out.bias",
            "template", "faces", "uv", "landmarks.inner.face_index", "landmarks.inner.bary"} <= names
    assert any(n.startswith("discriminator.") for n in names)


def test_without_discriminator(tmp_path, model):
    path = tmp_path / "g.safetensors"
    save_model(path, model)
    assert not any(n.startswith("discriminator.") for n in load_file(path))
    assert read_metadata(path)["discriminator"] is None
    assert load_discriminator(path) is None
    assert load_model(path).num_vertices == 144


def test_half_storage(tmp_path, model):
    full, half = tmp_path / "f.safetensors", tmp_path / "h.safetensors"
    save_model(full, model)
    save_model(half, model, half=True)
    t = load_file(half)
    assert t["generator.out.weight"].dtype == torch.float16
    assert t["template"].dtype == torch.float32 and t["landmarks.inner.bary"].dtype == torch.float64
    net_bytes = sum(v.numel() * 4 for k, v in t.items() if k.startswith("generator."))
    assert full.stat().st_size - half.stat().st_size == pytest.approx(net_bytes / 2, abs=512)  # header slack
    m2 = load_model(half)
    assert m2.template.dtype == torch.float32 and torch.equal(m2.template, model.template)
    z = model.sample_latent(8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, got = model.decode(z), m2.decode(z)
        ref_d, got_d = model.generator(z), m2.generator(z)
    assert ref_d.abs().mean() > 1.0  # displacements of trained size (mm), not ~0
    assert ((got - ref).norm() / ref.norm()).item() < HALF_RTOL
    assert ((got_d - ref_d).norm() / ref_d.norm()).item() < HALF_RTOL
    assert read_metadata(half)["storage_dtype"] == "float16"


def test_load_to_dtype_and_atomic_overwrite(saved, model):
    m64 = load_model(saved, dtype=torch.float64)
    assert m64.template.dtype == torch.float64 and next(m64.generator.parameters()).dtype == torch.float64
    # overwriting goes through a temporary file: no stray files remain
    save_model(saved, model)
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]


def test_fresh_process_decodes_identically(tmp_path, model):
    """A new interpreter (`import fitface; fitface.load_model(p)`) decodes the same vertices:
    bit-exact from a float32 file, to 1e-3 relative from a half file."""
    full, half = tmp_path / "f.safetensors", tmp_path / "h.safetensors"
    save_model(full, model)
    save_model(half, model, half=True)
    z = model.sample_latent(6, generator=torch.Generator().manual_seed(2))
    np.save(tmp_path / "z.npy", z.numpy())
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # same thread count as the child, so the float sums run in one order
    try:
        with torch.no_grad():
            ref = model.decode(z).numpy()
    finally:
        torch.set_num_threads(old)
    script = textwrap.dedent(f"""
        import sys, numpy as np
        import fitface
        assert "torch" not in sys.modules
        import torch
        torch.set_num_threads(1)
        z = torch.from_numpy(np.load({str(tmp_path / "z.npy")!r}))
        for name in ("f", "h"):
            m = fitface.load_model({str(tmp_path)!r} + "/" + name + ".safetensors")
            with torch.no_grad():
                np.save({str(tmp_path)!r} + "/out_" + name + ".npy", m.decode(z).numpy())
            print(m.model_id)
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    ids = res.stdout.split()
    assert ids == [hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in (full, half)]
    got = np.load(tmp_path / "out_f.npy")
    assert got.dtype == np.float32 and np.array_equal(got, ref)
    got_h = np.load(tmp_path / "out_h.npy")
    assert np.linalg.norm(got_h - ref) / np.linalg.norm(ref) < HALF_RTOL


def test_import_fitface_is_cheap_and_load_model_lazy():
    script = ("import sys, fitface; assert 'torch' not in sys.modules; "
              "from fitface.models.model_file import read_metadata; assert 'torch' not in sys.modules; "
              "f = fitface.load_model; assert 'load_model' in fitface.__all__; print(f.__module__)")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "fitface.models.model_file"


def test_read_metadata_without_torch(saved):
    script = (f"import sys; from fitface.models.model_file import read_metadata; "
              f"d = read_metadata({str(saved)!r}); assert 'torch' not in sys.modules; print(d['unit'])")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "mm"


def test_ict_round_trip(tmp_path, ict_path):
    """Real template (ICT, cm, V = 9,409) with the iBUG-68 vertex landmarks; half storage."""
    with np.load(ict_path) as z:
        verts, faces, uv, ibug = z["neutral"], z["faces"], z["uv"], z["landmarks_ibug68"]
    torch.manual_seed(0)
    m = FaceModel(verts, faces, uv, PAPER_LAYOUT, Generator(85, len(verts)), unit="cm",
                  landmark_sets={"ibug68": LandmarkSet.from_vertex_indices("ibug68", ibug, faces)})
    path = tmp_path / "ict.safetensors"
    save_model(path, m, half=True)
    # generator 85*512+512 + 512*28227+28227 parameters at 2 bytes, plus template/uv/faces
    n_gen = 85 * 512 + 512 + 512 * 28227 + 28227
    n_mesh = len(verts) * 3 * 4 + len(verts) * 2 * 4 + len(faces) * 3 * 8
    assert 0 < path.stat().st_size - (2 * n_gen + n_mesh) < 10_000
    m2 = load_model(path)
    assert m2.unit == "cm" and np.array_equal(m2.landmark_sets["ibug68"].face_index,
                                              m.landmark_sets["ibug68"].face_index)
    z = m.sample_latent(2)
    with torch.no_grad():
        a, b = m.landmark_points(m.decode(z), "ibug68"), m2.landmark_points(m2.decode(z), "ibug68")
    assert ((a - b).norm() / a.norm()).item() < HALF_RTOL


# ------------------------------------------------------------------------------ bad files
def _expect_input_error(path, match):
    with pytest.raises(InputError) as info:
        load_model(path)
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert info.value.path == os.fspath(path)
    assert re.search(match, msg), msg
    return msg


def test_missing_file_and_directory(tmp_path):
    _expect_input_error(tmp_path / "nope.safetensors", "no such model file")
    _expect_input_error(tmp_path, "is a directory")
    with pytest.raises(InputError, match="no such model file"):
        read_metadata(tmp_path / "nope.safetensors")


def test_no_default_model(no_builtin_models):
    with pytest.raises(InputError, match="is not installed"):
        load_model(None)


def test_built_in_models_load():
    """Every shipped model (the default among them): a valid float16 file without a discriminator,
    with the landmark sets fitting and photos need; all of them together within the package's budget."""
    from fitface.models.registry import BUILTIN_MODELS, DEFAULT_MODEL, installed_names

    assert DEFAULT_MODEL in installed_names() and "procedural" in installed_names()
    assert DEFAULT_MODEL_PATH == BUILTIN_MODELS[DEFAULT_MODEL].path
    for name in installed_names():
        m = load_model(name)
        doc = read_metadata(name)
        assert {"ibug68", "mediapipe"} <= set(m.landmark_sets) and m.unit == "mm", name
        assert doc["storage_dtype"] == "float16" and doc["discriminator"] is None, name
    total = sum(BUILTIN_MODELS[n].path.stat().st_size for n in installed_names())
    assert total < 48 * 2**20


@pytest.mark.parametrize("content", [b"", b"abc", b"hello, this is a text file\n" * 10,
                                     b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}"])
def test_not_safetensors(tmp_path, content):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(content)
    _expect_input_error(p, "not a fitface model file")
    with pytest.raises(InputError, match="not a fitface model file"):
        read_metadata(p)


def test_torch_pickle_file(tmp_path, model):
    p = tmp_path / "model.pt"
    torch.save(model.state_dict(), p)
    _expect_input_error(p, "not a fitface model file")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("protocol", [0, pickle.HIGHEST_PROTOCOL])
def test_malicious_pickle_is_never_unpickled(tmp_path, protocol):
    marker = tmp_path / "PWNED"
    payload = pickle.dumps({"generator": _Evil(str(marker))}, protocol=protocol)
    p = tmp_path / "evil.safetensors"
    p.write_bytes(payload)
    _expect_input_error(p, "not a fitface model file")
    with pytest.raises(InputError):
        read_metadata(p)
    assert not marker.exists()
    pickle.loads(payload)  # control: the payload is live when unpickled
    assert marker.exists()


def test_truncated(tmp_path, saved):
    data = saved.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    for cut, match in [(4, "too short"), (8 + header_len // 2, "truncated"), (len(data) - 100, "truncated"),
                       (8 + header_len + 10, "truncated")]:
        p = tmp_path / f"cut{cut}.safetensors"
        p.write_bytes(data[:cut])
        _expect_input_error(p, match)


def test_safetensors_without_fitface_metadata(tmp_path, saved):
    p = _rewrite(saved, tmp_path / "plain.safetensors", metadata={"other": "x"})
    _expect_input_error(p, "without 'fitface' metadata")
    p2 = tmp_path / "nometa.safetensors"
    save_file({"a": torch.zeros(3)}, p2)
    _expect_input_error(p2, "without 'fitface' metadata")
    p3 = _rewrite(saved, tmp_path / "notjson.safetensors", metadata={METADATA_KEY: "{oops"})
    _expect_input_error(p3, "not JSON")


def test_wrong_format_or_version(tmp_path, saved):
    doc = _doc(saved)
    _expect_input_error(_rewrite(saved, tmp_path / "v2.safetensors", doc={**doc, "version": 2}),
                        r"unsupported fitface model format version 2 .*reads version 1")
    _expect_input_error(_rewrite(saved, tmp_path / "fmt.safetensors", doc={**doc, "format": "other"}),
                        "metadata format is 'other'")


@pytest.mark.parametrize("key", ["unit", "latent_layout", "factors", "generator", "landmark_sets", "num_vertices"])
def test_malformed_document(tmp_path, saved, key):
    doc = _doc(saved)
    del doc[key]
    _expect_input_error(_rewrite(saved, tmp_path / "m.safetensors", doc=doc), f"missing '{key}'")


def test_document_inconsistent(tmp_path, saved):
    doc = _doc(saved)
    bad = {**doc, "factors": {"identity": []}}
    _expect_input_error(_rewrite(saved, tmp_path / "a.safetensors", doc=bad), "do not match the layout")
    bad = {**doc, "unit": "furlong"}
    _expect_input_error(_rewrite(saved, tmp_path / "b.safetensors", doc=bad), "unknown unit")
    bad = {**doc, "generator": {**doc["generator"], "latent_dim": 80}}
    _expect_input_error(_rewrite(saved, tmp_path / "c.safetensors", doc=bad), "disagrees with layout")


@pytest.mark.parametrize("name", ["generator.out.weight", "template", "faces", "uv", "landmarks.inner.bary",
                                  "discriminator.trunk.0.weight"])
def test_missing_tensor(tmp_path, saved, name):
    t = load_file(saved)
    del t[name]
    _expect_input_error(_rewrite(saved, tmp_path / "m.safetensors", tensors=t), f"missing tensor '{re.escape(name)}'")


def test_unexpected_tensor(tmp_path, saved):
    t = load_file(saved)
    t["extra"] = torch.zeros(2)
    _expect_input_error(_rewrite(saved, tmp_path / "m.safetensors", tensors=t), "unexpected tensor 'extra'")


@pytest.mark.parametrize(
    "name, shape",
    [("generator.out.weight", (429, 512)), ("generator.fc.weight", (512, 80)), ("template", (143, 3)),
     ("uv", (144, 3)), ("faces", (10, 3)), ("landmarks.inner.bary", (3, 2))],
)
def test_shape_mismatch(tmp_path, saved, name, shape):
    t = load_file(saved)
    t[name] = torch.zeros(shape, dtype=t[name].dtype)
    _expect_input_error(_rewrite(saved, tmp_path / "m.safetensors", tensors=t), f"tensor '{re.escape(name)}' has shape")


def test_bad_values(tmp_path, saved):
    t = load_file(saved)
    t["generator.out.bias"][5] = float("nan")
    _expect_input_error(_rewrite(saved, tmp_path / "nan.safetensors", tensors=t), "NaN or inf")
    t = load_file(saved)
    t["faces"][0, 0] = 144
    _expect_input_error(_rewrite(saved, tmp_path / "faces.safetensors", tensors=t), "out of range")
    t = load_file(saved)
    t["faces"] = t["faces"].float()
    _expect_input_error(_rewrite(saved, tmp_path / "ftype.safetensors", tensors=t), "dtype F32, expected int")
    t = load_file(saved)
    t["landmarks.inner.face_index"][0] = 10_000
    _expect_input_error(_rewrite(saved, tmp_path / "lm.safetensors", tensors=t), "face_index out of range")


def test_grid_helper_is_consistent():
    v, f, uv = grid_mesh(4)
    assert v.shape == (16, 3) and f.shape == (18, 3) and uv.min() == 0 and uv.max() == 1


@pytest.mark.parametrize("kind", ["mlp", "linear"])
def test_the_format_lists_the_generator_tensors_the_networks_hold(kind):
    """fitface.io.model_file_format names the generator's tensors without torch (the numpy
    decoder and load_model check files against that list): they are the networks' state_dict."""
    from fitface.io.model_file_format import expected_generator_tensors
    from fitface.models.linear import LinearGenerator

    gen = Generator(85, 100, hidden=32) if kind == "mlp" else LinearGenerator.empty(85, 100)
    doc = {"generator": gen.config(), "num_vertices": 100}
    assert list(expected_generator_tensors(doc).items()) == [
        (f"generator.{k}", (tuple(v.shape), "float")) for k, v in gen.state_dict().items()]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, ">f2", ">f4", ">f8"])
def test_all_finite_reads_the_exponent_bits_exactly(dtype):
    from fitface.io.model_file_format import all_finite

    a = (np.random.default_rng(0).normal(size=(64, 33)) * 100).astype(dtype)
    info = np.finfo(a.dtype)
    a[0, 0], a[0, 1], a[0, 2] = info.max, -info.max, info.tiny / 4  # extremes and a subnormal: finite
    assert all_finite(a) and all_finite(a[:, ::3]) and all_finite(np.zeros((0, 3), dtype))
    for bad in (np.inf, -np.inf, np.nan):
        b = a.copy()
        b[40, 7] = bad
        assert not all_finite(b) and not all_finite(b[:, ::7])
        assert all_finite(b[:, ::2]) == bool(np.isfinite(b[:, ::2]).all())
