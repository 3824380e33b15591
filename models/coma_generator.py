"""The CoMA ("DeepFLAME") baseline as a generator: PCA identity + CoMA expression decoder.

The paper's "CoMA [32]" row (§5.5, the DeepFLAME variant): a linear identity model (PCA of each
identity's neutral face, 65 modes) plus a CoMA mesh autoencoder (latent 20,
:class:`fitface.models.coma.ComaAutoencoder`) trained on each face's displacement from its own
identity's neutral. :class:`ComaGenerator` puts it behind the GAN generator's interface, so
:class:`FaceModel`, model files (generator kind ``"coma"``), sampling, metrics, fitting
(:class:`fitface.fitting.coma_decoder.ComaDecoder`, its numpy twin) and retargeting treat it like
the other models. Building it from data is :func:`fitface.models.builders.coma.build_coma`'s job.

Convention:
    * The code is ``z = [z_id (I), z_exp (J)(, z_noise)]`` in layout order (blocks
      ``(identity I, expression J[, "noise"])``; the baseline has no noise block, and a noise
      block changes nothing and gets a zero gradient).
    * Displacement from the template, (B, V, 3) in the template's unit:
      ``identity_basis @ z_id + offset`` (rows ``3v + c``, reshaped to (V, 3)) ``+``
      ``autoencoder.decode_displacements(w)`` with ``w = exp_mean + exp_scale @ z_exp``.
      ``identity_basis`` columns are the identity PCA's modes scaled by their standard
      deviations and ``(exp_mean, exp_scale)`` (``exp_scale`` lower-triangular, ``L L^T = cov``)
      is the Gaussian of the training faces' CoMA codes
      (:func:`fitface.models.multilinear.gaussian_factor`), so ``z ~ N(0, I)`` samples the
      model; ``z = 0`` decodes the mean neutral plus the decoder's output at the mean code.
    * State: ``identity_basis``, ``offset`` are parameters and ``exp_mean``, ``exp_scale``
      buffers; the whole autoencoder (``coma.*``: encoder and decoder weights, ``mean``/``std``
      normalisation) is a submodule, so all are in ``state_dict()`` and stored as network
      weights (float16 in a half file). The encoder is not needed to generate; it is kept
      (about 25 k parameters) so a model file can encode displacements
      (:meth:`ComaGenerator.encode_displacements`) and training could resume.
    * The mesh hierarchy (sampling matrices, adjacency, coarse meshes) is not in the state
      dict: :meth:`ComaGenerator.exact_tensors` gives its arrays
      (``MeshHierarchy.to_arrays``, float64 / int64), which model files store as they are, and
      :meth:`ComaGenerator.empty` rebuilds the operators from them, with no decimation.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fitface.checks import check_shape
from fitface.latent import check_two_factor_layout

from .chebyshev import ORDER
from .coma import DECODER_FILTERS, ENCODER_FILTERS, ComaAutoencoder
from .mesh_sampling import MeshHierarchy
from .multilinear import check_lower_triangular

#: Value of ``config()["kind"]`` (and of the model file's ``generator.kind``).
KIND = "coma"
#: Name prefix of the hierarchy's arrays among the generator's tensors (``hierarchy.down.0.indices``, ...).
HIERARCHY_PREFIX = "hierarchy."


class ComaGenerator(nn.Module):
    """Latent code -> displacements of the CoMA baseline (module Convention).

    Args:
        autoencoder: the trained :class:`ComaAutoencoder` (its latent size is J); kept as
            the submodule ``coma``.
        identity_basis: (3V, I) float, model unit per unit code.
        offset: (3V,) float, default zeros (model unit).
        exp_mean: (J,) float, default zeros. exp_scale: (J, J) lower-triangular, default I.
        noise_dim: size of an unused trailing block (0 for the baseline).

    Attributes:
        coma: the autoencoder. identity_basis, offset: parameters. exp_mean, exp_scale: buffers.
        identity_dim (I), expression_dim (J), noise_dim, latent_dim, num_vertices.

    Raises:
        ValueError: wrong shapes, an ``exp_scale`` with entries above the diagonal.
    """

    def __init__(self, autoencoder: ComaAutoencoder, identity_basis: torch.Tensor,
                 offset: torch.Tensor | None = None, exp_mean: torch.Tensor | None = None,
                 exp_scale: torch.Tensor | None = None, noise_dim: int = 0):
        super().__init__()
        ref = autoencoder.mean
        basis = torch.as_tensor(identity_basis).to(device=ref.device, dtype=ref.dtype)
        nv = autoencoder.sizes[0]
        sizes = check_shape("identity_basis", basis, (3 * nv, "I"))
        ni, nj = int(sizes["I"]), autoencoder.latent_size
        if ni < 1 or int(noise_dim) < 0:
            raise ValueError(f"identity_basis: expected at least one column and noise_dim >= 0, got {ni}, {noise_dim}")

        def arg(name, t, shape, default):
            t = default if t is None else torch.as_tensor(t).to(device=ref.device, dtype=ref.dtype)
            check_shape(name, t, shape)
            return t.detach().clone().contiguous()

        offset = arg("offset", offset, (3 * nv,), ref.new_zeros(3 * nv))
        exp_mean = arg("exp_mean", exp_mean, (nj,), ref.new_zeros(nj))
        exp_scale = arg("exp_scale", exp_scale, (nj, nj), torch.eye(nj, dtype=ref.dtype, device=ref.device))
        check_lower_triangular("exp_scale", exp_scale)
        self.identity_dim, self.expression_dim, self.noise_dim = ni, nj, int(noise_dim)
        self.latent_dim = ni + nj + self.noise_dim
        self.num_vertices = nv
        self.coma = autoencoder
        self.identity_basis = nn.Parameter(basis.detach().clone().contiguous())
        self.offset = nn.Parameter(offset)
        self.register_buffer("exp_mean", exp_mean)
        self.register_buffer("exp_scale", exp_scale)

    @classmethod
    def empty(cls, config: dict, hierarchy_arrays: dict, dtype: torch.dtype | None = None) -> ComaGenerator:
        """A zero-weight generator of a model file's config, its operators rebuilt from the stored
        hierarchy arrays (``hierarchy.*`` names of :meth:`exact_tensors`, prefix stripped or not),
        on the CPU, ready for ``load_state_dict``. No decimation runs.

        Raises:
            ValueError: arrays missing or not matching the config.
        """
        arrays = {k[len(HIERARCHY_PREFIX):] if k.startswith(HIERARCHY_PREFIX) else k: v
                  for k, v in hierarchy_arrays.items()}
        hierarchy = MeshHierarchy.from_arrays(arrays)
        if list(hierarchy.sizes) != list(config["sizes"]):
            raise ValueError(f"hierarchy sizes {hierarchy.sizes} differ from the config's {config['sizes']}")
        ae = ComaAutoencoder(hierarchy, latent_size=config["expression_dim"],
                             encoder_filters=config["encoder_filters"], decoder_filters=config["decoder_filters"],
                             order=config["order"], seed=0, dtype=dtype or torch.float32)
        ni, nj = config["identity_dim"], config["expression_dim"]
        basis = torch.zeros(3 * config["num_vertices"], ni, dtype=ae.mean.dtype)
        return cls(ae, basis, noise_dim=config["latent_dim"] - ni - nj)

    def config(self) -> dict:
        """Constructor description (JSON-serialisable), as stored in model files."""
        ae = self.coma
        return {"kind": KIND, "latent_dim": self.latent_dim, "num_vertices": self.num_vertices,
                "identity_dim": self.identity_dim, "expression_dim": self.expression_dim,
                "sizes": list(ae.sizes), "encoder_filters": list(ae.encoder_filters),
                "decoder_filters": list(ae.decoder_filters), "order": ae.order}

    def exact_tensors(self) -> dict[str, np.ndarray]:
        """The mesh hierarchy's arrays, ``{"hierarchy.<field>.<level>[.<part>]": array}`` (float64
        / int64, ``MeshHierarchy.to_arrays``): stored in model files without any cast."""
        return {HIERARCHY_PREFIX + k: v for k, v in self.coma.hierarchy_arrays().items()}

    def check_layout(self, layout) -> None:
        """ValueError unless ``layout`` is ``(identity I, expression J[, "noise": noise_dim])``;
        :class:`FaceModel` calls it."""
        check_two_factor_layout(layout, "a CoMA generator", self.identity_dim, self.expression_dim, self.noise_dim)

    # -- the code ------------------------------------------------------------------------
    def coefficients(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D) codes -> (B, J) CoMA latent codes ``w = exp_mean + exp_scale @ z_exp``."""
        check_shape("z", z, (None, self.latent_dim))
        ni, nj = self.identity_dim, self.expression_dim
        return self.exp_mean + z[:, ni:ni + nj] @ self.exp_scale.T

    def codes_of(self, w: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`coefficients` for the expression block: (B, J) -> (B, J) ``z_exp``."""
        check_shape("w", w, (None, self.expression_dim))
        return torch.linalg.solve_triangular(self.exp_scale, (w - self.exp_mean).T, upper=False).T

    def encode_displacements(self, displacements: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) displacements from the identity's neutral (model unit) -> (B, J) ``z_exp``."""
        return self.codes_of(self.coma.encode(self.coma.normalise(displacements)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Displacements from the template.

        Args:
            z: (B, D) float latent codes.

        Returns:
            (B, V, 3) float displacements, in the template's unit.
        """
        w = self.coefficients(z)  # (B, J)
        ident = nn.functional.linear(z[:, :self.identity_dim], self.identity_basis, self.offset)  # (B, 3V)
        return ident.view(z.shape[0], self.num_vertices, 3) + self.coma.decode_displacements(w)

    def extra_repr(self) -> str:
        return (f"identity_dim={self.identity_dim}, expression_dim={self.expression_dim}, "
                f"noise_dim={self.noise_dim}, num_vertices={self.num_vertices}, sizes={self.coma.sizes}")


__all__ = ["ComaGenerator", "KIND", "HIERARCHY_PREFIX", "ENCODER_FILTERS", "DECODER_FILTERS", "ORDER"]
