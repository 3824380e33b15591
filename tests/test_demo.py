"""The README's first command runs `fitface demo`; this runs its Python equivalent."""

from __future__ import annotations

import json

import numpy as np

from fitface.cli import main
from fitface.io.image import read_image


def test_demo_writes_pictures_meshes_and_summary(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out)]) == 0
    summary = json.loads((out / "demo.json").read_text())
    assert summary["unit"] == "mm"
    assert summary["stats"]["uv_flips"] == 0
    assert summary["stats"]["geometry_image_coverage"] > 0.8
    sheet = read_image(out / "contact_sheet.png")
    assert sheet.shape[0] > 256 and sheet.std() > 10  # a real picture, not a blank one
    assert len(list((out / "meshes").glob("*.ply"))) == 12
    gimg = np.load(out / "geometry_images.npy")
    assert gimg.shape == (12, 3, 64, 64) and np.isfinite(gimg).all()
    # identities differ and expressions differ: geometry images are not all the same
    assert np.abs(gimg[1] - gimg[0]).max() > 1.0 and np.abs(gimg[4] - gimg[0]).max() > 1.0
