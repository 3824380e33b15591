"""``fitface data ict``: build the realistic training set from the ICT-FaceKit face model."""

from __future__ import annotations

import os

import click

#: Default worker processes: one per core, at most two.
DEFAULT_WORKERS = max(1, min(2, os.cpu_count() or 1))


@click.command("ict")
@click.argument("source", type=click.Path(path_type=str))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=str), help="Dataset folder to create.")
@click.option("--identities", default=300, show_default=True, type=click.IntRange(min=1), help="Number of identities.")
@click.option("--samples", default=30000, show_default=True, type=click.IntRange(min=1), help="Number of faces in total.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Random seed (same seed, same bytes).")
@click.option("--narrow", is_flag=True, help="Keep only the narrow face region (first 6,706 of 9,409 vertices).")
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset folder.")
@click.option(
    "--workers", default=DEFAULT_WORKERS, show_default=True, type=click.IntRange(min=0),
    help="Worker processes (0 = in this process). The output does not depend on it.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def ict(source, out_dir, identities, samples, seed, narrow, overwrite, workers, quiet):
    """Build the realistic training set from the ICT face model.

    \b
    SOURCE is a checkout of ICT-FaceKit (its FaceXModel/*.obj files) or the
    ict_face_light.npz extract of it. The dataset models the paper's data
    (§5.2), in millimetres:
      - identities: random N(0, 1) weights of the 100 identity modes;
      - identity-dependent expressions: every blendshape is moved onto every
        identity by deformation transfer (Sumner & Popovic 2004);
      - the seven basic emotions as FACS recipes over the blendshapes, with
        per-sample intensity and individual jitter;
      - a static part (some identities at each emotion's peak, fully labeled)
        and a motion part (neutral -> peak -> neutral sequences labeled at the
        first, peak and last frames; spontaneous random mixtures with one
        labeled neutral frame per identity): about 7% expression-labeled;
      - the generating coefficients per sample and the ibug68 landmark set.

    \b
    Example:
      fitface data ict ../ICT-FaceKit -o data/ict --identities 300 --samples 30000
    """
    from fitface.data.ict import build_ict_dataset

    result = build_ict_dataset(
        source, out_dir, identities=identities, samples=samples, seed=seed, narrow=narrow,
        overwrite=overwrite, workers=workers, progress=not quiet,
    )
    click.echo(
        f"wrote {result.path}: {result.num_samples} faces x {result.num_vertices} vertices (mm), "
        f"{100 * result.labeled_fraction:.1f}% expression-labeled, in {result.seconds:.1f} s"
    )
