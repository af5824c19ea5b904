"""Training augmentation: rotation keeps photo and mask aligned and covers every angle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.errors import ConfigError
from medseg.photo.augment import AugmentConfig, augment_pair, rotate_pair
from medseg.photo.datasets import find_pairs, read_mask, read_photo
from medseg.photo.training import load_train_config


def test_rotation_by_90_matches_numpy_rot90() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (33, 33, 3), dtype=np.uint8)
    mask = rng.random((33, 33)) > 0.7
    out_image, out_mask = rotate_pair(image, mask, 90)
    # counter-clockwise quarter turn of a square array about its centre pixel is exact
    np.testing.assert_array_equal(out_mask, np.rot90(mask))
    np.testing.assert_array_equal(out_image, np.rot90(image))


def test_rotation_keeps_shape_and_area_of_a_centred_disc() -> None:
    rows, cols = np.mgrid[:101, :121]
    disc = (rows - 50) ** 2 + (cols - 60) ** 2 <= 30**2
    image = np.where(disc[..., None], 200, 0).astype(np.uint8).repeat(3, axis=2)
    out_image, out_mask = rotate_pair(image, disc, 37.0)
    assert out_image.shape == image.shape and out_mask.shape == disc.shape
    assert abs(int(out_mask.sum()) - int(disc.sum())) < 0.01 * disc.sum()
    # the photo moved with the mask: bright pixels are (almost) exactly the rotated mask
    assert np.mean((out_image[..., 0] > 100) == out_mask) > 0.995


def test_rotation_of_a_real_photo_stays_aligned(shared_data: Path) -> None:
    pair = find_pairs(shared_data / "medetec_wound")[0]
    image, mask = read_photo(pair.image), read_mask(pair.mask)
    config = AugmentConfig(hflip=False, vflip=False, rotate=180, scale=(1.0, 1.0), color_jitter=0)
    angles = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        angle = float(np.random.default_rng(seed).uniform(-180, 180))
        angles.append(angle)
        out_image, out_mask = augment_pair(image, mask, config, rng)
        ref_image, ref_mask = rotate_pair(image, mask, angle)
        np.testing.assert_array_equal(out_mask, ref_mask)
        np.testing.assert_array_equal(out_image, ref_image)
    assert max(angles) - min(angles) > 90  # draws span a wide range of angles


@pytest.mark.parametrize("value", [-10, 270])
def test_rotation_out_of_range_rejected(tmp_path: Path, value: float) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"name: x\ndatasets: [a]\naugment:\n  rotate: {value}\n")
    with pytest.raises(ConfigError, match=r"augment\.rotate"):
        load_train_config(path)
