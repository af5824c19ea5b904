"""The from-scratch GroupNorm ResNet-FPN Mask R-CNN (``small_resnet_gn_fpn``) and bf16 inference."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from medseg.photo.backbones import SmallResNetFPN
from medseg.photo.inference import predict_array
from medseg.photo.models import build_maskrcnn


def test_no_batchnorm_and_batch_independent_features() -> None:
    torch.manual_seed(0)
    model = build_maskrcnn("small_resnet_gn_fpn", image_size=64)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    groups = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert norms == [] and len(groups) > 20
    assert all(p.requires_grad for p in model.parameters())
    # GroupNorm: a photo's features do not depend on the batch or on train/eval mode
    backbone = model.backbone
    x = torch.rand(3, 3, 64, 96)
    backbone.train()
    batch = backbone(x)
    backbone.eval()
    single = backbone(x[:1])
    for key in ("0", "1", "2", "3", "pool"):
        assert torch.allclose(batch[key][:1], single[key], atol=1e-5)


def test_pyramid_strides_and_anchor_sizes() -> None:
    features = SmallResNetFPN()(torch.zeros(1, 3, 128, 192))
    assert [tuple(f.shape[2:]) for f in features.values()] == [
        (32, 48),
        (16, 24),
        (8, 12),
        (4, 6),
        (2, 3),
    ]
    model = build_maskrcnn("small_resnet_gn_fpn", image_size=192)
    generator = model.rpn.anchor_generator
    assert generator.sizes == ((16,), (32,), (64,), (128,), (256,))
    assert generator.num_anchors_per_location() == [3] * 5
    assert model.transform.min_size == (192,) and model.transform.max_size == 288
    assert model.roi_heads.detections_per_img == 20
    n = sum(p.numel() for p in model.parameters())
    assert 2e6 < n < 4e6  # about 2.9 M parameters (MobileNetV3-FPN: 11 M)


def test_bf16_inference_close_to_float32() -> None:
    torch.manual_seed(0)
    model = build_maskrcnn("small_resnet_gn_fpn", image_size=64).eval()
    image = (np.random.default_rng(0).random((64, 80, 3)) * 255).astype(np.uint8)
    with torch.no_grad():
        tensor = torch.from_numpy(image).permute(2, 0, 1).float().div(255)
        ref = model.backbone(model.transform([tensor])[0].tensors)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model.backbone(model.transform([tensor])[0].tensors)
    for key in ref:
        scale = float(ref[key].abs().max())
        assert float((ref[key] - low[key].float()).abs().max()) < 0.05 * scale
    pred = predict_array(model, image, score_threshold=0.0, bf16=True)
    assert pred.mask.shape == (64, 80) and pred.mask.dtype == bool
    assert model.training is False
