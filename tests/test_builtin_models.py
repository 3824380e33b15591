"""Built-in models by name (fitface.models.registry): resolution, errors, `fitface models`, the
shipped ict-linear file and its licence, and the NOTICE file.

Tests that need a model to be absent point the registry at a temporary folder holding links to
the shipped files they keep, so they hold whether or not ``ict.safetensors`` has been added."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from input_checks import run_cli

import fitface
from fitface.errors import InputError
from fitface.models import registry

REPO = Path(__file__).resolve().parents[1]
#: The ICT-FaceKit licence's identifying lines (the full text is in NOTICE and the model metadata).
ICT_LICENCE_LINES = ("MIT License", "Copyright (c) 2020 USC Institute for Creative Technologies",
                     "THE SOFTWARE IS PROVIDED \"AS IS\"")


@pytest.fixture
def only_procedural(tmp_path, monkeypatch) -> Path:
    """The registry's folder holds only the procedural model (a link to the shipped file)."""
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "default.safetensors").symlink_to(registry.BUILTIN_MODELS["procedural"].path)
    monkeypatch.setattr(registry, "MODELS_DIR", folder)
    return folder


# ---------------------------------------------------------------------------- resolution
def test_names_resolve_to_the_shipped_files():
    r = registry.resolve_model("procedural")
    assert r.name == "procedural" and r.path == registry.MODELS_DIR / "default.safetensors" and r.path.is_file()
    assert registry.resolve_model(None).name == registry.DEFAULT_MODEL
    il = registry.resolve_model("ict-linear")
    assert il.path.name == "ict-linear.safetensors" and il.reference == "ict-linear"
    # a path to a shipped file is that model, so codes record its name
    assert registry.resolve_model(str(il.path)).name == "ict-linear"


def test_a_users_file_has_no_name(model_path):
    r = registry.resolve_model(model_path)
    assert r.name is None and r.reference == str(model_path.resolve())


def test_not_installed_is_one_line_naming_the_file_and_what_is_installed(only_procedural):
    with pytest.raises(InputError) as exc:
        registry.resolve_model("ict")
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(str(only_procedural / "ict.safetensors"))
    assert "'ict' is not installed" in msg and "installed: procedural;" in msg and "--model" in msg
    with pytest.raises(InputError, match="'ict-linear' is not installed"):
        fitface.load_model("ict-linear")


def test_unknown_names_and_bad_paths(tmp_path):
    with pytest.raises(InputError, match="not a built-in model name .*procedural, ict, ict-linear"):
        registry.resolve_model("ict-gan")
    with pytest.raises(InputError, match="no such model file"):
        registry.resolve_model(tmp_path / "absent.safetensors")
    with pytest.raises(InputError, match="is a directory"):
        registry.resolve_model(tmp_path)


