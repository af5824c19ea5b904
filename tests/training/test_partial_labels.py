"""Training on partially contoured patients (issue 19): data, loss and a short real run."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss

from medseg.errors import ConfigError
from medseg.io.openkbp import OPENKBP_OARS
from medseg.models import load_checkpoint
from medseg.preprocess import PreprocessingSpec
from medseg.training import PartialLabelLoss, load_train_config, train
from medseg.training.config import DataConfig
from medseg.training.data import (
    CachedPreparedd,
    availability_vector,
    discover_cases,
    split_cases,
)
from medseg.training.losses import marginal_log_probs, pseudo_complete_target

SPEC = PreprocessingSpec((3.0, 4.0, 4.0), "SPL", (-500.0, 500.0), (48, 64, 64))
LEFT_PAROTID = OPENKBP_OARS.index("LeftParotid") + 1


@pytest.fixture(scope="module")
def patient_without_left_parotid(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """Real pt_4 copied without LeftParotid.csv, and the complete label map for reference."""
    src = shared_data / "openkbp_hn_ct" / "train-pats" / "pt_4"
    root = tmp_path_factory.mktemp("partial")
    dst = root / "pt_4"
    shutil.copytree(src, dst)
    (dst / "LeftParotid.csv").unlink()
    data = DataConfig(root=str(root))
    prep = CachedPreparedd(data, SPEC)
    partial = prep({"case": str(dst)})
    complete = prep({"case": str(src)})
    return root, partial, complete


def _patch_around(label: np.ndarray, organ: int, size: tuple[int, int, int]) -> tuple[slice, ...]:
    centre = np.argwhere(label == organ).mean(axis=0).astype(int)
    return tuple(
        slice(max(0, c - s // 2), max(0, c - s // 2) + s) for c, s in zip(centre, size, strict=True)
    )


def test_missing_file_means_not_contoured(patient_without_left_parotid) -> None:
    root, partial, complete = patient_without_left_parotid
    (case,) = discover_cases(DataConfig(root=str(root)))
    assert "LeftParotid" not in case.available and len(case.available) == 6
    vec = availability_vector(case, OPENKBP_OARS)
    assert vec.tolist() == [True, True, True, False, True, True, True, True]
    # the stored label map has no LeftParotid voxel; every other organ keeps its id
    assert not (partial["label"] == LEFT_PAROTID).any()
    assert (complete["label"] == LEFT_PAROTID).sum() > 100
    same = complete["label"] != LEFT_PAROTID
    np.testing.assert_array_equal(partial["label"][same], complete["label"][same])


def test_marginal_loss_never_pushes_an_uncontoured_organ_down_in_its_region(
    patient_without_left_parotid,
) -> None:
    _root, partial, complete = patient_without_left_parotid
    box = _patch_around(complete["label"][0], LEFT_PAROTID, (24, 32, 32))
    target = torch.as_tensor(partial["label"][0][box].astype(np.int64))[None, None]
    truth = complete["label"][0][box] == LEFT_PAROTID
    assert truth.sum() > 50
    torch.manual_seed(0)
    logits = torch.randn(1, 8, *target.shape[2:], requires_grad=True)
    available = torch.tensor([[True, True, True, False, True, True, True, True]])

    PartialLabelLoss(exclusion_weight=1.0)(logits, target, available).backward()
    grad = logits.grad[0, LEFT_PAROTID].numpy()
    # gradient descent moves a logit by -grad: ≤ 0 means never pushed down
    assert grad[truth].max() <= 1e-9
    assert grad[truth].mean() < 0  # merged with background, it is in fact pulled up

    naive = logits.detach().clone().requires_grad_(True)
    DiceCELoss(to_onehot_y=True, softmax=True)(naive, target).backward()
    assert naive.grad[0, LEFT_PAROTID].numpy()[truth].mean() > 0  # the naive loss pushes it down


def test_exclusion_pushes_an_uncontoured_organ_out_of_contoured_ones() -> None:
    target = torch.zeros(1, 1, 4, 4, 4, dtype=torch.int64)
    target[..., :2, :, :] = 1  # organ 1 contoured in the top half
    logits = torch.zeros(1, 3, 4, 4, 4, requires_grad=True)
    available = torch.tensor([[True, True, False]])
    loss = PartialLabelLoss(exclusion_weight=1.0)
    loss(logits, target, available).backward()
    assert loss.last_terms["exclusion"] > 0
    g = logits.grad[0, 2]
    assert g[:2].mean() > 0  # inside organ 1: organ 2 is pushed down by exclusion
    without = logits.detach().clone().requires_grad_(True)
    PartialLabelLoss(exclusion_weight=0.0)(without, target, available).backward()
    assert without.grad[0, 2, :2].mean() < g[:2].mean()


def test_complete_patients_get_plain_dice_ce() -> None:
    torch.manual_seed(1)
    logits = torch.randn(2, 5, 6, 7, 8)
    target = torch.randint(0, 5, (2, 1, 6, 7, 8))
    full = torch.ones(2, 5, dtype=torch.bool)
    ours = PartialLabelLoss(exclusion_weight=1.0)(logits, target, full)
    assert float(ours) == pytest.approx(
        float(DiceCELoss(to_onehot_y=True, softmax=True)(logits, target)), rel=1e-5
    )


def test_marginal_probabilities_sum_to_one() -> None:
    torch.manual_seed(2)
    lp = marginal_log_probs(
        torch.randn(3, 4, 5), torch.tensor([[1, 0, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]]).bool()
    )
    np.testing.assert_allclose(lp.exp().sum(1).numpy(), 1.0, rtol=1e-5)
    assert torch.all(lp[0, 1].isneginf()) and torch.all(lp[2, 1:].isneginf())


def test_several_roots_and_availability_checks(shared_data: Path, tmp_path: Path) -> None:
    complete = shared_data / "openkbp_hn_ct" / "train-pats"
    partial = shared_data / "openkbp_hn_ct_partial" / "train-pats"
    cases = discover_cases(DataConfig(root=str(complete), extra_roots=(str(partial),)))
    assert len(cases) == 170
    by_id = {c.id: c for c in cases}
    assert by_id["pt_1"].available == (
        "Brainstem",
        "SpinalCord",
        "LeftParotid",
        "RightParotid",
        "Mandible",
    )
    assert sum(len(c.available) == 7 for c in cases) == 30
    counts = {n: sum(n in c.available for c in cases) for n in OPENKBP_OARS}
    assert counts["Esophagus"] == 30 + 29 and counts["Larynx"] == 30 + 51  # SOURCE.md's table
    # a CSV that agrees with the files is accepted; one that claims a missing file is refused
    csv_ok = shared_data / "openkbp_hn_ct_partial" / "oars.csv"
    from_csv = discover_cases(DataConfig(root=str(partial), availability=str(csv_ok)))
    assert {c.id: c.available for c in from_csv} == {
        c.id: c.available for c in cases if c.id in by_id and c.folder.startswith(str(partial))
    }
    bad = tmp_path / "bad.csv"
    text = csv_ok.read_text().replace("pt_1,1,1,1,1,0,0,1,5", "pt_1,1,1,1,1,1,0,1,6")
    bad.write_text(text)
    with pytest.raises(ConfigError, match="pt_1 is listed with \\['Esophagus'\\]"):
        discover_cases(DataConfig(root=str(partial), availability=str(bad)))
    with pytest.raises(ConfigError, match="in two data roots"):
        discover_cases(DataConfig(root=str(partial), extra_roots=(str(partial),)))
    with pytest.raises(ConfigError, match="not among the patients"):
        split_cases(list(by_id), DataConfig(val_cases=("pt_9999",)))


def test_pseudo_complete_target_fills_only_uncontoured_organs_on_background() -> None:
    # 6 voxels; classes 0 bg, 1 contoured, 2 uncontoured, 3 contoured
    target = torch.tensor([[[0, 0, 0, 1, 3, 0]]])
    pred = torch.tensor([0, 2, 1, 2, 2, 3])  # what the network says at each voxel
    logits = torch.nn.functional.one_hot(pred, 4).T[None].float() * 4.0
    avail = torch.tensor([[True, True, False, True]])
    full = pseudo_complete_target(logits, target, avail)
    # voxel 1: bg + predicted uncontoured organ 2 -> 2; voxel 2: bg predicted as contoured
    # organ 1 stays bg (the contour says no); voxels 3, 4: drawn contours win; voxel 5: bg
    # predicted as contoured organ 3 stays bg
    assert full.tolist() == [[[0, 2, 0, 1, 3, 0]]]
    assert full.dtype == torch.long
    # a complete patient's target is returned unchanged
    assert torch.equal(pseudo_complete_target(logits, target, torch.ones(1, 4).bool()), target)


def test_srm_terms_on_a_partial_patient_leave_its_uncontoured_organ_alone(
    patient_without_left_parotid,
) -> None:
    """With the prediction filling the missing organ, the SRM sees the organ set the network
    predicts, so the shape terms stay as they are for a perfect prediction of the contoured
    organs: no "background" is taught where the uncontoured parotid lies."""
    from medseg.models import ShapeRegularizedLoss, build_model

    _root, partial, complete = patient_without_left_parotid
    full = np.asarray(complete["label"][0])
    window = _patch_around(full, LEFT_PAROTID, (24, 32, 32))
    truth = torch.as_tensor(full[window].astype(np.int64))[None, None]
    drawn = torch.as_tensor(np.asarray(partial["label"][0])[window].astype(np.int64))[None, None]
    assert int((truth == LEFT_PAROTID).sum()) > 50 and int((drawn == LEFT_PAROTID).sum()) == 0
    k = len(OPENKBP_OARS) + 1
    logits = torch.nn.functional.one_hot(truth[:, 0], k).movedim(-1, 1).float() * 6.0
    avail = torch.ones(1, k, dtype=torch.bool)
    avail[0, LEFT_PAROTID] = False
    torch.manual_seed(0)
    srm = build_model("srm", in_channels=k, out_channels=k, channels=[4, 8], latent_channels=4)
    loss_fn = ShapeRegularizedLoss(srm, lambda_latent=1.0, lambda_recon=1.0)
    completed = pseudo_complete_target(logits, drawn, avail)
    assert torch.equal(completed, truth)  # the prediction restores the missing parotid
    x = logits.clone().requires_grad_(True)
    loss_fn.shape_loss(x, completed)
    assert loss_fn.last_terms["latent"] == pytest.approx(0.0, abs=1e-4)  # same organ set
    # against the drawn map (parotid as background) the latent term would not be zero
    loss_fn.shape_loss(x, drawn)
    assert loss_fn.last_terms["latent"] > 1e-3


def _short_config(tmp_path: Path, shared_data: Path, *, val: str, epochs: int = 4) -> Path:
    complete = tmp_path / "complete"
    partial = tmp_path / "partial"
    complete.mkdir()
    partial.mkdir()
    for name in ("pt_4", "pt_100"):
        (complete / name).symlink_to(shared_data / "openkbp_hn_ct" / "train-pats" / name)
    for name in ("pt_1", "pt_103"):
        (partial / name).symlink_to(shared_data / "openkbp_hn_ct_partial" / "train-pats" / name)
    cfg = tmp_path / "partial.yaml"
    cfg.write_text(
        f"""
