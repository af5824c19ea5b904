"""Cases, folds and MONAI dictionary transforms over :mod:`medseg.preprocess` functions.

The deterministic part (load → reorient → resample → crop to body → window HU) is cached by
``monai.data.CacheDataset``; the random part samples foreground-weighted patches and augments.
Training and inference share :func:`medseg.preprocess.apply_spec` and
:func:`medseg.preprocess.normalise_hu`, so a checkpoint's PreprocessingSpec is all the Predictor
needs.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.transforms import MapTransform

from medseg.errors import ConfigError
from medseg.io.openkbp import load_openkbp_ct, load_openkbp_labels
from medseg.preprocess import PreprocessingSpec, apply_spec, body_bounding_box, crop, normalise_hu
from medseg.training.config import DataConfig, OptimConfig

logger = logging.getLogger(__name__)

__all__ = [
    "LoadOpenKBPd",
    "PrepareCased",
    "deterministic_transforms",
    "label_only_transforms",
    "list_cases",
    "random_transforms",
    "split_cases",
]


def list_cases(root: str | Path) -> list[str]:
    """Sorted names of OpenKBP patient folders (with ``ct.csv``) under ``root``."""
    cases = sorted(p.name for p in Path(root).iterdir() if (p / "ct.csv").is_file())
    if not cases:
        raise ConfigError(f"{root}: no OpenKBP patient folders (with ct.csv) found.")
    return cases


def split_cases(cases: Sequence[str], data: DataConfig) -> tuple[list[str], list[str]]:
    """(train, validation) case names for ``data.fold`` (see :class:`DataConfig`).

    Examples
    --------
    >>> from medseg.training.config import DataConfig
    >>> tr, va = split_cases([f"pt_{i}" for i in range(10)], DataConfig(folds=5, fold=0))
    >>> len(tr), len(va), sorted(set(tr) & set(va))
    (8, 2, [])
    """
    ordered = sorted(cases)
    if data.max_cases:
        ordered = ordered[: data.max_cases]
    rng = np.random.default_rng(data.split_seed)
    shuffled = [ordered[i] for i in rng.permutation(len(ordered))]
    if data.fold is None:
        return sorted(shuffled), []
    val = sorted(c for i, c in enumerate(shuffled) if i % data.folds == data.fold)
    train = sorted(c for c in shuffled if c not in set(val))
    if not train:
        raise ConfigError(f"fold {data.fold} leaves no training cases (of {len(ordered)}).")
    return train, val


class LoadOpenKBPd(MapTransform):
    """``{"case": folder}`` → adds ``"ct"`` (Volume, HU) and ``"labels"`` (Volume of ids)."""

    def __init__(self, labels: Sequence[str]) -> None:
        super().__init__(keys=("case",))
        self.labels = tuple(labels)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        d["ct"] = load_openkbp_ct(d["case"])
        d["labels"] = load_openkbp_labels(d["case"], self.labels).volume
        return d


class PrepareCased(MapTransform):
    """Reorient + resample (spec), crop to the body box, window HU → channel-first arrays.

    Produces ``"image"`` float32 ``(1, D, H, W)`` in [0, 1] and ``"label"`` uint8
    ``(1, D, H, W)``; drops the Volumes.
    """

    def __init__(self, spec: PreprocessingSpec, threshold_hu: float, margin: int) -> None:
        super().__init__(keys=("ct", "labels"))
        self.spec, self.threshold_hu, self.margin = spec, threshold_hu, margin

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        ct = apply_spec(d.pop("ct"), self.spec, order=1)
        lab = apply_spec(d.pop("labels"), self.spec, order=0)
        box = body_bounding_box(ct, self.threshold_hu, margin=self.margin)
        ct, lab = crop(ct, box), crop(lab, box)
        d["image"] = normalise_hu(ct.array, self.spec.window_hu)[None]
        d["label"] = lab.array.astype(np.uint8)[None]
        d["affine"] = ct.affine
        return d


class LoadLabelsOnlyd(MapTransform):
    """Stage-1 (SRM) loader: labels only, reoriented/resampled, cropped around the organs.

    Produces ``"label"`` uint8 ``(1, D, H, W)``: the box around all labels plus ``margin``
    voxels, so the shape autoencoder never needs the (slow to parse) CT.
    """

    def __init__(self, labels: Sequence[str], spec: PreprocessingSpec, margin: int) -> None:
        super().__init__(keys=("case",))
        self.labels, self.spec, self.margin = tuple(labels), spec, margin

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        lab = apply_spec(load_openkbp_labels(d["case"], self.labels).volume, self.spec, order=0)
        nz = np.argwhere(lab.array > 0)
        lo = np.maximum(nz.min(axis=0) - self.margin, 0)
        hi = np.minimum(nz.max(axis=0) + 1 + self.margin, lab.shape)
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        d["label"] = crop(lab, box).array.astype(np.uint8)[None]  # type: ignore[arg-type]
        return d


def label_only_transforms(
    data: DataConfig, spec: PreprocessingSpec, optim: OptimConfig
) -> list[Any]:
    """Stage-1 pipeline: cached label loading, then label patches (organ-centred 90 %)."""
    from monai.transforms import EnsureTyped, RandCropByPosNegLabeld, SpatialPadd

    return [
        LoadLabelsOnlyd(data.labels, spec, margin=16),
        SpatialPadd(keys="label", spatial_size=spec.roi_size, mode="constant"),
        RandCropByPosNegLabeld(
            keys="label",
            label_key="label",
            spatial_size=spec.roi_size,
            pos=0.9,
            neg=0.1,
            num_samples=optim.samples_per_case,
            allow_smaller=False,
        ),
        EnsureTyped(keys="label", track_meta=False),
    ]


def deterministic_transforms(data: DataConfig, spec: PreprocessingSpec) -> list[Any]:
    """Cached part of the pipeline."""
    return [LoadOpenKBPd(data.labels), PrepareCased(spec, data.body_threshold_hu, data.body_margin)]


def random_transforms(spec: PreprocessingSpec, optim: OptimConfig) -> list[Any]:
    """Foreground-weighted patch sampling and (optional) augmentation.

    No left–right flips: they would swap LeftParotid and RightParotid. Augmentation: small
    rotations (±8°) and scaling (±10 %), intensity scale/shift, Gaussian noise.
    """
    from monai.transforms import (
        EnsureTyped,
        RandAffined,
        RandCropByPosNegLabeld,
        RandGaussianNoised,
        RandScaleIntensityd,
        RandShiftIntensityd,
        SpatialPadd,
    )

    pos = max(1e-3, optim.pos_fraction)
    out: list[Any] = [
        SpatialPadd(keys=("image", "label"), spatial_size=spec.roi_size, mode="constant"),
        RandCropByPosNegLabeld(
            keys=("image", "label"),
            label_key="label",
            spatial_size=spec.roi_size,
            pos=pos,
            neg=max(1e-3, 1.0 - pos),
            num_samples=optim.samples_per_case,
            allow_smaller=False,
        ),
    ]
    if optim.augment:
        out += [
            RandAffined(
                keys=("image", "label"),
                prob=0.3,
                rotate_range=(np.deg2rad(8),) * 3,
                scale_range=(0.1,) * 3,
                mode=("bilinear", "nearest"),
                padding_mode="border",
            ),
            RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
            RandShiftIntensityd(keys="image", offsets=0.05, prob=0.5),
            RandGaussianNoised(keys="image", std=0.02, prob=0.2),
        ]
    out.append(EnsureTyped(keys=("image", "label"), track_meta=False))
    return out
