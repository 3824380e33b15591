"""CoMA's building blocks: the mesh hierarchy (models/mesh_sampling.py) and the Chebyshev
convolution (models/chebyshev.py).

Up-sampling tolerance (stated here, measured on both templates): for every level ``l``, the
up-sampled coarse vertices ``up[l] @ vertices[l + 1]`` are the fine vertices' exact closest
points on the coarse surface, and their distance to the fine vertices has an RMS below
``RMS_EDGE[l]`` x the fine level's mean edge length and a maximum below ``MAX_EDGE`` x the
coarse level's mean edge length (measured: RMS 0.026 / 0.054 / 0.11 / 0.17 fine edges on the
procedural template, 0.055 / 0.093 / 0.15 / 0.32 on ICT; max 0.33 / 0.87 coarse edges).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from fitface.models.chebyshev import (
    ChebConv,
    cheb_conv,
    hierarchy_tensors,
    resample,
    rescaled_laplacian,
    rescaled_laplacian_tensor,
)
from fitface.models.mesh_sampling import MeshHierarchy, build_hierarchy, mesh_adjacency

PROCEDURAL_SIZES = (4285, 1072, 268, 67, 17)
ICT_SIZES = (9409, 2353, 589, 148, 37)
#: per level, the bound on the RMS up-sampling error in mean fine edge lengths (module docstring)
RMS_EDGE = (0.1, 0.15, 0.25, 0.45)
#: bound on the largest up-sampling error in mean coarse edge lengths
MAX_EDGE = 1.2


@pytest.fixture(scope="module")
def procedural():
    from fitface.data.procedural import template_mesh, template_vertices

    return build_hierarchy(template_vertices(), template_mesh().faces)


@pytest.fixture(scope="module")
def ict(ict_mesh):
    return build_hierarchy(*ict_mesh)


@pytest.fixture(params=["procedural", "ict"])
def hierarchy(request):
    return request.getfixturevalue(request.param)


def _mean_edge(h: MeshHierarchy, level: int) -> float:
    e = sp.triu(h.adjacency[level]).tocoo()
    x = h.vertices[level]
    return float(np.linalg.norm(x[e.row] - x[e.col], axis=1).mean())


# ------------------------------------------------------------------------------ hierarchy
def test_level_sizes_procedural(procedural):
    assert procedural.sizes == PROCEDURAL_SIZES
    assert procedural.num_levels == 4


def test_level_sizes_ict(ict):
    assert ict.sizes == ICT_SIZES


def test_down_sampling_selects_rows(hierarchy):
    for level, d in enumerate(hierarchy.down):
        assert d.shape == (hierarchy.sizes[level + 1], hierarchy.sizes[level])
        assert np.array_equal(np.diff(d.indptr), np.ones(d.shape[0]))  # one non-zero per row
        assert np.array_equal(d.data, np.ones(d.shape[0]))
        assert np.array_equal(d.indices, hierarchy.survivors[level])
        assert np.all(np.diff(hierarchy.survivors[level]) > 0)  # distinct, increasing
        assert np.array_equal(d @ hierarchy.vertices[level], hierarchy.vertices[level + 1])


def test_up_sampling_rows_are_barycentric(hierarchy):
    for level, u in enumerate(hierarchy.up):
        assert u.shape == (hierarchy.sizes[level], hierarchy.sizes[level + 1])
        assert np.diff(u.indptr).max() <= 3
        assert u.data.min() > 0 and u.data.max() <= 1
        np.testing.assert_allclose(np.asarray(u.sum(axis=1)).ravel(), 1.0, rtol=0, atol=1e-12)
        # the non-zeros of a row are the corners of one coarse triangle (or a vertex or edge of one)
        tris = {tuple(sorted(t)) for t in hierarchy.faces[level + 1].tolist()}
        for r in range(0, u.shape[0], 7):
            cols = u.indices[u.indptr[r]:u.indptr[r + 1]]
            assert any(set(cols) <= set(t) for t in tris) if len(cols) < 3 else tuple(sorted(cols)) in tris
        # survivors come back exactly
        restored = (u @ hierarchy.down[level]).tocsr()[hierarchy.survivors[level]]
        assert np.array_equal(restored.toarray(), hierarchy.down[level].toarray())


def test_up_sampling_reproduces_the_fine_surface(hierarchy):
    from fitface.evaluation.sparse_reconstruction import SurfaceDistance

    for level, u in enumerate(hierarchy.up):
        fine, coarse, cf = hierarchy.vertices[level], hierarchy.vertices[level + 1], hierarchy.faces[level + 1]
        rec = u @ coarse
        err = np.linalg.norm(rec - fine, axis=1)
        surface = SurfaceDistance(coarse, cf)
        assert surface(rec).max() < 1e-9 * _mean_edge(hierarchy, level)  # on the coarse surface
        np.testing.assert_allclose(err, surface(fine), rtol=0, atol=1e-9)  # at the closest point
        rms = np.sqrt((err ** 2).mean())
        assert rms < RMS_EDGE[level] * _mean_edge(hierarchy, level), (level, rms)
        assert err.max() < MAX_EDGE * _mean_edge(hierarchy, level + 1), (level, err.max())


def test_adjacency_and_faces(hierarchy):
    for level, a in enumerate(hierarchy.adjacency):
        n = hierarchy.sizes[level]
        f = hierarchy.faces[level]
        assert f.dtype == np.int64 and f.min() >= 0 and f.max() < n
        assert np.all((f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2]))
        assert a.shape == (n, n) and (a != a.T).nnz == 0 and a.diagonal().max() == 0
        assert set(a.data.tolist()) == {1.0}
        edges = {tuple(sorted(e)) for t in f.tolist() for e in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0]))}
        coo = sp.triu(a).tocoo()
        assert set(zip(coo.row.tolist(), coo.col.tolist())) == edges
        assert np.asarray(a.sum(axis=1)).min() >= 1  # every level has a Laplacian
        rescaled_laplacian(a)


def test_hierarchy_is_deterministic(procedural):
    from fitface.data.procedural import template_mesh, template_vertices

    again = build_hierarchy(template_vertices(), template_mesh().faces).to_arrays()
    first = procedural.to_arrays()
    assert first.keys() == again.keys()
    for key in first:
        assert np.array_equal(first[key], again[key]), key


def test_arrays_round_trip(procedural, tmp_path):
    from safetensors.numpy import load_file, save_file

    arrays = procedural.to_arrays()
    assert all(isinstance(a, np.ndarray) and a.dtype in (np.float64, np.int64) for a in arrays.values())
    save_file(arrays, str(tmp_path / "h.safetensors"))
    back = MeshHierarchy.from_arrays(load_file(str(tmp_path / "h.safetensors")))
    assert back.sizes == procedural.sizes
    again = back.to_arrays()
    for key in arrays:
        assert np.array_equal(arrays[key], again[key]) and arrays[key].dtype == again[key].dtype, key
    for name in ("down", "up", "adjacency"):
        for m0, m1 in zip(getattr(procedural, name), getattr(back, name)):
            assert m1.format == "csr" and (m0 != m1).nnz == 0
    missing = dict(arrays)
    del missing["up.2.values"]
    with pytest.raises(ValueError, match="up.2.values"):
        MeshHierarchy.from_arrays(missing)


def test_hierarchy_rejects_bad_input():
    from fitface.data.procedural import template_mesh, template_vertices

    v, f = template_vertices(), template_mesh().faces
    with pytest.raises(ValueError, match="levels"):
        build_hierarchy(v, f, levels=6)  # 17 -> 5 -> 2 vertices
    with pytest.raises(ValueError, match="factor"):
        build_hierarchy(v, f, factor=1)
    with pytest.raises(ValueError, match="vertices"):
        build_hierarchy(v[:, :2], f)
    with pytest.raises(ValueError, match="faces"):
        build_hierarchy(v, f + len(v))


# ------------------------------------------------------------------------------ Chebyshev
#: a hand-drawn mesh: a square split into 4 triangles around a centre vertex 4, plus a flap 5
SMALL_FACES = np.array([[0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4], [1, 5, 2]])
SMALL_EDGES = [(0, 1), (1, 2), (2, 3), (3, 0), (0, 4), (1, 4), (2, 4), (3, 4), (1, 5), (2, 5)]


def _small_laplacian_dense() -> np.ndarray:
    a = np.zeros((6, 6))
    for i, j in SMALL_EDGES:
        a[i, j] = a[j, i] = 1.0
    deg = a.sum(axis=1)  # [3, 4, 4, 3, 4, 2]
    lap = np.eye(6) - a / np.sqrt(np.outer(deg, deg))
    return lap - np.eye(6)


def test_rescaled_laplacian_matches_hand_built():
    want = _small_laplacian_dense()
    adj = mesh_adjacency(6, SMALL_FACES)
    np.testing.assert_allclose(rescaled_laplacian(adj).toarray(), want, rtol=0, atol=1e-15)
    t = rescaled_laplacian_tensor(adj, dtype=torch.float64)
    assert t.is_sparse and t.shape == (6, 6)
    np.testing.assert_allclose(t.to_dense().numpy(), want, rtol=0, atol=1e-15)
    assert rescaled_laplacian(adj + sp.eye(6)).toarray() == pytest.approx(want)  # self-loops ignored
    with pytest.raises(ValueError, match="no neighbour"):
        rescaled_laplacian(sp.csr_matrix((3, 3)))
    with pytest.raises(ValueError, match="symmetric"):
        rescaled_laplacian(sp.csr_matrix(np.triu(np.ones((3, 3)), 1)))


def _dense_reference(x: np.ndarray, lap: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """sum_k T_k(L^) x W_k + b with T_k(L^) = Q cos(k arccos(lambda)) Q^T (no recurrence)."""
    lam, q = np.linalg.eigh(lap)
    fin = x.shape[-1]
    k_terms = weight.shape[0] // fin
    out = np.zeros(x.shape[:2] + (weight.shape[1],))
    for k in range(k_terms):
        tk = (q * np.cos(k * np.arccos(np.clip(lam, -1, 1)))) @ q.T
        out += np.einsum("uv,bvf,fo->buo", tk, x, weight[k * fin:(k + 1) * fin])
    return out + bias


@pytest.mark.parametrize("order", [1, 2, 3, 6])
@pytest.mark.parametrize("fin,fout", [(4, 5), (5, 2)])  # the three-term recurrence; Clenshaw's (F_out < F_in)
def test_cheb_conv_matches_dense_reference(procedural, order, fin, fout):
    adj = procedural.adjacency[3]  # 67 vertices
    lap = rescaled_laplacian(adj).toarray()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 67, fin, dtype=torch.float64, generator=g)
    layer = ChebConv(fin, fout, rescaled_laplacian_tensor(adj, dtype=torch.float64), order=order)
    with torch.no_grad():
        layer.bias.normal_(generator=g)
    got = layer(x).detach().numpy()
    want = _dense_reference(x.numpy(), lap, layer.weight.detach().numpy(), layer.bias.detach().numpy())
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("fin,fout", [(3, 4), (4, 2)])
def test_cheb_conv_gradcheck(procedural, fin, fout):
    """float64 gradcheck of both recurrences w.r.t. the features, the weight and the bias."""
    lap = rescaled_laplacian_tensor(procedural.adjacency[4], dtype=torch.float64)  # 17 vertices
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, lap.shape[0], fin, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(fin * 6, fout, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(fout, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: cheb_conv(x, lap, w, b), (x, w, b))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_cheb_conv_matches_torch_geometric(procedural):
    from torch_geometric.nn import ChebConv as PygChebConv

    adj = procedural.adjacency[2]  # 268 vertices
    coo = adj.tocoo()
    edge_index = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    torch.manual_seed(0)
    ours = ChebConv(3, 16, rescaled_laplacian_tensor(adj, dtype=torch.float64), order=6)
    assert ours.weight.dtype == torch.float64
    ref = PygChebConv(3, 16, K=6, normalization="sym").double()
    with torch.no_grad():
        ours.bias.normal_()
        for k, lin in enumerate(ref.lins):
            lin.weight.copy_(ours.weight[3 * k:3 * (k + 1)].T)
        ref.bias.copy_(ours.bias)
    x = torch.randn(2, 268, 3, dtype=torch.float64, requires_grad=True)
    got = ours(x)
    want = torch.stack([ref(x[b], edge_index) for b in range(2)])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    (g1,) = torch.autograd.grad(got.square().sum(), x)
    (g2,) = torch.autograd.grad(want.square().sum(), x)
    torch.testing.assert_close(g1, g2, rtol=0, atol=1e-10)


def test_cheb_conv_module_buffers_and_errors():
    adj = mesh_adjacency(6, SMALL_FACES)
    layer = ChebConv(2, 3, rescaled_laplacian(adj))
    assert layer.weight.shape == (12, 3) and layer.laplacian.dtype == torch.float32
    assert set(layer.state_dict()) == {"weight", "bias"}  # L^ is not a persistent buffer
    assert layer.double().laplacian.dtype == torch.float64
    assert ChebConv(2, 3, rescaled_laplacian_tensor(adj), bias=False).bias is None
    x = torch.randn(4, 6, 2)
    with pytest.raises(ValueError, match="dtype"):
        layer(x)  # float32 input, float64 layer
    with pytest.raises(ValueError, match="x"):
        layer.float()(torch.randn(4, 5, 2))
    with pytest.raises(ValueError, match="F_in"):
        cheb_conv(x, layer.laplacian, torch.randn(7, 3))
    with pytest.raises(ValueError, match="laplacian"):
        ChebConv(2, 3, torch.eye(6))
    with pytest.raises(ValueError, match="order"):
        ChebConv(2, 3, rescaled_laplacian(adj), order=0)


def test_hierarchy_tensors_and_resample(procedural):
    ops = hierarchy_tensors(procedural, dtype=torch.float64)
    assert len(ops.down) == len(ops.up) == 4 and len(ops.laplacians) == 5
    x = torch.randn(2, procedural.sizes[0], 3, dtype=torch.float64)
    coarse = resample(ops.down[0], x)
    assert coarse.shape == (2, procedural.sizes[1], 3)
    assert torch.equal(coarse, x[:, torch.from_numpy(procedural.survivors[0])])
    fine = resample(ops.up[0], coarse)
    want = np.stack([procedural.up[0] @ c for c in coarse.numpy()])
    np.testing.assert_allclose(fine.numpy(), want, rtol=0, atol=1e-12)
    for level, lap in enumerate(ops.laplacians):
        want = rescaled_laplacian(procedural.adjacency[level]).toarray()
        np.testing.assert_allclose(lap.to_dense().numpy(), want, rtol=0, atol=1e-15)
    assert hierarchy_tensors(procedural).down[0].dtype == torch.float32
    with pytest.raises(ValueError, match="dtype"):
        resample(ops.down[0], x.float())
    with pytest.raises(ValueError, match="matrix"):
        resample(ops.down[1], x)
