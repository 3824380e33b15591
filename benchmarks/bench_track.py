"""Benchmark: `fitface track` end to end on a rendered 640x480 face video (process start to files written).

Run: ``.venv/bin/python benchmarks/bench_track.py [--frames 300] [--repeats 2]``.

Renders, in a temporary folder (never in the repository), a known identity of the built-in
``ict`` model performing jaw / smile / blink under a moving head
(:func:`fitface.evaluation.tracking_video.render_sequence`, ``--frames / 2`` rendered frames
played forward then backward, 30 fps), encoded as mp4 with OpenCV. Then times, as subprocesses
(``python -m fitface track VIDEO -o OUT --no-progress``), the median of ``--repeats`` runs of

* ``fitface track`` (overlay on, the default),
* ``fitface track --no-overlay``,

each as frames per second from process start to exit, in wall time and in CPU time (user +
system of the process: on a shared machine the wall time also counts the time the process waited
for a core), with the CPU shares the command records in ``track.json`` (``cpu_seconds``):
mediapipe (its graph's start included), the sequence fit, the overlay (render + encode),
decoding the video, and the rest (interpreter start, imports, model load, writing).

Prints a Markdown table for docs/benchmarks.md with the machine, the date and the command.
Issue target: >= 15 frames per second on 2 CPU cores.

``--pictures DIR`` instead writes the README's two pictures: frame ``--frame`` of the overlay
(``track_overlay.png``) and of the retargeted sequence's preview (``track_retarget.png``: the
source beside another identity of the model performing its expressions), each at half size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine


def make_video(path: Path, frames: int) -> None:
    from fitface.api.inputs import load_fit_model
    from fitface.evaluation.tracking_video import render_sequence
    from fitface.io.video import write_video

    dec = load_fit_model("ict")
    ident = np.random.default_rng(1).standard_normal(dec.layout.size("identity")) * 0.8
    seq = render_sequence(dec, ident, frames=max(frames // 2, 2), size=(480, 640), fps=30.0)
    loop = np.concatenate([seq.frames, seq.frames[::-1]])[:frames]
    write_video(path, loop, 30.0)


def run_once(video: Path, out: Path, extra: list[str]) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fitface", "track", str(video), "-o", str(out), "--no-progress", *extra],
                   check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    doc = json.loads((out / "track.json").read_text())
    return {"wall": wall, "cpu": cpu, "frames": doc["frames"], "valid": doc["valid_frames"],
            "stages": doc["seconds"], "cpu_stages": doc["cpu_seconds"]}


def row(label: str, r: dict) -> str:
    """One table row: wall and CPU frames per second, and each stage's CPU seconds and share."""
    n, cs = r["frames"], r["cpu_stages"]
    known = sum(cs.get(k, 0.0) for k in ("mediapipe", "fit", "overlay", "decode"))
    rest = r["cpu"] - known  # interpreter start, imports, model load, writing (CPU of the whole process)

    def share(x):
        return f"{x:.2f} s ({100 * x / r['cpu']:.0f} %)"

    return (f"| {label} | {n} ({r['valid']} with a face) | {r['wall']:.2f} s, {n / r['wall']:.1f} fps | "
            f"{r['cpu']:.2f} s, {n / r['cpu']:.1f} fps | {share(cs.get('mediapipe', 0))} | {share(cs.get('fit', 0))} | "
            f"{share(cs.get('overlay', 0))} | {share(cs.get('decode', 0))} | {share(rest)} |")


def pictures(folder: Path, frame: int) -> None:
    """Track the rendered video and retarget it onto another identity; save one frame of each video."""
    import cv2

    from fitface.api import retarget_sequence, track
    from fitface.api.inputs import load_fit_model
    from fitface.io.codes import Codes, write_codes
    from fitface.io.image import write_png
    from fitface.io.video import open_frames

    dec = load_fit_model("ict")
    lay = dec.layout
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "face.mp4"
        make_video(video, 120)  # 60 rendered frames, forward then backward
        res = track(video, Path(tmp) / "track")
        zb = np.zeros(lay.dim)
        zb[lay.slice("identity")] = np.random.default_rng(7).standard_normal(lay.size("identity")) * 0.8
        parts = {k: np.asarray(v).tolist() for k, v in lay.split(zb).items()}
        write_codes(Path(tmp) / "B.json", Codes(dec.model_id, parts, None, "mm", {}, "ict"))
        anim = retarget_sequence(res.files["codes"], Path(tmp) / "B.json", Path(tmp) / "anim")
        for name, path in (("track_overlay.png", res.files["overlay"]), ("track_retarget.png", anim.files["preview"])):
            img = next(open_frames(path).frames([frame])).image
            small = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
            write_png(folder / name, small)
            print(f"wrote {folder / name} ({small.shape[1]}x{small.shape[0]})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--pictures", type=Path, default=None, help="write the README's pictures into this folder")
    ap.add_argument("--frame", type=int, default=11, help="the frame shown in the pictures (11: the jaw open)")
    args = ap.parse_args()
    if args.pictures is not None:
        pictures(args.pictures, args.frame)
        return
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "face.mp4"
        make_video(video, args.frames)
        rows = []
        for label, extra in (("`fitface track`", []), ("`fitface track --no-overlay`", ["--no-overlay"])):
            runs = [run_once(video, Path(tmp) / f"out{k}", extra) for k in range(args.repeats)]
            rows.append(row(label, sorted(runs, key=lambda d: d["cpu"])[len(runs) // 2]))  # the median run
    print(f"Machine: {machine()}; load average {os.getloadavg()[0]:.2f}; {dt.date.today().isoformat()}")
    print(f"Command: .venv/bin/python benchmarks/bench_track.py --frames {args.frames} --repeats {args.repeats}\n")
    print("| command | frames | wall time (process start to files written), frames/s | CPU time, frames/s | "
          "mediapipe (CPU) | sequence fit | overlay | decode | start, imports, model, writing |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
