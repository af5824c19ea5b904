"""The flag-validation pipeline on a real patient: cached prediction, quality, one row per organ."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.inference import Predictor
from medseg.io.openkbp import OPENKBP_OARS, load_openkbp_ct
from medseg.qa import DEFAULT_THRESHOLDS, ReviewModel, organ_statistics
from medseg.qa.validation import (
    SCORES,
    cached_quality,
    flag_performance,
    load_cached_prediction,
    predict_cases,
    validation_table,
)


def test_cached_predictions_feed_the_validation_rows(shared_data: Path, tmp_path: Path) -> None:
    root = shared_data / "openkbp_hn_ct" / "train-pats"
    folder = root / "pt_112"
    (path,) = predict_cases("hn_oar", [folder], tmp_path / "cache")
    labels, _affine, probs = load_cached_prediction(path)
    # the cache holds exactly what the shipped predictor says, quality included
    predictor = Predictor.from_checkpoint("hn_oar", device="cpu")
    direct = predictor.predict(load_openkbp_ct(folder))
    np.testing.assert_array_equal(labels, direct.array)
    assert cached_quality(path) == predictor.last_quality
    assert set(probs) == set(range(1, len(OPENKBP_OARS) + 1))
    mtime = path.stat().st_mtime_ns
    predict_cases("hn_oar", [folder], tmp_path / "cache")  # cached: not predicted again
    assert path.stat().st_mtime_ns == mtime

    stats = organ_statistics([root / c for c in ("pt_109", "pt_119", "pt_132")], OPENKBP_OARS)
    model = ReviewModel(OPENKBP_OARS, stats["organs"], dict(DEFAULT_THRESHOLDS))
    rows = validation_table([path], [folder], model)
    assert [r["organ"] for r in rows] == list(OPENKBP_OARS)  # a complete patient: 7 contours
    for r in rows:
        assert r["expected_dice"] == pytest.approx(
            predictor.last_quality[r["organ"]]["expected_dice"]
        )
        sev = (1 - r["expected_dice"]) / (1 - DEFAULT_THRESHOLDS["expected_dice"])
        assert r["sev_confidence"] == pytest.approx(sev, abs=1e-3)
        assert r["score"] >= r["score_without_confidence"] >= r["score_intrinsic"]
        assert 0.0 <= r["dice"] <= 1.0
    perf = flag_performance(rows * 2, n_boot=0)  # shape of the result on a tiny table
    assert set(perf["scores"]) == set(SCORES)
