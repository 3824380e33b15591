"""Torch-free decoders: latent code -> mesh vertices or landmark points, with hand-written VJPs.

A decoder implements the :class:`Decoder` protocol used by the fitting engines
(:mod:`fitface.fitting.landmark_fit`, :mod:`fitface.fitting.surface_refine`,
:mod:`fitface.landmarks.photo_fit`):

    rows  = dec.landmark_rows(landmark_set)            # precomputed once per set (cached)
    pts   = dec.points(z (B, D), rows)                  # (B, L, 3) model frame and unit
    pts, vjp = dec.linearize_points(z (B, D), rows)     # the same points, and
    gz    = vjp(grad_pts (B, L, 3))                     #   their VJP: (B, D), one forward pass
    verts = dec.vertices(z (B, D))                      # (B, V, 3)
    gz    = dec.vertices_vjp(z, grad_verts (B, V, 3))   # (B, D)

:class:`MLPDecoder`, :class:`LinearDecoder` and :class:`MultilinearDecoder` also have
``points_vjp(z, rows, grad_pts)``
(``linearize_points(z, rows)[1](grad_pts)`` with a shape check), which the engines do not use.

:class:`MLPDecoder` is the GAN generator of :mod:`fitface.models.generator` in numpy
(``h = LeakyReLU(W1 z + b1); out = W2 h + b2; vertices = template + out.reshape(V, 3)``);
:class:`LinearDecoder` is a linear model (``template + basis @ z + offset``, a 3DMM; model files
of generator kind ``"linear"``, :mod:`fitface.models.linear`); :class:`MultilinearDecoder` is the
MAE baseline's Tucker decoder (``template + core x2 w_id x3 w_exp + offset`` with ``w = mean + L z``
per mode; kind ``"multilinear"``, :mod:`fitface.models.multilinear`). The CoMA baseline's decoder
(kind ``"coma"``), which does not slice, is :class:`fitface.fitting.coma_decoder.ComaDecoder`.

Convention:
    * Row ``3 v + c`` of the last layer (and of a linear basis) is coordinate ``c`` of vertex ``v``
      (vertex-major, xyz interleaved), as in :mod:`fitface.models.generator`.
    * Landmark rows: a landmark is a barycentric combination of its triangle's three vertices,
      so its coordinate ``c`` is produced by the effective last-layer row
      ``sum_k bary_k * W2[3 * vertex_k + c]`` with bias ``sum_k bary_k * (b2 + template)[...]``.
      :class:`LandmarkRows` holds these ``(3L, H)`` rows (``(3L, D)`` for a linear decoder;
      for a multilinear one the core's rows ``(3L, d_id, d_exp)``, flattened to
      ``(3L, d_id * d_exp)``), so an optimisation step costs ``O(B * H * 3L)`` instead of
      ``O(B * H * 3V)``.
    * Computation dtype: float32 by default (the model file's weights; float16 files are
      upcast), float64 on request (tests, finite differences). Inputs are cast to it.
    * Lengths are in the model unit (:attr:`unit`, mm by default).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fitface.checks import check_face_index, check_faces, check_shape
from fitface.io.model_file_format import generator_kind, read_numpy_model_file
from fitface.io.model_registry import resolve_model
from fitface.landmark_set import LandmarkSet
from fitface.latent import LatentLayout

#: Negative slope of the generator's LeakyReLU (supplement Fig. 12a), when not given.
NEGATIVE_SLOPE = 0.2


@dataclass(frozen=True)
class LandmarkRows:
    """Precomputed effective output rows that produce one landmark set's points.

    Attributes:
        name: the landmark set's name.
        matrix: (3L, H) for an MLP decoder (last-layer rows), (3L, D) for a linear decoder,
            (3L, d_id * d_exp) for a multilinear decoder (the core's effective rows
            (3L, d_id, d_exp), column ``i * d_exp + j``; see :meth:`MultilinearDecoder.core_rows`);
            row ``3 i + c`` gives coordinate ``c`` of landmark ``i``.
        offset: (3L,) bias + template, model unit.
        num_points: ``L``.
        matrix_t: ``matrix.T`` as a contiguous array (BLAS is several times faster on it).
    """

    name: str
    matrix: np.ndarray
    offset: np.ndarray
    num_points: int
    matrix_t: np.ndarray | None = None

    def __post_init__(self):
        if self.matrix_t is None:
            object.__setattr__(self, "matrix_t", np.ascontiguousarray(self.matrix.T))


@runtime_checkable
class Decoder(Protocol):
    """What the fitting engines need from a model (see the module docstring)."""

    layout: LatentLayout
    unit: str
    model_id: str
    faces: np.ndarray  # (F, 3) int64
    template: np.ndarray  # (V, 3) model unit
    landmark_sets: dict[str, LandmarkSet]
    dtype: np.dtype

    @property
    def latent_dim(self) -> int: ...

    @property
    def num_vertices(self) -> int: ...

    def landmark_rows(self, landmark_set: "str | LandmarkSet") -> LandmarkRows: ...

    def points(self, z: np.ndarray, rows: LandmarkRows) -> np.ndarray: ...

    def linearize_points(
        self, z: np.ndarray, rows: LandmarkRows
    ) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]: ...

    def vertices(self, z: np.ndarray) -> np.ndarray: ...

    def vertices_vjp(self, z: np.ndarray, grad_vertices: np.ndarray) -> np.ndarray: ...


class DecoderBase:
    """Shared bookkeeping of the numpy decoders (here and :mod:`fitface.fitting.coma_decoder`):
    template, faces, landmark sets, row cache, input checks."""

    def __init__(
        self,
        template: np.ndarray,
        faces: np.ndarray,
        layout: LatentLayout,
        unit: str,
        landmark_sets: dict[str, LandmarkSet] | None,
        model_id: str,
        dtype: Any,
    ):
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype: expected float32 or float64, got {self.dtype}")
        template = np.asarray(template, dtype=np.float64)
        check_shape("template", template, ("V", 3))
        faces = np.asarray(faces, dtype=np.int64)
        check_faces("faces", faces, len(template))
        self.template = template
        self.faces = faces
        self.layout = layout
        self.unit = unit
        self.model_id = model_id
        self.landmark_sets = dict(landmark_sets or {})
        self._rows_cache: dict[Any, LandmarkRows] = {}
        #: built-in model name and file (set by :func:`load_decoder`; None for in-memory decoders)
        self.model_name: str | None = None
        self.model_path: os.PathLike | None = None

    @property
    def latent_dim(self) -> int:
        return self.layout.dim

    @property
    def num_vertices(self) -> int:
        return int(self.template.shape[0])

    def _z(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=self.dtype)
        if z.ndim == 1:
            z = z[None]
        check_shape("z", z, (None, self.latent_dim))
        return z

    def _resolve_set(self, landmark_set: "str | LandmarkSet") -> LandmarkSet:
        if isinstance(landmark_set, LandmarkSet):
            lset = landmark_set
        elif landmark_set in self.landmark_sets:
            lset = self.landmark_sets[landmark_set]
        else:
            known = ", ".join(self.landmark_sets) or "none"
            raise KeyError(f"no landmark set {landmark_set!r} in the model; it has {known}")
        check_face_index(f"landmark set {lset.name!r}", lset.face_index, len(self.faces))
        return lset

    def _corners(self, lset: LandmarkSet) -> tuple[np.ndarray, np.ndarray]:
        """(L, 3) vertex ids and (L, 3) float64 barycentric weights of a set."""
        return self.faces[lset.face_index], np.asarray(lset.bary, dtype=np.float64)

    def landmark_rows(self, landmark_set: "str | LandmarkSet") -> LandmarkRows:
        """Effective rows producing a landmark set's points (computed once, then cached).

        Args:
            landmark_set: a set name of :attr:`landmark_sets` or a :class:`LandmarkSet` on this
                template's faces.
        """
        lset = self._resolve_set(landmark_set)
        key = (lset.name, lset.face_index.tobytes(), np.asarray(lset.bary).tobytes())
        rows = self._rows_cache.get(key)
        if rows is None:
            corners, bary = self._corners(lset)
            matrix, offset = self._effective_rows(corners, bary)
            rows = LandmarkRows(lset.name, matrix.astype(self.dtype), offset.astype(self.dtype), len(lset))
            self._rows_cache[key] = rows
        return rows

    def _effective_rows(self, corners: np.ndarray, bary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def linearize_points(self, z: np.ndarray, rows: LandmarkRows):
        raise NotImplementedError

    def points(self, z: np.ndarray, rows: LandmarkRows) -> np.ndarray:
        """Landmark points ``(B, L, 3)``, model frame and unit, for codes ``z (B, D)``."""
        return self.linearize_points(z, rows)[0]

    def points_vjp(self, z: np.ndarray, rows: LandmarkRows, grad_points: np.ndarray) -> np.ndarray:
        """``d/dz sum(grad_points * points(z))``: (B, L, 3) -> (B, D)."""
        check_shape("grad_points", grad_points, (None, rows.num_points, 3))
        return self.linearize_points(z, rows)[1](grad_points)


class _HiddenLayerDecoder(DecoderBase):
    """A decoder whose output is one linear layer of a hidden activation:
    ``vertices = template + (W h(z) + b).reshape(V, 3)`` with ``W`` = :attr:`_out_weight` (3V, H)
    and ``template + b`` = :attr:`_offset` (3V,). Subclasses give ``hidden(z) -> (h (B, H),
    state)`` and ``_back(z, state, grad_h (B, H)) -> (B, D)`` (the VJP of ``h`` at ``z``)."""

    _out_weight: np.ndarray
    _offset: np.ndarray

    def hidden(self, z: np.ndarray) -> tuple[np.ndarray, Any]:
        raise NotImplementedError

    def _back(self, z: np.ndarray, state: Any, grad_h: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def linearize_points(self, z: np.ndarray, rows: LandmarkRows):
        """Points and a VJP closure sharing the forward pass (what an optimiser step needs).

        Returns:
            ``(points (B, L, 3), vjp)`` where ``vjp(grad_points (B, L, 3)) -> (B, D)``.
        """
        h, state = self.hidden(z)
        flat = h @ rows.matrix_t  # (B, 3L)
        flat += rows.offset
        nb = flat.shape[0]

        def vjp(grad_points: np.ndarray) -> np.ndarray:
            g = np.asarray(grad_points, dtype=self.dtype).reshape(nb, -1)  # (B, 3L)
            return self._back(z, state, g @ rows.matrix)

        return flat.reshape(nb, rows.num_points, 3), vjp

    def vertices(self, z: np.ndarray, chunk: int = 256) -> np.ndarray:
        """Full decode: ``(B, D) -> (B, V, 3)`` vertices, model unit (in chunks of ``chunk`` codes)."""
        z = self._z(z)
        out = np.empty((z.shape[0], 3 * self.num_vertices), dtype=self.dtype)
        for s in range(0, z.shape[0], chunk):
            h, _ = self.hidden(z[s : s + chunk])
            np.matmul(h, self._out_weight.T, out=out[s : s + chunk])
            out[s : s + chunk] += self._offset
        return out.reshape(z.shape[0], self.num_vertices, 3)

    def vertices_vjp(self, z: np.ndarray, grad_vertices: np.ndarray) -> np.ndarray:
        """``d/dz sum(grad_vertices * vertices(z))``: (B, V, 3) -> (B, D)."""
        z = self._z(z)
        check_shape("grad_vertices", grad_vertices, (z.shape[0], self.num_vertices, 3))
        _, state = self.hidden(z)
        g = np.asarray(grad_vertices, dtype=self.dtype).reshape(z.shape[0], -1)
        return self._back(z, state, g @ self._out_weight)


class MLPDecoder(_HiddenLayerDecoder):
    """The generator ``z -> template + W2 LeakyReLU(W1 z + b1) + b2`` in numpy.

    Args:
        w1: (H, D) first-layer weight; b1: (H,).
        w2: (3V, H) last-layer weight (row ``3v + c``); b2: (3V,).
        template: (V, 3) model unit. faces: (F, 3) int.
        layout: latent layout (``layout.dim == D``).
        negative_slope: LeakyReLU slope (0.2; 0 = ReLU).
        unit, landmark_sets, model_id: metadata passed through.
        dtype: computation dtype (float32 default, float64 for tests).
    """

    def __init__(
        self,
        w1: np.ndarray,
        b1: np.ndarray,
        w2: np.ndarray,
        b2: np.ndarray,
        template: np.ndarray,
        faces: np.ndarray,
        layout: LatentLayout,
        negative_slope: float = NEGATIVE_SLOPE,
        unit: str = "mm",
        landmark_sets: dict[str, LandmarkSet] | None = None,
        model_id: str = "",
        dtype: Any = np.float32,
    ):
        super().__init__(template, faces, layout, unit, landmark_sets, model_id, dtype)
        nv = self.num_vertices
        sizes = {"D": layout.dim, "3V": 3 * nv}
        check_shape("w1", w1, ("H", "D"), sizes)
        check_shape("b1", b1, ("H",), sizes)
        check_shape("w2", w2, ("3V", "H"), sizes)
        check_shape("b2", b2, ("3V",), sizes)
        dt = self.dtype
        self.w1 = np.ascontiguousarray(w1, dtype=dt)
        self.w1t = np.ascontiguousarray(self.w1.T)  # (D, H): z @ w1t is much faster than z @ w1.T
        self.b1 = np.ascontiguousarray(b1, dtype=dt)
        self.w2 = np.ascontiguousarray(w2, dtype=dt)
        self.b2 = np.ascontiguousarray(b2, dtype=dt)
        self.negative_slope = float(negative_slope)
        self._out_weight = self.w2
        # full-mesh offset: bias + template, (3V,) in the computation dtype
        self._offset = (np.asarray(b2, np.float64) + self.template.reshape(-1)).astype(dt)

    @classmethod
    def from_arrays(cls, w1, b1, w2, b2, template, faces, layout=None, **kwargs) -> "MLPDecoder":
        """Build from plain arrays; ``layout`` defaults to one block ``("identity", D)``, or an
        int tuple of sizes is read as ``identity, expression[, noise]``."""
        d = int(np.shape(w1)[1])
        if layout is None:
            layout = LatentLayout((("identity", d),))
        elif isinstance(layout, (tuple, list)) and all(isinstance(x, (int, np.integer)) for x in layout):
            names = ("identity", "expression", "noise")[: len(layout)]
            layout = LatentLayout(tuple(zip(names, (int(x) for x in layout))))
        return cls(w1, b1, w2, b2, template, faces, layout, **kwargs)

    @property
    def hidden_size(self) -> int:
        return int(self.w1.shape[0])

    def _effective_rows(self, corners, bary):
        h = self.hidden_size
        w2 = self.w2.reshape(self.num_vertices, 3, h)  # (V, 3, H) view
        matrix = np.einsum("lk,lkch->lch", bary, w2[corners].astype(np.float64))  # (L, 3, H)
        off = (np.asarray(self.b2, np.float64).reshape(-1, 3) + self.template)[corners]  # (L, 3 corners, 3)
        offset = np.einsum("lk,lkc->lc", bary, off)  # (L, 3)
        return matrix.reshape(-1, h), offset.reshape(-1)

    # -- forward / VJP ---------------------------------------------------------------------
    def hidden(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hidden activation and the LeakyReLU slope at each unit.

        Args:
            z: (B, D).

        Returns:
            ``(h, slope)``: (B, H) activation and (B, H) derivative of the LeakyReLU (1 or slope).
        """
        z = self._z(z)
        one, a = self.dtype.type(1.0), self.dtype.type(self.negative_slope)
        pre = z @ self.w1t  # (B, H)
        pre += self.b1
        slope = (pre > 0).astype(self.dtype)  # (B, H): 1 or a
        slope *= one - a
        slope += a
        if a <= 1:
            h = np.maximum(pre, a * pre)  # LeakyReLU (cheaper than a masked product)
        else:
            h = pre * slope
        return h, slope

    def _back(self, z: np.ndarray, slope: np.ndarray, grad_h: np.ndarray) -> np.ndarray:
        """(B, H) gradient at h -> (B, D) gradient at z (``grad_h`` is overwritten)."""
        grad_h *= slope  # through the LeakyReLU
        return grad_h @ self.w1  # (B, D)


