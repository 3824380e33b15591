"""``fitface evaluate MODEL... --data DIR -o REPORT_DIR``: the paper's metrics and benchmarks."""

from __future__ import annotations

import click

PARTS = ("table1", "table2", "table2_noisy", "retarget", "dense")  # fitface.evaluation.report.PARTS


def _lambdas(ctx, param, value):
    from fitface.errors import InputError

    try:
        out = tuple(float(x) for x in str(value).split(",") if x.strip())
    except ValueError:
        raise InputError(f"--lambdas: expected comma-separated numbers like 0,0.01,10, got {value!r}") from None
    if not out or any(not (x >= 0 and x < float("inf")) for x in out):
        raise InputError(f"--lambdas: expected non-negative numbers, got {value!r}")
    return out


def _bars():
    """``bar(label)`` -> a ``(done, total)`` callback drawing a tqdm bar on stderr (closed at done
    == total); off a terminal it updates at most every 30 s, a line with the time left."""
    import sys

    from tqdm import tqdm

    tty = sys.stderr.isatty()

    def bar(label: str):
        state: dict = {}

        def update(done: int, total: int) -> None:
            if "bar" not in state:
                state["bar"] = tqdm(total=total, desc=label, file=sys.stderr, leave=False, dynamic_ncols=True,
                                    mininterval=0.5 if tty else 30.0, ascii=not tty)
            b = state["bar"]
            b.update(done - b.n)
            if done >= total:
                b.close()

        return update

    return bar


