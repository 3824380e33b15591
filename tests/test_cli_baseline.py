"""``fitface baseline --kind mae|coma``: the trained baselines through the command line.

Each kind is built on the small synthetic dataset (20 identities, 2,000 samples, V = 4,285)
with a budget of a fraction of an epoch; the run folder must hold a model file that loads and
fits, the resolved config (every field of the kind's build config) and the report.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

#: Epochs per test build: enough for a few optimiser steps on the synthetic set.
EPOCHS = {"mae": 0.15, "coma": 0.15}
#: Build config classes, to check that config.json holds every field.
CONFIGS = {"mae": ("fitface.models.builders.mae", "MaeBuildConfig"),
           "coma": ("fitface.models.builders.coma", "ComaBuildConfig")}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dataset(synthetic_2000):
    return synthetic_2000


@pytest.mark.parametrize("kind", ["mae", "coma"])
def test_cli_builds_a_trained_baseline(kind, dataset, tmp_path):
    import dataclasses
    import importlib

    from fitface.cli import main
    from fitface.fitting.decoder import load_decoder

    pytest.importorskip(CONFIGS[kind][0])
    run = tmp_path / kind
    code = main(["baseline", str(dataset.path), "--kind", kind, "-o", str(run), "--max-epochs", str(EPOCHS[kind]),
                 "--seed", "3", "--threads", "1", "--quiet"])
    assert code == 0
    config = json.loads((run / "config.json").read_text())
    report = json.loads((run / "baseline.json").read_text())
    cls = getattr(importlib.import_module(CONFIGS[kind][0]), CONFIGS[kind][1])
    assert set(config["build_config"]) == {f.name for f in dataclasses.fields(cls)}
    assert config["baseline"] == kind and config["build_config"]["seed"] == 3
    assert config["build_config"]["max_epochs"] == EPOCHS[kind]
    assert config["latent_layout"] == [["identity", 65], ["expression", 20]]
    assert report["kind"] == kind and report["command_seconds"] >= report["build_seconds"] > 0
    dec = load_decoder(run / "model.safetensors")
    assert dec.model_id == report["model_id"] and dec.layout.dim == 85
    z = np.zeros((1, dec.layout.dim), dtype=np.float32)
    assert np.isfinite(dec.vertices(z)).all()
    # an existing model is not replaced without --overwrite
    assert main(["baseline", str(dataset.path), "--kind", kind, "-o", str(run), "--quiet"]) == 2


def test_cli_refuses_linear_only_options_for_trained_kinds(dataset, tmp_path, capsys):
    from fitface.cli import main

    run = tmp_path / "mae"
    assert main(["baseline", str(dataset.path), "--kind", "mae", "-o", str(run), "--noise-dims", "5",
                 "--quiet"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: --noise-dims: only for --kind linear"]
    assert not run.exists()
