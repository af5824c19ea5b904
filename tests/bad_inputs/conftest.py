"""Fixtures of the bad-input corpus: a tiny random-weight photo Mask R-CNN (no training)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medseg.photo.checkpoint import save_checkpoint
from medseg.photo.models import ModelSpec, build_maskrcnn


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised light Mask R-CNN saved in the medseg photo checkpoint format."""
    torch.manual_seed(0)
    spec = ModelSpec("mobilenet_v3_fpn", 2, 64, ("wound",))
    model = build_maskrcnn(spec.architecture, num_classes=2, image_size=64)
    path = tmp_path_factory.mktemp("photo_ckpt") / "tiny.pt"
    return save_checkpoint(path, {"model": model.state_dict(), "spec": spec.to_dict()}, half=True)
