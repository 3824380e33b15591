"""``fitface view RESULT -o view.html``: one self-contained HTML page that shows a result in 3D."""

from __future__ import annotations

import click


def view_hint(result_dir) -> str:
    """The line ``fit``, ``track`` and ``retarget`` print: the command that writes their page."""
    import shlex

    d = shlex.quote(str(result_dir))
    return f"view: fitface view {d} -o {shlex.quote(str(result_dir).rstrip('/') + '/view.html')}"


@click.command("view")
@click.argument("result", type=click.Path(path_type=str))
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="The HTML file to write. Default: RESULT/view.html.")
@click.option("--no-scan", is_flag=True, help="Leave out a fit's scan and its error colours.")
@click.option("--no-landmarks", is_flag=True, help="Leave out a fit's landmarks.")
@click.option("--no-autoplay", is_flag=True, help="A sequence opens paused at its first frame.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def view(result, output, no_scan, no_landmarks, no_autoplay, as_json):
    """Write one HTML page that shows RESULT in 3D, in any browser, offline.

    \b
    RESULT is a folder that `fitface fit`, `track` or `retarget` wrote. The page
    inlines three.js and the result's GLB (`fitface export`), fetches nothing and
    opens from a file with no network. It shows the fitted face; a fit's scan and
    landmarks; per-vertex error colours against the scan with a legend in mm; one
    slider per expression target; play, pause and a frame slider for sequences; and
    the ARKit-52 weights where RESULT has an arkit.json.
    Exit codes: 0 written; 2 bad input (a one-line error; nothing is written).
    """
    import json

    from fitface.api.view import view as run

    res = run(result, output, scan=not no_scan, landmarks=not no_landmarks, autoplay=not no_autoplay)
    if as_json:
        click.echo(json.dumps(res.summary()))
        return
    parts = [f"{res.num_targets} targets"]
    if res.num_frames > 1:
        parts.append(f"{res.num_frames} frames at {res.fps:.4g} fps")
    if res.scan:
        parts.append("scan")
    if res.landmarks:
        parts.append("landmarks")
    if res.errors:
        parts.append(f"error colours 0-{res.error_max:g} {res.error_unit}")
    click.echo(f"wrote {res.path} ({res.kind}: {', '.join(parts)}; {res.size_bytes / 1e6:.1f} MB)")
    for note in res.notes:
        click.echo(f"note: {note}", err=True)
