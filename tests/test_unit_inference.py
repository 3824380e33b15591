"""Units are inferred, not assumed: a capture whose landmarks state no unit gets m, cm or mm from
its size against the model (fitface.units.infer_unit, fitface.api.inputs.infer_capture_unit);
a size that fits none warns in one line and keeps the model's unit."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from input_checks import run_cli
from model_builders import synthetic_capture

import fitface
from fitface.errors import FitfaceWarning
from fitface.units import INFER_TOLERANCE, MM_PER_UNIT, infer_unit, nominal_scale

#: Landmark RMS (mm) an exact synthetic capture must be fitted to (as tests/test_api_fit.py).
EXACT_FIT_RMS_MM = 0.3


# ---------------------------------------------------------------------------- the rule
@pytest.mark.parametrize("unit, nominal", [("m", 1e-3), ("cm", 0.1), ("mm", 1.0)])
def test_bands_around_each_units_nominal_scale(unit, nominal):
    assert nominal_scale(unit, "mm") == pytest.approx(nominal)
    for f in (1.0, 0.7, 1.4, 1 / 1.59, 1.59):  # faces from 0.63x to 1.6x the model's size
        assert infer_unit(nominal * f, "mm") == unit
    for f in (1.7, 1 / 1.7, 3.0):  # outside the band: refused, never misread
        assert infer_unit(nominal * f, "mm") is None


def test_gaps_inches_and_other_model_units():
    assert infer_unit(0.03, "mm") is None and infer_unit(0.01, "mm") is None  # between m and cm
    assert infer_unit(1 / 25.4, "mm") is None  # inches are never inferred (pass --unit in)
    assert infer_unit(1000.0, "m") == "mm" and infer_unit(1.0, "m") == "m" and infer_unit(10.0, "cm") == "mm"
    assert INFER_TOLERANCE ** 2 < 10  # the bands of cm and mm (10x apart) cannot overlap
    with pytest.raises(ValueError):
        infer_unit(0.0, "mm")
    with pytest.raises(ValueError):
        infer_unit(1.0, "mm", tolerance=1.0)


# ---------------------------------------------------------------------------- fits
@pytest.mark.parametrize("unit", ["m", "cm", "mm"])
def test_fit_infers_m_cm_mm(model_path, tmp_path, unit):
    from fitface.io.landmarks import save_landmarks

    scale = 1.0 / MM_PER_UNIT[unit]
    _, _, lm, _, _ = synthetic_capture(model_path, seed=11, scale=scale)
    save_landmarks(tmp_path / "cap.txt", lm)  # plain x y z: no unit stated
    with warnings.catch_warnings():
        warnings.simplefilter("error", FitfaceWarning)  # no warning when the unit is inferred
        res = fitface.fit(tmp_path / "cap.txt", model=model_path)
    assert res.unit == unit and res.codes.extra["unit_source"] == "inferred"
    assert res.codes.transform["scale"] == pytest.approx(scale, rel=0.05)  # model mm -> capture unit
    assert res.landmark_rms * MM_PER_UNIT[unit] < EXACT_FIT_RMS_MM  # residuals in the capture's unit
    assert res.codes.extra["unit_inference"]["size_scale"] == pytest.approx(scale, rel=INFER_TOLERANCE - 1)


def test_cli_reports_residuals_in_the_inferred_unit(model_path, tmp_path, capsys):
    """The issue's case: 68 landmarks in metres, no --unit, used to print '... mm, scale 0.000917'."""
    from fitface.io.landmarks import save_landmarks

    _, _, lm, _, _ = synthetic_capture(model_path, seed=12, scale=1e-3)
    save_landmarks(tmp_path / "lm.txt", lm)
    code, out, err = run_cli(["fit", "-l", tmp_path / "lm.txt", "-m", model_path, "-o", tmp_path / "o",
                              "--no-preview"], capsys)
    assert code == 0 and err == "", err
    rms = float(out.split("landmark RMS ")[1].split()[0])
    assert " m, scale " in out and rms < EXACT_FIT_RMS_MM / 1000.0
    doc = json.loads((tmp_path / "o" / "codes.json").read_text())
    assert doc["unit"] == "m" and doc["unit_source"] == "inferred"
    assert np.sqrt(np.mean(np.sum(np.square(doc["landmark_residuals"]), axis=1))) == pytest.approx(rms, rel=1e-3)


def test_a_size_that_fits_no_unit_warns_once_and_keeps_the_model_unit(model_path, tmp_path, capsys):
    from fitface.io.landmarks import save_landmarks

    _, _, lm, _, _ = synthetic_capture(model_path, seed=13, scale=0.03)  # 30x smaller than mm: no unit
    save_landmarks(tmp_path / "odd.txt", lm)
    code, out, err = run_cli(["fit", "-l", tmp_path / "odd.txt", "-m", model_path, "-o", tmp_path / "o",
                              "--no-preview", "--steps", "30"], capsys)
    assert code == 0
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and str(tmp_path / "odd.txt") in lines[0]
    assert "cannot infer" in lines[0] and "--unit" in lines[0] and "assuming mm" in lines[0]
    doc = json.loads((tmp_path / "o" / "codes.json").read_text())
    assert doc["unit"] == "mm" and doc["unit_source"] == "assumed"
    with pytest.warns(FitfaceWarning, match="cannot infer"):
        fitface.fit(lm, model=model_path, steps=5)


def test_given_units_are_not_second_guessed(model_path, tmp_path):
    from fitface.io.landmarks import save_landmarks

    _, _, lm, _, _ = synthetic_capture(model_path, seed=14, scale=1e-3)
    save_landmarks(tmp_path / "cap.json", lm, unit="m")
    assert fitface.fit(tmp_path / "cap.json", model=model_path, steps=5).codes.extra["unit_source"] == "file"
    res = fitface.fit(lm, model=model_path, unit="cm", steps=5)  # wrong, but given: kept, no inference
    assert res.unit == "cm" and res.codes.extra["unit_source"] == "argument"
    assert "unit_inference" not in res.codes.extra


def test_batch_infers_per_capture(model_path, tmp_path):
    from fitface.io.landmarks import save_landmarks

    caps = tmp_path / "caps"
    for name, scale in (("a_m", 1e-3), ("b_cm", 0.1), ("c_mm", 1.0)):
        _, _, lm, _, _ = synthetic_capture(model_path, seed=15, scale=scale)
        save_landmarks(caps / f"{name}.txt", lm)
    # 150 steps: the rows start from different random codes; at 60 they had not converged alike
    res = fitface.fit_batch(caps, model=model_path, steps=150)
    got = {r.name: (r.unit, r.codes.extra["unit_source"]) for r in res.results}
    assert got == {"a_m": ("m", "inferred"), "b_cm": ("cm", "inferred"), "c_mm": ("mm", "inferred")}
    rms_mm = [r.landmark_rms * MM_PER_UNIT[r.unit] for r in res.results]
    assert max(rms_mm) / min(rms_mm) < 1.25  # the same face fitted alike in every unit
    # an inferred unit is trusted: the model -> capture scale is the unit's, not fitted
    for r in res.results:
        assert r.codes.extra["scale_source"] == "unit"
        assert r.transform.scale[0] == pytest.approx(MM_PER_UNIT["mm"] / MM_PER_UNIT[r.unit], rel=1e-12)
