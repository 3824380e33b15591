"""``fitface models [--json]``: the built-in models, installed or not."""

from __future__ import annotations

import click


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list (one object per model) on stdout.")
def models(as_json):
    """List the built-in models: pass a NAME as --model NAME to any command.

    \b
    For each: installed or not, the default, unit, vertices, landmark sets, training
    budget (GAN steps and recipe, or "linear 3DMM from N identities"), licence, file
    size and path. Reads only the files' headers.
    """
    import json

    from fitface.models.registry import list_models

    entries = list_models()
    if as_json:
        click.echo(json.dumps(entries, indent=1))
        return
    for e in entries:
        flag = " (default)" if e["default"] else ""
        if not e["installed"]:
            click.echo(f"{e['name']}{flag}: not installed - {e['summary']}")
            click.echo(f"  expected at {e['path']}; licence {e['licence']}")
            continue
        sets = ", ".join(e["landmark_sets"]) or "none"
        click.echo(f"{e['name']}{flag}: installed - {e['summary']}")
        click.echo(f"  {e['kind']}, unit {e['unit']}, {e['vertices']:,} vertices, landmark sets {sets}")
        click.echo(f"  training: {e['budget']}")
        click.echo(f"  licence {e['licence']}")
        click.echo(f"  {e['size_mib']:.1f} MiB, model_id {e['model_id']}, {e['path']}")
