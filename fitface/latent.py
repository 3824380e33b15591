"""Latent-code layout: named blocks of the generator's input vector.

Convention: the latent code ``z`` of dimension ``D`` is the concatenation of named
blocks in a fixed order, the factor blocks first (e.g. ``identity``, ``expression``)
and the block named ``"noise"`` last (paper §4.3: ``z = {z_id, z_exp, z_noise}``,
dimensions (65, 15, 5) in §5.1). Every block but ``"noise"`` is a *factor*: a factor
has class labels in the training data and a classifier branch in the discriminator.
Codes are sampled from N(0, I) (supplement Fig. 12a).

This module does not import torch: :meth:`LatentLayout.split` works on any array
that supports slicing on its last axis, :meth:`LatentLayout.join` on torch tensors
or numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

#: Name of the block that is not a factor (it has no labels and no classifier).
NOISE = "noise"


@dataclass(frozen=True)
class LatentLayout:
    """Named, ordered blocks of a latent vector.

    Attributes:
        blocks: ``((name, size), ...)`` in vector order; sizes are positive ints, names are
            unique identifiers without ``"."``; ``"noise"``, if present, is the last block.
    """

    blocks: tuple[tuple[str, int], ...]

    def __post_init__(self):
        blocks = tuple((str(n), int(d)) for n, d in self.blocks)
        object.__setattr__(self, "blocks", blocks)
        if not blocks:
            raise ValueError("LatentLayout: blocks must not be empty")
        names = [n for n, _ in blocks]
        if len(set(names)) != len(names):
            raise ValueError(f"LatentLayout: duplicate block names in {names}")
        for name, size in blocks:
            if not name or "." in name or not name.isidentifier():
                raise ValueError(f"LatentLayout: block name {name!r} must be a Python identifier")
            if size <= 0:
                raise ValueError(f"LatentLayout: block {name!r} has size {size}; sizes must be positive")
        if NOISE in names and names[-1] != NOISE:
            raise ValueError(f"LatentLayout: block {NOISE!r} must be last, got order {names}")
        offsets, start = {}, 0
        for name, size in blocks:
            offsets[name] = slice(start, start + size)
            start += size
        object.__setattr__(self, "_slices", offsets)

    # -- sizes -------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Total dimension ``D`` (sum of the block sizes)."""
        return sum(d for _, d in self.blocks)

    @property
    def names(self) -> tuple[str, ...]:
        """All block names in vector order (factors, then ``"noise"`` if present)."""
        return tuple(n for n, _ in self.blocks)

    @property
    def factors(self) -> tuple[str, ...]:
        """Factor names in vector order: every block but ``"noise"``."""
        return tuple(n for n, _ in self.blocks if n != NOISE)

    def size(self, name: str) -> int:
        """Dimension of block ``name``."""
        s = self.slice(name)
        return s.stop - s.start

    def slice(self, name: str) -> slice:
        """Index range of block ``name`` in the latent vector, e.g. ``slice(65, 80)``."""
        try:
            return self._slices[name]  # type: ignore[attr-defined]
        except KeyError:
            raise KeyError(f"LatentLayout: no block {name!r}; blocks are {list(self.names)}") from None

    # -- vectors -----------------------------------------------------------------------
    def split(self, z: Any) -> dict[str, Any]:
        """Views of each block of ``z``.

        Args:
            z: (..., D) tensor or array.

        Returns:
            ``{name: (..., d_name)}`` views (no copy), in vector order.
        """
        if z.shape[-1] != self.dim:
            raise ValueError(
                f"z: expected last dimension {self.dim} (layout {self.describe()}), got shape {tuple(z.shape)}"
            )
        return {name: z[..., self.slice(name)] for name in self.names}

    def join(self, parts: Mapping[str, Any], fill: float | None = None) -> Any:
        """Concatenate blocks into a latent vector (inverse of :meth:`split`).

        Args:
            parts: ``{name: (..., d_name)}`` tensors (or numpy arrays), all the same type and
                leading shape. Unknown names raise ``ValueError``.
            fill: value for missing blocks (e.g. ``0.0`` for a zero noise code); ``None``
                (default) makes a missing block an error.

        Returns:
            (..., D) tensor (or array) of the dtype/device of the first given part.
        """
        unknown = set(parts) - set(self.names)
        if unknown:
            raise ValueError(f"join: unknown blocks {sorted(unknown)}; layout has {list(self.names)}")
        if not parts:
            raise ValueError("join: no blocks given")
        ref = next(iter(parts.values()))
        lead = tuple(ref.shape[:-1])
        is_numpy = type(ref).__module__.startswith("numpy")
        chunks = []
        for name, size in self.blocks:
            if name in parts:
                x = parts[name]
                if tuple(x.shape) != lead + (size,):
                    raise ValueError(f"join: block {name!r} expected shape {lead + (size,)}, got {tuple(x.shape)}")
                chunks.append(x)
            elif fill is None:
                raise ValueError(f"join: block {name!r} missing (pass fill= to fill it with a constant)")
            elif is_numpy:
                import numpy as np

                chunks.append(np.full(lead + (size,), fill, dtype=ref.dtype))
            else:
                chunks.append(ref.new_full(lead + (size,), fill))
        if is_numpy:
            import numpy as np

            return np.concatenate(chunks, axis=-1)
        import torch

        return torch.cat(chunks, dim=-1)

    # -- serialisation -----------------------------------------------------------------
    def describe(self) -> str:
        """Short text form, e.g. ``"identity:65+expression:15+noise:5"``."""
        return "+".join(f"{n}:{d}" for n, d in self.blocks)

    def to_json(self) -> list[list[Any]]:
        """JSON form: ``[["identity", 65], ["expression", 15], ["noise", 5]]``."""
        return [[n, d] for n, d in self.blocks]

    @classmethod
    def from_json(cls, obj: Any) -> "LatentLayout":
        """Inverse of :meth:`to_json`; ``ValueError`` on a malformed value."""
        try:
            blocks = tuple((str(n), int(d)) for n, d in obj)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"malformed latent layout {obj!r}: {exc}") from None
        return cls(blocks)

    @classmethod
    def from_sizes(cls, **sizes: int) -> "LatentLayout":
        """``LatentLayout.from_sizes(identity=65, expression=15, noise=5)`` (keyword order kept)."""
        return cls(tuple(sizes.items()))


#: The paper's layout (§5.1): (z_id, z_exp, z_noise) = (65, 15, 5).
PAPER_LAYOUT = LatentLayout((("identity", 65), ("expression", 15), (NOISE, 5)))


def check_two_factor_layout(layout: LatentLayout, model: str, identity_dim: int, expression_dim: int,
                            noise_dim: int = 0) -> None:
    """ValueError unless ``layout`` is ``(identity_dim, expression_dim[, "noise": noise_dim])`` in
    block sizes: the layout of a model with one identity and one expression factor (the MAE's
    multilinear generator, CoMA's). ``model`` names it in the message (``"a CoMA generator"``)."""
    sizes = [d for _, d in layout.blocks]
    want = [identity_dim, expression_dim] + ([noise_dim] if noise_dim else [])
    noise_ok = len(layout.blocks) < 3 or layout.blocks[2][0] == "noise"
    if sizes != want or not noise_ok:
        raise ValueError(f"layout {layout.describe()}: {model} needs blocks of sizes "
                         f"(identity {identity_dim}, expression {expression_dim}"
                         + (f", noise {noise_dim})" if noise_dim else ")"))