@click.command("evaluate")
@click.argument("models", nargs=-1, required=True, metavar="MODEL...")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=str),
              help="Dataset folder the models were trained on (train split: specificity; test split: test captures).")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Report folder: report.md, report.json, figures/*.png.")
@click.option("--n-samples", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Generated samples for specificity (paper: 1,000).")
@click.option("--pairs", type=click.IntRange(min=1), default=10000, show_default=True,
              help="Pairs per diversity value (paper: 10,000).")
@click.option("--decoupling-n", type=click.IntRange(min=2), default=100, show_default=True,
              help="Anchor faces of the decoupling score (paper: 100).")
@click.option("--decoupling-m", type=click.IntRange(min=1), default=100, show_default=True,
              help="Companions per anchor (paper: 100).")
@click.option("--lambdas", default="0,0.01,10", show_default=True, callback=_lambdas,
              help="Table 2 regularisation weights (eq. 13).")
@click.option("--test-captures", type=click.IntRange(min=1), default=144, show_default=True,
              help="Table 2 captures (test identities x 12 extreme expressions; paper: 144).")
@click.option("--retarget-pairs", type=click.IntRange(min=1), default=100, show_default=True,
              help="Retargeting (A, B) pairs.")
@click.option("--dense-retarget", is_flag=True,
              help="Also retarget the test captures with dense (every-vertex) fits.")
@click.option("--noisy-landmark-mm", type=click.FloatRange(min=0), default=1.5, show_default=True,
              help="Part table2_noisy: Gaussian landmark noise (mm), with a random rigid motion.")
@click.option("--dense-identities", type=click.IntRange(min=2), default=6, show_default=True,
              help="Part dense: fresh ICT identities (ordered pairs: n (n-1) x 6 emotions).")
@click.option("--skip", multiple=True, type=click.Choice(PARTS),
              help="Skip a part (repeatable): table1, table2, table2_noisy (noisy landmarks, random pose), "
                   "retarget, dense (dense retargeting / reconstruction on fresh ICT identities).")
@click.option("--train-embedders", is_flag=True,
              help="Train the dataset's decoupling embedders if missing (minutes, on one thread: the "
                   "networks depend on the thread count and the CPU); else Dec- columns are skipped. "
                   "Compare Dec- values only between models scored with the same embedders.")
@click.option("--ict-source", type=click.Path(path_type=str), default=None,
              help="ICT datasets: the ict_face_light.npz / ICT-FaceKit the dataset was built from.")
@click.option("--steps", type=click.IntRange(min=1), default=400, show_default=True, help="Adam steps per fit.")
@click.option("--similarity", is_flag=True,
              help="Table 2: move each capture by a random rigid motion and estimate a similarity in the fit.")
@click.option("--noise-mm", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Table 2: Gaussian noise (mm) on the landmark targets.")
@click.option("--no-figures", is_flag=True, help="Write no figures.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seeds every random draw.")
@click.option("--overwrite", is_flag=True, help="Write into an existing report folder.")
@click.option("--no-progress", is_flag=True,
              help="No progress bars on stderr (by default each long stage shows one, with its rate and "
                   "time left; where stderr is not a terminal, a line every 30 s).")
def evaluate(models, data_dir, out_dir, n_samples, pairs, decoupling_n, decoupling_m, lambdas, test_captures,
             retarget_pairs, dense_retarget, noisy_landmark_mm, dense_identities, skip, train_embedders, ict_source,
             steps, similarity, noise_mm, no_figures, seed, overwrite, no_progress):
    """Evaluate MODELs (files or built-in names) on a dataset with the paper's metrics and benchmarks.

    \b
    Table 1 (paper §5.3): decoupling (Dec-Id, Dec-Exp; needs the dataset's
    trained embedders), diversity (Div, Div-Id, Div-Exp) and specificity (Sp.)
    per model, plus the training data's diversity. Table 2 (§5.5): fit the 68
    landmarks of held-out identities posing 12 extreme expressions outside the
    training recipes, at each lambda, and measure the RMSE to the true surface;
    then again with 1.5 mm landmark noise and a random pose (the paper's
    condition of hand-placed landmarks). Retargeting: move expression x of A
    onto identity b of B and compare with the true mesh of (b, x). Dense (ICT
    datasets with --ict-source): fit every vertex of fresh identities, so no
    landmark error hides how each model transfers an expression; rows: no
    transfer, A's exact displacement pasted on B, retarget,
    direct fit, neutral fit, reconstruction. Progress goes to stderr.

    \b
    Example:
      fitface evaluate runs/gan/model.safetensors runs/3dmm/model.safetensors \\
          --data data/ict --ict-source ict_face_light.npz -o reports/ict
    """
    import time
    from pathlib import Path

    from fitface.errors import InputError
    from fitface.evaluation.dense_transfer import DenseConfig
    from fitface.evaluation.report import EvaluationOptions, run_evaluation

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a folder", out)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError("report folder exists and is not empty (pass --overwrite)", out)
    from fitface.models.registry import resolve_model_path

    models = [str(resolve_model_path(m)) for m in models]  # built-in names or files
    if not Path(data_dir).is_dir():
        raise InputError("no such dataset folder", data_dir)
    if ict_source is not None and not Path(ict_source).exists():
        raise InputError("no such file or folder", ict_source)
    if set(skip) >= set(PARTS):
        raise InputError("--skip: every part is skipped; nothing to evaluate")
    opts = EvaluationOptions(n_samples=n_samples, pairs=pairs, decoupling_n=decoupling_n, decoupling_m=decoupling_m,
                             lambdas=lambdas, test_captures=test_captures, retarget_pairs=retarget_pairs,
                             dense_retarget=dense_retarget, skip=tuple(skip), train_embedders=train_embedders,
                             seed=seed, steps=steps, similarity=similarity, noise_mm=noise_mm,
                             ict_source=ict_source, figures=not no_figures, noisy_noise_mm=noisy_landmark_mm,
                             dense=DenseConfig(identities=dense_identities))
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        click.echo(f"[{time.perf_counter() - t0:6.1f} s] {msg}", err=True)

    run_evaluation(list(models), data_dir, out, opts, log=say, progress=None if no_progress else _bars())
    click.echo(f"wrote {out / 'report.md'} and report.json ({time.perf_counter() - t0:.1f} s)", err=True)
