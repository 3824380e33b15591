"""Tests of the numpy triangle rasteriser (fitface.geometry.raster)."""

from __future__ import annotations

import numpy as np
import pytest

import fitface.geometry.raster as raster_mod
from fitface.geometry.raster import rasterize

H, W = 96, 128


def _inside_reference(tri: np.ndarray, h: int, w: int) -> np.ndarray:
    """Independent inside test: pixel centre on the inner side of all three edges (closed)."""
    jj, ii = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)  # x, y of centres
    signs = []
    for k in range(3):
        a, b = tri[k], tri[(k + 1) % 3]
        signs.append((b[0] - a[0]) * (ii - a[1]) - (b[1] - a[1]) * (jj - a[0]))
    s = np.stack(signs)
    return (s >= 0).all(0) | (s <= 0).all(0)


def _area(tri):
    e1, e2 = tri[1] - tri[0], tri[2] - tri[0]
    return 0.5 * abs(e1[0] * e2[1] - e1[1] * e2[0])


def test_single_triangle_matches_reference_and_area():
    tri = np.array([[10.3, 5.7], [120.1, 30.2], [40.4, 90.8]])
    r = rasterize(tri[None], H, W)
    ref = _inside_reference(tri, H, W)
    # centres strictly away from the edges must agree exactly (no centre lies on an edge here)
    np.testing.assert_array_equal(r.mask, ref)
    assert set(np.unique(r.face_index)) == {-1, 0}
    perimeter = sum(np.linalg.norm(tri[k] - tri[(k + 1) % 3]) for k in range(3))
    # pixel counting error of a convex region is bounded by its perimeter (in pixel units)
    assert abs(r.mask.sum() - _area(tri)) < 0.5 * perimeter
    assert abs(r.mask.sum() - _area(tri)) / _area(tri) < 0.02


def test_pixel_centre_convention():
    # a small triangle around the point (3.5, 1.5) covers exactly pixel row 1, column 3
    c = np.array([3.5, 1.5])
    tri = c + np.array([[-0.2, -0.2], [0.3, -0.1], [0.0, 0.3]])
    r = rasterize(tri[None], H, W)
    assert r.mask.sum() == 1
    assert r.face_index[1, 3] == 0
    # row 0 is the top: a triangle at small y lands in the first rows
    tri = np.array([[0.0, 0.0], [W, 0.0], [0.0, 2.0]])
    r = rasterize(tri[None], H, W)
    assert r.mask[0].any() and not r.mask[2:].any()


def test_centre_on_edge_or_vertex_is_covered():
    # a vertex exactly at the centre of pixel (2, 5), and an edge through the centres of row 4
    tri = np.array([[5.5, 2.5], [20.0, 2.5], [5.5, 10.0]])
    r = rasterize(tri[None], H, W)
    assert r.face_index[2, 5] == 0  # vertex on a centre
    assert r.face_index[2, 6] == 0  # edge y = 2.5 through the centres of row 2
    assert r.face_index[4, 5] == 0  # edge x = 5.5 through the centres of column 5
    assert r.face_index[2, 4] == -1 and r.face_index[1, 5] == -1


def test_barycentrics_reproduce_pixel_centres():
    rng = np.random.default_rng(1)
    tris = rng.uniform([-10, -10], [W + 10, H + 10], size=(40, 3, 2))
    r = rasterize(tris, H, W)
    rows, cols = np.nonzero(r.mask)
    assert rows.size > 1000
    b = r.bary[rows, cols]  # (P, 3)
    corners = tris[r.face_index[rows, cols]]  # (P, 3, 2)
    centres = np.stack([cols + 0.5, rows + 0.5], axis=1)
    np.testing.assert_allclose((b[:, :, None] * corners).sum(1), centres, rtol=0, atol=1e-12)
    np.testing.assert_allclose(b.sum(1), 1.0, rtol=0, atol=1e-12)
    assert (b >= -1e-9).all()
    assert (r.bary[~r.mask] == 0).all()


