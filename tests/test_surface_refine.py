"""Robust surface refinement (fitface.fitting.surface_refine) on partial scans with outliers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from fitface.fitting.decoder import synthetic_mlp_decoder
from fitface.fitting.landmark_fit import FitConfig, fit_landmarks
from fitface.fitting.similarity import Similarity
from fitface.fitting.surface_refine import SurfaceRefineConfig, _normals, refine_surface


def surface_samples(verts, faces, n, rng):
    fi = rng.integers(0, len(faces), n)
    bc = rng.dirichlet(np.ones(3), n)
    return np.einsum("pk,pkc->pc", bc, verts[faces[fi]])


@pytest.fixture(scope="module")
def scene():
    """A model-generated face, scanned with 30% cut away plus 20% far outliers, in cm and a random pose,
    with 10 landmarks (2 mm noise); and its landmark-only fit."""
    dec = synthetic_mlp_decoder(grid=30, latent=(8, 4), hidden=64, seed=3, dtype=np.float64, landmarks=10)
    rng = np.random.default_rng(5)
    zt = rng.standard_normal((1, dec.latent_dim))
    gt = dec.vertices(zt)[0]
    pts = surface_samples(gt, dec.faces, 6000, rng)
    pts = pts[pts[:, 0] < np.quantile(pts[:, 0], 0.7)]  # a partial scan: 30% cut away
    n_out = len(pts) // 4  # 20% of the scan's points are outliers 20-60 mm in front of the face
    out = np.column_stack([rng.uniform(-60, 60, n_out), rng.uniform(-80, 80, n_out),
                           gt[:, 2].max() + rng.uniform(20, 60, n_out)])
    t = Similarity(np.array([0.1]), Rotation.random(random_state=1).as_matrix()[None], np.array([[3.0, -2.0, 1.0]]))
    scan = t.apply(np.concatenate([pts, out])[None])[0]
    lm = dec.points(zt, dec.landmark_rows("lm"))[0] + rng.normal(size=(10, 3)) * 2.0
    lmc = t.apply(lm[None])[0]
    fit = fit_landmarks(dec, lmc, "lm", FitConfig(lam=1.0, steps=300, restarts=3))
    gt_samples = surface_samples(gt, dec.faces, 20000, rng)
    return dec, t, scan, lmc, fit, gt_samples


def surface_rmse(dec, t, verts_capture, gt_samples):
    """RMS point-to-plane distance (mm) from ground-truth surface samples to the fitted mesh."""
    v = t.inverse().apply(verts_capture[None])[0]
    n = _normals(v, dec.faces)
    i = cKDTree(v).query(gt_samples)[1]
    return float(np.sqrt((np.einsum("pc,pc->p", n[i], gt_samples - v[i]) ** 2).mean()))


def test_robust_refinement_beats_landmarks_and_least_squares(scene):
    dec, t, scan, lmc, fit, gts = scene
    base = surface_rmse(dec, t, fit.transform.apply(dec.vertices(fit.z))[0], gts)
    robust = refine_surface(dec, fit.z, fit.transform, scan, SurfaceRefineConfig(), landmark_targets=lmc,
                            landmark_set="lm")
    plain = refine_surface(dec, fit.z, fit.transform, scan, SurfaceRefineConfig(robust=False),
                           landmark_targets=lmc, landmark_set="lm")
    err_r = surface_rmse(dec, t, robust.vertices, gts)
    err_p = surface_rmse(dec, t, plain.vertices, gts)
    # measured: landmark-only 2.6 mm, robust 1.4 mm, least squares 19.9 mm
    assert err_r < 0.7 * base, (base, err_r)
    assert err_p > 2.0 * err_r, (err_p, err_r)
    # outliers are recognised: ~20% of the used points are not inliers, the inliers fit tightly (cm)
    assert 0.15 < 1.0 - robust.inliers.mean() < 0.3
    assert robust.inlier_rms < 0.1  # 1 mm in the capture's cm
    assert robust.history["energy"][-1] < robust.history["energy"][0]


def test_subsampling_is_seeded_and_capped(scene):
    dec, t, scan, lmc, fit, _ = scene
    cfg = SurfaceRefineConfig(steps=3, max_points=500, seed=1)
    a = refine_surface(dec, fit.z, fit.transform, scan, cfg)
    b = refine_surface(dec, fit.z, fit.transform, scan, cfg)
    assert len(a.scan_points) == 500 and len(np.unique(a.scan_points)) == 500
    np.testing.assert_array_equal(a.scan_points, b.scan_points)
    np.testing.assert_array_equal(a.z, b.z)
    with pytest.raises(ValueError, match="sigma"):
        refine_surface(dec, fit.z, fit.transform, scan, SurfaceRefineConfig(sigma=0.0))
