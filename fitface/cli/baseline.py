"""``fitface baseline DATA_DIR --kind linear|mae|coma -o RUN_DIR``: build a comparison baseline.

The paper (§5.3-5.5, Tables 1-2) compares its GAN with three models, each built here from the
same dataset and behind the same model interface (fit, batch, retarget, sample, evaluate):

* ``linear``: the additive linear 3DMM (Amberg et al. 2008), closed form, seconds to minutes;
* ``mae``: the multilinear autoencoder (Fernandez Abrevaya et al. 2018), trained;
* ``coma``: "DeepFLAME", a PCA identity plus a CoMA mesh autoencoder (Ranjan et al. 2018) on
  displacements from each identity's neutral, trained.

Every run writes ``RUN_DIR/model.safetensors``, ``RUN_DIR/config.json`` (the resolved build
config: every field, so the run can be repeated) and ``RUN_DIR/baseline.json`` (what the build
measured: variances, losses, times; ``command_seconds`` is the whole command's wall time).
"""

from __future__ import annotations

import click

#: Kinds -> (module, config class, build function) under ``fitface.models.builders``.
TRAINED_KINDS = {
    "mae": ("fitface.models.builders.mae", "MaeBuildConfig", "build_mae"),
    "coma": ("fitface.models.builders.coma", "ComaBuildConfig", "build_coma"),
}
#: Default latent sizes per kind: the linear 3DMM keeps the GAN's layout (65, 15, 5 zero noise)
#: unless told otherwise; the trained baselines use the paper's 65 identity, 20 expression.
DEFAULT_EXPRESSION_DIMS = {"linear": 15, "mae": 20, "coma": 20}
DEFAULT_NOISE_DIMS = {"linear": 5, "mae": 0, "coma": 0}


@click.command("baseline")
@click.argument("data_dir", type=click.Path(path_type=str))
@click.option("-o", "--output", "run_dir", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Run folder: model.safetensors, config.json (resolved config) and baseline.json (report).")
@click.option("--kind", type=click.Choice(["linear", "mae", "coma"]), default="linear", show_default=True,
              help="linear: additive 3DMM (closed form); mae: multilinear autoencoder; coma: PCA identity "
                   "+ CoMA autoencoder on expression displacements (DeepFLAME).")
@click.option("--identity-dims", type=click.IntRange(min=1), default=65, show_default=True,
              help="Identity latent size (the GAN's z_id).")
@click.option("--expression-dims", type=click.IntRange(min=1), default=None,
              help="Expression latent size [default: 15 for linear (the GAN's z_exp), 20 for mae/coma "
                   "(the paper's baselines)].")
@click.option("--noise-dims", type=click.IntRange(min=0), default=None,
              help="linear only: size of the all-zero noise block, so the layout matches the GAN's "
                   "[default: 5].")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="train", show_default=True,
              help="Dataset split to build from.")
@click.option("--max-epochs", type=click.FloatRange(min=0, min_open=True), default=None,
              help="mae/coma: stop after this many epochs over the split [default: the paper's 200].")
@click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="mae/coma: wall-clock training budget; whichever of this and --max-epochs comes "
                   "first stops training [default: 30].")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="mae/coma: training batch size [default: the kind's own].")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="mae/coma: seeds the initialisation and the batch order.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for torch and BLAS [default: all].")
