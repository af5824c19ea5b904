"""Model registry, output sizes, SRM loss behaviour and checkpoint safety."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf

from medseg.errors import ModelError
from medseg.models import (
    ShapeRegularizedLoss,
    available_models,
    build_model,
    load_checkpoint,
    save_checkpoint,
)
from medseg.models.checkpoint import read_checkpoint
from medseg.models.networks import deep_supervision_weights
from medseg.preprocess import PreprocessingSpec
from medseg.volume import LabelMap

SMALL = {
    "unet3d": {"channels": (4, 8, 8)},
    "dynunet3d": {"channels": (4, 8, 8), "deep_supervision": 1},
    "fcn3d": {"channels": (4, 4, 8, 8)},
    "srm": {"channels": (4, 8), "latent_channels": 2},
}


@pytest.mark.parametrize("name", ["unet3d", "dynunet3d", "fcn3d", "srm"])
@pytest.mark.parametrize("size", [(9, 11, 13), (17, 7, 8), (8, 8, 8)])
def test_every_model_keeps_input_size(name: str, size: tuple[int, int, int]) -> None:
    cin = 3 if name == "srm" else 1
    net = build_model(name, in_channels=cin, out_channels=3, **SMALL[name]).eval()
    with torch.no_grad():
        out = net(torch.randn(2, cin, *size))
    assert out.shape == (2, 3, *size)
    assert torch.isfinite(out).all()


def test_deep_supervision_heads_in_training_only() -> None:
    torch.manual_seed(0)
    net = build_model("dynunet3d", in_channels=1, out_channels=3, channels=(4, 8, 8, 16),
                      deep_supervision=2)  # fmt: skip
    x = torch.randn(1, 1, 17, 12, 9)
    out = net.train()(x)
    assert out.shape == (1, 3, 3, 17, 12, 9)  # full resolution + 2 coarser heads, upsampled
    with torch.no_grad():
        main = net.eval()(x)
    assert main.shape == (1, 3, 17, 12, 9)
    # the first head is the network's ordinary output (instance norm: same in both modes)
    torch.testing.assert_close(out[:, 0].detach(), main, rtol=1e-4, atol=1e-4)
    # the coarser heads are not copies of it: nearest-upsampled, constant over 2x2x2 blocks
    coarse = out[0, 1, :, :16, :12, :8].detach()
    blocks = coarse.reshape(3, 8, 2, 6, 2, 4, 2)
    assert torch.allclose(blocks, blocks[:, :, :1, :, :1, :, :1].expand_as(blocks))
    assert not torch.allclose(out[:, 1], out[:, 0])
    with pytest.raises(ModelError, match="deep_supervision must be 0 \\(off\\) to 2"):
        build_model("dynunet3d", in_channels=1, out_channels=3, channels=(4, 8, 8, 16),
                    deep_supervision=3)  # fmt: skip
    assert deep_supervision_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])


def test_registry_errors() -> None:
    assert set(available_models()) == {"unet3d", "dynunet3d", "fcn3d", "srm"}
    with pytest.raises(ModelError, match="unknown model"):
        build_model("resnet", in_channels=1, out_channels=2)
    with pytest.raises(ModelError, match="bad options"):
        build_model("unet3d", in_channels=1, out_channels=2, colour="red")


def _sphere_labels(shift: int = 0) -> torch.Tensor:
    zz, yy, xx = np.mgrid[:24, :24, :24]
    lab = np.zeros((24, 24, 24), np.int64)
    lab[(zz - 12) ** 2 + (yy - 12) ** 2 + (xx - 8 - shift) ** 2 < 25] = 1
    lab[(zz - 12) ** 2 + (yy - 12) ** 2 + (xx - 17) ** 2 < 9] = 2
    return torch.from_numpy(lab)[None, None]


def _logits(lab: torch.Tensor) -> torch.Tensor:
    return 20.0 * nnf.one_hot(lab[:, 0], 3).permute(0, 4, 1, 2, 3).float() - 10.0


def test_srm_loss_zero_for_perfect_prediction_and_grows_with_perturbation() -> None:
    torch.manual_seed(0)
    ae = build_model("srm", in_channels=3, out_channels=3, channels=(4, 8), latent_channels=4)
    gt = _sphere_labels()
    loss_fn = ShapeRegularizedLoss(ae, lambda_latent=1.0, lambda_recon=0.0)
    perfect = float(loss_fn(_logits(gt), gt))
    assert perfect == pytest.approx(0.0, abs=1e-3)
    assert loss_fn.last_terms["latent"] == pytest.approx(0.0, abs=1e-8)
    values = [float(loss_fn(_logits(_sphere_labels(s)), gt)) for s in (1, 2, 4)]
    assert perfect < values[0] < values[1] < values[2]
    assert all(t > 0 for t in (loss_fn.last_terms["latent"],))
    # the reconstruction term also grows with the perturbation
    rec = ShapeRegularizedLoss(ae, lambda_latent=0.0, lambda_recon=1.0)
    r = [float(rec(_logits(_sphere_labels(s)), gt)) for s in (0, 4)]
    assert r[1] > r[0]
    # gradients reach the prediction, not the frozen SRM
    logits = _logits(_sphere_labels(2)).requires_grad_(True)
    loss_fn(logits, gt).backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 0
    assert all(p.grad is None for p in ae.parameters())


def test_srm_loss_under_bfloat16_autocast_matches_float32() -> None:
    """The SRM may run in bf16 (speed); the loss terms must stay those of float32."""
    torch.manual_seed(0)
    ae = build_model("srm", in_channels=3, out_channels=3, channels=(4, 8), latent_channels=4)
    gt = _sphere_labels()
    logits = _logits(_sphere_labels(3))
    logits = logits + 0.5 * torch.randn(logits.shape)
    kw = {"lambda_latent": 1.0, "lambda_recon": 1.0}
    ref = ShapeRegularizedLoss(ae, **kw)
    low = ShapeRegularizedLoss(ae, **kw, autocast_dtype=torch.bfloat16)
    total_ref, total_low = float(ref(logits, gt)), float(low(logits, gt))
    assert total_low == pytest.approx(total_ref, rel=0.02)
    for term in ("seg", "latent", "recon"):
        assert low.last_terms[term] == pytest.approx(ref.last_terms[term], rel=0.05, abs=1e-4)
    assert ref.last_terms["latent"] > 1e-4  # a perturbed prediction: the term is not trivially 0


def _save(
    tmp_path: Path, name: str = "fcn3d", channels: tuple[int, ...] = (4, 4, 8, 8)
) -> tuple[Path, torch.nn.Module]:
    opts = {"in_channels": 1, "out_channels": 3, "channels": list(channels)}
    net = build_model(name, **opts)
    spec = PreprocessingSpec((3.0, 4.0, 4.0), "SPL", (-500.0, 500.0), (16, 16, 16))
    path = save_checkpoint(
        tmp_path / "m.pt",
        net,
        model_name=name,
        model_options=opts,
        label_map=LabelMap.from_names(["Brainstem", "Mandible"]),
        preprocessing=spec,
        config={"seed": 1},
        metrics={"mean_dice": 0.5},
        case_ids=["pt_4", "pt_13"],
    )
    return path, net


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    path, net = _save(tmp_path)
    model, info = load_checkpoint(path)
    assert info.label_map.names == ("Brainstem", "Mandible")
    assert info.preprocessing.roi_size == (16, 16, 16)
    assert info.metrics == {"mean_dice": 0.5} and info.config == {"seed": 1}
    x = torch.randn(1, 1, 10, 12, 9)
    with torch.no_grad():
        assert torch.equal(model(x), net.eval()(x))


def test_checkpoint_stores_weights_shared_between_names_once(tmp_path: Path) -> None:
    """DynUNet lists its skip blocks under two names; the file holds their weights once."""
    path, net = _save(tmp_path, "dynunet3d", (16, 32, 64, 128))
    names = net.state_dict()
    unique = {t.untyped_storage().data_ptr(): t.numel() * t.element_size() for t in names.values()}
    every = sum(t.numel() * t.element_size() for t in names.values())
    assert every > 1.8 * sum(unique.values())  # the sharing this test is about
    size = path.stat().st_size
    assert sum(unique.values()) < size < 1.1 * sum(unique.values()) + 100_000
    model, _ = load_checkpoint(path)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), net.eval()(x))
    reloaded = torch.load(path, weights_only=True)["state_dict"]
    assert set(reloaded) == set(names)


def test_tampered_and_unsafe_checkpoints_are_refused(tmp_path: Path) -> None:
    path, _ = _save(tmp_path)
    payload = torch.load(path, weights_only=True)
    first = next(iter(payload["state_dict"]))
    payload["state_dict"][first] = payload["state_dict"][first] + 1e-3
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(ModelError, match="digest mismatch"):
        load_checkpoint(tmp_path / "tampered.pt")
    payload = torch.load(path, weights_only=True)
    payload["label_map"] = payload["label_map"].replace("Mandible", "Larynx")
    torch.save(payload, tmp_path / "relabelled.pt")
    with pytest.raises(ModelError, match="digest mismatch"):
        read_checkpoint(tmp_path / "relabelled.pt")

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (print, ("pwned",))

    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump({"format": "medseg-checkpoint", "x": Evil()}, fh)
    with pytest.raises(ModelError, match="refused to load"):
        load_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(ModelError, match="neither a shipped model"):
        load_checkpoint(tmp_path / "nothing.pt")
