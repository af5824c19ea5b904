"""A tiny random-weight checkpoint naming the seven OpenKBP organs (fast CLI tests)."""

from __future__ import annotations

from pathlib import Path

import torch

from medseg.io.openkbp import OPENKBP_OARS
from medseg.models import build_model, save_checkpoint
from medseg.preprocess import PreprocessingSpec
from medseg.volume import LabelMap

__all__ = ["tiny_checkpoint"]


def tiny_checkpoint(
    path: Path,
    spacing_mm: tuple[float, float, float] = (3.0, 4.0, 4.0),
    roi_size: tuple[int, int, int] = (48, 64, 64),
) -> Path:
    """A 2-level unet3d (4/8 channels, seed 0) with the OpenKBP organs, saved at ``path``."""
    torch.manual_seed(0)
    net = build_model("unet3d", in_channels=1, out_channels=8, channels=(4, 8))
    return save_checkpoint(
        path,
        net,
        model_name="unet3d",
        model_options={"in_channels": 1, "out_channels": 8, "channels": [4, 8]},
        label_map=LabelMap.from_names(list(OPENKBP_OARS)),
        preprocessing=PreprocessingSpec(spacing_mm, "SPL", (-500.0, 500.0), roi_size),
    )
