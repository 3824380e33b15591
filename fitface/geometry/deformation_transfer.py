"""Deformation transfer (Sumner & Popovic 2004) between meshes in correspondence.

Given a source rest mesh, deformed versions of it (e.g. expression blendshapes) and a target
rest mesh with the SAME topology (so triangle j of the source corresponds to triangle j of
the target), find deformed target meshes whose per-triangle deformation gradients match the
source's in the least-squares sense.

Convention:
    * Per-triangle frame (the paper's 4th-vertex construction): for a triangle (v1, v2, v3)
      with n = (v2 - v1) x (v3 - v1), the 4th vertex is v4 = v1 + n / sqrt(|n|) (an offset
      along the normal with the length scale of an edge) and the frame is the 3x3 matrix of
      columns W = [v2 - v1, v3 - v1, v4 - v1]. The deformation gradient of a triangle from
      rest frame W to deformed frame W~ is Q = W~ W^-1 (3x3, acting on column vectors).
    * Unknowns: the V deformed target vertices AND one free 4th vertex per triangle (as in the
      paper), per coordinate: x (V + F,). For target triangle j the gradient is linear in x:
      Q_j[r, :] = [x2 - x1, x3 - x1, x4 - x1]_r @ Wt_j^-1, which gives the sparse matrix A
      (3F, V + F) with 4 entries per row; row 3 j + c is column c of Q_j. The right-hand side is
      the source gradient, b[3 j + c, r] = S_j[r, c]; the x, y, z coordinates share A.
      Each 4th vertex appears only in its own triangle's rows, so it is eliminated exactly
      (see :func:`gradient_operator`): the solved system has V unknowns, not V + F, with the
      same minimiser for the real vertices (5-10x faster to factorise than the full system).
    * A depends only on the target's rest shape: A^T A is built and factorised (sparse LU,
      ``scipy.sparse.linalg.splu``) once per target, and every source deformation is one more
      set of right-hand sides of the same solve.
    * Translation null space: A annihilates a common translation of all unknowns. Vertex 0 is
      pinned (its column dropped, x_0 = 0) to make the system non-singular; the solution is then
      translated so that its mean displacement from the target rest over the V real vertices
      equals the source's mean displacement (the least-squares choice of the free translation).
      So a transfer onto the source rest itself is exact, including its translation.
    * Units: any length unit, the same for all inputs; the output is in that unit. Gradients are
      unitless. Everything is computed in float64; outputs are float64.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from fitface.checks import check_faces, check_finite, check_shape

#: Smallest |n| (twice the triangle area), relative to the squared mean edge length, accepted
#: before a triangle counts as degenerate (its frame would not be invertible).
DEGENERATE_RELATIVE_AREA = 1e-12


def triangle_frames(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Per-triangle frames W = [v2 - v1, v3 - v1, v4 - v1] (columns) with the normal 4th vertex.

    Args:
        vertices: (..., V, 3) float, any unit.
        faces: (F, 3) int.

    Returns:
        (..., F, 3, 3) float64; ``W[..., j, :, m]`` is edge m of triangle j (m = 0, 1, 2).
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces)
    v1, v2, v3 = v[..., f[:, 0], :], v[..., f[:, 1], :], v[..., f[:, 2], :]  # (..., F, 3) each
    e1, e2 = v2 - v1, v3 - v1
    n = np.cross(e1, e2)  # (..., F, 3)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)  # (..., F, 1)
    scale = np.mean(np.linalg.norm(e1, axis=-1) ** 2) if e1.size else 1.0
    bad = norm[..., 0] <= DEGENERATE_RELATIVE_AREA * scale
    if bad.any():
        j = int(np.argwhere(bad)[0][-1])
        raise ValueError(f"faces: triangle {j} is degenerate (zero area); its frame is not invertible")
    e3 = n / np.sqrt(norm)  # (..., F, 3)
    return np.stack([e1, e2, e3], axis=-1)  # (..., F, 3 xyz, 3 edges)


def deformation_gradients(rest: np.ndarray, deformed: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Per-triangle deformation gradients S = W~ W^-1 from ``rest`` to each ``deformed`` mesh.

    Args:
        rest: (V, 3) float, the rest mesh, any unit.
        deformed: (K, V, 3) float, deformed meshes in the same unit and topology.
        faces: (F, 3) int.

    Returns:
        (K, F, 3, 3) float64, unitless; ``S[k, j] @ (rest edge of j)`` = deformed edge of j.
    """
    rest_inv = np.linalg.inv(triangle_frames(rest, faces))  # (F, 3, 3)
    return triangle_frames(deformed, faces) @ rest_inv[None]  # (K, F, 3, 3)


