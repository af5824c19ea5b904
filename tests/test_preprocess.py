"""Geometry exactness of medseg.preprocess on synthetic grids and a real OpenKBP CT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.errors import ConfigError
from medseg.io.openkbp import load_openkbp_ct, load_openkbp_labels
from medseg.preprocess import (
    PreprocessingSpec,
    apply_spec,
    body_bounding_box,
    crop,
    normalise_hu,
    reorient,
    resample_to_grid,
    resample_to_spacing,
)
from medseg.volume import Volume, affine_from_geometry


def _oblique_volume() -> Volume:
    rng = np.random.default_rng(0)
    theta = np.deg2rad(10)
    # columns: slice axis → -z (feet first), rows → +x-ish, columns → +y-ish (rotated)
    d = np.array(
        [[0.0, np.cos(theta), -np.sin(theta)], [0.0, np.sin(theta), np.cos(theta)], [-1.0, 0, 0]]
    )
    aff = affine_from_geometry((2.5, 0.7, 0.9), origin_mm=(10.0, -20.0, 35.0), direction=d)
    return Volume(rng.normal(size=(5, 7, 6)).astype(np.float32), aff, modality="CT")


@pytest.mark.parametrize("code", ["SPL", "IAR", "LPS", "PRI", "RAS"])
def test_reorient_preserves_world_position_of_every_voxel(code: str) -> None:
    v = _oblique_volume()
    r = reorient(v, code)
    assert r.orientation == code
    # every voxel: same value at the same world coordinate (brute-force oracle)
    idx = np.argwhere(np.ones(r.shape, bool))
    world = r.world_coordinates(idx)
    back = np.rint(v.voxel_indices(world)).astype(int)
    assert np.allclose(v.world_coordinates(back), world, atol=1e-9)
    assert np.array_equal(v.array[tuple(back.T)], r.array[tuple(idx.T)])
    assert np.allclose(reorient(r, v.orientation).affine, v.affine)


def test_resample_round_trip_linear_field() -> None:
    # a linear function of world position is reproduced exactly by linear interpolation
    aff = affine_from_geometry((2.5, 1.0, 1.0), origin_mm=(5.0, 3.0, -7.0))
    k, r, c = np.meshgrid(*[np.arange(n) for n in (9, 20, 20)], indexing="ij")
    v = Volume((3.0 * k + 0.5 * r - 0.25 * c).astype(np.float32), aff)
    coarse = resample_to_spacing(v, (5.0, 2.0, 2.0), order=1)
    assert coarse.shape == (5, 10, 10) and coarse.spacing_mm == pytest.approx((5.0, 2.0, 2.0))
    assert np.allclose(coarse.origin_mm, v.origin_mm)
    world = coarse.world_coordinates(np.argwhere(np.ones(coarse.shape, bool)))
    kk, rr, cc = v.voxel_indices(world).T
    assert np.allclose(coarse.array.ravel(), 3.0 * kk + 0.5 * rr - 0.25 * cc, atol=1e-4)
    back = resample_to_grid(coarse, v, order=1)
    assert back.same_grid(v)
    inside = (slice(0, 9), slice(0, 19), slice(0, 19))
    assert np.allclose(back.array[inside], v.array[inside], atol=1e-4)


def test_labels_round_trip_through_model_grid(shared_data: Path) -> None:
    pt = shared_data / "openkbp_hn_ct" / "train-pats" / "pt_4"
    lab = load_openkbp_labels(pt).volume
    spec = PreprocessingSpec((2.0, 2.0, 2.0), "IAR", (-500, 500), (32, 32, 32))
    model_grid = apply_spec(lab, spec, order=0)
    assert model_grid.orientation == "IAR" and model_grid.array.dtype == np.uint8
    back = resample_to_grid(model_grid, lab, order=0, fill_value=0)
    assert back.same_grid(lab)
    for label_id in range(1, 8):
        a, b = lab.array == label_id, back.array == label_id
        dice = 2 * (a & b).sum() / (a.sum() + b.sum())
        assert dice > 0.9, label_id


def test_body_box_and_crop_on_real_ct(shared_data: Path) -> None:
    ct = load_openkbp_ct(shared_data / "openkbp_hn_ct" / "train-pats" / "pt_4")
    box = body_bounding_box(ct, -500.0, margin=2)
    c = crop(ct, box)
    assert c.shape < ct.shape or c.shape != ct.shape
    assert np.array_equal(c.array, ct.array[box])
    assert np.allclose(
        c.world_coordinates([[0, 0, 0]]), ct.world_coordinates([[s.start for s in box]])
    )
    outside = ct.array.copy()
    outside[box] = -1024
    assert (outside > -500).sum() < 0.01 * (ct.array > -500).sum()


def test_normalise_and_spec_validation() -> None:
    assert normalise_hu(np.array([-2000.0, 500.0]), (-1000.0, 1000.0)).tolist() == [0.0, 0.75]
    with pytest.raises(ConfigError):
        PreprocessingSpec(window_hu=(10.0, -10.0))
    with pytest.raises(ConfigError, match="unknown"):
        PreprocessingSpec.from_dict({"spacing": (1, 1, 1)})
    with pytest.raises(ConfigError):
        PreprocessingSpec(orientation="SPP")
