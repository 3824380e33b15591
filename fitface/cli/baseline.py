"""``fitface baseline DATA_DIR -o RUN_DIR``: build the linear 3DMM comparison baseline."""

from __future__ import annotations

import click


@click.command("baseline")
@click.argument("data_dir", type=click.Path(path_type=str))
@click.option("-o", "--output", "run_dir", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Run folder: model.safetensors and baseline.json (explained variances).")
@click.option("--identity-dims", type=click.IntRange(min=1), default=65, show_default=True,
              help="Identity latent size (identity PCA modes; the GAN's z_id).")
@click.option("--expression-dims", type=click.IntRange(min=1), default=15, show_default=True,
              help="Expression latent size (expression PCA modes; the GAN's z_exp).")
@click.option("--noise-dims", type=click.IntRange(min=0), default=5, show_default=True,
              help="Size of the (all-zero) noise block, so the latent layout matches the GAN's.")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="train", show_default=True,
              help="Dataset split to build from.")
@click.option("--overwrite", is_flag=True, help="Replace an existing RUN_DIR/model.safetensors.")
@click.option("--quiet", is_flag=True, help="No progress messages.")
def baseline(data_dir, run_dir, identity_dims, expression_dims, noise_dims, split, overwrite, quiet):
    """Build the paper's additive linear 3DMM baseline (Amberg et al. 2008; paper §5.5) from DATA_DIR.

    \b
    Identity PCA on one neutral face per identity (the mean of its samples labeled
    "neutral"), expression PCA on every sample's displacement from its identity's neutral,
    with the GAN's latent sizes. The model file works with fit, batch, retarget and sample
    exactly like a trained GAN. Writes RUN_DIR/model.safetensors and RUN_DIR/baseline.json.
    """
    import json
    from pathlib import Path

    from fitface.data.format import load_dataset
    from fitface.errors import InputError
    from fitface.io.atomic import write_text
    from fitface.landmarks.correspondence import attach_to_model
    from fitface.models.builders.linear import build_linear_3dmm
    from fitface.models.latent import NOISE, LatentLayout
    from fitface.models.model_file import save_model

    rd = Path(run_dir)
    model_path = rd / "model.safetensors"
    if model_path.exists() and not overwrite:
        raise InputError("already exists (pass --overwrite to replace it)", model_path)
    blocks = [("identity", identity_dims), ("expression", expression_dims)]
    if noise_dims > 0:
        blocks.append((NOISE, noise_dims))
    layout = LatentLayout(tuple(blocks))
    ds = load_dataset(data_dir)
    say = (lambda msg: None) if quiet else (lambda msg: click.echo(msg, err=True))
    model = build_linear_3dmm(ds, layout=layout, split=split, progress=say)
    attach_to_model(model, required=False)  # photo fitting needs the template's mediapipe points
    rd.mkdir(parents=True, exist_ok=True)
    config = {"baseline": "linear_3dmm", "data_dir": str(data_dir), "split": split,
              "latent_layout": layout.to_json()}
    model_id = save_model(model_path, model, training_config=config, data_fingerprint=ds.fingerprint)
    report = {"model": model_path.name, "model_id": model_id, "latent_layout": layout.to_json(),
              "data_fingerprint": ds.fingerprint, **model.metadata["baseline"]}
    write_text(rd / "baseline.json", json.dumps(report, indent=2) + "\n")
    info = model.metadata["baseline"]
    idr, exr = info["identity"], info["expression"]
    say(f"identity: {idr['modes']} modes from {info['identities']} identities "
        f"({info['identities_skipped_without_neutral']} skipped without a neutral), "
        f"{100 * (idr['cumulative_ratio'] or [0])[-1]:.1f}% of the variance; expression: {exr['modes']} modes "
        f"from {info['expression_samples']} samples, {100 * (exr['cumulative_ratio'] or [0])[-1]:.1f}%")
    click.echo(f"built linear 3DMM in {info['build_seconds']:.1f} s; model: {model_path}", err=True)
