"""NIfTI / NRRD / MetaImage files: exact geometry on write → read, content-based detection, real
files cross-checked with SimpleITK."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medseg.errors import ExportError
from medseg.io.image_files import detect_file_format, read_image_file, write_image_file
from medseg.volume import Volume, affine_from_geometry, from_sitk

AXIAL = np.array([[0.0, 0, 1], [0, 1, 0], [1, 0, 0]])
OBLIQUE = np.array(
    [[0.2588190451, 0.0, 0.9659258263], [0.0, 1.0, 0.0], [0.9659258263, 0.0, -0.2588190451]]
)
DIRECTIONS = {"axial": AXIAL, "flipped": AXIAL * [-1, -1, 1], "oblique": OBLIQUE}


def _volume(direction: np.ndarray, dtype: type = np.int16) -> Volume:
    rng = np.random.default_rng(5)
    arr = rng.integers(-1024, 3000, size=(4, 6, 5)).astype(dtype)
    aff = affine_from_geometry((2.5, 0.7, 1.3), origin_mm=(12.5, -80.0, 33.25), direction=direction)
    return Volume(arr, aff, modality="CT")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
@pytest.mark.parametrize("name", sorted(DIRECTIONS))
def test_write_read_keeps_geometry(tmp_path: Path, suffix: str, name: str) -> None:
    vol = _volume(DIRECTIONS[name])
    path = write_image_file(vol, tmp_path / f"v{suffix}")
    back = read_image_file(path)
    np.testing.assert_array_equal(back.array, vol.array)
    tol = 1e-4 if suffix.startswith(".nii") else 1e-9  # NIfTI stores the affine as float32
    np.testing.assert_allclose(back.affine, vol.affine, atol=tol, rtol=0)
    # writing what was read gives the identical file geometry (exact from then on)
    again = read_image_file(write_image_file(back, tmp_path / f"w{suffix}"))
    np.testing.assert_array_equal(again.affine, back.affine)
    # independent reader agrees on the world position of every corner
    assert from_sitk(sitk.ReadImage(str(path))).same_grid(vol, tolerance_mm=tol * 10)


def test_detection_is_by_content_not_suffix(tmp_path: Path) -> None:
    vol = _volume(AXIAL)
    nii = write_image_file(vol, tmp_path / "a.nii.gz")
    nrrd = write_image_file(vol, tmp_path / "a.nrrd")
    mha = write_image_file(vol, tmp_path / "a.mha")
    renamed = tmp_path / "scan.bin"
    renamed.write_bytes(nii.read_bytes())
    assert detect_file_format(renamed) == "nifti"
    assert detect_file_format(nrrd) == "nrrd"
    assert detect_file_format(mha) == "metaimage"
    np.testing.assert_array_equal(read_image_file(renamed).array, vol.array)


def test_existing_output_kept_unless_overwrite(tmp_path: Path) -> None:
    vol = _volume(AXIAL)
    path = write_image_file(vol, tmp_path / "a.nii.gz")
    with pytest.raises(ExportError, match="exists"):
        write_image_file(vol, path)
    doubled = vol.with_array(vol.array * 2)
    write_image_file(doubled, path, overwrite=True)
    np.testing.assert_array_equal(read_image_file(path).array, doubled.array)
    with pytest.raises(ExportError, match="unknown output suffix"):
        write_image_file(vol, tmp_path / "a.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz"]  # no temp files left


def test_real_nifti_matches_simpleitk(shared_data: Path) -> None:
    path = shared_data / "totalsegmentator_example_ct" / "example_ct_sm.nii.gz"
    ours = read_image_file(path, modality="CT")
    ref = from_sitk(sitk.ReadImage(str(path)))
    assert ours.shape == (30, 101, 122)
    assert ours.same_grid(ref, tolerance_mm=1e-3)
    np.testing.assert_array_equal(ours.array, ref.array)
    raw = nib.load(str(path))
    np.testing.assert_allclose(ours.spacing_mm, raw.header.get_zooms()[::-1], atol=1e-6)


def test_real_nrrd_label_map(shared_data: Path) -> None:
    path = shared_data / "dcmqi_ct3slice_seg" / "liver_spine_seg.nrrd"
    lab = read_image_file(path)
    assert lab.shape == (3, 512, 512)
    assert set(np.unique(lab.array).tolist()) == {0, 1, 2}
    np.testing.assert_allclose(lab.spacing_mm, (1.0, 0.810547, 0.810547), atol=1e-5)
