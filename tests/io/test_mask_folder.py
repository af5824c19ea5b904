"""Per-organ mask folders: detection, lossless reading, overlap policy, errors."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.errors import GeometryError, InputError
from medseg.io.image_files import read_image_file, write_image_file
from medseg.io.mask_folder import is_mask_folder, load_mask_folder, read_mask_folder
from medseg.volume import Volume, affine_from_geometry


@pytest.fixture(scope="module")
def deepmind_case(shared_data):
    return shared_data / "deepmind_hn_oar_masks" / "test" / "oncologist" / "0522c0017"


def test_detects_deepmind_layout_but_not_batch_folders_or_files(deepmind_case):
    assert is_mask_folder(deepmind_case)
    assert is_mask_folder(deepmind_case / "segmentations")
    assert not is_mask_folder(deepmind_case.parent)  # a folder of cases
    assert not is_mask_folder(deepmind_case / "segmentations" / "Brain.nrrd")


def test_reads_deepmind_case_losslessly_and_resolves_overlaps_smallest_wins(deepmind_case):
    ms = read_mask_folder(deepmind_case)
    assert len(ms.masks) == 21 and "Spinal-Cord" in ms.names
    assert ms.grid.shape == (156, 512, 512)
    assert ms.grid.spacing_mm[0] == pytest.approx(2.5)
    cord, canal = ms.masks["Spinal-Cord"], ms.masks["Spinal-Canal"]
    overlap = int(np.count_nonzero(cord & canal))
    assert overlap > 0  # the cord lies inside the canal: a label map cannot hold both

    lv = load_mask_folder(deepmind_case)
    assert list(lv.label_map.names) == list(ms.names)
    # the smaller organ keeps every voxel; the bigger one loses exactly the shared voxels
    assert np.count_nonzero(lv.mask("Spinal-Cord")) == np.count_nonzero(cord)
    assert np.count_nonzero(lv.mask("Spinal-Canal")) == np.count_nonzero(canal) - overlap
    assert any(
        "'Spinal-Canal' overlap 'Spinal-Cord'" in w and str(overlap) in w for w in lv.warnings
    )
    with pytest.raises(InputError, match="overlapping organs"):
        load_mask_folder(deepmind_case, overlap="error")


def _write(path, array, *, spacing=(2.0, 1.0, 1.0)):
    write_image_file(Volume(array.astype(np.uint8), affine_from_geometry(spacing)), path)


def test_plain_nifti_folder_names_from_stems_and_reference_check(tmp_path):
    a = np.zeros((4, 6, 8), np.uint8)
    a[1:3, 2:4, 2:6] = 255
    _write(tmp_path / "Left Parotid.nii.gz", a)
    _write(tmp_path / "Brainstem.nii.gz", np.roll(a, 2, axis=2) // 255)
    assert is_mask_folder(tmp_path)
    lv = load_mask_folder(tmp_path)
    assert lv.label_map.names == ("Brainstem", "Left Parotid")
    assert np.count_nonzero(lv.mask("Left Parotid")) == 16 and lv.warnings != ()
    other = Volume(np.zeros((4, 6, 8)), affine_from_geometry((3.0, 1.0, 1.0)))
    with pytest.raises(GeometryError, match="reference"):
        load_mask_folder(tmp_path, reference=other)


def test_errors_on_non_binary_mixed_grids_and_duplicate_names(tmp_path):
    a = np.zeros((4, 6, 8), np.uint8)
    a[1, 1, 1], a[2, 2, 2] = 1, 2
    (tmp_path / "multi").mkdir()
    _write(tmp_path / "multi" / "Organs.nii.gz", a)
    assert not is_mask_folder(tmp_path / "multi")
    with pytest.raises(InputError, match="not a binary mask"):
        read_mask_folder(tmp_path / "multi")

    (tmp_path / "grids").mkdir()
    _write(tmp_path / "grids" / "A.nrrd", a > 0)
    _write(tmp_path / "grids" / "B.nrrd", a > 0, spacing=(3.0, 1.0, 1.0))
    assert not is_mask_folder(tmp_path / "grids")
    with pytest.raises(GeometryError, match="share one grid"):
        read_mask_folder(tmp_path / "grids")

    (tmp_path / "dup").mkdir()
    _write(tmp_path / "dup" / "Lens.nrrd", a > 0)
    _write(tmp_path / "dup" / "lens.nii.gz", a > 0)
    with pytest.raises(InputError, match="both give the organ name"):
        read_mask_folder(tmp_path / "dup")
    with pytest.raises(InputError, match="no mask files"):
        read_mask_folder(tmp_path / "dup" / ".." / "multi" / "..")


def test_cropped_reading_equals_simpleitk_voxel_for_voxel(deepmind_case):
    """Each mask is streamed and kept cropped; the full arrays equal SimpleITK's."""
    import SimpleITK as sitk

    ms = read_mask_folder(deepmind_case)
    assert ms.grid.array.strides == (0, 0, 0)  # no full-size array held for the grid
    for name in ms.names:
        f = deepmind_case / "segmentations" / f"{name}.nrrd"
        image = sitk.ReadImage(str(f))
        oracle = sitk.GetArrayFromImage(image) != 0
        np.testing.assert_array_equal(ms.masks[name], oracle, err_msg=name)
        box = ms.bounding_box(name)
        if not oracle.any():
            assert box is None
            continue
        z, y, x = (np.flatnonzero(oracle.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1)))
        assert box == (
            slice(z[0], z[-1] + 1), slice(y[0], y[-1] + 1), slice(x[0], x[-1] + 1)
        )  # fmt: skip
        wider = (slice(0, 10), slice(box[1].start - 3, box[1].stop + 5), slice(0, 512))
        np.testing.assert_array_equal(ms.cropped(name, wider), oracle[wider], err_msg=name)
    from_sitk = sitk.ReadImage(str(deepmind_case / "segmentations" / "Brain.nrrd"))
    np.testing.assert_array_equal(
        ms.grid.affine, read_image_file(deepmind_case / "segmentations" / "Brain.nrrd").affine
    )
    assert ms.grid.spacing_mm == pytest.approx(from_sitk.GetSpacing()[::-1])


