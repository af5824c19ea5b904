"""Losses for partially contoured patients: marginal Dice + cross-entropy and exclusion.

A clinic contours the organs a plan needs, so a patient's label map says nothing about the
organs it has no contour for: their voxels are stored as background although the organ is in
the image. Teaching "background" there is wrong. After Shi et al. 2021 (*Marginal loss and
exclusion loss for partially supervised multi-organ segmentation*, Medical Image Analysis
70:101979):

- **marginal loss**: for each patient, the probabilities of its uncontoured organs are added
  to background before cross-entropy and Dice, so a voxel labelled background only has to be
  "background or one of the uncontoured organs";
- **exclusion loss**: organs do not overlap, so an uncontoured organ's probability should be
  low where the patient has *another* organ's contour: the soft Dice between the two is added.

For a complete patient both reduce to plain Dice + cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf
from torch import nn

__all__ = ["PartialLabelLoss", "marginal_log_probs", "pseudo_complete_target"]

_EPS = 1e-5


def marginal_log_probs(logits: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """Log-probabilities with each sample's unavailable classes merged into background.

    Parameters
    ----------
    logits
        ``(B, K + 1, ...)``; channel 0 background.
    available
        ``(B, K + 1)`` bool: which classes are contoured for each sample (channel 0 always).

    Returns
    -------
    torch.Tensor
        ``(B, K + 1, ...)``: channel 0 is ``log(p_0 + Σ p_unavailable)``, available channels keep
        ``log p_k``, unavailable channels are ``-inf`` (they are no longer separate classes).

    Examples
    --------
    >>> z = torch.zeros(1, 3, 2)  # three equally likely classes
    >>> lp = marginal_log_probs(z, torch.tensor([[True, True, False]]))
    >>> [round(v, 4) for v in lp.exp()[0, :, 0].tolist()]
    [0.6667, 0.3333, 0.0]
    """
    log_p = torch.log_softmax(logits.float(), dim=1)
    shape = (*available.shape, *([1] * (logits.dim() - 2)))
    avail = available.to(logits.device).bool().reshape(shape)
    merged = avail.clone()
    merged[:, 0] = False  # background is merged below with the unavailable ones
    to_background = ~merged
    neg_inf = torch.tensor(float("-inf"), device=logits.device)
    bg = torch.logsumexp(torch.where(to_background, log_p, neg_inf), dim=1, keepdim=True)
    out = torch.where(merged, log_p, neg_inf)
    return torch.cat([bg, out[:, 1:]], dim=1)


def pseudo_complete_target(
    logits: torch.Tensor, target: torch.Tensor, available: torch.Tensor
) -> torch.Tensor:
    """A complete label map for the shape model: contours where drawn, the prediction elsewhere.

    The shape representation model (SRM) compares *whole organ sets*, but a partially contoured
    patient's map lacks its uncontoured organs. Where the map says background, a voxel the
    network assigns (argmax, no gradient) to one of that patient's *uncontoured* organs takes
    that organ; contoured organs and their background stay as drawn. The SRM terms then judge
    the contoured organs' shapes against the clinical contours and leave the uncontoured ones
    to agree with themselves (no push towards background where an organ may lie).

    Parameters
    ----------
    logits
        ``(B, K + 1, ...)``.
    target
        ``(B, 1, ...)`` integer map; uncontoured organs appear as 0.
    available
        ``(B, K + 1)`` bool, channel 0 always true.

    Examples
    --------
    >>> logits = torch.tensor([[[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]]])
    >>> pseudo_complete_target(logits, torch.tensor([[[0, 0, 2]]]), torch.tensor([[1, 0, 1]]))
    tensor([[[0, 1, 2]]])
    """
    avail = available.to(logits.device).bool()
    pred = logits.detach().argmax(1, keepdim=True)
    spatial = [1] * (logits.dim() - 2)
    missing = (~avail).reshape(*avail.shape, *spatial).expand_as(logits)
    pred_missing = torch.gather(missing, 1, pred)  # is the predicted class uncontoured here?
    fill = (target == 0) & pred_missing
    return torch.where(fill, pred, target.long())


class PartialLabelLoss(nn.Module):
    """Marginal Dice + cross-entropy, plus ``exclusion_weight`` × exclusion Dice.

    ``forward(logits, target, available)``: logits ``(B, K + 1, ...)``, integer target
    ``(B, 1, ...)`` (uncontoured organs appear as 0), ``available`` ``(B, K + 1)`` bool. Dice
    is the soft Dice per sample and per class present in the merged problem (background
    merged, contoured organs), averaged, as MONAI's ``DiceCELoss`` does with background
    included; cross-entropy is averaged over voxels. The terms of the last call are in
    :attr:`last_terms`.
    """

    def __init__(self, *, exclusion_weight: float = 1.0) -> None:
        super().__init__()
        self.exclusion_weight = float(exclusion_weight)
        self.last_terms: dict[str, float] = {}

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, available: torch.Tensor
    ) -> torch.Tensor:
        k = logits.shape[1]
        avail = available.to(logits.device).bool()
        log_p = marginal_log_probs(logits, avail)
        tgt = target[:, 0].long()
        ce = nnf.nll_loss(torch.nan_to_num(log_p, neginf=-1e4), tgt)
        probs = log_p.exp()  # merged probabilities; unavailable channels are 0
        onehot = nnf.one_hot(tgt, k).movedim(-1, 1).to(probs.dtype)
        dims = tuple(range(2, logits.dim()))
        inter = (probs * onehot).sum(dims)
        denom = probs.sum(dims) + onehot.sum(dims)
        dice = 1.0 - (2.0 * inter + _EPS) / (denom + _EPS)  # (B, K + 1)
        dice_loss = (dice * avail).sum() / avail.sum()
        total = ce + dice_loss
        terms = {"ce": float(ce.detach()), "dice": float(dice_loss.detach())}
        missing = ~avail
        if self.exclusion_weight and bool(missing.any()):
            raw = torch.softmax(logits.float(), dim=1)
            organs = avail[:, 1:].reshape(*avail[:, 1:].shape, *([1] * len(dims)))
            contoured = (onehot[:, 1:] * organs.to(onehot.dtype)).sum(1, keepdim=True)
            overlap = (raw * contoured).sum(dims)
            excl = (2.0 * overlap + _EPS) / (raw.sum(dims) + contoured.sum(dims) + _EPS)
            excl_loss = (excl * missing).sum() / missing.sum()
            total = total + self.exclusion_weight * excl_loss
            terms["exclusion"] = float(excl_loss.detach())
        self.last_terms = terms
        return total
