"""The review model: SRM training, calibration, save/load, and the files shipped with hn_oar."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medseg.io.openkbp import OPENKBP_OARS, load_openkbp_labels
from medseg.preprocess import PreprocessingSpec
from medseg.qa import ShapeModel, ShapeTrainConfig, fit_review_model, load_review_model
from medseg.qa.model import review_model_paths

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "openkbp_hn_ct" / "train-pats"
SPEC = PreprocessingSpec((3.0, 4.0, 4.0), "SPL", (-500.0, 500.0), (48, 64, 64))
TINY = ShapeTrainConfig(box=(16, 16, 16), channels=(4, 8), latent_channels=2, steps=3)


def test_fit_save_load_review_model(tmp_path: Path) -> None:
    cases = [DATA / "pt_109", DATA / "pt_119"]
    model = fit_review_model(
        cases,
        OPENKBP_OARS,
        qa_json=tmp_path / "m_qa.json",
        srm_path=tmp_path / "m_srm.pt",
        spec=SPEC,
        shape_config=TINY,
    )
    assert model.shape is not None
    assert set(model.shape.calibration) == set(OPENKBP_OARS)
    assert model.shape.calibration["Mandible"]["n"] == 2
    data = json.loads((tmp_path / "m_qa.json").read_text())
    assert data["info"]["train_cases"] == ["pt_109", "pt_119"]
    assert data["statistics"]["Brainstem"]["n"] == 2
    again = load_review_model(tmp_path / "m_qa.json")
    assert again.shape is not None and again.shape.box == (16, 16, 16)
    lv = load_openkbp_labels(DATA / "pt_13")
    e1 = model.shape.errors(lv.volume)
    e2 = again.shape.errors(lv.volume)
    assert e1 == e2 and set(e1) == set(OPENKBP_OARS)
    assert all(0.0 <= v <= 1.0 for v in e1.values())
    # an organ that is not there is not scored
    arr = np.where(lv.array == 6, 0, lv.array).astype(np.uint8)
    assert "Larynx" not in again.shape.errors(lv.volume.with_array(arr))


def test_shipped_review_model_beside_hn_oar() -> None:
    qa_json, srm = review_model_paths("hn_oar")
    assert qa_json.name == "hn_oar_qa.json" and srm.name == "hn_oar_srm.pt"
    assert srm.stat().st_size < 2_000_000  # small enough to ship
    model = load_review_model(qa_json)
    assert model.labels == OPENKBP_OARS
    assert isinstance(model.shape, ShapeModel)
    # statistics from every training patient of the shipped segmentation model, partially
    # contoured ones for the organs whose file exists; the SRM from the complete ones
    from medseg.models.checkpoint import read_checkpoint

    _, seg = read_checkpoint(ROOT / "medseg" / "weights" / "hn_oar.pt")
    train = set(json.loads(qa_json.read_text())["info"]["train_cases"])
    val = set(seg.config["data"]["val_cases"])
    assert len(train) == 160 and not train & val
    roots = [DATA, DATA.parents[1] / "openkbp_hn_ct_partial" / "train-pats"]
    folders = [r / c for c in train for r in roots if (r / c).is_dir()]
    assert len(folders) == 160
    srm_cases = json.loads(qa_json.read_text())["info"]["srm_train_cases"]
    assert len(srm_cases) == 20 and set(srm_cases) <= train
    for name in OPENKBP_OARS:
        with_file = sum(
            1 for f in folders if (f / f"{name}.csv").is_file() or (f / f"{name}.csv.gz").is_file()
        )
        assert model.statistics[name]["n"] == with_file, name
        cal = model.shape.calibration[name]
        assert 0.0 <= cal["q50"] <= cal["q95"] <= 1.0
    # the SRM reconstructs clinical shapes it never saw about as well as its training shapes,
    # and a cubic blob in place of the left parotid much worse
    lv = load_openkbp_labels(DATA / "pt_13")  # a validation patient of the segmentation model
    clean = model.shape.errors(lv.volume)
    assert clean["LeftParotid"] < 2 * model.shape.calibration["LeftParotid"]["q95"] + 0.05
    arr = lv.array.copy()
    where = np.argwhere(arr == 3)
    arr[arr == 3] = 0
    lo, hi = where.min(0), where.max(0) + 1
    arr[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]][
        arr[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] == 0
    ] = 3
    blob = model.shape.errors(lv.volume.with_array(arr))
    assert blob["LeftParotid"] > clean["LeftParotid"] + 0.1
