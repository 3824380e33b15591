"""Tests of the geometry mapping layer (paper §4.1, eq. 5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fitface.geometry.mapping import GeometryMapping, geometry_image, pixel_uv, uv_to_pixel
from fitface.tolerances import dtype_rtol


def _grid(n: int):
    """Planar (n+1)^2-vertex grid of the unit square: uv = xy, faces counter-clockwise."""
    xs = np.linspace(0.0, 1.0, n + 1)
    gx, gy = np.meshgrid(xs, xs)
    uv = np.stack([gx.ravel(), gy.ravel()], 1)
    idx = np.arange(uv.shape[0]).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]
    f = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    return uv, f


def _grid_with_holes(n: int):
    """The grid with the triangles of two rectangular "eye" holes and a "mouth" removed."""
    uv, f = _grid(n)
    centre = uv[f].mean(1)  # (F, 2)
    holes = [((0.2, 0.4), (0.6, 0.75)), ((0.6, 0.8), (0.6, 0.75)), ((0.3, 0.7), (0.15, 0.3))]
    drop = np.zeros(len(f), bool)
    for (u0, u1), (v0, v1) in holes:
        drop |= (centre[:, 0] > u0) & (centre[:, 0] < u1) & (centre[:, 1] > v0) & (centre[:, 1] < v1)
    return uv, f[~drop], holes


def _affine(uv, a):
    """(V, 2) uv, (3, 3) A -> (V, 3) A @ [u, v, 1]."""
    return np.concatenate([uv, np.ones((len(uv), 1))], 1) @ a.T


A = np.array([[2.0, -1.0, 0.5], [0.3, 4.0, -2.0], [-1.5, 0.7, 3.0]])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("method", ["sparse", "gather"])
def test_affine_function_of_uv_is_reproduced(dtype, method):
    uv, f, _ = _grid_with_holes(13)
    m = GeometryMapping(uv, f, size=32, method=method)
    verts = torch.tensor(_affine(uv, A), dtype=dtype)[None]  # (1, V, 3)
    img = m(verts)
    assert img.shape == (1, 3, 32, 32) and img.dtype == dtype
    expect = _affine(pixel_uv(32).reshape(-1, 2), A).T.reshape(3, 32, 32)
    mask = m.mask.numpy()
    assert 0.5 < mask.mean() < 1.0
    got = img[0].double().numpy()
    scale = np.abs(expect).max()
    np.testing.assert_allclose(got[:, mask], expect[:, mask], rtol=0, atol=10 * dtype_rtol(dtype) * scale)
    # holes ("nearest" fill) repeat a covered value, so they differ from the affine extension
    assert np.abs(got[:, ~mask] - expect[:, ~mask]).max() > 1e-3


def test_uv_orientation_convention():
    # v = 0 is the bottom row, u = 0 the left column
    uv, f = _grid(4)
    m = GeometryMapping(uv, f, size=8)
    verts = torch.tensor(np.concatenate([uv, np.zeros((len(uv), 1))], 1))[None]
    img = m(verts)[0]
    assert img[0, 0, 0] < img[0, 0, -1]  # u grows to the right
    assert img[1, -1, 0] < img[1, 0, 0]  # v grows upwards
    np.testing.assert_allclose(img[1, -1, 0].item(), 0.5 / 8, atol=1e-12)
    np.testing.assert_allclose(uv_to_pixel(np.array([[0.0, 0.0], [1.0, 1.0]]), 8), [[0, 8], [8, 0]])


def test_square_coverage_and_matrix():
    uv, f = _grid(10)
    m = GeometryMapping(uv, f, size=16)
    print(f"coverage of the square grid at 16x16: {m.coverage:.4f}")
    assert m.coverage == 1.0 and m.mask.all()
    uvh, fh, _ = _grid_with_holes(10)
    mh = GeometryMapping(uvh, fh, size=16)
    print(f"coverage of the grid with holes at 16x16: {mh.coverage:.4f}")
    assert mh.coverage < 1.0
    # the sparse matrix agrees with forward, has 3 entries per row, rows sum to 1 (partition of unity)
    x = torch.randn(2, len(uvh), 3, dtype=torch.float64)
    mat = mh.matrix()
    assert mat.shape == (256, len(uvh))
    np.testing.assert_array_equal(np.diff(mat.indptr), 3)
    np.testing.assert_allclose(np.asarray(mat.sum(1)).ravel(), 1.0, atol=1e-12)
    img = mh(x).numpy()
    for b in range(2):
        for c in range(3):
            np.testing.assert_allclose(mat @ x[b, :, c].numpy(), img[b, c].reshape(-1), atol=1e-12)
    tm = mh.matrix("torch")
    assert tm.layout == torch.sparse_csr
    np.testing.assert_allclose((tm @ x[0]).numpy(), img[0].reshape(3, -1).T, atol=1e-12)


def test_zero_fill():
    uv, f, _ = _grid_with_holes(10)
    m = GeometryMapping(uv, f, size=24, fill="zero")
    img = m(torch.ones(1, len(uv), 3, dtype=torch.float64))[0]
    mask = m.mask
    assert (img[:, ~mask] == 0).all()
    np.testing.assert_allclose(img[:, mask].numpy(), 1.0, atol=1e-12)
    rows = np.diff(m.matrix().indptr)
    assert set(rows[~mask.numpy().reshape(-1)]) == {0} and set(rows[mask.numpy().reshape(-1)]) == {3}


def test_gradcheck():
    uv, f, _ = _grid_with_holes(6)
    for method in ("sparse", "gather"):
        m = GeometryMapping(uv, f, size=10, method=method)
        x = torch.randn(2, len(uv), 3, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(m, (x,))


def test_follows_to_and_state_dict():
    uv, f = _grid(6)
    m = GeometryMapping(uv, f, size=12).to(dtype=torch.float32)
    assert m.weight.dtype == torch.float32 and m.index.dtype == torch.int64 and m.mask.dtype == torch.bool
    m = m.to(dtype=torch.float64)
    assert m.weight.dtype == torch.float64
    out = m(torch.rand(3, len(uv), 3, dtype=torch.float64))
    assert out.dtype == torch.float64
    assert set(m.state_dict()) == {"index", "weight", "mask", "face_index"}
    # the float32 input path gives float32
    assert m(torch.rand(1, len(uv), 3)).dtype == torch.float32
    # the one-shot function agrees with the module
    x = torch.rand(2, len(uv), 3, dtype=torch.float64)
    torch.testing.assert_close(geometry_image(x, uv, f, 12), GeometryMapping(uv, f, 12)(x))


def test_bad_inputs():
    uv, f = _grid(4)
    with pytest.raises(ValueError, match="uv"):
        GeometryMapping(uv * 1.5, f)
    with pytest.raises(ValueError, match="uv"):
        GeometryMapping(uv - 0.1, f)
    with pytest.raises(ValueError, match="uv"):
        GeometryMapping(np.zeros((len(uv), 3)), f)
    with pytest.raises(ValueError, match="faces"):
        GeometryMapping(uv, f[:, :2])
    with pytest.raises(ValueError, match="faces"):
        GeometryMapping(uv, f + 100)
    with pytest.raises(ValueError, match="size"):
        GeometryMapping(uv, f, size=0)
    with pytest.raises(ValueError, match="fill"):
        GeometryMapping(uv, f, fill="mean")
    m = GeometryMapping(uv, f, size=8)
    with pytest.raises(ValueError, match="vertices"):
        m(torch.zeros(1, len(uv) + 1, 3))
    with pytest.raises(ValueError, match="vertices"):
        m(torch.zeros(len(uv), 3))
    with pytest.raises(ValueError, match="vertices"):
        m(torch.zeros(1, len(uv), 3, dtype=torch.int64))


def test_ict_harmonic_uv_coverage(ict_mesh):
    parameterization = pytest.importorskip("fitface.geometry.parameterization")
    v, f = ict_mesh
    uv = parameterization.harmonic_uv(v, f).uv
    m = GeometryMapping(uv, f, size=64)
    print(f"ICT harmonic UV coverage at 64x64: {m.coverage:.4f}")
    assert m.coverage > 0.9
    img = m(torch.tensor(v)[None])[0]  # the neutral's geometry image
    assert torch.isfinite(img).all()
    lo, hi = torch.tensor(v.min(0)), torch.tensor(v.max(0))
    assert ((img.permute(1, 2, 0) >= lo - 1e-9) & (img.permute(1, 2, 0) <= hi + 1e-9)).all()
