"""Run a photo Mask R-CNN on one RGB array: instances, union mask, overlay."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch
from torchvision.models.detection import MaskRCNN

from medseg.runtime import autocast, select_device

__all__ = [
    "TTA_FLIPS",
    "Instance",
    "PhotoPrediction",
    "centre_weight",
    "keep_ranked",
    "overlay",
    "predict_array",
    "select_device",
    "union_mask",
]


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

    >>> a = Instance((0, 0, 1, 1), 0.9, 1, np.eye(2, dtype=bool))
    >>> union_mask([a], (2, 2)).sum(), union_mask([], (2, 3)).shape
    (np.int64(2), (2, 3))
    """
    union = np.zeros(shape, dtype=bool)
    for inst in instances:
        union |= inst.mask
    return union


def photo_autocast(device: torch.device, bf16: bool) -> torch.autocast:
    """Autocast for the photo models: float16 on CUDA, bfloat16 on CPU when ``bf16``, else off.

    Examples
    --------
    >>> photo_autocast(torch.device("cpu"), False).fast_dtype == torch.float32
    True
    >>> photo_autocast(torch.device("cpu"), True).fast_dtype
    torch.bfloat16
    """
    dtype = torch.float16 if device.type == "cuda" else (torch.bfloat16 if bf16 else None)
    return autocast(device.type, dtype)


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
    """
    if centre_prior is not None and (max_instances is None or not centre_prior > 0):
        raise ValueError(
            f"centre_prior must be > 0 and needs max_instances (got {centre_prior}, "
            f"max_instances={max_instances})."
        )
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        if not tta:
            det = _detect(model, image, device, bf16)
            kept = [
                Instance(
                    tuple(float(v) for v in det.boxes[i]),  # type: ignore[arg-type]
                    float(det.scores[i]),
                    int(det.labels[i]),
                    det.soft[i] > mask_threshold,
                )
                for i in _select(det, score_threshold, mask_threshold, max_instances, centre_prior)
            ]
            return PhotoPrediction(tuple(kept), union_mask(kept, image.shape[:2]))
        return _predict_tta(
            model,
            image,
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
) -> PhotoPrediction:
    """Flip test-time augmentation (see :func:`predict_array`)."""
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
    union = prob / len(TTA_FLIPS) > mask_threshold
    regions, _ = ndimage.label(union)
    found: list[Instance] = []
    for index, window in enumerate(ndimage.find_objects(regions), start=1):
        if window is None:
            continue
        region = regions == index
        # mean probability > threshold implies some pass had a kept mask > threshold here
        score, label = max((s, lab) for m, s, lab in support if (m[window] & region[window]).any())
        rows, cols = window
        box = (float(cols.start), float(rows.start), float(cols.stop), float(rows.stop))
        found.append(Instance(box, score, label, region))
    found.sort(key=lambda inst: (-inst.score, -inst.area_px))
    if centre_prior is not None:  # every region came from a kept detection: rank, no threshold
        found.sort(key=lambda inst: -inst.score * centre_weight(inst.mask, centre_prior))
    kept = found if max_instances is None else found[:max_instances]
    return PhotoPrediction(tuple(kept), union_mask(kept, image.shape[:2]))


def overlay(
    image: npt.NDArray[np.uint8],
    mask: npt.NDArray[np.bool_],
    *,
    color: tuple[int, int, int] = (0, 255, 0),
    alpha: float = 0.4,
) -> npt.NDArray[np.uint8]:
    """Blend ``color`` over the masked pixels and draw a 1-pixel outline; same shape as image.

    >>> img = np.zeros((4, 4, 3), np.uint8); m = np.zeros((4, 4), bool); m[1:3, 1:3] = True
    >>> out = overlay(img, m); out.shape, out[0, 0].tolist(), out[1, 1].tolist()
    ((4, 4, 3), [0, 0, 0], [0, 255, 0])
    """
    from scipy import ndimage

    out = image.astype(np.float32).copy()
    col = np.asarray(color, dtype=np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * col
    edge = mask & ~ndimage.binary_erosion(mask)
    out[edge] = col
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
