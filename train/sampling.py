"""Latent and label sampling for training: fixed per-label codes T, phase batches, per-step RNG.

Convention:
    * Every random draw of training step ``s`` comes from generators seeded by
      :func:`step_seed` ``(seed, s, stream)`` (a SHA-256 hash), so a draw is a pure function
      of (seed, step, purpose): a run resumed at step ``s`` repeats exactly the draws an
      uninterrupted run makes. Draws are *global* (the whole batch); a distributed process
      takes its shard ``[rank * b, (rank + 1) * b)`` of each draw, so 1 and N processes see
      the same batch.
    * Phases: step ``s`` is a phase of factor ``factors[s % K]`` (the *labeled* factor): its
      code comes from the fixed codes ``T[factor][label]`` with a label drawn per sample; every
      other factor's code (and the noise) is drawn from N(0, I). The unlabeled factors' codes
      are shared by *pairs* of adjacent samples ``(2i, 2i + 1)``, which the feature loss
      (eq. 10-11) compares; the noise differs within a pair.
    * Labels of a phase are drawn ``"uniform"`` over classes or ``"empirical"`` (the labeled
      class frequencies of the training set).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import torch

#: Names of the random streams of one step (each gets its own seed).
STREAMS = ("data", "codes", "critic_codes", "gp", "noise", "metrics")


def step_seed(seed: int, step: int, stream: str, k: int = 0) -> int:
    """A 63-bit seed that is a pure function of (seed, step, stream, k)."""
    h = hashlib.sha256(f"fitface-train/{int(seed)}/{int(step)}/{stream}/{int(k)}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def torch_generator(seed: int, step: int, stream: str, k: int = 0, device="cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with :func:`step_seed`."""
    g = torch.Generator(device=device)
    g.manual_seed(step_seed(seed, step, stream, k))
    return g


def fixed_codes(layout, num_classes: Mapping[str, int], seed: int) -> dict[str, torch.Tensor]:
    """Draw the fixed per-label codes T once (paper §4.3).

    Args:
        layout: :class:`fitface.models.latent.LatentLayout`.
        num_classes: factor -> number of classes.
        seed: master seed.

    Returns:
        ``{factor: (n_classes, d_factor) float32}`` ~ N(0, I), CPU.
    """
    out = {}
    for name in layout.factors:
        g = torch_generator(seed, -1, "fixed_codes/" + name)
        out[name] = torch.randn(int(num_classes[name]), layout.size(name), generator=g)
    return out


class PhaseBatch(NamedTuple):
    """Codes of one phase batch.

    Attributes:
        z: (B, D) float latent codes.
        factor: the labeled factor of the phase (or None for fully random codes).
        labels: (B,) int64 labels of ``factor`` (the rows of T used), or None.
    """

    z: torch.Tensor
    factor: str | None
    labels: torch.Tensor | None


@dataclass
class LabelSampler:
    """Draws labels for the fixed-code phases.

    Args:
        num_classes: factor -> number of classes.
        probabilities: factor -> (n,) class probabilities for ``"empirical"`` sampling
            (None = uniform for every factor).
    """

    num_classes: Mapping[str, int]
    probabilities: Mapping[str, np.ndarray] | None = None

    def draw(self, factor: str, n: int, g: torch.Generator) -> torch.Tensor:
        """(n,) int64 labels of ``factor``."""
        if self.probabilities is not None and factor in self.probabilities:
            p = torch.as_tensor(self.probabilities[factor], dtype=torch.float64)
            return torch.multinomial(p, n, replacement=True, generator=g)
        return torch.randint(int(self.num_classes[factor]), (n,), generator=g)


def phase_factor(factors: Sequence[str], step: int) -> str:
    """The labeled factor of step ``step``: ``factors[step % K]``."""
    return factors[step % len(factors)]