def test_cli_not_installed_exit_2(only_procedural, tmp_path, capsys):
    lm = tmp_path / "lm.txt"
    lm.write_text("0 0 0\n" * 68)
    code, out, err = run_cli(["fit", "-l", lm, "-o", tmp_path / "o", "--model", "ict"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and "'ict' is not installed" in err
    assert not (tmp_path / "o").exists()


def test_api_takes_names_everywhere(tmp_path):
    """fitface.load_model("ict-linear"), fit(model=...), sample(model=...) by name."""
    m = fitface.load_model("ict-linear")
    assert m.num_vertices == 9409 and m.unit == "mm"
    res = fitface.sample(2, model="ict-linear", seed=1)
    assert res.vertices.shape == (2, 9409, 3) and res.codes[0].model == "ict-linear"
    from fitface.api import load_fit_model

    dec = load_fit_model("ict-linear")
    lm = dec.points(np.zeros((1, dec.layout.dim)), dec.landmark_rows(dec.landmark_sets["ibug68"]))[0]
    fit = fitface.fit(lm, model="ict-linear", steps=20)
    assert fit.codes.model == "ict-linear" and fit.codes.model_id == dec.model_id


def test_builtin_models_are_read_only(tmp_path, capsys):
    path = registry.BUILTIN_MODELS["procedural"].path
    before = registry.model_id_of_file(path)
    vids = tmp_path / "v.txt"
    vids.write_text("0\n1\n2\n")
    code, _, err = run_cli(["landmarks", "add", "procedural", "three", vids], capsys)
    assert code == 2 and err.count("\n") == 1 and "not changed in place" in err and "-o FILE" in err
    code, out, _ = run_cli(["landmarks", "add", "procedural", "three", vids, "-o", tmp_path / "mine.safetensors"],
                           capsys)
    assert code == 0 and (tmp_path / "mine.safetensors").is_file()
    assert registry.model_id_of_file(path) == before
    code, out, _ = run_cli(["landmarks", "list", "ict-linear"], capsys)
    assert code == 0 and "ibug68\t68" in out


# ---------------------------------------------------------------------------- fitface models
def test_models_lists_names_installed_or_not(only_procedural, capsys):
    code, out, err = run_cli(["models"], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert re.match(r"procedural( \(default\))?: installed", lines[0])
    assert any(re.match(r"ict( \(default\))?: not installed", line) for line in lines)
    assert any(re.match(r"ict-linear( \(default\))?: not installed", line) for line in lines)
    assert sum("(default)" in line for line in lines) == 1
    assert "3,000 generator steps, recipe default_model" in out and "4,285 vertices" in out


def test_models_json_describes_the_shipped_files(capsys):
    code, out, _ = run_cli(["models", "--json"], capsys)
    assert code == 0
    entries = {e["name"]: e for e in json.loads(out)}
    assert list(entries) == list(registry.BUILTIN_MODELS)
    assert sum(e["default"] for e in entries.values()) == 1 and entries[registry.DEFAULT_MODEL]["default"]
    il = entries["ict-linear"]
    assert il["installed"] and il["kind"] == "linear" and il["unit"] == "mm" and il["vertices"] == 9409
    assert set(il["landmark_sets"]) == {"ibug68", "mediapipe"}
    assert il["budget"].startswith("linear 3DMM from 240 identities")
    assert "ICT-FaceKit" in il["licence"]
    assert il["size_bytes"] == Path(il["path"]).stat().st_size and il["size_mib"] < 8
    pr = entries["procedural"]
    assert pr["kind"] == "gan" and pr["licence"] == registry.FITFACE_LICENCE and pr["vertices"] == 4285
    if not entries["ict"]["installed"]:
        assert entries["ict"]["unit"] is None and entries["ict"]["path"].endswith("ict.safetensors")


# ---------------------------------------------------------------------------- shipped files, licence
def test_ict_linear_carries_its_provenance_and_licence():
    from fitface.models.model_file import read_metadata

    doc = read_metadata("ict-linear")
    shipped = doc["metadata"]["shipped"]
    assert shipped["name"] == "ict-linear" and "fitface baseline" in shipped["command"]
    assert shipped["budget"].startswith("linear 3DMM from 240 identities")
    assert shipped["data"]["builder"] == "ict" and shipped["data"]["fingerprint"] == doc["data_fingerprint"]
    for line in ICT_LICENCE_LINES:
        assert line in shipped["licence"]
    assert "ICT-FaceKit" in shipped["attribution"]
    assert doc["storage_dtype"] == "float16" and doc["discriminator"] is None
    assert doc["latent_layout"] == [["identity", 65], ["expression", 15], ["noise", 5]]


def test_notice_has_the_ict_licence_and_names_the_derived_files():
    notice = (REPO / "NOTICE").read_text()
    from fitface.models.model_file import read_metadata

    licence = read_metadata("ict-linear")["metadata"]["shipped"]["licence"]
    assert " ".join(licence.split()) in " ".join(notice.split())  # the full text, verbatim
    for derived in ("ict-linear.safetensors", "ict.safetensors", "ict_captures.npz"):
        assert derived in notice


def test_ict_licence_matches_the_source(ict_path):
    """The text shipped is the source's own (skips without ../shared)."""
    from fitface.models.model_file import read_metadata

    with np.load(ict_path) as z:
        source = str(z["license"])
    assert read_metadata("ict-linear")["metadata"]["shipped"]["licence"] == source
