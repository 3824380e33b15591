"""The critic with auxiliary classifier branches, on geometry images.

Architecture (supplement Fig. 12b, a DC-GAN variant): every convolution is 3x3, stride 2,
padding 1 (halving the size) and followed by LeakyReLU(0.2); no normalisation layers
(the trainer uses a WGAN-GP critic, for which batch norm is unsuitable).

    image (B, 3, S, S)
      shared trunk:  conv 3->16 (S/2) -> conv 16->32 (S/4)
      per branch (critic, then one per factor, in dict order):
                     conv 32->64 (S/8) -> conv 64->128 (S/16) -> flatten 128 (S/16)^2 -> Linear
    critic: Linear(F, 1) (WGAN score, no sigmoid); factor k: Linear(F, n_k) class logits

With ``S = 64`` the flattened feature is ``128 * 4 * 4 = 2048`` per branch (the size of the
feature vectors of the paper's feature loss, §5.1). ``S`` must be a multiple of 16
(32 -> 512 features, 128 -> 8192).

Convention: a geometry image has channels (x, y, z) in the model unit, rows/columns as
produced by :class:`fitface.geometry.mapping.GeometryMapping`. Initialisation: convolutions
Kaiming-normal for the LeakyReLU slope (fan-in), linear heads Kaiming-normal for a linear
output (std ``1/sqrt(fan_in)``), all biases zero.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

import torch
from torch import nn

from fitface.checks import check_shape

#: LeakyReLU slope (supplement).
NEGATIVE_SLOPE = 0.2
#: Channels of the shared trunk and of each branch (Fig. 12b).
TRUNK_CHANNELS = (16, 32)
BRANCH_CHANNELS = (64, 128)
#: Total downsampling before the flatten (4 stride-2 convolutions).
DOWNSAMPLE = 16


class DiscriminatorOutput(NamedTuple):
    """Result of :meth:`Discriminator.forward`.

    Attributes:
        critic: (B,) float real/fake score (WGAN; higher = more real, no sigmoid).
        logits: ``{factor: (B, n_classes)}`` float class logits, in the factor order.
        features: ``{factor: (B, F)}`` float flattened features of each classifier branch
            (input of its Linear; ``F = 2048`` at image size 64).
    """

    critic: torch.Tensor
    logits: dict[str, torch.Tensor]
    features: dict[str, torch.Tensor]


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=2, padding=1)


class _Branch(nn.Module):
    """Two stride-2 convolutions, flatten, linear head: (B, 32, S/4, S/4) -> features, output."""

    def __init__(self, cin: int, num_outputs: int, feature_dim: int, negative_slope: float):
        super().__init__()
        c1, c2 = BRANCH_CHANNELS
        self.convs = nn.Sequential(
            _conv(cin, c1), nn.LeakyReLU(negative_slope), _conv(c1, c2), nn.LeakyReLU(negative_slope)
        )
        self.head = nn.Linear(feature_dim, num_outputs)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.convs(x).flatten(1)  # (B, 128 * (S/16)^2)
        return feat, self.head(feat)


class Discriminator(nn.Module):
    """Critic plus one auxiliary classifier per factor, with separate convolutional branches.

    Args:
        num_classes: ``{factor: number of classes}`` (dict order = branch order); may be empty
            (a plain critic). Factor names must not contain ``"."``.
        image_size: ``S``, side of the square geometry image; a multiple of 16 (paper: 64).
        negative_slope: LeakyReLU slope (0.2).

    Attributes:
        trunk: shared convolutions (B, 3, S, S) -> (B, 32, S/4, S/4).
        critic: the real/fake branch.
        classifiers: ``nn.ModuleDict`` ``{factor: branch}``.
        feature_dim: ``F = 128 * (S / 16)^2``.
    """

    def __init__(
        self,
        num_classes: Mapping[str, int],
        image_size: int = 64,
        negative_slope: float = NEGATIVE_SLOPE,
    ):
        super().__init__()
        image_size = int(image_size)
        if image_size < DOWNSAMPLE or image_size % DOWNSAMPLE:
            raise ValueError(f"Discriminator: image_size must be a positive multiple of {DOWNSAMPLE}, got {image_size}")
        num_classes = {str(k): int(v) for k, v in dict(num_classes).items()}
        for name, n in num_classes.items():
            if not name or "." in name:
                raise ValueError(f"Discriminator: invalid factor name {name!r}")
            if n < 1:
                raise ValueError(f"Discriminator: factor {name!r} needs at least 1 class, got {n}")
        self.num_classes = num_classes
        self.image_size = image_size
        self.negative_slope = float(negative_slope)
        side = image_size // DOWNSAMPLE
        self.feature_dim = BRANCH_CHANNELS[-1] * side * side

        t1, t2 = TRUNK_CHANNELS
        self.trunk = nn.Sequential(
            _conv(3, t1), nn.LeakyReLU(self.negative_slope), _conv(t1, t2), nn.LeakyReLU(self.negative_slope)
        )
        self.critic = _Branch(t2, 1, self.feature_dim, self.negative_slope)
        self.classifiers = nn.ModuleDict(
            {name: _Branch(t2, n, self.feature_dim, self.negative_slope) for name, n in num_classes.items()}
        )
        self.reset_parameters()

    @property
    def factors(self) -> tuple[str, ...]:
        return tuple(self.num_classes)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Kaiming-normal init (see module docstring), zero biases; no-op on the meta device."""
        if self.critic.head.weight.is_meta:
            return
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, a=self.negative_slope, mode="fan_in", nonlinearity="leaky_relu")
                nn.init.zeros_(mod.bias)
            elif isinstance(mod, nn.Linear):
                nn.init.kaiming_normal_(mod.weight, mode="fan_in", nonlinearity="linear")
                nn.init.zeros_(mod.bias)

    def config(self) -> dict:
        """Constructor arguments (JSON-serialisable), as stored in model files."""
        return {
            "num_classes": dict(self.num_classes),
            "image_size": self.image_size,
            "negative_slope": self.negative_slope,
        }

    def forward(self, image: torch.Tensor) -> DiscriminatorOutput:
        """Score and classify geometry images.

        Args:
            image: (B, 3, S, S) float geometry images, model unit.

        Returns:
            :class:`DiscriminatorOutput` (critic (B,), logits and features per factor).
        """
        check_shape("image", image, (None, 3, self.image_size, self.image_size))
        x = self.trunk(image)  # (B, 32, S/4, S/4)
        _, score = self.critic(x)  # (B, 1)
        logits, features = {}, {}
        for name, branch in self.classifiers.items():
            features[name], logits[name] = branch(x)  # (B, F), (B, n)
        return DiscriminatorOutput(score.squeeze(1), logits, features)