class LinearDecoder(DecoderBase):
    """A linear model ``vertices = template + (basis @ z + offset).reshape(V, 3)`` (a 3DMM).

    Args:
        template: (V, 3) model unit. basis: (3V, D), row ``3v + c``. faces: (F, 3) int.
        layout: latent layout (default one block ``("identity", D)``).
        offset: (3V,) displacement at ``z = 0``, row ``3v + c``, model unit (default zeros).
    """

    def __init__(
        self,
        template: np.ndarray,
        basis: np.ndarray,
        faces: np.ndarray,
        layout: LatentLayout | None = None,
        unit: str = "mm",
        landmark_sets: dict[str, LandmarkSet] | None = None,
        model_id: str = "",
        dtype: Any = np.float64,
        offset: np.ndarray | None = None,
    ):
        d = int(np.shape(basis)[1])
        layout = LatentLayout((("identity", d),)) if layout is None else layout
        super().__init__(template, faces, layout, unit, landmark_sets, model_id, dtype)
        check_shape("basis", basis, (3 * self.num_vertices, layout.dim))
        self.basis = np.ascontiguousarray(basis, dtype=self.dtype)
        off = np.zeros(3 * self.num_vertices) if offset is None else np.asarray(offset, dtype=np.float64)
        check_shape("offset", off, (3 * self.num_vertices,))
        self.offset = off  # (3V,) float64, model unit
        # full-mesh offset: template + offset, (3V,) in the computation dtype
        self._offset = (self.template.reshape(-1) + off).astype(self.dtype)

    def _effective_rows(self, corners, bary):
        d = self.latent_dim
        basis = self.basis.reshape(self.num_vertices, 3, d).astype(np.float64)
        matrix = np.einsum("lk,lkcd->lcd", bary, basis[corners])  # (L, 3, D)
        base = (self.template + self.offset.reshape(-1, 3))[corners]  # (L, 3 corners, 3)
        offset = np.einsum("lk,lkc->lc", bary, base)
        return matrix.reshape(-1, d), offset.reshape(-1)

    def linearize_points(self, z: np.ndarray, rows: LandmarkRows):
        """As :meth:`MLPDecoder.linearize_points`."""
        z = self._z(z)
        flat = z @ rows.matrix_t + rows.offset  # (B, 3L)
        nb = z.shape[0]

        def vjp(grad_points):
            return np.asarray(grad_points, dtype=self.dtype).reshape(nb, -1) @ rows.matrix

        return flat.reshape(nb, rows.num_points, 3), vjp

    def vertices(self, z, chunk: int = 256):
        """Full decode: ``(B, D) -> (B, V, 3)`` vertices, model unit (in chunks of ``chunk`` codes)."""
        z = self._z(z)
        out = np.empty((z.shape[0], 3 * self.num_vertices), dtype=self.dtype)
        for s in range(0, z.shape[0], chunk):
            np.matmul(z[s : s + chunk], self.basis.T, out=out[s : s + chunk])
            out[s : s + chunk] += self._offset
        return out.reshape(z.shape[0], self.num_vertices, 3)

    def vertices_vjp(self, z, grad_vertices):
        z = self._z(z)
        check_shape("grad_vertices", grad_vertices, (z.shape[0], self.num_vertices, 3))
        return np.asarray(grad_vertices, dtype=self.dtype).reshape(z.shape[0], -1) @ self.basis