def phase_batch(layout, codes: Mapping[str, torch.Tensor], sampler: LabelSampler, factor: str,
                n: int, g: torch.Generator) -> PhaseBatch:
    """Codes of a phase batch (see the module docstring).

    Args:
        layout: the latent layout.
        codes: fixed codes T (:func:`fixed_codes`).
        sampler: label sampler.
        factor: the labeled factor.
        n: global batch size (even).
        g: CPU generator of this step's ``"codes"`` stream.

    Returns:
        :class:`PhaseBatch` with ``z`` (n, D) float32 on the CPU.
    """
    if n % 2:
        raise ValueError(f"n: expected an even batch size, got {n}")
    labels = sampler.draw(factor, n, g)  # (n,)
    parts = {}
    for name, size in layout.blocks:
        if name == factor:
            parts[name] = codes[name][labels]  # (n, d)
        elif name in layout.factors:
            half = torch.randn(n // 2, size, generator=g)  # one code per pair
            parts[name] = half.repeat_interleave(2, dim=0)  # (n, d): rows 2i, 2i+1 share
        else:  # noise: independent per sample
            parts[name] = torch.randn(n, size, generator=g)
    return PhaseBatch(layout.join(parts), factor, labels)


def random_batch(layout, n: int, g: torch.Generator) -> PhaseBatch:
    """Fully random codes z ~ N(0, I): (n, D)."""
    return PhaseBatch(torch.randn(n, layout.dim, generator=g), None, None)


def shared_code_batch(layout, shared: str | None, n: int, g: torch.Generator) -> torch.Tensor:
    """(n, D) codes ~ N(0, I) in which block ``shared`` (if not None) is one code for all rows.

    Used by the Fig.-3-like grids and the diversity metric.
    """
    z = torch.randn(n, layout.dim, generator=g)
    if shared is not None:
        sl = layout.slice(shared)
        z[:, sl] = torch.randn(1, sl.stop - sl.start, generator=g)
    return z


def real_batch_indices(seed: int, r: int, num_train: int, batch: int) -> np.ndarray:
    """Positions (into the training index list) of real batch number ``r``.

    Real batches are numbered ``r = step * critic_steps + k`` (critic step ``k`` of generator
    step ``step``). Sampling is without replacement within a data epoch of
    ``per_epoch = max(1, num_train // batch)`` batches: data epoch ``r // per_epoch`` is a
    permutation of the training set drawn from ``(seed, epoch)`` and the batch is its slice
    number ``r % per_epoch`` (the permutation is cycled when ``batch > num_train``).

    Returns:
        (batch,) int64 positions in ``[0, num_train)``.
    """
    per_epoch = max(1, num_train // batch)
    epoch, pos = divmod(int(r), per_epoch)
    perm = np.random.default_rng(step_seed(seed, epoch, "data_epoch")).permutation(num_train)
    take = np.arange(pos * batch, pos * batch + batch) % num_train
    return perm[take].astype(np.int64)


def interaction_codes(layout, factor: str, n: int, g: torch.Generator) -> torch.Tensor:
    """Code quadruples for :func:`fitface.train.losses.interaction_penalty`.

    Args:
        layout: the latent layout. factor: the block ``e`` that is swapped.
        n: quadruples. g: CPU generator.

    Returns:
        (4n, D) float32: rows ``4i .. 4i + 3`` are ``(a, e), (a, e'), (b, e), (b, e')`` with
        ``a, b`` (every block but ``factor``) and ``e, e'`` (block ``factor``) ~ N(0, I).
    """
    sl = layout.slice(factor)
    ab = torch.randn(n, 2, 1, layout.dim, generator=g).expand(n, 2, 2, layout.dim).clone()  # (n, 2[a|b], 2[e|e'], D)
    e = torch.randn(n, 1, 2, sl.stop - sl.start, generator=g)  # (n, 1, 2[e|e'], d)
    ab[..., sl] = e.expand(n, 2, 2, sl.stop - sl.start)
    return ab.reshape(4 * n, layout.dim)
