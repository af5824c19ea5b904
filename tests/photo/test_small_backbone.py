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


def test_mask_size_sets_the_mask_head_output_and_trains() -> None:
    import pytest

    from medseg.errors import ModelError

    torch.manual_seed(0)
    for architecture in ("small_resnet_gn_fpn", "mobilenet_v3_fpn"):
        for mask_size in (28, 56):
            model = build_maskrcnn(architecture, image_size=64, mask_size=mask_size)
            assert model.roi_heads.mask_roi_pool.output_size == (mask_size // 2,) * 2
    model = build_maskrcnn("small_resnet_gn_fpn", image_size=64, mask_size=56)
    features = model.backbone(torch.rand(1, 3, 64, 64))
    boxes = [torch.tensor([[4.0, 4.0, 40.0, 40.0]])]
    pooled = model.roi_heads.mask_roi_pool(features, boxes, [(64, 64)])
    logits = model.roi_heads.mask_predictor(model.roi_heads.mask_head(pooled))
    assert tuple(logits.shape) == (1, 2, 56, 56)
    # one training step with a real target: the mask loss is computed at 56 x 56
    mask = torch.zeros(1, 64, 64, dtype=torch.uint8)
    mask[0, 10:30, 12:40] = 1
    target = {"boxes": torch.tensor([[12.0, 10.0, 40.0, 30.0]]), "labels": torch.tensor([1])}
    losses = model.train()([torch.rand(3, 64, 64)], [{**target, "masks": mask}])
    loss_mask = losses["loss_mask"].detach()
    assert torch.isfinite(loss_mask) and float(loss_mask) > 0
    for bad in (27, 8, 128):
        with pytest.raises(ModelError, match="mask_size"):
            build_maskrcnn("small_resnet_gn_fpn", mask_size=bad)


def test_mask_size_round_trips_through_a_checkpoint(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from medseg.photo.checkpoint import load_photo_model, save_checkpoint
    from medseg.photo.models import ModelSpec

    spec = ModelSpec("small_resnet_gn_fpn", 2, 64, ("lesion",), mask_size=56)
    net = build_maskrcnn(spec.architecture, image_size=64, mask_size=56)
    path = save_checkpoint(tmp_path / "m.pt", {"model": net.state_dict(), "spec": spec.to_dict()})
    model, info = load_photo_model(path)
    loaded = info.spec
    assert loaded.mask_size == 56 and model.roi_heads.mask_roi_pool.output_size == (28, 28)
    old = spec.to_dict()
    del old["mask_size"]  # checkpoints written before the key existed
    assert ModelSpec.from_dict(old).mask_size == 28
