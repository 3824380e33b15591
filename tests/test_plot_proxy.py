"""scripts/plot_proxy.py: the proxy evaluation curves of training runs (metrics.csv ``proxy_*``)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "plot_proxy.py"

HEADER = ("step,div_global,proxy_coef_ratio_identity,proxy_coef_ratio_expression,proxy_t2_surface_0.01,"
          "proxy_t2_surface_10,proxy_retarget,proxy_retarget_no_transfer,proxy_retarget_direct_fit,proxy_div,"
          "proxy_div_identity,proxy_div_expression,proxy_specificity,proxy_seconds,proxy_ref_div,"
          "proxy_ref_div_identity,proxy_ref_div_expression,proxy_ref_no_transfer")
# As the trainer writes it: metrics rows every 250 steps, the proxy every 500 (empty cells when
# the row was written before the proxy columns existed, "nan" when a part was skipped).
ROWS = ["0,7.5,0.01,0.2,1.9,2.0,2.2,3.8,1.95,7.6,2.1,6.9,3.8,30,7.3,1.6,6.9,3.3",
        "250,7.4" + "," * 16,
        "500,7.3,0.02,0.3,1.8,1.95,2.1,3.7,1.9,7.5,2.0,6.8,3.7,25,7.3,1.6,6.9,3.3",
        "750,7.2" + ",nan" * 16,
        "1000,7.1,0.03,0.25,1.7,nan,2.0,3.6,1.85,7.4,1.9,6.7,3.6,22,7.3,1.6,6.9,3.3"]


@pytest.fixture(scope="module")
def plot_proxy():
    """The script as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("plot_proxy", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_run(folder: Path, rows=ROWS, header=HEADER) -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.csv").write_text("\n".join([header, *rows]) + "\n")
    return folder


def check_png(path: Path) -> None:
    """A real PNG of the 11 x 7 in figure at 80 dpi with something drawn on it."""
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(path)[..., :3]
    assert img.shape[:2] == (560, 880)
    assert (img.min(axis=2) < 0.9).mean() > 0.02  # ink: curves, axes, text


def test_writes_png_for_two_runs_with_reference(plot_proxy, tmp_path, capsys):
    a, b = make_run(tmp_path / "run_a"), make_run(tmp_path / "run_b", rows=ROWS[:3])
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"label": "linear 3DMM", "values": {"coef_ratio_expression": 0.012,
                                                                  "t2_surface_0.01": 2.01, "div": 6.9}}))
    out = tmp_path / "figs" / "proxy.png"
    plot_proxy.main([str(a), str(b), "-o", str(out), "--labels", "A,B", "--reference", str(ref), "--title", "T"])
    check_png(out)
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    assert sorted(p.name for p in out.parent.iterdir()) == ["proxy.png"]  # no temporary left


def test_rows_without_proxy_values_are_skipped_per_column(plot_proxy, tmp_path):
    d = plot_proxy.read_run(make_run(tmp_path / "run"))
    assert d["div"] == ([0.0, 500.0, 1000.0], [7.6, 7.5, 7.4])
    assert d["t2_surface_10"] == ([0.0, 500.0], [2.0, 1.95])  # the NaN of step 1000 dropped too
    assert "seconds" not in d and "div_global" not in d


def test_labels_default_to_folder_names(plot_proxy, tmp_path):
    assert plot_proxy.run_labels([tmp_path / "x" / "run", tmp_path / "lever"], None) == ["run", "lever"]
    assert plot_proxy.run_labels([tmp_path / "x" / "run", tmp_path / "y" / "run"], None) == ["x/run", "y/run"]


def test_a_metrics_csv_file_reads_as_its_run_folder(plot_proxy, tmp_path):
    """A CSV file given directly (the docs' docs/data/*_metrics.csv) reads as the folder holding it."""
    run = make_run(tmp_path / "run")
    copy = tmp_path / "ict_cpu_recipe_metrics.csv"
    copy.write_bytes((run / "metrics.csv").read_bytes())
    assert plot_proxy.read_run(copy) == plot_proxy.read_run(run)
    assert plot_proxy.read_run(run / "metrics.csv") == plot_proxy.read_run(run)
    assert plot_proxy.run_labels([copy, run, tmp_path / "lever.csv"], None) == ["ict_cpu_recipe", "run", "lever.csv"]
    out = tmp_path / "p.png"
    plot_proxy.main([str(copy), str(run), "-o", str(out)])
    check_png(out)


