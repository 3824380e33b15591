"""Cotangent / uniform / mean-value Laplacians and the torch regulariser."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from fitface.geometry.laplacian import (
    LaplacianRegularizer,
    cotangent_laplacian,
    laplacian_tensor,
    mean_value_laplacian,
    normalize_laplacian,
    uniform_laplacian,
)
from fitface.tolerances import dtype_rtol, tol

RTOL = dtype_rtol(np.float64)


def jittered_grid(n: int = 7, seed: int = 0, z=None):
    """Flat n x n grid on [0,1]^2 with interior vertices jittered in the plane (obtuse
    angles included), CCW faces; optional z(x, y) lifts it into 3D."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n))
    v = np.stack([x.ravel(), y.ravel(), np.zeros(n * n)], axis=1)
    interior = (v[:, 0] > 0) & (v[:, 0] < 1) & (v[:, 1] > 0) & (v[:, 1] < 1)
    v[interior, :2] += rng.uniform(-0.3, 0.3, (interior.sum(), 2)) / (n - 1)
    if z is not None:
        v[:, 2] = z(v[:, 0], v[:, 1])
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]
    f = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    return v, f, interior


def rel_diff(a, b) -> float:
    return float(abs(a - b).max() / abs(b).max())


def test_matches_libigl_cotmatrix_on_ict(ict_mesh):
    igl = pytest.importorskip("igl")
    v, f = ict_mesh
    L = cotangent_laplacian(v, f)
    ref = igl.cotmatrix(v, f)
    assert isinstance(L, sp.csr_matrix) and L.shape == (len(v), len(v)) and L.dtype == np.float64
    assert rel_diff(L, ref) <= tol.laplacian_vs_igl_rel
    assert L.nnz == sp.csr_matrix(ref).nnz


def test_matches_libigl_on_curved_jittered_grid():
    igl = pytest.importorskip("igl")
    v, f, _ = jittered_grid(9, seed=3, z=lambda x, y: np.sin(3 * x) * np.cos(2 * y))
    assert rel_diff(cotangent_laplacian(v, f), igl.cotmatrix(v, f)) <= tol.laplacian_vs_igl_rel


def test_single_triangles_by_hand():
    # right triangle: 90 deg at vertex 0 (cot 0), 45 deg at 1 and 2 (cot 1)
    v = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    L = cotangent_laplacian(v, np.array([[0, 1, 2]])).toarray()
    expect = np.array([[-1.0, 0.5, 0.5], [0.5, -0.5, 0.0], [0.5, 0.0, -0.5]])
    np.testing.assert_allclose(L, expect, atol=RTOL)
    # equilateral: every cot = 1/sqrt(3), off-diagonal 1/(2 sqrt(3)); scale-free
    s = 7.5
    v = s * np.array([[0.0, 0, 0], [1, 0, 0], [0.5, np.sqrt(3) / 2, 0]])
    L = cotangent_laplacian(v, np.array([[0, 1, 2]])).toarray()
    w = 1 / (2 * np.sqrt(3))
    np.testing.assert_allclose(L, w * np.array([[-2, 1, 1], [1, -2, 1], [1, 1, -2]]), rtol=RTOL)
    # mean value on the equilateral: tan(30 deg) / edge length
    M = mean_value_laplacian(v, np.array([[0, 1, 2]])).toarray()
    m = np.tan(np.pi / 6) / s
    np.testing.assert_allclose(M, m * np.array([[-2, 1, 1], [1, -2, 1], [1, 1, -2]]), rtol=RTOL)
    U = uniform_laplacian(3, np.array([[0, 1, 2]])).toarray()
    np.testing.assert_array_equal(U, [[-2, 1, 1], [1, -2, 1], [1, 1, -2]])


def test_rows_sum_to_zero_symmetric_and_nsd():
    v, f, _ = jittered_grid(8, seed=1, z=lambda x, y: 0.3 * x * y)
    for L, symmetric, positive in ((cotangent_laplacian(v, f), True, False),
                                   (uniform_laplacian(len(v), f), True, True),
                                   (mean_value_laplacian(v, f), False, True)):
        scale = abs(L).max()
        assert abs(L.sum(axis=1)).max() <= RTOL * scale
        if symmetric:
            assert abs(L - L.T).max() <= RTOL * scale
            eig = np.linalg.eigvalsh(L.toarray())
            assert eig.max() <= RTOL * scale  # negative semi-definite
            assert eig.min() < -0.01 * scale  # and not trivially zero
        off = sp.csr_matrix(L - sp.diags(L.diagonal()))
        off.eliminate_zeros()
        if positive:  # mean-value and uniform weights are positive on every edge
            assert off.data.min() > 0 and off.nnz == L.nnz - L.shape[0]
    assert abs(mean_value_laplacian(v, f) - mean_value_laplacian(v, f).T).max() > 1e-3  # really not symmetric


