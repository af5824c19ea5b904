"""medseg.photo.crossval, medseg.photo.config overrides and the shared runtime, on small cases."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medseg.errors import ConfigError, InputError
from medseg.photo.checkpoint import load_photo_model, read_checkpoint, update_prediction_defaults
from medseg.photo.config import load_train_config, parse_overrides
from medseg.photo.crossval import (
    FoldFigures,
    dataset_root,
    evaluate_held_out,
    fold_figures,
    held_out_pairs,
    pool_folds,
)
from medseg.photo.datasets import find_pairs, read_mask
from medseg.runtime import CudaUnavailableError, select_device

REPO = Path(__file__).resolve().parents[2]


def test_pool_folds_by_hand() -> None:
    folds = {
        "0": FoldFigures(10, 0.80, 0.70, 0.85, 0.60, 1),
        "1": FoldFigures(12, 0.70, 0.60, 0.75, 0.50, 0),
        "2": FoldFigures(11, 0.90, 0.80, 0.95, 0.70, 2),
    }
    pooled = pool_folds(folds)
    assert pooled["mean_over_folds"] == pytest.approx(
        {"mean_dice": 0.8, "mean_jaccard": 0.7, "thresholded_jaccard_0.65": 0.6}
    )
    sd = float(np.sqrt(((0.1**2) * 2) / 3))  # deviations -0.1, 0, +0.1 around 0.8 (population)
    assert pooled["sd_over_folds"]["mean_dice"] == pytest.approx(sd)
    with pytest.raises(InputError, match="no folds"):
        pool_folds({})


def _write_fold(fold: Path, dice: list[float], pred_px: list[int], ref_px: list[int]) -> None:
    (fold / "eval" / "pred").mkdir(parents=True)
    names = [f"p{i}" for i in range(len(dice))]
    images = [
        {"name": n, "dice": d, "jaccard": d / (2 - d), "pred_area_px": p, "ref_area_px": r}
        for n, d, p, r in zip(names, dice, pred_px, ref_px, strict=True)
    ]
    summary = {
        "n_images": len(dice),
        "mean_dice": float(np.mean(dice)),
        "mean_jaccard": float(np.mean([i["jaccard"] for i in images])),
        "median_dice": float(np.median(dice)),
        "thresholded_jaccard_0.65": 0.5,
    }
    (fold / "eval" / "scores.json").write_text(json.dumps({"summary": summary, "images": images}))
    preds = {
        "score_threshold": 0.4,
        "images": [
            {"stem": n, "instances": [{}] * (p > 0)} for n, p in zip(names, pred_px, strict=True)
        ],
    }
    (fold / "eval" / "pred" / "predictions.json").write_text(json.dumps(preds))
    (fold / "log.csv").write_text("epoch,loss,seconds\n1,0.5,60\n2,0.4,120\n")


def test_fold_figures_from_hand_made_files(tmp_path: Path) -> None:
    _write_fold(tmp_path / "fold0", [1.0, 0.5, 0.0], [0, 40, 0], [0, 50, 30])
    f = fold_figures(tmp_path / "fold0")
    assert (f.n_held_out, f.mean_dice, f.median_dice) == (3, 0.5, 0.5)
    assert f.n_nothing_predicted == 2  # p0 (correctly empty) and p2 (missed)
    assert f.empty_reference_instances == {"p0": 0}
    assert (f.score_threshold, f.train_minutes) == (0.4, 3.0)
    assert f.to_dict()["thresholded_jaccard_0.65"] == 0.5
    with pytest.raises(InputError, match="incomplete fold"):
        fold_figures(tmp_path / "missing")


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 40), (200, 100, 90)).save(path)


def test_dataset_folders_are_found_on_a_tmp_tree(tmp_path: Path) -> None:
    fuseg = tmp_path / "fuseg" / "train"
    isic = tmp_path / "isic"
    for path in (fuseg / "images" / "a.png", fuseg / "labels" / "a.png"):
        _image(path)
    for path in (isic / "images" / "b.jpg", isic / "masks" / "b_segmentation.png"):
        _image(path)
    _image(isic / "images" / "c.jpg")
    _image(isic / "masks" / "c_segmentation.png")
    assert dataset_root(fuseg / "images" / "a.png") == tmp_path / "fuseg"
    assert dataset_root(isic / "images" / "b.jpg") == isic
    run = tmp_path / "run"
    run.mkdir()
    held = [str(fuseg / "images" / "a.png"), str(isic / "images" / "b.jpg")]
    (run / "split.json").write_text(json.dumps({"train": [], "held_out": held}))
    pairs = held_out_pairs(run)
    assert [p.mask for p in pairs] == [
        fuseg / "labels" / "a.png",
        isic / "masks" / "b_segmentation.png",
    ]
    (isic / "images" / "b.jpg").unlink()
    (isic / "masks" / "b_segmentation.png").unlink()
    with pytest.raises(InputError, match="not in their dataset"):
        held_out_pairs(run)
    with pytest.raises(InputError, match=r"split\.json"):
        held_out_pairs(tmp_path)


def test_evaluate_held_out_on_real_photos(
    tmp_path: Path, shared_data: Path, tiny_checkpoint: Path
) -> None:
    pairs = find_pairs(shared_data / "medetec_wound")[:2]
    run = tmp_path / "run"
    run.mkdir()
    (run / "split.json").write_text(json.dumps({"held_out": [str(p.image) for p in pairs]}))
    scores, summary = evaluate_held_out(run, tmp_path / "eval", model=tiny_checkpoint)
    assert [s.name for s in scores] == sorted(p.image.stem for p in pairs)
    for score, pair in zip(scores, sorted(pairs, key=lambda p: p.image.stem), strict=True):
        pred = read_mask(tmp_path / "eval" / "pred" / f"{pair.image.stem}_mask.png")
        ref = read_mask(pair.mask)
        oracle = 2 * np.sum(pred & ref) / (pred.sum() + ref.sum()) if pred.any() or ref.any() else 1
        assert score.dice == pytest.approx(oracle)
    saved = json.loads((tmp_path / "eval" / "scores.json").read_text())
    assert saved["summary"]["mean_dice"] == pytest.approx(summary["mean_dice"])


def test_set_overrides_one_style(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = parse_overrides(
        ["fold=2", "augment.rotate=30", "holdout_fraction=0", "data_root=mydata"]
    )
    monkeypatch.chdir(tmp_path)
    config = load_train_config(REPO / "pipelines" / "wound_maskrcnn.yaml", overrides)
    assert (config.fold, config.augment.rotate, config.holdout_fraction) == (2, 30, 0)
    assert config.data_root == str(tmp_path / "mydata")  # typed in a shell: relative to cwd
    with pytest.raises(ConfigError, match="unknown keys \\['foldd'\\]"):
        load_train_config(REPO / "pipelines" / "wound_maskrcnn.yaml", {"foldd": 1})
    with pytest.raises(ConfigError, match="unknown keys \\['rotat'\\]"):
        load_train_config(REPO / "pipelines" / "wound_maskrcnn.yaml", {"augment.rotat": 1})
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["fold"])


def test_update_prediction_defaults_keeps_weights(tmp_path: Path, tiny_checkpoint: Path) -> None:
    path = tmp_path / "m.pt"
    shutil.copy(tiny_checkpoint, path)
    before, _ = read_checkpoint(path)
    info = update_prediction_defaults(path, {"max_instances": 1, "tta": True, "centre_prior": 0.2})
    assert (info.max_instances, info.tta, info.centre_prior) == (1, True, 0.2)
    after, _ = read_checkpoint(path)
    assert all(torch.equal(before["model"][k], after["model"][k]) for k in before["model"])
    with pytest.raises(ConfigError, match="needs max_instances"):
        update_prediction_defaults(path, {"max_instances": 0})
    with pytest.raises(ConfigError, match="unknown keys"):
        update_prediction_defaults(path, {"tta_": True})


def test_corrupt_checkpoint_and_missing_gpu_are_clear_errors(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medseg.errors import ModelError

    cut = tmp_path / "cut.pt"
    cut.write_bytes(tiny_checkpoint.read_bytes()[:10_000])
    with pytest.raises(ModelError, match="truncated, corrupt"):
        load_photo_model(cut)
    data, _ = read_checkpoint(tiny_checkpoint)
    key = next(k for k, v in data["model"].items() if v.is_floating_point())
    data["model"][key] = data["model"][key] + 1  # weights changed after saving
    torch.save(data, tmp_path / "tampered.pt")
    with pytest.raises(ModelError, match="digest"):
        load_photo_model(tmp_path / "tampered.pt")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(CudaUnavailableError, match="no CUDA GPU is available") as caught:
        load_photo_model(tiny_checkpoint, device="cuda")
    with pytest.raises(CudaUnavailableError) as direct:
        select_device("cuda")
    assert str(caught.value) == str(direct.value)
    assert isinstance(caught.value, ConfigError)
