from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medseg.cli import main
from medseg.errors import InputError, ModelError
from medseg.photo.checkpoint import load_photo_model, save_checkpoint
from medseg.photo.datasets import find_pairs, read_photo
from medseg.photo.inference import centre_weight, predict_array
from medseg.photo.models import ModelSpec, build_maskrcnn, load_user_weights
from medseg.photo.predict import predict_files


def _exif_rotated_jpeg(path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 degrees counter-clockwise for display
    stored = np.full((48, 80, 3), 120, np.uint8)
    Image.fromarray(stored).save(path, exif=exif)


def test_outputs_have_photo_size_and_orientation(
    tmp_path: Path, tiny_checkpoint: Path, shared_data: Path
) -> None:
    rotated = tmp_path / "rotated.jpg"
    _exif_rotated_jpeg(rotated)
    real = find_pairs(shared_data / "medetec_wound")[0].image
    out = tmp_path / "out"
    result = predict_files([rotated, real], out, model=tiny_checkpoint, score_threshold=0.0)
    for record, (rows, cols) in zip(result["images"], [(80, 48), (224, 224)], strict=True):
        assert (record["height"], record["width"]) == (rows, cols)
        mask = np.asarray(Image.open(out / record["mask"]))
        over = np.asarray(Image.open(out / record["overlay"]))
        assert mask.shape == (rows, cols) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
        assert over.shape == (rows, cols, 3)
    # predictions.json shape
    data = json.loads((out / "predictions.json").read_text())
    assert data["model"]["architecture"] == "mobilenet_v3_fpn"
    assert [r["stem"] for r in data["images"]] == ["rotated", real.stem]
    for record in data["images"]:
        union = np.asarray(Image.open(out / record["mask"])) > 0
        assert union.sum() <= sum(i["area_px"] for i in record["instances"])
        for inst in record["instances"]:
            assert set(inst) == {"box", "score", "area_px", "label", "label_name"}
            x0, y0, x1, y1 = inst["box"]
            assert 0 <= x0 <= x1 <= record["width"] and 0 <= y0 <= y1 <= record["height"]
            assert 0 <= inst["score"] <= 1 and inst["label_name"] == "wound"
    with pytest.raises(InputError, match="--overwrite"):
        predict_files([rotated], out, model=tiny_checkpoint)


def test_blank_photo_gives_no_instances_and_empty_mask(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    photo = tmp_path / "blank.png"
    Image.new("RGB", (96, 64), (200, 170, 150)).save(photo)
    # A score threshold above every possible score: nothing kept -> empty mask, still written.
    result = predict_files([photo], tmp_path / "o", model=tiny_checkpoint, score_threshold=1.01)
    assert result["images"][0]["instances"] == []
    mask = np.asarray(Image.open(tmp_path / "o" / "blank_mask.png"))
    assert mask.shape == (64, 96) and mask.max() == 0


def test_corrupt_input_cli_exit_code(tmp_path: Path, tiny_checkpoint: Path, capsys) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_text("patient notes, not a photo")
    code = main(
        ["photo", "predict", str(bad), "-o", str(tmp_path / "o"), "--model", str(tiny_checkpoint)]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and "notes.jpg" in err and "as an image" in err
    assert not (tmp_path / "o" / "predictions.json").exists()


def test_bad_checkpoint_is_model_error(tmp_path: Path) -> None:
    bogus = tmp_path / "x.pt"
    torch.save({"hello": torch.zeros(1)}, bogus)
    with pytest.raises(ModelError, match="not a medseg photo checkpoint"):
        load_photo_model(bogus)
    with pytest.raises(ModelError, match="does not exist"):
        load_photo_model(tmp_path / "missing.pt")


def test_no_download_when_building(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    for arch in ("small_resnet_gn_fpn", "mobilenet_v3_fpn", "resnet50_fpn"):
        model = build_maskrcnn(arch, image_size=64)
        assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 2
    assert not (tmp_path / "hub").exists()
    # user weights: a backbone-only state dict is mapped onto backbone.body
    light = build_maskrcnn("mobilenet_v3_fpn", image_size=64)
    body = {
        k[len("backbone.body.") :]: v
        for k, v in light.state_dict().items()
        if k.startswith("backbone.body.")
    }
    torch.save(body, tmp_path / "imagenet_like.pt")
    other = build_maskrcnn("mobilenet_v3_fpn", image_size=64)
    assert load_user_weights(other, tmp_path / "imagenet_like.pt") == len(body)
    key = next(iter(body))
    assert torch.equal(other.state_dict()[f"backbone.body.{key}"], body[key])


def test_bf16_cli_flag_matches_float32(tmp_path: Path, shared_data: Path) -> None:
    torch.manual_seed(0)
    spec = ModelSpec("small_resnet_gn_fpn", 2, 64, ("wound",))
    net = build_maskrcnn(spec.architecture, image_size=64)
    ckpt = save_checkpoint(
        tmp_path / "gn.pt", {"model": net.state_dict(), "spec": spec.to_dict()}, half=True
    )
    photo = str(find_pairs(shared_data / "medetec_wound")[0].image)
    outputs = {}
    for flag in ([], ["--bf16"]):
        out = tmp_path / ("bf16" if flag else "fp32")
        args = ["photo", "predict", photo, "-o", str(out), "--model", str(ckpt)]
        assert main([*args, "--score-threshold", "0", "--no-progress", *flag]) == 0
        outputs[bool(flag)] = json.loads((out / "predictions.json").read_text())
    assert outputs[False]["bf16"] is False and outputs[True]["bf16"] is True
    assert outputs[False]["model"]["architecture"] == "small_resnet_gn_fpn"
    fp32, bf16 = (outputs[k]["images"][0] for k in (False, True))
    assert (bf16["height"], bf16["width"]) == (fp32["height"], fp32["width"]) == (224, 224)
    # random weights: bf16 keeps the same number of detections within a few
    assert abs(len(bf16["instances"]) - len(fp32["instances"])) <= 5


def test_checkpoint_inference_settings_are_defaults_and_overridable(
    tmp_path: Path, tiny_checkpoint: Path, shared_data: Path
) -> None:
    data = torch.load(tiny_checkpoint, weights_only=True)
    data["inference"] = {"max_instances": 1, "tta": True}
    single = save_checkpoint(tmp_path / "single.pt", data)
    photo = find_pairs(shared_data / "medetec_wound")[0].image
    everything = predict_files([photo], tmp_path / "all", model=tiny_checkpoint, score_threshold=0)
    assert (everything["max_instances"], everything["tta"]) == (None, False)
    assert len(everything["images"][0]["instances"]) > 1  # random weights: many detections
    stored = predict_files([photo], tmp_path / "one", model=single, score_threshold=0)
    assert (stored["max_instances"], stored["tta"]) == (1, True)
    assert len(stored["images"][0]["instances"]) <= 1
    best = predict_files([photo], tmp_path / "b", model=single, score_threshold=0, tta=False)
    assert (best["max_instances"], best["tta"]) == (1, False)
    top = max(everything["images"][0]["instances"], key=lambda inst: inst["score"])
    assert best["images"][0]["instances"] == [top]
    overridden = predict_files(
        [photo], tmp_path / "o", model=single, score_threshold=0, max_instances=0, tta=False
    )
    assert (overridden["max_instances"], overridden["tta"]) == (None, False)
    assert overridden["images"][0]["instances"] == everything["images"][0]["instances"]
    with pytest.raises(InputError, match="max_instances must be >= 0"):
        predict_files([photo], tmp_path / "x", model=single, max_instances=-1)


def test_centre_prior_is_a_checkpoint_default_and_overridable(
    tmp_path: Path, tiny_checkpoint: Path, shared_data: Path
) -> None:

    data = torch.load(tiny_checkpoint, weights_only=True)
    data["inference"] = {"max_instances": 1, "tta": False, "centre_prior": 0.2}
    centred = save_checkpoint(tmp_path / "centred.pt", data)
    pair = find_pairs(shared_data / "medetec_wound")[0]
    every = predict_files([pair.image], tmp_path / "all", model=tiny_checkpoint, score_threshold=0)
    candidates = every["images"][0]["instances"]
    assert len(candidates) > 1  # random weights: many detections
    stored = predict_files([pair.image], tmp_path / "c", model=centred, score_threshold=0)
    assert (stored["max_instances"], stored["centre_prior"]) == (1, 0.2)
    (kept,) = stored["images"][0]["instances"]
    # all candidates with their masks: the kept one maximises score x centre weight
    model, _ = load_photo_model(tiny_checkpoint)
    found = predict_array(model, read_photo(pair.image), score_threshold=0).instances
    best = max(found, key=lambda inst: inst.score * centre_weight(inst.mask, 0.2))
    assert kept["score"] == round(best.score, 4) and kept["area_px"] == best.area_px
    top = max(candidates, key=lambda c: c["score"])
    assert kept != top  # random weights: the prior changes the choice on this photo
    plain = predict_files(
        [pair.image], tmp_path / "p", model=centred, score_threshold=0, centre_prior=0
    )
    assert plain["centre_prior"] is None
    assert plain["images"][0]["instances"] == [top]
    with pytest.raises(InputError, match="--max-instances"):
        predict_files([pair.image], tmp_path / "x", model=centred, max_instances=0)
    with pytest.raises(InputError, match="centre_prior"):
        predict_files([pair.image], tmp_path / "y", model=centred, centre_prior=-1)
