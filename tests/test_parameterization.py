"""Harmonic UV parameterisation: border on the unit square, free holes, zero flips, fallbacks."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import trimesh

from fitface.errors import InputError
from fitface.geometry.laplacian import cotangent_laplacian, mean_value_laplacian, uniform_laplacian
from fitface.geometry.parameterization import UVResult, count_flips, harmonic_uv, signed_uv_areas
from fitface.geometry.topology import boundary_loops
from fitface.tolerances import dtype_rtol

RTOL = dtype_rtol(np.float64)


def grid(n: int, seed: int | None = None, z=None):
    """n x n grid on [0,1]^2 (interior jittered when seed is given), CCW faces."""
    x, y = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n))
    v = np.stack([x.ravel(), y.ravel(), np.zeros(n * n)], axis=1)
    if seed is not None:
        inner = (v[:, 0] > 0) & (v[:, 0] < 1) & (v[:, 1] > 0) & (v[:, 1] < 1)
        v[inner, :2] += np.random.default_rng(seed).uniform(-0.3, 0.3, (inner.sum(), 2)) / (n - 1)
    if z is not None:
        v[:, 2] = z(v[:, 0], v[:, 1])
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]
    f = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    return v, f


def disk_with_holes(n: int = 24, seed: int = 0, ragged: bool = False):
    """A curved 'face-like' patch: jittered grid lifted onto a bump, with two 'eyes' and a
    'mouth' cut out, unused vertices dropped. Clean holes remove whole grid cells (square
    rims); ragged holes remove single triangles by centroid (round rims with vertices that
    belong to one triangle only, which collapse under any free-hole Laplace solve).
    The grid's (n-1, 0) corner also belongs to one triangle; being pinned, it is harmless."""
    v, f = grid(n, seed=seed, z=lambda x, y: 0.6 * np.exp(-((x - 0.5) ** 2 + (y - 0.5) ** 2) / 0.08))
    if ragged:
        c = v[f].mean(axis=1)  # (F, 3) triangle centroids
    else:
        col, row = (f % n).min(axis=1), (f // n).min(axis=1)  # (F,) the triangle's grid cell
        c = np.stack([col + 0.5, row + 0.5], axis=1) / (n - 1)  # (F, 2) cell centre, unjittered
    cut = (abs(c[:, 0] - 0.5) < 0.15) & (abs(c[:, 1] - 0.28) < 0.04)  # mouth: a slot
    for cx in (0.3, 0.7):  # eyes: circles when ragged, rectangles of whole cells otherwise
        dx, dy = c[:, 0] - cx, c[:, 1] - 0.62
        cut |= (dx**2 + dy**2 < 0.08**2) if ragged else ((abs(dx) < 0.1) & (abs(dy) < 0.06))
    f = f[~cut]
    used = np.unique(f)
    remap = -np.ones(len(v), np.int64)
    remap[used] = np.arange(len(used))
    return v[used], remap[f]


def assert_valid(res: UVResult, v, f):
    uv = res.uv
    assert uv.shape == (len(v), 2) and uv.dtype == np.float64
    assert uv.min() >= 0.0 and uv.max() <= 1.0
    assert res.flipped == 0 == count_flips(uv, f)
    assert np.all(signed_uv_areas(uv, f) > 0)  # CCW faces stay CCW
    b = uv[res.boundary]
    on_border = (b[:, 0] == 0) | (b[:, 0] == 1) | (b[:, 1] == 0) | (b[:, 1] == 1)
    assert on_border.all()  # exactly, not approximately
    np.testing.assert_array_equal(uv[res.corners], [[0, 0], [1, 0], [1, 1], [0, 1]])
    inner = np.setdiff1d(np.arange(len(v)), res.boundary)
    assert np.all((uv[inner] > 0) & (uv[inner] < 1))  # free holes are not pinned to the border


def test_flat_square_reproduces_positions():
    # cotangent weights have linear precision: a flat square grid maps to itself.
    v, f = grid(10, seed=1)
    res = harmonic_uv(v, f)
    assert res.weights == "cotangent" and res.fallback_reason is None
    assert_valid(res, v, f)
    np.testing.assert_allclose(res.uv, v[:, :2], atol=100 * RTOL)


def test_disk_with_holes_zero_flips_and_holes_free():
    v, f = disk_with_holes()
    loops = boundary_loops(f, v)
    assert len(loops) == 4
    res = harmonic_uv(v, f)
    assert_valid(res, v, f)
    np.testing.assert_array_equal(np.sort(res.boundary), np.sort(loops[0]))
    # harmonic: every non-outer vertex (interior and hole rims) satisfies W uv = 0
    builders = {"cotangent": cotangent_laplacian, "mean_value": mean_value_laplacian,
                "uniform": lambda v, f: uniform_laplacian(len(v), f)}
    assert res.weights in builders  # clean rims need no hole filling
    W = builders[res.weights](v, f)
    free = np.setdiff1d(np.arange(len(v)), res.boundary)
    assert abs((W @ res.uv)[free]).max() <= 1e3 * RTOL * abs(W).max()
    for forced in ("cotangent", "mean_value", "uniform", "uniform_filled"):
        r = harmonic_uv(v, f, weights=forced)
        assert r.weights == forced and r.flipped == count_flips(r.uv, f)


def test_ragged_holes_fall_back_to_filled_tutte():
    v, f = disk_with_holes(ragged=True)
    assert len(boundary_loops(f, v)) == 4
    tips = np.flatnonzero(np.bincount(f.ravel()) == 1)  # vertices of a single triangle
    assert len(tips) > 0  # the case this fallback exists for
    res = harmonic_uv(v, f)
    assert_valid(res, v, f)
    assert res.weights == "uniform_filled"
    assert all(res.attempts[w] > 0 for w in ("cotangent", "mean_value", "uniform"))
    assert "uniform weights flip" in res.fallback_reason


def test_start_corner_is_bottom_left_and_u_follows_x():
    v, f = disk_with_holes(16, seed=3)
    res = harmonic_uv(v, f)
    start = res.corners[0]
    b = v[res.boundary]
    assert start == res.boundary[0]
    assert v[start, 0] + v[start, 1] == (b[:, 0] + b[:, 1]).min()
    assert np.corrcoef(res.uv[:, 0], v[:, 0])[0, 1] > 0.9
    assert np.corrcoef(res.uv[:, 1], v[:, 1])[0, 1] > 0.9


def test_ict_zero_flips_with_reported_fallback(ict_mesh, caplog):
    v, f = ict_mesh
    with caplog.at_level(logging.WARNING, logger="fitface.geometry.parameterization"):
        res = harmonic_uv(v, f, what="ict")
    assert_valid(res, v, f)
    assert len(res.boundary) == 204
    cot_flips = harmonic_uv(v, f, weights="cotangent").flipped
    print(f"ICT: cotangent weights flip {cot_flips} triangles; auto used {res.weights!r} "
          f"({res.fallback_reason}); attempts {res.attempts}")
    # plain cotangent weights fold this mesh, so the fallback path is exercised
    assert cot_flips > 0 and res.attempts["cotangent"] == cot_flips
    assert res.weights in ("mean_value", "uniform")
    assert f"cotangent weights flip {cot_flips}" in res.fallback_reason
    assert any(res.weights in r.getMessage() and "ict" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "case, match",
    [
        ("sphere", "closed"),
        ("two_triangles", "2 connected components"),
        ("nonmanifold_edge", "non-manifold edges"),
    ],
)
def test_non_disk_inputs_raise_one_line_input_error(case, match):
    if case == "sphere":
        s = trimesh.creation.icosphere(subdivisions=2)
        v, f = np.asarray(s.vertices), np.asarray(s.faces)
    elif case == "two_triangles":
        v = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [3, 0, 0], [4, 0, 0], [3, 1, 0]])
        f = np.array([[0, 1, 2], [3, 4, 5]])
    else:  # three triangles on edge (0, 1)
        v = np.array([[0.0, 0, 0], [1, 0, 0], [0.5, 1, 0], [0.5, -1, 0], [0.5, 0, 1]])
        f = np.array([[0, 1, 2], [1, 0, 3], [0, 1, 4]])
    with pytest.raises(InputError, match=match) as info:
        harmonic_uv(v, f, what="template")
    assert str(info.value).startswith("template: ") and "\n" not in str(info.value)