def test_raw_big_endian_and_nifti_masks_read_like_gzip_nrrd(deepmind_case, tmp_path):
    """Other encodings of the same real mask (raw NRRD, big-endian int16, NIfTI) agree."""
    import SimpleITK as sitk

    src = deepmind_case / "segmentations" / "Mandible.nrrd"
    oracle = read_mask_folder(deepmind_case).masks["Mandible"]
    image = sitk.ReadImage(str(src))
    (tmp_path / "raw").mkdir()
    sitk.WriteImage(image, str(tmp_path / "raw" / "Mandible.nrrd"), useCompression=False)
    assert b"encoding: raw" in (tmp_path / "raw" / "Mandible.nrrd").read_bytes()[:1000]
    (tmp_path / "nii").mkdir()
    write_image_file(read_image_file(src), tmp_path / "nii" / "Mandible.nii.gz")
    # big-endian int16 with the value 7 inside: header edited by hand, data byte-swapped
    raw = (tmp_path / "raw" / "Mandible.nrrd").read_bytes()
    head, _sep, data = raw.partition(b"\n\n")
    values = (np.frombuffer(data, np.uint8).astype(np.int16) * 7).astype(">i2")
    head = head.replace(b"type: unsigned char", b"type: short").replace(
        b"type: uchar", b"type: short"
    )
    assert b"type: short" in head
    (tmp_path / "be").mkdir()
    (tmp_path / "be" / "Mandible.nrrd").write_bytes(head + b"\nendian: big\n\n" + values.tobytes())
    for sub in ("raw", "nii", "be"):
        ms = read_mask_folder(tmp_path / sub)
        np.testing.assert_array_equal(ms.masks["Mandible"], oracle, err_msg=sub)
    two = values.copy()
    two[np.flatnonzero(two)[0]] = 3
    (tmp_path / "be" / "Mandible.nrrd").write_bytes(head + b"\nendian: big\n\n" + two.tobytes())
    with pytest.raises(InputError, match=r"Mandible.nrrd: not a binary mask .*\[3, 7\]"):
        read_mask_folder(tmp_path / "be")
