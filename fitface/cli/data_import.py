"""``fitface data import MESH_DIR --labels CSV -o DIR``: registered meshes + labels -> a dataset."""

from __future__ import annotations

import click

from fitface.units import UNITS


def _fractions(ctx, param, value):
    if value is None:
        return None
    try:
        parts = [float(x) for x in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected three numbers TRAIN,VAL,TEST, got {value!r}") from None
    if len(parts) != 3 or any(p < 0 for p in parts) or abs(sum(parts) - 1.0) > 1e-6:
        raise click.BadParameter(f"expected three non-negative numbers summing to 1, got {value!r}")
    return tuple(parts)


@click.command("import")
@click.argument("mesh_dir", type=click.Path(file_okay=False, path_type=str))
@click.option(
    "--labels",
    "labels_csv",
    required=True,
    type=click.Path(dir_okay=False, path_type=str),
    help="CSV with a header: file,identity,expression[,more factors]. Empty cell or '-' = unlabeled.",
)
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=str), help="Dataset folder to create.")
@click.option(
    "--template",
    type=click.Path(dir_okay=False, path_type=str),
    default=None,
    help="Mesh defining the topology and alignment target [default: the first mesh that loads].",
)
@click.option("--align/--no-align", default=False, show_default=True, help="Rigidly align each mesh onto the template (Procrustes).")
@click.option("--scale/--no-scale", default=False, show_default=True, help="With --align, also fit a uniform scale.")
@click.option("--unit", type=click.Choice(UNITS), default="mm", show_default=True, help="Unit the meshes are in (not converted).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the identity split.")
@click.option(
    "--split",
    "split_fractions",
    default="0.8,0.1,0.1",
    show_default=True,
    callback=_fractions,
    help="Fractions of identities in train,val,test.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset at -o.")
def import_(mesh_dir, labels_csv, out_dir, template, align, scale, unit, seed, split_fractions, overwrite) -> None:
    """Import the registered meshes of MESH_DIR into a fitface dataset.

    \b
    MESH_DIR holds meshes in correspondence (same vertex count and triangles), in any
    format trimesh reads (.obj, .ply, .off, .stl, ...). The labels CSV names each file
    (relative to MESH_DIR) with its identity and expression, e.g.
      file,identity,expression
      s01_neutral.obj,s01,neutral
      s01_smile.obj,s01,happiness
    Further columns become more factors (e.g. viseme). Identities are split into
    train/val/test (whole identities, deterministic with --seed).

    A file that is missing, unreadable, has another topology or NaN is skipped and
    listed in the summary at the end ("imported N, skipped K"). Exit code 0 when at
    least one mesh was imported, 2 when none (nothing is written).
    """
    from fitface.data.importer import import_meshes
    from fitface.errors import InputError

    report = import_meshes(
        mesh_dir,
        labels_csv,
        out_dir,
        template=template,
        align=align,
        scale=scale,
        unit=unit,
        seed=seed,
        split_fractions=split_fractions,
        overwrite=overwrite,
        progress=None,
    )
    for line in report.lines():
        click.echo(line, err=True)
    if report.out_dir is None:
        raise InputError(f"no mesh imported ({len(report.skipped)} skipped); nothing written")
    splits = ", ".join(f"{k} {v}" for k, v in report.split_counts.items())
    click.echo(f"wrote {report.out_dir} ({splits})")
