"""``fitface demo``: fit a held-out capture and retarget its expression, with ground truth."""

from __future__ import annotations

import click


@click.command()
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), default="fitface-demo",
              show_default=True, help="Folder for the demo's captures, fits and pictures.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Procedural demo: seed of the subjects and scanner poses.")
@click.option("--expression", default=None,
              help="Subject A's expression. Real faces: mouth_extreme (default) or high_smile; procedural: "
                   "neutral, anger, disgust, fear, happiness, sadness, surprise (default).")
@click.option("-m", "--model", metavar="NAME|FILE", default=None,
              help="ict or ict-linear: real faces; procedural: procedural faces. Default: the default built-in "
                   "model (procedural when it is not installed).")
def demo(out_dir: str, seed: int, expression: str | None, model: str | None):
    """Fit a held-out capture, retarget its expression, and compare with the truth.

    \b
    Two captures the model has never seen, each a partial noisy scan + 68
    landmarks in metres in a rotated scanner frame: A with an expression, B
    neutral. With an ICT model (--model ict, ict-linear) they are held-out
    ICT-FaceKit people shipped with fitface; with the procedural model they
    are built from the project's procedural faces. Fits A (landmarks + robust
    surface refinement) and B (landmarks only), retargets A's expression onto
    B, and reports each result's RMS error against the ground truth in mm,
    beside not transferring the expression at all (no_transfer).
    Open OUT/contact_sheet.png first.
    """
    from fitface.demo import run_demo

    res = run_demo(out_dir, seed=seed, expression=expression, model=model,
                   progress=lambda msg: click.echo(msg, err=True))
    click.echo(f"demo ({res.faces} faces, model {res.model}, A: {res.expression}) finished in {res.seconds:.1f} s; "
               f"errors against the ground truth (RMS over vertices):")
    for name, err in res.errors_mm.items():
        click.echo(f"  {name:12s} {err:6.2f} mm")
    click.echo(f"files in {res.out_dir}/:")
    for name, path in res.files.items():
        click.echo(f"  {name:14s} {path}")
