"""``fitface landmarks mediapipe MODEL``: add the model's "mediapipe" landmark set (once per model).

Registered in the ``landmarks`` group (:mod:`fitface.cli.landmarks`).
"""

from __future__ import annotations

import click


@click.command("mediapipe")
@click.argument("model", metavar="MODEL")
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Write the new model here instead of replacing MODEL.")
@click.option("--replace", is_flag=True, help="Recompute an existing 'mediapipe' set.")
@click.option("--mediapipe-model", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="mediapipe FaceLandmarker .task file (for releases without the bundled face mesh).")
def mediapipe(model, out, replace, mediapipe_model):
    """Locate mediapipe's face-mesh points on MODEL's template and store them as set 'mediapipe'.

    \b
    The template is rendered shaded from 5 views (frontal, yaw +-20, pitch +-15 degrees),
    mediapipe runs on each, its points are back-projected onto the template and a point
    is kept when 3 of the 5 views agree; face-oval contour and iris points are never
    used. The set's mediapipe indices are stored in the model's metadata. The model file
    changes, so its model_id changes too (a built-in model is never changed in place: pass
    -o FILE).
    """
    from fitface.landmarks.correspondence import add_mediapipe_set

    new_id, corr = add_mediapipe_set(model, out=out, replace=replace, mediapipe_model=mediapipe_model)
    click.echo(f"added landmark set 'mediapipe' ({len(corr.indices)} points; {len(corr.dropped)} candidates "
               f"dropped) to {out or model} (new model_id {new_id})")
