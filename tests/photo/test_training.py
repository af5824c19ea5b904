from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from medseg.errors import ConfigError
from medseg.photo.checkpoint import load_photo_model, read_checkpoint
from medseg.photo.datasets import find_pairs, split_pairs
from medseg.photo.training import load_train_config, train

REPO = Path(__file__).resolve().parents[2]


def test_shipped_configs_load() -> None:
    for name in ("wound_maskrcnn.yaml", "skin_lesion_maskrcnn.yaml"):
        config = load_train_config(REPO / "pipelines" / name)
        assert config.weights is None and config.architecture == "small_resnet_gn_fpn"
        assert Path(config.data_root).is_dir()
        assert config.optimizer == "adamw" and config.bf16 and config.iterations >= 1000
        assert config.tta is True and config.crop_size is None
    lesion = load_train_config(REPO / "pipelines" / "skin_lesion_maskrcnn.yaml")
    wound = load_train_config(REPO / "pipelines" / "wound_maskrcnn.yaml")
    assert (lesion.max_instances, wound.max_instances) == (1, None)
    assert (lesion.centre_prior, wound.centre_prior) == (0.2, None)


def test_unknown_key_rejected(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ndatasets: [a]\nlearning_rat: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rat"):
        load_train_config(path)


@pytest.mark.slow
def test_few_iterations_write_loadable_checkpoint(tmp_path: Path, shared_data: Path) -> None:
    # epoch mode: the shipped config without its step keys (`iterations`, `eval_every`)
    text = (REPO / "pipelines" / "wound_maskrcnn.yaml").read_text()
    epoch_yaml = tmp_path / "epochs.yaml"
    epoch_yaml.write_text(
        "\n".join(
            line
            for line in text.splitlines()
            if not line.startswith(("iterations:", "eval_every:"))
        )
    )

    def config(epochs: int) -> object:
        return load_train_config(
            epoch_yaml,
            datasets=["medetec_wound"],
            data_root=str(shared_data),
            output_dir=str(tmp_path / "run"),
            image_size=64,
            batch_size=4,
            epochs=epochs,
            warmup_iterations=2,
            architecture="mobilenet_v3_fpn",
        )

    assert config(1).iterations is None  # type: ignore[attr-defined]
    final = train(config(1))  # type: ignore[arg-type]
    run = tmp_path / "run"
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert len(rows) == 1 and int(rows[0]["iteration"]) == 3  # 12 training photos / 4
    assert float(rows[0]["loss"]) > 0 and 0 <= float(rows[0]["val_dice"]) <= 1
    assert (run / "learning_curve.png").stat().st_size > 1000
    _, info = load_photo_model(final)
    assert info.spec.image_size == 64 and info.spec.class_names == ("wound",)
    assert info.metrics["n_train"] == 12 and info.metrics["n_held_out"] == 6
    assert read_checkpoint(run / "last.pt")[0]["epoch"] == 1
    # resume with one more epoch continues from the checkpoint
    train(config(2), resume=True)  # type: ignore[arg-type]
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and int(rows[1]["iteration"]) == 6


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("optimizer", "adam"),
        ("iterations", 0),
        ("eval_every", -1),
        ("max_instances", 0),
        ("max_instances", "one"),
        ("crop_size", 512),
        ("crop_size", 32),
        ("mask_size", 27),
        ("mask_size", 8),
        ("mask_size", "big"),
        ("split_seed", "abc"),
        ("seed", 1.5),
    ],
)
def test_bad_step_settings_rejected(tmp_path: Path, key: str, value: object) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"name: x\ndatasets: [a]\n{key}: {value}\n")
    with pytest.raises(ConfigError, match=key):
        load_train_config(path)


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("max_instances: 1\ncentre_prior: 0.2", True),
        ("max_instances: 1\ncentre_prior: null", True),
        ("centre_prior: 0.2", False),  # no max_instances: nothing to rank for
        ("max_instances: 1\ncentre_prior: 0", False),
        ("max_instances: 1\ncentre_prior: 1.5", False),
        ("max_instances: 1\ncentre_prior: true", False),
    ],
)
def test_centre_prior_setting_validated(tmp_path: Path, text: str, ok: bool) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"name: x\ndatasets: [a]\n{text}\n")
    if ok:
        assert load_train_config(path).max_instances == 1
    else:
        with pytest.raises(ConfigError, match="centre_prior"):
            load_train_config(path)


