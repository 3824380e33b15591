"""``fitface train DATA_DIR --config RECIPE -o RUN_DIR``: train the decoupled face GAN."""

from __future__ import annotations

import click

from fitface.train.config import recipe_names


@click.command("train")
@click.argument("data_dir", type=click.Path(path_type=str))
@click.option("-c", "--config", "recipe", default="cpu", show_default=True,
              help=f"Recipe name ({', '.join(recipe_names())}; train/recipes/) or a .toml path.")
@click.option("-o", "--output", "run_dir", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Run folder: config, logs, sample grids, checkpoint and model.safetensors.")
@click.option("--max-steps", type=int, default=None, help="Generator steps to run (overrides epochs).")
@click.option("--epochs", type=float, default=None, help="Epochs (one epoch = train size / batch G steps).")
@click.option("--device", default=None, help="auto (CUDA if present, else CPU), cpu, cuda, cuda:1 ...")
@click.option("--seed", type=int, default=None, help="Master seed (runs are reproducible).")
@click.option("--batch-size", type=int, default=None, help="Global batch size.")
@click.option("--lr", type=float, default=None, help="Learning rate of both G and D.")
@click.option("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads).")
@click.option("--amp/--no-amp", default=None,
              help="bfloat16 autocast (mixed precision) where the device has native bfloat16 (a CPU with "
                   "AVX-512 BF16 or AMX, a CUDA GPU with bfloat16); elsewhere float32, with a warning.")
@click.option("--set", "sets", multiple=True, metavar="FIELD=VALUE",
              help="Set any config field, e.g. --set lambda_reg=10 --set 'betas_g=[0.5,0.9]'. Repeatable.")
@click.option("--resume", is_flag=True,
              help="Continue the run in RUN_DIR from its checkpoint, exactly (its config; --config is ignored, "
                   "options given here change only their fields).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--print-config", is_flag=True, help="Print the resolved config as TOML and exit.")
def train(data_dir, recipe, run_dir, max_steps, epochs, device, seed, batch_size, lr, threads, amp, sets, resume,
          no_progress, print_config):
    """Train the paper's decoupled identity/expression GAN on the dataset DATA_DIR.

    \b
    Writes into RUN_DIR: config.json + config.toml (the resolved config), losses.csv and
    metrics.csv, tensorboard/ (view with `tensorboard --logdir RUN_DIR`), samples/*.png
    (like the paper's Fig. 3: random / same expression / same identity), an atomic
    checkpoint.safetensors and, at the end, model.safetensors.
    Multi-GPU / multi-node: `torchrun --nproc_per_node N -m fitface train ...`.
    """
    from fitface.errors import InputError
    from fitface.train.config import load_config, parse_set

    overrides = parse_set(sets)
    for key, value in (("max_steps", max_steps), ("epochs", epochs), ("device", device), ("seed", seed),
                       ("batch_size", batch_size), ("lr_g", lr), ("lr_d", lr), ("num_threads", threads),
                       ("amp", amp)):
        if value is not None:
            overrides[key] = value
    if no_progress:
        overrides["progress"] = False
    from pathlib import Path

    from fitface.train.checkpoint import CHECKPOINT_FILE

    rd = Path(run_dir)
    checkpoint = None
    if resume:  # the checkpointed run's config, with only the options given here changed
        if not (rd / CHECKPOINT_FILE).is_file():
            raise InputError(f"--resume: no {CHECKPOINT_FILE} in the run folder", rd)
        from fitface.train.checkpoint import load_checkpoint
        from fitface.train.trainer import resume_config

        checkpoint = load_checkpoint(rd / CHECKPOINT_FILE)  # read once: its config here, its state in the trainer
        cfg = resume_config(checkpoint, overrides)
    else:
        cfg = load_config(recipe, overrides)
    if print_config:
        click.echo(cfg.to_toml(), nl=False)
        return
    if not resume and (rd / CHECKPOINT_FILE).exists():
        raise InputError("already holds a run (use --resume to continue it, or another -o)", rd)

    from fitface.train.trainer import Trainer

    trainer = Trainer(data_dir, cfg, rd, resume=checkpoint or False)
    del checkpoint  # the trainer holds what it restored
    if trainer.ctx.enabled and trainer.ctx.is_main:
        click.echo(f"data parallel: {type(trainer.G_train).__name__} over {trainer.ctx.world_size} processes "
                   f"(global batch {cfg.batch_size}, {cfg.batch_size // trainer.ctx.world_size} per process)", err=True)
    try:
        result = trainer.train(finish_model=add_mediapipe_set)
    finally:
        from fitface.train.distributed import shutdown

        shutdown(trainer.ctx)
    if trainer.ctx.is_main:
        click.echo(f"trained {result.steps} steps; model: {result.model_path}", err=True)


def add_mediapipe_set(model) -> None:
    """Add the template's "mediapipe" landmark set to the final model before it is written: photo
    fitting needs it. A template on which mediapipe finds no face leaves the model without it
    (a warning; ``fitface landmarks mediapipe MODEL`` can add it later)."""
    from fitface.landmarks.correspondence import attach_to_model

    attach_to_model(model, required=False)
