"""A tiny batched Adam optimiser on numpy arrays (Kingma & Ba 2015, the paper's ref. [25]).

Convention: the parameter array (e.g. latent codes ``(N, D)``) is updated in place; every row
is an independent problem sharing the step counter and learning rate. A gradient entry that is
exactly zero at every step (a masked / frozen coordinate) leaves its parameter exactly
unchanged: its moments stay zero and the update ``m / (sqrt(v) + eps)`` is 0.
"""

from __future__ import annotations

import math

import numpy as np

#: Default Adam hyper-parameters (the usual ones).
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


def cosine_lr(step: int, steps: int, lr: float, final_fraction: float = 0.05, warmup: int = 0) -> float:
    """Learning rate at ``step`` (0-based) of ``steps``: optional linear warm-up, then cosine
    decay from ``lr`` to ``lr * final_fraction``."""
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup - 1)
    t = min(max(t, 0.0), 1.0)
    return lr * (final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + math.cos(math.pi * t)))


class Adam:
    """Adam on one array, in place.

    Args:
        params: (N, D) float array, updated in place by :meth:`step`.
        lr: learning rate (may be changed between steps, e.g. by a schedule).
        betas, eps: Adam constants.
    """

    def __init__(self, params: np.ndarray, lr: float = 0.05, betas: tuple[float, float] = (BETA1, BETA2),
                 eps: float = EPS):
        if not isinstance(params, np.ndarray) or params.dtype.kind != "f":
            raise ValueError("params: expected a float numpy array")
        self.params = params
        self.lr = float(lr)
        self.beta1, self.beta2 = (float(b) for b in betas)
        self.eps = float(eps)
        self.m = np.zeros_like(params)
        self.v = np.zeros_like(params)
        self.t = 0

    def reset(self, rows: np.ndarray | slice | None = None) -> None:
        """Zero the moments (of ``rows`` only, if given); the step counter is kept."""
        sel = slice(None) if rows is None else rows
        self.m[sel] = 0.0
        self.v[sel] = 0.0

    def step(self, grad: np.ndarray) -> None:
        """One update with gradient ``grad`` (same shape as ``params``)."""
        if grad.shape != self.params.shape:
            raise ValueError(f"grad: expected shape {self.params.shape}, got {grad.shape}")
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        self.m *= b1
        self.m += (1.0 - b1) * grad
        self.v *= b2
        self.v += (1.0 - b2) * np.square(grad)
        c1 = 1.0 - b1**self.t
        c2 = 1.0 - b2**self.t
        step_size = self.lr * math.sqrt(c2) / c1
        denom = np.sqrt(self.v)
        denom += self.eps * math.sqrt(c2)
        self.params -= step_size * (self.m / denom)
