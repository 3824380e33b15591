"""Batched similarity transforms and the closed-form Umeyama solver (numpy only).

Convention:
    * A :class:`Similarity` maps model space to capture space:
      ``x_capture = scale * rotation @ x_model + translation`` (x a column 3-vector), the same
      convention as ``transform`` in ``codes.json`` (:mod:`fitface.io.codes`). With row-vector
      point arrays this is ``points @ rotation.T * scale + translation``.
    * ``rotation`` is always a proper rotation (orthonormal, det +1): the solver never
      returns a reflection. ``scale`` > 0. ``translation`` is in the destination's unit.
    * Transforms are batched: ``scale (B,)``, ``rotation (B, 3, 3)``, ``translation (B, 3)``,
      all float64. A single transform is a batch of one.
    * :func:`umeyama` minimises ``sum_i w_i |s R src_i + t - dst_i|^2`` (Umeyama 1991),
      i.e. it returns the transform that maps ``src`` onto ``dst``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fitface.checks import check_shape

#: A point set whose second singular value of the centred (weighted) scatter is below this
#: fraction of the first is treated as collinear (the rotation about the line is undetermined).
DEGENERATE_REL = 1e-9
#: Fewest valid points the solver accepts (three non-collinear points fix a similarity).
MIN_POINTS = 3


@dataclass(frozen=True)
class Similarity:
    """A batch of similarity transforms ``x -> scale * rotation @ x + translation``.

    Attributes:
        scale: (B,) float64, > 0 (1 for rigid transforms).
        rotation: (B, 3, 3) float64, proper rotations.
        translation: (B, 3) float64, in the destination unit.
    """

    scale: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray

    def __post_init__(self):
        s = np.atleast_1d(np.asarray(self.scale, dtype=np.float64))
        r = np.asarray(self.rotation, dtype=np.float64)
        t = np.asarray(self.translation, dtype=np.float64)
        if r.ndim == 2:
            r = r[None]
        if t.ndim == 1:
            t = t[None]
        sizes = check_shape("scale", s, ("B",))
        check_shape("rotation", r, ("B", 3, 3), sizes)
        check_shape("translation", t, ("B", 3), sizes)
        object.__setattr__(self, "scale", s)
        object.__setattr__(self, "rotation", r)
        object.__setattr__(self, "translation", t)

    # -- construction --------------------------------------------------------------------
    @classmethod
    def identity(cls, batch: int = 1) -> "Similarity":
        """``batch`` identity transforms."""
        return cls(np.ones(batch), np.broadcast_to(np.eye(3), (batch, 3, 3)).copy(), np.zeros((batch, 3)))

    @classmethod
    def from_scale(cls, scale: float | np.ndarray, batch: int = 1) -> "Similarity":
        """Pure uniform scalings (e.g. a unit change: mm -> m is ``scale=0.001``)."""
        s = np.broadcast_to(np.asarray(scale, dtype=np.float64), (batch,)).copy()
        return cls(s, np.broadcast_to(np.eye(3), (batch, 3, 3)).copy(), np.zeros((batch, 3)))

    @classmethod
    def stack(cls, items: "list[Similarity]") -> "Similarity":
        """Concatenate batches."""
        return cls(
            np.concatenate([x.scale for x in items]),
            np.concatenate([x.rotation for x in items]),
            np.concatenate([x.translation for x in items]),
        )

    def __len__(self) -> int:
        return int(self.scale.shape[0])

    def __getitem__(self, index: Any) -> "Similarity":
        """A sub-batch (an int index keeps a batch of one)."""
        if isinstance(index, (int, np.integer)):
            index = slice(int(index), int(index) + 1) if index != -1 else slice(-1, None)
        return Similarity(self.scale[index], self.rotation[index], self.translation[index])

    def repeat(self, k: int) -> "Similarity":
        """Each transform repeated ``k`` times in a row (batch B -> B*k, row ``b*k + j``)."""
        return Similarity(
            np.repeat(self.scale, k, axis=0), np.repeat(self.rotation, k, axis=0), np.repeat(self.translation, k, axis=0)
        )

    # -- algebra -------------------------------------------------------------------------
    def matrix(self) -> np.ndarray:
        """(B, 4, 4) float64 homogeneous matrices."""
        m = np.zeros((len(self), 4, 4))
        m[:, :3, :3] = self.scale[:, None, None] * self.rotation
        m[:, :3, 3] = self.translation
        m[:, 3, 3] = 1.0
        return m

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Transform points.

        Args:
            points: (B, L, 3) float (or (L, 3), broadcast over the batch).

        Returns:
            (B, L, 3) float64 ``scale * R @ p + t`` (NaN rows stay NaN).
        """
        p = np.asarray(points, dtype=np.float64)
        if p.ndim == 2:
            p = np.broadcast_to(p, (len(self),) + p.shape)
        check_shape("points", p, (len(self), None, 3))
        out = p @ (self.rotation * self.scale[:, None, None]).transpose(0, 2, 1)  # (B, L, 3)
        out += self.translation[:, None, :]
        return out

    def inverse(self) -> "Similarity":
        """The inverse batch: ``x = R^T (y - t) / s``."""
        rt = np.transpose(self.rotation, (0, 2, 1))
        inv_s = 1.0 / self.scale
        t = -np.einsum("bij,bj->bi", rt, self.translation) * inv_s[:, None]
        return Similarity(inv_s, rt, t)

    def compose(self, other: "Similarity") -> "Similarity":
        """``self ∘ other``: the transform applying ``other`` first, then ``self`` (batches of
        equal length, or length 1 broadcast)."""
        s = self.scale * other.scale
        r = np.matmul(self.rotation, other.rotation)
        t = self.scale[:, None] * np.einsum("bij,bj->bi", self.rotation, other.translation) + self.translation
        n = max(len(self), len(other))
        return Similarity(np.broadcast_to(s, (n,)).copy(), np.broadcast_to(r, (n, 3, 3)).copy(),
                          np.broadcast_to(t, (n, 3)).copy())

    # -- JSON ----------------------------------------------------------------------------
    def to_json(self, index: int = 0) -> dict[str, Any]:
        """``{"scale": float, "rotation": 3x3 nested list, "translation": [3]}`` of one transform
        (the ``transform`` object of ``codes.json``)."""
        return {
            "scale": float(self.scale[index]),
            "rotation": self.rotation[index].tolist(),
            "translation": self.translation[index].tolist(),
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "Similarity":
        """Inverse of :meth:`to_json` (a batch of one); ``ValueError`` on a malformed object."""
        try:
            s = float(obj["scale"])
            r = np.asarray(obj["rotation"], dtype=np.float64).reshape(3, 3)
            t = np.asarray(obj["translation"], dtype=np.float64).reshape(3)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed transform {obj!r:.80}: {exc}") from None
        if not s > 0 or not np.isfinite([s, *r.ravel(), *t]).all():
            raise ValueError(f"malformed transform: scale must be > 0 and all values finite, got scale {s}")
        return cls(np.array([s]), r[None], t[None])


def umeyama(
    src: np.ndarray,
    dst: np.ndarray,
    scale: bool = True,
    weights: np.ndarray | None = None,
    check: bool = True,
) -> Similarity:
    """Closed-form least-squares similarity (or rigid) transform mapping ``src`` onto ``dst``.

    Minimises ``sum_i w_i |s R src_i + t - dst_i|^2`` over proper rotations R (det +1),
    translations t and (if ``scale``) s > 0, per batch item. Points with zero weight (or a
    False mask entry) are ignored and may hold NaN.

    Args:
        src: (B, L, 3) or (L, 3) float, any unit.
        dst: same shape, any unit (the result's translation and scale carry dst's unit).
        scale: fit a uniform scale; False gives a rigid transform (scale 1).
        weights: None, or (B, L) / (L,) non-negative float or bool (a validity mask).
        check: validate (finite weighted points, >= 3 of them, no degenerate configuration).
            ``False`` skips the checks for speed inside optimisation loops whose input was
            checked once; a degenerate item then gives an arbitrary rotation, not an error.

    Returns:
        :class:`Similarity` of batch B (1 for 2-D input).

    Raises:
        ValueError: mismatched shapes, negative/non-finite weights, NaN in a weighted point,
            or a degenerate item: fewer than 3 weighted points, or points (src or dst)
            that are all equal or collinear, so the rotation is not determined. The message
            names the batch item.
    """
    a = np.asarray(src, dtype=np.float64)
    b = np.asarray(dst, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if b.ndim == 2:
        b = b[None]
    sizes = check_shape("src", a, ("B", "L", 3))
    check_shape("dst", b, ("B", "L", 3), sizes)
    nb, nl = a.shape[:2]
    if weights is None:
        w = np.ones((nb, nl))
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim == 1:
            w = np.broadcast_to(w, (nb, nl))
        check_shape("weights", w, (nb, nl))
        if check and (not np.isfinite(w).all() or (w < 0).any()):
            raise ValueError("weights: must be finite and non-negative")
    used = w > 0  # (B, L)
    if not used.all():
        a = np.where(used[..., None], a, 0.0)
        b = np.where(used[..., None], b, 0.0)
    if check:
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise ValueError("src, dst: NaN or inf in a point with non-zero weight")
        count = used.sum(axis=1)  # (B,)
        if (count < MIN_POINTS).any():
            i = int(np.flatnonzero(count < MIN_POINTS)[0])
            raise ValueError(
                f"umeyama: item {i} has {int(count[i])} weighted points; "
                f"need at least {MIN_POINTS} non-collinear points"
            )
    wn = w / w.sum(axis=1, keepdims=True)  # (B, L), sums to 1
    mu_a = (wn[:, None, :] @ a)[:, 0]  # (B, 3)
    mu_b = (wn[:, None, :] @ b)[:, 0]
    ac = a - mu_a[:, None]  # (B, L, 3) centred (zero-weight rows do not matter)
    bc = b - mu_b[:, None]
    wac = ac * wn[..., None]  # (B, L, 3) weighted
    cov_a = np.swapaxes(wac, 1, 2) @ ac  # (B, 3, 3) scatter of src
    sigma = np.swapaxes(bc, 1, 2) @ wac  # (B, 3, 3) cross-covariance dst x src
    if check:
        cov_b = np.swapaxes(bc * wn[..., None], 1, 2) @ bc
        for name, cov in (("src", cov_a), ("dst", cov_b)):
            ev = np.linalg.eigvalsh(cov)  # ascending (B, 3)
            # collinear: second-largest variance ~0 relative to the largest (or everything ~0)
            bad = (ev[:, 1] <= DEGENERATE_REL * ev[:, 2]) | (ev[:, 2] <= np.finfo(np.float64).tiny)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                kind = "all equal" if ev[i, 2] <= np.finfo(np.float64).tiny else "collinear"
                raise ValueError(
                    f"umeyama: item {i}: the {name} points are {kind}, so the rotation is not determined "
                    f"(need at least {MIN_POINTS} non-collinear points)"
                )
    u, sv, vt = np.linalg.svd(sigma)  # sigma = U diag(sv) V^T
    d = np.sign(np.linalg.det(u) * np.linalg.det(vt))  # -1: the best orthogonal map is a reflection
    d[d == 0] = 1.0
    u[:, :, 2] *= d[:, None]  # U diag(1, 1, d)
    rot = u @ vt  # (B, 3, 3), det +1
    if scale:
        var_a = np.trace(cov_a, axis1=1, axis2=2)  # (B,) total variance of src
        s = (sv[:, 0] + sv[:, 1] + d * sv[:, 2]) / var_a
    else:
        s = np.ones(nb)
    t = mu_b - s[:, None] * (rot @ mu_a[..., None])[..., 0]
    return Similarity(s, rot, t)
