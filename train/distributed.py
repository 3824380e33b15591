"""Data-parallel training under ``torchrun`` (multi-GPU, multi-node; gloo on CPU).

The networks are wrapped in ``torch.nn.parallel.DistributedDataParallel`` (:func:`wrap_ddp`):

* every process builds the same models from the same seed; DDP's constructor broadcasts rank
  0's parameters, so they start identical;
* every process computes the loss on its shard of the global batch (the draws are global and
  a pure function of (seed, step), see :mod:`.sampling`) and runs backward; DDP averages the
  gradients across processes during that backward, so the (identical) optimiser steps keep
  the parameters identical without further communication.

WGAN-GP's penalty needs ``autograd.grad(..., create_graph=True)``. DDP does not synchronise
such out-of-place gradients (pytorch/pytorch#63929), and that is what the penalty needs: each
process takes its own samples' input gradients (no parameter gradient is accumulated, so no
all-reduce fires), and the ordinary ``backward()`` of the total loss, which runs through the
double-backward graph, is the one DDP reduces (the pattern of pytorch/pytorch#63812). DDP also
needs one wrapped forward per backward: the trainer runs the critic step's three uses of D
(real and fake, interpolates, classifiers) as one module call (``trainer.CriticPass``).

Convention: ``world_size == 1`` (no torchrun) makes every function here a no-op and
:func:`wrap_ddp` returns the module itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistContext:
    """Where this process sits. ``rank`` 0 writes logs, checkpoints and the model file."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This process's slice of a global batch of ``n`` rows (``n % world_size == 0``)."""
        b = n // self.world_size
        return slice(self.rank * b, (self.rank + 1) * b)


def env_world_size() -> int:
    """``WORLD_SIZE`` set by torchrun (1 when absent)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: str) -> DistContext:
    """Join the process group when launched by torchrun (``WORLD_SIZE > 1``).

    Backend: NCCL for CUDA devices, gloo otherwise. Returns a single-process context when
    not under torchrun.
    """
    world = env_world_size()
    if world <= 1:
        return DistContext()
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(),
                       local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (if this process joined one)."""
    if ctx.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def wrap_ddp(module: torch.nn.Module, ctx: DistContext, device: torch.device,
             find_unused_parameters: bool = False) -> torch.nn.Module:
    """``DistributedDataParallel(module)`` when running under torchrun, else ``module``.

    Args:
        module: the network (its parameters are broadcast from rank 0 here).
        ctx: the process context.
        device: the module's device (CUDA: one device per process, ``device_ids=[index]``).
        find_unused_parameters: let some parameters get no gradient in a step (a classifier
            branch that an ablation or a batch without labels leaves out). Their ``.grad``
            stays None on every process, as it does without DDP.
    """
    if not ctx.enabled:
        return module
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else ctx.local_rank] if device.type == "cuda" else None
    # the networks' buffers are constants: no sync before each forward (the keyword was renamed)
    sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters \
        else "broadcast_buffers"
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused_parameters,
                                   **{sync: False})


def average_scalars(values: dict[str, float], ctx: DistContext) -> dict[str, float]:
    """Mean of each scalar across processes (for logging)."""
    if not ctx.enabled or not values:
        return values
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= ctx.world_size
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        import torch.distributed as dist

        dist.barrier()
