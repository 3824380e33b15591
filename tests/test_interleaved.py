"""kron(M, I_3) products on (B, V, 3) batches (fitface.geometry.interleaved)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from fitface.geometry.interleaved import InterleavedOperator


def _matrix(rows: int, cols: int, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    m = sp.random(rows, cols, density=0.2, random_state=rng, format="csr")
    m.data -= 0.5
    return m


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equals_the_vertex_major_product_bit_for_bit(dtype):
    m = _matrix(13, 29)
    x = torch.randn(5, 29, 3, dtype=dtype, generator=torch.Generator().manual_seed(1))
    want = (torch.sparse_csr_tensor(torch.from_numpy(m.indptr).long(), torch.from_numpy(m.indices).long(),
                                    torch.from_numpy(m.data), size=m.shape, check_invariants=True).to(dtype)
            @ x.permute(1, 0, 2).reshape(29, 15)).reshape(13, 5, 3).permute(1, 0, 2)  # (B, R, 3)
    got = InterleavedOperator(m)(x)
    assert got.shape == (5, 13, 3) and got.dtype == dtype
    assert torch.equal(got, want)
    # and against scipy in float64 (each coordinate alone)
    ref = np.stack([np.stack([m @ x[b, :, c].double().numpy() for c in range(3)], -1) for b in range(5)])
    np.testing.assert_allclose(got.double().numpy(), ref, rtol=0, atol=1e-5 if dtype == torch.float32 else 1e-12)


def test_gradients_to_second_order():
    op = InterleavedOperator(_matrix(7, 11, seed=2))
    x = torch.randn(3, 11, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: op(t), (x,))
    assert torch.autograd.gradgradcheck(lambda t: op(t).square(), (x,))


def test_rejects_a_wrong_shape():
    op = InterleavedOperator(_matrix(4, 6))
    with pytest.raises(ValueError, match="x"):
        op(torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match="x"):
        op(torch.zeros(2, 6, 2))
