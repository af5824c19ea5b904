"""Shape representation model (SRM) and the shape-regularised loss of Tong et al. (2018).

The SRM is a 3D convolutional autoencoder over one-hot label maps: the encoder ``E`` maps a
``(B, K, D, H, W)`` class-probability map to a spatial latent code ``(B, latent, D/s, H/s, W/s)``
(``s = 2**levels``) and the decoder ``D`` maps it back to class logits. Trained on ground-truth
label maps (stage 1) and then frozen, it scores how *shape-like* a prediction is:

``loss = DiceCE(pred, gt) + λ1·mean((E(softmax(pred)) − E(onehot(gt)))²)
        + λ2·DiceCE(D(E(softmax(pred))), gt)``
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as nnf
from torch import nn

from medseg.errors import ModelError
from medseg.runtime import autocast

__all__ = ["ShapeAutoencoder", "ShapeRegularizedLoss", "srm"]


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, stride=2, padding=1),
        nn.InstanceNorm3d(cout, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
    )


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose3d(cin, cout, 2, stride=2),
        nn.InstanceNorm3d(cout, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
    )


class ShapeAutoencoder(nn.Module):
    """Convolutional autoencoder over class-probability maps (no skip connections).

    Parameters
    ----------
    num_classes
        Channels of the one-hot input and of the decoded logits (background included).
    channels
        Feature maps of the encoder levels; each level halves the size.
    latent_channels
        Channels of the latent code (the bottleneck that forces a shape representation).
    """

    def __init__(self, num_classes: int, channels: Sequence[int], latent_channels: int) -> None:
        super().__init__()
        if not channels:
            raise ModelError("srm needs at least one encoder level.")
        c = [int(v) for v in channels]
        enc: list[nn.Module] = []
        prev = num_classes
        for ch in c:
            enc.append(_down(prev, ch))
            prev = ch
        enc.append(nn.Conv3d(prev, latent_channels, 1))
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv3d(latent_channels, c[-1], 1), nn.LeakyReLU(0.01)]
        for cin, cout in zip(c[::-1], [*c[::-1][1:], c[0]], strict=True):
            dec.append(_up(cin, cout))
        dec.append(nn.Conv3d(c[0], num_classes, 3, padding=1))
        self.decoder = nn.Sequential(*dec)
        self.multiple = 2 ** len(c)
        self.num_classes = num_classes

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        pad: list[int] = []
        for n in reversed(x.shape[2:]):
            pad += [0, (-int(n)) % self.multiple]
        return nnf.pad(x, pad) if any(pad) else x

    def encode(self, probs: torch.Tensor) -> torch.Tensor:
        """Latent code of a ``(B, K, D, H, W)`` probability / one-hot map."""
        if probs.shape[1] != self.num_classes:
            raise ModelError(
                f"SRM expects {self.num_classes} class channels; got {probs.shape[1]}."
            )
        return self.encoder(self._pad(probs))

    def decode(self, z: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """Class logits of spatial ``size`` from a latent code."""
        y = self.decoder(z)
        return y[..., : size[0], : size[1], : size[2]]

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        """Reconstructed class logits, same shape as ``probs``."""
        return self.decode(self.encode(probs), probs.shape[2:])


def srm(
    *,
    in_channels: int,
    out_channels: int,
    channels: Sequence[int] = (16, 32, 64),
    latent_channels: int = 16,
) -> nn.Module:
    """Build the shape autoencoder (``in_channels == out_channels`` = number of classes).

    Examples
    --------
    >>> import torch
    >>> ae = srm(in_channels=3, out_channels=3, channels=(4, 8), latent_channels=2)
    >>> ae(torch.zeros(1, 3, 9, 10, 7)).shape, ae.encode(torch.zeros(1, 3, 9, 10, 7)).shape
    (torch.Size([1, 3, 9, 10, 7]), torch.Size([1, 2, 3, 3, 2]))
    """
    if in_channels != out_channels:
        raise ModelError(
            f"srm maps one-hot labels to themselves: in_channels ({in_channels}) must equal "
            f"out_channels ({out_channels})."
        )
    return ShapeAutoencoder(out_channels, channels, latent_channels)


class ShapeRegularizedLoss(nn.Module):
    """Dice + cross-entropy plus the frozen SRM's latent and reconstruction terms.

    Parameters
    ----------
    srm
        A trained :class:`ShapeAutoencoder`; it is frozen here (eval mode, no gradients to its
        weights — gradients still flow *through* it to the segmenter's prediction).
    lambda_latent
        λ1, weight of ``mean((E(softmax(pred)) − E(onehot(gt)))²)``.
    lambda_recon
        λ2, weight of ``DiceCE(D(E(softmax(pred))), gt)``.
    autocast_dtype
        Run the SRM's encoder/decoder under autocast in this dtype (e.g. ``torch.bfloat16``
        on a CPU with native bf16, where it halves the SRM's share of a training step); the
        three loss terms are always computed in float32. ``None``: float32 throughout.

    Notes
    -----
    ``forward(logits, target)`` takes logits ``(B, K, ...)`` and an integer target
    ``(B, 1, ...)``; the three terms of the last call are kept in :attr:`last_terms`.
    """

    def __init__(
        self,
        srm: ShapeAutoencoder | None,
        *,
        lambda_latent: float = 0.0,
        lambda_recon: float = 0.0,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        from monai.losses import DiceCELoss

        self.seg = DiceCELoss(to_onehot_y=True, softmax=True)
        self.recon = DiceCELoss(to_onehot_y=True, softmax=True)
        self.srm = srm
        if srm is not None:
            srm.eval()
            for p in srm.parameters():
                p.requires_grad_(False)
        elif lambda_latent or lambda_recon:
            raise ModelError("ShapeRegularizedLoss: λ1/λ2 > 0 need a trained SRM.")
        self.lambda_latent = float(lambda_latent)
        self.lambda_recon = float(lambda_recon)
        self.autocast_dtype = autocast_dtype
        self.last_terms: dict[str, float] = {}

    def train(self, mode: bool = True) -> ShapeRegularizedLoss:
        super().train(mode)
        if self.srm is not None:
            self.srm.eval()  # always frozen
        return self

    @property
    def has_shape_terms(self) -> bool:
        """Whether λ1 or λ2 is on (a trained SRM is attached)."""
        return self.srm is not None and bool(self.lambda_latent or self.lambda_recon)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        seg = self.seg(logits, target)
        total = seg
        terms = {"seg": float(seg.detach())}
        if self.has_shape_terms:
            total = total + self.shape_loss(logits, target)
            terms.update(self.last_terms)
        self.last_terms = terms
        return total

    def shape_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The SRM terms alone: ``λ1 · latent + λ2 · recon`` (0 without an SRM).

        Used directly for partially contoured patients, whose data term is the marginal loss
        and whose ``target`` is first completed by
        :func:`medseg.training.losses.pseudo_complete_target`. The terms are kept in
        :attr:`last_terms`.
        """
        terms: dict[str, float] = {}
        total = logits.new_zeros((), dtype=torch.float32)
        if self.srm is not None and self.has_shape_terms:
            amp = autocast(logits.device.type, self.autocast_dtype)
            probs = torch.softmax(logits.float(), dim=1)
            with amp:
                z_pred = self.srm.encode(probs)
            if self.lambda_latent:
                with torch.no_grad(), amp:
                    onehot = nnf.one_hot(target[:, 0].long(), probs.shape[1])
                    z_gt = self.srm.encode(onehot.permute(0, 4, 1, 2, 3).float())
                latent = torch.mean((z_pred.float() - z_gt.float()) ** 2)
                total = total + self.lambda_latent * latent
                terms["latent"] = float(latent.detach())
            if self.lambda_recon:
                with amp:
                    decoded = self.srm.decode(z_pred, probs.shape[2:])
                recon = self.recon(decoded.float(), target)
                total = total + self.lambda_recon * recon
                terms["recon"] = float(recon.detach())
        self.last_terms = terms
        return total
