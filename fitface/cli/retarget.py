"""``fitface retarget --expression A/codes.json --identity B/codes.json -o out.ply``, and for a tracked
sequence ``fitface retarget --expression OUT/codes.npz --identity B/codes.json -o ANIM_DIR``."""

from __future__ import annotations

import click


@click.command("retarget")
@click.option("-e", "--expression", required=True, type=click.Path(path_type=str),
              help="codes.json of the capture whose expression is taken (A), or a tracked sequence's codes.npz "
                   "(fitface track).")
@click.option("-i", "--identity", required=True, type=click.Path(path_type=str),
              help="codes.json of the capture whose face receives it (B).")
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=str),
              help="Mesh file to write (.ply, .obj, .off, .stl); <stem>.codes.json is written beside it. For a "
                   "sequence: the folder ANIM_DIR (vertices.npy, faces.npy, retarget.json, preview.mp4).")
@click.option("-m", "--model", metavar="NAME|FILE", default=None,
              help="The model both codes come from (a built-in name or a file). Default: the model the codes "
                   "record (codes.json \"model\"), checked by model_id.")
@click.option("--mode", type=click.Choice(["replace", "add"]), default="replace", show_default=True,
              help="replace: G(z_id(B), z_exp(A), z_noise(B)); add: G(z_id(B), z_exp(A) + z_exp(B), z_noise(B)).")
@click.option("--model-frame", is_flag=True,
              help="Write the mesh in the model's frame and unit (default: B's capture frame and unit).")
@click.option("--ply", is_flag=True, help="Sequence: also write one PLY per frame (ANIM_DIR/frames/).")
@click.option("--no-preview", is_flag=True, help="Sequence: do not write preview.mp4.")
@click.option("--json", "as_json", is_flag=True, help="Print the result's codes and files as JSON on stdout.")
def retarget(expression, identity, out, model, mode, model_frame, ply, no_preview, as_json):
    """Move the expression of capture A onto the face of capture B (supplement Fig. 7).

    Both codes files must come from the same model (their model_id); codes from another
    model are refused with a one-line error (exit code 2).

    \b
    With a tracked sequence's codes.npz (`fitface track`) as --expression, B performs
    every frame's expression; -o is a folder ANIM_DIR with vertices.npy (T, V, 3),
    faces.npy, retarget.json, preview.mp4 (the source beside B) and, with --ply,
    frames/frame_<index>.ply.
    """
    import json

    from fitface.api import retarget as run
    from fitface.api.sequence_retarget import is_sequence_codes, retarget_sequence
    from fitface.errors import InputError

    if is_sequence_codes(expression):
        seq = retarget_sequence(expression, identity, out, model=model, mode=mode, model_frame=model_frame, ply=ply,
                                preview=not no_preview)
        if as_json:
            click.echo(json.dumps(seq.summary))
            return
        click.echo(f"wrote {seq.vertices.shape[0]} frames: {', '.join(str(p) for p in seq.files.values())} "
                   f"({mode}, {seq.summary['frame']} frame, {seq.unit})")
        from fitface.cli.view import view_hint

        click.echo(view_hint(out))
        return
    if ply or no_preview:
        raise InputError("--ply and --no-preview are for a tracked sequence (--expression OUT/codes.npz)")

    res = run(expression, identity, model=model, mode=mode, out=out, model_frame=model_frame)
    if as_json:
        c = res.codes[0]
        click.echo(json.dumps({"model_id": c.model_id, "unit": c.unit, "codes": c.codes, "transform": c.transform,
                               "mode": mode, "files": {k: str(v) for k, v in res.files.items()}}))
        return
    click.echo(f"wrote {res.files['mesh']} and {res.files['codes']} ({mode}, "
               f"{'model frame' if model_frame else 'identity capture frame'}, {res.codes[0].unit})")
