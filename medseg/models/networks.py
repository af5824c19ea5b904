"""Segmentation networks: configured MONAI U-Nets and a 3D FCN in the FCN-8s spirit.

All networks take ``(batch, in_channels, D, H, W)`` float tensors and return logits
``(batch, out_channels, D, H, W)`` of the *same* spatial size for any input size (odd sizes
included): the U-Net pads to a multiple of its total stride and crops back; the FCN uses
``output_size`` on its transposed convolutions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as nnf
from torch import nn

from medseg.errors import ModelError

__all__ = [
    "FCN3D",
    "PadToMultiple",
    "deep_supervision_loss",
    "deep_supervision_weights",
    "dynunet3d",
    "fcn3d",
    "unet3d",
]


class PadToMultiple(nn.Module):
    """Wrap a network that needs sizes divisible by ``multiple``: pad, run, crop back.

    Padding is replicate-mode at the high end of each axis, so voxel ``(0, 0, 0)`` keeps its
    place and the crop is exact.
    """

    def __init__(self, net: nn.Module, multiple: int) -> None:
        super().__init__()
        self.net = net
        self.multiple = int(multiple)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        pad: list[int] = []
        for n in reversed(size):
            pad += [0, (-int(n)) % self.multiple]
        y = self.net(nnf.pad(x, pad, mode="replicate") if any(pad) else x)
        return y[..., : size[0], : size[1], : size[2]]


def unet3d(
    *,
    in_channels: int,
    out_channels: int,
    channels: Sequence[int] = (16, 32, 64, 128),
    num_res_units: int = 1,
    dropout: float = 0.0,
    norm: str = "instance",
) -> nn.Module:
    """3D U-Net (MONAI ``UNet``: strided-conv encoder, transposed-conv decoder, copied skips).

    Parameters
    ----------
    in_channels, out_channels
        Image channels (1 for CT) and classes including background.
    channels
        Feature maps per level; ``len(channels) - 1`` stride-2 downsamplings.
    num_res_units
        Residual units per block (MONAI); 1 is a good CPU-sized default.
    dropout
        Dropout probability in every block.
    norm
        ``"instance"`` (default, robust at batch size 1–2) or ``"batch"``.

    Examples
    --------
    >>> import torch
    >>> net = unet3d(in_channels=1, out_channels=3, channels=(4, 8))
    >>> net(torch.zeros(1, 1, 9, 10, 7)).shape
    torch.Size([1, 3, 9, 10, 7])
    """
    from monai.networks.nets import UNet

    if len(channels) < 2:
        raise ModelError(f"unet3d needs at least 2 channel levels; got {list(channels)}.")
    net = UNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(int(c) for c in channels),
        strides=(2,) * (len(channels) - 1),
        num_res_units=num_res_units,
        dropout=dropout,
        norm=norm.upper(),
    )
    return PadToMultiple(net, 2 ** (len(channels) - 1))


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, padding=1, bias=False),
        nn.InstanceNorm3d(cout, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
        nn.Conv3d(cout, cout, 3, padding=1, bias=False),
        nn.InstanceNorm3d(cout, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
    )


class FCN3D(nn.Module):
    """3D FCN-8s: conv encoder, 1×1×1 score layers at strides 2, 4 and 8, learned upsampling.

    As in Long et al. (2015), the coarsest score map is upsampled by a learned transposed
    convolution and summed with the score of the next finer level (skip fusion), twice, then
    a last learned upsampling returns to the input size. Unlike a U-Net, the decoder carries only
    class scores, not feature maps.
    """

    def __init__(self, in_channels: int, out_channels: int, channels: Sequence[int]) -> None:
        super().__init__()
        if len(channels) != 4:
            raise ModelError(f"fcn3d needs 4 channel levels (full, /2, /4, /8); got {channels}.")
        c = [int(v) for v in channels]
        self.enc0 = _block(in_channels, c[0])
        self.enc1 = _block(c[0], c[1])
        self.enc2 = _block(c[1], c[2])
        self.enc3 = _block(c[2], c[3])
        self.pool = nn.MaxPool3d(2, ceil_mode=False)
        k = out_channels
        self.score2 = nn.Conv3d(c[1], k, 1)
        self.score4 = nn.Conv3d(c[2], k, 1)
        self.score8 = nn.Conv3d(c[3], k, 1)
        self.up8to4 = nn.ConvTranspose3d(k, k, 2, stride=2)
        self.up4to2 = nn.ConvTranspose3d(k, k, 2, stride=2)
        self.up2to1 = nn.ConvTranspose3d(k, k, 2, stride=2)
        # full-resolution refinement of the fused scores with the first-level features
        self.score1 = nn.Conv3d(c[0], k, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        pad: list[int] = []
        for n in reversed(size):  # >= 16 voxels: instance norm needs 2 per axis at 1/8
            pad += [0, max(0, 16 - int(n))]
        if any(pad):
            x = nnf.pad(x, pad, mode="replicate")
        f1 = self.enc0(x)
        f2 = self.enc1(self.pool(f1))
        f4 = self.enc2(self.pool(f2))
        f8 = self.enc3(self.pool(f4))
        s = self.score8(f8)
        s = self.up8to4(s, output_size=f4.shape[2:]) + self.score4(f4)
        s = self.up4to2(s, output_size=f2.shape[2:]) + self.score2(f2)
        s = self.up2to1(s, output_size=f1.shape[2:]) + self.score1(f1)
        return s[..., : size[0], : size[1], : size[2]]


def fcn3d(
    *,
    in_channels: int,
    out_channels: int,
    channels: Sequence[int] = (16, 32, 64, 128),
) -> nn.Module:
    """3D FCN-8s-style network (see :class:`FCN3D`) for any input size.

    Examples
    --------
    >>> import torch
    >>> net = fcn3d(in_channels=1, out_channels=3, channels=(2, 4, 4, 8))
    >>> net(torch.zeros(1, 1, 11, 9, 13)).shape
    torch.Size([1, 3, 11, 9, 13])
    """
    return FCN3D(in_channels, out_channels, channels)


def dynunet3d(
    *,
    in_channels: int,
    out_channels: int,
    channels: Sequence[int] = (16, 32, 64, 128),
    deep_supervision: int = 0,
) -> nn.Module:
    """nnU-Net's 3D U-Net (MONAI ``DynUNet``), optionally with deep supervision.

    Each level: two 3×3×3 convolutions with instance norm and leaky ReLU; stride-2 convolutions
    down, transposed convolutions up. With ``deep_supervision`` = n > 0, n extra 1×1×1 output
    heads on the n decoder levels below full resolution: in **training** mode the network then
    returns ``(batch, 1 + n, out_channels, D, H, W)`` — the full-resolution logits first, each
    coarser head upsampled (nearest) to the input size — for a loss over all heads
    (:func:`deep_supervision_weights`); in **eval** mode it returns only the full-resolution
    logits, so the Predictor and every checkpoint reader see an ordinary network.

    Parameters
    ----------
    channels
        Feature maps per level; ``len(channels) - 1`` stride-2 downsamplings.
    deep_supervision
        Extra heads, 0 (off) to ``len(channels) - 2``.

    Examples
    --------
    >>> import torch
    >>> net = dynunet3d(in_channels=1, out_channels=3, channels=(4, 8, 8), deep_supervision=1)
    >>> net(torch.zeros(1, 1, 9, 10, 7)).shape
    torch.Size([1, 2, 3, 9, 10, 7])
    >>> net.eval()(torch.zeros(1, 1, 9, 10, 7)).shape
    torch.Size([1, 3, 9, 10, 7])
    """
    from monai.networks.nets import DynUNet

    levels = len(channels)
    if levels < 3:
        raise ModelError(f"dynunet3d needs at least 3 channel levels; got {list(channels)}.")
    heads = int(deep_supervision)
    if not 0 <= heads <= levels - 2:
        raise ModelError(
            f"dynunet3d: deep_supervision must be 0 (off) to {levels - 2} for {levels} levels; "
            f"got {deep_supervision}."
        )
    net = DynUNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=[3] * levels,
        strides=[1] + [2] * (levels - 1),
        upsample_kernel_size=[2] * (levels - 1),
        filters=[int(c) for c in channels],
        norm_name="instance",
        deep_supervision=heads > 0,
        deep_supr_num=max(1, heads),
    )
    return PadToMultiple(net, 2 ** (levels - 1))


def deep_supervision_weights(heads: int) -> list[float]:
    """nnU-Net's loss weights for ``heads`` outputs (full resolution first): halved per level,
    normalised to sum to 1.

    >>> deep_supervision_weights(3)
    [0.5714285714285714, 0.2857142857142857, 0.14285714285714285]
    """
    raw = [0.5**i for i in range(heads)]
    return [w / sum(raw) for w in raw]


def deep_supervision_loss(
    main: torch.Tensor, heads: torch.Tensor, head_loss: Callable[[torch.Tensor], torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """nnU-Net's weighted sum of the main output's loss and its coarser heads' losses.

    ``main``: the full-resolution output's loss; ``heads``: ``(batch, n, K, ...)`` logits of the
    n coarser heads; ``head_loss``: the data term for one head's logits. Returns the total and
    the heads' weighted part (for logging).
    """
    w = deep_supervision_weights(1 + heads.shape[1])
    coarse = main.new_zeros(())
    for i in range(heads.shape[1]):
        coarse = coarse + w[i + 1] * head_loss(heads[:, i].float())
    return w[0] * main + coarse, coarse
