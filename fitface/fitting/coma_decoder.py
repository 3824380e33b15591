"""Torch-free decoder of the CoMA ("DeepFLAME") baseline: PCA identity + CoMA mesh decoder.

The numpy twin of :class:`fitface.models.coma_generator.ComaGenerator` (model files of
generator kind ``"coma"``), implementing the :class:`fitface.fitting.decoder.Decoder` protocol
with hand-written VJPs, so ``fitface fit`` fits a CoMA model without torch:

    vertices = template + (identity_basis @ z_id + offset).reshape(V, 3)
               + CoMA_decoder(exp_mean + exp_scale @ z_exp) * std + mean

CoMA's decoder (Ranjan et al. 2018; layers in :mod:`fitface.models.coma`): a linear layer
latent -> V_L * C + ReLU, then for level ``l = L-1 .. 0`` an up-sampling ``up[l]`` and a
Chebyshev convolution of order K on level ``l`` + ReLU, and a last Chebyshev convolution
(16 -> 3, no bias). Unlike an MLP's last layer it does not slice: every landmark depends on a
neighbourhood of the whole hierarchy, so each evaluation decodes the whole mesh (sparse matmuls,
scipy CSR) but the last layer, and the landmark points are the barycentric combination of the
decoded corner vertices.

Convention:
    * Chebyshev convolution ``y = sum_{k<K} T_k(L^) x W_k + b`` with ``L^ = -D^-1/2 A D^-1/2``
      (:func:`rescaled_laplacian`, symmetric), ``W`` (F_in * K, F_out) term-major
      (``W_k = W[k F_in:(k+1) F_in]``), as :func:`fitface.models.chebyshev.cheb_conv`.
    * Evaluation order (a choice for speed, exact in exact arithmetic): a layer with
      ``F_out < F_in`` is evaluated in Clenshaw form, ``p_k = x W_k`` then
      ``b_k = p_k + 2 L^ b_{k+1} - b_{k+2}``, ``y = p_0 + L^ b_1 - b_2``, so its K - 1 sparse
      products run on F_out channels (3 for the last layer) instead of F_in; other layers use
      the three-term recurrence on ``x``. The VJP of a layer is a Chebyshev convolution of the
      output gradient with the weights ``W_k^T`` (``T_k(L^)`` is symmetric), in the form of
      fewer channels again.
    * Landmark points (:meth:`ComaDecoder.linearize_points`) need the last layer only at the
      landmarks' corner vertices ``S``: its output there is one precomputed sparse product,
      ``[T_0(L^)[S, :] ... T_{K-1}(L^)[S, :]] @ [p_0; ...; p_{K-1}]`` (about 216 non-zeros per
      corner at K = 6, :class:`ComaLandmarkRows`), and its VJP the transposed one; the layers
      below are decoded whole.
    * Features are stored vertex-major for the batch, ``(V_l, B * F)`` (row = vertex, columns
      batch-major), so one sparse product serves the whole batch.
    * BLAS runs single-threaded inside a decode and its VJP (``threadpoolctl``): the dense
      products are thin, (V, 16) x (16, 16), and OpenBLAS's threads cost more than they give
      (measured on the ICT face on a loaded 2-core machine: 48 ms a level-0 convolution with
      the default threads, 2.5 ms with one).
    * Lengths in the model unit; ``mean`` and ``std`` (V, 3) are the per-vertex-coordinate
      normalisation of the displacements the autoencoder was trained on.
    * The code is ``[z_id (I), z_exp (J)(, noise)]`` in layout order; a noise block is unused
      (zero gradient). ``exp_scale`` is lower-triangular (the training codes' Gaussian), so
      ``z ~ N(0, I)`` samples the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from fitface.checks import check_shape
from fitface.landmark_set import LandmarkSet
from fitface.latent import LatentLayout

from .decoder import DecoderBase, LandmarkRows

_CONTROLLER: list = []


def _one_blas_thread():
    """A context manager limiting BLAS to one thread (a ThreadpoolController made once; ~20 us a use)."""
    if not _CONTROLLER:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0].limit(limits=1, user_api="blas")


__all__ = ["ComaDecoder", "ComaNetwork", "ComaLandmarkRows", "rescaled_laplacian", "sparse_from_arrays"]


def rescaled_laplacian(adjacency: sp.spmatrix) -> sp.csr_matrix:
    """``L^ = -D^-1/2 A D^-1/2`` (module Convention) of a (V, V) adjacency, float64 CSR.

    Any non-zero off-diagonal entry counts as an edge (weight 1); the diagonal is ignored.

    Raises:
        ValueError: if the matrix is not square and symmetric, or a vertex has no neighbour.
    """
    a = sp.csr_matrix(adjacency, dtype=np.float64)
    if a.shape[0] != a.shape[1]:
        raise ValueError(f"adjacency: expected a square (V, V) matrix, got {a.shape}")
    a = a.copy()
    a.setdiag(0)
    a.eliminate_zeros()
    a.data[:] = 1.0
    if (a != a.T).nnz:
        raise ValueError("adjacency: expected a symmetric matrix")
    deg = np.asarray(a.sum(axis=1)).ravel()
    bad = np.flatnonzero(deg == 0)
    if len(bad):
        raise ValueError(f"adjacency: vertex {int(bad[0])} has no neighbour ({len(bad)} isolated vertices)")
    s = sp.diags(1.0 / np.sqrt(deg))
    return (-(s @ a @ s)).tocsr()


def sparse_from_arrays(arrays: dict, name: str) -> sp.csr_matrix:
    """The float64 CSR matrix stored as ``name.indices`` (2, nnz) int, ``name.values`` (nnz,) float
    and ``name.shape`` (2,) int (the layout of ``MeshHierarchy.to_arrays``).

    Raises:
        ValueError: missing arrays or inconsistent shapes.
    """
    for part in ("indices", "values", "shape"):
        if f"{name}.{part}" not in arrays:
            raise ValueError(f"sparse matrix {name!r}: array {name}.{part} missing")
    idx, val = np.asarray(arrays[f"{name}.indices"]), np.asarray(arrays[f"{name}.values"])
    shape = tuple(int(s) for s in np.asarray(arrays[f"{name}.shape"]))
    check_shape(f"{name}.indices", idx, (2, "nnz"))
    check_shape(f"{name}.values", val, ("nnz",), {"nnz": idx.shape[1]})
    if len(shape) != 2 or (idx.size and (idx.min() < 0 or idx[0].max() >= shape[0] or idx[1].max() >= shape[1])):
        raise ValueError(f"sparse matrix {name!r}: indices out of range of shape {shape}")
    return sp.csr_matrix((val.astype(np.float64), (idx[0], idx[1])), shape=shape)


@dataclass(frozen=True)
class ComaNetwork:
    """CoMA's decoder weights and operators (numpy), coarsest level last.

    Attributes (``L`` levels, sizes ``V_0 > ... > V_L``, ``C`` = the decoder linear's channels):
        linear_weight: (V_L * C, J) float; linear_bias: (V_L * C,).
        conv_weights: L arrays, decoder convolution ``i`` (on level ``L-1-i``), (F_in * K, F_out).
        conv_biases: L arrays (F_out,).
        final_weight: (F * K, 3), the last convolution on level 0 (no bias).
        up: L float64 CSR (V_l, V_{l+1}), index ``l`` = level ``l + 1`` -> ``l``.
        laplacians: L + 1 float64 CSR (V_l, V_l), each level's ``L^``.
        mean, std: (V_0, 3) float, the displacement normalisation (model unit).
        order: K.
    """

    linear_weight: np.ndarray
    linear_bias: np.ndarray
    conv_weights: tuple
    conv_biases: tuple
    final_weight: np.ndarray
    up: tuple
    laplacians: tuple
    mean: np.ndarray
    std: np.ndarray
    order: int

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(int(m.shape[0]) for m in self.laplacians)

    @classmethod
    def from_tensors(cls, tensors: dict, order: int, prefix: str = "generator.") -> ComaNetwork:
        """From a model file's arrays: ``{prefix}coma.*`` (the autoencoder's state) and
        ``{prefix}hierarchy.*`` (``MeshHierarchy.to_arrays``)."""
        def get(name):
            return np.asarray(tensors[prefix + name])

        hier = {k[len(prefix + "hierarchy."):]: v for k, v in tensors.items() if k.startswith(prefix + "hierarchy.")}
        levels = sum(1 for k in hier if k.startswith("survivors.") and k.count(".") == 1)
        up = tuple(sparse_from_arrays(hier, f"up.{i}") for i in range(levels))
        laps = tuple(rescaled_laplacian(sparse_from_arrays(hier, f"adjacency.{i}")) for i in range(levels + 1))
        return cls(get("coma.decoder_linear.weight"), get("coma.decoder_linear.bias"),
                   tuple(get(f"coma.decoder_convs.{i}.weight") for i in range(levels)),
                   tuple(get(f"coma.decoder_convs.{i}.bias") for i in range(levels)),
                   get("coma.final_conv.weight"), up, laps, get("coma.mean"), get("coma.std"), int(order))


@dataclass(frozen=True)
class ComaLandmarkRows(LandmarkRows):
    """:class:`LandmarkRows` of a CoMA decoder: ``matrix`` (3L, I) = the identity basis's
    barycentric rows, ``offset`` (3L,) = the landmarks of ``template + offset + mean``, and
    ``selection`` (L, V) float CSR, the barycentric weights that pick landmark points out of
    decoded vertices (``selection_t`` its transpose).

    The last Chebyshev layer restricted to the landmarks' corner vertices ``S`` (the ``n_S``
    distinct corners): ``corner_selection`` (L, n_S) CSR = ``selection[:, S]`` (and its
    transpose), ``corner_std`` (n_S, 3) = ``std[S]``, and ``final_rows`` (n_S, K V) CSR =
    ``[T_0(L^)[S, :], ..., T_{K-1}(L^)[S, :]]`` of level 0 (and ``final_rows_t``), so the last
    layer's output at ``S`` is one sparse product with ``p_k = h W_k`` stacked term-major."""

    selection: Any = None
    selection_t: Any = None
    corner_selection: Any = None
    corner_selection_t: Any = None
    corner_std: Any = None
    final_rows: Any = None
    final_rows_t: Any = None


