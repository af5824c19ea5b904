"""Mask R-CNN builders for photographs (torchvision), never downloading weights.

Two architectures:

* ``"resnet50_fpn"`` -- torchvision's ``maskrcnn_resnet50_fpn`` (the architecture of Privalov et
  al. 2021), built with ``weights=None, weights_backbone=None``;
* ``"mobilenet_v3_fpn"`` -- a MobileNetV3-Large FPN backbone (torchvision's
  ``mobilenet_backbone``) with lighter RPN/ROI settings and a 256-wide box head (instead of
  1024), for CPU speed and a small file.

Both start from random initialisation unless the caller passes a user-supplied state dict file
(``weights=PATH``, loaded with ``torch.load(..., weights_only=True)``): either a full Mask R-CNN
state dict (e.g. COCO) or a backbone/ImageNet state dict; keys whose shapes match are copied and
the count is logged. Nothing is ever fetched from the network.

>>> net = build_maskrcnn("mobilenet_v3_fpn", num_classes=2, image_size=128)
>>> type(net).__name__
'MaskRCNN'
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import mobilenet_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign

from medseg.errors import ModelError
from medseg.photo.backbones import SmallResNetFPN, group_norm

logger = logging.getLogger(__name__)

__all__ = ["ARCHITECTURES", "ModelSpec", "build_maskrcnn", "load_user_weights"]

ARCHITECTURES = ("small_resnet_gn_fpn", "mobilenet_v3_fpn", "resnet50_fpn")


@dataclass(frozen=True)
class ModelSpec:
    """What is needed to rebuild a photo model (stored inside every checkpoint).

    Attributes
    ----------
    architecture
        One of :data:`ARCHITECTURES`.
    num_classes
        Classes including background (2 = background + wound/lesion).
    image_size
        Shorter image side (pixels) the network resizes photos to (``min_size``).
    class_names
        Names of the foreground classes, in label order (label 1 = first name).
    mask_size
        Side of the mask head's output per instance (28 in Mask R-CNN; checkpoints written
        before this key existed use 28).
    """

    architecture: str = "mobilenet_v3_fpn"
    num_classes: int = 2
    image_size: int = 320
    class_names: tuple[str, ...] = ("wound",)
    mask_size: int = 28

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (for checkpoints / JSON)."""
        return {
            "architecture": self.architecture,
            "num_classes": self.num_classes,
            "image_size": self.image_size,
            "class_names": list(self.class_names),
            "mask_size": self.mask_size,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """Inverse of :meth:`to_dict`; raises :class:`ModelError` on unknown keys."""
        unknown = set(data) - {
            "architecture",
            "num_classes",
            "image_size",
            "class_names",
            "mask_size",
        }
        if unknown:
            raise ModelError(f"model spec has unknown keys {sorted(unknown)}.")
        return cls(
            architecture=str(data.get("architecture", cls.architecture)),
            num_classes=int(data.get("num_classes", cls.num_classes)),
            image_size=int(data.get("image_size", cls.image_size)),
            class_names=tuple(data.get("class_names", cls.class_names)),
            mask_size=int(data.get("mask_size", cls.mask_size)),
        )


#: RPN proposals kept before/after NMS (training, testing), shared by every photo architecture:
#: a photo holds one to a few wounds or one lesion, so a few hundred proposals are plenty.
_PROPOSAL_BUDGET = {
    "rpn_pre_nms_top_n_train": 600,
    "rpn_post_nms_top_n_train": 300,
    "rpn_pre_nms_top_n_test": 300,
    "rpn_post_nms_top_n_test": 100,
}


def valid_mask_size(value: object) -> bool:
    """Whether ``value`` is a usable mask-head output side: an even integer from 14 to 112.

    >>> valid_mask_size(28), valid_mask_size(27), valid_mask_size(True), valid_mask_size("28")
    (True, False, False, False)
    """
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value % 2 == 0
        and 14 <= value <= 112
    )


