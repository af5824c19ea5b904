"""compute_metrics on label maps: name matching, empty-mask rules, grid checks, summaries."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from medseg.errors import ConfigError, GeometryError
from medseg.metrics import (
    MetricsConfig,
    compute_metrics,
    format_table,
    results_to_csv,
    results_to_json,
    summarize,
    surface_metrics,
)
from medseg.volume import LabelMap, LabelVolume, Volume, affine_from_geometry

SPACING = (2.0, 0.8, 0.8)
SHAPE = (10, 20, 30)
DIAGONAL = math.sqrt((10 * 2.0) ** 2 + (20 * 0.8) ** 2 + (30 * 0.8) ** 2)


def _labels(array, names, *, origin=(0.0, 0.0, 0.0)):
    affine = affine_from_geometry(SPACING, origin_mm=origin)
    return LabelVolume(Volume(array.astype(np.uint8), affine), LabelMap.from_dict(names))


def _two_organs():
    a = np.zeros(SHAPE, np.uint8)
    a[2:6, 3:9, 4:12] = 1  # "Brainstem"
    a[3:7, 10:16, 15:25] = 2  # "Parotid-Lt"
    return a


def test_labels_are_matched_by_name_not_by_id():
    ref_arr = _two_organs()
    pred_arr = np.zeros_like(ref_arr)  # same organs, ids swapped, spelled differently
    pred_arr[ref_arr == 1] = 2
    pred_arr[ref_arr == 2] = 1
    ref = _labels(ref_arr, {1: "Brainstem", 2: "Parotid-Lt"})
    pred = _labels(pred_arr, {1: "parotid_lt", 2: "BRAINSTEM"})
    res = compute_metrics(pred, ref, config=MetricsConfig(), case="c1")
    assert list(res.labels) == ["Brainstem", "Parotid-Lt"]
    for lr in res.labels.values():
        assert lr.values["dice"] == 1.0 and lr.values["hd"] == 0.0 and not lr.missed


def test_values_equal_the_low_level_function():
    ref_arr = _two_organs()
    pred_arr = np.roll(ref_arr, 1, axis=2)
    cfg = MetricsConfig(definition="voxel", tolerance_mm=1.0, percentile=90, hd_mode="pooled")
    res = compute_metrics(
        _labels(pred_arr, {1: "A", 2: "B"}), _labels(ref_arr, {1: "A", 2: "B"}), config=cfg
    )
    for lid, name in ((1, "A"), (2, "B")):
        low = surface_metrics(
            pred_arr == lid,
            ref_arr == lid,
            SPACING,
            definition="voxel",
            tolerance_mm=1.0,
            percentile=90,
            hd_mode="pooled",
        )
        v = res.labels[name].values
        assert v["hd"] == low["hd"] and v["hd90"] == low["hd_percentile"]
        assert v["assd"] == low["assd"] and v["nsd"] == low["nsd"]
        tp = np.count_nonzero((pred_arr == lid) & (ref_arr == lid))
        assert v["dice"] == pytest.approx(2 * tp / (2 * np.count_nonzero(ref_arr == lid)))


def test_missed_organ_gets_worst_case_never_nan_and_counts_as_missed():
    ref_arr = _two_organs()
    pred_arr = np.where(ref_arr == 2, 0, ref_arr)  # Parotid missed
    ref = _labels(ref_arr, {1: "Brainstem", 2: "Parotid-Lt"})
    pred = _labels(pred_arr, {1: "Brainstem"})  # not even in the label map
    res = compute_metrics(pred, ref, config=MetricsConfig())
    lr = res.labels["Parotid-Lt"]
    assert lr.missed and lr.empty_in == "pred"
    assert lr.values["dice"] == 0.0 and lr.values["nsd"] == 0.0
    assert lr.values["hd"] == pytest.approx(DIAGONAL) and lr.values["hd95"] == pytest.approx(
        DIAGONAL
    )
    assert all(v is not None and math.isfinite(v) for v in lr.values.values())
    # summary: the miss makes the mean worse, and is counted
    perfect = compute_metrics(ref, ref, config=MetricsConfig(), case="perfect")
    summary = summarize([perfect, res])
    assert summary["Parotid-Lt"]["n_missed"] == 1 and summary["Parotid-Lt"]["n"] == 2
    assert summary["Parotid-Lt"]["mean"]["dice"] == pytest.approx(0.5)
    assert summary["Parotid-Lt"]["mean"]["hd95"] == pytest.approx(DIAGONAL / 2)


def test_spurious_organ_and_custom_worst_case():
    ref_arr = _two_organs()
    ref = _labels(np.where(ref_arr == 2, 0, ref_arr), {1: "Brainstem", 2: "Parotid-Lt"})
    pred = _labels(ref_arr, {1: "Brainstem", 2: "Parotid-Lt"})
    res = compute_metrics(pred, ref, config=MetricsConfig(worst_case_mm=100.0))
    lr = res.labels["Parotid-Lt"]
    assert lr.missed and lr.empty_in == "ref" and lr.values["assd"] == 100.0
    assert lr.values["precision"] == 0.0


@pytest.mark.parametrize("policy", ["perfect", "exclude"])
def test_both_empty_policy(policy):
    ref = _labels(_two_organs(), {1: "Brainstem", 2: "Parotid-Lt", 3: "Lens-Lt"})
    res = compute_metrics(ref, ref, config=MetricsConfig(both_empty=policy))
    lr = res.labels["Lens-Lt"]
    assert not lr.missed and lr.empty_in == "both"
    if policy == "perfect":
        assert (lr.values["dice"], lr.values["hd95"], lr.values["nsd"]) == (1.0, 0.0, 1.0)
        assert summarize([res])["Lens-Lt"]["n"] == 1
    else:
        assert lr.values["dice"] is None and lr.values["hd95"] is None
        s = summarize([res])["Lens-Lt"]
        assert s["n"] == 0 and s["n_excluded"] == 1 and s["mean"]["dice"] is None


def test_grid_mismatch_is_a_geometry_error():
    ref = _labels(_two_organs(), {1: "A", 2: "B"})
    moved = _labels(_two_organs(), {1: "A", 2: "B"}, origin=(0.0, 0.0, 1.0))
    with pytest.raises(GeometryError, match="resample"):
        compute_metrics(moved, ref)


def test_outputs_json_csv_table_have_the_documented_shape():
    ref = _labels(_two_organs(), {1: "Brainstem", 2: "Parotid-Lt"})
    pred = _labels(np.roll(_two_organs(), 1, axis=1), {1: "Brainstem", 2: "Parotid-Lt"})
    results = [compute_metrics(pred, ref, case="c1"), compute_metrics(ref, ref, case="c2")]
    doc = json.loads(results_to_json(results))
    entry = doc["cases"][0]["labels"]["Brainstem"]
    assert {"dice", "hd", "hd95", "assd", "nsd", "missed"} <= set(entry)
    assert doc["summary"]["Brainstem"]["n"] == 2 and doc["summary"]["Brainstem"]["n_missed"] == 0
    assert doc["summary"]["Brainstem"]["mean"]["dice"] == pytest.approx((entry["dice"] + 1) / 2)
    rows = results_to_csv(results).splitlines()
    assert rows[0].startswith("case,label,missed,empty_in,") and len(rows) == 5
    table = format_table(results)
    assert "Parotid-Lt" in table and "hd95" in table


def test_config_rejects_unknown_keys_and_bad_values(tmp_path):
    with pytest.raises(ConfigError, match="unknown"):
        MetricsConfig.from_dict({"tolerence_mm": 2})
    with pytest.raises(ConfigError):
        MetricsConfig(definition="mesh")
    with pytest.raises(ConfigError):
        MetricsConfig(percentile=0)
    y = tmp_path / "m.yaml"
    y.write_text("metrics:\n  definition: voxel\n  tolerance_mm: 1.5\n")
    assert MetricsConfig.from_yaml(y) == MetricsConfig(definition="voxel", tolerance_mm=1.5)
