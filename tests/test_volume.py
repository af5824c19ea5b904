"""Volume converters: NIfTI (nibabel), SimpleITK and MONAI MetaTensor round trips, checked against
each library's own index → world mapping (independent oracles), on flipped, oblique and
anisotropic grids."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medseg.errors import GeometryError, InputError
from medseg.volume import (
    Volume,
    affine_from_geometry,
    from_metatensor,
    from_nibabel,
    from_sitk,
    orientation_code,
    to_metatensor,
    to_nibabel,
    to_sitk,
)


def _rot(axis: int, degrees: float) -> np.ndarray:
    t = np.radians(degrees)
    j, k = [a for a in range(3) if a != axis]
    m = np.eye(3)
    m[j, j], m[j, k], m[k, j], m[k, k] = np.cos(t), -np.sin(t), np.sin(t), np.cos(t)
    return m


AXIAL = np.array([[0.0, 0, 1], [0, 1, 0], [1, 0, 0]])
GRIDS = {
    "axial": (AXIAL, (2.5, 0.8, 0.8), "SPL"),
    "negated_cosines": (AXIAL * [1, -1, -1], (3.0, 0.7, 0.7), "SAR"),
    "feet_first": (AXIAL * [-1, 1, -1], (2.0, 1.0, 1.0), "IPR"),
    "sagittal": (np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]).T, (1.5, 1.0, 1.2), "LIP"),
    "coronal": (np.array([[0.0, 1, 0], [1, 0, 0], [0, 0, -1]]).T, (4.0, 0.5, 0.9), "PLI"),
    "oblique": (_rot(0, 17.0) @ _rot(2, -23.0) @ AXIAL, (3.3, 0.7, 1.9), None),
}


def _volume(name: str, dtype: type = np.int16) -> Volume:
    direction, spacing, _ = GRIDS[name]
    rng = np.random.default_rng(3)
    arr = rng.integers(-1000, 2000, size=(5, 7, 9)).astype(dtype)
    affine = affine_from_geometry(spacing, origin_mm=(-10.25, 33.5, -101.0), direction=direction)
    return Volume(arr, affine, modality="CT")


def _indices() -> np.ndarray:
    return np.array([[0, 0, 0], [4, 6, 8], [2, 3, 1], [1, 5, 7]], dtype=float)


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_orientation_codes(name: str) -> None:
    expected = GRIDS[name][2]
    vol = _volume(name)
    if expected is not None:
        assert vol.orientation == expected == orientation_code(vol.affine)
    np.testing.assert_allclose(vol.spacing_mm, GRIDS[name][1])


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_nibabel_round_trip_and_oracle(name: str) -> None:
    vol = _volume(name)
    img = to_nibabel(vol)
    # nibabel's own mapping: data index (i, j, k) = (column, row, slice) → RAS
    for k, r, c in _indices():
        ras = img.affine @ [c, r, k, 1]
        lps = np.array([-ras[0], -ras[1], ras[2]])
        np.testing.assert_allclose(lps, vol.world_coordinates([k, r, c])[0], atol=1e-9)
        assert img.get_fdata()[int(c), int(r), int(k)] == vol.array[int(k), int(r), int(c)]
    back = from_nibabel(img, modality="CT")
    # NIfTI keeps its sform/qform as float32: exact up to float32 rounding
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-5, rtol=0)
    assert np.array_equal(to_nibabel(back).affine, img.affine)  # and idempotent from there on
    np.testing.assert_array_equal(back.array, vol.array)
    assert back.array.dtype == np.int16


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_sitk_round_trip_and_oracle(name: str) -> None:
    vol = _volume(name)
    img = to_sitk(vol)
    for k, r, c in _indices():
        p = img.TransformContinuousIndexToPhysicalPoint((c, r, k))
        np.testing.assert_allclose(p, vol.world_coordinates([k, r, c])[0], atol=1e-9)
        assert img[int(c), int(r), int(k)] == vol.array[int(k), int(r), int(c)]
    back = from_sitk(img)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-12)
    np.testing.assert_array_equal(back.array, vol.array)


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_metatensor_round_trip_and_oracle(name: str) -> None:
    vol = _volume(name, np.float32)
    mt = to_metatensor(vol)
    assert tuple(mt.shape) == (1, 9, 7, 5)
    aff = mt.affine.numpy()
    for k, r, c in _indices():
        ras = aff @ [c, r, k, 1]
        np.testing.assert_allclose(
            [-ras[0], -ras[1], ras[2]], vol.world_coordinates([k, r, c])[0], atol=1e-9
        )
    back = from_metatensor(mt)
    np.testing.assert_array_equal(back.affine, vol.affine)
    np.testing.assert_array_equal(back.array, vol.array)
    # a MetaTensor that says it is in LPS is honoured
    from monai.data import MetaTensor

    lps = MetaTensor(mt.as_tensor(), affine=np.diag([-1.0, -1, 1, 1]) @ aff, meta={"space": "LPS"})
    np.testing.assert_allclose(from_metatensor(lps).affine, vol.affine, atol=1e-12)


def test_nifti_file_read_by_simpleitk_agrees(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Write with nibabel, read with SimpleITK (its own RAS→LPS handling): same grid."""
    vol = _volume("oblique")
    path = tmp_path / "x.nii.gz"
    nib.save(to_nibabel(vol), str(path))
    by_sitk = from_sitk(sitk.ReadImage(str(path)))
    by_nib = from_nibabel(nib.load(str(path)))
    assert by_sitk.same_grid(vol, tolerance_mm=1e-3)  # NIfTI stores float32
    assert by_nib.same_grid(by_sitk, tolerance_mm=1e-4)
    np.testing.assert_array_equal(by_sitk.array, vol.array)


def test_from_nibabel_applies_scaling_and_keeps_label_dtype() -> None:
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_slope_inter(2.0, -5.0)
    img = nib.Nifti1Image.from_bytes(img.to_bytes())
    scaled = from_nibabel(img)
    assert scaled.array.dtype == np.float32
    np.testing.assert_allclose(scaled.array, np.transpose(data * 2.0 - 5.0, (2, 1, 0)))
    labels = from_nibabel(nib.Nifti1Image(data.astype(np.uint8), np.eye(4)))
    assert labels.array.dtype == np.uint8
    squeezed = from_nibabel(nib.Nifti1Image(data[..., None].astype(np.float32), np.eye(4)))
    assert squeezed.shape == (4, 3, 2)


def test_converters_reject_non_3d() -> None:
    with pytest.raises(InputError, match="3D"):
        from_sitk(sitk.Image(4, 5, sitk.sitkInt16))
    with pytest.raises(InputError, match="scalar"):
        from_sitk(sitk.Image([4, 5, 6], sitk.sitkVectorFloat32, 3))
    with pytest.raises(InputError, match="3D"):
        from_nibabel(nib.Nifti1Image(np.zeros((3, 4, 5, 2), np.float32), np.eye(4)))
    with pytest.raises(GeometryError, match="singular"):
        Volume(np.zeros((2, 2, 2)), np.diag([1.0, 0.0, 1.0, 1.0]))
