"""codes.json records the model that made it (``"model"``: a built-in name or the file's path),
and ``retarget`` / ``interpolate`` run without ``--model`` on it; when the model cannot be found
again the one-line error says which ``--model`` to pass."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from input_checks import run_cli
from model_builders import synthetic_capture

from fitface.errors import InputError
from fitface.io.codes import Codes, read_codes, write_codes


def _fit(model, tmp_path, name, capsys, seed=1):
    from fitface.io.landmarks import save_landmarks

    lm_file = tmp_path / f"{name}.json"
    if not lm_file.exists():
        _, _, lm, _, _ = synthetic_capture(seed_model(model), seed=seed)
        save_landmarks(lm_file, lm, unit="mm")
    code, _, err = run_cli(["fit", "-l", lm_file, "-o", tmp_path / name, "-m", model, "--steps", "30",
                            "--no-preview"], capsys)
    assert code == 0, err
    return tmp_path / name / "codes.json"


def seed_model(model):
    """The file to draw synthetic landmarks from (a path, or a built-in name's file)."""
    from fitface.models.registry import resolve_model_path

    return resolve_model_path(model)


# ---------------------------------------------------------------------------- the codes.json key
def test_model_key_round_trip(tmp_path):
    c = Codes("abc", {"identity": [0.5]}, model="ict-linear", extra={"lambda": 1.0})
    write_codes(tmp_path / "c.json", c)
    doc = json.loads((tmp_path / "c.json").read_text())
    assert list(doc)[:3] == ["format_version", "model_id", "model"] and doc["model"] == "ict-linear"
    back = read_codes(tmp_path / "c.json")
    assert back.model == "ict-linear" and back.extra == {"lambda": 1.0}
    # files without the key (written before it existed) read as model None
    (tmp_path / "old.json").write_text(json.dumps({"model_id": "abc", "codes": {"identity": [1.0]}}))
    assert read_codes(tmp_path / "old.json").model is None
    (tmp_path / "bad.json").write_text(json.dumps({"model_id": "abc", "model": 5, "codes": {"identity": [1.0]}}))
    with pytest.raises(InputError, match=r"bad.json: model: expected a model name or file path"):
        read_codes(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="reserved"):
        write_codes(tmp_path / "x.json", Codes("abc", {"identity": [1.0]}, extra={"model": "x"}))


def test_fits_record_the_builtin_name_or_the_absolute_path(model_path, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    doc = json.loads(_fit(model_path, tmp_path, "A", capsys).read_text())
    assert doc["model"] == str(model_path.resolve()) and doc["model_id"]
    # a relative --model is recorded absolute, so the codes work from any folder
    shutil.copy(model_path, tmp_path / "rel.safetensors")
    doc = json.loads(_fit("rel.safetensors", tmp_path, "R", capsys).read_text())
    assert doc["model"] == str((tmp_path / "rel.safetensors").resolve())
    doc = json.loads(_fit("procedural", tmp_path, "P", capsys).read_text())
    assert doc["model"] == "procedural"


# ---------------------------------------------------------------------------- retarget / interpolate
def test_retarget_and_interpolate_without_model_use_the_codes_model(model_path, tmp_path, capsys):
    a = _fit(model_path, tmp_path, "A", capsys, seed=1)
    b = _fit(model_path, tmp_path, "B", capsys, seed=2)
    code, _, err = run_cli(["retarget", "-e", a, "-i", b, "-o", tmp_path / "r.ply"], capsys)
    assert code == 0, err
    r = read_codes(tmp_path / "r.codes.json")
    assert r.model == str(model_path.resolve()) and r.model_id == read_codes(a).model_id
    assert r.codes["expression"] == read_codes(a).codes["expression"]
    code, _, err = run_cli(["interpolate", a, b, "-o", tmp_path / "i", "--steps", "3", "--no-picture"], capsys)
    assert code == 0, err
    assert read_codes(tmp_path / "i" / "interp_02.codes.json").codes == read_codes(b).codes
    # the retargeted codes record the model too: they chain without --model
    code, _, err = run_cli(["retarget", "-e", tmp_path / "r.codes.json", "-i", a, "-o", tmp_path / "r2.ply"], capsys)
    assert code == 0, err


def test_builtin_codes_without_model_key_are_matched_by_model_id(tmp_path, capsys):
    """Older codes (no "model") of a built-in model are found among the installed ones by model_id."""
    a = _fit("procedural", tmp_path, "A", capsys, seed=1)
    b = _fit("procedural", tmp_path, "B", capsys, seed=2)
    for p in (a, b):
        doc = json.loads(p.read_text())
        del doc["model"]
        p.write_text(json.dumps(doc))
    code, _, err = run_cli(["retarget", "-e", a, "-i", b, "-o", tmp_path / "r.ply"], capsys)
    assert code == 0, err
    assert read_codes(tmp_path / "r.codes.json").model == "procedural"


def test_moved_model_file_says_which_model_to_pass(model_path, tmp_path, capsys):
    mine = tmp_path / "mine.safetensors"
    shutil.copy(model_path, mine)
    a = _fit(mine, tmp_path, "A", capsys, seed=1)
    mine.rename(tmp_path / "moved.safetensors")
    code, out, err = run_cli(["retarget", "-e", a, "-i", a, "-o", tmp_path / "r.ply"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"error: {a}: ") and str(mine) in err and "no such model file" in err
    assert "pass --model" in err and read_codes(a).model_id in err
    assert not (tmp_path / "r.ply").exists()
    # passing the moved file works
    code, _, err = run_cli(["retarget", "-e", a, "-i", a, "-o", tmp_path / "r.ply", "-m",
                            tmp_path / "moved.safetensors"], capsys)
    assert code == 0, err


def test_changed_model_file_is_refused_by_model_id(model_path, tmp_path, capsys):
    mine = tmp_path / "mine.safetensors"
    shutil.copy(model_path, mine)
    a = _fit(mine, tmp_path, "A", capsys, seed=1)
    verts = tmp_path / "v.txt"
    verts.write_text("0\n1\n2\n")
    assert run_cli(["landmarks", "add", mine, "three", verts], capsys)[0] == 0  # the file (and its id) change
    code, _, err = run_cli(["interpolate", a, a, "-o", tmp_path / "i"], capsys)
    assert code == 2 and err.count("\n") == 1 and "now has model_id" in err and "pass --model" in err
    assert not (tmp_path / "i").exists()


def test_codes_from_two_models(model_path, other_model_path, tmp_path, capsys):
    a = _fit(model_path, tmp_path, "A", capsys, seed=1)
    x = _fit(other_model_path, tmp_path, "X", capsys, seed=2)
    for cmd in (["retarget", "-e", a, "-i", x, "-o", tmp_path / "r.ply"], ["interpolate", a, x, "-o", tmp_path / "i"]):
        code, _, err = run_cli(cmd, capsys)
        assert code == 2 and err.count("\n") == 1 and "codes from different models" in err, err
        assert str(model_path.resolve()) in err and str(other_model_path.resolve()) in err and "--model" in err
    assert not (tmp_path / "r.ply").exists() and not (tmp_path / "i").exists()


def test_unknown_model_without_key(model_path, tmp_path, capsys):
    a = _fit(model_path, tmp_path, "A", capsys, seed=1)
    doc = json.loads(a.read_text())
    del doc["model"]
    a.write_text(json.dumps(doc))
    code, _, err = run_cli(["retarget", "-e", a, "-i", a, "-o", tmp_path / "r.ply"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "records no model" in err and "pass --model" in err and doc["model_id"] in err


def test_explicit_model_still_checked(model_path, other_model_path, tmp_path, capsys):
    a = _fit(model_path, tmp_path, "A", capsys, seed=1)
    code, _, err = run_cli(["retarget", "-e", a, "-i", a, "-o", tmp_path / "r.ply", "-m", other_model_path], capsys)
    assert code == 2 and "another model" in err and f"pass --model {model_path.resolve()}" in err


def test_api_retarget_without_model(model_path, tmp_path, capsys):
    import fitface

    a = _fit(model_path, tmp_path, "A", capsys, seed=1)
    b = _fit(model_path, tmp_path, "B", capsys, seed=2)
    res = fitface.retarget(a, b)
    assert res.codes[0].model == str(model_path.resolve()) and np.isfinite(res.vertices).all()
