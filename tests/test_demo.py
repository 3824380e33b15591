"""The README's first command runs `fitface demo`; this runs its Python equivalent with the
built-in model and checks what a newcomer is told and shown."""

from __future__ import annotations

import json

import numpy as np

from fitface.cli import main
from fitface.io.image import read_image
from fitface.io.mesh import load_mesh

#: The demo's fits must beat this RMS error to the truth (mm): the procedural faces' own spread
#: (training-set diversity ~5.6 mm) - a fit worse than that has learned nothing about the capture.
DEMO_FIT_RMS_MM = 5.0


def test_demo_fits_retargets_and_reports_errors(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "errors against the ground truth" in printed and "contact_sheet" in printed
    summary = json.loads((out / "demo.json").read_text())
    err = summary["errors_rms_mm"]
    assert summary["unit"] == "mm" and set(err) == {"fit_A", "fit_B", "retarget", "no_transfer"}
    assert all(np.isfinite(v) for v in err.values())
    assert err["fit_A"] < DEMO_FIT_RMS_MM and err["fit_B"] < DEMO_FIT_RMS_MM
    # captures are in metres in a scanner frame; the fit comes back in that frame and unit
    scan = load_mesh(out / "captures" / "A_scan.ply")
    fit = load_mesh(out / "fit_A" / "fit.ply")
    assert 0.05 < np.ptp(scan.vertices[:, 1]) < 0.5 and 0.05 < np.ptp(fit.vertices[:, 1]) < 0.5
    assert np.linalg.norm(fit.vertices.mean(0) - scan.vertices.mean(0)) < 0.03  # same place, metres
    codes = json.loads((out / "fit_A" / "codes.json").read_text())
    assert codes["unit"] == "m" and {"identity", "expression", "noise"} <= set(codes["codes"])
    assert "surface" in codes  # A was refined against its scan
    assert (out / "retarget" / "A_expression_on_B.ply").is_file()
    sheet = read_image(out / "contact_sheet.png")
    assert sheet.shape[0] > 512 and sheet.std() > 10  # a real picture, not a blank one
