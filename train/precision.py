"""Whether bfloat16 autocast runs on this device, and why.

Convention: ``amp = true`` asks for bfloat16 autocast *where the device computes bfloat16
natively*: a CUDA GPU with bfloat16, or a CPU whose oneDNN has bfloat16 kernels (AVX-512 with
BF16, AMX, or an Arm CPU with BF16). Elsewhere the run trains in float32 and says so, because
bfloat16 autocast on a CPU without such kernels falls back to reference kernels: measured on a
2-core AMD EPYC with AVX2 only (2026-12-02), the cpu recipe's step on the ICT set took about 7 s
under autocast against 0.75 s in float32. ``amp_emulated = true`` forces autocast on such a
CPU anyway (the numbers are those of bfloat16, the speed is not).

A bfloat16 run resumed where autocast is refused continues in float32: it is not bit-exact
with the run it continues (the warning says so).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Precision", "native_bfloat16", "resolve_precision"]


@dataclass(frozen=True)
class Precision:
    """What a run computes in.

    Attributes:
        autocast: bfloat16 autocast on (G's and D's matmuls and convolutions in bfloat16).
        warning: why ``amp`` was asked for and refused (``""`` otherwise).
    """

    autocast: bool
    warning: str = ""


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 matmuls and convolutions natively.

    CPU: oneDNN's own bfloat16 check (what decides whether its bfloat16 kernels run); CUDA:
    ``torch.cuda.is_bf16_supported()``. Other devices: False.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        try:
            return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a build without oneDNN's check
            return False
    return False


def resolve_precision(amp: bool, device: torch.device, emulated: bool = False) -> Precision:
    """The run's precision for the config's ``amp`` and ``amp_emulated`` on ``device``.

    Args:
        amp: bfloat16 autocast asked for.
        device: the training device.
        emulated: allow autocast on a CPU without native bfloat16 (correct, about 10x slower).
    """
    device = torch.device(device)
    if not amp:
        return Precision(False)
    if native_bfloat16(device) or (emulated and device.type == "cpu"):
        return Precision(True)
    if device.type == "cpu":
        cap = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")()
        return Precision(False, f"--amp: this CPU has no native bfloat16 (oneDNN reports none; vector unit {cap}); "
                                "bfloat16 autocast would run on reference kernels, about 10x slower than float32; "
                                "training in float32 (a resumed bfloat16 run is then not bit-exact). "
                                "Set amp_emulated=true to force it")
    return Precision(False, f"--amp: this {device.type} device has no bfloat16; training in float32")
