"""End-to-end training on real OpenKBP data (slow)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.cli import main
from medseg.models import load_checkpoint
from medseg.training import dice_per_label, load_train_config, train
from medseg.training.data import deterministic_transforms

pytestmark = pytest.mark.slow


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_small_unet_overfits_one_real_patient(tmp_path: Path, shared_data: Path) -> None:
    """Proves the loop: loss, patches, optimiser and checkpointing can fit one patient."""
    root = shared_data / "openkbp_hn_ct" / "train-pats"
    cfg_path = _write(
        tmp_path / "overfit.yaml",
        f"""
name: overfit_one
output_dir: {tmp_path / "run"}
num_threads: 2
seed: 0
data: {{root: {root}, fold: null, max_cases: 1}}
preprocessing: {{spacing_mm: [5.0, 6.0, 6.0], roi_size: [64, 48, 48]}}
model: {{name: unet3d, options: {{channels: [8, 16, 32, 64], num_res_units: 1}}}}
optim: {{epochs: 250, samples_per_case: 1, pos_fraction: 1.0, augment: false, lr: 0.01}}
""",
    )
    cfg = load_train_config(cfg_path)
    result = train(cfg)
    assert result.steps_done == 250
    model, info = load_checkpoint(result.best_checkpoint)
    case = {"case": str(root / "pt_100")}
    for t in deterministic_transforms(cfg.data, cfg.preprocessing):
        case = t(case)
    from monai.inferers import sliding_window_inference

    with torch.no_grad():
        logits = sliding_window_inference(
            torch.as_tensor(case["image"])[None], info.preprocessing.roi_size, 1, model
        )
    pred = torch.as_tensor(logits).argmax(1)[0].numpy()
    dice = dice_per_label(pred, case["label"][0], range(1, 8))
    assert float(np.mean(dice)) > 0.9, dice


def test_cli_train_two_iterations_writes_loadable_checkpoint(
    tmp_path: Path, shared_data: Path
) -> None:
    src = Path(__file__).resolve().parents[2] / "pipelines" / "train_hn_oar_unet_srm.yaml"
    text = src.read_text().replace(
        "../../shared/data/openkbp_hn_ct/train-pats",
        str(shared_data / "openkbp_hn_ct" / "train-pats"),
    )
    text = text.replace("../runs/srm_fold0/srm.pt", str(tmp_path / "srm.pt"))
    text = text.replace("  epochs: 20\n", "  epochs: 1\n")  # SRM stage: one epoch
    cfg = _write(tmp_path / "cfg.yaml", text)
    out = tmp_path / "run"
    code = main(["train", str(cfg), "--epochs", "1", "--max-cases", "3", "--output-dir", str(out)])
    assert code == 0
    cases = json.loads((out / "cases.json").read_text())
    assert len(cases["train"]) == 2 and len(cases["val"]) == 1
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert len(rows) == 1 and rows[0]["step"] == "2"
    assert 0.0 <= float(rows[0]["val_mean_dice"]) <= 1.0
    assert (out / "learning_curve.png").stat().st_size > 1000
    model, info = load_checkpoint(out / "best.pt")
    assert info.model_name == "unet3d" and info.label_map.names[-1] == "Mandible"
    assert info.config["srm"]["checkpoint"] == str(tmp_path / "srm.pt")
    _srm, srm_info = load_checkpoint(tmp_path / "srm.pt")
    assert srm_info.model_name == "srm"
    with torch.no_grad():
        y = model(torch.zeros(1, 1, 17, 19, 23))
    assert y.shape == (1, 8, 17, 19, 23)
    # resume continues from last.pt for one more epoch
    code = main(
        [
            "train",
            str(cfg),
            "--epochs",
            "2",
            "--max-cases",
            "3",
            "--output-dir",
            str(out),
            "--resume",
            str(out / "last.pt"),
        ]
    )
    assert code == 0
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert [r["step"] for r in rows] == ["2", "4"]