def test_every_scheme_flipping_raises():
    # An 'ear' triangle hanging off the bottom side has all three vertices on that side
    # of the square, so it is degenerate in UV whatever the weights.
    v, f = grid(6)
    v = np.vstack([v, [[0.5, -0.1, 0.0]]])
    ear = np.array([[2, len(v) - 1, 3]])  # 2 -> new -> 3 keeps CCW (new vertex below edge 2-3)
    f = np.vstack([f, ear])
    with pytest.raises(InputError, match="mesh: harmonic UV failed with every weight scheme"):
        harmonic_uv(v, f)


def test_count_flips_and_bad_weights():
    uv = np.array([[0.0, 0], [1, 0], [0, 1], [1, 1]])
    f = np.array([[0, 1, 2], [1, 3, 2], [0, 2, 1]])  # last one reversed
    assert count_flips(uv, f) == 1
    assert count_flips(uv, f[:, ::-1]) == 1  # relative to the majority
    assert count_flips(uv, np.array([[0, 1, 2], [0, 1, 1]])) == 1  # degenerate counts
    with pytest.raises(ValueError, match="weights"):
        harmonic_uv(*grid(3), weights="harmonic")


def test_procedural_template_zero_flips():
    # every template the project generates must parameterise without flips
    procedural = pytest.importorskip("fitface.data.procedural.template")
    t = procedural.template_mesh()
    d = t.domain  # (V, 2) mm
    for z in (np.zeros(len(d)), 40.0 * np.exp(-(d**2).sum(axis=1) / (2 * 40.0**2))):  # flat, and lifted
        v = np.c_[d, z]
        res = harmonic_uv(v, t.faces, what="procedural template")
        assert_valid(res, v, t.faces)
        np.testing.assert_array_equal(np.sort(res.boundary), np.sort(t.outer_rim))
