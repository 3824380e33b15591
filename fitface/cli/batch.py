"""``fitface batch CAPTURE_DIR -o OUT_DIR``: fit every capture of a folder."""

from __future__ import annotations

import click

from fitface.cli.fit import fit_options


@click.command("batch")
@click.argument("capture_dir", type=click.Path(path_type=str))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Output folder: OUT_DIR/<name>/ per capture, summary.csv, summary.json, failures.txt, batch.json (the options).")
@fit_options
@click.option("--shard", default=None, metavar="K/N",
              help="Fit only shard K of N (1-based; contiguous blocks of the naturally sorted names), to split "
                   "a folder across processes or machines. Summary files get a -K-of-N suffix.")
@click.option("--sequence", is_flag=True,
              help="The captures are frames of one subject (natural name order): one shared identity code and "
                   "a smoothness term on consecutive expression codes.")
@click.option("--smoothness", type=float, default=1.0, show_default=True,
              help="With --sequence: weight of sum_t ||z_exp(t+1) - z_exp(t)||^2.")
@click.option("--previews", is_flag=True, help="Also write preview.png per capture (costs ~30 ms each).")
@click.option("--no-meshes", is_flag=True, help="Write codes.json only (no fitted mesh per capture).")
@click.option("--resume", is_flag=True,
              help="Continue a batch that was stopped (killed, out of time): captures that OUT_DIR already holds "
                   "complete, made by the same model and options (OUT_DIR/batch.json), are kept, not refitted; "
                   "half-written ones are redone; the summary covers all. The results equal an uninterrupted "
                   "run's. Refused with other options (exit 2).")
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary JSON on stdout.")
def batch(capture_dir, out_dir, model, lam, steps, restarts, landmark_set, unit, scale, seed, refine_surface, freeze, fmt,
          all_faces, depth, mediapipe_model, shard, sequence, smoothness, previews, no_meshes, resume, no_progress, as_json):
    """Fit every capture in CAPTURE_DIR in vectorised optimisations.

    \b
    Scans and landmark files are paired by name (A.ply + A.txt); a landmark file alone is
    a landmark-only capture. A bad capture (unreadable file, wrong landmark count, scan
    without landmarks, ...) never stops the batch: it is listed with its reason, one line
    each, in failures.txt and summary.json (and on stderr, the first 10).
    A folder of photos and no landmark files is fitted photo by photo with mediapipe
    (a photo without a face is a failure with its reason); --sequence and --shard work
    for photos too.
    \b
    Exit codes:
      0  every capture was fitted
      4  some captures failed, the others were fitted (see failures.txt)
      2  no capture was fitted, or bad input or options (nothing is fitted)
    """
    import sys

    from fitface.api import fit_batch
    from fitface.errors import InputError, SomeFailedError

    bar = None
    progress = None
    if not no_progress:
        from tqdm import tqdm

        def progress(done, total):
            nonlocal bar
            if bar is None:
                bar = tqdm(total=total, desc="writing", unit="capture", file=sys.stderr, leave=False)
            bar.update(done - bar.n)

    def log(msg):
        click.echo(msg, err=True)

    try:
        res = fit_batch(capture_dir, out_dir, model=model, lam=lam, steps=steps, restarts=restarts,
                        landmark_set=landmark_set, unit=unit, scale=scale, seed=seed, refine_surface=refine_surface,
                        freeze=list(freeze), shard=shard, sequence=sequence, smoothness=smoothness, format=fmt,
                        previews=previews, meshes=not no_meshes, progress=progress, log=log, depth=depth,
                        all_faces=all_faces, mediapipe_model=mediapipe_model, resume=resume)
    finally:
        if bar is not None:
            bar.close()
    if as_json:
        sys.stdout.write(res.files["json"].read_text())
    for name, reason in res.failures[:10]:
        click.echo(f"failed {name}: {reason}", err=True)
    if len(res.failures) > 10:
        click.echo(f"... and {len(res.failures) - 10} more failures (see {res.files['failures']})", err=True)
    click.echo(f"fitted {len(res.results)}, failed {len(res.failures)} in {res.seconds:.2f} s; summary "
               f"{res.files['csv']}", err=True)
    if not res.results:
        raise InputError(f"no capture was fitted ({len(res.failures)} failed; see {res.files['failures']})")
    if res.failures:
        raise SomeFailedError(f"{len(res.failures)} of {len(res.results) + len(res.failures)} captures failed "
                              f"(see {res.files['failures']})")
