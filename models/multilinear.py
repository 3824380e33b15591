"""A multilinear generator: latent code -> displacements ``core x2 w_id x3 w_exp + offset`` (MAE).

The paper's "MAE [14]" baseline (Fernandez Abrevaya et al., WACV 2018) decodes with a Tucker
(multilinear) layer: ``mesh = mean + C x2 w_id x3 w_exp`` with a core ``C`` of shape
(3V, d_id, d_exp) (65 x 20 here). :class:`MultilinearGenerator` puts that decoder behind the GAN
generator's interface (:class:`fitface.models.generator.Generator`), so :class:`FaceModel`,
model files (generator kind ``"multilinear"``), sampling, metrics, fitting and retargeting
treat it like the GAN and the linear 3DMM. Building one from data (HOSVD / PCA initialisation,
an encoder, training) is not this module's job: a builder computes the core and the training
codes' coefficients and calls :meth:`MultilinearGenerator.from_codes` (or the constructor with
the Gaussians' means and factors, :func:`gaussian_factor`).

Convention:
    * The code is ``z = [z_id (d_id), z_exp (d_exp), z_noise (d_noise)]`` in the latent layout's
      order: the layout's first block is the core's mode 2 (identity), its second block mode 3
      (expression), and an optional third block (``"noise"``, MAE has none) is unused: it
      changes nothing and gets a zero gradient.
    * The mode coefficients are an affine map of the code, ``w_id = id_mean + id_scale @ z_id``
      and ``w_exp = exp_mean + exp_scale @ z_exp``, with ``id_scale`` (d_id, d_id) and
      ``exp_scale`` (d_exp, d_exp) lower-triangular (a Cholesky factor ``L`` of the training
      codes' covariance, ``cov = L L^T``). So ``z ~ N(0, I)``, the prior every model samples
      from (:meth:`FaceModel.sample_latent`), samples ``w ~ N(mean, cov)``, the Gaussian of the
      training codes that the public MAE code samples from; ``z = 0`` decodes the mean codes.
    * Displacement of row ``r = 3 v + c`` (coordinate ``c``, 0 = x, 1 = y, 2 = z, of vertex
      ``v``; vertex-major, xyz interleaved, as the GAN's last layer):
      ``d[b, r] = sum_ij core[r, i, j] w_id[b, i] w_exp[b, j] + offset[r]``, i.e.
      ``einsum('vij,bi,bj->bv', core, w_id, w_exp) + offset``, in the template's unit
      (mm by default). ``offset`` is the MAE's mean shape minus the template (often zero).
    * Duck-typing the MLP generator: :meth:`hidden` is the outer product
      ``h[b, i * d_exp + j] = w_id[b, i] w_exp[b, j]`` (``hidden_size = d_id * d_exp``) and
      :attr:`out` exposes ``weight = core.reshape(3V, d_id * d_exp)`` (a view) and
      ``bias = offset``, so code that folds the GAN's last layer
      (``G.out.weight[rows] @ G.hidden(z)``, :meth:`decode_vertices`) works unchanged.
    * ``core`` and ``offset`` are parameters; the Gaussians (``id_mean``, ``id_scale``,
      ``exp_mean``, ``exp_scale``) are buffers (statistics of the training codes, not trained
      by gradient); all are in the generator's ``state_dict`` and in model files.
"""

from __future__ import annotations

import torch
from torch import nn

from fitface.checks import check_shape
from fitface.latent import check_two_factor_layout

from .generator import vertex_rows
from .linear import LinearLayer

#: Value of ``config()["kind"]`` (and of the model file's ``generator.kind``).
KIND = "multilinear"


def check_lower_triangular(name: str, m: torch.Tensor) -> None:
    """ValueError unless ``m`` (a square matrix) is lower-triangular (skipped on the meta device)."""
    if m.is_meta:
        return
    upper = torch.triu(m, diagonal=1)
    if bool((upper != 0).any()):
        raise ValueError(f"{name}: expected a lower-triangular (Cholesky) matrix; it has "
                         f"{int((upper != 0).sum())} non-zero entries above the diagonal")