def test_command_line(tmp_path):
    """Run as the docs say (python scripts/plot_proxy.py ...): plot_training's helpers import."""
    run, out = make_run(tmp_path / "run"), tmp_path / "p.png"
    res = subprocess.run([sys.executable, str(SCRIPT), str(run), "-o", str(out)], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    check_png(out)


BAD_REFERENCES = {
    "{bad": "not valid JSON",
    "[1, 2]": "expected a JSON object",
    '{"values": {"div": 1}, "lable": "x"}': "unknown key",
    '{"label": "x"}': "values",
    '{"label": 3, "values": {"div": 1}}': "label",
    '{"values": {"div": "1"}}': "finite number",
    '{"values": {"div": NaN}}': "finite number",
    '{"values": {"proxy_div": 1}}': "without the proxy_ prefix",
    '{"values": {"divv": 1}}': "unknown key",
}


def bad_inputs(tmp_path: Path) -> list[tuple[list[str], Path, str]]:
    """(arguments, the path the message must start with, a word it must contain) per bad input."""
    good = make_run(tmp_path / "good")
    cases = [([str(tmp_path / "missing")], tmp_path / "missing", "no such folder or file")]
    notcsv = tmp_path / "notcsv.csv"
    notcsv.write_bytes(b"\xff\xfe\x00binary")
    cases.append(([str(notcsv)], notcsv, "not a readable CSV"))
    (tmp_path / "nocsv").mkdir()
    cases.append(([str(tmp_path / "nocsv")], tmp_path / "nocsv" / "metrics.csv", "no such file"))
    noproxy = make_run(tmp_path / "noproxy", rows=["0,7.5", "250,7.4"], header="step,div_global")
    cases.append(([str(noproxy)], noproxy / "metrics.csv", "no proxy_* columns"))
    unrun = make_run(tmp_path / "unrun", rows=[ROWS[1], ROWS[3]])
    cases.append(([str(unrun)], unrun / "metrics.csv", "no values"))
    empty = make_run(tmp_path / "empty", rows=[])
    cases.append(([str(empty)], empty / "metrics.csv", "no rows"))
    ragged = make_run(tmp_path / "ragged", rows=[ROWS[0] + ",1,2"])
    cases.append(([str(ragged)], ragged / "metrics.csv", "more cells"))
    cases.append(([str(good), "--reference", str(tmp_path / "nope.json")], tmp_path / "nope.json", "no such file"))
    for i, (text, word) in enumerate(BAD_REFERENCES.items()):
        ref = tmp_path / f"ref{i}.json"
        ref.write_text(text)
        cases.append(([str(good), "--reference", str(ref)], ref, word))
    cases.append(([str(good), str(good), "--labels", "a,b,c"], Path("--labels"), "3 label(s) for 2"))
    return cases


def test_bad_input_one_line_exit_2_nothing_written(plot_proxy, tmp_path, capsys):
    outdir = tmp_path / "out"
    outdir.mkdir()
    out = outdir / "p.png"
    for args, path, word in bad_inputs(tmp_path):
        with pytest.raises(SystemExit) as exc:
            plot_proxy.main([*args, "-o", str(out)])
        assert exc.value.code == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"{path}: "), (args, err)
        assert word.lower() in err.lower(), (word, err)
        assert not any(outdir.iterdir()), args
    with pytest.raises(SystemExit) as exc:  # -o names a folder
        plot_proxy.main([str(tmp_path / "good"), "-o", str(outdir)])
    assert exc.value.code == 2 and capsys.readouterr().err.startswith(f"{outdir}: is a folder")


def test_bad_input_on_the_command_line(tmp_path):
    """The subprocess exit code and stderr for one bad input: exit 2, one line, no PNG."""
    (tmp_path / "run").mkdir()
    out = tmp_path / "p.png"
    res = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "run"), "-o", str(out)], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2
    run = tmp_path / "run"
    assert res.stderr == f"{run / 'metrics.csv'}: no such file (is {run} a fitface training run?)\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
