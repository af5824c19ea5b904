"""Small deterministic models shared by the inference tests."""

from __future__ import annotations

import torch


class ThresholdModel(torch.nn.Module):
    """Per-voxel HU thresholds as logits: background / "Soft" / "Bone".

    The input is CT normalised with window (-1000, 1000) → [0, 1]; the "Soft" class holds
    -200..300 HU and "Bone" > 300 HU. Every output voxel depends only on its own input voxel, so
    the model is exactly orientation-equivariant and the labels have an independent oracle (a
    threshold of the HU array).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        soft_lo, bone_lo = 0.4, 0.65  # -200 HU, 300 HU
        background = soft_lo - x
        soft = torch.minimum(x - soft_lo, bone_lo - x)
        bone = x - bone_lo
        return torch.cat([background, soft, bone], dim=1)