def test_linear_precision_on_flat_mesh():
    v, f, interior = jittered_grid(9, seed=2)
    g = 2.0 * v[:, 0] - 3.0 * v[:, 1] + 0.7  # affine function of position
    for L in (cotangent_laplacian(v, f), mean_value_laplacian(v, f)):
        r = L @ g
        assert abs(r[interior]).max() <= 100 * RTOL * abs(L).max()
        assert abs(r[~interior]).max() > 1e-3  # boundary rows are not zero: the test can fail
    # the uniform Laplacian has no linear precision on a jittered mesh
    assert abs((uniform_laplacian(len(v), f) @ g)[interior]).max() > 1e-3


def test_cotangent_is_scale_and_unit_invariant():
    v, f, _ = jittered_grid(6, seed=4, z=lambda x, y: x**2)
    L1, L2 = cotangent_laplacian(v, f), cotangent_laplacian(10.0 * v + 3.0, f)
    assert rel_diff(L2, L1) <= 10 * RTOL


def test_normalize_laplacian():
    v, f, _ = jittered_grid(6, seed=5)
    N = normalize_laplacian(cotangent_laplacian(v, f))
    np.testing.assert_allclose(N.diagonal(), -1.0, rtol=RTOL)
    assert abs(N.sum(axis=1)).max() <= 10 * RTOL
    with pytest.raises(ValueError, match="diagonal entry 3"):
        normalize_laplacian(uniform_laplacian(4, np.array([[0, 1, 2]])))  # vertex 3 isolated


def test_laplacian_tensor_matches_scipy():
    v, f, _ = jittered_grid(6, seed=6)
    L = cotangent_laplacian(v, f)
    T = laplacian_tensor(L, dtype=torch.float64)
    x = np.random.default_rng(0).normal(size=(len(v), 3))
    y = torch.sparse.mm(T, torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, L @ x, rtol=RTOL, atol=RTOL)
    assert laplacian_tensor(L).dtype == torch.float32


def test_regularizer_value_translation_and_scale():
    v, f, _ = jittered_grid(6, seed=7, z=lambda x, y: 0.2 * np.sin(4 * x))
    reg = LaplacianRegularizer(v, f)
    rng = np.random.default_rng(1)
    d = rng.normal(size=(3, len(v), 3))
    got = reg(torch.from_numpy(d))
    assert got.shape == (3,) and got.dtype == torch.float64
    N = normalize_laplacian(cotangent_laplacian(v, f))
    expect = [np.mean((N @ d[b]) ** 2) for b in range(3)]
    np.testing.assert_allclose(got.numpy(), expect, rtol=RTOL)
    # a rigid translation of every vertex costs nothing (float32 input too)
    shift = torch.tensor([1.5, -2.0, 30.0]).expand(2, len(v), 3)
    assert reg(shift).abs().max() <= 1e-4 * 30.0**2 * dtype_rtol(torch.float32)
    assert reg(shift).dtype == torch.float32
    # template unit/size does not change the loss; the displacement unit does (squared)
    reg_mm = LaplacianRegularizer(10.0 * v, f)
    np.testing.assert_allclose(reg_mm(torch.from_numpy(d)).numpy(), got.numpy(), rtol=1e-8)
    np.testing.assert_allclose(reg(torch.from_numpy(10 * d)).numpy(), 100 * got.numpy(), rtol=1e-8)
    # reduction="sum" is V*3 times the mean
    s = LaplacianRegularizer(v, f, reduction="sum")(torch.from_numpy(d))
    np.testing.assert_allclose(s.numpy(), got.numpy() * len(v) * 3, rtol=1e-10)
    with pytest.raises(ValueError, match="displacements"):
        reg(torch.zeros(2, len(v) + 1, 3))


def test_regularizer_gradcheck_and_buffer():
    v, f, _ = jittered_grid(4, seed=8, z=lambda x, y: x * y)
    reg = LaplacianRegularizer(v, f, normalized=False).double()
    assert "L" in dict(reg.named_buffers()) and "L" not in reg.state_dict()
    d = torch.randn(2, len(v), 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(reg, (d,))
    reg.to(torch.float32)
    assert reg.L.dtype == torch.float32 and reg.L.is_sparse
    assert torch.autograd.gradcheck(LaplacianRegularizer(v, f).double(), (d,))
