"""Dense retargeting and reconstruction (fitface.evaluation.dense_transfer, issue #26).

Analytic truths: a linear model's dense fit is its closed-form ridge solution; a truth drawn
from an additive model itself is retargeted exactly and pasted exactly; then the real ICT
truth's invariants.
"""

from __future__ import annotations

import numpy as np
import pytest

from fitface.evaluation.dense_transfer import (
    DENSE_EMOTIONS,
    DenseConfig,
    DenseTruth,
    build_dense_truth,
    dense_fit,
    dense_model_errors,
    dense_pairs,
    pasted_errors,
)
from fitface.fitting.decoder import LinearDecoder
from fitface.latent import LatentLayout


def _block_linear(mlp, n_id=5, n_exp=4, seed=3):
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(3 * mlp.num_vertices, n_id + n_exp)) * 2.0
    layout = LatentLayout((("identity", n_id), ("expression", n_exp)))
    return LinearDecoder(mlp.template, basis, mlp.faces, layout=layout)


def test_dense_fit_of_a_linear_model_is_the_closed_form_ridge_solution(mlp):
    dec = _block_linear(mlp)
    rng = np.random.default_rng(0)
    V, D = dec.num_vertices, dec.latent_dim
    targets = dec.vertices(rng.normal(size=(4, D))) + rng.normal(scale=0.3, size=(4, V, 3))  # off the span
    ridge = 1e-2
    fit = dense_fit(dec, targets, ridge=ridge)
    B = dec.basis  # (3V, D)
    r = (targets - dec.template[None]).reshape(4, -1)  # (N, 3V)
    z_cf = np.linalg.solve(B.T @ B / V + ridge * np.eye(D), B.T @ r.T / V).T  # (N, D)
    np.testing.assert_allclose(fit.z, z_cf, rtol=1e-5, atol=1e-6)
    assert fit.converged
    np.testing.assert_allclose(fit.rmse, np.sqrt(np.mean(np.sum((fit.vertices - targets) ** 2, -1), -1)))


def test_unit_scale_fits_in_the_model_unit(mlp):
    dec = _block_linear(mlp)
    z = np.random.default_rng(1).normal(size=(2, dec.latent_dim))
    t_cm = dec.vertices(z)
    fit = dense_fit(dec, t_cm * 10.0, ridge=0.0, unit_scale=10.0)  # targets in mm, model in "cm"
    np.testing.assert_allclose(fit.z, z, atol=1e-5)
    assert fit.rmse.max() < 1e-4


def _truth_from(dec, n_id=3, seed=5) -> DenseTruth:
    rng = np.random.default_rng(seed)
    idb, exb = dec.layout.slice("identity"), dec.layout.slice("expression")
    E = len(DENSE_EMOTIONS)
    z_id = rng.normal(size=(n_id, idb.stop - idb.start))
    z_ex = rng.normal(size=(E, exb.stop - exb.start))
    zn = np.zeros((n_id, dec.latent_dim))
    zn[:, idb] = z_id
    zp = np.repeat(zn[:, None], E, axis=1)
    zp[:, :, exb] = z_ex[None]
    posed = dec.vertices(zp.reshape(-1, dec.latent_dim)).reshape(n_id, E, dec.num_vertices, 3)
    return DenseTruth(dec.vertices(zn), posed, np.zeros((0, dec.num_vertices, 3)), np.zeros(0, np.int64),
                      dec.faces)


def test_a_truth_from_an_additive_model_is_retargeted_and_pasted_exactly(mlp):
    dec = _block_linear(mlp)
    truth = _truth_from(dec)
    cfg = DenseConfig(identities=3, samples_per_identity=0, ridge=0.0)
    err = dense_model_errors(dec, truth, cfg)
    assert len(err.pairs["retarget"]) == 3 * 2 * len(DENSE_EMOTIONS)
    for row in ("pasted", "retarget", "direct_fit", "neutral_fit"):
        assert err.pairs[row].max() < 1e-3, row
    assert err.pairs["no_transfer"].min() > 0.5  # the expressions are not nothing


def test_retarget_takes_the_expression_block_from_A_and_the_identity_from_B(mlp):
    """Swapping the blocks' roles (identity from A) fails the truth: the error is large."""
    dec = _block_linear(mlp)
    layout_swapped = LatentLayout((("expression", 5), ("identity", 4)))
    wrong = LinearDecoder(dec.template, dec.basis, dec.faces, layout=layout_swapped)
    err = dense_model_errors(wrong, _truth_from(dec), DenseConfig(identities=3, samples_per_identity=0, ridge=0.0))
    assert err.pairs["retarget"].mean() > 0.5
    assert err.pairs["direct_fit"].max() < 1e-3  # the fits are the same: only the transfer differs


def test_pairs_and_pasted():
    p = dense_pairs(3)
    assert p.shape == (3 * 2 * 6, 3) and not np.any(p[:, 0] == p[:, 1])
    assert len({tuple(r) for r in p}) == len(p)
    V = 5
    neutral = np.random.default_rng(0).normal(size=(3, V, 3))
    disp = np.random.default_rng(1).normal(size=(6, V, 3))
    truth = DenseTruth(neutral, neutral[:, None] + disp[None], np.zeros((0, V, 3)), np.zeros(0, np.int64),
                       np.array([[0, 1, 2]]))
    np.testing.assert_allclose(pasted_errors(truth, p), 0.0, atol=1e-12)


def test_wrong_topology_is_an_input_error(mlp):
    from fitface.errors import InputError

    dec = _block_linear(mlp)
    truth = _truth_from(dec)
    small = DenseTruth(truth.neutral[:, :10], truth.posed[:, :, :10], truth.sampled[:, :10],
                       truth.sampled_identity, np.array([[0, 1, 2]]))
    with pytest.raises(InputError, match="ICT topology"):
        dense_model_errors(dec, small, DenseConfig(identities=3))


def test_config_validation():
    with pytest.raises(ValueError, match="identities"):
        DenseConfig(identities=1).validate()
    with pytest.raises(ValueError, match="ridge"):
        DenseConfig(ridge=-1.0).validate()


def test_ict_truth_is_identity_dependent_and_the_3dmm_sits_between_its_bounds(ict_path):
    """The real ICT truth: fresh identities move one expression differently (the pasted
    displacement errs), and the shipped 3DMM retargets worse than pasting A's displacement but far
    better than no transfer; its dense fits are sub-millimetre."""
    from fitface.api.inputs import load_fit_model

    cfg = DenseConfig(identities=2, samples_per_identity=2)
    truth = build_dense_truth(ict_path, 9409, cfg)
    assert truth.neutral.shape == (2, 9409, 3) and truth.posed.shape == (2, 6, 9409, 3)
    assert truth.sampled.shape == (4, 9409, 3) and list(truth.sampled_identity) == [0, 0, 1, 1]
    again = build_dense_truth(ict_path, 9409, cfg)
    np.testing.assert_array_equal(truth.posed, again.posed)  # seeded
    pasted = pasted_errors(truth, dense_pairs(2))
    assert 0.1 < pasted.mean() < 2.0  # identity-dependent expressions (mm)
    err = dense_model_errors(load_fit_model("ict-linear"), truth, cfg).summary()
    assert err["pasted_vertex_rmse_mm"] < err["retarget_vertex_rmse_mm"] < 0.5 * err["no_transfer_vertex_rmse_mm"]
    assert err["direct_fit_vertex_rmse_mm"] < 1.0 and err["reconstruction_vertex_rmse_mm"] < 1.0
