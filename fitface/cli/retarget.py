"""``fitface retarget --expression A/codes.json --identity B/codes.json -o out.ply``."""

from __future__ import annotations

import click


@click.command("retarget")
@click.option("-e", "--expression", required=True, type=click.Path(path_type=str),
              help="codes.json of the capture whose expression is taken (A).")
@click.option("-i", "--identity", required=True, type=click.Path(path_type=str),
              help="codes.json of the capture whose face receives it (B).")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="Mesh file to write (.ply, .obj, .off, .stl); <stem>.codes.json is written beside it.")
@click.option("-m", "--model", metavar="NAME|FILE", default=None,
              help="The model both codes come from (a built-in name or a file). Default: the model the codes "
                   "record (codes.json \"model\"), checked by model_id.")
@click.option("--mode", type=click.Choice(["replace", "add"]), default="replace", show_default=True,
              help="replace: G(z_id(B), z_exp(A), z_noise(B)); add: G(z_id(B), z_exp(A) + z_exp(B), z_noise(B)).")
@click.option("--model-frame", is_flag=True,
              help="Write the mesh in the model's frame and unit (default: B's capture frame and unit).")
@click.option("--json", "as_json", is_flag=True, help="Print the result's codes and files as JSON on stdout.")
def retarget(expression, identity, out, model, mode, model_frame, as_json):
    """Move the expression of capture A onto the face of capture B (supplement Fig. 7).

    Both codes files must come from the same model (their model_id); codes from another
    model are refused with a one-line error (exit code 2).
    """
    import json

    from fitface.api import retarget as run

    res = run(expression, identity, model=model, mode=mode, out=out, model_frame=model_frame)
    if as_json:
        c = res.codes[0]
        click.echo(json.dumps({"model_id": c.model_id, "unit": c.unit, "codes": c.codes, "transform": c.transform,
                               "mode": mode, "files": {k: str(v) for k, v in res.files.items()}}))
        return
    click.echo(f"wrote {res.files['mesh']} and {res.files['codes']} ({mode}, "
               f"{'model frame' if model_frame else 'identity capture frame'}, {res.codes[0].unit})")
