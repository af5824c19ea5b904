"""Review flags on real OpenKBP contours and on contours broken on purpose."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from medseg.io.openkbp import OPENKBP_OARS, load_openkbp_labels
from medseg.qa import (
    DEFAULT_THRESHOLDS,
    ReviewModel,
    measure_organs,
    organ_flags,
    organ_statistics,
    review_labels,
    tta_disagreement,
)
from medseg.qa.measure import organ_side
from medseg.qa.validation import roc_auc, sensitivity_specificity

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "openkbp_hn_ct" / "train-pats"
TRAIN = ["pt_109", "pt_119", "pt_132", "pt_144", "pt_157", "pt_168"]


@pytest.fixture(scope="module")
def model() -> ReviewModel:
    stats = organ_statistics([DATA / c for c in TRAIN], OPENKBP_OARS)
    return ReviewModel(OPENKBP_OARS, stats["organs"], dict(DEFAULT_THRESHOLDS))


@pytest.fixture(scope="module")
def case() -> tuple[np.ndarray, np.ndarray]:
    lv = load_openkbp_labels(DATA / "pt_13")
    return np.asarray(lv.array), lv.affine


def test_measurements_of_real_contours(case: tuple[np.ndarray, np.ndarray]) -> None:
    labels, affine = case
    from medseg.volume import LabelMap

    m = measure_organs(labels, affine, LabelMap.from_names(list(OPENKBP_OARS)))
    vox_cm3 = abs(np.linalg.det(affine[:3, :3])) / 1000.0
    for i, name in enumerate(OPENKBP_OARS, start=1):
        assert m[name].voxels == int((labels == i).sum())
        assert m[name].volume_cm3 == pytest.approx(m[name].voxels * vox_cm3, abs=1e-3)
    # the clinical parotids lie on their own side, the midline organs on the midline
    assert m["LeftParotid"].side == "L" and m["RightParotid"].side == "R"
    assert m["LeftParotid"].lateral_offset_mm > 25 and m["RightParotid"].lateral_offset_mm < -25
    assert m["Brainstem"].side == "midline"
    assert 10 < m["LeftParotid"].volume_cm3 < 60


def test_statistics_of_training_contours(model: ReviewModel) -> None:
    s = model.statistics["LeftParotid"]
    assert s["n"] == len(TRAIN)
    vals = np.array(s["volume_cm3"]["values"])
    assert s["volume_cm3"]["mean"] == pytest.approx(vals.mean(), abs=1e-3)
    assert s["log_volume"]["mean"] == pytest.approx(np.log(vals).mean(), abs=1e-3)
    assert s["sides"]["L"] == len(TRAIN)


def test_clinical_contours_are_not_flagged(
    model: ReviewModel, case: tuple[np.ndarray, np.ndarray]
) -> None:
    labels, affine = case
    review = review_labels(labels, affine, model)
    assert [n for n, o in review.items() if o.flagged] == []


def test_broken_contours_are_flagged_with_reasons(
    model: ReviewModel, case: tuple[np.ndarray, np.ndarray]
) -> None:
    labels, affine = case
    broken = labels.copy()
    broken[broken == 6] = 0  # Larynx missing
    lp = np.argwhere(broken == 3)
    broken[broken == 3] = 0
    keep = lp[: len(lp) // 6]  # a sixth of the left parotid left
    broken[tuple(keep.T)] = 3
    # a stray piece of spinal cord 10 voxels away from the rest, a quarter of its size
    cord = np.argwhere(labels == 2)
    piece = cord[: len(cord) // 4].copy()
    piece[:, 2] = np.clip(piece[:, 2] + 12, 0, 127)
    broken[tuple(piece.T)] = 2
    review = review_labels(broken, affine, model)
    assert review["Larynx"].score == 10.0 and review["Larynx"].reasons[0].startswith("missing")
    assert "volume" in [f.name for f in review["LeftParotid"].flags if f.flagged]
    assert "below the training contours" in review["LeftParotid"].reasons[0]
    assert review["SpinalCord"].measure.components >= 2
    assert "fragments" in [f.name for f in review["SpinalCord"].flags if f.flagged]
    assert not review["Brainstem"].flagged


def test_mirrored_labels_fail_laterality(
    model: ReviewModel, case: tuple[np.ndarray, np.ndarray]
) -> None:
    labels, affine = case
    mirrored = labels[:, :, ::-1]  # anatomy mirrored left-right, same header
    review = review_labels(np.ascontiguousarray(mirrored), affine, model)
    for name in ("LeftParotid", "RightParotid"):
        lat = next(f for f in review[name].flags if f.name == "laterality")
        assert lat.flagged and "wrong side" in lat.reason


def test_organ_side_and_flag_severity_scale() -> None:
    assert [organ_side(x) for x in (-6.0, 0.0, 6.0)] == ["R", "midline", "L"]
    from medseg.qa import OrganMeasure

    stats = {
        "n": 10,
        "log_volume": {"mean": np.log(20.0), "sd": 0.2},
        "volume_cm3": {"min": 14.0, "max": 30.0},
        "components": {"max": 1},
    }
    # exactly at the threshold: z = 2.5 -> severity 1.0, flagged
    v = float(np.exp(np.log(20.0) + 2.5 * 0.2))
    r = organ_flags(OrganMeasure("Larynx", 9, v, 1, 1.0, (0, 0, 0), 0.0, "midline"), stats)
    assert r.volume_z == pytest.approx(2.5, abs=1e-3)
    assert next(f for f in r.flags if f.name == "volume").severity == pytest.approx(1.0, abs=1e-3)
    assert r.flagged


def test_confidence_flag_from_the_networks_expected_dice(
    model: ReviewModel, case: tuple[np.ndarray, np.ndarray]
) -> None:
    labels, affine = case
    sure = review_labels(labels, affine, model, expected_dice={"Larynx": 0.93})
    unsure = review_labels(labels, affine, model, expected_dice={"Larynx": 0.55})
    assert not sure["Larynx"].flagged
    conf = next(f for f in unsure["Larynx"].flags if f.name == "confidence")
    # (1 - 0.55) / (1 - 0.7) = 1.5: flagged, and the reason names the expected Dice
    assert conf.severity == pytest.approx(1.5, abs=1e-3) and conf.flagged
    assert "expect Dice 0.55" in conf.reason
    assert unsure["Larynx"].score == pytest.approx(1.5, abs=1e-3)
    # organs without a recorded expected Dice get no confidence flag
    assert all(f.name != "confidence" for f in unsure["Mandible"].flags)


def test_tta_disagreement_matches_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    base = np.zeros((12, 12, 12), np.uint8)
    base[3:9, 3:9, 3:9] = 1
    preds = [np.where(rng.random(base.shape) < 0.05, 1 - base, base) for _ in range(3)]
    got = tta_disagreement(preds, [1])[1]
    consensus = np.sum([p == 1 for p in preds], axis=0) >= 2
    dices = [2 * (p == 1)[consensus].sum() / ((p == 1).sum() + consensus.sum()) for p in preds]
    assert got == pytest.approx(1 - np.mean(dices), abs=1e-3)
    assert got > 0.0


def test_roc_auc_against_pair_counting() -> None:
    rng = np.random.default_rng(1)
    s = np.round(rng.random(60), 1)  # ties on purpose
    y = rng.random(60) < 0.4
    pairs = [(a, b) for a, b in itertools.product(s[y], s[~y])]
    oracle = np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs])
    assert roc_auc(s, y) == pytest.approx(oracle, abs=1e-12)
    sens, spec = sensitivity_specificity(s >= 0.5, y)
    assert sens == pytest.approx(np.mean(s[y] >= 0.5))
    assert spec == pytest.approx(np.mean(s[~y] < 0.5))