name: partial_smoke
output_dir: {tmp_path / "run"}
num_threads: 2
seed: 0
data: {{root: {complete}, extra_roots: [{partial}], val_cases: [{val}],
       cache_dir: {tmp_path / "cache"}}}
preprocessing: {{spacing_mm: [6.0, 8.0, 8.0], roi_size: [32, 32, 32]}}
model: {{name: unet3d, options: {{channels: [8, 16], num_res_units: 1}}}}
loss: {{partial: marginal, exclusion_weight: 1.0}}
optim: {{epochs: {epochs}, samples_per_case: 2, pos_fraction: 1.0, lr: 0.01,
        val_every: {epochs}, amp: false}}
"""
    )
    return cfg


@pytest.mark.slow
def test_short_run_on_real_partial_data_trains(tmp_path: Path, shared_data: Path) -> None:
    cfg = load_train_config(_short_config(tmp_path, shared_data, val="pt_100"))
    result = train(cfg)
    assert result.steps_done == 4 * 3
    cases = json.loads((tmp_path / "run" / "cases.json").read_text())
    assert cases["train"] == ["pt_1", "pt_103", "pt_4"] and cases["val"] == ["pt_100"]
    assert cases["partial"]["pt_103"] == [
        "Brainstem",
        "SpinalCord",
        "LeftParotid",
        "RightParotid",
        "Larynx",
    ]
    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert float(rows[-1]["train_exclusion"]) >= 0  # the partial loss ran
    assert 0.0 <= float(rows[-1]["val_mean_dice"]) <= 1.0
    _model, info = load_checkpoint(result.last_checkpoint)
    assert info.label_map.names == OPENKBP_OARS
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 3  # the prepared arrays were cached
    # validating on a partially contoured patient is refused (its Dice would be meaningless)
    cfg2 = load_train_config(
        _short_config(tmp_path / "b", shared_data, val="pt_103")
        if (tmp_path / "b").mkdir() is None
        else None
    )
    with pytest.raises(ConfigError, match="lack contours"):
        train(cfg2)


@pytest.mark.slow
def test_srm_run_on_real_partial_data_applies_shape_terms_to_partial_patients(
    tmp_path: Path, shared_data: Path
) -> None:
    cfg_path = _short_config(tmp_path, shared_data, val="pt_100", epochs=2)
    cfg_path.write_text(
        cfg_path.read_text()
        + f"""srm: {{checkpoint: {tmp_path / "srm.pt"}, channels: [4, 8], latent_channels: 4,
      lambda_latent: 0.1, lambda_recon: 0.2, epochs: 1, lr: 0.005}}
