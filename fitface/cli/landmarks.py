"""``fitface landmarks``: manage the landmark sets stored in a model file."""

from __future__ import annotations

import click

from fitface.cli.landmarks_mediapipe import mediapipe


@click.group("landmarks")
def landmarks():
    """Manage the landmark sets of a model file."""


landmarks.add_command(mediapipe)


@landmarks.command("add")
@click.argument("model", metavar="MODEL")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Write the new model here instead of replacing MODEL.")
@click.option("--replace", is_flag=True, help="Overwrite an existing set of that name.")
def add(model, name, file, out, replace):
    """Add landmark set NAME from FILE to the model file MODEL (atomically).

    \b
    FILE lists the set's points in landmark-file order, either
      vertex indices: one per line, or a JSON list [12, 345, ...]
      surface points: rows "f a b c" (triangle, barycentrics), or
                      JSON [{"face": f, "bary": [a, b, c]}, ...]
    Points are validated against the model's mesh. The model file changes, so its
    model_id (a hash of the file) changes too: codes fitted with the old file are then
    refused with the new one (refit, or keep the old file for them). MODEL is a file or a
    built-in model's name; a built-in model is never changed in place (pass -o FILE).
    """
    from fitface.api import add_landmark_set

    new_id = add_landmark_set(model, name, file, out=out, replace=replace)
    click.echo(f"added landmark set {name!r} to {out or model} (new model_id {new_id})")


@landmarks.command("list")
@click.argument("model", metavar="MODEL")
def list_(model):
    """List the landmark sets of MODEL (a file or a built-in name): name and number of points."""
    from fitface.api import load_fit_model

    dec = load_fit_model(model)
    for name, lset in dec.landmark_sets.items():
        click.echo(f"{name}\t{len(lset)}")
