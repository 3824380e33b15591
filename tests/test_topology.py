"""Topology helpers: edges, boundary loops, components, Euler characteristic, disk check."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from fitface.errors import InputError
from fitface.geometry.topology import (
    analyze_topology,
    boundary_edges,
    boundary_loops,
    check_disk_like,
    connected_components,
    edge_face_counts,
    euler_characteristic,
    unique_edges,
)


def grid(n: int = 6, m: int = 5):
    """Flat (n x m)-vertex grid on [0, n-1] x [0, m-1], CCW triangles seen from +z."""
    x, y = np.meshgrid(np.arange(n, dtype=float), np.arange(m, dtype=float))
    v = np.stack([x.ravel(), y.ravel(), np.zeros(n * m)], axis=1)
    idx = np.arange(n * m).reshape(m, n)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]
    f = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    return v, f


def mobius(n: int = 12):
    """A Moebius strip: n quads around a loop, the last one glued with a half twist."""
    top, bot = np.arange(n), np.arange(n, 2 * n)
    faces = []
    for k in range(n):
        a, b = top[k], bot[k]
        if k + 1 < n:
            c, d = top[k + 1], bot[k + 1]
        else:
            c, d = bot[0], top[0]  # the twist
        faces += [[a, b, d], [a, d, c]]
    return 2 * n, np.array(faces)


def test_edges_and_counts_on_grid():
    v, f = grid(6, 5)
    e, counts = edge_face_counts(f)
    # (n-1)*m horizontal + n*(m-1) vertical + (n-1)(m-1) diagonals
    assert len(e) == 5 * 5 + 6 * 4 + 5 * 4
    assert np.array_equal(e, unique_edges(f))
    assert np.all(e[:, 0] < e[:, 1])
    assert np.sum(counts == 1) == 2 * (5 + 4)  # perimeter edges
    assert set(np.unique(counts)) == {1, 2}


def test_boundary_edges_follow_ccw_faces():
    v, f = grid(4, 3)
    be = boundary_edges(f)
    assert len(be) == 2 * (3 + 2)
    # CCW outer boundary: the surface is on the left of every edge, so the
    # z-component of (edge) x (centroid - edge start) is positive.
    centre = v.mean(axis=0)
    d = v[be[:, 1]] - v[be[:, 0]]
    r = centre - v[be[:, 0]]
    assert np.all(np.cross(d, r)[:, 2] > 0)


def test_loops_ordered_and_longest_first():
    v, f = grid(7, 7)
    # cut a 1-cell hole (two triangles) in the middle: idx of cell (3, 3)
    cell = 3 * 6 + 3  # cells are numbered row-major over the 6x6 cells
    keep = np.ones(len(f), bool)
    keep[[cell, 36 + cell]] = False
    f2 = f[keep]
    loops = boundary_loops(f2, v)
    assert [len(lp) for lp in loops] == [24, 4]
    for lp in loops:  # consecutive loop vertices are boundary edges in loop direction
        pairs = set(map(tuple, boundary_edges(f2).tolist()))
        assert all((int(a), int(b)) in pairs for a, b in zip(lp, np.roll(lp, -1)))
    assert sorted(loops[1].tolist()) == sorted([24, 25, 31, 32])
    # without vertices: by edge count, same answer here
    assert [len(lp) for lp in boundary_loops(f2)] == [24, 4]


def test_components_and_euler():
    v, f = grid(4, 4)
    n, lab = connected_components(f, len(v))
    assert n == 1 and lab.shape == (16,)
    two = np.array([[0, 1, 2], [3, 4, 5]])
    n2, lab2 = connected_components(two, 7)  # vertex 6 unused: its own component
    assert n2 == 3 and lab2[0] == lab2[2] != lab2[3]
    assert euler_characteristic(f) == 1  # a disk
    s = trimesh.creation.icosphere(subdivisions=1)
    assert euler_characteristic(s.faces) == 2
    t = trimesh.creation.torus(major_radius=1.0, minor_radius=0.3)
    assert euler_characteristic(t.faces) == 0


def test_analyze_flags_mobius_as_nonorientable():
    n_v, f = mobius()
    t = analyze_topology(f, n_v)
    assert not t.orientable
    assert t.boundary_loops == 1 and t.nonmanifold_edges == 0
    with pytest.raises(InputError, match="strip.obj: surface is not orientable"):
        check_disk_like(f, n_v, what="strip.obj")


def test_disk_like_accepts_grid_and_ict(ict_mesh):
    v, f = grid()
    t = check_disk_like(f, len(v))
    assert t.genus == 0 and t.boundary_loops == 1
    v, f = ict_mesh
    t = check_disk_like(f, len(v), what="ict")
    assert (t.components, t.boundary_loops, t.genus) == (1, 4, 0)
    # README facts: outer loop 204 edges, mouth 74, each eye 42
    assert [len(lp) for lp in boundary_loops(f, v)] == [204, 74, 42, 42]


def _message(f, n, what="scan.obj") -> str:
    with pytest.raises(InputError) as info:
        check_disk_like(f, n, what=what)
    msg = str(info.value)
    assert msg.startswith(f"{what}: ") and "\n" not in msg
    return msg


def test_disk_like_rejections_are_one_line_and_specific():
    s = trimesh.creation.icosphere(subdivisions=1)
    assert "closed" in _message(s.faces, len(s.vertices), "template")
    assert "2 connected components" in _message(np.array([[0, 1, 2], [3, 4, 5]]), 6)
    assert "non-manifold edges" in _message(np.array([[0, 1, 2], [0, 1, 3], [1, 0, 4]]), 5)
    assert "non-manifold vertices" in _message(np.array([[0, 1, 2], [0, 3, 4]]), 5)  # bow-tie
    assert "used by no face" in _message(np.array([[0, 1, 2]]), 4)
    assert "repeat a vertex" in _message(np.array([[0, 1, 2], [2, 2, 1]]), 3)
    assert "out of range" in _message(np.array([[0, 1, 5]]), 3)
    v, f = grid()
    bad = f.copy()
    bad[3] = bad[3, ::-1]
    assert "not consistently oriented" in _message(bad, len(v))
    t = trimesh.creation.torus(major_radius=1.0, minor_radius=0.3)
    assert "genus 1" in _message(t.faces[1:], len(t.vertices))
