"""The end-to-end demo behind ``fitface demo``.

Until the fitting pipeline and the built-in model land, the demo exercises the geometry
core on the project's own procedural faces: it builds faces of several identities and
emotions, computes the harmonic UV map of the template (paper §5.1), maps every face to
the 64x64 geometry image the discriminator sees (§4.1, eq. 5), renders shaded and
normal-map views, and writes meshes, geometry images and a contact sheet.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Emotions shown by the demo, by index into fitface.data.emotions.EMOTIONS.
DEMO_EMOTIONS = (0, 4, 6, 1)


@dataclass
class DemoResult:
    """Where the demo wrote its files, and what it measured.

    Attributes:
        out_dir: the output folder.
        files: name -> path of every file written.
        stats: measured numbers (vertex count, UV flips, geometry-image coverage, timings).
    """

    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)


def _geometry_image_rgb(image: np.ndarray) -> np.ndarray:
    """(3, n, n) float geometry image -> (n, n, 3) uint8, each channel min-max scaled."""
    lo = image.reshape(3, -1).min(axis=1)[:, None, None]
    hi = image.reshape(3, -1).max(axis=1)[:, None, None]
    scaled = (image - lo) / np.maximum(hi - lo, 1e-12)
    return (np.transpose(scaled, (1, 2, 0)) * 255).round().astype(np.uint8)


def run_demo(out_dir: str | Path, seed: int = 0, size: int = 256, progress=print) -> DemoResult:
    """Run the geometry demo and write its files into ``out_dir``.

    Args:
        out_dir: output folder (created).
        seed: seed of the identities drawn.
        size: side of the rendered pictures in pixels.
        progress: called with one line of text per stage (``print`` by default).

    Returns:
        A :class:`DemoResult` naming every file written.
    """
    import cv2
    import torch

    from fitface.data.emotions import EMOTIONS
    from fitface.data.procedural import (
        NUM_IDENTITY_PARAMS,
        apply_actions,
        neutral_faces,
        recipe_matrix,
        template_mesh,
    )
    from fitface.geometry.camera import frame_mesh
    from fitface.geometry.mapping import GeometryMapping
    from fitface.geometry.parameterization import harmonic_uv
    from fitface.geometry.render import render_normals, render_shaded, tile_images
    from fitface.io.image import write_png
    from fitface.io.mesh import save_mesh

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = DemoResult(out)
    t0 = time.perf_counter()

    tpl = template_mesh()
    faces = tpl.faces
    rng = np.random.default_rng(seed)
    params = rng.standard_normal((3, NUM_IDENTITY_PARAMS))  # (3 identities, P)
    neutral = neutral_faces(params)  # (3, V, 3) mm
    recipes = recipe_matrix()  # (7, A)
    # (3 identities x 4 emotions, V, 3) mm
    faces_mm = np.concatenate(
        [apply_actions(neutral, params, np.repeat(recipes[[e]], 3, axis=0)) for e in DEMO_EMOTIONS]
    ).reshape(len(DEMO_EMOTIONS), 3, -1, 3).transpose(1, 0, 2, 3).reshape(-1, neutral.shape[1], 3)
    progress(f"built {len(faces_mm)} procedural faces ({neutral.shape[1]} vertices, mm)")

    uvr = harmonic_uv(neutral[0], faces, what="demo template")
    result.stats.update(vertices=float(neutral.shape[1]), uv_flips=float(uvr.flipped))
    progress(f"harmonic UV: {uvr.weights} weights, {uvr.flipped} flipped triangles")

    mapping = GeometryMapping(uvr.uv, faces, size=64)
    gimg = mapping(torch.from_numpy(faces_mm).float()).numpy()  # (12, 3, 64, 64) mm
    result.stats["geometry_image_coverage"] = float(mapping.coverage)
    progress(f"geometry images: {gimg.shape[0]} x 3x64x64, UV coverage {mapping.coverage:.3f}")

    cam = frame_mesh(faces_mm.reshape(-1, 3), size=size)  # one camera frames every face
    cam_side = frame_mesh(faces_mm.reshape(-1, 3), size=size, yaw=35.0)
    shaded, normals, side, geo = [], [], [], []
    for k, verts in enumerate(faces_mm):
        shaded.append(render_shaded(verts, faces, size=size, camera=cam).image)
        side.append(render_shaded(verts, faces, size=size, camera=cam_side).image)
        normals.append(render_normals(verts, faces, size=size, camera=cam).image)
        geo.append(cv2.resize(_geometry_image_rgb(gimg[k]), (size, size), interpolation=cv2.INTER_NEAREST))
    labels = [f"id {i} {EMOTIONS[e]}" for i in range(3) for e in DEMO_EMOTIONS]
    ncols = len(DEMO_EMOTIONS)
    sheets = {
        "shaded": tile_images(shaded, labels, ncols=ncols),
        "side": tile_images(side, labels, ncols=ncols),
        "normals": tile_images(normals, labels, ncols=ncols),
        "geometry_images": tile_images(geo, labels, ncols=ncols),
    }
    for name, img in sheets.items():
        path = out / f"{name}.png"
        write_png(path, img)
        result.files[name] = path
    contact = tile_images([sheets["shaded"], sheets["geometry_images"]], ["shaded", "geometry images"], ncols=2)
    write_png(out / "contact_sheet.png", contact)
    result.files["contact_sheet"] = out / "contact_sheet.png"

    mesh_dir = out / "meshes"
    for k, verts in enumerate(faces_mm):
        path = mesh_dir / f"{labels[k].replace(' ', '_')}.ply"
        save_mesh(path, verts, faces)
    result.files["meshes"] = mesh_dir
    np_path = out / "geometry_images.npy"
    np.save(np_path, gimg.astype(np.float32))
    result.files["geometry_images_npy"] = np_path
    result.stats["seconds"] = time.perf_counter() - t0
    (out / "demo.json").write_text(
        json.dumps({"unit": "mm", "stats": result.stats, "files": {k: str(v) for k, v in result.files.items()}}, indent=2)
    )
    result.files["summary"] = out / "demo.json"
    return result
