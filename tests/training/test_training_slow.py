"""End-to-end training on real OpenKBP data (slow)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch
from monai.inferers import sliding_window_inference

from medseg.cli import main
from medseg.metrics import dice_per_label
from medseg.models import load_checkpoint
from medseg.training import load_train_config, train
from medseg.training.data import CachedPreparedd

pytestmark = pytest.mark.slow

OVERFIT_EPOCHS = 320
#: organs with >= 40 voxels on the 8-mm test grid; Esophagus (12 voxels) and Larynx (27) are
#: not reliably learned in 320 steps at this grid (their Dice stays at 0 in a CPU-budget run).
OVERFIT_ORGANS = ("Brainstem", "SpinalCord", "LeftParotid", "RightParotid", "Mandible")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_small_unet_overfits_one_real_patient(tmp_path: Path, shared_data: Path) -> None:
    """Proves the loop: patches, loss, optimiser, validation and checkpoints fit one patient.

    The fit is measured on the model's 6 × 8 × 8 mm grid: the loop's own validation goes through
    the shipped Predictor onto the ~4 mm source grid, where even a perfect 8-mm label map scores
    only 0.6–0.8 Dice (the grid's cost), so it cannot show a fit above 0.9.

    The data root holds pt_4 twice (symlinks), so the loop trains on one copy and validates
    on the other, i.e. the logged validation Dice is the training-set Dice. Float32
    (``amp: false``): this 320-step budget was sized for it; under bf16 autocast the same
    budget left one of the asserted organs below 0.9 in CI. The bf16 path is exercised by
    the CLI test below and by the runs in docs/models/hn_oar.md.
    """
    root = tmp_path / "data"
    root.mkdir()
    for name in ("pt_4", "pt_4_again"):
        (root / name).symlink_to(shared_data / "openkbp_hn_ct" / "train-pats" / "pt_4")
    cfg_path = _write(
        tmp_path / "overfit.yaml",
        f"""
name: overfit_one
output_dir: {tmp_path / "run"}
num_threads: 2
seed: 0
data: {{root: {root}, folds: 2, fold: 0}}
preprocessing: {{spacing_mm: [6.0, 8.0, 8.0], roi_size: [56, 40, 64]}}
model: {{name: unet3d, options: {{channels: [16, 32, 64], num_res_units: 1}}}}
optim: {{epochs: EPOCHS, samples_per_case: 1, pos_fraction: 1.0, augment: false, lr: 0.01,
        val_every: 50, amp: false}}
""".replace("EPOCHS", str(OVERFIT_EPOCHS)),
    )
    result = train(load_train_config(cfg_path))
    assert result.steps_done == OVERFIT_EPOCHS
    _best, info = load_checkpoint(result.best_checkpoint)
    assert info.metrics["val_mean_dice"] == result.best_mean_dice
    model, info = load_checkpoint(result.last_checkpoint)
    # the fit at the end of training on the model's own grid (the patient it trained on, prepared
    # as in training; windows blended as the loop's validation did before it used the Predictor)
    cfg = load_train_config(cfg_path)
    case = CachedPreparedd(cfg.data, cfg.preprocessing)({"case": str(root / "pt_4")})
    with torch.no_grad():
        logits = sliding_window_inference(
            torch.as_tensor(case["image"])[None],
            cfg.preprocessing.roi_size,
            1,
            model,
            overlap=0.25,
            mode="gaussian",
        )
    fit = dice_per_label(logits.argmax(1)[0].numpy(), case["label"][0], info.label_map.ids)
    fit_by_organ = dict(zip(info.label_map.names, fit, strict=True))
    assert all(fit_by_organ[o] > 0.9 for o in OVERFIT_ORGANS), fit_by_organ
    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])


def test_cli_train_two_iterations_writes_loadable_checkpoint(
    tmp_path: Path, shared_data: Path
) -> None:
    src = Path(__file__).resolve().parents[2] / "pipelines" / "train_hn_oar_unet_srm.yaml"
    text = src.read_text().replace(
        "../../shared/data/openkbp_hn_ct/train-pats",
        str(shared_data / "openkbp_hn_ct" / "train-pats"),
    )
    assert "../runs/srm_fold{fold}/srm.pt" in text
    text = text.replace("../runs/srm_fold{fold}/srm.pt", str(tmp_path / "srm_{fold}.pt"))
    text = re.sub(r"(?m)^  epochs: 50 .*$", "  epochs: 1", text)  # SRM stage: one epoch
    cfg = _write(tmp_path / "cfg.yaml", text)
    out = tmp_path / "run"
    argv = ["train", str(cfg), "--epochs", "1", "--max-cases", "3", "--output-dir", str(out)]
    code = main([*argv, "--fold", "1"])
    assert code == 0
    cases = json.loads((out / "cases.json").read_text())
    assert len(cases["train"]) == 2 and len(cases["val"]) == 1
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert len(rows) == 1 and rows[0]["step"] == "2"
    assert 0.0 <= float(rows[0]["val_mean_dice"]) <= 1.0
    assert (out / "learning_curve.png").stat().st_size > 1000
    model, info = load_checkpoint(out / "best.pt")
    assert info.model_name == "unet3d" and info.label_map.names[-1] == "Mandible"
    assert info.config["srm"]["checkpoint"] == str(tmp_path / "srm_1.pt")
    assert info.config["data"]["fold"] == 1
    _srm, srm_info = load_checkpoint(tmp_path / "srm_1.pt")
    assert srm_info.model_name == "srm"
    # stage 1 scored the SRM's reconstruction of the held-out case's label map
    recon = srm_info.metrics["val_recon_dice"]
    assert sorted(recon) == sorted(info.label_map.names)
    assert all(0.0 <= v <= 1.0 for v in recon.values())  # every organ is in every case
    with torch.no_grad():
        y = model(torch.zeros(1, 1, 17, 19, 23))
    assert y.shape == (1, 8, 17, 19, 23)
    # resume continues from last.pt for one more epoch
    argv[3] = "2"  # --epochs 2
    code = main([*argv, "--fold", "1", "--resume", str(out / "last.pt")])
    assert code == 0
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert [r["step"] for r in rows] == ["2", "4"]
