"""Deformation transfer (Sumner & Popovic 2004): analytic cases, a reference solve, the ICT blendshapes."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from fitface.geometry.deformation_transfer import (
    DeformationTransfer,
    deformation_gradients,
    deformation_transfer,
    triangle_frames,
)

#: The brief's bar: transfer onto the source itself reproduces a blendshape to this fraction of
#: the blendshape's largest displacement.
SELF_TRANSFER_RELATIVE = 1e-4
#: float64 solves of well-conditioned systems on small meshes: errors relative to the mesh size.
EXACT_RELATIVE = 1e-9


def _grid(n: int = 12, seed: int = 0, bump: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """A bumpy n x n height field: (n*n, 3) float64 vertices and (2 (n-1)^2, 3) triangles."""
    rng = np.random.default_rng(seed)
    u, v = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n), indexing="ij")
    a, b = rng.uniform(1, 3, size=2)
    z = bump * np.sin(a * np.pi * u) * np.cos(b * np.pi * v)
    verts = np.stack([u, v, z], -1).reshape(-1, 3)
    idx = np.arange(n * n).reshape(n, n)
    q = np.stack([idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]], -1).reshape(-1, 4)
    faces = np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]]])
    return verts, faces


def _rotation(axis, angle) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _smooth_deformation(verts: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(3, 3)) * 0.1
    return verts + np.sin(verts @ c) * 0.2


def test_frames_and_gradients_analytic():
    verts, faces = _grid(5)
    w = triangle_frames(verts, faces)  # (F, 3, 3)
    e1 = verts[faces[:, 1]] - verts[faces[:, 0]]
    np.testing.assert_allclose(w[:, :, 0], e1)
    n = np.cross(e1, verts[faces[:, 2]] - verts[faces[:, 0]])
    # 4th edge: along the normal, length sqrt(|n|)
    np.testing.assert_allclose(np.linalg.norm(w[:, :, 2], axis=1), np.sqrt(np.linalg.norm(n, axis=1)))
    r = _rotation([1, 2, 3], 0.7)
    s = deformation_gradients(verts, (2.0 * verts @ r.T)[None], faces)[0]
    # a uniform scale by 2 maps the normal offset sqrt(|n|) to sqrt(4|n|) = 2 sqrt(|n|): S = 2R exactly
    np.testing.assert_allclose(s, np.broadcast_to(2.0 * r, s.shape), atol=1e-12)


def test_identity_deformation_returns_target_rest():
    src, faces = _grid(12, seed=0)
    tgt, _ = _grid(12, seed=1, bump=0.5)
    out = DeformationTransfer(src, tgt, faces).transfer(src[None])
    assert out.shape == (1,) + tgt.shape
    np.testing.assert_allclose(out[0], tgt, atol=EXACT_RELATIVE * np.abs(tgt).max())


def test_rigid_rotation_transfers_as_rotation():
    src, faces = _grid(12, seed=0)
    tgt, _ = _grid(12, seed=2, bump=0.4)
    r = _rotation([0.3, -1.0, 0.5], 0.9)
    out = deformation_transfer(src, src @ r.T + [1.0, -2.0, 0.5], tgt, faces)  # (V, 3)
    # best rigid fit of the result to the target rest (Kabsch) recovers R with ~zero residual
    a, b = tgt - tgt.mean(0), out - out.mean(0)
    u, _, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    r_fit = u @ np.diag([1, 1, d]) @ vt
    np.testing.assert_allclose(r_fit, r, atol=1e-9)
    np.testing.assert_allclose(a @ r_fit.T, b, atol=EXACT_RELATIVE * np.abs(tgt).max())
    # translation: the result's mean displacement is the source's
    np.testing.assert_allclose((out - tgt).mean(0), (src @ r.T + [1.0, -2.0, 0.5] - src).mean(0), atol=1e-9)


def test_self_transfer_is_exact_on_a_grid():
    src, faces = _grid(10, seed=3)
    deformed = np.stack([_smooth_deformation(src, s) for s in range(4)])
    out = DeformationTransfer(src, src, faces).transfer(deformed)
    np.testing.assert_allclose(out, deformed, atol=EXACT_RELATIVE * np.abs(deformed).max())


def test_matches_reference_solve_with_explicit_fourth_vertices():
    """The eliminated system gives the same vertices as the paper's (V + F)-unknown system."""
    src, faces = _grid(8, seed=4)
    tgt, _ = _grid(8, seed=5, bump=0.6)
    deformed = _smooth_deformation(src, 7)
    s = deformation_gradients(src, deformed[None], faces)[0]  # (F, 3, 3)
    nv, nf = len(tgt), len(faces)
    winv = np.linalg.inv(triangle_frames(tgt, faces))
    rows, cols, vals = [], [], []
    for j, (i1, i2, i3) in enumerate(faces):
        for c in range(3):
            r = 3 * j + c
            for col, val in ((i1, -winv[j, :, c].sum()), (i2, winv[j, 0, c]), (i3, winv[j, 1, c]), (nv + j, winv[j, 2, c])):
                rows.append(r), cols.append(col), vals.append(val)
    a = sp.csr_matrix((vals, (rows, cols)), shape=(3 * nf, nv + nf))[:, 1:]  # vertex 0 pinned
    b = np.transpose(s, (0, 2, 1)).reshape(3 * nf, 3)  # b[3j + c, r] = S_j[r, c]
    x = spla.spsolve((a.T @ a).tocsc(), a.T @ b)
    ref = np.concatenate([np.zeros((1, 3)), x[: nv - 1]])
    ref += (tgt + (deformed - src).mean(0) - ref).mean(0)  # the same translation convention
    out = DeformationTransfer(src, tgt, faces).transfer(deformed)
    np.testing.assert_allclose(out, ref, atol=1e-9 * np.abs(ref).max())


def test_transfer_onto_generic_neutral_reproduces_ict_blendshapes(ict_path):
    with np.load(ict_path) as z:
        neutral = z["neutral"].astype(np.float64) * 10.0  # mm
        faces = z["faces"].astype(np.int64)
        names = list(z["expression_names"])
        picks = [names.index(n) for n in ("jawOpen", "mouthSmile_L", "browInnerUp_R", "eyeBlink_L", "mouthPucker")]
        deltas = z["expression_modes"][picks].astype(np.float64) * 10.0  # (5, V, 3)
    out = DeformationTransfer(neutral, neutral, faces).transfer(neutral[None] + deltas)
    for k in range(len(picks)):
        err = np.abs(out[k] - neutral - deltas[k]).max() / np.abs(deltas[k]).max()
        assert err < SELF_TRANSFER_RELATIVE, (names[picks[k]], err)


def test_bad_inputs():
    verts, faces = _grid(4)
    with pytest.raises(ValueError, match="target_rest"):
        DeformationTransfer(verts, verts[:-1], faces)
    with pytest.raises(ValueError, match="faces"):
        DeformationTransfer(verts, verts, faces + 100)
    flat = verts.copy()
    flat[faces[0, 1]] = flat[faces[0, 0]]  # collapse triangle 0
    with pytest.raises(ValueError, match="degenerate"):
        DeformationTransfer(flat, verts, faces)
    dt = DeformationTransfer(verts, verts, faces)
    with pytest.raises(ValueError, match="source_deformed"):
        dt.transfer(np.zeros((2, 3, 3)))
    bad = verts.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        dt.transfer(bad)
