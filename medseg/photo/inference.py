"""Run a photo Mask R-CNN on one RGB array: instances, union mask, overlay."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch
from torchvision.models.detection import MaskRCNN

from medseg.runtime import autocast, select_device

__all__ = ["Instance", "PhotoPrediction", "overlay", "predict_array", "select_device"]


@dataclass(frozen=True, eq=False)
class Instance:
    """One detected object.

    Attributes
    ----------
    box
        ``(x0, y0, x1, y1)`` in pixels of the input photo.
    score
        Detection confidence in [0, 1].
    label
        Class id (1 = first class name).
    mask
        bool (rows, columns), the photo's size.
    """

    box: tuple[float, float, float, float]
    score: float
    label: int
    mask: npt.NDArray[np.bool_] = field(repr=False)

    @property
    def area_px(self) -> int:
        """Mask area in pixels."""
        return int(self.mask.sum())


@dataclass(frozen=True, eq=False)
class PhotoPrediction:
    """All kept instances of one photo and their union mask (rows, columns)."""

    instances: tuple[Instance, ...]
    mask: npt.NDArray[np.bool_] = field(repr=False)


def photo_autocast(device: torch.device, bf16: bool) -> torch.autocast:
    """Autocast for the photo models: float16 on CUDA, bfloat16 on CPU when ``bf16``, else off.

    Examples
    --------
    >>> photo_autocast(torch.device("cpu"), False).fast_dtype == torch.float32
    True
    >>> photo_autocast(torch.device("cpu"), True).fast_dtype
    torch.bfloat16
    """
    dtype = torch.float16 if device.type == "cuda" else (torch.bfloat16 if bf16 else None)
    return autocast(device.type, dtype)


@torch.no_grad()
def predict_array(
    model: MaskRCNN,
    image: npt.NDArray[np.uint8],
    *,
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
    bf16: bool = False,
) -> PhotoPrediction:
    """Predict instances on an RGB uint8 photo (rows, columns, 3).

    Instances scoring below ``score_threshold`` or with an empty mask are dropped; the union
    mask has the photo's shape (all-False when nothing is kept). ``bf16=True`` runs the network
    under CPU bfloat16 autocast (about 2x faster convolutions on CPUs with AVX512-BF16).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255)
    with photo_autocast(device, bf16):
        output = model([tensor.to(device)])[0]
    if was_training:
        model.train()
    union = np.zeros(image.shape[:2], dtype=bool)
    kept: list[Instance] = []
    for box, score, label, soft in zip(
        output["boxes"].float().cpu().numpy(),
        output["scores"].float().cpu().numpy(),
        output["labels"].cpu().numpy(),
        output["masks"].float().cpu().numpy(),
        strict=True,
    ):
        if score < score_threshold:
            continue
        mask = soft[0] > mask_threshold
        if not mask.any():
            continue
        kept.append(Instance(tuple(float(v) for v in box), float(score), int(label), mask))  # type: ignore[arg-type]
        union |= mask
    return PhotoPrediction(tuple(kept), union)


def overlay(
    image: npt.NDArray[np.uint8],
    mask: npt.NDArray[np.bool_],
    *,
    color: tuple[int, int, int] = (0, 255, 0),
    alpha: float = 0.4,
) -> npt.NDArray[np.uint8]:
    """Blend ``color`` over the masked pixels and draw a 1-pixel outline; same shape as image.

    >>> img = np.zeros((4, 4, 3), np.uint8); m = np.zeros((4, 4), bool); m[1:3, 1:3] = True
    >>> out = overlay(img, m); out.shape, out[0, 0].tolist(), out[1, 1].tolist()
    ((4, 4, 3), [0, 0, 0], [0, 255, 0])
    """
    from scipy import ndimage

    out = image.astype(np.float32).copy()
    col = np.asarray(color, dtype=np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * col
    edge = mask & ~ndimage.binary_erosion(mask)
    out[edge] = col
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