class GradientSystem(NamedTuple):
    """The sparse least-squares operator of one target rest shape, 4th vertices eliminated.

    Attributes:
        matrix: (3F, V - 1) CSR float64, the reduced operator A' = P B without the pinned
            vertex's column (see :func:`gradient_operator`).
        projector: (F, 3, 3) float64, P_j, applied to the right-hand side: b'_j = P_j b_j.
        num_vertices: V.
        pinned: the pinned vertex.
    """

    matrix: sp.csr_matrix
    projector: np.ndarray
    num_vertices: int
    pinned: int


def gradient_operator(target_rest: np.ndarray, faces: np.ndarray, pinned: int = 0) -> GradientSystem:
    """Build the least-squares operator (see the module Convention) of a target rest shape.

    Triangle j's rows of A are [B_j | g_j] acting on (x1, x2, x3 | x4), where g_j is the column
    of the triangle's own 4th vertex. That vertex appears in no other row, so it is eliminated
    exactly: the optimal x4 leaves the residual P_j (B_j y - b_j) with the projector
    P_j = I - g_j g_j^T / |g_j|^2. The reduced system has only the V real vertices as unknowns
    (with the same minimiser), so A'^T A' has the sparsity of the vertex adjacency.

    Args:
        target_rest: (V, 3) float, any unit.
        faces: (F, 3) int.
        pinned: the vertex whose column is dropped (fixed at the origin).

    Returns:
        A :class:`GradientSystem`.
    """
    faces = np.asarray(faces, dtype=np.int64)
    num_v, num_f = len(target_rest), len(faces)
    winv = np.linalg.inv(triangle_frames(target_rest, faces))  # (F, 3 m, 3 c)
    # row c of triangle j: x1 -> -sum_m winv[m, c]; x2, x3 -> winv[0..1, c]; x4 -> winv[2, c]
    b_mat = np.stack([-winv.sum(axis=1), winv[:, 0, :], winv[:, 1, :]], axis=-1)  # (F, 3 c, 3 corner)
    g = winv[:, 2, :]  # (F, 3 c)
    proj = np.eye(3)[None] - g[:, :, None] * g[:, None, :] / np.sum(g * g, axis=1)[:, None, None]  # (F, 3, 3)
    vals = proj @ b_mat  # (F, 3 c, 3 corner)
    cols = np.broadcast_to(faces[:, None, :], (num_f, 3, 3))
    rows = np.broadcast_to(np.arange(3 * num_f).reshape(num_f, 3, 1), (num_f, 3, 3))
    a = sp.csr_matrix((vals.ravel(), (rows.ravel(), cols.ravel())), shape=(3 * num_f, num_v))
    keep = np.ones(num_v, dtype=bool)
    keep[pinned] = False
    return GradientSystem(a[:, keep].tocsr(), proj, num_v, int(pinned))


