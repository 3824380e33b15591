"""Model files and meshes the tests build (shared by several test files).

* :func:`grid_mesh`: a flat vertex grid with its uv (unit tests of models and model files).
* :func:`build_fit_model` / :func:`fit_model_file`: a face-like model on the procedural template
  (fitting, batch, retarget and sample tests), built once per session.
* :func:`small_model`: a tiny model on the procedural template (mediapipe plumbing tests).
* :func:`synthetic_capture`: ground-truth landmarks and mesh from a model and a random similarity.
* :func:`central_difference_vjp`: the VJP of a decoder function by central differences.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fitface.data.procedural import template_mesh, template_vertices


def grid_mesh(n: int = 12, spacing: float = 10.0):
    """A flat n x n vertex grid: vertices (n^2, 3) float64 mm, faces (2(n-1)^2, 3), uv (n^2, 2) in [0, 1]."""
    ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    vertices = np.stack([xs.ravel(), ys.ravel(), np.zeros(n * n)], axis=1) * spacing
    a = (np.arange(n - 1)[:, None] * n + np.arange(n - 1)[None, :]).ravel()
    faces = np.concatenate([np.stack([a, a + 1, a + n], 1), np.stack([a + 1, a + n + 1, a + n], 1)])
    uv = vertices[:, :2] / (spacing * (n - 1))
    return vertices, faces.astype(np.int64), uv



def build_fit_model(path: Path, seed: int = 0, scale: float = 0.03) -> Path:
    """Write a small face model (procedural template, V ~ 4,300) to ``path``.

    The generator's last layer is a smooth basis over the template (16 random low-frequency
    cosines of the template's x, y) mixed by random weights, so G(z) is a smooth displacement
    field of ~3 mm standard deviation (face-like), not per-vertex noise.
    """
    import torch

    from fitface.data.procedural import template_mesh, template_vertices
    from fitface.geometry.parameterization import harmonic_uv
    from fitface.models.face_model import FaceModel
    from fitface.models.generator import Generator
    from fitface.models.latent import PAPER_LAYOUT
    from fitface.models.model_file import save_model

    tpl = template_mesh()
    v = template_vertices()
    f = np.array(tpl.faces)
    uv = harmonic_uv(v, f).uv
    torch.manual_seed(seed)
    g = Generator(PAPER_LAYOUT.dim, len(v))
    rng = np.random.default_rng(seed)
    xy = (v[:, :2] - v[:, :2].mean(0)) / np.abs(v[:, :2]).max()
    freq = rng.normal(0, 1.5, (16, 2))
    phase = rng.uniform(0, 2 * np.pi, 16)
    basis = np.cos(xy @ freq.T + phase)  # (V, 16)
    mix = rng.standard_normal((16, 3, g.hidden_size)) * np.array([1.0, 1.0, 2.0])[None, :, None]
    w = np.einsum("vk,kch->vch", basis, mix).reshape(3 * len(v), g.hidden_size) * scale  # (3V, H)
    with torch.no_grad():
        g.out.weight.copy_(torch.from_numpy(w).float())
    m = FaceModel(v, f, uv, PAPER_LAYOUT, g, unit="mm", landmark_sets=dict(tpl.landmark_sets))
    save_model(path, m)
    return path


def fit_model_file(tmp_path_factory, name: str = "fit_model.safetensors", seed: int = 0) -> Path:
    """The session's test model file (built on first use, then reused by every test file)."""
    path = tmp_path_factory.getbasetemp() / name
    if not path.is_file():
        build_fit_model(path, seed=seed)
    return path


def random_similarity(rng, scale: float):
    from fitface.fitting.similarity import Similarity
    from fitface.geometry.camera import rotation_yaw_pitch

    r = rotation_yaw_pitch(*rng.uniform(-25, 25, 3))
    return Similarity(np.array([scale]), r[None], rng.normal(0, 3, (1, 3)) * scale * 100)


def synthetic_capture(model_path: Path, seed: int = 1, scale: float = 1.0):
    """Ground truth: z ~ N(0, I), a random similarity (scale = unit conversion) -> (z, T, landmarks, vertices, faces)."""
    from fitface.fitting.decoder import load_decoder

    dec = load_decoder(model_path)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((1, dec.layout.dim))
    t = random_similarity(rng, scale)
    lm = t.apply(dec.points(z, dec.landmark_rows("ibug68")))[0]
    verts = t.apply(dec.vertices(z))[0]
    return z[0], t, lm, verts, dec.faces



def small_model(path, scale: float = 1e-3):
    """A model file on the procedural template with a small random generator (plumbing tests)."""
    import torch

    from fitface.models.face_model import FaceModel
    from fitface.models.generator import Generator
    from fitface.models.latent import LatentLayout
    from fitface.models.model_file import save_model

    torch.manual_seed(0)
    tm = template_mesh()
    v = np.array(template_vertices())
    layout = LatentLayout((("identity", 8), ("expression", 4), ("noise", 2)))
    g = Generator(layout.dim, len(v), hidden=32)
    with torch.no_grad():
        g.out.weight.mul_(scale)
        g.out.bias.zero_()
    uv = (tm.domain - tm.domain.min(0)) / np.ptp(tm.domain, axis=0)
    m = FaceModel(v, np.array(tm.faces), np.array(uv), layout, g, unit="mm", landmark_sets=dict(tm.landmark_sets))
    save_model(path, m)
    return path




def central_difference_vjp(fun, z: np.ndarray, grad: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """``d/dz sum(grad * fun(z))`` by central differences, one code coordinate at a time.

    Args:
        fun: (B, D) codes -> (B, N, 3) points (vertices or landmarks).
        z: (B, D) float64. grad: (B, N, 3) float64. eps: the step.

    Returns:
        (B, D) float64.
    """
    out = np.zeros_like(z)
    for k in range(z.shape[1]):
        dz = np.zeros_like(z)
        dz[:, k] = eps
        out[:, k] = ((fun(z + dz) - fun(z - dz)) * grad).sum(axis=(1, 2)) / (2 * eps)
    return out
