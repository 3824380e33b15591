"""Torch-free decoders (fitface.fitting.decoder): math, VJPs, landmark rows, model files."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fitface.errors import InputError
from fitface.fitting.decoder import LinearDecoder, MLPDecoder, load_decoder, synthetic_mlp_decoder
from fitface.landmarks.sets import LandmarkSet


@pytest.fixture(scope="module")
def dec64():
    return synthetic_mlp_decoder(grid=8, latent=(5, 3, 2), hidden=16, seed=1, dtype=np.float64, landmarks=9)


def numeric_vjp(f, z, g, eps=1e-6):
    """d/dz sum(g * f(z)) by central differences (float64)."""
    out = np.zeros_like(z)
    for i in range(z.shape[1]):
        e = np.zeros_like(z)
        e[:, i] = eps
        out[:, i] = ((f(z + e) - f(z - e)) * g).reshape(z.shape[0], -1).sum(1) / (2 * eps)
    return out


def test_vertices_match_reference_math(dec64):
    z = np.random.default_rng(0).normal(size=(3, dec64.latent_dim))
    pre = z @ dec64.w1.T + dec64.b1
    h = np.where(pre > 0, pre, 0.2 * pre)
    ref = dec64.template + (h @ dec64.w2.T + dec64.b2).reshape(3, -1, 3)
    np.testing.assert_allclose(dec64.vertices(z), ref, rtol=1e-12, atol=1e-9)


def test_landmark_rows_equal_barycentric_points_of_full_decode(dec64):
    z = np.random.default_rng(1).normal(size=(4, dec64.latent_dim))
    lset = dec64.landmark_sets["lm"]
    rows = dec64.landmark_rows("lm")
    assert rows.matrix.shape == (3 * len(lset), dec64.hidden_size)
    expected = lset.points(dec64.vertices(z), dec64.faces)
    np.testing.assert_allclose(dec64.points(z, rows), expected, rtol=1e-12, atol=1e-9)
    assert dec64.landmark_rows("lm") is rows  # cached
    vset = LandmarkSet.from_vertex_indices("v", np.array([0, 5, 17]), dec64.faces)
    np.testing.assert_allclose(dec64.points(z, dec64.landmark_rows(vset)), dec64.vertices(z)[:, [0, 5, 17]],
                               atol=1e-9)
    with pytest.raises(KeyError, match="no landmark set 'nope'"):
        dec64.landmark_rows("nope")


def test_vjps_match_finite_differences(dec64):
    rng = np.random.default_rng(2)
    z = rng.normal(size=(3, dec64.latent_dim))
    rows = dec64.landmark_rows("lm")
    g = rng.normal(size=(3, rows.num_points, 3))
    np.testing.assert_allclose(dec64.points_vjp(z, rows, g), numeric_vjp(lambda x: dec64.points(x, rows), z, g),
                               rtol=1e-6, atol=1e-6)
    gv = rng.normal(size=(3, dec64.num_vertices, 3))
    np.testing.assert_allclose(dec64.vertices_vjp(z, gv), numeric_vjp(dec64.vertices, z, gv), rtol=1e-6, atol=1e-6)


def test_linear_decoder_is_analytic():
    rng = np.random.default_rng(3)
    base = synthetic_mlp_decoder(grid=6, latent=(4,), hidden=8, seed=0, dtype=np.float64)
    basis = rng.normal(size=(3 * base.num_vertices, 4))
    lin = LinearDecoder(base.template, basis, base.faces, landmark_sets=base.landmark_sets)
    z = rng.normal(size=(2, 4))
    np.testing.assert_allclose(lin.vertices(z), base.template + (z @ basis.T).reshape(2, -1, 3), atol=1e-12)
    rows = lin.landmark_rows("lm")
    g = rng.normal(size=(2, rows.num_points, 3))
    # a linear map's VJP is the transpose: <g, J z> = <J^T g, z>
    jz = lin.points(z, rows) - lin.points(np.zeros_like(z), rows)
    assert np.sum(g * jz) == pytest.approx(np.sum(lin.points_vjp(z, rows, g) * z), rel=1e-12)
    gv = rng.normal(size=(2, lin.num_vertices, 3))
    np.testing.assert_allclose(lin.vertices_vjp(z, gv), gv.reshape(2, -1) @ basis, atol=1e-12)


def test_float32_agrees_with_float64(dec64):
    d32 = MLPDecoder(dec64.w1, dec64.b1, dec64.w2, dec64.b2, dec64.template, dec64.faces, dec64.layout,
                     landmark_sets=dec64.landmark_sets, dtype=np.float32)
    z = np.random.default_rng(4).normal(size=(2, dec64.latent_dim))
    v64, v32 = dec64.vertices(z), d32.vertices(z)
    assert v32.dtype == np.float32
    np.testing.assert_allclose(v32, v64, rtol=1e-5, atol=1e-4 * np.abs(v64).max())


def test_against_torch_generator_autograd(dec64):
    torch = pytest.importorskip("torch")
    from fitface.models.generator import Generator

    gen = Generator(dec64.latent_dim, dec64.num_vertices, hidden=dec64.hidden_size, negative_slope=0.2).double()
    with torch.no_grad():
        gen.fc.weight.copy_(torch.from_numpy(dec64.w1))
        gen.fc.bias.copy_(torch.from_numpy(dec64.b1))
        gen.out.weight.copy_(torch.from_numpy(dec64.w2))
        gen.out.bias.copy_(torch.from_numpy(dec64.b2))
    rng = np.random.default_rng(5)
    z = rng.normal(size=(3, dec64.latent_dim))
    gv = rng.normal(size=(3, dec64.num_vertices, 3))
    zt = torch.tensor(z, requires_grad=True)
    verts = torch.from_numpy(dec64.template) + gen(zt)
    (verts * torch.from_numpy(gv)).sum().backward()
    np.testing.assert_allclose(dec64.vertices(z), verts.detach().numpy(), rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(dec64.vertices_vjp(z, gv), zt.grad.numpy(), rtol=1e-10, atol=1e-10)
    # landmark path against autograd through the full generator + barycentric gather
    lset = dec64.landmark_sets["lm"]
    rows = dec64.landmark_rows("lm")
    g = rng.normal(size=(3, rows.num_points, 3))
    zt = torch.tensor(z, requires_grad=True)
    verts = torch.from_numpy(dec64.template) + gen(zt)
    corners = torch.from_numpy(dec64.faces[lset.face_index])
    pts = (verts[:, corners] * torch.from_numpy(lset.bary)[None, :, :, None]).sum(2)
    (pts * torch.from_numpy(g)).sum().backward()
    np.testing.assert_allclose(dec64.points(z, rows), pts.detach().numpy(), rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(dec64.points_vjp(z, rows, g), zt.grad.numpy(), rtol=1e-10, atol=1e-10)


def _save_model(path, half=False):
    torch = pytest.importorskip("torch")
    from fitface.models.face_model import FaceModel
    from fitface.models.generator import Generator
    from fitface.models.latent import LatentLayout
    from fitface.models.model_file import save_model

    src = synthetic_mlp_decoder(grid=8, latent=(5, 3, 2), hidden=16, seed=1, dtype=np.float64, landmarks=9)
    gen = Generator(src.latent_dim, src.num_vertices, hidden=16)
    with torch.no_grad():
        gen.fc.weight.copy_(torch.from_numpy(src.w1))
        gen.fc.bias.copy_(torch.from_numpy(src.b1))
        gen.out.weight.copy_(torch.from_numpy(src.w2))
        gen.out.bias.copy_(torch.from_numpy(src.b2))
    uv = (src.template[:, :2] - src.template[:, :2].min(0)) / np.ptp(src.template[:, :2], axis=0)
    layout = LatentLayout((("identity", 5), ("expression", 3), ("noise", 2)))
    model = FaceModel(torch.from_numpy(src.template).float(), torch.from_numpy(src.faces), torch.from_numpy(uv).float(),
                      layout, gen, unit="mm", landmark_sets=src.landmark_sets)
    save_model(path, model, half=half)
    return model


@pytest.mark.parametrize("half", [False, True])
def test_load_decoder_matches_load_model(tmp_path, half):
    torch = pytest.importorskip("torch")
    from fitface.models.model_file import load_model

    path = tmp_path / "m.safetensors"
    _save_model(path, half=half)
    dec = load_decoder(path)
    model = load_model(path)
    assert dec.model_id == model.model_id
    assert dec.unit == "mm" and dec.layout == model.layout and dec.dtype == np.float32
    assert list(dec.landmark_sets) == ["lm"]
    z = np.random.default_rng(6).normal(size=(2, dec.latent_dim)).astype(np.float32)
    with torch.no_grad():
        ref = model.decode(torch.from_numpy(z)).numpy()
    np.testing.assert_allclose(dec.vertices(z), ref, rtol=1e-5, atol=1e-4)


def test_load_decoder_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(InputError, match="not a fitface model file|not a safetensors"):
        load_decoder(bad)
    with pytest.raises(InputError, match="no such model file"):
        load_decoder(tmp_path / "missing.safetensors")
    good = tmp_path / "m.safetensors"
    _save_model(good)
    data = good.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated"):
        load_decoder(tmp_path / "trunc.safetensors")


def test_fitting_never_imports_torch():
    code = ("import sys, fitface.fitting.decoder, fitface.fitting.landmark_fit, fitface.fitting.surface_refine, "
            "fitface.fitting.similarity, fitface.fitting.adam, fitface.fitting.fit_loop, "
            "fitface.fitting.projection_fit; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