class DeformationTransfer:
    """Transfer deformations of a source mesh onto a target mesh of the same topology.

    Set-up (once per target): the gradient operator A of the target's rest shape and the sparse
    LU factorisation of A^T A. Each :meth:`transfer` call then costs one sparse matrix product
    and one pair of triangular solves for all deformations at once.

    Args:
        source_rest: (V, 3) float, the source's rest shape, any unit.
        target_rest: (V, 3) float, the target's rest shape, same unit.
        faces: (F, 3) int, the shared triangles; the mesh must be connected (otherwise the
            translation of each extra component is not determined).
    """

    def __init__(self, source_rest: np.ndarray, target_rest: np.ndarray, faces: np.ndarray):
        sizes = check_shape("source_rest", source_rest, ("V", 3))
        check_shape("target_rest", target_rest, ("V", 3), sizes)
        check_faces("faces", faces, sizes["V"])
        check_finite("source_rest", source_rest)
        check_finite("target_rest", target_rest)
        self.faces = np.asarray(faces, dtype=np.int64)
        self.source_rest = np.asarray(source_rest, dtype=np.float64)
        self.target_rest = np.asarray(target_rest, dtype=np.float64)
        self._source_rest_inv = np.linalg.inv(triangle_frames(self.source_rest, self.faces))  # (F, 3, 3)
        self.system = gradient_operator(self.target_rest, self.faces, pinned=0)
        at = self.system.matrix.T.tocsr()  # (V - 1, 3F)
        self._at = at
        normal = (at @ self.system.matrix).tocsc()  # (V - 1, V - 1), SPD
        try:
            self._lu = spla.splu(normal, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True})
        except RuntimeError as exc:  # exactly singular: a disconnected mesh
            raise ValueError(f"faces: the deformation-transfer system is singular ({exc}); is the mesh connected?") from exc

    def source_gradients(self, source_deformed: np.ndarray) -> np.ndarray:
        """(K, F, 3, 3) float64 deformation gradients of ``source_deformed`` (K, V, 3) from the source rest."""
        return triangle_frames(source_deformed, self.faces) @ self._source_rest_inv[None]

    def transfer_gradients(self, gradients: np.ndarray, mean_displacement: np.ndarray | None = None) -> np.ndarray:
        """Deformed target meshes whose gradients best match ``gradients``.

        Args:
            gradients: (K, F, 3, 3) float, per-triangle source gradients (unitless).
            mean_displacement: (K, 3) float, the mean vertex displacement the result gets (in the
                mesh unit); None = zero.

        Returns:
            (K, V, 3) float64 deformed target vertices, in the target's unit.
        """
        num_f, num_v = len(self.faces), len(self.target_rest)
        check_shape("gradients", gradients, (None, num_f, 3, 3))
        k = gradients.shape[0]
        # b[j, c, (k, r)] = S[k, j, r, c], projected: b' = P_j b_j
        b = np.transpose(np.asarray(gradients, dtype=np.float64), (1, 3, 0, 2)).reshape(num_f, 3, 3 * k)
        b = (self.system.projector @ b).reshape(3 * num_f, 3 * k)  # (3F, 3K)
        x = self._lu.solve(self._at @ b)  # (V - 1, 3K)
        p = self.system.pinned
        verts = np.insert(x, p, 0.0, axis=0)  # (V, 3K), the pinned vertex at 0
        verts = np.transpose(verts.reshape(num_v, k, 3), (1, 0, 2))  # (K, V, 3)
        target_mean = self.target_rest.mean(axis=0)  # (3,)
        shift = target_mean[None] - verts.mean(axis=1)  # (K, 3)
        if mean_displacement is not None:
            shift = shift + np.asarray(mean_displacement, dtype=np.float64).reshape(k, 3)
        return verts + shift[:, None, :]

    def transfer(self, source_deformed: np.ndarray) -> np.ndarray:
        """Transfer source deformations onto the target.

        Args:
            source_deformed: (K, V, 3) or (V, 3) float, deformed source meshes, source unit.

        Returns:
            (K, V, 3) (or (V, 3)) float64 deformed target meshes, same unit.
        """
        single = np.ndim(source_deformed) == 2
        deformed = np.asarray(source_deformed, dtype=np.float64)
        deformed = deformed[None] if single else deformed
        check_shape("source_deformed", deformed, (None, len(self.source_rest), 3))
        check_finite("source_deformed", deformed)
        mean_disp = (deformed - self.source_rest[None]).mean(axis=1)  # (K, 3)
        out = self.transfer_gradients(self.source_gradients(deformed), mean_disp)
        return out[0] if single else out


def deformation_transfer(
    source_rest: np.ndarray, source_deformed: np.ndarray, target_rest: np.ndarray, faces: np.ndarray
) -> np.ndarray:
    """One-shot :class:`DeformationTransfer`: shapes as in :meth:`DeformationTransfer.transfer`.

    Args:
        source_rest: (V, 3) float. source_deformed: (K, V, 3) or (V, 3) float.
        target_rest: (V, 3) float. faces: (F, 3) int. All in one unit.

    Returns:
        (K, V, 3) or (V, 3) float64 deformed targets, same unit.
    """
    return DeformationTransfer(source_rest, target_rest, faces).transfer(source_deformed)
