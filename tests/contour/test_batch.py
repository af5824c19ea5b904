"""medseg contour on a mixed DICOM tree of real CTs, on the embedded LocalCluster."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from conftest import fast_config
from dicom_testdata import dciodvfy

from medseg.cli import main
from medseg.contour import Manifest, model_sha256, run_contour
from medseg.contour.runner import BatchResult
from medseg.io import load_labels, load_volume
from medseg.io.dicom_scan import uid_hash


def _key(uids: dict, role: str, result: BatchResult) -> str:
    prefix = uid_hash(uids[role]) + "-"
    (key,) = [r["key"] for r in result.studies if r["key"].startswith(prefix)]
    return key


@pytest.fixture(scope="module")
def batch(
    mixed_tree: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory
) -> tuple[BatchResult, Path, dict, str]:
    tree, uids = mixed_tree
    out = tmp_path_factory.mktemp("contour_out") / "batch"
    handler = _Capture()
    logging.getLogger("medseg").addHandler(handler)
    logging.getLogger("medseg").setLevel(logging.INFO)
    try:
        result = run_contour([tree], out, fast_config())
    finally:
        logging.getLogger("medseg").removeHandler(handler)
    return result, out, uids, "\n".join(handler.lines)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.mark.slow
def test_states_and_reasons(batch: tuple[BatchResult, Path, dict, str]) -> None:
    result, _, uids, _ = batch
    state = {role: None for role in uids}
    rows = {r["key"]: r for r in result.studies}
    for role in uids:
        state[role] = rows[_key(uids, role, result)]["state"]
    assert state == {
        "rt": "done",
        "rle": "done",
        "two": "done",
        "truncated": "failed",
        "rtonly": "skipped",
        "totalseg": "skipped",
    }
    assert result.counts["done"] == 3 and result.exit_code == 1
    r = {role: rows[_key(uids, role, result)] for role in uids}
    assert "truncat" in r["truncated"]["reason"].lower() or "short" in r["truncated"]["reason"]
    assert "no image series" in r["rtonly"]["reason"] and "RTSTRUCT" in r["rtonly"]["reason"]
    assert "20 slice(s) < min_slices 30" in r["totalseg"]["reason"]
    sel = json.loads(r["two"]["selection_json"])
    assert sel["instances"] == 128 and sel["selection_reason"].startswith("only candidate")
    (why,) = sel["not_chosen"].values()
    assert why == "slice spacing 7.5 mm > max_slice_spacing_mm 5"
    for role in ("rt", "rle", "two"):
        assert r[role]["attempts"] == 1 and r[role]["predict_s"] > 0
        assert r[role]["model_sha256"] == model_sha256("hn_oar")


@pytest.mark.slow
def test_outputs_valid_and_read_back(batch: tuple[BatchResult, Path, dict, str]) -> None:
    result, out, uids, _ = batch
    folder = out / "studies" / _key(uids, "rle", result)
    assert sorted(p.name for p in folder.iterdir()) == [
        "rtstruct.dcm", "seg.dcm", "segmentation.json", "segmentation.nii.gz",
    ]  # fmt: skip
    for name in ("rtstruct.dcm", "seg.dcm"):
        errors, _ = dciodvfy(folder / name)
        assert errors == [], (name, errors[:5])
    side = json.loads((folder / "segmentation.json").read_text())
    row = next(r for r in result.studies if r["key"] == folder.name)
    assert side["contour"]["fingerprint"] == row["fingerprint"]
    assert side["model"]["sha256"] == row["model_sha256"] == model_sha256("hn_oar")
    assert side["contour"]["selection_reason"].startswith("only candidate")
    assert side["input"]["series_instance_uid"]
    nifti = load_labels(folder / "segmentation.nii.gz")
    seg = load_labels(folder / "seg.dcm", reference=nifti.volume)
    for name in ("LeftParotid", "Mandible"):
        a, b = nifti.mask(name), seg.mask(name)
        assert a.sum() > 100 and np.array_equal(a, b)
    # the outputs are the only folders: no hidden partial folder left behind
    assert not [p.name for p in (out / "studies").iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_reference_dice_recorded(batch: tuple[BatchResult, Path, dict, str]) -> None:
    result, out, uids, _ = batch
    key = _key(uids, "rt", result)
    row = next(r for r in result.studies if r["key"] == key)
    metrics = json.loads(row["metrics_json"])
    assert metrics["matched"]["Parotid_L"] == "LeftParotid"
    assert metrics["matched"]["Bone_Mandible"] == "Mandible"
    organs = metrics["organs"]
    assert set(organs) == {
        "Brainstem", "SpinalCord", "LeftParotid", "RightParotid", "Esophagus", "Larynx",
        "Mandible",
    }  # fmt: skip
    assert organs["Mandible"]["dice"] > 0.6 and organs["LeftParotid"]["dice"] > 0.5
    assert organs["Mandible"]["hd95"] < 20 and 0 < organs["Mandible"]["nsd"] <= 1
    side = json.loads((out / "studies" / key / "segmentation.json").read_text())
    assert side["reference_metrics"]["organs"] == organs
    # RTSTRUCT written by the batch reads back on the CT with the NIfTI's labels (rasterised)
    ct = load_volume(_ct_folder(batch))
    rt = load_labels(out / "studies" / key / "rtstruct.dcm", reference=ct)
    nifti = load_labels(out / "studies" / key / "segmentation.nii.gz")
    a, b = nifti.mask("Mandible"), rt.mask("Mandible")
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.9


def _ct_folder(batch: tuple[BatchResult, Path, dict, str]) -> Path:
    # the "rt" study was written into <tree>/a (see contour_data.build_tree)
    out = batch[1]
    return next(p for p in out.parent.parent.glob("contour_tree*/pacs/a"))


@pytest.mark.slow
def test_no_identifier_in_paths_or_logs(batch: tuple[BatchResult, Path, dict, str]) -> None:
    _, out, _, log = batch
    names = " ".join(str(p) for p in out.rglob("*"))
    for ident in ("CONTOUR-TEST", "Test^Contour", "Test"):
        assert ident not in names
    assert "CONTOUR-TEST" not in log and "Test^Contour" not in log
    assert "discovered 6 studies" in log


@pytest.mark.slow
def test_resume_and_retry_failed(batch: tuple[BatchResult, Path, dict, str]) -> None:
    result, out, uids, _ = batch
    tree = _ct_folder(batch).parent
    again = run_contour([tree], out, fast_config())
    assert again.ran == () and again.exit_code == 1
    assert again.counts == result.counts
    bad = _key(uids, "truncated", result)
    retry = run_contour([tree], out, fast_config(), retry_failed=True)
    assert retry.ran == (bad,)
    with Manifest(out / "manifest.sqlite", readonly=True) as m:
        assert m.get(bad)["attempts"] == 2 and m.get(bad)["state"] == "failed"
        predicted = [a for a in m.attempts() if a["predicted"]]
        assert sorted(a["key"] for a in predicted) == sorted(
            _key(uids, r, result) for r in ("rt", "rle", "two")
        )
        assert [r["outcome"] for r in m.runs()] == ["some failed"] * 3


@pytest.mark.slow
def test_status_command(batch: tuple[BatchResult, Path, dict, str], capsys) -> None:  # type: ignore[no-untyped-def]
    _, out, _, _ = batch
    assert main(["contour", "status", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["counts"]["done"] == 3 and doc["counts"]["skipped"] == 2
    assert main(["contour", "status", str(out), "--csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("key,state,reason") and len(lines) == 7


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("selection: {min_slice: 3}\n")
    assert main(["contour", str(tmp_path), "-o", str(tmp_path / "o"), "--config", str(bad)]) == 2
    assert main(["contour", "status", str(tmp_path / "none")]) == 2
    assert main(["contour", str(tmp_path / "missing"), "-o", str(tmp_path / "o")]) == 2


@pytest.mark.slow
def test_timelines_recorded(batch: tuple[BatchResult, Path, dict, str]) -> None:
    """The manifest holds the wall-clock stages the benchmark splits the wall time with."""
    _, out, _, _ = batch
    with Manifest(out / "manifest.sqlite", readonly=True) as m:
        first = m.runs()[0]
        attempts = [a for a in m.attempts() if a["run_id"] == first["run_id"]]
    run = json.loads(first["timeline_json"])
    order = ["entered", "discovered", "hashed", "planned", "cluster_ready", "model_loaded"]
    order += ["tasks_done", "cluster_closed", "finished"]
    assert set(run) == set(order)
    assert [run[k] for k in order] == sorted(run[k] for k in order)
    predicted = [a for a in attempts if a["predicted"]]
    assert len(predicted) == 3
    for a in predicted:
        tl = json.loads(a["timeline_json"])
        chain = [tl["task"][0], *tl["load"], tl["predict"][0], *tl["forward"]]
        chain += [tl["predict"][1], *tl["write"], tl["score"][1]]
        assert chain == sorted(chain), tl
        assert tl["task"][1] == tl["score"][1]
        assert run["model_loaded"] <= tl["task"][0] and tl["task"][1] <= run["tasks_done"]
        forward = tl["forward"][1] - tl["forward"][0]
        assert 0.0 < tl["network_s"] <= forward + 1e-3
        # the manifest's per-stage seconds agree with the stamps (write_s is the write stage)
        assert abs((tl["write"][1] - tl["write"][0]) - a["write_s"]) < 0.05
    failed = [a for a in attempts if a["state"] == "failed"]
    assert failed and all(a["timeline_json"] is None for a in failed)
