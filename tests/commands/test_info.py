"""``medseg info`` run in-process through :func:`medseg.cli.main`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_cases import make_volume, write_series

from medseg.cli import main
from medseg.io.dicom_scan import uid_hash


def test_info_dicom_tree_json(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = shared_data / "dcmqi_ct3slice_seg"
    assert main(["info", str(folder), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "dicom"
    by_mod = {s["modality"]: s for s in info["series"]}
    assert set(by_mod) == {"CT", "SEG"} and len(info["series"]) == 3
    ct = by_mod["CT"]
    assert ct["shape"] == [3, 512, 512] and ct["orientation"] == "SPL"
    np.testing.assert_allclose(ct["spacing_mm"], [1.0, 0.81055, 0.81055], atol=1e-4)
    assert ct["problems"] == [] and ct["transfer_syntaxes"] == ["Implicit VR Little Endian"]
    uid = pydicom.dcmread(
        folder / "ct-3slice" / "01.dcm", stop_before_pixels=True
    ).SeriesInstanceUID
    assert ct["series"] == uid_hash(str(uid))
    assert str(uid) not in json.dumps(info)


def test_info_table_lists_problems_without_uids(
    tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def gap(k: int, ds) -> None:  # type: ignore[no-untyped-def]
        if k >= 3:
            ds.ImagePositionPatient[2] = float(ds.ImagePositionPatient[2]) + 5.0

    write_series(tmp_path / "ok", make_volume())
    write_series(tmp_path / "gap", make_volume(), modify=gap)
    shutil.copy(shared_data / "dicompyler_breast_rtstruct" / "rtss.dcm", tmp_path / "rtss.dcm")
    assert main(["info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "3 series" in out
    assert "missing_slices" in out and "2 slice(s) missing" in out
    assert "RTSTRUCT" in out and "6×12×10" in out
    assert "Anonymous" not in out and "1.2.826" not in out  # no names, no raw UIDs


def test_info_file(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = shared_data / "totalsegmentator_example_ct" / "example_ct_sm.nii.gz"
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "nifti" and info["shape"] == [30, 101, 122]
    assert info["spacing_mm"] == [3.0, 3.0, 3.0] and info["dtype"] == "int16"
    assert info["min"] < -1000 < 1000 < info["max"]
    assert main(["info", str(path)]) == 0
    table = capsys.readouterr().out
    assert "30×101×122" in table and "range" in table


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "no such file"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "empty"),
        (lambda p: (p / "x.txt").write_text("hello") and p / "x.txt", "unknown file type"),
    ],
)
def test_info_bad_input_exits_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make,
    message: str,  # type: ignore[no-untyped-def]
) -> None:
    assert main(["info", str(make(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert "medseg info: error:" in err and message in err