def test_depth_keeps_the_nearer_triangle_and_ties_go_to_lower_index():
    a = np.array([[10.0, 10.0], [80.0, 12.0], [20.0, 70.0]])
    b = a + np.array([15.0, 5.0])
    both = np.stack([a, b])
    overlap = rasterize(a[None], H, W).mask & rasterize(b[None], H, W).mask
    assert overlap.sum() > 100
    for near, depth in ((0, [[1.0] * 3, [2.0] * 3]), (1, [[2.0] * 3, [1.0] * 3])):
        r = rasterize(both, H, W, np.array(depth))
        assert (r.face_index[overlap] == near).all()
        np.testing.assert_allclose(r.depth[overlap], min(depth[0][0], depth[1][0]), rtol=1e-12)
        assert np.isinf(r.depth[~r.mask]).all()
    # a sloped triangle: the interpolated depth decides per pixel
    r = rasterize(both, H, W, np.array([[0.0, 0.0, 0.0], [-50.0, 50.0, 50.0]]))
    winners = set(np.unique(r.face_index[overlap]))
    assert winners == {0, 1}
    # equal depth, and no depth: the lower index wins
    assert (rasterize(both, H, W, np.ones((2, 3))).face_index[overlap] == 0).all()
    assert (rasterize(both, H, W).face_index[overlap] == 0).all()
    assert (rasterize(both[::-1], H, W).face_index[overlap] == 0).all()


def test_shared_edge_has_no_gaps():
    # a square split along its diagonal, with pixel centres on the diagonal
    sq = np.array([[4.0, 4.0], [44.0, 4.0], [44.0, 44.0], [4.0, 44.0]])
    tris = np.stack([sq[[0, 1, 2]], sq[[0, 2, 3]]])
    r = rasterize(tris, H, W)
    assert r.mask.sum() == 40 * 40
    assert r.face_index[10, 10] == 0  # centre (10.5, 10.5) on the diagonal: lower index


def test_degenerate_and_nonfinite_triangles_are_skipped():
    good = np.array([[10.0, 10.0], [60.0, 10.0], [10.0, 60.0]])
    line = np.array([[0.0, 0.0], [50.0, 50.0], [100.0, 100.0]])  # collinear: zero area
    point = np.full((3, 2), 20.5)
    nan = good.copy()
    nan[1, 0] = np.nan
    r = rasterize(np.stack([line, point, nan, good]), H, W)
    assert set(np.unique(r.face_index)) == {-1, 3}
    np.testing.assert_array_equal(r.mask, rasterize(good[None], H, W).mask)


def test_both_windings_and_offscreen():
    tri = np.array([[10.0, 10.0], [60.0, 10.0], [10.0, 60.0]])
    np.testing.assert_array_equal(rasterize(tri[None], H, W).mask, rasterize(tri[None, ::-1], H, W).mask)
    off = tri + np.array([1000.0, 0.0])
    assert not rasterize(off[None], H, W).mask.any()
    assert not rasterize(np.zeros((0, 3, 2)), H, W).mask.any()


def test_chunking_gives_the_same_result(monkeypatch):
    rng = np.random.default_rng(2)
    tris = rng.uniform(0, [W, H], size=(300, 3, 2))
    depth = rng.uniform(0, 1, size=(300, 3))
    ref = rasterize(tris, H, W, depth)
    ref_nodepth = rasterize(tris, H, W)
    monkeypatch.setattr(raster_mod, "CHUNK_FRAGMENTS", 500)
    chunked = rasterize(tris, H, W, depth)
    np.testing.assert_array_equal(chunked.face_index, ref.face_index)
    np.testing.assert_array_equal(chunked.bary, ref.bary)
    np.testing.assert_array_equal(chunked.depth, ref.depth)
    np.testing.assert_array_equal(rasterize(tris, H, W).face_index, ref_nodepth.face_index)


def test_bad_inputs():
    with pytest.raises(ValueError, match="xy"):
        rasterize(np.zeros((4, 2, 2)), H, W)
    with pytest.raises(ValueError, match="depth"):
        rasterize(np.zeros((4, 3, 2)), H, W, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="height"):
        rasterize(np.zeros((4, 3, 2)), 0, W)
