"""Run a photo Mask R-CNN on one RGB array: instances, union mask, overlay.

Memory is bounded on very large photos: a photo of more than :data:`DOWNSCALE_ABOVE_PIXELS`
pixels goes through the network downscaled to about :data:`NETWORK_PIXELS` (the network itself
resizes every input to its ``image_size``, a few hundred pixels, so nothing is lost), and the
kept masks are brought back to the photo's full resolution by bilinear interpolation of their
probabilities, in bands of rows -- no full-resolution float copy of the photo or of a mask is
ever made. Measurements therefore use full-resolution masks. Photos up to
:data:`DOWNSCALE_ABOVE_PIXELS` (12-megapixel phone photos are above; the 3008 x 2000 ISIC
images below) take the direct path unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch
from torchvision.models.detection import MaskRCNN

from medseg.runtime import autocast, autocast_dtype

__all__ = [
    "DOWNSCALE_ABOVE_PIXELS",
    "NETWORK_PIXELS",
    "TTA_FLIPS",
    "Instance",
    "PhotoPrediction",
    "centre_weight",
    "keep_ranked",
    "network_shape",
    "overlay",
    "photo_precision",
    "predict_array",
    "union_mask",
    "upsample_mask",
]

#: Photos with more pixels than this are downscaled before the network (see the module doc).
DOWNSCALE_ABOVE_PIXELS = 8_000_000
#: Pixel count a downscaled photo is brought to (the network resizes it further itself).
NETWORK_PIXELS = 2_000_000
_BAND_ROWS = 512


@dataclass(frozen=True, eq=False)
class Instance:
    """One detected object.

    Attributes
    ----------
    box
        ``(x0, y0, x1, y1)`` in pixels of the input photo.
    score
        Detection confidence in [0, 1].
    label
        Class id (1 = first class name).
    mask
        bool (rows, columns), the photo's size.
    """

    box: tuple[float, float, float, float]
    score: float
    label: int
    mask: npt.NDArray[np.bool_] = field(repr=False)

    @property
    def area_px(self) -> int:
        """Mask area in pixels."""
        return int(self.mask.sum())


@dataclass(frozen=True, eq=False)
class PhotoPrediction:
    """All kept instances of one photo and their union mask (rows, columns)."""

    instances: tuple[Instance, ...]
    mask: npt.NDArray[np.bool_] = field(repr=False)


def union_mask(instances: Sequence[Instance], shape: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    """Union of the instances' masks; all-False of ``shape`` when there are none.

    A single instance's mask is returned as it is (no copy: large photos).

    >>> a = Instance((0, 0, 1, 1), 0.9, 1, np.eye(2, dtype=bool))
    >>> union_mask([a], (2, 2)).sum(), union_mask([], (2, 3)).shape
    (np.int64(2), (2, 3))
    """
    if len(instances) == 1 and instances[0].mask.shape == tuple(shape):
        return instances[0].mask
    union = np.zeros(shape, dtype=bool)
    for inst in instances:
        union |= inst.mask
    return union


def photo_precision(device: torch.device, bf16: bool) -> str:
    """The :data:`medseg.runtime.PRECISIONS` name the photo models run in on ``device``.

    ``"float16"`` on CUDA (the ``bf16`` flag is a CPU option), ``"bfloat16"`` on a CPU when
    ``bf16`` (``--bf16``), else ``"float32"``.

    >>> photo_precision(torch.device("cpu"), True), photo_precision(torch.device("cuda"), False)
    ('bfloat16', 'float16')
    """
    if device.type == "cuda":
        return "float16"
    return "bfloat16" if bf16 else "float32"


def photo_autocast(device: torch.device, bf16: bool) -> torch.autocast:
    """Autocast in :func:`photo_precision` (dtype from :func:`medseg.runtime.autocast_dtype`).

    Examples
    --------
    >>> photo_autocast(torch.device("cpu"), False).fast_dtype == torch.float32
    True
    >>> photo_autocast(torch.device("cpu"), True).fast_dtype
    torch.bfloat16
    """
    return autocast(device.type, autocast_dtype(device, photo_precision(device, bf16)))


def network_shape(shape: tuple[int, int]) -> tuple[int, int]:
    """(rows, columns) a photo of ``shape`` is given to the network at (aspect kept).

    The photo's own shape up to :data:`DOWNSCALE_ABOVE_PIXELS` pixels, else about
    :data:`NETWORK_PIXELS` pixels.

    >>> network_shape((2000, 3008)), network_shape((12000, 12000))
    ((2000, 3008), (1414, 1414))
    """
    rows, cols = shape
    if rows * cols <= DOWNSCALE_ABOVE_PIXELS:
        return rows, cols
    scale = (NETWORK_PIXELS / (rows * cols)) ** 0.5
    return max(1, round(rows * scale)), max(1, round(cols * scale))


def _linear_taps(
    n_out: int, n_in: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.float32]]:
    """Source indices and weights of linear interpolation, half-pixel centres (torch's
    ``align_corners=False``), edges clamped."""
    pos = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (pos - lo).astype(np.float32)


def upsample_mask(
    prob: npt.NDArray[np.float32], shape: tuple[int, int], threshold: float
) -> npt.NDArray[np.bool_]:
    """``prob`` (rows, columns) resized bilinearly to ``shape`` and thresholded (``>``).

    Computed in bands of rows: besides the boolean result, only one band of floats exists at
    full resolution. Bands whose source rows never exceed ``threshold`` are skipped (a bilinear
    value cannot exceed its four sources).

    >>> p = np.zeros((4, 4), np.float32); p[1:3, 1:3] = 1
    >>> upsample_mask(p, (8, 8), 0.5).astype(int).sum(), upsample_mask(p, (4, 4), 0.5).sum()
    (np.int64(16), np.int64(4))
    """
    rows, cols = shape
    y0, y1, wy = _linear_taps(rows, prob.shape[0])
    x0, x1, wx = _linear_taps(cols, prob.shape[1])
    out = np.zeros(shape, dtype=bool)
    for start in range(0, rows, _BAND_ROWS):
        band = slice(start, min(rows, start + _BAND_ROWS))
        lo, hi, w = y0[band], y1[band], wy[band, None]
        if prob[lo[0] : hi[-1] + 1].max(initial=0.0) <= threshold:
            continue
        along = prob[lo] * (1 - w) + prob[hi] * w  # (band rows, source columns)
        out[band] = (along[:, x0] * (1 - wx) + along[:, x1] * wx) > threshold
    return out


#: The four flips of test-time augmentation: (mirror columns, mirror rows).
TTA_FLIPS: tuple[tuple[bool, bool], ...] = (
    (False, False),
    (True, False),
    (False, True),
    (True, True),
)


@dataclass(frozen=True, eq=False)
class _Detections:
    """Raw network output for one photo, masks already mapped back to the unflipped photo."""

    boxes: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]
    soft: npt.NDArray[np.float32]  # (n, rows, columns) mask probabilities


def _detect(
    model: MaskRCNN,
    image: npt.NDArray[np.uint8],
    device: torch.device,
    bf16: bool,
    flip: tuple[bool, bool] = (False, False),
) -> _Detections:
    """One forward pass on ``image`` mirrored by ``flip``; boxes and masks are mirrored back."""
    columns, rows = flip
    axes = (slice(None, None, -1 if rows else 1), slice(None, None, -1 if columns else 1))
    tensor = torch.from_numpy(np.array(image[axes])).permute(2, 0, 1).float().div(255)
    with photo_autocast(device, bf16):
        output = model([tensor.to(device)])[0]
    boxes = output["boxes"].float().cpu().numpy()
    height, width = image.shape[:2]
    if columns:
        boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
    if rows:
        boxes[:, [1, 3]] = height - boxes[:, [3, 1]]
    soft = output["masks"].float().cpu().numpy()[:, 0]
    return _Detections(
        boxes,
        output["scores"].float().cpu().numpy(),
        output["labels"].cpu().numpy(),
        np.ascontiguousarray(soft[(slice(None), *axes)]),
    )


def centre_weight(mask: npt.NDArray[np.bool_], sigma: float) -> float:
    """Gaussian weight of a mask's centroid by its distance from the photo's centre.

    The distance is measured in photo heights (rows) and widths (columns), so the weight is
    ``exp(-d**2 / (2 * sigma**2))`` on any aspect ratio: 1 at the centre, ~0.61 at ``sigma``.
    An empty mask weighs 0.

    >>> m = np.zeros((100, 200), bool); m[45:55, 95:105] = True
    >>> round(centre_weight(m, 0.2), 3)
    1.0
    >>> m = np.zeros((100, 200), bool); m[:10, 95:105] = True  # centroid 0.45 heights above
    >>> round(centre_weight(m, 0.2), 3), centre_weight(np.zeros((4, 4), bool), 0.2)
    (0.08, 0.0)
    """
    area = int(np.count_nonzero(mask))
    if area == 0:
        return 0.0
    height, width = mask.shape
    row = float(np.arange(height) @ np.count_nonzero(mask, axis=1)) / area
    col = float(np.arange(width) @ np.count_nonzero(mask, axis=0)) / area
    d2 = ((row + 0.5) / height - 0.5) ** 2 + ((col + 0.5) / width - 0.5) ** 2
    return float(np.exp(-d2 / (2 * sigma**2)))


def keep_ranked(
    scores: Sequence[float],
    masks: Sequence[npt.NDArray[np.bool_]],
    *,
    score_threshold: float,
    max_instances: int | None,
    centre_prior: float | None = None,
) -> list[int]:
    """Indices of the candidates kept, best first.

    Without ``centre_prior``: those scoring at least ``score_threshold``, by score, the first
    ``max_instances`` (``None``: all). With ``centre_prior`` (a sigma for
    :func:`centre_weight`; needs ``max_instances``): the photo has an object when some candidate
    reaches ``score_threshold``; then the ``max_instances`` candidates with the highest
    ``score * centre_weight`` are kept, *whatever their score* -- a lesion the network scores
    0.4 in the middle of a dermoscopic image beats a 0.7 "lesion" at the dermatoscope's edge.

    >>> square = np.zeros((9, 9), bool); square[3:6, 3:6] = True
    >>> corner = np.zeros((9, 9), bool); corner[:3, :3] = True
    >>> keep_ranked([0.7, 0.4], [corner, square], score_threshold=0.5, max_instances=1)
    [0]
    >>> keep_ranked([0.7, 0.4], [corner, square], score_threshold=0.5, max_instances=1,
    ...             centre_prior=0.2)
    [1]
    >>> keep_ranked([0.3, 0.4], [corner, square], score_threshold=0.5, max_instances=1,
    ...             centre_prior=0.2)
    []
    """
    if centre_prior is not None and max_instances is None:
        raise ValueError("centre_prior ranks candidates for max_instances; set max_instances.")
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    if centre_prior is None:
        kept = [i for i in order if scores[i] >= score_threshold]
    elif any(scores[i] >= score_threshold for i in order):
        kept = sorted(order, key=lambda i: -scores[i] * centre_weight(masks[i], centre_prior))
    else:
        kept = []
    return kept if max_instances is None else kept[:max_instances]


def _select(
    det: _Detections,
    score_threshold: float,
    mask_threshold: float,
    max_instances: int | None,
    centre_prior: float | None,
) -> list[int]:
    """Indices of detections kept (see :func:`keep_ranked`); empty masks never count."""
    # without the prior only detections above the threshold can be kept: threshold no others
    candidates = [
        i
        for i in range(len(det.scores))
        if centre_prior is not None or det.scores[i] >= score_threshold
    ]
    binary = {i: det.soft[i] > mask_threshold for i in candidates}
    nonempty = [i for i in candidates if binary[i].any()]
    chosen = keep_ranked(
        [float(det.scores[i]) for i in nonempty],
        [binary[i] for i in nonempty],
        score_threshold=score_threshold,
        max_instances=max_instances,
        centre_prior=centre_prior,
    )
    return [nonempty[k] for k in chosen]


@dataclass(frozen=True, eq=False)
class _Found:
    """A kept instance at the network's resolution: its mask and the probabilities behind it."""

    box: tuple[float, float, float, float]
    score: float
    label: int
    mask: npt.NDArray[np.bool_]
    prob: npt.NDArray[np.float32]