@pytest.mark.slow
def test_step_based_bf16_training_and_resume(tmp_path: Path, shared_data: Path) -> None:
    def config(iterations: int) -> object:
        return load_train_config(
            REPO / "pipelines" / "wound_maskrcnn.yaml",
            datasets=["medetec_wound"],
            data_root=str(shared_data),
            output_dir=str(tmp_path / "run"),
            image_size=96,
            batch_size=2,
            iterations=iterations,
            eval_every=2,
            warmup_iterations=1,
            fold=1,
            seed=3,  # weights and augmentation; the split follows split_seed (0)
            max_instances=1,
            centre_prior=0.25,
            tta=True,
            crop_size=64,  # trains on 64-px windows, evaluates whole 96-px photos
            mask_size=56,
        )

    final = train(config(5))  # type: ignore[arg-type]
    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [2, 4, 5]  # a row + checkpoint every 2 steps
    assert all(float(r["loss"]) > 0 and float(r["loss_mask"]) > 0 for r in rows)
    assert float(rows[-1]["lr"]) < 1e-3  # cosine decayed to ~0 at the last step
    ckpt, _ = read_checkpoint(final)
    assert ckpt["config"]["bf16"] is True and ckpt["config"]["fold"] == 1
    assert ckpt["metrics"]["iterations_trained"] == 5
    assert ckpt["inference"] == {"max_instances": 1, "tta": True, "centre_prior": 0.25}
    assert ckpt["spec"]["architecture"] == "small_resnet_gn_fpn"
    assert ckpt["spec"]["mask_size"] == 56
    assert all(v.dtype == torch.float16 for v in ckpt["model"].values() if v.is_floating_point())
    assert read_checkpoint(tmp_path / "run" / "last.pt")[0]["iteration"] == 5
    held = json.loads((tmp_path / "run" / "split.json").read_text())["held_out"]
    pairs = find_pairs(shared_data / "medetec_wound")
    expected = [str(p.image) for p in split_pairs(pairs, seed=0, fold=1)[1]]
    assert held == expected
    assert held != [str(p.image) for p in split_pairs(pairs, seed=3, fold=1)[1]]
    train(config(8), resume=True)  # type: ignore[arg-type]
    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [2, 4, 5, 8]  # resumed: period to 8


def test_recalibrate_batchnorm_sets_batch_statistics(shared_data: Path) -> None:
    import numpy as np
    import torch

    from medseg.photo.datasets import find_pairs, read_mask, read_photo
    from medseg.photo.models import build_maskrcnn
    from medseg.photo.training import recalibrate_batchnorm

    model = build_maskrcnn("mobilenet_v3_fpn", image_size=64)
    pairs = find_pairs(shared_data / "medetec_wound")[:3]
    data = [(read_photo(p.image), read_mask(p.mask)) for p in pairs]
    first = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    first.running_mean.fill_(123.0)
    seen: list[torch.Tensor] = []
    handle = first.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach()))
    assert recalibrate_batchnorm(model, data, batch_size=4) > 10
    handle.remove()
    assert len(seen) == 1  # one batch of 3 photos
    expected = seen[0].mean(dim=(0, 2, 3))
    assert torch.allclose(first.running_mean, expected, atol=1e-5)
    assert first.momentum == 0.05
    assert np.isfinite(first.running_var.numpy()).all()


