"""``medseg evaluate`` in-process: real DeepMind masks, batch folders, errors, resampling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import surface_distance as dm

from medseg.cli import main
from medseg.io import save_labels
from medseg.volume import LabelMap, LabelVolume, Volume, affine_from_geometry


def test_evaluate_deepmind_case_writes_json_csv_plots(
    shared_data, deepmind_pairs, tmp_path, capsys
):
    root = shared_data / "deepmind_hn_oar_masks" / "test"
    rad, onc = root / "radiographer" / "0522c0248", root / "oncologist" / "0522c0248"
    out_json, out_csv, plots = tmp_path / "m.json", tmp_path / "m.csv", tmp_path / "plots"
    code = main(
        [
            "evaluate",
            str(rad),
            str(onc),
            "--json",
            str(out_json),
            "--csv",
            str(out_csv),
            "--plots",
            str(plots),
        ]
    )
    assert code == 0
    table = capsys.readouterr().out
    assert "Brainstem" in table and "hd95" in table
    doc = json.loads(out_json.read_text())
    labels = doc["cases"][0]["labels"]
    assert len(labels) == 21 and doc["config"]["definition"] == "surfel"
    assert doc["versions"]["medseg"] and doc["inputs"]["ref"] == str(onc)
    # independent check of one organ with DeepMind's package
    ((_, _, pred, ref, spacing),) = [
        p for p in deepmind_pairs if p[0] == "0522c0248" and p[1] == "Brainstem"
    ]
    s = dm.compute_surface_distances(ref, pred, spacing)
    assert labels["Brainstem"]["hd95"] == pytest.approx(
        dm.compute_robust_hausdorff(s, 95), abs=1e-6
    )
    assert labels["Brainstem"]["nsd"] == pytest.approx(
        dm.compute_surface_dice_at_tolerance(s, 2.0), abs=1e-6
    )
    assert labels["Mandible"]["dice"] == pytest.approx(0.94, abs=0.01)  # SOURCE.md's figure
    assert len(out_csv.read_text().splitlines()) == 22
    assert {p.name for p in plots.iterdir()} >= {"dice.png", "hd95.png", "nsd.png"}
    # outputs are kept unless --overwrite
    assert main(["evaluate", str(rad), str(onc), "--json", str(out_json)]) == 2
    assert main(["evaluate", str(rad), str(onc), "--plots", str(plots)]) == 2


def _write_case(
    folder: Path, name: str, array: np.ndarray, *, spacing=(2.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)
):
    lv = LabelVolume(
        Volume(array.astype(np.uint8), affine_from_geometry(spacing, origin_mm=origin)),
        LabelMap.from_dict({1: "Brainstem", 2: "Mandible"}),
    )
    return save_labels(lv, folder / f"{name}.nii.gz")


def _phantom(shift=0):
    a = np.zeros((12, 24, 24), np.uint8)
    a[3:8, 4:12, 4:12] = 1
    a[4:9, 14:20, 10:20] = 2
    return np.roll(a, shift, axis=2)


def test_batch_mode_matches_cases_by_name(tmp_path, capsys):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    for i in range(3):
        _write_case(pred, f"case{i}", _phantom(i))
        _write_case(ref, f"case{i}", _phantom(0))
    _write_case(pred, "only_in_pred", _phantom(0))
    out = tmp_path / "out.json"
    assert main(["evaluate", str(pred), str(ref), "--json", str(out), "--definition", "voxel"]) == 0
    doc = json.loads(out.read_text())
    assert [c["case"] for c in doc["cases"]] == ["case0", "case1", "case2"]
    assert doc["unmatched_cases"] == ["only_in_pred"]
    hd = [c["labels"]["Brainstem"]["hd"] for c in doc["cases"]]
    assert hd == [0.0, 1.0, 2.0]  # column shift × 1 mm
    assert doc["summary"]["Brainstem"]["n"] == 3
    assert doc["summary"]["Brainstem"]["mean"]["hd"] == pytest.approx(1.0)
    assert "n_missed" in capsys.readouterr().out


def test_mismatched_grid_exits_2_and_resampling_is_recorded(tmp_path, capsys):
    p = _write_case(tmp_path / "p", "c", _phantom(0), origin=(0.0, 0.0, 4.0))
    r = _write_case(tmp_path / "r", "c", _phantom(0))
    assert main(["evaluate", str(p), str(r)]) == 2
    err = capsys.readouterr().err
    assert "grid" in err and "--resample-to-reference" in err
    out = tmp_path / "o.json"
    assert main(["evaluate", str(p), str(r), "--resample-to-reference", "--json", str(out)]) == 0
    case = json.loads(out.read_text())["cases"][0]
    assert any("nearest neighbour" in step for step in case["provenance"])
    assert case["labels"]["Brainstem"]["hd"] == pytest.approx(
        4.0
    )  # the 4 mm (2-slice) origin shift survives


def test_unreadable_input_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not an image at all" * 10)
    r = _write_case(tmp_path / "r", "c", _phantom(0))
    assert main(["evaluate", str(bad), str(r)]) == 2
    assert "bad.nii.gz" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "missing.nii.gz"), str(r)]) == 2


def test_dicom_seg_prediction_against_nrrd_reference(shared_data, tmp_path, capsys):
    """DICOM-SEG goes through medseg.io.load_labels; the dcmqi SEG was made from this NRRD."""
    seg_dir = shared_data / "dcmqi_ct3slice_seg"
    ref = tmp_path / "liver_seg.nrrd"
    ref.write_bytes((seg_dir / "liver_seg.nrrd").read_bytes())
    (tmp_path / "liver_seg.json").write_text(json.dumps({"labels": [{"id": 1, "name": "Liver"}]}))
    out = tmp_path / "o.json"
    assert main(["evaluate", str(seg_dir / "liver.dcm"), str(ref), "--json", str(out)]) == 0
    liver = json.loads(out.read_text())["cases"][0]["labels"]["Liver"]
    assert liver["dice"] == 1.0 and liver["hd95"] == 0.0 and not liver["missed"]