"""
    )
    result = train(load_train_config(cfg_path))
    assert result.steps_done == 2 * 3
    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    # every epoch saw both partial patients (exclusion term) and SRM terms
    for row in rows:
        assert float(row["train_exclusion"]) >= 0
        assert float(row["train_latent"]) > 0 and float(row["train_recon"]) > 0


@pytest.mark.slow
def test_nnunet_options_run_on_real_partial_data(tmp_path: Path, shared_data: Path) -> None:
    """Deep supervision (dynunet3d), class-balanced sampling and strong augmentation together."""
    cfg_path = _short_config(tmp_path, shared_data, val="pt_100", epochs=2)
    text = cfg_path.read_text()
    text = text.replace(
        "model: {name: unet3d, options: {channels: [8, 16], num_res_units: 1}}",
        "model: {name: dynunet3d, options: {channels: [8, 16, 16], deep_supervision: 1}}",
    )
    text = text.replace("pos_fraction: 1.0,", "pos_fraction: 0.67, sampling: class,")
    text = text.replace("amp: false}", "amp: false, augmentation: strong}")
    assert "dynunet3d" in text and "sampling: class" in text and "augmentation: strong" in text
    cfg_path.write_text(text)
    cfg = load_train_config(cfg_path)
    assert (cfg.optim.sampling, cfg.optim.augmentation) == ("class", "strong")
    result = train(cfg)
    assert result.steps_done == 2 * 3
    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    # the coarser head's weighted loss is logged for every epoch (it took part in training)
    assert all(float(row["train_heads"]) > 0 for row in rows)
    assert 0.0 <= float(rows[-1]["val_mean_dice"]) <= 1.0
    model, info = load_checkpoint(result.last_checkpoint)
    assert info.model_name == "dynunet3d"
    with torch.no_grad():  # a loaded checkpoint is in eval mode: one output, no heads
        out = model(torch.zeros(1, 1, 20, 24, 28))
    assert out.shape == (1, 8, 20, 24, 28)