def _downscale(image: npt.NDArray[np.uint8], shape: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """``image`` resized to ``shape`` (rows, columns) with Pillow's antialiased bilinear filter."""
    from PIL import Image

    size = (shape[1], shape[0])
    small = Image.fromarray(image).resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(small, dtype=np.uint8)


def _to_full(found: _Found, full: tuple[int, int], threshold: float) -> Instance:
    """The instance on the photo's full-resolution grid (unchanged when not downscaled)."""
    if found.mask.shape == full:
        return Instance(found.box, found.score, found.label, found.mask)
    sy, sx = full[0] / found.mask.shape[0], full[1] / found.mask.shape[1]
    x0, y0, x1, y1 = found.box
    box = (x0 * sx, y0 * sy, x1 * sx, y1 * sy)
    return Instance(box, found.score, found.label, upsample_mask(found.prob, full, threshold))


@torch.no_grad()
def predict_array(
    model: MaskRCNN,
    image: npt.NDArray[np.uint8],
    *,
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
    bf16: bool = False,
    max_instances: int | None = None,
    tta: bool = False,
    centre_prior: float | None = None,
) -> PhotoPrediction:
    """Predict instances on an RGB uint8 photo (rows, columns, 3).

    Instances scoring below ``score_threshold`` or with an empty mask are dropped, and only the
    ``max_instances`` best-scoring ones are kept (``None``: all); the union mask has the photo's
    shape (all-False when nothing is kept). ``centre_prior`` (with ``max_instances``) prefers
    instances near the photo's centre instead, as :func:`keep_ranked` describes -- for
    dermoscopy, which centres the lesion. ``bf16=True`` runs the network under CPU bfloat16
    autocast (about 2x faster convolutions on CPUs with AVX512-BF16).

    ``tta=True`` (test-time augmentation) runs the network on the photo and its three mirror
    images (:data:`TTA_FLIPS`), 4x the time. In each pass the kept instances' mask
    probabilities are combined by their maximum; the four maps are averaged and thresholded at
    ``mask_threshold``. The instances are then the connected regions of that mask -- the way
    reference masks define instances (:func:`medseg.photo.datasets.instances_from_mask`) -- each
    with the score and label of the best detection (in any pass) overlapping it, and its
    bounding box. Touching instances therefore merge into one.

    A photo larger than :data:`DOWNSCALE_ABOVE_PIXELS` is predicted at :func:`network_shape`
    and its kept masks are upsampled to the photo's size (:func:`upsample_mask`), which bounds
    memory (a 12000 x 12000 photo: about 1.5 GB in all).
    """
    if centre_prior is not None and (max_instances is None or not centre_prior > 0):
        raise ValueError(
            f"centre_prior must be > 0 and needs max_instances (got {centre_prior}, "
            f"max_instances={max_instances})."
        )
    full = (int(image.shape[0]), int(image.shape[1]))
    shape = network_shape(full)
    work = image if shape == full else _downscale(image, shape)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        if not tta:
            det = _detect(model, work, device, bf16)
            found = [
                _Found(
                    tuple(float(v) for v in det.boxes[i]),  # type: ignore[arg-type]
                    float(det.scores[i]),
                    int(det.labels[i]),
                    det.soft[i] > mask_threshold,
                    det.soft[i],
                )
                for i in _select(det, score_threshold, mask_threshold, max_instances, centre_prior)
            ]
        else:
            found = _predict_tta(
                model,
                work,
                device=device,
                bf16=bf16,
                score_threshold=score_threshold,
                mask_threshold=mask_threshold,
                max_instances=max_instances,
                centre_prior=centre_prior,
            )
    finally:
        if was_training:
            model.train()
    kept = [_to_full(f, full, mask_threshold) for f in found]
    return PhotoPrediction(tuple(kept), union_mask(kept, full))


def _predict_tta(
    model: MaskRCNN,
    image: npt.NDArray[np.uint8],
    *,
    device: torch.device,
    bf16: bool,
    score_threshold: float,
    mask_threshold: float,
    max_instances: int | None,
    centre_prior: float | None,
) -> list[_Found]:
    """Flip test-time augmentation (see :func:`predict_array`); instances at ``image``'s size."""
    from scipy import ndimage

    prob = np.zeros(image.shape[:2], dtype=np.float32)
    support: list[tuple[npt.NDArray[np.bool_], float, int]] = []
    for flip in TTA_FLIPS:
        det = _detect(model, image, device, bf16, flip)
        chosen = _select(det, score_threshold, mask_threshold, max_instances, centre_prior)
        if chosen:
            prob += det.soft[chosen].max(axis=0)
        support += [
            (det.soft[i] > mask_threshold, float(det.scores[i]), int(det.labels[i])) for i in chosen
        ]
    prob /= len(TTA_FLIPS)
    union = prob > mask_threshold
    regions, _ = ndimage.label(union)
    found: list[_Found] = []
    for index, window in enumerate(ndimage.find_objects(regions), start=1):
        if window is None:
            continue
        region = regions == index
        # mean probability > threshold implies some pass had a kept mask > threshold here
        score, label = max((s, lab) for m, s, lab in support if (m[window] & region[window]).any())
        rows, cols = window
        box = (float(cols.start), float(rows.start), float(cols.stop), float(rows.stop))
        # the region's probabilities (and a 2-pixel rim) for upsampling to full resolution
        near = ndimage.binary_dilation(region, iterations=2) & ~(union & ~region)
        found.append(_Found(box, score, label, region, np.where(near, prob, 0).astype(np.float32)))
    found.sort(key=lambda f: (-f.score, -int(f.mask.sum())))
    if centre_prior is not None:  # every region came from a kept detection: rank, no threshold
        found.sort(key=lambda f: -f.score * centre_weight(f.mask, centre_prior))
    return found if max_instances is None else found[:max_instances]


def overlay(
    image: npt.NDArray[np.uint8],
    mask: npt.NDArray[np.bool_],
    *,
    color: tuple[int, int, int] = (0, 255, 0),
    alpha: float = 0.4,
    in_place: bool = False,
) -> npt.NDArray[np.uint8]:
    """Blend ``color`` over the masked pixels and draw a 1-pixel outline; same shape as image.

    ``in_place=True`` draws into ``image`` itself (it must be writable) instead of a copy,
    which saves a full-resolution copy of a large photo.

    >>> img = np.zeros((4, 4, 3), np.uint8); m = np.zeros((4, 4), bool); m[1:3, 1:3] = True
    >>> out = overlay(img, m); out.shape, out[0, 0].tolist(), out[1, 1].tolist()
    ((4, 4, 3), [0, 0, 0], [0, 255, 0])
    >>> overlay(img, m, in_place=True) is img, img[1, 1].tolist()
    (True, [0, 255, 0])
    """
    from scipy import ndimage

    out = image if in_place else np.array(image, dtype=np.uint8, copy=True)
    col = np.asarray(color, dtype=np.float32)
    for start in range(0, mask.shape[0], _BAND_ROWS):  # float work one band at a time
        band = slice(start, start + _BAND_ROWS)
        inside = mask[band]
        if not inside.any():
            continue
        # the outline within the band: erode a band with one row of context on each side
        ctx = slice(max(0, start - 1), min(mask.shape[0], start + _BAND_ROWS + 1))
        eroded = ndimage.binary_erosion(mask[ctx])[start - ctx.start :][: inside.shape[0]]
        # rows at the photo's top and bottom edge erode as binary_erosion on the whole mask does
        pixels = out[band][inside].astype(np.float32)
        blended = np.clip(np.rint((1 - alpha) * pixels + alpha * col), 0, 255).astype(np.uint8)
        block = out[band]
        block[inside] = blended
        block[inside & ~eroded] = np.asarray(color, dtype=np.uint8)
    return out
