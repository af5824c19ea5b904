"""Cases, folds and MONAI dictionary transforms over :mod:`medseg.preprocess` functions.

The deterministic part (load → reorient → resample → crop to body → window HU) is cached by
``monai.data.CacheDataset``; the random part samples foreground-weighted patches and augments.
Training and inference share :func:`medseg.preprocess.apply_spec` and
:func:`medseg.preprocess.normalise_hu`, so a checkpoint's PreprocessingSpec is all the Predictor
needs.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from monai.transforms import MapTransform, Randomizable

from medseg.errors import ConfigError
from medseg.io.atomic import write_atomic
from medseg.io.openkbp import (
    is_openkbp_folder,
    load_openkbp_ct,
    load_openkbp_labels,
    openkbp_available_labels,
)
from medseg.preprocess import PreprocessingSpec, apply_spec, body_bounding_box, crop, normalise_hu
from medseg.training.config import DataConfig, OptimConfig

logger = logging.getLogger(__name__)

__all__ = [
    "Case",
    "ClassBalancedCropd",
    "LoadOpenKBPd",
    "PrepareCased",
    "availability_vector",
    "deterministic_transforms",
    "discover_cases",
    "label_only_transforms",
    "list_cases",
    "random_transforms",
    "split_cases",
]


def list_cases(root: str | Path) -> list[str]:
    """Sorted names of OpenKBP patient folders (with ``ct.csv`` or ``ct.csv.gz``) under ``root``."""
    cases = sorted(p.name for p in Path(root).iterdir() if is_openkbp_folder(p))
    if not cases:
        raise ConfigError(f"{root}: no OpenKBP patient folders (with ct.csv) found.")
    return cases


@dataclass(frozen=True)
class Case:
    """One training patient: its name, folder and the organs it has contours for."""

    id: str
    folder: str
    available: tuple[str, ...]


def _csv_availability(path: str, labels: Sequence[str]) -> dict[str, tuple[str, ...]]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "patient" not in rows[0]:
        raise ConfigError(f"{path}: availability CSV needs a 'patient' column and 0/1 columns.")
    missing = [n for n in labels if n not in rows[0]]
    out = {}
    for row in rows:
        values = {n: str(row.get(n, "")).strip() for n in labels}
        bad = {n: v for n, v in values.items() if n not in missing and v not in ("0", "1")}
        if bad:
            raise ConfigError(f"{path}: patient {row['patient']}: values must be 0 or 1; {bad}.")
        out[row["patient"]] = tuple(n for n in labels if values.get(n) == "1")
    return out


def discover_cases(data: DataConfig) -> list[Case]:
    """Every patient under ``data.roots`` with the organs it has contours for.

    Availability comes from the files present (``data.availability == "files"``) or from a
    CSV; a CSV that claims an organ whose file is missing is an error (it would teach the
    network that the organ is absent).

    Raises
    ------
    ConfigError
        No patients, the same patient name under two roots, or CSV/file disagreement.
    """
    from_csv = (
        None if data.availability == "files" else _csv_availability(data.availability, data.labels)
    )
    cases: dict[str, Case] = {}
    for root in data.roots:
        for name in list_cases(root):
            folder = str(Path(root) / name)
            if name in cases:
                raise ConfigError(
                    f"patient {name} is in two data roots ({cases[name].folder} and {folder}); "
                    "patient names must be unique over data.root and data.extra_roots."
                )
            present = openkbp_available_labels(folder, data.labels)
            available = present
            if from_csv is not None and name in from_csv:
                available = from_csv[name]
                claimed = sorted(set(available) - set(present))
                if claimed:
                    raise ConfigError(
                        f"{data.availability}: patient {name} is listed with {claimed} but "
                        f"{folder} has no file for them; fix the CSV."
                    )
            cases[name] = Case(name, folder, available)
    if not cases:
        raise ConfigError(f"no patients under {', '.join(data.roots)}.")
    return [cases[k] for k in sorted(cases)]


def availability_vector(case: Case, labels: Sequence[str]) -> np.ndarray:
    """``(K + 1,)`` bool: background (always) and, per label, whether ``case`` has it.

    Examples
    --------
    >>> availability_vector(Case("pt_1", "/x", ("B",)), ["A", "B"]).tolist()
    [True, False, True]
    """
    return np.array([True, *(n in case.available for n in labels)], dtype=bool)


def split_cases(cases: Sequence[str], data: DataConfig) -> tuple[list[str], list[str]]:
    """(train, validation) case names (see :class:`DataConfig`).

    With ``data.val_cases`` those cases validate and every other case trains (a fixed
    validation set); otherwise fold ``data.fold`` of ``data.folds`` validates.

    Examples
    --------
    >>> from medseg.training.config import DataConfig
    >>> tr, va = split_cases([f"pt_{i}" for i in range(10)], DataConfig(folds=5, fold=0))
    >>> len(tr), len(va), sorted(set(tr) & set(va))
    (8, 2, [])
    >>> split_cases(["a", "b", "c"], DataConfig(val_cases=("b",)))
    (['a', 'c'], ['b'])
    """
    ordered = sorted(cases)
    if data.val_cases:
        unknown = sorted(set(data.val_cases) - set(ordered))
        if unknown:
            raise ConfigError(f"data.val_cases {unknown} are not among the patients found.")
        val = sorted(data.val_cases)
        train = [c for c in ordered if c not in set(val)]
        if data.max_cases:
            train = train[: data.max_cases]
        return train, val
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
    """``{"case": folder}`` → adds ``"ct"`` (Volume, HU) and ``"labels"`` (Volume of ids).

    Label ids follow ``labels`` (id ``i + 1`` for ``labels[i]``); organs without a contour file
    (partially contoured patients) stay empty without a warning: the loss knows which organs
    each patient has (``"available"``).
    """

    def __init__(self, labels: Sequence[str]) -> None:
        super().__init__(keys=("case",))
        self.labels = tuple(labels)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        d["ct"] = load_openkbp_ct(d["case"])
        present = openkbp_available_labels(d["case"], self.labels)
        if not present:
            d["labels"] = d["ct"].with_array(np.zeros(d["ct"].shape, np.uint8), modality="SEG")
            return d
        lv = load_openkbp_labels(d["case"], present)
        lut = np.zeros(len(present) + 1, np.uint8)
        for i, name in enumerate(present, start=1):
            lut[i] = self.labels.index(name) + 1
        d["labels"] = lv.volume.with_array(lut[lv.volume.array])
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
        d["hu"] = ct.array
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
    from monai.transforms import EnsureTyped, SpatialPadd

    return [
        LoadLabelsOnlyd(data.labels, spec, margin=16),
        SpatialPadd(keys="label", spatial_size=spec.roi_size, mode="constant"),
        patch_sampler(("label",), spec, optim, 0.9),
        EnsureTyped(keys="label", track_meta=False),
    ]


class CachedPreparedd(MapTransform):
    """Load + prepare a case (:class:`LoadOpenKBPd` then :class:`PrepareCased`), with a disk cache.

    The prepared arrays (HU rounded to int16 on the model grid, labels uint8) are stored in
    ``cache_dir`` as ``<case>-<key>.npz``, the key hashing the case folder, the label names and
    the preprocessing, so a later run (or a resumed one) skips parsing the CSVs. No cache
    when ``cache_dir`` is empty.
    """

    def __init__(self, data: DataConfig, spec: PreprocessingSpec) -> None:
        super().__init__(keys=("case",))
        self.load = LoadOpenKBPd(data.labels)
        self.prepare = PrepareCased(spec, data.body_threshold_hu, data.body_margin)
        self.spec = spec
        self.cache_dir = Path(data.cache_dir) if data.cache_dir else None
        self.key_base = json.dumps(
            [list(data.labels), spec.to_json(), data.body_threshold_hu, data.body_margin],
            sort_keys=True,
        )

    def _path(self, case: str) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(f"{Path(case).resolve()}|{self.key_base}".encode()).hexdigest()
        return self.cache_dir / f"{Path(case).name}-{digest[:16]}.npz"

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        path = self._path(d["case"])
        if path is not None and path.is_file():
            with np.load(path) as z:
                hu, label, affine = z["hu"], z["label"], z["affine"]
        else:
            d = self.prepare(self.load(d))
            hu = np.rint(d.pop("hu")).astype(np.int16)
            label, affine = d["label"][0], d["affine"]
            if path is not None:
                write_atomic(
                    path, lambda tmp: np.savez_compressed(tmp, hu=hu, label=label, affine=affine)
                )
        d["image"] = normalise_hu(hu.astype(np.float32), self.spec.window_hu)[None]
        d["label"] = np.asarray(label, dtype=np.uint8)[None]
        d["affine"] = affine
        d.pop("hu", None)
        return d


def deterministic_transforms(data: DataConfig, spec: PreprocessingSpec) -> list[Any]:
    """Cached part of the pipeline (on disk too when ``data.cache_dir`` is set)."""
    return [CachedPreparedd(data, spec)]


class ClassBalancedCropd(Randomizable, MapTransform):
    """Patches centred on an organ chosen uniformly among those the case has (nnU-Net's sampling).

    For each of ``num_samples`` patches: with probability ``pos_fraction`` pick one of the
    organs present in the case's label map, each equally likely, and centre the patch on a
    random voxel of it; otherwise centre it on a random voxel of the map. Centring on a random
    *foreground voxel* instead (``RandCropByPosNegLabeld``) picks organs in proportion to their
    volume: on OpenKBP's 4 mm grid the mandible alone has a median 5.6 times the esophagus's
    voxels, so a small organ is seldom the centre of a patch. Organs a partially contoured case
    has no contour for are simply not present, so they are never chosen.

    Output: a list of ``num_samples`` dictionaries with ``keys`` cropped to ``spatial_size``
    (inputs at least that large, e.g. after ``SpatialPadd``), like MONAI's multi-sample crops.
    """

    def __init__(
        self,
        keys: Sequence[str],
        label_key: str,
        spatial_size: Sequence[int],
        num_samples: int,
        pos_fraction: float,
    ) -> None:
        MapTransform.__init__(self, keys)
        if not 0.0 <= pos_fraction <= 1.0:
            raise ValueError(f"pos_fraction must be in [0, 1]; got {pos_fraction}.")
        self.label_key = label_key
        self.spatial_size = tuple(int(v) for v in spatial_size)
        self.num_samples = int(num_samples)
        self.pos_fraction = float(pos_fraction)

    def picks(self, label: np.ndarray) -> list[tuple[int, tuple[int, ...]]]:
        """``num_samples`` draws of (organ id, voxel) for a channel-less map; organ 0: anywhere."""
        flat = label.reshape(-1)
        present = [int(c) for c in np.flatnonzero(np.bincount(flat)[1:]) + 1]  # linear time
        out: list[tuple[int, tuple[int, ...]]] = []
        for _ in range(self.num_samples):
            if present and self.R.rand() < self.pos_fraction:
                organ = present[self.R.randint(len(present))]
                where = np.flatnonzero(flat == organ)
                voxel = np.unravel_index(int(where[self.R.randint(len(where))]), label.shape)
                out.append((organ, tuple(int(v) for v in voxel)))
            else:
                out.append((0, tuple(int(self.R.randint(n)) for n in label.shape)))
        return out

    def centres(self, label: np.ndarray) -> list[tuple[int, ...]]:
        """Patch centres for :meth:`picks`, shifted so that each patch lies inside the map.

        The shift is less than half a patch, so the picked voxel stays inside its patch.
        """
        half = [s // 2 for s in self.spatial_size]
        return [
            tuple(
                int(min(max(c, h), n - (s - h)))
                for c, h, s, n in zip(voxel, half, self.spatial_size, label.shape, strict=True)
            )
            for _, voxel in self.picks(label)
        ]

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        d = dict(data)
        label = np.asarray(d[self.label_key])[0]
        if any(n < s for n, s in zip(label.shape, self.spatial_size, strict=True)):
            raise ValueError(
                f"ClassBalancedCropd: map {label.shape} smaller than the patch {self.spatial_size}"
                " (pad first)."
            )
        samples = []
        for centre in self.centres(label):
            box = tuple(
                slice(c - s // 2, c - s // 2 + s)
                for c, s in zip(centre, self.spatial_size, strict=True)
            )
            sample = dict(d)
            for key in self.key_iterator(d):
                sample[key] = d[key][(slice(None), *box)]
            samples.append(sample)
        return samples


def patch_sampler(
    keys: Sequence[str], spec: PreprocessingSpec, optim: OptimConfig, pos_fraction: float
) -> Any:
    """The configured patch sampler (``optim.sampling``): per voxel or per organ (class)."""
    from monai.transforms import RandCropByPosNegLabeld

    if optim.sampling == "class":
        return ClassBalancedCropd(
            keys=keys,
            label_key="label",
            spatial_size=spec.roi_size,
            num_samples=optim.samples_per_case,
            pos_fraction=pos_fraction,
        )
    pos = max(1e-3, pos_fraction)
    return RandCropByPosNegLabeld(
        keys=keys,
        label_key="label",
        spatial_size=spec.roi_size,
        pos=pos,
        neg=max(1e-3, 1.0 - pos),
        num_samples=optim.samples_per_case,
        allow_smaller=False,
    )


def _light_augmentation() -> list[Any]:
    """Small rotations (±8°) and scaling (±10 %) at p 0.3, intensity scale/shift, noise."""
    from monai.transforms import (
        RandAffined,
        RandGaussianNoised,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    return [
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


def _strong_augmentation() -> list[Any]:
    """nnU-Net's default augmentation, without mirroring, on the [0, 1]-windowed image.

    Rotation ±30° about each axis and scaling 0.7–1.4 (each p 0.2), Gaussian noise (p 0.1),
    Gaussian blur σ 0.5–1 voxel (p 0.2), brightness ×0.75–1.25 (p 0.15), contrast ×0.75–1.25
    about the mean (p 0.15), simulated low resolution (down by up to 2×, p 0.25), gamma 0.7–1.5
    (p 0.3). Noise is scaled to the windowed range (σ ≤ 0.03, nnU-Net's variance ≤ 0.1 on
    z-scored data). No mirroring: a left–right flip swaps the parotids, and the other axes'
    mirrors are anatomy a CT never shows (the predictor's TTA refuses undeclared mirrors).
    """
    from monai.transforms import (
        RandAdjustContrastd,
        RandAffined,
        RandGaussianNoised,
        RandGaussianSmoothd,
        RandScaleIntensityd,
        RandScaleIntensityFixedMeand,
        RandSimulateLowResolutiond,
    )

    return [
        RandAffined(
            keys=("image", "label"),
            prob=0.2,
            rotate_range=(np.deg2rad(30),) * 3,
            mode=("bilinear", "nearest"),
            padding_mode="border",
        ),
        RandAffined(
            keys=("image", "label"),
            prob=0.2,
            scale_range=((-0.3, 0.4),) * 3,
            mode=("bilinear", "nearest"),
            padding_mode="border",
        ),
        RandGaussianNoised(keys="image", std=0.03, prob=0.1),
        RandGaussianSmoothd(
            keys="image", sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0), prob=0.2
        ),
        RandScaleIntensityd(keys="image", factors=0.25, prob=0.15),
        RandScaleIntensityFixedMeand(keys="image", factors=0.25, preserve_range=True, prob=0.15),
        RandSimulateLowResolutiond(keys="image", zoom_range=(0.5, 1.0), prob=0.25),
        RandAdjustContrastd(keys="image", gamma=(0.7, 1.5), prob=0.3),
    ]


def random_transforms(spec: PreprocessingSpec, optim: OptimConfig) -> list[Any]:
    """Foreground-weighted patch sampling and (optional) augmentation.

    Sampling per ``optim.sampling``: ``voxel`` centres ``pos_fraction`` of the patches on a random
    contoured voxel, ``class`` on a random voxel of an organ chosen uniformly among those the case
    has (:class:`ClassBalancedCropd`). Augmentation per ``optim.augmentation`` when
    ``optim.augment``: ``light`` (:func:`_light_augmentation`) or ``strong`` (nnU-Net's,
    :func:`_strong_augmentation`). No left–right flips in either: they would swap LeftParotid and
    RightParotid.
    """
    from monai.transforms import EnsureTyped, SpatialPadd

    out: list[Any] = [
        SpatialPadd(keys=("image", "label"), spatial_size=spec.roi_size, mode="constant"),
        patch_sampler(("image", "label"), spec, optim, optim.pos_fraction),
    ]
    if optim.augment:
        out += _strong_augmentation() if optim.augmentation == "strong" else _light_augmentation()
    out.append(EnsureTyped(keys=("image", "label"), track_meta=False))
    return out