class MultilinearDecoder(_HiddenLayerDecoder):
    """A multilinear (Tucker) model, the MAE baseline's decoder:
    ``vertices = template + (einsum('rij,i,j->r', core, w_id, w_exp) + offset).reshape(V, 3)``
    with ``w_id = id_mean + id_scale @ z_id`` and ``w_exp = exp_mean + exp_scale @ z_exp``
    (the numpy twin of :class:`fitface.models.multilinear.MultilinearGenerator`).

    Convention:
        The code is ``[z_id (d_id), z_exp (d_exp), noise]`` in layout order: the layout's
        blocks are ``(d_id, d_exp)`` or ``(d_id, d_exp, "noise")``; the noise block is unused
        (zero gradient). ``id_scale`` / ``exp_scale`` are lower-triangular (Cholesky factors of
        the training codes' covariances), so ``z ~ N(0, I)`` samples that Gaussian. The core's
        row ``3 v + c`` is coordinate ``c`` of vertex ``v``. Internally the core is the
        (3V, d_id * d_exp) matrix acting on the outer product ``kron(w_id, w_exp)``, so a
        decode is one matrix product.

    Args:
        template: (V, 3) model unit. core: (3V, d_id, d_exp), model unit per unit
            ``w_id * w_exp``. faces: (F, 3) int.
        layout: latent layout (default ``identity d_id, expression d_exp``).
        offset: (3V,) displacement added to every decode (model unit, default zeros).
        id_mean: (d_id,), default zeros. id_scale: (d_id, d_id) lower-triangular, default I.
        exp_mean: (d_exp,), default zeros. exp_scale: (d_exp, d_exp) lower-triangular, default I.
        unit, landmark_sets, model_id: metadata passed through.
        dtype: computation dtype (float32 default, float64 for tests).

    Raises:
        ValueError: wrong shapes, a layout that does not fit the core, a scale matrix with
            entries above the diagonal.
    """

    def __init__(
        self,
        template: np.ndarray,
        core: np.ndarray,
        faces: np.ndarray,
        layout: LatentLayout | None = None,
        offset: np.ndarray | None = None,
        id_mean: np.ndarray | None = None,
        id_scale: np.ndarray | None = None,
        exp_mean: np.ndarray | None = None,
        exp_scale: np.ndarray | None = None,
        unit: str = "mm",
        landmark_sets: dict[str, LandmarkSet] | None = None,
        model_id: str = "",
        dtype: Any = np.float32,
    ):
        sizes = check_shape("core", core, ("3V", "I", "J"))
        ni, nj = int(sizes["I"]), int(sizes["J"])
        if layout is None:
            layout = LatentLayout((("identity", ni), ("expression", nj)))
        blocks = [d for _, d in layout.blocks]
        if blocks[:2] != [ni, nj] or len(blocks) > 3 or (len(blocks) == 3 and layout.names[2] != "noise"):
            raise ValueError(f"layout {layout.describe()}: a multilinear core ({ni}, {nj}) needs blocks "
                             f"(identity {ni}, expression {nj}[, noise])")
        super().__init__(template, faces, layout, unit, landmark_sets, model_id, dtype)
        nv3 = 3 * self.num_vertices
        check_shape("core", core, (nv3, ni, nj))
        self.identity_dim, self.expression_dim = ni, nj
        dt = self.dtype

        def vec(name, x, n, default):
            x = default if x is None else np.asarray(x, dtype=np.float64)
            check_shape(name, x, (n,) if np.ndim(default) == 1 else (n, n))
            return x

        off = vec("offset", offset, nv3, np.zeros(nv3))
        self.offset = off  # (3V,) float64, model unit
        self.id_mean = vec("id_mean", id_mean, ni, np.zeros(ni)).astype(dt)
        self.exp_mean = vec("exp_mean", exp_mean, nj, np.zeros(nj)).astype(dt)
        self.id_scale = vec("id_scale", id_scale, ni, np.eye(ni)).astype(dt)
        self.exp_scale = vec("exp_scale", exp_scale, nj, np.eye(nj)).astype(dt)
        for name, m in (("id_scale", self.id_scale), ("exp_scale", self.exp_scale)):
            if np.any(np.triu(m, 1) != 0):
                raise ValueError(f"{name}: expected a lower-triangular (Cholesky) matrix")
        self.id_scale_t = np.ascontiguousarray(self.id_scale.T)
        self.exp_scale_t = np.ascontiguousarray(self.exp_scale.T)
        self.core = np.ascontiguousarray(core, dtype=dt)  # (3V, I, J)
        self._out_weight = self.core.reshape(nv3, ni * nj)  # (3V, I*J) view
        # full-mesh offset: template + offset, (3V,) in the computation dtype
        self._offset = (self.template.reshape(-1) + off).astype(dt)

    @property
    def hidden_size(self) -> int:
        """``d_id * d_exp``, the length of the outer product the core acts on."""
        return self.identity_dim * self.expression_dim

    def core_rows(self, rows: LandmarkRows) -> np.ndarray:
        """The landmark rows of the core as (3L, d_id, d_exp) (a view of ``rows.matrix``)."""
        return rows.matrix.reshape(-1, self.identity_dim, self.expression_dim)

    def _effective_rows(self, corners, bary):
        ni, nj = self.identity_dim, self.expression_dim
        core = self.core.reshape(self.num_vertices, 3, ni * nj)  # (V, 3, I*J) view
        matrix = np.einsum("lk,lkcq->lcq", bary, core[corners].astype(np.float64))  # (L, 3, I*J)
        base = (self.template + self.offset.reshape(-1, 3))[corners]  # (L, 3 corners, 3)
        offset = np.einsum("lk,lkc->lc", bary, base)
        return matrix.reshape(-1, ni * nj), offset.reshape(-1)

    def coefficients(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mode coefficients: (B, D) codes -> ``(w_id (B, d_id), w_exp (B, d_exp))``."""
        z = self._z(z)
        ni, nj = self.identity_dim, self.expression_dim
        return self.id_mean + z[:, :ni] @ self.id_scale_t, self.exp_mean + z[:, ni : ni + nj] @ self.exp_scale_t

    def hidden(self, z: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """The outer product the core acts on, and the mode coefficients.

        Args:
            z: (B, D).

        Returns:
            ``(h, (w_id, w_exp))``: (B, d_id * d_exp) with column ``i * d_exp + j`` =
            ``w_id[:, i] * w_exp[:, j]``, and (B, d_id), (B, d_exp) (:meth:`coefficients`).
        """
        w_id, w_exp = self.coefficients(z)
        return (w_id[:, :, None] * w_exp[:, None, :]).reshape(w_id.shape[0], -1), (w_id, w_exp)

    def _back(self, z: np.ndarray, state: tuple[np.ndarray, np.ndarray], grad_h: np.ndarray) -> np.ndarray:
        """(B, d_id * d_exp) gradient at the outer product -> (B, D) gradient at z (noise block 0)."""
        w_id, w_exp = state
        nb, ni, nj = w_id.shape[0], self.identity_dim, self.expression_dim
        g = grad_h.reshape(nb, ni, nj)
        gz = np.zeros((nb, self.latent_dim), dtype=self.dtype)
        gz[:, :ni] = np.einsum("bij,bj->bi", g, w_exp) @ self.id_scale
        gz[:, ni : ni + nj] = np.einsum("bij,bi->bj", g, w_id) @ self.exp_scale
        return gz

# ----------------------------------------------------------------------------- model files


def load_decoder(path: str | os.PathLike | None,
                 dtype: Any = np.float32) -> MLPDecoder | LinearDecoder | MultilinearDecoder:
    """Load a model file's generator as an :class:`MLPDecoder` (generator kind ``"mlp"``, the
    GAN), a :class:`LinearDecoder` (kind ``"linear"``, the 3DMM baseline), a
    :class:`MultilinearDecoder` (kind ``"multilinear"``, the MAE baseline) or a
    :class:`fitface.fitting.coma_decoder.ComaDecoder` (kind ``"coma"``, the CoMA baseline),
    without importing torch.

    The file is read, parsed and validated once, by
    :func:`fitface.io.model_file_format.read_numpy_model_file`: the checks ``load_model`` makes,
    but for the discriminator's tensors, which fitting does not use (they are not shape-checked).

    Args:
        path: the model file, a built-in model name, or ``None`` (the default built-in model).
        dtype: computation dtype (float16 files are upcast).

    Returns:
        The decoder; ``model_id`` is the file's id (the same as ``load_model(path).model_id``),
        ``model_name`` the built-in name (None for a user's file), ``model_path`` the file.

    Raises:
        InputError: with a one-line message naming the file, as ``load_model``.
    """
    resolved = resolve_model(path)
    mf = read_numpy_model_file(resolved.path)
    doc, t = mf.document, mf.tensors
    gen = doc["generator"]
    faces = t["faces"].astype(np.int64)  # in range: checked by read_numpy_model_file
    sets = {name: LandmarkSet(name, t[f"landmarks.{name}.face_index"].astype(np.int64),
                              t[f"landmarks.{name}.bary"].astype(np.float64)) for name in doc["landmark_sets"]}
    layout = LatentLayout.from_json(doc["latent_layout"])
    dec: MLPDecoder | LinearDecoder | MultilinearDecoder | Any
    if generator_kind(doc) == "coma":
        from .coma_decoder import coma_decoder_from_file

        dec = coma_decoder_from_file(mf, layout, faces, sets, dtype)
    elif generator_kind(doc) == "multilinear":
        dec = MultilinearDecoder(
            t["template"], t["generator.core"], faces, layout, offset=t["generator.offset"],
            id_mean=t["generator.id_mean"], id_scale=t["generator.id_scale"], exp_mean=t["generator.exp_mean"],
            exp_scale=t["generator.exp_scale"], unit=doc["unit"], landmark_sets=sets, model_id=mf.model_id,
            dtype=dtype,
        )
    elif generator_kind(doc) == "linear":
        dec = LinearDecoder(
            t["template"], t["generator.basis"], faces, layout, unit=doc["unit"], landmark_sets=sets,
            model_id=mf.model_id, dtype=dtype, offset=t["generator.offset"],
        )
    else:
        dec = MLPDecoder(
            t["generator.fc.weight"], t["generator.fc.bias"], t["generator.out.weight"], t["generator.out.bias"],
            t["template"], faces, layout, negative_slope=float(gen["negative_slope"]), unit=doc["unit"],
            landmark_sets=sets, model_id=mf.model_id, dtype=dtype,
        )
    dec.model_name = resolved.name  # built-in name or None
    dec.model_path = mf.path
    return dec


# ----------------------------------------------------------------------------- synthetic models


@dataclass
class GridFace:
    """A smooth synthetic 'face' surface for tests and benchmarks: a ``n x n`` height-field grid.

    Attributes:
        template: (n*n, 3) float64 mm, a dome of the given width (x right, y up, z to the viewer).
        faces: (2 (n-1)^2, 3) int64 triangles, counter-clockwise seen from +z.
        basis: (3V, nb) float64 smooth displacement fields (Gaussian bumps, mostly along z).
    """

    template: np.ndarray
    faces: np.ndarray
    basis: np.ndarray
    grid: int = 0
    extra: dict = field(default_factory=dict)


def grid_face(n: int = 20, width: float = 150.0, num_basis: int = 24, seed: int = 0) -> GridFace:
    """A smooth dome grid with ``num_basis`` smooth displacement fields (see :class:`GridFace`)."""
    rng = np.random.default_rng(seed)
    u = np.linspace(-0.5, 0.5, n)
    gx, gy = np.meshgrid(u, u, indexing="xy")  # (n, n)
    x, y = gx.ravel() * width, gy.ravel() * width * 1.2
    zz = 60.0 * np.exp(-(gx.ravel() ** 2 + gy.ravel() ** 2) / 0.18)
    template = np.stack([x, y, zz], axis=1)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)]).astype(np.int64)
    centres = rng.uniform(-0.5, 0.5, size=(num_basis, 2))
    widths = rng.uniform(0.15, 0.35, size=num_basis)
    dirs = rng.normal(size=(num_basis, 3)) * [0.3, 0.3, 1.0]
    bump = np.exp(-((gx.ravel()[:, None] - centres[:, 0]) ** 2 + (gy.ravel()[:, None] - centres[:, 1]) ** 2)
                  / widths**2)  # (V, nb)
    basis = (bump[:, None, :] * dirs.T[None]).reshape(3 * n * n, num_basis) * 8.0  # mm per unit
    return GridFace(template, faces, basis, grid=n)


def synthetic_mlp_decoder(
    grid: int = 20,
    latent: tuple[int, ...] = (8, 4),
    hidden: int = 64,
    num_basis: int = 24,
    seed: int = 0,
    dtype: Any = np.float64,
    landmarks: int = 30,
) -> MLPDecoder:
    """A random but face-sized, smooth :class:`MLPDecoder` on a :func:`grid_face` template (tests,
    benchmarks): ``W2 = basis @ C`` so every output is a smooth surface displacement of a few mm
    per unit code. ``grid=97, latent=(65, 15, 5), hidden=512`` gives the ICT size (V = 9,409).
    It has one landmark set ``"lm"`` of ``landmarks`` surface points spread over the grid."""
    rng = np.random.default_rng(seed)
    gf = grid_face(grid, num_basis=num_basis, seed=seed)
    d = int(sum(latent))
    w1 = rng.normal(size=(hidden, d)) / np.sqrt(d)
    b1 = rng.normal(size=hidden) * 0.1
    c = rng.normal(size=(num_basis, hidden)) / np.sqrt(hidden) * 1.5
    w2 = gf.basis @ c  # (3V, H)
    b2 = gf.basis @ rng.normal(size=num_basis) * 0.2
    nf = len(gf.faces)
    face_index = rng.choice(nf, size=landmarks, replace=False)
    bary = rng.dirichlet(np.ones(3), size=landmarks)
    lset = LandmarkSet("lm", face_index.astype(np.int64), bary)
    return MLPDecoder.from_arrays(w1, b1, w2, b2, gf.template, gf.faces, layout=tuple(latent),
                                  landmark_sets={"lm": lset}, model_id="synthetic", dtype=dtype)
