"""Atomic, pickle-free training checkpoints (one safetensors file).

Layout of ``RUN_DIR/checkpoint.safetensors``:

* tensors: ``G.<param>``, ``D.<param>`` (state dicts), ``optG.<i>.<key>`` / ``optD.<i>.<key>``
  (Adam state of parameter ``i`` in ``param_groups`` order: ``exp_avg``, ``exp_avg_sq``,
  ``step``), ``T.<factor>`` (the fixed codes);
* the safetensors header's metadata ``{"fitface_checkpoint": JSON}`` with the format version,
  the next step to run, the resolved config, the optimisers' ``param_groups`` (hyper-parameters
  and parameter ids) and free extras (dataset fingerprint, displacement scale ...).

Nothing is pickled (``torch.save`` is pickle and is never used). The file is written to a
temporary name and renamed into place (:func:`fitface.io.atomic.atomic_path`), so a crash or a
``kill -9`` at any moment leaves either the previous checkpoint or the new one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fitface.errors import InputError
from fitface.io.atomic import atomic_path

if TYPE_CHECKING:  # torch loads when a checkpoint is written or read: the CLI imports CHECKPOINT_FILE cheaply
    import torch

#: Name of the checkpoint in the run folder.
CHECKPOINT_FILE = "checkpoint.safetensors"
FORMAT = "fitface-train-checkpoint"
VERSION = 1
META_KEY = "fitface_checkpoint"


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        step: number of generator steps completed (the next step to run).
        config: resolved config dict.
        generator, discriminator: state dicts.
        opt_g, opt_d: optimiser state dicts (``torch.optim.Optimizer.load_state_dict`` form).
        codes: factor -> (n_classes, d) fixed codes.
        extras: free JSON.
        ema: the state dict of G's exponential moving average (empty when the run has none).
        path: the file it was read from (None for one built in memory).
    """

    step: int
    config: dict
    generator: dict
    discriminator: dict
    opt_g: dict
    opt_d: dict
    codes: dict
    extras: dict = field(default_factory=dict)
    ema: dict = field(default_factory=dict)
    path: Path | None = None


def _opt_tensors(prefix: str, opt: torch.optim.Optimizer, out: dict) -> dict:
    import torch

    sd = opt.state_dict()
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if not torch.is_tensor(value):
                value = torch.tensor(value)
            out[f"{prefix}.{pid}.{key}"] = value.detach().cpu().contiguous()
    return {"param_groups": sd["param_groups"]}


def save_checkpoint(run_dir: str | os.PathLike, step: int, config: dict, generator: torch.nn.Module,
                    discriminator: torch.nn.Module, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                    codes: dict[str, torch.Tensor], extras: dict | None = None,
                    ema: torch.nn.Module | None = None) -> Path:
    """Write ``RUN_DIR/checkpoint.safetensors`` atomically; returns its path."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for prefix, mod in (("G", generator), ("D", discriminator), ("E", ema)):
        if mod is None:
            continue
        for k, v in mod.state_dict().items():
            tensors[f"{prefix}.{k}"] = v.detach().cpu().contiguous()
    groups_g = _opt_tensors("optG", opt_g, tensors)
    groups_d = _opt_tensors("optD", opt_d, tensors)
    for name, t in codes.items():
        tensors[f"T.{name}"] = t.detach().cpu().contiguous()
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "step": int(step),
        "config": config,
        "opt_g": groups_g,
        "opt_d": groups_d,
        "extras": extras or {},
    }
    path = Path(run_dir) / CHECKPOINT_FILE
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)})
        with open(tmp, "rb") as fh:  # make the bytes durable before the rename
            os.fsync(fh.fileno())
    return path


def _opt_state(prefix: str, tensors: dict, groups: dict) -> dict:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": groups["param_groups"]}


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint file (a path to the file or to its run folder); ``InputError`` if invalid."""
    from safetensors import safe_open

    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_FILE
    if not p.is_file():
        raise InputError("no checkpoint to resume from", p)
    try:
        with safe_open(str(p), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {})[META_KEY])
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (KeyError, ValueError, OSError, Exception) as exc:  # safetensors raises its own error types
        raise InputError(f"not a fitface training checkpoint ({exc})", p) from None
    if meta.get("format") != FORMAT or int(meta.get("version", -1)) > VERSION:
        raise InputError(f"not a fitface training checkpoint (format {meta.get('format')!r})", p)
    pick = lambda pre: {k[len(pre) + 1:]: v for k, v in tensors.items() if k.startswith(pre + ".")}  # noqa: E731
    return Checkpoint(
        step=int(meta["step"]),
        config=meta["config"],
        generator=pick("G"),
        discriminator=pick("D"),
        opt_g=_opt_state("optG", tensors, meta["opt_g"]),
        opt_d=_opt_state("optD", tensors, meta["opt_d"]),
        codes=pick("T"),
        extras=meta.get("extras", {}),
        ema=pick("E"),
        path=p,
    )
