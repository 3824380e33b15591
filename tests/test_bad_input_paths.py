"""Bad input on the newer paths (issue #28 section 3): one line naming the file, exit code 2
(4: some captures of a batch failed), no traceback, nothing half-written."""

from __future__ import annotations

import shutil

import numpy as np
from input_checks import run_cli

from fitface.io.landmarks import save_landmarks


def _one_line_error(err: str, name: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and name in lines[0], err
    assert "Traceback" not in err


def test_landmarks_of_1e300_are_bad_input_not_a_crash(tmp_path, capsys, model_path):
    huge = tmp_path / "huge.txt"
    np.savetxt(huge, 1e300 * (1 + np.random.default_rng(0).random((68, 3))))
    code, _, err = run_cli(["fit", "-l", huge, "-o", tmp_path / "out", "-m", model_path], capsys)
    assert code == 2
    _one_line_error(err, "huge.txt")
    assert "magnitude" in err and not (tmp_path / "out").exists()


def test_a_batch_reports_the_huge_capture_and_fits_the_rest(tmp_path, capsys, model_path):
    from fitface.fitting.decoder import load_decoder

    dec = load_decoder(model_path)
    good = dec.points(np.zeros((1, dec.layout.dim)), dec.landmark_rows("ibug68"))[0]
    caps = tmp_path / "caps"
    caps.mkdir()
    save_landmarks(caps / "good.txt", good, unit="mm")
    np.savetxt(caps / "huge.txt", np.full((68, 3), 1e300))
    code, _, err = run_cli(["batch", caps, "-o", tmp_path / "out", "-m", model_path, "--no-progress"], capsys)
    assert code == 4 and "Traceback" not in err
    assert (tmp_path / "out" / "good" / "codes.json").is_file() and not (tmp_path / "out" / "huge").exists()
    assert "huge" in (tmp_path / "out" / "failures.txt").read_text()


def test_codes_npz_that_is_not_an_archive_or_misses_keys(tmp_path, capsys, model_path):
    from fitface.fitting.decoder import load_decoder

    dec = load_decoder(model_path)
    good = dec.points(np.zeros((1, dec.layout.dim)), dec.landmark_rows("ibug68"))[0]
    save_landmarks(tmp_path / "b.txt", good, unit="mm")
    assert run_cli(["fit", "-l", tmp_path / "b.txt", "-o", tmp_path / "b", "-m", model_path], capsys)[0] == 0
    text = tmp_path / "text.npz"
    text.write_text("not an archive\n")
    partial = tmp_path / "partial.npz"
    np.savez(partial, identity=np.zeros(3))
    for bad, words in ((text, "not a zip archive"), (partial, "missing expression")):
        code, _, err = run_cli(["retarget", "-e", bad, "-i", tmp_path / "b" / "codes.json", "-o", tmp_path / "anim",
                                "-m", model_path], capsys)
        assert code == 2 and words in err
        _one_line_error(err, bad.name)
        assert not (tmp_path / "anim").exists()


def test_codes_whose_model_file_has_moved(tmp_path, capsys, model_path):
    from fitface.fitting.decoder import load_decoder

    mine = tmp_path / "mine.safetensors"
    shutil.copyfile(model_path, mine)
    dec = load_decoder(mine)
    pts = dec.points(np.zeros((1, dec.layout.dim)), dec.landmark_rows("ibug68"))[0]
    save_landmarks(tmp_path / "a.txt", pts, unit="mm")
    for name in ("a", "b"):
        assert run_cli(["fit", "-l", tmp_path / "a.txt", "-o", tmp_path / name, "-m", mine], capsys)[0] == 0
    mine.rename(tmp_path / "moved.safetensors")
    code, _, err = run_cli(["retarget", "-e", tmp_path / "a" / "codes.json", "-i", tmp_path / "b" / "codes.json",
                            "-o", tmp_path / "r.ply"], capsys)
    assert code == 2 and "--model" in err
    _one_line_error(err, "codes.json")
    assert not (tmp_path / "r.ply").exists()


def test_a_video_that_is_not_one(tmp_path, capsys):
    for name, data in (("text.mp4", b"not a video\n"), ("noise.mp4", np.random.default_rng(1).bytes(5000)),
                       ("empty.mp4", b"")):
        bad = tmp_path / name
        bad.write_bytes(data)
        code, _, err = run_cli(["track", bad, "-o", tmp_path / "t"], capsys)
        assert code == 2, err
        _one_line_error(err, name)
        assert not (tmp_path / "t").exists()
