"""``fitface data info DIR``: counts, label coverage per factor, unit and vertex count of a dataset."""

from __future__ import annotations

import click


@click.command("info")
@click.argument("dataset", type=click.Path(file_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object for scripts instead of a table.")
@click.option(
    "--no-scan",
    is_flag=True,
    help="Skip the NaN/inf scan of every sample (one full read of vertices.npy); other checks still run.",
)
def info(dataset: str, as_json: bool, no_scan: bool) -> None:
    """Validate and describe the dataset folder DATASET.

    \b
    Prints the number of samples, the vertex count and unit, the split sizes and, per
    factor (identity, expression, ...), the number of classes and the fraction of
    labeled samples. With --json prints
      {"samples": N, "vertices": V, "unit": "mm",
       "factors": {"identity": {"classes": K, "labeled_fraction": F}, ...}}
    A dataset that fails validation gives a one-line error and exit code 2.
    """
    import json

    from fitface.data.format import SPLITS, load_dataset, summary

    ds = load_dataset(dataset, mmap=True, check_values=not no_scan)
    s = summary(ds)
    if as_json:
        click.echo(json.dumps(s))
        return
    splits = ", ".join(f"{k} {int((ds.split == k).sum())}" for k in SPLITS)
    click.echo(f"dataset   {ds.path}")
    click.echo(f"samples   {s['samples']}  ({splits})")
    click.echo(f"vertices  {s['vertices']}  faces {len(ds.faces)}  unit {s['unit']}")
    width = max(len(n) for n in s["factors"])
    for name, f in s["factors"].items():
        labeled = int((ds.label(name) >= 0).sum())
        click.echo(
            f"factor    {name:<{width}}  {f['classes']:>5} classes  labeled {labeled}/{s['samples']}"
            f" ({100 * f['labeled_fraction']:.1f}%)"
        )
    if ds.coefficients:
        dims = ", ".join(f"{k} {v.shape[1]}" for k, v in ds.coefficients.items())
        click.echo(f"coefficients  {dims}")
    if ds.landmark_sets:
        click.echo("landmarks " + ", ".join(f"{k} ({len(v)})" for k, v in ds.landmark_sets.items()))
    if ds.extras:
        click.echo("extras    " + ", ".join(ds.extras))
    builder = ds.info.get("builder")
    if builder:
        click.echo(f"builder   {builder}")
    click.echo(f"fingerprint {ds.fingerprint}")
