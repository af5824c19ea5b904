"""Training configs and case splits (fast)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg.errors import ConfigError
from medseg.training import load_train_config
from medseg.training.config import DataConfig
from medseg.training.data import list_cases, split_cases

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


@pytest.mark.parametrize("name", ["unet", "fcn", "fcn_srm", "unet_srm"])
def test_shipped_pipeline_configs_load(name: str, shared_data: Path) -> None:
    cfg = load_train_config(PIPELINES / f"train_hn_oar_{name}.yaml")
    assert Path(cfg.data.root) == (shared_data / "openkbp_hn_ct" / "train-pats").resolve()
    assert cfg.model.name == ("fcn3d" if name.startswith("fcn") else "unet3d")
    assert (cfg.srm is not None) == name.endswith("srm")
    assert cfg.preprocessing.orientation == "SPL"
    assert cfg.to_dict()["optim"]["epochs"] == cfg.optim.epochs


def test_unknown_keys_and_bad_values_are_config_errors(tmp_path: Path, shared_data: Path) -> None:
    root = shared_data / "openkbp_hn_ct" / "train-pats"
    base = f"name: x\noutput_dir: out\ndata: {{root: {root}}}\n"
    (tmp_path / "a.yaml").write_text(base + "optim: {epochz: 3}\n")
    with pytest.raises(ConfigError, match="epochz"):
        load_train_config(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text(base + "learning_rate: 3\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_train_config(tmp_path / "b.yaml")
    (tmp_path / "c.yaml").write_text(base + "preprocessing: {window_hu: [5, 1]}\n")
    with pytest.raises(ConfigError, match="window_hu"):
        load_train_config(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text(base + "srm: {lambda_latent: 1}\n")
    with pytest.raises(ConfigError, match="checkpoint"):
        load_train_config(tmp_path / "d.yaml")


def test_folds_partition_the_real_cases(shared_data: Path) -> None:
    cases = list_cases(shared_data / "openkbp_hn_ct" / "train-pats")
    assert len(cases) == 30
    seen: list[str] = []
    for fold in range(5):
        train, val = split_cases(cases, DataConfig(folds=5, fold=fold))
        assert len(val) == 6 and len(train) == 24 and not set(train) & set(val)
        seen += val
    assert sorted(seen) == sorted(cases)
    # deterministic
    assert split_cases(cases, DataConfig(fold=0)) == split_cases(cases, DataConfig(fold=0))


def test_fold_placeholder_gives_each_fold_its_own_run_and_srm(shared_data: Path) -> None:
    src = PIPELINES / "train_hn_oar_fcn_srm.yaml"
    runs = (PIPELINES.parent / "runs").resolve()
    for fold in (0, 2):
        cfg = load_train_config(src, {"data": {"fold": fold}})
        assert cfg.data.fold == fold
        assert cfg.output_dir == str(runs / f"hn_oar_fcn_srm_fold{fold}")
        assert cfg.srm is not None
        assert cfg.srm.checkpoint == str(runs / f"srm_fold{fold}" / "srm.pt")
    cfg = load_train_config(src, {"data": {"fold": None}})
    assert cfg.output_dir.endswith("hn_oar_fcn_srm_foldall")
    with pytest.raises(ConfigError, match=r"data.fold must be in 0..2"):
        load_train_config(src, {"data": {"fold": 3}})
