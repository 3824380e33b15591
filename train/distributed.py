"""Data-parallel training under ``torchrun`` (multi-GPU, multi-node; gloo on CPU).

What this does (and why not ``DistributedDataParallel``): WGAN-GP's penalty needs a double
backward (``autograd.grad(..., create_graph=True)``), which DDP's gradient reducer does not
support. The trainer therefore does what DDP does, by hand, with ``torch.distributed``:

* every process builds the same models from the same seed, then rank 0's parameters are
  broadcast (:func:`broadcast_module`) so they start identical;
* every process computes the loss on its shard of the global batch (the draws are global and
  a pure function of (seed, step), see :mod:`.sampling`), runs backward, and the gradients are
  averaged across processes in one flattened all-reduce per optimiser step
  (:func:`average_gradients`) before the (identical) optimiser steps; parameters therefore
  stay identical on every process without further communication.

Convention: ``world_size == 1`` (no torchrun) makes every function here a no-op.
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


def broadcast_module(module: torch.nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's parameters and buffers to every process."""
    if not ctx.enabled:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            if t.is_sparse:
                continue
            dist.broadcast(t.data, src=0)


def average_gradients(params, ctx: DistContext) -> None:
    """Average ``.grad`` of ``params`` across processes (one flattened all-reduce)."""
    if not ctx.enabled:
        return
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(ctx.world_size)
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


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
