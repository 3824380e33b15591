"""ResNet-18 embedding network (written here; torchvision is not available beside torch CPU).

The decoupling embedders of the paper (supplement, "Decoupling Evaluation - Implementation
Details") are ResNet-18s on 224 x 224 normal-map renders, trained with a triplet loss to a
128-d embedding. :class:`ResNet18Embedder` is that network with two knobs for CPUs:

* ``width``: a multiplier on the stage widths 64-128-256-512 (1.0 = the standard network);
* ``input_size``: the square input side in pixels (224 in the paper). The network is fully
  convolutional with a global average pool, so any size >= 32 works; the value is recorded
  (and checked on input) so that an embedder is always fed the renders it was trained on.

Architecture (He et al. 2016, "basic block" variant): conv 7x7 stride 2 -> BN -> ReLU ->
max-pool 3x3 stride 2 -> 4 stages of 2 :class:`BasicBlock` (stages 2-4 start with stride 2 and a
1x1 projection shortcut) -> global average pool -> Linear(512 * width, embedding_dim) ->
L2 normalisation.

Convention:
    * Input: (B, 3, S, S) float, a normal-map image scaled to [-1, 1] (``uint8 / 127.5 - 1``,
      see :func:`images_to_tensor`); S = ``input_size``.
    * Output: (B, embedding_dim) float, unit L2 norm (rows lie on the unit sphere), so the
      squared Euclidean distance of two embeddings lies in [0, 4].
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fitface.checks import check_shape

#: Stage widths of ResNet-18 at width multiplier 1 and blocks per stage.
STAGE_WIDTHS = (64, 128, 256, 512)
STAGE_BLOCKS = (2, 2, 2, 2)
#: Smallest accepted input side (the stem and three strided stages divide it by 32).
MIN_INPUT_SIZE = 32


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection (1x1 conv-BN projection when the
    shape changes). (B, c_in, H, W) -> (B, c_out, H / stride, W / stride)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.shortcut(x))


class ResNet18Embedder(nn.Module):
    """ResNet-18 trunk + a linear head to an L2-normalised embedding.

    Args:
        embedding_dim: output size (paper: 128).
        width: multiplier on the stage widths (1.0 = standard ResNet-18; widths are rounded
            to integers >= 4).
        input_size: expected square input side S in pixels (paper: 224).
        in_channels: image channels (3 for normal maps).
    """

    def __init__(self, embedding_dim: int = 128, width: float = 1.0, input_size: int = 224, in_channels: int = 3):
        super().__init__()
        if not embedding_dim >= 1:
            raise ValueError(f"embedding_dim: expected >= 1, got {embedding_dim}")
        if not (np.isfinite(width) and width > 0):
            raise ValueError(f"width: expected a positive multiplier, got {width}")
        if int(input_size) < MIN_INPUT_SIZE:
            raise ValueError(f"input_size: expected >= {MIN_INPUT_SIZE} pixels, got {input_size}")
        self.embedding_dim = int(embedding_dim)
        self.width = float(width)
        self.input_size = int(input_size)
        self.in_channels = int(in_channels)
        widths = [max(4, int(round(c * self.width))) for c in STAGE_WIDTHS]
        self.stem = nn.Sequential(
            nn.Conv2d(self.in_channels, widths[0], 7, 2, 3, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        stages = []
        c_in = widths[0]
        for i, (c, n) in enumerate(zip(widths, STAGE_BLOCKS)):
            blocks = [BasicBlock(c_in, c, stride=1 if i == 0 else 2)]
            blocks += [BasicBlock(c, c) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            c_in = c
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c_in, self.embedding_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-normal convolutions, unit BN, zero-initialised last BN of each block (so every
        residual block starts as the identity), default linear head."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def config(self) -> dict:
        """Constructor arguments (JSON-serialisable)."""
        return {"arch": "resnet18", "embedding_dim": self.embedding_dim, "width": self.width,
                "input_size": self.input_size, "in_channels": self.in_channels}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, S, S) float in [-1, 1] -> unit embeddings (B, embedding_dim)."""
        check_shape("x", x, (None, self.in_channels, self.input_size, self.input_size))
        h = self.stages(self.stem(x))  # (B, 512w, S/32, S/32)
        h = self.pool(h).flatten(1)  # (B, 512w)
        return nn.functional.normalize(self.head(h), dim=1)


def images_to_tensor(images: np.ndarray | torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, H, W, 3) uint8 RGB images -> (B, 3, H, W) float in [-1, 1] (``x / 127.5 - 1``)."""
    t = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    check_shape("images", t, (None, None, None, 3))
    return t.permute(0, 3, 1, 2).to(dtype).div(127.5).sub(1.0).contiguous()