class _Layer:
    """One Chebyshev convolution in the decoder's dtype: weights split per term, both evaluation forms."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None, laplacian: sp.csr_matrix, order: int, dtype):
        fk, fout = weight.shape
        if fk % order:
            raise ValueError(f"Chebyshev weight {weight.shape}: rows not a multiple of the order {order}")
        fin = fk // order
        self.fin, self.fout, self.order = fin, fout, order
        w = np.asarray(weight, dtype=dtype)
        self.w = [np.ascontiguousarray(w[k * fin:(k + 1) * fin]) for k in range(order)]  # K x (F_in, F_out)
        self.wt = [np.ascontiguousarray(m.T) for m in self.w]  # K x (F_out, F_in)
        self.bias = None if bias is None else np.asarray(bias, dtype=dtype)
        self.lap = sp.csr_matrix(laplacian, dtype=dtype)
        self.lap.sort_indices()
        self.dtype = dtype


def _cheb(lap: sp.csr_matrix, x: np.ndarray, ws: list, nb: int, cin: int, cout: int) -> np.ndarray:
    """``sum_k T_k(L^) x W_k``: x (V, B * cin) -> (V, B * cout), in the form with fewer sparse channels."""
    v = x.shape[0]
    k_terms = len(ws)
    if cout < cin:  # Clenshaw: sparse products on cout channels
        xf = x.reshape(v * nb, cin)
        p = [(xf @ ws[k]).reshape(v, nb * cout) for k in range(k_terms)]  # K x (V, B * cout)
        if k_terms == 1:
            return p[0]
        b2 = np.zeros_like(p[0])
        b1 = p[k_terms - 1]
        for k in range(k_terms - 2, 0, -1):
            b = lap @ b1
            b *= 2.0
            b += p[k]
            b -= b2
            b2, b1 = b1, b
        y = lap @ b1
        y += p[0]
        y -= b2
        return y
    # three-term recurrence on x: sparse products on cin channels
    out = (x.reshape(v * nb, cin) @ ws[0])  # (V * B, cout)
    if k_terms > 1:
        t_prev, t = x, lap @ x
        out += t.reshape(v * nb, cin) @ ws[1]
        for k in range(2, k_terms):
            t_new = lap @ t
            t_new *= 2.0
            t_new -= t_prev
            t_prev, t = t, t_new
            out += t.reshape(v * nb, cin) @ ws[k]
    return out.reshape(v, nb * cout)


class ComaDecoder(DecoderBase):
    """The CoMA baseline (PCA identity + CoMA expression decoder) in numpy (module Convention).

    Args:
        template: (V, 3) model unit. faces: (F, 3) int.
        layout: latent layout, blocks ``(identity I, expression J[, noise])``.
        identity_basis: (3V, I) float, row ``3v + c``, model unit per unit code.
        network: :class:`ComaNetwork` (decoder latent size J, level-0 size V).
        offset: (3V,) float displacement added to every decode (default zeros).
        exp_mean: (J,) float, default zeros. exp_scale: (J, J) lower-triangular, default I.
        unit, landmark_sets, model_id: metadata passed through.
        dtype: computation dtype (float32 default, float64 for tests).

    Raises:
        ValueError: wrong shapes, a layout that does not fit, a non-lower-triangular exp_scale.
    """

    def __init__(self, template: np.ndarray, faces: np.ndarray, layout: LatentLayout, identity_basis: np.ndarray,
                 network: ComaNetwork, offset: np.ndarray | None = None, exp_mean: np.ndarray | None = None,
                 exp_scale: np.ndarray | None = None, unit: str = "mm",
                 landmark_sets: dict[str, LandmarkSet] | None = None, model_id: str = "", dtype: Any = np.float32):
        super().__init__(template, faces, layout, unit, landmark_sets, model_id, dtype)
        nv, dt = self.num_vertices, self.dtype
        sizes = check_shape("identity_basis", identity_basis, (3 * nv, "I"))
        ni = int(sizes["I"])
        nj = int(np.shape(network.linear_weight)[1])
        blocks = [d for _, d in layout.blocks]
        if blocks[:2] != [ni, nj] or len(blocks) > 3 or (len(blocks) == 3 and layout.names[2] != "noise"):
            raise ValueError(f"layout {layout.describe()}: a CoMA model (identity {ni}, expression {nj}) needs "
                             f"blocks (identity {ni}, expression {nj}[, noise])")
        if network.sizes[0] != nv:
            raise ValueError(f"network: level 0 has {network.sizes[0]} vertices, the template {nv}")
        check_shape("mean", network.mean, (nv, 3))
        check_shape("std", network.std, (nv, 3))
        self.identity_dim, self.expression_dim = ni, nj
        self.network = network
        off = np.zeros(3 * nv) if offset is None else np.asarray(offset, dtype=np.float64)
        check_shape("offset", off, (3 * nv,))
        self.offset = off
        em = np.zeros(nj) if exp_mean is None else np.asarray(exp_mean, dtype=np.float64)
        es = np.eye(nj) if exp_scale is None else np.asarray(exp_scale, dtype=np.float64)
        check_shape("exp_mean", em, (nj,))
        check_shape("exp_scale", es, (nj, nj))
        if np.any(np.triu(es, 1) != 0):
            raise ValueError("exp_scale: expected a lower-triangular (Cholesky) matrix")
        self.exp_mean, self.exp_scale = em.astype(dt), es.astype(dt)
        self.exp_scale_t = np.ascontiguousarray(self.exp_scale.T)
        self.identity_basis = np.ascontiguousarray(identity_basis, dtype=dt)  # (3V, I)
        self.identity_basis_t = np.ascontiguousarray(self.identity_basis.T)  # (I, 3V)
        # z-independent part of the vertices: template + offset + mean, (V, 3)
        self._base64 = self.template + off.reshape(nv, 3) + np.asarray(network.mean, dtype=np.float64)
        self._base = self._base64.astype(dt)
        self._std = np.asarray(network.std, dtype=dt)  # (V, 3)
        lw = np.asarray(network.linear_weight, dtype=dt)  # (V_L C, J)
        self._lin_w, self._lin_wt = lw, np.ascontiguousarray(lw.T)
        self._lin_b = np.asarray(network.linear_bias, dtype=dt)
        levels = len(network.up)
        if len(network.conv_weights) != levels or len(network.laplacians) != levels + 1:
            raise ValueError(f"network: {levels} up-samplings need as many convolutions and {levels + 1} Laplacians")
        self._channels = int(lw.shape[0]) // network.sizes[-1]
        if self._channels * network.sizes[-1] != lw.shape[0]:
            raise ValueError(f"network: linear output {lw.shape[0]} is not V_L = {network.sizes[-1]} x channels")
        k = network.order
        # decoder stages coarse -> fine: (up-sampling to level l, its transpose, conv on level l)
        self._stages = []
        for i in range(levels):
            level = levels - 1 - i
            up = sp.csr_matrix(network.up[level], dtype=dt)
            layer = _Layer(network.conv_weights[i], network.conv_biases[i], network.laplacians[level], k, dt)
            self._stages.append((up, sp.csr_matrix(up.T), layer))
        self._final = _Layer(network.final_weight, None, network.laplacians[0], k, dt)
        # the last layer's terms side by side, (F, K 3), column 3k + c = W_k[:, c], and its transpose
        self._final_wcat = np.ascontiguousarray(np.hstack(self._final.w))
        self._final_wcat_t = np.ascontiguousarray(self._final_wcat.T)

    # -- landmark rows ---------------------------------------------------------------------
    def landmark_rows(self, landmark_set: "str | LandmarkSet") -> ComaLandmarkRows:
        """Rows of a landmark set (cached): the identity basis's barycentric rows (3L, I), the
        landmarks of the z-independent part, and the (L, V) barycentric selection."""
        lset = self._resolve_set(landmark_set)
        key = (lset.name, lset.face_index.tobytes(), np.asarray(lset.bary).tobytes())
        rows = self._rows_cache.get(key)
        if rows is None:
            corners, bary = self._corners(lset)  # (L, 3), (L, 3)
            n = len(lset)
            sel = sp.csr_matrix((bary.ravel(), (np.repeat(np.arange(n), 3), corners.ravel())),
                                shape=(n, self.num_vertices))  # duplicates summed
            basis = self.identity_basis.astype(np.float64).reshape(self.num_vertices, 3, -1)
            matrix = np.einsum("lk,lkcd->lcd", bary, basis[corners]).reshape(3 * n, -1)  # (3L, I)
            offset = (sel @ self._base64).reshape(-1)  # (3L,)
            corner_ids = np.unique(corners)  # (n_S,) the distinct corners S
            lap = self.network.laplacians[0]  # (V, V) float64
            eye = sp.identity(self.num_vertices, format="csr")[corner_ids]  # T_0[S, :]
            terms = [eye]
            if self.network.order > 1:
                terms.append(eye @ lap)
            for _ in range(2, self.network.order):  # T_k[S, :] = 2 T_{k-1}[S, :] L^ - T_{k-2}[S, :]
                terms.append(2.0 * (terms[-1] @ lap) - terms[-2])
            final = sp.hstack(terms, format="csr").astype(self.dtype)  # (n_S, K V)
            csel = sel[:, corner_ids].tocsr().astype(self.dtype)
            sel = sel.astype(self.dtype)
            rows = ComaLandmarkRows(lset.name, matrix.astype(self.dtype), offset.astype(self.dtype), n,
                                    selection=sel, selection_t=sp.csr_matrix(sel.T), corner_selection=csel,
                                    corner_selection_t=sp.csr_matrix(csel.T),
                                    corner_std=np.ascontiguousarray(self._std[corner_ids]), final_rows=final,
                                    final_rows_t=sp.csr_matrix(final.T))
            self._rows_cache[key] = rows
        return rows

    # -- the network ---------------------------------------------------------------------
    def coefficients(self, z: np.ndarray) -> np.ndarray:
        """(B, D) codes -> (B, J) CoMA latent codes ``exp_mean + exp_scale @ z_exp``."""
        z = self._z(z)
        ni, nj = self.identity_dim, self.expression_dim
        return self.exp_mean + z[:, ni:ni + nj] @ self.exp_scale_t

    def _decode(self, w: np.ndarray) -> tuple[np.ndarray, list]:
        """(B, J) latent -> normalised decoder output (V, B * 3) and the ReLU masks (for the VJP)."""
        with _one_blas_thread():
            h, masks = self._decode_hidden(w)
            f = self._final
            return _cheb(f.lap, h, f.w, w.shape[0], f.fin, f.fout), masks  # (V, B 3)

    def _decode_hidden(self, w: np.ndarray) -> tuple[np.ndarray, list]:
        """(B, J) latent -> the last layer's input (V_0, B * F) and the ReLU masks."""
        nb, c = w.shape[0], self._channels
        vl = self.network.sizes[-1]
        pre = w @ self._lin_wt  # (B, V_L C)
        pre += self._lin_b
        mask = pre > 0
        pre *= mask
        masks = [mask]
        h = np.ascontiguousarray(pre.reshape(nb, vl, c).transpose(1, 0, 2)).reshape(vl, nb * c)  # (V_L, B C)
        for up, _, layer in self._stages:
            x = up @ h  # (V_l, B F_in)
            y = _cheb(layer.lap, x, layer.w, nb, layer.fin, layer.fout)  # (V_l, B F_out)
            y3 = y.reshape(-1, nb, layer.fout)
            y3 += layer.bias
            m = y > 0
            y *= m
            masks.append(m)
            h = y
        return h, masks  # (V_0, B F)

    def _decode_back(self, g: np.ndarray, masks: list, nb: int) -> np.ndarray:
        """VJP of :meth:`_decode`: gradient (V, B * 3) at the output -> (B, J) at the latent."""
        with _one_blas_thread():
            f = self._final
            return self._decode_back_hidden(_cheb(f.lap, g, f.wt, nb, f.fout, f.fin), masks, nb)

    def _decode_back_hidden(self, g: np.ndarray, masks: list, nb: int) -> np.ndarray:
        """VJP of :meth:`_decode_hidden`: gradient (V_0, B * F) at the last layer's input -> (B, J)."""
        for (_, up_t, layer), m in zip(reversed(self._stages), reversed(masks[1:])):
            g *= m
            g = _cheb(layer.lap, g, layer.wt, nb, layer.fout, layer.fin)  # (V_l, B F_in)
            g = up_t @ g  # (V_{l+1}, B F_in)
        vl, c = self.network.sizes[-1], self._channels
        gl = g.reshape(vl, nb, c).transpose(1, 0, 2).reshape(nb, vl * c)  # (B, V_L C)
        gl = gl * masks[0]
        return gl @ self._lin_w  # (B, J)

    def _grad_z(self, g_id: np.ndarray, g_w: np.ndarray) -> np.ndarray:
        """(B, I) and (B, J) gradients -> (B, D) at z (noise block 0)."""
        nb, ni, nj = g_id.shape[0], self.identity_dim, self.expression_dim
        gz = np.zeros((nb, self.latent_dim), dtype=self.dtype)
        gz[:, :ni] = g_id
        gz[:, ni:ni + nj] = g_w @ self.exp_scale
        return gz

    def expression_displacements(self, z: np.ndarray) -> np.ndarray:
        """The CoMA part only: (B, D) -> (B, V, 3) ``decoder(w) * std + mean`` (model unit)."""
        z = self._z(z)
        out, _ = self._decode(self.coefficients(z))
        n = out.reshape(self.num_vertices, z.shape[0], 3).transpose(1, 0, 2)
        return n * self._std + np.asarray(self.network.mean, dtype=self.dtype)

    # -- the Decoder protocol ----------------------------------------------------------------
    def vertices(self, z: np.ndarray, chunk: int = 64) -> np.ndarray:
        """Full decode: ``(B, D) -> (B, V, 3)`` vertices, model unit (in chunks of ``chunk`` codes)."""
        z = self._z(z)
        nv = self.num_vertices
        out = np.empty((z.shape[0], nv, 3), dtype=self.dtype)
        with _one_blas_thread():
            self._vertices_into(out, z, chunk)
        return out

    def _vertices_into(self, out: np.ndarray, z: np.ndarray, chunk: int) -> None:
        nv, ni = self.num_vertices, self.identity_dim
        for s in range(0, z.shape[0], chunk):
            zc = z[s:s + chunk]
            nb = zc.shape[0]
            n, _ = self._decode(self.coefficients(zc))
            o = out[s:s + nb]
            o[:] = n.reshape(nv, nb, 3).transpose(1, 0, 2)
            o *= self._std
            o += self._base
            o += (zc[:, :ni] @ self.identity_basis_t).reshape(nb, nv, 3)

    def vertices_vjp(self, z: np.ndarray, grad_vertices: np.ndarray) -> np.ndarray:
        """``d/dz sum(grad_vertices * vertices(z))``: (B, V, 3) -> (B, D)."""
        z = self._z(z)
        nb, nv = z.shape[0], self.num_vertices
        check_shape("grad_vertices", grad_vertices, (nb, nv, 3))
        g = np.asarray(grad_vertices, dtype=self.dtype)
        _, masks = self._decode(self.coefficients(z))
        gn = np.ascontiguousarray((g * self._std).transpose(1, 0, 2)).reshape(nv, nb * 3)  # (V, B 3)
        with _one_blas_thread():
            g_id = g.reshape(nb, -1) @ self.identity_basis  # (B, I)
        return self._grad_z(g_id, self._decode_back(gn, masks, nb))

    def linearize_points(self, z: np.ndarray, rows: ComaLandmarkRows):
        """Landmark points (B, L, 3) and their VJP closure ``(B, L, 3) -> (B, D)``, sharing one decode."""
        z = self._z(z)
        if not isinstance(rows, ComaLandmarkRows):
            raise ValueError("rows: expected this CoMA decoder's landmark_rows(...)")
        nb, nl, ni = z.shape[0], rows.num_points, self.identity_dim
        nv, k, f = self.num_vertices, self.network.order, self._final
        ns = rows.corner_std.shape[0]
        with _one_blas_thread():
            h, masks = self._decode_hidden(self.coefficients(z))  # (V, B F)
            p = h.reshape(nv * nb, f.fin) @ self._final_wcat  # (V B, K 3), column 3k + c
            p = np.ascontiguousarray(p.reshape(nv, nb, k, 3).transpose(2, 0, 1, 3)).reshape(k * nv, nb * 3)
            y = rows.final_rows @ p  # (n_S, B 3): the last layer at the corners, normalised
            y.reshape(ns, nb, 3)[:] *= rows.corner_std[:, None, :]
            pts = (rows.corner_selection @ y).reshape(nl, nb, 3).transpose(1, 0, 2)  # (B, L, 3)
            flat = z[:, :ni] @ rows.matrix_t  # (B, 3L)
        flat += rows.offset
        pts = pts + flat.reshape(nb, nl, 3)

        def vjp(grad_points: np.ndarray) -> np.ndarray:
            gp = np.asarray(grad_points, dtype=self.dtype).reshape(nb, nl, 3)
            with _one_blas_thread():
                g_id = gp.reshape(nb, -1) @ rows.matrix  # (B, I)
                gs = rows.corner_selection_t @ np.ascontiguousarray(gp.transpose(1, 0, 2)).reshape(nl, nb * 3)
                gs.reshape(ns, nb, 3)[:] *= rows.corner_std[:, None, :]  # (n_S, B 3)
                g_p = (rows.final_rows_t @ gs).reshape(k, nv, nb, 3)  # (K V, B 3) at p
                g_p = np.ascontiguousarray(g_p.transpose(1, 2, 0, 3)).reshape(nv * nb, k * 3)
                g_h = (g_p @ self._final_wcat_t).reshape(nv, nb * f.fin)  # (V, B F)
                g_w = self._decode_back_hidden(g_h, masks, nb)
            return self._grad_z(g_id, g_w)

        return pts, vjp

    def points_vjp(self, z: np.ndarray, rows: ComaLandmarkRows, grad_points: np.ndarray) -> np.ndarray:
        """``d/dz sum(grad_points * points(z))``: (B, L, 3) -> (B, D)."""
        check_shape("grad_points", grad_points, (None, rows.num_points, 3))
        return self.linearize_points(z, rows)[1](grad_points)


def coma_decoder_from_file(mf, layout: LatentLayout, faces: np.ndarray, sets: dict, dtype: Any) -> ComaDecoder:
    """A :class:`ComaDecoder` from a validated numpy :class:`~fitface.io.model_file_format.ModelFile`."""
    doc, t = mf.document, mf.tensors
    net = ComaNetwork.from_tensors(t, int(doc["generator"]["order"]))
    return ComaDecoder(t["template"], faces, layout, t["generator.identity_basis"], net,
                       offset=t["generator.offset"], exp_mean=t["generator.exp_mean"],
                       exp_scale=t["generator.exp_scale"], unit=doc["unit"], landmark_sets=sets,
                       model_id=mf.model_id, dtype=dtype)
