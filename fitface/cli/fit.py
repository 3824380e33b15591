"""``fitface fit [SCAN] --landmarks LM -o OUT_DIR``: fit the model to one capture.

Only click is imported at module level; the command imports the numpy fitting path lazily
(never torch or trimesh), so one fit runs end to end in well under two seconds.
"""

from __future__ import annotations

import click

_FORMATS = ("ply", "obj", "off", "stl")


def fit_options(f):
    """Options shared by ``fit`` and ``batch`` (same names, same meaning)."""
    options = [
        click.option("-m", "--model", metavar="NAME|FILE", default=None,
                     help="A built-in model (procedural, ict, ict-linear; see `fitface models`) or a model "
                          "file (.safetensors). Default: the default built-in model."),
        click.option("--lambda", "lam", type=float, default=None,
                     help="Weight of the latent regulariser lambda*||z||^2 (paper eq. 13; Table 2 uses 0, 0.01, "
                          "10), against squared residuals in the model unit. Default 1 for 3D landmarks, "
                          "30 for photos (mediapipe points are noisier)."),
        click.option("--steps", type=click.IntRange(min=0), default=None,
                     help="Optimiser steps (default: the engine's, 400)."),
        click.option("--restarts", type=click.IntRange(min=1), default=None,
                     help="Random initial codes per capture; the best fit is kept (default 1, as the paper)."),
        click.option("--landmark-set", default=None,
                     help="Landmark set of the model (default: the one with as many points as the file)."),
        click.option("--unit", default=None,
                     help="The capture's unit (mm, cm, m, in). Default: the landmark file's stated unit, else "
                          "inferred from the landmarks' size against the model (m, cm or mm within a factor "
                          "1.6; otherwise a warning and the model's unit)."),
        click.option("--scale", "scale", type=click.Choice(["auto", "unit", "free"]), default="auto",
                     show_default=True,
                     help="The model-to-capture scale: auto = the unit's where the unit is given or stated "
                          "in the file; where it is only inferred, the unit's unless a fitted scale explains "
                          "the landmarks clearly better (objective < 0.6x, scale off by > 5%: then fitted, "
                          "with a warning; codes.json: scale_source \"fitted (scale mismatch)\"); fitted where "
                          "the unit is only assumed; unit = always the unit's (a rigid fit); free = always "
                          "fitted (a similarity). A known unit fixes the face's size, so its fit leaves size "
                          "to the identity code (codes.json: scale_source)."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the initial codes."),
        click.option("--refine-surface", is_flag=True,
                     help="After the landmark fit, refine against the scan with a robust point-to-surface term."),
        click.option("--freeze", multiple=True, metavar="FACTOR=CODES.json",
                     help="Keep a factor's code fixed to another fit's (same model), e.g. "
                          "--freeze identity=A/codes.json. Repeatable."),
        click.option("--format", "fmt", type=click.Choice(_FORMATS, case_sensitive=False), default=None,
                     help="Mesh format of the result (default: the scan's, else ply)."),
        click.option("--all", "all_faces", is_flag=True,
                     help="Photos: one result per detected face (default: the largest face only)."),
        click.option("--depth", type=click.Choice(["2d", "3d"]), default=None,
                     help="Photos: fit mediapipe's x, y through an orthographic projection (2d, the default), or "
                          "also its relative depth under weak perspective (3d; depth is less reliable)."),
        click.option("--mediapipe-model", type=click.Path(dir_okay=False, path_type=str), default=None,
                     help="Photos: mediapipe FaceLandmarker .task file, for releases without the bundled model."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


@click.command("fit")
@click.argument("scan", required=False, type=click.Path(path_type=str))
@click.option("-l", "--landmarks", default=None, type=click.Path(path_type=str),
              help="3D landmark file (txt, xyz, lm, csv, json, npy, pts, pp), in the landmark set's order. "
                   "Not taken with a photo as SCAN (mediapipe finds its points).")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Output folder (created).")
@fit_options
@click.option("--no-preview", is_flag=True, help="Do not write preview.png.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary (codes.json + files) as JSON on stdout.")
def fit(scan, landmarks, out_dir, model, lam, steps, restarts, landmark_set, unit, scale, seed, refine_surface,
        freeze, fmt, all_faces, depth, mediapipe_model, no_preview, as_json):
    """Fit the face model to one capture's 3D landmarks (and optionally its SCAN), or to a photo.

    \b
    The capture may be in any frame and unit: a rigid transform (with the unit's scale;
    a similarity where the unit is unknown or with --scale free; Umeyama from the
    landmarks, refined jointly with the latent code) is estimated and every result is
    written in the capture's own frame and unit. SCAN may be omitted (landmarks alone).
    Writes into OUT_DIR:
      fit.ply      the fitted mesh (the scan's format, or --format)
      codes.json   model_id, model (built-in name or file), codes per factor,
                   transform, lambda, unit (+ unit_source: argument, file,
                   inferred or assumed; scale_source: unit, fitted
                   or "fitted (scale mismatch)"),
                   landmark_residuals and landmark_rms
                   (capture unit), surface distances
      preview.png  shaded fit with targets and residuals coloured
    A photo (jpg, png, ...) as SCAN is lifted with mediapipe's face mesh and fitted
    through the model's "mediapipe" landmark set (results in the photo's pixel frame;
    with --all, OUT_DIR/face<k>/ per face). --freeze works for photos too; --landmarks,
    --unit and --refine-surface do not apply to a photo, and --depth, --all and
    --mediapipe-model only to photos: they are refused (exit code 2).
    Exit codes: 0 fitted; 2 bad input (a one-line error; nothing is written);
    3 no face in the photo.
    """
    import json
    import sys

    from fitface.api import fit as run_fit

    res = run_fit(landmarks, scan, model=model, lam=lam, steps=steps, restarts=restarts, landmark_set=landmark_set,
                  unit=unit, scale=scale, seed=seed, refine_surface=refine_surface, freeze=list(freeze), out_dir=out_dir,
                  format=fmt, preview=not no_preview, depth=depth, all_faces=all_faces,
                  mediapipe_model=mediapipe_model)
    results = res if isinstance(res, list) else [res]
    if as_json:
        sys.stdout.write(json.dumps([r.summary() for r in results] if isinstance(res, list) else res.summary()) + "\n")
        return
    from fitface.cli.view import view_hint

    for r in results:
        click.echo(f"{describe_fit(r)}; wrote {', '.join(str(p) for p in r.files.values())}")
        click.echo(view_hint(r.files["codes"].parent))


def describe_fit(r) -> str:
    """``NAME: landmark RMS ... UNIT[, surface median ...], scale ...`` of one fit (a photo's in px)."""
    if r.photo is not None:
        return (f"{r.name}: landmark RMS {r.landmark_rms:.4g} px, scale {r.codes.transform['scale']:.4g} "
                f"px/{r.codes.extra.get('model_unit')}")
    surf = r.codes.extra.get("surface")
    extra = f", surface median {surf['median']:.4g} {r.unit}" if surf and "median" in surf else ""
    return f"{r.name}: landmark RMS {r.landmark_rms:.4g} {r.unit}{extra}, scale {r.codes.transform['scale']:.4g}"
