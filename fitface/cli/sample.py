"""``fitface sample`` and ``fitface interpolate``: latent-space manipulation (paper Fig. 3, supplement Fig. 6)."""

from __future__ import annotations

import click

_FORMATS = ("ply", "obj", "off", "stl")


@click.command("sample")
@click.option("-n", "--num", "n", type=click.IntRange(min=1), default=8, show_default=True, help="Number of faces.")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Output folder: sample_000.ply (+ .codes.json) ... and samples.png.")
@click.option("-m", "--model", metavar="NAME|FILE", default=None,
              help="A built-in model (see `fitface models`) or a model file. Default: the default built-in model.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--fix", multiple=True, metavar="FACTOR=CODES.json",
              help="Use a fitted code for a factor in every sample, e.g. --fix identity=A/codes.json. Repeatable.")
@click.option("--shared", multiple=True, metavar="FACTOR",
              help="Draw this factor once and share it across samples (e.g. --shared identity: one face, "
                   "random expressions, as the paper's Fig. 3). Repeatable.")
@click.option("--format", "fmt", type=click.Choice(_FORMATS, case_sensitive=False), default="ply", show_default=True)
@click.option("--no-picture", is_flag=True, help="Do not write samples.png.")
def sample(n, out_dir, model, seed, fix, shared, fmt, no_picture):
    """Draw N random faces G(z), z ~ N(0, I), in the model's frame and unit."""
    from fitface.api import sample as run

    res = run(n, model=model, seed=seed, fix=list(fix), shared=list(shared), out_dir=out_dir, format=fmt,
              picture=not no_picture)
    click.echo(f"wrote {n} samples to {out_dir}")
    return res


@click.command("interpolate")
@click.argument("code_a", type=click.Path(path_type=str))
@click.argument("code_b", type=click.Path(path_type=str))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Output folder: interp_00.ply (+ .codes.json) ... and strip.png.")
@click.option("-m", "--model", metavar="NAME|FILE", default=None,
              help="The model both codes come from (a built-in name or a file). Default: the model the codes "
                   "record (codes.json \"model\"), checked by model_id.")
@click.option("--steps", type=click.IntRange(min=2), default=7, show_default=True, help="Number of meshes.")
@click.option("--factor", "factors", multiple=True, metavar="FACTOR",
              help="Interpolate only this block (e.g. expression); others stay at CODE_A's. Repeatable. "
                   "Default: the whole latent code.")
@click.option("--range", "range_", nargs=2, type=float, default=(0.0, 1.0), show_default=True,
              help="t from .. to (0 = CODE_A, 1 = CODE_B); e.g. --range -0.5 1.5 extrapolates.")
@click.option("--format", "fmt", type=click.Choice(_FORMATS, case_sensitive=False), default="ply", show_default=True)
@click.option("--no-picture", is_flag=True, help="Do not write strip.png.")
def interpolate(code_a, code_b, out_dir, model, steps, factors, range_, fmt, no_picture):
    """Interpolate / extrapolate between two codes.json files (supplement Fig. 6), model frame and unit."""
    from fitface.api import interpolate as run

    run(code_a, code_b, model=model, steps=steps, factors=list(factors) or None, range_=tuple(range_),
        out_dir=out_dir, format=fmt, picture=not no_picture)
    click.echo(f"wrote {steps} meshes to {out_dir}")
