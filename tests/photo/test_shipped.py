"""Behaviour of the shipped models (medseg/weights/wound.pt, lesion.pt) on real photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.cli import main
from medseg.photo.checkpoint import WEIGHTS_DIR, load_photo_model, read_checkpoint


@pytest.mark.parametrize("name", ["wound", "lesion"])
def test_shipped_checkpoint_is_small_and_documented(name: str) -> None:
    path = WEIGHTS_DIR / f"{name}.pt"
    assert path.stat().st_size < 10e6  # 2.9 M float16 parameters
    data, info = read_checkpoint(path)
    assert data["spec"]["class_names"] == [name]
    assert 0.05 <= data["metrics"]["score_threshold"] <= 0.7
    assert data["config"]["weights"] is None  # trained from scratch, no third-party weights
    # prediction defaults: flip TTA for both; dermoscopy frames one lesion, near the centre
    assert data["inference"] == {
        "max_instances": {"wound": None, "lesion": 1}[name],
        "tta": True,
        "centre_prior": {"wound": None, "lesion": 0.2}[name],
    }
    # the typed view of the same file (old format: no digest, still loads)
    assert "digest" not in data and info.spec.class_names == (name,)
    assert info.prediction_defaults() == {
        "score_threshold": data["metrics"]["score_threshold"],
        **data["inference"],
    }


@pytest.mark.slow
@pytest.mark.parametrize("model", ["wound", "lesion"])
def test_blank_photo_gives_no_instances(tmp_path: Path, model: str) -> None:
    blank = tmp_path / "blank.jpg"
    Image.new("RGB", (320, 240), (205, 170, 150)).save(blank)
    out = tmp_path / "out"
    assert (
        main(["photo", "predict", str(blank), "-o", str(out), "--model", model, "--no-progress"])
        == 0
    )
    record = json.loads((out / "predictions.json").read_text())["images"][0]
    assert record["instances"] == []
    mask = np.asarray(Image.open(out / record["mask"]))
    assert mask.shape == (240, 320) and mask.max() == 0


@pytest.mark.slow
def test_shipped_lesion_model_uses_its_tuned_threshold(tmp_path: Path, shared_data: Path) -> None:
    _, info = load_photo_model("lesion")
    assert info.spec.architecture == "small_resnet_gn_fpn"
    photo = shared_data / "ham10000_skin_lesion" / "images" / "ISIC_0024311.jpg"
    assert (
        main(
            [
                "photo",
                "predict",
                str(photo),
                "-o",
                str(tmp_path),
                "--model",
                "lesion",
                "--no-progress",
            ]
        )
        == 0
    )
    data = json.loads((tmp_path / "predictions.json").read_text())
    assert data["score_threshold"] == info.metrics["score_threshold"] == info.score_threshold
    assert (data["max_instances"], data["tta"], data["centre_prior"]) == (1, True, 0.2)
    assert len(data["images"][0]["instances"]) == 1
    assert (data["images"][0]["height"], data["images"][0]["width"]) == (450, 600)


@pytest.mark.slow
def test_shipped_wound_model_finds_nothing_on_wound_free_photos(
    tmp_path: Path, shared_data: Path
) -> None:
    """FUSeg 0457 and 0931 have empty reference masks (healed skin, a swollen toe)."""
    images = shared_data / "fuseg_wound" / "train" / "images"
    photos = [str(images / f"{stem}.png") for stem in ("0457", "0931")]
    out = tmp_path / "out"
    assert (
        main(["photo", "predict", *photos, "-o", str(out), "--model", "wound", "--no-progress"])
        == 0
    )
    for record in json.loads((out / "predictions.json").read_text())["images"]:
        assert record["instances"] == [], record["stem"]
        mask = np.asarray(Image.open(out / record["mask"]))
        photo = Image.open(images / f"{record['stem']}.png")
        assert mask.shape == (photo.height, photo.width) and mask.max() == 0
