"""Training augmentation for photo/mask pairs (numpy + PIL, no OpenCV).

Flips, a random rotation, a random zoom (crop in / pad out, then resize back to the input size),
colour jitter and fixed-size random crops (train on windows at the photo's full resolution,
predict on the whole photo).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

__all__ = ["AugmentConfig", "augment_pair", "random_crop", "resize_pair", "rotate_pair"]


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation switches (all applied independently per sample).

    Attributes
    ----------
    hflip, vflip
        Random horizontal / vertical flips (probability 0.5 each).
    rotate
        Maximum rotation in degrees (uniform in ``[-rotate, rotate]`` about the photo's centre,
        same shape, uncovered corners black; 0 = off). Wounds and dermoscopic lesions have no
        preferred orientation, so with 180 every angle is seen.
    scale
        ``(low, high)`` zoom factor range; < 1 zooms in (crop), > 1 zooms out (zero padding).
    color_jitter
        Maximum relative change of brightness, contrast and saturation (0 = off).
    """

    hflip: bool = True
    vflip: bool = True
    rotate: float = 0.0
    scale: tuple[float, float] = (0.75, 1.25)
    color_jitter: float = 0.2


def resize_pair(
    image: npt.NDArray[np.uint8], mask: npt.NDArray[np.bool_], shape: tuple[int, int]
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]:
    """Resize image (bilinear) and mask (nearest) to ``shape`` = (rows, columns).

    >>> im, m = resize_pair(np.zeros((4, 6, 3), np.uint8), np.ones((4, 6), bool), (2, 3))
    >>> im.shape, m.shape, bool(m.all())
    ((2, 3, 3), (2, 3), True)
    """
    size = (shape[1], shape[0])
    out_image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    out_mask = np.asarray(
        Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)
    )
    return out_image, out_mask > 127


def _zoom(
    image: npt.NDArray[np.uint8],
    mask: npt.NDArray[np.bool_],
    factor: float,
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]:
    rows, cols = mask.shape
    win_r, win_c = max(8, round(rows * factor)), max(8, round(cols * factor))
    if factor <= 1:
        r0 = int(rng.integers(0, rows - win_r + 1))
        c0 = int(rng.integers(0, cols - win_c + 1))
        image, mask = (
            image[r0 : r0 + win_r, c0 : c0 + win_c],
            mask[r0 : r0 + win_r, c0 : c0 + win_c],
        )
    else:
        canvas = np.zeros((win_r, win_c, 3), np.uint8)
        canvas_mask = np.zeros((win_r, win_c), bool)
        r0 = int(rng.integers(0, win_r - rows + 1))
        c0 = int(rng.integers(0, win_c - cols + 1))
        canvas[r0 : r0 + rows, c0 : c0 + cols] = image
        canvas_mask[r0 : r0 + rows, c0 : c0 + cols] = mask
        image, mask = canvas, canvas_mask
    return resize_pair(image, mask, (rows, cols))


def rotate_pair(
    image: npt.NDArray[np.uint8], mask: npt.NDArray[np.bool_], degrees: float
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]:
    """Rotate image (bilinear) and mask (nearest) counter-clockwise about the centre, same shape.

    Uncovered corners are black (image) and background (mask).

    >>> m = np.zeros((5, 5), bool); m[0, 2] = True
    >>> np.argwhere(rotate_pair(np.zeros((5, 5, 3), np.uint8), m, 90)[1]).tolist()
    [[2, 0]]
    """
    out_image = Image.fromarray(np.ascontiguousarray(image)).rotate(
        degrees, resample=Image.Resampling.BILINEAR
    )
    out_mask = Image.fromarray(np.ascontiguousarray(mask).astype(np.uint8) * 255).rotate(
        degrees, resample=Image.Resampling.NEAREST
    )
    return np.asarray(out_image), np.asarray(out_mask) > 127


def _jitter(
    image: npt.NDArray[np.uint8], amount: float, rng: np.random.Generator
) -> npt.NDArray[np.uint8]:
    x = image.astype(np.float32)
    brightness, contrast, saturation = 1 + rng.uniform(-amount, amount, size=3)
    x = x * brightness
    x = (x - x.mean()) * contrast + x.mean()
    grey = x.mean(axis=2, keepdims=True)
    x = (x - grey) * saturation + grey
    return np.clip(x, 0, 255).astype(np.uint8)


def augment_pair(
    image: npt.NDArray[np.uint8],
    mask: npt.NDArray[np.bool_],
    config: AugmentConfig,
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]:
    """Apply random flips, rotation, zoom and colour jitter; output has the input's shape.

    >>> rng = np.random.default_rng(0)
    >>> im, m = augment_pair(np.zeros((32, 40, 3), np.uint8), np.zeros((32, 40), bool),
    ...                      AugmentConfig(), rng)
    >>> im.shape, m.shape
    ((32, 40, 3), (32, 40))
    """
    if config.hflip and rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if config.vflip and rng.random() < 0.5:
        image, mask = image[::-1], mask[::-1]
    if config.rotate > 0:
        image, mask = rotate_pair(image, mask, float(rng.uniform(-config.rotate, config.rotate)))
    low, high = config.scale
    if high > low or low != 1:
        image, mask = _zoom(
            np.ascontiguousarray(image),
            np.ascontiguousarray(mask),
            float(rng.uniform(low, high)),
            rng,
        )
    if config.color_jitter > 0:
        image = _jitter(np.asarray(image), config.color_jitter, rng)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


def random_crop(
    image: npt.NDArray[np.uint8],
    mask: npt.NDArray[np.bool_],
    size: int,
    rng: np.random.Generator,
    *,
    foreground_probability: float = 2 / 3,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]:
    """A ``size`` x ``size`` window of the pair (zero-padded where the photo is smaller).

    With probability ``foreground_probability`` (and when the mask has any foreground) the window
    is placed so that a randomly chosen foreground pixel lies inside it -- small wounds would
    otherwise be missed by most crops; else it is placed uniformly.

    >>> m = np.zeros((100, 300), bool); m[40:50, 250:260] = True
    >>> im, mc = random_crop(np.zeros((100, 300, 3), np.uint8), m, 64, np.random.default_rng(0),
    ...                      foreground_probability=1.0)
    >>> im.shape, mc.shape, int(mc.sum()) > 0
    ((64, 64, 3), (64, 64), True)
    """
    rows, cols = mask.shape
    pad_r, pad_c = max(0, size - rows), max(0, size - cols)
    if pad_r or pad_c:
        image = np.pad(image, ((0, pad_r), (0, pad_c), (0, 0)))
        mask = np.pad(mask, ((0, pad_r), (0, pad_c)))
        rows, cols = mask.shape
    fg = np.flatnonzero(mask)
    if fg.size and rng.random() < foreground_probability:
        r, c = divmod(int(fg[rng.integers(fg.size)]), cols)
        r0 = int(rng.integers(max(0, r - size + 1), min(r, rows - size) + 1))
        c0 = int(rng.integers(max(0, c - size + 1), min(c, cols - size) + 1))
    else:
        r0 = int(rng.integers(0, rows - size + 1))
        c0 = int(rng.integers(0, cols - size + 1))
    window = (slice(r0, r0 + size), slice(c0, c0 + size))
    return np.ascontiguousarray(image[window]), np.ascontiguousarray(mask[window])
