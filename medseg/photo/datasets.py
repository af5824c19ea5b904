"""Readers for photo segmentation datasets stored as image + mask-PNG pairs.

Supported layouts (see ``../shared/data/*/SOURCE.md``):

* FUSeg / Medetec: ``<root>/train/images/<name>.png`` + ``<root>/train/labels/<name>.png``
  (FUSeg masks are RGB {0, 255}, Medetec masks are RGB {0, 1});
* ISIC 2017 (and the ``isic2017_train_256`` / ``isic_skin_lesion_768`` copies):
  ``<root>/images/<id>.jpg`` + ``<root>/masks/<id>_segmentation.png``;
* HAM10000: ``<root>/images/<id>.jpg`` + ``<root>/masks/<id>.png``.

Any non-zero mask value is foreground, so 0/1 and 0/255 masks (greyscale or RGB) both work.
EXIF orientation is applied to every photo and mask (:func:`PIL.ImageOps.exif_transpose`), so
arrays are in the orientation a viewer shows. Connected components (8-connectivity) of a mask
become Mask R-CNN instances. Splits keep a photo series on one side: a name ``<series>-<n>``
whose series part ends in a digit (Medetec ``foot-ulcer1-3`` -> ``foot-ulcer1``) is a series;
every other photo is its own group (the sources give no patient ids).
"""

from __future__ import annotations

import logging
import random
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

from medseg.errors import InputError

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_ASPECT_RATIO",
    "MAX_PHOTO_PIXELS",
    "MIN_PHOTO_SIDE",
    "PhotoPair",
    "check_photo",
    "find_pairs",
    "group_of",
    "instances_from_mask",
    "read_mask",
    "read_photo",
    "split_pairs",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: Largest photo or mask read, in pixels (a 12000 x 12000 photo is 144 million).
MAX_PHOTO_PIXELS = 150_000_000
#: Shortest side a photo given to a network may have, in pixels.
MIN_PHOTO_SIDE = 32
#: Largest ratio of a photo's longer to its shorter side (the network resizes the shorter
#: side to a few hundred pixels and caps the longer at 1.5 times that).
MAX_ASPECT_RATIO = 8.0
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_SERIES = re.compile(r"^(?P<series>.*\d)-(?P<index>\d+)$")


@dataclass(frozen=True)
class PhotoPair:
    """One photo and its reference mask.

    Attributes
    ----------
    image
        Path of the photo.
    mask
        Path of the mask PNG.
    group
        Series/patient key; pairs sharing it always go to the same side of a split.
    """

    image: Path
    mask: Path
    group: str


def _check_size(path: Path, width: int, height: int, *, photo: bool) -> None:
    """Refuse sizes medseg cannot process (see :data:`MAX_PHOTO_PIXELS` and the others)."""
    if width * height > MAX_PHOTO_PIXELS:
        raise InputError(
            f"{path} is {width} x {height} pixels ({width * height / 1e6:.0f} megapixels); "
            f"medseg reads images of at most {MAX_PHOTO_PIXELS / 1e6:.0f} megapixels. "
            "Downscale it (e.g. to 8000 pixels on the longer side) and retry."
        )
    if not photo:
        return
    short, long = sorted((width, height))
    if short < MIN_PHOTO_SIDE or long > MAX_ASPECT_RATIO * short:
        raise InputError(
            f"{path} is {width} x {height} pixels; a photo needs at least {MIN_PHOTO_SIDE} "
            f"pixels on each side and an aspect ratio of at most {MAX_ASPECT_RATIO:g}:1. "
            "Crop or pad it to the wound or lesion."
        )


