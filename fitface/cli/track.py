"""``fitface track VIDEO -o OUT_DIR``: track a face through a video, one identity per sequence."""

from __future__ import annotations

import click


@click.command("track")
@click.argument("video", type=click.Path(path_type=str))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Output folder (created).")
@click.option("-m", "--model", metavar="NAME|FILE", default=None,
              help="A built-in model (see `fitface models`) or a model file. Default: the default built-in model.")
@click.option("--lambda", "lam", type=float, default=None,
              help="Weight of the latent regulariser lambda*||z||^2 (paper eq. 13). Default 30, as for photos.")
@click.option("--smoothness", type=float, default=None,
              help="mu of mu*sum_t ||z_exp(t+1) - z_exp(t)||^2 on the expression codes (default 10).")
@click.option("--pose-smoothness", type=float, default=None,
              help="Temporal smoothing of the head pose's acceleration (unitless, ~mu**0.25 frames; default 16; "
                   "0: per frame).")
@click.option("--fps", type=float, default=None, help="Subsample to at most this many frames per second.")
@click.option("--start", type=float, default=None, help="First second tracked.")
@click.option("--end", type=float, default=None, help="Track frames before this second.")
@click.option("--steps", type=click.IntRange(min=0), default=None, help="Optimiser steps (default 100).")
@click.option("--meshes", is_flag=True, help="Also write every frame's mesh (meshes/frame_<index>.ply).")
@click.option("--overlay/--no-overlay", default=True, show_default=True,
              help="Write overlay.mp4: the fitted mesh drawn over the frames.")
@click.option("--mediapipe-model", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="mediapipe FaceLandmarker .task file, for releases without the bundled model.")
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary (track.json) on stdout.")
def track(video, out_dir, model, lam, smoothness, pose_smoothness, fps, start, end, steps, meshes, overlay,
          mediapipe_model, no_progress, as_json):
    """Track the largest face of VIDEO (mp4, avi, mov, ... or a folder of frames) and fit it
    as one sequence: one identity code, per-frame expression codes and head poses.

    \b
    mediapipe's face mesh runs in its video (tracking) mode; the frames with a face are
    fitted jointly (smooth expressions and poses); frames without one are marked invalid
    and get interpolated codes. Writes into OUT_DIR:
      codes.npz    identity (d_id,), expression (T, d_exp), noise, per-frame similarity
                   transforms (scale, rotation, translation; model -> photo frame, pixels),
                   landmark_rms (px), frame_index, time (s), valid
      track.json   summary: model_id, model, source, frames, options, timings, files
      overlay.mp4  the fitted mesh over the frames (--no-overlay: not written)
      meshes/      frame_<index>.ply per frame (--meshes)
    `fitface retarget --expression OUT_DIR/codes.npz --identity B/codes.json -o ANIM`
    moves the tracked expressions onto another face.
    Exit codes: 0 tracked; 2 bad input (unreadable or empty video; one line, nothing
    written); 3 no face in any frame.
    """
    import json
    import sys

    from fitface.api.track import TRACK_SMOOTHNESS
    from fitface.api.track import track as run

    bars: dict = {}

    def progress(stage, done, total):
        if no_progress:
            return
        from tqdm import tqdm

        bar = bars.get(stage)
        if bar is None:
            for b in bars.values():
                b.close()
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="frame" if stage != "fit" else "step",
                                     file=sys.stderr, leave=False)
        bar.update(done - bar.n)

    try:
        res = run(video, out_dir, model=model, lam=lam,
                  smoothness=TRACK_SMOOTHNESS if smoothness is None else smoothness,
                  pose_smoothness=pose_smoothness, fps=fps, start=start, end=end, steps=steps, meshes=meshes,
                  overlay=overlay, mediapipe_model=mediapipe_model, progress=progress)
    finally:
        for b in bars.values():
            b.close()
    if as_json:
        sys.stdout.write(json.dumps(res.summary) + "\n")
        return
    s = res.summary
    t = res.timings
    click.echo(f"tracked {s['valid_frames']} of {s['frames']} frames ({s['frames'] / t['total']:.1f} frames/s; "
               f"landmark RMS {s['landmark_rms_px']['median']:.3g} px median); wrote "
               f"{', '.join(str(p) for p in res.files.values())}")
    from fitface.cli.view import view_hint

    click.echo(view_hint(out_dir))
