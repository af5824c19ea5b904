"""A small GroupNorm ResNet + FPN backbone that trains from scratch on a CPU core.

Why not MobileNetV3 or ResNet-50 from scratch: both rely on BatchNorm, which at the batch sizes a
CPU affords (2-4 photos) gives noisy statistics and eval-mode collapse unless the running
averages are recomputed ("precise BN"); depthwise MobileNet blocks also learn slowly from random
weights. GroupNorm is batch-independent (identical in train and eval mode), and a narrow
ResNet (BasicBlocks, widths 32-64-128-256) with a 64-wide FPN costs ~10x less per photo than the
MobileNetV3-FPN at the same size, so far more iterations fit into the same CPU time.

Feature maps: strides 4, 8, 16, 32 (``"0"``..``"3"``) plus a max-pooled stride-64 level
(``"pool"``), each ``out_channels`` wide, as torchvision's ``BackboneWithFPN`` returns them.

>>> import torch
>>> net = SmallResNetFPN()
>>> [(k, v.shape[1], v.shape[2]) for k, v in net(torch.zeros(1, 3, 64, 64)).items()]
[('0', 64, 16), ('1', 64, 8), ('2', 64, 4), ('3', 64, 2), ('pool', 64, 1)]
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

__all__ = ["SmallResNetFPN", "group_norm"]


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 8 groups (or fewer for narrow layers), trainable affine parameters.

    >>> group_norm(64).num_groups, group_norm(4).num_groups
    (8, 4)
    """
    return nn.GroupNorm(min(8, channels), channels)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), group_norm(cout), nn.ReLU(inplace=True)
    )


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv(cin, cout, stride)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = group_norm(cout)
        # Zero-initialised last norm: every block starts as the identity (trains faster).
        nn.init.zeros_(self.norm2.weight)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), group_norm(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm2(self.conv2(self.conv1(x)))
        return torch.relu(out + self.skip(x))


class SmallResNetFPN(nn.Module):
    """Narrow GroupNorm ResNet (strides 4-32) with a feature pyramid.

    Parameters
    ----------
    widths
        Channels of the four stages (strides 4, 8, 16, 32).
    blocks
        BasicBlocks per stage.
    out_channels
        Width of every pyramid level (``self.out_channels``, read by torchvision's MaskRCNN).
    """

    def __init__(
        self,
        widths: tuple[int, int, int, int] = (32, 64, 128, 256),
        blocks: tuple[int, int, int, int] = (1, 2, 2, 1),
        out_channels: int = 64,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv(3, 24, 2), _conv(24, widths[0], 2))
        stages = []
        cin = widths[0]
        for index, (width, n) in enumerate(zip(widths, blocks, strict=True)):
            layers = [_BasicBlock(cin, width, 1 if index == 0 else 2)]
            layers += [_BasicBlock(width, width, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            cin = width
        self.stages = nn.ModuleList(stages)
        self.fpn = FeaturePyramidNetwork(
            list(widths), out_channels, extra_blocks=LastLevelMaxPool(), norm_layer=group_norm
        )
        self.out_channels = out_channels
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """Pyramid features ``{"0": stride 4, ..., "3": stride 32, "pool": stride 64}``."""
        x = self.stem(x)
        features: OrderedDict[str, torch.Tensor] = OrderedDict()
        for index, stage in enumerate(self.stages):
            x = stage(x)
            features[str(index)] = x
        return self.fpn(features)
