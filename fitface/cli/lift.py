"""``fitface lift PHOTO_OR_SCAN -o FILE``: automatic landmarks from a photo or a raw scan.

Only click is imported at module level (mediapipe, cv2 and numpy are imported in the command).
"""

from __future__ import annotations

import click


@click.command("lift")
@click.argument("source", type=click.Path(path_type=str))
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="Landmark file to write (txt, xyz, lm, csv, json, npy, pts, pp; by suffix).")
@click.option("-m", "--model", metavar="NAME|FILE", default=None,
              help="Write the points of this model's (a built-in name or a file) 'mediapipe' landmark set (ready for `fitface fit "
                   "--landmarks FILE -m MODEL`). Default: all of mediapipe's points in mediapipe order.")
@click.option("--all", "all_faces", is_flag=True,
              help="Photos: one file per detected face (FILE's stem + -face0, -face1, ... largest first). "
                   "Default: the largest face.")
@click.option("--mediapipe-model", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="mediapipe FaceLandmarker .task file (needed by mediapipe releases without the bundled "
                   "face mesh; 0.10.14 bundles it).")
@click.option("--views", type=click.IntRange(1, 13), default=5, show_default=True,
              help="Scans: rendered views (frontal, yaw +-20, pitch +-15, ...) voted over.")
@click.option("--overlay", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="PNG with the detected points drawn (default: FILE with suffix .png).")
@click.option("--no-overlay", is_flag=True, help="Do not write the overlay PNG.")
@click.option("--unit", default=None, help="Scans: the scan's unit, stored in the landmark file when it can hold one.")
def lift(source, out, model, all_faces, mediapipe_model, views, overlay, no_overlay, unit):
    """Landmarks of a photo (mediapipe's face mesh) or of a raw SCAN without landmarks.

    \b
    PHOTO (png, jpg, ...): mediapipe's 478 points, in the photo frame: pixels, X right,
      Y up (= -row), Z towards the viewer (mediapipe's relative depth on the x scale;
      a weak-perspective estimate, see docs). No face: exit code 3.
    SCAN (ply, obj, off, stl; a mesh, not a point cloud): rendered from --views views,
      mediapipe on each, points back-projected onto the surface and voted (a point
      needs the agreement of half the views within 3% of the face width); the
      landmarks are in the scan's frame and unit. Without -m, the points that could be
      placed are written, named mp<index> (use csv, json or pp to keep the names);
      with -m every point of the model's set must be placed.
    Contour (face-oval) and iris points are unreliable and are not in a model's
    'mediapipe' set (see `fitface landmarks mediapipe`).
    """
    from pathlib import Path

    import numpy as np

    from fitface.errors import InputError
    from fitface.io.image import write_png
    from fitface.io.landmarks import LANDMARK_SUFFIXES, save_landmarks
    from fitface.landmarks.lift_photo import is_photo
    from fitface.landmarks.mediapipe_points import point_names

    outp = Path(out)
    if outp.suffix.lower() not in LANDMARK_SUFFIXES:
        raise InputError(f"unknown landmark format {outp.suffix or '(no suffix)'!r}; use one of "
                         f"{', '.join(LANDMARK_SUFFIXES)}", outp)
    if unit is not None:
        from fitface.units import check_unit

        check_unit(unit, "--unit")
    indices = None
    if model is not None:
        from fitface.landmarks.correspondence import mediapipe_indices
        from fitface.models.model_file import read_metadata

        indices = mediapipe_indices(read_metadata(model), model)
    over = None if no_overlay else Path(overlay) if overlay else outp.with_suffix(".png")
    src = Path(source)
    if not src.exists():
        raise InputError("no such file", src)

    def names_for(n):
        return point_names(indices if indices is not None else np.arange(n))

    if is_photo(src):
        from fitface.landmarks.lift_photo import lift_photo_file, photo_overlay

        image, faces = lift_photo_file(src, mediapipe_model=mediapipe_model, all_faces=all_faces)
        written = []
        for k, f in enumerate(faces):
            pts = f.points if indices is None else f.select(indices)
            target = outp if not all_faces else outp.with_name(f"{outp.stem}-face{k}{outp.suffix}")
            save_landmarks(target, pts, None, names_for(len(f.points)))
            written.append(str(target))
        if over is not None:
            write_png(over, photo_overlay(image, faces, indices))
            written.append(str(over))
        click.echo(f"{src.name}: {len(faces)} face(s), {len(pts)} points each; wrote {', '.join(written)}")
        return

    from fitface.io.mesh import load_mesh
    from fitface.landmarks.lift_scan import lift_scan, scan_overlay

    mesh = load_mesh(src, require_faces=True)
    try:
        res = lift_scan(mesh.vertices, mesh.faces, views=views, mediapipe_model=mediapipe_model)
    except InputError as exc:
        if exc.path is None:
            raise type(exc)(exc.problem, src) from None
        raise
    if indices is None:  # all points that could be placed, named mp<index> (csv/json/pp keep the names)
        sel = np.flatnonzero(np.isfinite(res.points).all(axis=1))
    else:
        sel = np.asarray(indices)
    pts = res.points[sel]
    missing = ~np.isfinite(pts).all(axis=1)
    if missing.any() or len(sel) < 3:
        raise InputError(f"{int(missing.sum())} of {len(pts)} landmarks could not be placed on the scan (holes "
                         f"or a partial face); try more --views", src)
    save_landmarks(outp, pts, unit, point_names(sel))
    written = [str(outp)]
    if over is not None:
        write_png(over, scan_overlay(res, sel))
        written.append(str(over))
    agreed = int(res.valid[sel].sum())
    click.echo(f"{src.name}: {agreed} of {len(sel)} points agreed in {len(res.multiview.views)} views "
               f"({len(sel) - agreed} from the frontal view only); wrote {', '.join(written)}")