def build_maskrcnn(
    architecture: str,
    *,
    num_classes: int = 2,
    image_size: int = 320,
    weights: str | Path | None = None,
    mask_size: int = 28,
) -> MaskRCNN:
    """Build a randomly initialised Mask R-CNN (optionally loading user weights).

    Parameters
    ----------
    architecture
        ``"resnet50_fpn"`` or ``"mobilenet_v3_fpn"``.
    num_classes
        Number of classes including background.
    image_size
        Shorter side (px) photos are resized to inside the model; the longer side is capped at
        ``1.5 * image_size`` (scaled down, aspect kept). Outputs are returned at the input size.
    weights
        Optional path of a user-supplied state dict (see :func:`load_user_weights`).
    mask_size
        Side of each instance's predicted mask before it is pasted into its box (even, 14-112;
        Mask R-CNN's 28 by default). The mask RoIAlign samples ``mask_size / 2`` cells and the
        head upsamples 2x; 56 gives boundaries twice as fine on large objects for about 4x the
        mask-head work.

    Returns
    -------
    torchvision.models.detection.MaskRCNN
        In training mode; no weights were downloaded.

    Raises
    ------
    ModelError
        Unknown architecture or unusable weights file.
    """
    if not valid_mask_size(mask_size):
        raise ModelError(f"mask_size must be an even integer from 14 to 112, got {mask_size!r}.")
    max_size = round(image_size * 1.5)
    mask_cells = mask_size // 2
    if architecture == "resnet50_fpn":
        # Without weights torchvision makes every layer trainable with ordinary BatchNorm.
        model = maskrcnn_resnet50_fpn(
            weights=None,
            weights_backbone=None,
            num_classes=num_classes,
            min_size=image_size,
            max_size=max_size,
            mask_roi_pool=MultiScaleRoIAlign(
                ["0", "1", "2", "3"], output_size=mask_cells, sampling_ratio=2
            ),
        )
    elif architecture == "mobilenet_v3_fpn":
        # Trainable BatchNorm: with random weights a frozen BN would be an identity and the
        # network would train without normalisation.
        backbone = mobilenet_backbone(
            backbone_name="mobilenet_v3_large",
            fpn=True,
            weights=None,
            norm_layer=partial(nn.BatchNorm2d, momentum=0.05),
            trainable_layers=6,
        )
        anchor_sizes = ((16, 32, 64, 128, 256),) * 3
        aspect_ratios = ((0.5, 1.0, 2.0),) * 3
        model = MaskRCNN(
            backbone,
            num_classes=None,
            min_size=image_size,
            max_size=max_size,
            rpn_anchor_generator=AnchorGenerator(anchor_sizes, aspect_ratios),
            **_PROPOSAL_BUDGET,
            box_batch_size_per_image=128,
            box_detections_per_img=20,
            box_head=TwoMLPHead(256 * 7 * 7, 256),
            box_predictor=FastRCNNPredictor(256, num_classes),
            mask_predictor=MaskRCNNPredictor(256, 256, num_classes),
            box_roi_pool=MultiScaleRoIAlign(["0", "1"], output_size=7, sampling_ratio=2),
            mask_roi_pool=MultiScaleRoIAlign(["0", "1"], output_size=mask_cells, sampling_ratio=2),
        )
    elif architecture == "small_resnet_gn_fpn":
        model = _small_resnet_gn_maskrcnn(num_classes, image_size, max_size, mask_cells)
    else:
        raise ModelError(
            f"unknown photo architecture {architecture!r}; expected one of {list(ARCHITECTURES)}."
        )
    if weights is not None:
        load_user_weights(model, weights)
    return model


def _small_resnet_gn_maskrcnn(
    num_classes: int, image_size: int, max_size: int, mask_cells: int
) -> MaskRCNN:
    """Mask R-CNN on :class:`SmallResNetFPN`: GroupNorm everywhere, one anchor size per level.

    Anchors 16-256 px (one size per pyramid level, strides 4-64, aspect ratios 0.5/1/2) cover
    wounds and lesions at a 192-320 px input; heads are 64 wide (box head: two 256-unit layers;
    mask head: four 3x3 GroupNorm convolutions).
    """
    backbone = SmallResNetFPN()
    width = backbone.out_channels
    anchors = AnchorGenerator(((16,), (32,), (64,), (128,), (256,)), ((0.5, 1.0, 2.0),) * 5)
    levels = ["0", "1", "2", "3"]
    return MaskRCNN(
        backbone,
        num_classes=None,
        min_size=image_size,
        max_size=max_size,
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(width, 3),
        **_PROPOSAL_BUDGET,
        rpn_batch_size_per_image=256,
        box_batch_size_per_image=64,
        box_detections_per_img=20,
        box_roi_pool=MultiScaleRoIAlign(levels, output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(width * 7 * 7, 256),
        box_predictor=FastRCNNPredictor(256, num_classes),
        mask_roi_pool=MultiScaleRoIAlign(levels, output_size=mask_cells, sampling_ratio=2),
        mask_head=MaskRCNNHeads(width, [width] * 4, 1, norm_layer=group_norm),
        mask_predictor=MaskRCNNPredictor(width, width, num_classes),
    )


def load_user_weights(model: nn.Module, path: str | Path) -> int:
    """Copy matching tensors from a user-supplied state dict file into ``model``.

    Accepts a full Mask R-CNN state dict (keys ``backbone.body...``), a bare backbone /
    ImageNet classification state dict (keys ``features...`` or ``layer1...``, mapped onto
    ``backbone.body``), or a medseg photo checkpoint (``{"model": state_dict, ...}``). Tensors
    whose name or shape does not match (e.g. the COCO 91-class heads) are skipped.

    Returns
    -------
    int
        Number of tensors copied.

    Raises
    ------
    ModelError
        File missing, not a weights-only torch file, or nothing matched.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist; pass an existing .pt/.pth file.")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types (UnpicklingError, RuntimeError, ...)
        raise ModelError(
            f"cannot load weights {path} with weights_only=True ({type(exc).__name__}: {exc}); "
            "save a plain state dict with torch.save(model.state_dict(), path)."
        ) from exc
    if isinstance(loaded, dict) and isinstance(loaded.get("model"), dict):
        loaded = loaded["model"]
    if not isinstance(loaded, dict):
        raise ModelError(f"weights file {path} holds a {type(loaded).__name__}, not a state dict.")
    own = model.state_dict()
    copied: dict[str, torch.Tensor] = {}
    for key, value in loaded.items():
        if not isinstance(value, torch.Tensor):
            continue
        for candidate in (key, f"backbone.body.{key}"):
            if candidate in own and own[candidate].shape == value.shape:
                copied[candidate] = value
                break
    if not copied:
        raise ModelError(
            f"no tensor of {path} matches the model (names/shapes differ); check the architecture."
        )
    model.load_state_dict(copied, strict=False)
    logger.info("loaded %d/%d tensors from %s", len(copied), len(own), path.name)
    return len(copied)