@click.option("--overwrite", is_flag=True, help="Replace an existing RUN_DIR/model.safetensors.")
@click.option("--quiet", is_flag=True, help="No progress messages or bar.")
def baseline(data_dir, run_dir, kind, identity_dims, expression_dims, noise_dims, split, max_epochs, max_minutes,
             batch_size, seed, threads, overwrite, quiet):
    """Build a comparison baseline of the paper (§5.5) from DATA_DIR.

    \b
    linear  identity PCA on one neutral face per identity (the mean of its
            samples labeled "neutral"), expression PCA on every sample's
            displacement from its identity's neutral (Amberg et al. 2008).
    mae     multilinear decoder mean + core x2 w_id x3 w_exp, started as the
            additive 3DMM, trained with an encoder; identity / expression
            labels pull codes together where present (Fernandez Abrevaya 2018).
    coma    PCA identity of the neutrals plus a CoMA mesh autoencoder (4
            levels of quadric down-sampling, Chebyshev K=6) on each face's
            displacement from its identity's neutral (Ranjan et al. 2018).

    \b
    The model file works with fit, batch, retarget, sample and evaluate exactly
    like a trained GAN. Training kinds show a progress bar and stop at
    --max-epochs or --max-minutes, whichever comes first.

    \b
    Example:
      fitface baseline data/ict --kind coma -o runs/coma --max-minutes 30
    """
    import json
    import time
    from pathlib import Path

    from fitface.errors import InputError
    from fitface.io.atomic import write_text

    given = {"--noise-dims": noise_dims}
    trained = {"--max-epochs": max_epochs, "--max-minutes": max_minutes, "--batch-size": batch_size}
    if kind == "linear":
        bad = [name for name, v in trained.items() if v is not None]
    else:
        bad = [name for name, v in given.items() if v is not None]
    if bad:
        only = "mae and coma" if kind == "linear" else "linear"
        raise InputError(f"{bad[0]}: only for --kind {only}")
    expression_dims = DEFAULT_EXPRESSION_DIMS[kind] if expression_dims is None else expression_dims
    rd = Path(run_dir)
    model_path = rd / "model.safetensors"
    if model_path.exists() and not overwrite:
        raise InputError("already exists (pass --overwrite to replace it)", model_path)

    from fitface.data.format import load_dataset

    ds = load_dataset(data_dir)
    say = (lambda msg: None) if quiet else (lambda msg: click.echo(msg, err=True))
    t0 = time.perf_counter()
    with _thread_limit(threads):
        if kind == "linear":
            model, config, report = _build_linear(ds, identity_dims, expression_dims,
                                                  DEFAULT_NOISE_DIMS[kind] if noise_dims is None else noise_dims,
                                                  split, say)
        else:
            model, config, report = _build_trained(ds, kind, identity_dims, expression_dims, split, max_epochs,
                                                   max_minutes, batch_size, seed, not quiet, say)
    config = {"baseline": kind, "data_dir": str(data_dir), "split": split, "threads": threads,
              "latent_layout": model.layout.to_json(), **config}

    from fitface.landmarks.correspondence import attach_to_model
    from fitface.models.model_file import save_model

    attach_to_model(model, required=False)  # photo fitting needs the template's mediapipe points
    rd.mkdir(parents=True, exist_ok=True)
    model_id = save_model(model_path, model, training_config=config, data_fingerprint=ds.fingerprint)
    write_text(rd / "config.json", json.dumps(config, indent=2, default=str) + "\n")
    report = {"kind": kind, "model": model_path.name, "model_id": model_id,
              "latent_layout": model.layout.to_json(), "data_fingerprint": ds.fingerprint,
              **report, "command_seconds": round(time.perf_counter() - t0, 3)}
    write_text(rd / "baseline.json", json.dumps(report, indent=2, default=str) + "\n")
    click.echo(f"built {kind} baseline in {report['command_seconds']:.1f} s; model: {model_path}", err=True)


def _thread_limit(threads):
    """A context that limits torch's and BLAS's threads to ``threads`` (nothing for ``None``)."""
    import contextlib

    if threads is None:
        return contextlib.nullcontext()
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(int(threads))
    return threadpool_limits(limits=int(threads))


def _build_linear(ds, identity_dims, expression_dims, noise_dims, split, say):
    """The additive 3DMM: (model, config fields, report fields)."""
    from fitface.models.builders.linear import build_linear_3dmm
    from fitface.models.latent import NOISE, LatentLayout

    blocks = [("identity", identity_dims), ("expression", expression_dims)]
    if noise_dims > 0:
        blocks.append((NOISE, noise_dims))
    layout = LatentLayout(tuple(blocks))
    model = build_linear_3dmm(ds, layout=layout, split=split, progress=say)
    info = model.metadata["baseline"]
    idr, exr = info["identity"], info["expression"]
    say(f"identity: {idr['modes']} modes from {info['identities']} identities "
        f"({info['identities_skipped_without_neutral']} skipped without a neutral), "
        f"{100 * (idr['cumulative_ratio'] or [0])[-1]:.1f}% of the variance; expression: {exr['modes']} modes "
        f"from {info['expression_samples']} samples, {100 * (exr['cumulative_ratio'] or [0])[-1]:.1f}%")
    return model, {}, dict(info)


def _build_trained(ds, kind, identity_dims, expression_dims, split, max_epochs, max_minutes, batch_size, seed,
                   show_progress, say):
    """MAE or CoMA: (model, resolved config fields, report fields)."""
    import dataclasses
    import importlib

    module, config_name, build_name = TRAINED_KINDS[kind]
    mod = importlib.import_module(module)
    config_cls, build = getattr(mod, config_name), getattr(mod, build_name)
    overrides = {"identity_dims": identity_dims, "expression_dims": expression_dims, "split": split, "seed": seed,
                 "show_progress": show_progress, "max_epochs": max_epochs, "max_minutes": max_minutes,
                 "batch_size": batch_size}
    fields = {f.name for f in dataclasses.fields(config_cls)}
    cfg = dataclasses.replace(config_cls(), **{k: v for k, v in overrides.items() if v is not None and k in fields})
    result = build(ds, cfg, progress=say)
    return result.model, {"build_config": dataclasses.asdict(cfg)}, dict(result.report)