def _open(path: Path, *, photo: bool = True) -> Image.Image:
    """Open, size-check (before decoding), decode and EXIF-orient an image file."""
    if not path.is_file():
        what = "photo" if photo else "mask"
        raise InputError(f"{what} {path} does not exist; pass an existing image file.")
    try:
        with warnings.catch_warnings():  # our own size limit replaces Pillow's bomb warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
            _check_size(path, image.width, image.height, photo=photo)
            image.load()
    except Image.DecompressionBombError as exc:
        raise InputError(
            f"{path} is too large to read ({exc}); medseg reads images of at most "
            f"{MAX_PHOTO_PIXELS / 1e6:.0f} megapixels. Downscale it and retry."
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(
            f"cannot read {path} as an image ({type(exc).__name__}: {exc}); expected a PNG, "
            f"JPEG, TIFF or BMP photo. Re-export the file or remove it from the inputs."
        ) from exc
    ImageOps.exif_transpose(image, in_place=True)  # in place: no copy of a large photo
    return image


def check_photo(path: str | Path) -> tuple[int, int]:
    """Check that ``path`` is a readable photo of a usable size; return (width, height).

    The photo is decoded (a truncated file fails here) and dropped; sizes are those displayed
    (EXIF orientation applied).

    Raises
    ------
    InputError
        Missing, corrupt, non-image, too large, too small or too elongated file.
    """
    image = _open(Path(path))
    return image.width, image.height


def _pixels(image: Image.Image, band_rows: int = 1024) -> npt.NDArray[Any]:
    """``image``'s pixels as an array, copied in bands of rows: a large photo is not held
    three times over (``np.asarray`` goes through ``tobytes``, which joins a second copy)."""
    if image.width * image.height <= 4_000_000:
        return np.asarray(image)
    first = np.asarray(image.crop((0, 0, image.width, 1)))
    out = np.empty((image.height, *first.shape[1:]), dtype=first.dtype)
    for top in range(0, image.height, band_rows):
        bottom = min(image.height, top + band_rows)
        out[top:bottom] = np.asarray(image.crop((0, top, image.width, bottom)))
    return out


def _rgb8(image: Image.Image, path: Path) -> npt.NDArray[np.uint8]:
    """RGB uint8 pixels of ``image``; 16-bit greyscale is scaled by its full range (/257)."""
    if image.mode == "RGB":
        return _pixels(image)
    if image.mode in (*_SIXTEEN_BIT, "I"):
        grey = _pixels(image)
        if image.mode == "I" and (grey.min() < 0 or grey.max() > 65535):
            raise InputError(
                f"{path}: 32-bit integer image with values {grey.min()}..{grey.max()}; expected "
                "an 8- or 16-bit photo. Export it as an 8-bit RGB PNG or JPEG."
            )
        logger.info("%s: 16-bit greyscale photo scaled to 8 bits", path.name)
        grey8 = (grey.astype(np.uint16, copy=False) >> 8).astype(np.uint8)
        return np.repeat(grey8[..., None], 3, axis=2)
    if image.mode == "F":
        raise InputError(
            f"{path}: floating-point image (mode F); expected an 8- or 16-bit photo. Export "
            "it as an 8-bit RGB PNG or JPEG."
        )
    return _pixels(image.convert("RGB"))


def read_photo(path: str | Path) -> npt.NDArray[np.uint8]:
    """Read a photo as RGB, in its displayed (EXIF-corrected) orientation.

    8-bit photos of any Pillow mode are converted to RGB; 16-bit ones are scaled by their full
    range (0-65535 to 0-255; Pillow's own conversion would clip them to two grey levels).

    Returns
    -------
    numpy.ndarray
        uint8, shape (rows, columns, 3).

    Raises
    ------
    InputError
        Missing, corrupt or non-image file, or a size :func:`check_photo` refuses.
    """
    path = Path(path)
    return _rgb8(_open(path), path)


def read_mask(path: str | Path) -> npt.NDArray[np.bool_]:
    """Read a mask PNG (0/1 or 0/255, greyscale or RGB) as a boolean array (rows, columns).

    Raises
    ------
    InputError
        Missing, corrupt or non-image file, or more than :data:`MAX_PHOTO_PIXELS` pixels.
    """
    array = _pixels(_open(Path(path), photo=False))
    if array.ndim == 3:
        array = array[..., :3].max(axis=2) if array.shape[2] != 2 else array[..., 0]
    return np.asarray(array > 0)


def instances_from_mask(
    mask: npt.NDArray[np.bool_], *, min_area_px: int = 1
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float32]]:
    """Split a binary mask into connected components (8-connectivity).

    Parameters
    ----------
    mask
        Boolean array (rows, columns).
    min_area_px
        Components smaller than this many pixels are dropped.

    Returns
    -------
    masks, boxes
        ``masks`` bool (n, rows, columns); ``boxes`` float32 (n, 4) as ``x0, y0, x1, y1`` in
        pixel-edge coordinates (``x1 = last column + 1``), torchvision's convention.

    Examples
    --------
    >>> m = np.zeros((6, 8), bool); m[1:3, 1:3] = True; m[4:6, 5:8] = True
    >>> masks, boxes = instances_from_mask(m)
    >>> masks.shape, boxes.tolist()
    ((2, 6, 8), [[1.0, 1.0, 3.0, 3.0], [5.0, 4.0, 8.0, 6.0]])
    """
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    out_masks: list[npt.NDArray[np.bool_]] = []
    out_boxes: list[list[float]] = []
    for index, region in enumerate(ndimage.find_objects(labels), start=1):
        if region is None:
            continue
        component = labels == index
        if int(component.sum()) < min_area_px:
            continue
        rows, cols = region
        out_masks.append(component)
        out_boxes.append([cols.start, rows.start, cols.stop, rows.stop])
    if not out_masks:
        return np.zeros((0, *mask.shape), dtype=bool), np.zeros((0, 4), dtype=np.float32)
    return np.stack(out_masks), np.asarray(out_boxes, dtype=np.float32)


