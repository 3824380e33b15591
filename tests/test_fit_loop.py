"""The one fitting loop (fitface.fitting.fit_loop) and its data terms: a term plugs in, terms add
up, and the 2D projection term gets the loop's options (freeze, progress; its sequence options:
tests/test_landmark_fit.py) and refuses what it cannot do."""

from __future__ import annotations

import numpy as np
import pytest

from fitface.fitting.fit_loop import DataTerm, run_fit_loop
from fitface.fitting.landmark_fit import FitConfig, LandmarkTerm
from fitface.fitting.projection_fit import ProjectionTerm, fit_landmarks_2d
from fitface.geometry.camera import rotation_yaw_pitch


class PullTerm(DataTerm):
    """A toy term ``w ||z - c_b||^2``: the loop's minimiser is ``z = w c / (w + lam)``."""

    def __init__(self, centres, weight):
        self.c, self.w = np.asarray(centres, dtype=np.float64), weight
        self.num_captures = len(self.c)
        self.calls = {"start": 0, "after_step": 0, "finish": 0}

    def start(self, mean_codes, restarts):
        self.calls["start"] += 1
        self.rows = np.repeat(self.c, restarts, axis=0)

    def evaluate(self, z, step, want_value):
        d = z - self.rows
        return (self.w * np.einsum("nd,nd->n", d, d) if want_value else None), 2.0 * self.w * d

    def after_step(self, step):
        self.calls["after_step"] += 1

    def finish(self, z):
        self.calls["finish"] += 1
        d = z - self.rows
        return self.w * np.einsum("nd,nd->n", d, d)


def test_a_term_plugs_into_the_loop(mlp):
    c = np.random.default_rng(0).normal(size=(3, mlp.latent_dim))
    term = PullTerm(c, 2.0)
    ident = mlp.layout.slice("identity")
    done = []
    cfg = FitConfig(lam=1.0, steps=300, lr=0.05, restarts=3, freeze={"identity": c[0, ident]})
    loop = run_fit_loop(mlp, [term], cfg, progress=lambda i, n: done.append(i))
    assert term.calls == {"start": 1, "after_step": 300, "finish": 1} and done == list(range(1, 301))
    z = loop.z[loop.rows]  # (B, D) the best restarts
    free = np.ones(mlp.latent_dim, bool)
    free[ident] = False
    np.testing.assert_allclose(z[:, free], c[:, free] * 2.0 / 3.0, atol=1e-3)  # w c / (w + lam)
    np.testing.assert_array_equal(z[:, ident], np.broadcast_to(c[0, ident], (3, ident.stop)))
    assert loop.restarts_loss.shape == (3, 3)
    np.testing.assert_array_equal(loop.best_restart, loop.restarts_loss.argmin(axis=1))
    assert loop.history["step"][-1] == 300 and loop.history["objective"][-1] < loop.history["objective"][0]


def test_terms_add_up_3d_and_2d_of_one_capture(linear):
    """A 3D landmark term and a 2D projection term of the same faces, in one loop: the truth is
    the minimum of both, and the final objective is the sum of the terms' final values."""
    rng = np.random.default_rng(2)
    z = rng.standard_normal((2, linear.latent_dim))
    pts = linear.points(z, linear.landmark_rows("lm"))  # (2, L, 3)
    rot = np.stack([rotation_yaw_pitch(20, -10, 5), rotation_yaw_pitch(-30, 5, 0)])
    lm3 = np.einsum("bij,blj->bli", rot, pts) * 0.1 + np.array([1.0, 2.0, 3.0])  # cm, rotated
    img = 2.5 * np.einsum("bij,blj->bli", rot[:, :2], pts) + np.array([300.0, -200.0])  # pixels
    cfg = FitConfig(lam=0.0, steps=500, restarts=2)
    t3, t2 = LandmarkTerm(linear, lm3, "lm", cfg), ProjectionTerm(linear, img, "lm", cfg)
    loop = run_fit_loop(linear, [t3, t2], cfg)
    best = loop.z[loop.rows]
    np.testing.assert_allclose(best, z, atol=0.02)
    zz = loop.z
    np.testing.assert_allclose(loop.objective, t3.finish(zz) + t2.finish(zz), rtol=1e-9, atol=1e-12)
    assert t2.fitted(loop.rows)["rms"].max() < 0.05  # pixels
    assert t3.fitted(loop.rows)["rms"].max() < 0.002  # cm


def test_2d_fit_progress_freeze_and_refused_options(mlp):
    z = np.random.default_rng(4).standard_normal((1, mlp.latent_dim))
    img = 2.0 * mlp.points(z, mlp.landmark_rows("lm"))[..., :2]
    ident = mlp.layout.slice("identity")
    calls = []
    res = fit_landmarks_2d(mlp, img, "lm", FitConfig(steps=20, freeze={"identity": z[0, ident]}),
                           progress=lambda i, n: calls.append((i, n)))
    assert calls == [(i, 20) for i in range(1, 21)]
    np.testing.assert_array_equal(res.z[0, ident], z[0, ident])
    for bad in (FitConfig(with_scale=False), FitConfig(estimate_similarity=False)):
        with pytest.raises(ValueError, match="2D fit always estimates its camera"):
            fit_landmarks_2d(mlp, img, "lm", bad)
    with pytest.raises(ValueError, match="every data term must hold the same captures"):
        run_fit_loop(mlp, [PullTerm(np.zeros((1, mlp.latent_dim)), 1.0), PullTerm(np.zeros((2, mlp.latent_dim)), 1.0)],
                     FitConfig(steps=1))
