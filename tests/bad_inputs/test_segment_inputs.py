"""``medseg segment`` with bad or awkward input: exit 2, one clear message, no traceback, no
output left behind -- checked before the model runs (issue 20: output paths, wrong modality,
ambiguous series choice)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from permissions import permissions_enforced
from tiny_models import tiny_checkpoint

from medseg.cli import main
from medseg.io import load_volume
from medseg.io.dicom_write import write_dicom_series
from medseg.preprocess import crop
from medseg.volume import Volume


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight checkpoint naming the seven OpenKBP organs."""
    return tiny_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "tiny.pt", (6.0, 8.0, 8.0), (16, 32, 32)
    )


@pytest.fixture(scope="module")
def small_ct(shared_data: Path) -> Volume:
    ct = load_volume(shared_data / "totalsegmentator_example_ct" / "example_ct.nii.gz")
    ct = crop(ct, (slice(50, 80), slice(0, 101), slice(0, 122)))
    return ct.with_array(ct.array.astype(np.int16), modality="CT")


def _segment(
    inp: Path, out: Path, ckpt: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str]:
    code = main(
        ["segment", str(inp), "-o", str(out), "--model", str(ckpt), "--overlap", "0", *extra]
    )
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_output_under_a_regular_file(
    shared_data: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "afile").write_text("x")
    ct = shared_data / "totalsegmentator_example_ct" / "example_ct_sm.nii.gz"
    code, err = _segment(ct, tmp_path / "afile" / "out", checkpoint, capsys)
    assert code == 2 and "is a file" in err and "choose another output folder" in err
    code, err = _segment(ct, tmp_path / "afile", checkpoint, capsys)
    assert code == 2 and "is not a folder" in err
    assert _leftovers(tmp_path) == []


def test_read_only_output_folder_refused_before_the_model_runs(
    shared_data: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    ct = shared_data / "totalsegmentator_example_ct" / "example_ct_sm.nii.gz"
    try:
        with permissions_enforced():
            code, err = _segment(ct, ro / "out", checkpoint, capsys)
    finally:
        ro.chmod(0o755)
    assert code == 2 and "cannot write in" in err and "Permission denied" in err
    assert "predicted" not in err and list(ro.iterdir()) == []


def test_existing_folders_are_protected(
    shared_data: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ct = shared_data / "totalsegmentator_example_ct" / "example_ct_sm.nii.gz"
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "plan.txt").write_text("my work")
    code, err = _segment(ct, mine, checkpoint, capsys)
    assert code == 2 and "already exists and is not empty" in err
    code, err = _segment(ct, mine, checkpoint, capsys, "--overwrite")
    assert code == 2 and "not medseg outputs" in err and "plan.txt" in err
    assert (mine / "plan.txt").read_text() == "my work"
    assert _leftovers(tmp_path) == []


def test_mr_series_refused_unless_overridden_and_recorded(
    small_ct: Volume, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    series = tmp_path / "mr"
    write_dicom_series(small_ct.with_array(small_ct.array, modality="MR"), series)
    assert pydicom.dcmread(next(series.iterdir())).Modality == "MR"
    out = tmp_path / "out"
    code, err = _segment(series, out, checkpoint, capsys)
    assert code == 2 and "is a MR series" in err and "--allow-modality" in err
    assert not out.exists() and _leftovers(tmp_path) == []
    code, err = _segment(series, out, checkpoint, capsys, "--allow-modality")
    assert code == 0
    side = json.loads((out / "segmentation.json").read_text())
    assert "MR series" in side["input"]["modality_override"]
    assert any("modality override" in w for w in side["warnings"])


def test_ct_without_its_rescale_refused(
    shared_data: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = nib.load(shared_data / "totalsegmentator_example_ct" / "example_ct_sm.nii.gz")
    raw = tmp_path / "raw.nii.gz"
    data = np.asarray(src.dataobj).astype(np.int16) + 1024  # stored values, no rescale
    nib.save(nib.Nifti1Image(data, src.affine), raw)
    code, err = _segment(raw, tmp_path / "out", checkpoint, capsys)
    assert code == 2 and "do not look like CT in Hounsfield units" in err and "air" in err
    assert not (tmp_path / "out").exists()


def test_two_equally_good_ct_series_chosen_deterministically_with_a_warning(
    small_ct: Volume, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = tmp_path / "tree"
    write_dicom_series(small_ct, tree / "a")
    write_dicom_series(small_ct, tree / "b")
    uids = sorted(str(pydicom.dcmread(next((tree / d).iterdir())).SeriesInstanceUID) for d in "ab")
    chosen = []
    for run in range(2):
        out = tmp_path / f"out{run}"
        code, err = _segment(tree, out, checkpoint, capsys)
        assert code == 0 and "ambiguous series selection" in err
        side = json.loads((out / "segmentation.json").read_text())
        assert any("ambiguous series selection" in w for w in side["warnings"])
        assert any("lowest SeriesInstanceUID" in r for r in side["input"]["reader"])
        chosen.append(side["input"]["series_instance_uid"])
    assert chosen == [uids[0], uids[0]]
    # renaming the folders (file order) does not change the choice
    os.rename(tree / "a", tree / "z")
    code, _ = _segment(tree, tmp_path / "out2", checkpoint, capsys)
    side = json.loads((tmp_path / "out2" / "segmentation.json").read_text())
    assert code == 0 and side["input"]["series_instance_uid"] == uids[0]


def test_unreadable_input_folder(
    small_ct: Volume, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    series = tmp_path / "ct"
    write_dicom_series(small_ct, series)
    series.chmod(0o000)
    try:
        with permissions_enforced():
            code, err = _segment(series, tmp_path / "out", checkpoint, capsys)
    finally:
        series.chmod(0o755)
    assert code == 2 and str(series) in err and "ermission" in err
    assert not (tmp_path / "out").exists()
