"""``fitface export RESULT -o face.glb``: a fit, track or retargeted sequence as a glTF rig.

A thin layer over :func:`fitface.api.export.export_result`; only click is imported at module level.
"""

from __future__ import annotations

import click


@click.command("export")
@click.argument("result", type=click.Path(path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="The GLB file to write (glTF 2.0 binary).")
@click.option("--arkit", "arkit_path", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Where to write the ARKit-52 weights (JSON). Default: OUTPUT's name with .arkit.json, "
                   "where the model has ICT correspondence.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Where to write the Live Link Face CSV. Default: OUTPUT's name with .livelink.csv, where the "
                   "model has ICT correspondence.")
@click.option("--no-arkit", is_flag=True, help="Write neither the ARKit JSON nor the CSV.")
@click.option("--basis", type=click.Choice(["auto", "ict", "jacobian", "pca"]), default="auto", show_default=True,
              help="Morph targets: ict = the ICT-FaceKit shapes transferred onto the fitted identity (models with "
                   "ICT correspondence); jacobian = the model's expression directions linearised at the identity; "
                   "pca = the sequence's leading displacement components; auto = ict where possible, else pca for "
                   "sequences and jacobian for fits.")
@click.option("--targets", type=click.Choice(["ict", "arkit"]), default="ict", show_default=True,
              help="With the ICT basis: all 55 ICT shapes (split pairs as ...Left/...Right) or the 52 ARKit "
                   "shapes (split pairs summed, weights merged by their mean, tongueOut a zero target).")
@click.option("--colors", type=click.Choice(["none", "error"]), default="none", show_default=True,
              help="Vertex colours: error = a fit's distance to its scan (blue 0 to red at a round full scale).")
@click.option("--pca-components", type=click.IntRange(min=1), default=16, show_default=True,
              help="Number of PCA targets (--basis pca).")
@click.option("--morph-normals", is_flag=True, help="Also write the targets' normal deltas (larger file).")
@click.option("--ict-source", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="The ICT face model (ict_face_light.npz). Default: $FITFACE_ICT_SOURCE, else "
                   "../shared/data/ict_face_light.npz beside the checkout, else ./ict_face_light.npz.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
def export(result, output, arkit_path, csv_path, no_arkit, basis, targets, colors, pca_components, morph_normals,
           ict_source, as_json):
    """Export RESULT (a folder of fitface fit, track or retarget) as a GLB rig.

    \b
    The GLB holds the fitted identity's neutral face, one morph target per
    expression shape (ARKit-named ICT-FaceKit shapes moved onto the identity by
    deformation transfer, where the model has ICT correspondence), the fit's
    weights, and for a sequence a morph-weight animation at the source's frame
    rate with the head pose as node animation (tracks). Fits keep their capture's
    frame and unit; tracks are in the model's unit (mm). Positions are written in
    that unit as they are (glTF readers take them as metres: scale on import).
    It prints the RMS between the GLB's animated mesh and fitface's own mesh.
    \b
    With ICT correspondence it also writes, beside OUTPUT unless --arkit/--csv
    say where (or --no-arkit):
      NAME.arkit.json    ARKit-52 weights per frame (bounded least squares in
                         [0, 1]; browInnerUp and cheekPuff = mean of the _L/_R
                         halves; tongueOut 0), residual RMS in mm
      NAME.livelink.csv  Live Link Face CSV: Timecode, BlendShapeCount, the 52
                         shapes, HeadYaw/Pitch/Roll (radians), eye rotations (0)
    Asking for --arkit or --csv of a model without ICT correspondence is an error.
    Exit codes: 0 written; 2 bad input (one line; nothing is written).
    """
    import json
    import sys

    from fitface.api.export import export_result, find_ict_source, ict_correspondence, read_result

    explicit = arkit_path is not None or csv_path is not None
    if no_arkit and explicit:
        from fitface.errors import InputError

        raise InputError("--no-arkit together with --arkit/--csv")
    if no_arkit:
        a, c = None, None
    elif explicit:
        a, c = arkit_path, csv_path
    else:  # default: beside the GLB where there is ICT correspondence and the ICT model is found
        src = read_result(result)
        ok = basis in ("auto", "ict") and ict_correspondence(src.dec) and find_ict_source(ict_source) is not None
        a, c = (True, True) if ok else (None, None)
    res = export_result(result, output, colors=None if colors == "none" else colors, arkit=a, csv=c, basis=basis,
                        targets=targets, ict_source=ict_source, pca_components=pca_components,
                        morph_normals=morph_normals)
    if as_json:
        sys.stdout.write(json.dumps(res.summary()) + "\n")
        return
    fps = f" at {res.fps:.4g} fps" if res.fps else ""
    click.echo(f"{res.kind}: {len(res.target_names)} {res.basis} targets, {res.num_frames} frame(s){fps}; "
               f"GLB vs fitface mesh RMS mean {res.rms_mm.mean():.3g} {res.unit}, max {res.rms_mm.max():.3g} {res.unit}")
    if res.arkit is not None:
        click.echo(f"ARKit-52 solve residual RMS mean {res.arkit.residual_rms_mm.mean():.3g} mm")
    click.echo(f"wrote {', '.join(str(p) for p in res.files.values())}")
