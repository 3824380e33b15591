"""Shared fixtures.

The ICT face model (../shared/data/ict_face_light.npz, MIT licence) is used by path;
tests that need it skip cleanly when it is absent. FITFACE_SHARED overrides the
location of the shared folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FITFACE_SHARED", REPO.parent / "shared"))
ICT_NPZ = SHARED / "data" / "ict_face_light.npz"


@pytest.fixture(scope="session")
def ict_path() -> Path:
    """Path of the shared ICT face model; skips the test when it is absent."""
    if not ICT_NPZ.is_file():
        pytest.skip(f"shared ICT data not found at {ICT_NPZ}")
    return ICT_NPZ


@pytest.fixture(scope="session")
def ict_mesh(ict_path):
    """The ICT generic neutral: (vertices (9409, 3) float64 cm, faces (18460, 3) int64)."""
    with np.load(ict_path) as z:
        return z["neutral"].astype(np.float64), z["faces"].astype(np.int64)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    """6 identities x 200 synthetic faces (V = 4285, mm): the trainer tests' dataset (read only)."""
    from fitface.data.synthetic import build_synthetic

    return build_synthetic(tmp_path_factory.mktemp("data") / "tiny", identities=6, samples=200, seed=0)


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module's tests (``pytestmark = pytest.mark.usefixtures(...)``):
    the training tests' timings and results do not depend on the machine's core count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def synthetic_2000(tmp_path_factory):
    """The synthetic dataset at 20 identities x 2,000 faces (V = 4,285, mm; seed 0), loaded: the
    baselines' tests share it (16 training identities, several "neutral" samples each). Read only."""
    from fitface.data.format import load_dataset
    from fitface.data.synthetic import build_synthetic

    return load_dataset(build_synthetic(tmp_path_factory.mktemp("syn2000") / "syn", identities=20, samples=2000,
                                        seed=0))


@pytest.fixture(scope="session")
def model_path(tmp_path_factory) -> Path:
    """The session's small face-like test model file (tests/model_builders.py)."""
    from model_builders import fit_model_file

    return fit_model_file(tmp_path_factory)


@pytest.fixture(scope="session")
def other_model_path(tmp_path_factory) -> Path:
    """A second test model, another seed (a different model_id)."""
    from model_builders import fit_model_file

    return fit_model_file(tmp_path_factory, "other_model.safetensors", seed=5)


@pytest.fixture
def no_builtin_models(tmp_path, monkeypatch) -> Path:
    """An installation without any built-in model file (e.g. a stripped wheel): the registry's
    folder points to an empty temporary folder. Returns that folder."""
    from fitface.models import registry

    empty = tmp_path / "no_models"
    empty.mkdir()
    monkeypatch.setattr(registry, "MODELS_DIR", empty)
    return empty


@pytest.fixture(scope="module")
def mlp():
    """A small float64 synthetic MLP decoder with a 30-landmark set "lm" (fitting tests)."""
    from fitface.fitting.decoder import synthetic_mlp_decoder

    return synthetic_mlp_decoder(grid=16, latent=(6, 4, 2), hidden=48, seed=0, dtype=np.float64, landmarks=30)


@pytest.fixture(scope="module")
def linear(mlp):
    """A random linear decoder on :func:`mlp`'s template and landmark sets (fitting tests)."""
    from fitface.fitting.decoder import LinearDecoder

    basis = np.random.default_rng(1).normal(size=(3 * mlp.num_vertices, 10)) * 3.0
    return LinearDecoder(mlp.template, basis, mlp.faces, landmark_sets=mlp.landmark_sets)
