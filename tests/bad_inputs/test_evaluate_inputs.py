"""``medseg evaluate`` on broken inputs made from real shared data: a clean error, never a
traceback, and never an all-zero score with exit 0 (issue 20, evaluation category)."""

from __future__ import annotations

import json
import pathlib
import shutil
from pathlib import Path

import pytest

from medseg.cli import main
from medseg.io import save_labels
from medseg.io.mask_folder import load_mask_folder

CASE = "0522c0017"


@pytest.fixture(scope="module")
def deepmind(shared_data: Path) -> Path:
    return shared_data / "deepmind_hn_oar_masks" / "test"


def _plain_mask_folder(deepmind: Path, dest: Path) -> Path:
    """The radiographer's masks of CASE copied into a plain (writable) mask folder."""
    dest.mkdir(parents=True)
    for f in sorted((deepmind / "radiographer" / CASE / "segmentations").glob("*.nrrd")):
        (dest / f.name).write_bytes(f.read_bytes())
    return dest


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["evaluate", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_unmatched_label_names_are_warned_on_both_sides(
    deepmind: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pred = _plain_mask_folder(deepmind, tmp_path / "pred")
    (pred / "Brainstem.nrrd").rename(pred / "Brain stem (auto).nrrd")
    out_json = tmp_path / "m.json"
    ref = deepmind / "oncologist" / CASE
    code, _out, err = _run(capsys, str(pred), str(ref), "--json", str(out_json))
    assert code == 0
    assert "prediction labels ['Brain stem (auto)'] match no reference label" in err
    assert "reference labels ['Brainstem'] have no prediction label" in err
    case = json.loads(out_json.read_text())["cases"][0]
    assert any("Brain stem (auto)" in w and "'Brainstem'" in w for w in case["warnings"])
    assert case["labels"]["Brainstem"]["missed"] and case["labels"]["Brainstem"]["dice"] == 0.0
    assert case["labels"]["Mandible"]["dice"] == pytest.approx(0.95556, abs=1e-5)  # unchanged


def test_no_label_in_common_is_an_error_naming_both_sides_and_the_missing_sidecar(
    deepmind: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lv = load_mask_folder(deepmind / "radiographer" / CASE)
    pred = save_labels(lv, tmp_path / "pred.nii.gz")
    (tmp_path / "pred.json").unlink()  # the names are gone: labels are label_1 ... label_21
    code, out, err = _run(capsys, str(pred), str(deepmind / "oncologist" / CASE))
    assert code == 2 and out == ""
    assert "no label of the prediction" in err and "label_1" in err and "Mandible" in err
    assert "pred.nii.gz has no JSON sidecar (pred.json)" in err


def test_medseg_output_without_its_json_is_refused_not_scored(
    deepmind: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A label map left without segmentation.json (a killed run) is never scored as zero."""
    lv = load_mask_folder(deepmind / "radiographer" / CASE)
    seg = save_labels(lv, tmp_path / "out" / "segmentation.nii.gz")
    (tmp_path / "out" / "segmentation.json").unlink()
    code, out, err = _run(capsys, str(seg), str(deepmind / "oncologist" / CASE))
    assert code == 2 and out == ""
    assert "segmentation.nii.gz: medseg's label map without its segmentation.json" in err
    assert "interrupted" in err


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("truncate", "the compressed voxel data ends early"),
        ("flip_bytes", "the compressed voxel data is corrupt"),
        ("wrong_size", "holds 40894464 bytes of voxel data, the header's size 512x512x157"),
        ("empty", "file is empty (0 bytes)"),
        ("folder", None),
    ],
)
def test_unreadable_mask_file_is_named_with_the_problem(
    deepmind: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str, expected: str
) -> None:
    pred = _plain_mask_folder(deepmind, tmp_path / "pred")
    brain = pred / "Brain.nrrd"
    data = brain.read_bytes()
    start = data.index(b"\n\n") + 2
    if damage == "truncate":
        brain.write_bytes(data[: len(data) // 2])
    elif damage == "flip_bytes":
        bad = bytearray(data)
        bad[start + 2000] ^= 0xFF
        bad[start + 2001] ^= 0x55
        brain.write_bytes(bytes(bad))
    elif damage == "wrong_size":
        brain.write_bytes(
            data[:start].replace(b"sizes: 512 512 156", b"sizes: 512 512 157") + data[start:]
        )
    elif damage == "empty":
        brain.write_bytes(b"")
    else:  # a folder where a mask file should be: skipped, and its organ reported as unmatched
        brain.unlink()
        brain.mkdir()
    code, out, err = _run(capsys, str(pred), str(deepmind / "oncologist" / CASE))
    if expected is None:
        assert code == 0 and "reference labels ['Brain'] have no prediction label" in err
        return
    assert code == 2 and out == ""
    assert f"{brain}: {expected}" in err, err
    assert "DICOM" not in err


def test_folder_that_is_no_segmentation_says_what_it_found(
    tmp_path: Path, deepmind: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = tmp_path / "notes"
    odd.mkdir()
    (odd / "README.txt").write_text("not a segmentation")
    code, _out, err = _run(capsys, str(odd), str(deepmind / "oncologist" / CASE))
    assert code == 2
    assert f"{odd}: a folder, but not a segmentation medseg can read: it holds README.txt" in err
    assert "Is a directory" not in err


def test_folder_that_cannot_be_listed_is_a_clean_error(
    deepmind: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    """PermissionError while listing (made by chmod, and simulated too since root reads all)."""
    pred = _plain_mask_folder(deepmind, tmp_path / "pred")
    real_iterdir = pathlib.Path.iterdir

    def iterdir(self: Path):  # type: ignore[no-untyped-def]
        if self == pred:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(pathlib.Path, "iterdir", iterdir)
    pred.chmod(0)
    try:
        code, out, err = _run(capsys, str(pred), str(deepmind / "oncologist" / CASE))
    finally:
        pred.chmod(0o755)
    assert code == 2 and out == ""
    assert f"{pred}: permission denied when listing the folder" in err


def test_rtstruct_of_another_patient_gives_one_error_line(
    shared_data: Path, deepmind: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rtss = tmp_path / "rtss.dcm"
    shutil.copy(shared_data / "dicompyler_breast_rtstruct" / "rtss.dcm", rtss)
    code, out, err = _run(capsys, str(deepmind / "oncologist" / CASE), str(rtss))
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "none of the RTSTRUCT's 441 contours lies on a slice of the reference image" in err