def test_tune_score_threshold_picks_best_dice(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from medseg.photo import training
    from medseg.photo.inference import Instance, PhotoPrediction

    truth = np.zeros((20, 20), bool)
    truth[5:10, 5:10] = True
    wrong = np.zeros((20, 20), bool)
    wrong[12:18, 12:18] = True

    def fake_predict(
        model: object, image: object, *, score_threshold: float, bf16: bool
    ) -> PhotoPrediction:
        assert score_threshold == 0.0 and bf16 is False  # every candidate the network returns
        instances = (
            Instance((5, 5, 10, 10), 0.6, 1, truth),
            Instance((12, 12, 18, 18), 0.1, 1, wrong),
        )
        return PhotoPrediction(instances, truth | wrong)

    monkeypatch.setattr(training, "predict_array", fake_predict)
    image = np.zeros((20, 20, 3), np.uint8)
    best, table = training.tune_score_threshold(None, [(image, truth)])  # type: ignore[arg-type]
    assert best == 0.6
    assert table[0.2] == 1.0 and table[0.7] == 0.0
    assert table[0.05] == pytest.approx(2 * 25 / (25 + 25 + 36))
    # Keeping only the best instance drops the low-scoring wrong one at every threshold <= 0.6.
    best, table = training.tune_score_threshold(None, [(image, truth)], max_instances=1)  # type: ignore[arg-type]
    assert best == 0.6 and table[0.05] == 1.0 and table[0.7] == 0.0


def test_tune_score_threshold_ranks_with_the_centre_prior(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from medseg.photo import training
    from medseg.photo.inference import Instance, PhotoPrediction

    centre = np.zeros((20, 20), bool)
    centre[8:12, 8:12] = True  # the lesion, scored 0.3
    edge = np.zeros((20, 20), bool)
    edge[0:4, 0:4] = True  # dermatoscope edge, scored 0.6

    def fake_predict(
        model: object, image: object, *, score_threshold: float, bf16: bool
    ) -> PhotoPrediction:
        instances = (Instance((0, 0, 4, 4), 0.6, 1, edge), Instance((8, 8, 12, 12), 0.3, 1, centre))
        return PhotoPrediction(instances, edge | centre)

    monkeypatch.setattr(training, "predict_array", fake_predict)
    data = [(np.zeros((20, 20, 3), np.uint8), centre)]
    _, by_score = training.tune_score_threshold(None, data, max_instances=1)  # type: ignore[arg-type]
    assert by_score[0.3] == 0.0 and by_score[0.6] == 0.0  # the edge wins on score
    best, table = training.tune_score_threshold(None, data, max_instances=1, centre_prior=0.2)  # type: ignore[arg-type]
    # up to 0.6 some candidate passes the threshold, and the central one is kept; above, none
    assert table[0.05] == table[0.3] == table[0.6] == 1.0 and table[0.7] == 0.0
    assert best == 0.6


def test_crop_training_feeds_crops_unscaled_and_restores_the_photo_size() -> None:
    from medseg.photo.models import build_maskrcnn
    from medseg.photo.training import _input_size

    model = build_maskrcnn("small_resnet_gn_fpn", image_size=128)
    crop = [torch.rand(3, 48, 48)]
    with _input_size(model, 48):
        assert tuple(model.transform(crop)[0].image_sizes[0]) == (48, 48)
    assert tuple(model.transform(crop)[0].image_sizes[0]) == (128, 128)  # resized again
    with _input_size(model, None):
        assert tuple(model.transform(crop)[0].image_sizes[0]) == (128, 128)


@pytest.mark.slow
def test_final_model_on_every_photo(tmp_path: Path, shared_data: Path) -> None:
    config = load_train_config(
        REPO / "pipelines" / "skin_lesion_maskrcnn.yaml",
        datasets=["ham10000_skin_lesion"],
        data_root=str(shared_data),
        output_dir=str(tmp_path / "all"),
        image_size=64,
        batch_size=2,
        iterations=2,
        eval_every=2,
        warmup_iterations=1,
        holdout_fraction=0.0,
    )
    ckpt, _ = read_checkpoint(train(config))
    n_photos = len(find_pairs(shared_data / "ham10000_skin_lesion"))
    assert (ckpt["metrics"]["n_train"], ckpt["metrics"]["n_held_out"]) == (n_photos, 0)
    assert ckpt["metrics"]["held_out_dice"] is None
    # the lesion config's defaults
    assert ckpt["inference"] == {"max_instances": 1, "tta": True, "centre_prior": 0.2}
    split = json.loads((tmp_path / "all" / "split.json").read_text())
    assert len(split["train"]) == n_photos and split["held_out"] == []