def gaussian_factor(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Gaussian of a set of codes as ``(mean, L)`` with ``L`` lower-triangular, ``L L^T = cov``.

    ``cov`` is the unbiased sample covariance (divisor ``N - 1``). ``L`` is exact also when
    ``cov`` is singular (fewer codes than dimensions, or codes in a subspace, where a Cholesky
    factorisation fails): with ``A`` any square root (``A A^T = cov``, from the eigen-decomposition)
    and ``A^T = Q R`` its QR factorisation, ``L = R^T`` (diagonal made non-negative). Computed in
    float64, returned in the codes' dtype.

    Args:
        codes: (N, d) float, N >= 2 codes (e.g. the identity coefficients of the training set).

    Returns:
        ``(mean (d,), L (d, d))``.

    Raises:
        ValueError: fewer than 2 codes, non-finite values.
    """
    c = torch.as_tensor(codes)
    check_shape("codes", c, ("N", "d"))
    if c.shape[0] < 2 or not bool(torch.isfinite(c).all()):
        raise ValueError(f"codes: need at least 2 finite codes, got {c.shape[0]} (finite: {bool(torch.isfinite(c).all())})")
    x = c.detach().double()
    mean = x.mean(0)
    cov = torch.cov(x.T, correction=1).reshape(x.shape[1], x.shape[1])
    evals, evecs = torch.linalg.eigh(cov)
    root = evecs * evals.clamp_min(0).sqrt()  # (d, d), root @ root.T = cov
    _, r = torch.linalg.qr(root.T)  # root.T = Q R  ->  cov = R^T R
    sign = torch.where(torch.diagonal(r) < 0, -1.0, 1.0).to(r.dtype)  # (d,)
    lower = r.T * sign  # R^T S (S R) = R^T R with S = diag(sign), S^2 = I
    dtype = c.dtype if c.is_floating_point() else torch.float32
    return mean.to(dtype), torch.tril(lower).to(dtype)


class MultilinearGenerator(nn.Module):
    """Latent code -> per-vertex displacements, multilinearly (see the module Convention).

    Args:
        core: (3V, d_id, d_exp) float, row ``3v + c``; model unit per unit of ``w_id * w_exp``.
        offset: (3V,) float, the displacement when ``w_id`` or ``w_exp`` is zero (model unit);
            default zeros.
        id_mean: (d_id,) float mean identity coefficients; default zeros.
        id_scale: (d_id, d_id) float lower-triangular ``L_id`` (``w_id = id_mean + L_id z_id``);
            default the identity matrix.
        exp_mean: (d_exp,) float; exp_scale: (d_exp, d_exp) float lower-triangular; likewise.
        noise_dim: size of the unused trailing block of the code (0 for the MAE).

    Attributes:
        core: ``nn.Parameter`` (3V, d_id, d_exp). offset: ``nn.Parameter`` (3V,).
        id_mean, id_scale, exp_mean, exp_scale: buffers as above.
        identity_dim: ``d_id``. expression_dim: ``d_exp``. noise_dim.
        latent_dim: ``d_id + d_exp + noise_dim``. num_vertices: ``V``.

    Raises:
        ValueError: wrong shapes, a scale matrix with entries above the diagonal, a negative
            ``noise_dim``.
    """

    def __init__(
        self,
        core: torch.Tensor,
        offset: torch.Tensor | None = None,
        id_mean: torch.Tensor | None = None,
        id_scale: torch.Tensor | None = None,
        exp_mean: torch.Tensor | None = None,
        exp_scale: torch.Tensor | None = None,
        noise_dim: int = 0,
    ):
        super().__init__()
        core = torch.as_tensor(core)
        if not core.is_floating_point():
            core = core.float()
        sizes = check_shape("core", core, ("3V", "I", "J"))
        if sizes["3V"] % 3 or 0 in core.shape:
            raise ValueError(f"core: expected (3V, d_id, d_exp) with 3V a positive multiple of 3 and "
                             f"positive d_id, d_exp, got {tuple(core.shape)}")
        if int(noise_dim) < 0:
            raise ValueError(f"noise_dim: must be >= 0, got {noise_dim}")
        n3v, ni, nj = (int(sizes[k]) for k in ("3V", "I", "J"))

        def arg(name: str, t, shape: tuple, default) -> torch.Tensor:
            t = default() if t is None else torch.as_tensor(t)
            t = t.to(device=core.device, dtype=core.dtype)
            check_shape(name, t, shape)
            return t.detach().clone().contiguous()

        def eye(n: int):
            return lambda: torch.eye(n, dtype=core.dtype, device=core.device)

        def zeros(n: int):
            return lambda: core.new_zeros(n)

        offset = arg("offset", offset, (n3v,), zeros(n3v))
        id_mean, exp_mean = arg("id_mean", id_mean, (ni,), zeros(ni)), arg("exp_mean", exp_mean, (nj,), zeros(nj))
        id_scale = arg("id_scale", id_scale, (ni, ni), eye(ni))
        exp_scale = arg("exp_scale", exp_scale, (nj, nj), eye(nj))
        check_lower_triangular("id_scale", id_scale)
        check_lower_triangular("exp_scale", exp_scale)
        self.identity_dim, self.expression_dim, self.noise_dim = ni, nj, int(noise_dim)
        self.latent_dim = ni + nj + self.noise_dim
        self.num_vertices = n3v // 3
        self.core = nn.Parameter(core.detach().clone().contiguous())
        self.offset = nn.Parameter(offset)
        self.register_buffer("id_mean", id_mean)
        self.register_buffer("id_scale", id_scale)
        self.register_buffer("exp_mean", exp_mean)
        self.register_buffer("exp_scale", exp_scale)

    @classmethod
    def from_codes(cls, core: torch.Tensor, id_codes: torch.Tensor, exp_codes: torch.Tensor,
                   offset: torch.Tensor | None = None, noise_dim: int = 0) -> MultilinearGenerator:
        """A generator whose prior is the training codes' Gaussian (what a builder calls).

        Args:
            core: (3V, d_id, d_exp) float, as in the constructor. offset: (3V,) or None.
            id_codes: (N, d_id) identity coefficients ``w_id`` of the training samples (or of
                the training identities). exp_codes: (M, d_exp) expression coefficients.
            noise_dim: size of the unused trailing block.

        Returns:
            The generator with ``(id_mean, id_scale) = gaussian_factor(id_codes)`` and likewise
            for the expression, so ``z ~ N(0, I)`` samples ``w ~ N(mean, cov)`` of those codes.
        """
        id_mean, id_scale = gaussian_factor(id_codes)
        exp_mean, exp_scale = gaussian_factor(exp_codes)
        core = torch.as_tensor(core)
        return cls(core, offset, id_mean, id_scale, exp_mean, exp_scale, noise_dim)

    @classmethod
    def empty(cls, identity_dim: int, expression_dim: int, num_vertices: int,
              noise_dim: int = 0) -> MultilinearGenerator:
        """A zero-core generator of the given size (e.g. a shell on the meta device to load into)."""
        if identity_dim <= 0 or expression_dim <= 0 or num_vertices <= 0:
            raise ValueError(f"MultilinearGenerator: identity_dim, expression_dim and num_vertices must be "
                             f"positive, got {identity_dim}, {expression_dim}, {num_vertices}")
        return cls(torch.zeros(3 * int(num_vertices), int(identity_dim), int(expression_dim)), noise_dim=noise_dim)

    def config(self) -> dict:
        """Constructor description (JSON-serialisable), as stored in model files."""
        return {"kind": KIND, "latent_dim": self.latent_dim, "num_vertices": self.num_vertices,
                "identity_dim": self.identity_dim, "expression_dim": self.expression_dim}

    def check_layout(self, layout) -> None:
        """ValueError unless ``layout`` (a :class:`~fitface.latent.LatentLayout`) is
        ``(first factor: d_id, second factor: d_exp[, "noise": noise_dim])`` (module Convention);
        :class:`FaceModel` calls it."""
        check_two_factor_layout(layout, "a multilinear generator", self.identity_dim, self.expression_dim, self.noise_dim)

    # -- the code -> mode coefficients --------------------------------------------------
    def coefficients(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mode coefficients of codes: (B, D) -> ``(w_id (B, d_id), w_exp (B, d_exp))``."""
        check_shape("z", z, (None, self.latent_dim))
        ni, nj = self.identity_dim, self.expression_dim
        w_id = self.id_mean + z[:, :ni] @ self.id_scale.T
        w_exp = self.exp_mean + z[:, ni : ni + nj] @ self.exp_scale.T
        return w_id, w_exp

    def codes_of(self, w_id: torch.Tensor, w_exp: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`coefficients`: ``(B, d_id), (B, d_exp)`` -> (B, D) codes (noise 0)."""
        check_shape("w_id", w_id, (None, self.identity_dim))
        check_shape("w_exp", w_exp, (w_id.shape[0], self.expression_dim))
        solve = torch.linalg.solve_triangular
        z_id = solve(self.id_scale, (w_id - self.id_mean).T, upper=False).T
        z_exp = solve(self.exp_scale, (w_exp - self.exp_mean).T, upper=False).T
        return torch.cat([z_id, z_exp, w_id.new_zeros(w_id.shape[0], self.noise_dim)], dim=1)

    # -- the MLP generator's interface ----------------------------------------------------
    @property
    def hidden_size(self) -> int:
        """Width of the (bilinear) hidden layer: ``d_id * d_exp``."""
        return self.identity_dim * self.expression_dim

    @property
    def out(self) -> LinearLayer:
        """``LinearLayer(weight=core.reshape(3V, d_id * d_exp), bias=offset (3V,))``, like ``Generator.out``."""
        return LinearLayer(self.core.reshape(self.core.shape[0], -1), self.offset)

    def hidden(self, z: torch.Tensor) -> torch.Tensor:
        """The outer product of the mode coefficients: (B, D) -> (B, d_id * d_exp),
        column ``i * d_exp + j`` = ``w_id[:, i] * w_exp[:, j]``."""
        w_id, w_exp = self.coefficients(z)
        return (w_id[:, :, None] * w_exp[:, None, :]).reshape(z.shape[0], -1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Displacements from the template.

        Args:
            z: (B, D) float latent codes.

        Returns:
            (B, V, 3) float displacements, in the template's unit.
        """
        out = self.out
        flat = nn.functional.linear(self.hidden(z), out.weight, out.bias)  # (B, 3V), row 3v + c
        return flat.view(flat.shape[0], self.num_vertices, 3)

    def rows(self, vertex_ids: torch.Tensor) -> torch.Tensor:
        """Rows of :attr:`core` that produce the given vertices: (L,) -> (3L,) int64."""
        return vertex_rows(vertex_ids, self.num_vertices, self.core.device)

    def decode_vertices(self, h: torch.Tensor, vertex_ids: torch.Tensor) -> torch.Tensor:
        """Displacements of selected vertices only: ``h`` (B, d_id * d_exp) (= :meth:`hidden`)
        and (L,) vertex ids -> (B, L, 3), template unit (equals ``forward(z)[:, vertex_ids]``)."""
        check_shape("h", h, (None, self.hidden_size))
        rows = self.rows(vertex_ids)  # (3L,)
        out = self.out
        flat = nn.functional.linear(h, out.weight[rows], out.bias[rows])  # (B, 3L)
        return flat.view(h.shape[0], -1, 3)

    def extra_repr(self) -> str:
        return (f"identity_dim={self.identity_dim}, expression_dim={self.expression_dim}, "
                f"noise_dim={self.noise_dim}, num_vertices={self.num_vertices}")