def group_of(stem: str) -> str:
    """Series key of a photo name (see the module docstring).

    >>> group_of("foot-ulcer1-3"), group_of("foot-ulcer-2-10"), group_of("foot-ulcer-0027")
    ('foot-ulcer1', 'foot-ulcer-2', 'foot-ulcer-0027')
    """
    match = _SERIES.match(stem)
    return match.group("series") if match else stem


def _mask_for(image: Path, mask_dir: Path) -> Path | None:
    for name in (f"{image.stem}_segmentation.png", f"{image.stem}.png"):
        candidate = mask_dir / name
        if candidate.is_file():
            return candidate
    return None


def find_pairs(root: str | Path) -> list[PhotoPair]:
    """Find image/mask pairs under a dataset folder (layouts in the module docstring).

    Parameters
    ----------
    root
        Dataset folder (e.g. ``shared/data/fuseg_wound``), or directly the folder holding
        ``images`` and ``labels``/``masks``.

    Returns
    -------
    list of PhotoPair
        Sorted by image name; group keys are prefixed by the dataset folder name.

    Raises
    ------
    InputError
        No recognised layout, or an image without a mask.
    """
    root = Path(root)
    for base in (root / "train", root):
        image_dir = base / "images"
        mask_dir = next((base / d for d in ("labels", "masks") if (base / d).is_dir()), None)
        if image_dir.is_dir() and mask_dir is not None:
            break
    else:
        raise InputError(
            f"{root}: no images/ + labels/ (or masks/) folder found; expected the FUSeg, "
            "Medetec, ISIC 2017 or HAM10000 layout (see medseg.photo.datasets)."
        )
    pairs: list[PhotoPair] = []
    missing: list[str] = []
    for image in sorted(image_dir.iterdir()):
        if image.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        mask = _mask_for(image, mask_dir)
        if mask is None:
            missing.append(image.name)
            continue
        pairs.append(PhotoPair(image, mask, f"{root.name}/{group_of(image.stem)}"))
    if missing:
        raise InputError(
            f"{root}: {len(missing)} image(s) without a mask in {mask_dir} (first: {missing[0]}); "
            "expected <name>.png or <name>_segmentation.png."
        )
    if not pairs:
        raise InputError(f"{root}: no image files in {image_dir}.")
    return pairs


def split_pairs(
    pairs: Sequence[PhotoPair], *, holdout_fraction: float = 0.2, seed: int = 0, fold: int = 0
) -> tuple[list[PhotoPair], list[PhotoPair]]:
    """Split pairs by group into (train, held-out) without a group on both sides.

    Groups are shuffled with ``seed`` and cut into ``round(1 / holdout_fraction)`` folds of
    near-equal photo count; fold ``fold`` is held out (so folds 0..k-1 give a cross-validation).
    ``holdout_fraction=0`` holds nothing out (the final model after a cross-validation is
    trained on every photo; ``fold`` is then ignored).

    >>> ps = [PhotoPair(Path(f"{g}-{i}.png"), Path("m.png"), g) for g in "abcde" for i in range(2)]
    >>> train, held = split_pairs(ps, holdout_fraction=0.2)
    >>> len(train), len(held), {p.group for p in train} & {p.group for p in held}
    (8, 2, set())
    >>> [len(part) for part in split_pairs(ps, holdout_fraction=0)]
    [10, 0]
    """
    if not 0 <= holdout_fraction < 1:
        raise InputError(
            f"holdout_fraction must be in [0, 1), got {holdout_fraction} (0 trains on every photo)."
        )
    if holdout_fraction == 0:
        return list(pairs), []
    n_folds = max(2, round(1 / holdout_fraction))
    if not 0 <= fold < n_folds:
        raise InputError(f"fold must be in 0..{n_folds - 1}, got {fold}.")
    groups: dict[str, list[PhotoPair]] = {}
    for pair in pairs:
        groups.setdefault(pair.group, []).append(pair)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    # Greedy: assign each group to the currently smallest fold (largest groups first).
    keys.sort(key=lambda k: -len(groups[k]))
    sizes = [0] * n_folds
    assignment: dict[str, int] = {}
    for key in keys:
        target = sizes.index(min(sizes))
        assignment[key] = target
        sizes[target] += len(groups[key])
    train = [p for p in pairs if assignment[p.group] != fold]
    held = [p for p in pairs if assignment[p.group] == fold]
    return train, held
