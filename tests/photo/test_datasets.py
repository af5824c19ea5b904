from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.measure import label as sk_label

from medseg.errors import InputError
from medseg.photo.datasets import (
    find_pairs,
    instances_from_mask,
    read_mask,
    read_photo,
    split_pairs,
)


@pytest.mark.parametrize(
    ("folder", "count"),
    [
        ("fuseg_wound", 238),
        ("medetec_wound", 18),
        ("isic2017_skin_lesion", 14),
        ("isic2017_train_256", 80),
        ("isic_skin_lesion_768", 70),
        ("ham10000_skin_lesion", 5),
    ],
)
def test_find_pairs_counts_and_shapes(shared_data: Path, folder: str, count: int) -> None:
    pairs = find_pairs(shared_data / folder)
    assert len(pairs) == count
    image, mask = read_photo(pairs[0].image), read_mask(pairs[0].mask)
    assert image.dtype == np.uint8 and image.shape == (*mask.shape, 3)
    assert 0 < mask.mean() < 1


def test_medetec_zero_one_masks_are_read(shared_data: Path) -> None:
    # Medetec masks are {0,1}: a > 127 threshold would see nothing.
    pair = next(
        p for p in find_pairs(shared_data / "medetec_wound") if p.image.stem == "foot-ulcer1-1"
    )
    raw = np.asarray(Image.open(pair.mask))
    assert raw.max() == 1
    assert read_mask(pair.mask).sum() == int((raw.max(axis=2) > 0).sum()) > 0


def test_instances_match_skimage_components(shared_data: Path) -> None:
    for pair in find_pairs(shared_data / "fuseg_wound")[:30]:
        mask = read_mask(pair.mask)
        masks, boxes = instances_from_mask(mask)
        assert len(masks) == sk_label(mask, connectivity=2).max()
        assert np.array_equal(masks.any(axis=0), mask)
        for m, (x0, y0, x1, y1) in zip(masks, boxes, strict=True):
            rows, cols = np.nonzero(m)
            assert (x0, y0, x1, y1) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)


def test_medetec_series_never_split(shared_data: Path) -> None:
    pairs = find_pairs(shared_data / "medetec_wound") + find_pairs(shared_data / "fuseg_wound")
    series = {p.image.name for p in pairs if p.image.stem.startswith("foot-ulcer1-")}
    assert len(series) == 6
    for fold in range(5):
        train, held = split_pairs(pairs, holdout_fraction=0.2, fold=fold)
        assert len(train) + len(held) == len(pairs)
        in_train = {p.image.name for p in train} & series
        assert in_train in (set(), series)
        assert 0.15 < len(held) / len(pairs) < 0.25
    everything, none = split_pairs(pairs, holdout_fraction=0.0)  # final model: every photo
    assert everything == pairs and none == []
    with pytest.raises(InputError, match=r"holdout_fraction must be in \[0, 1\), got 1.0"):
        split_pairs(pairs, holdout_fraction=1.0)


def test_exif_orientation_applied(tmp_path: Path) -> None:
    array = np.zeros((40, 60, 3), np.uint8)
    array[:10, :20] = 255  # bright block top-left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    path = tmp_path / "rot.jpg"
    Image.fromarray(array).save(path, exif=exif, quality=95)
    shown = read_photo(path)
    assert shown.shape == (60, 40, 3)
    # After a clockwise turn the stored top-left block sits at the top-right.
    assert shown[:20, -10:].mean() > 200 and shown[-20:, :10].mean() < 50


@pytest.mark.parametrize("content", [b"this is not an image", b"\x89PNG\r\n\x1a\n\x00\x00broken"])
def test_corrupt_file_gives_input_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(content)
    with pytest.raises(InputError, match=r"cannot read .*photo\.png as an image"):
        read_photo(path)
    with pytest.raises(InputError, match="does not exist"):
        read_photo(tmp_path / "missing.jpg")


def test_find_pairs_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no images/"):
        find_pairs(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "images" / "a.png")
    with pytest.raises(InputError, match="without a mask"):
        find_pairs(tmp_path)
