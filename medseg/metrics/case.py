"""Per-case evaluation: every label of a prediction against a reference, matched by name.

:func:`compute_metrics` takes two :class:`~medseg.volume.LabelVolume` (or lossless
:class:`~medseg.io.mask_folder.MaskSet`) on the same grid. Labels are matched by *name*
(case-insensitive, ``-``/``_``/space ignored: ``Optic-Nerve-Lt`` = ``optic_nerve_lt``), never by
integer id. A label named in only one input counts as empty in the other.

All labels are located in one pass (:func:`scipy.ndimage.find_objects` on each label array);
each organ pair is then cropped to the bounding box of its union before its surfaces are
extracted, so the cost scales with organ size, not image size.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from medseg.errors import GeometryError, InputError
from medseg.io.mask_folder import MaskSet
from medseg.metrics.config import MetricsConfig
from medseg.metrics.distances import (
    distance_summary,
    image_diagonal_mm,
    surface_distances,
    union_box,
)
from medseg.metrics.overlap import overlap_from_counts
from medseg.volume import LabelVolume, Volume

logger = logging.getLogger(__name__)

__all__ = [
    "CaseResult",
    "LabelMatch",
    "LabelResult",
    "compute_metrics",
    "label_key",
    "match_labels",
]

Box = tuple[slice, slice, slice]


def label_key(name: str) -> str:
    """Matching key of a label name: case-folded, without ``-``, ``_``, spaces and dots.

    Examples
    --------
    >>> label_key("Optic-Nerve-Lt") == label_key("optic_nerve_LT")
    True
    """
    return re.sub(r"[\s_\-.]+", "", name).casefold()


@dataclass(frozen=True)
class LabelMatch:
    """How the label names of a prediction and a reference pair up (see :func:`match_labels`).

    ``common`` holds the reference's spelling of each shared name; ``only_pred`` and
    ``only_ref`` the names found on one side only, each in its input's order.
    """

    common: tuple[str, ...]
    only_pred: tuple[str, ...]
    only_ref: tuple[str, ...]

    def warning(self) -> str | None:
        """One sentence naming the unmatched labels of both sides, or ``None`` if all match."""
        if not self.only_pred and not self.only_ref:
            return None
        parts = []
        if self.only_pred:
            parts.append(
                f"prediction labels {list(self.only_pred)} match no reference label (scored "
                "against an empty reference)"
            )
        if self.only_ref:
            parts.append(
                f"reference labels {list(self.only_ref)} have no prediction label of the same "
                "name (scored as missed)"
            )
        return "; ".join(parts) + ". Labels are matched by name (case, '-', '_', spaces ignored)."


def match_labels(pred_names: Iterable[str], ref_names: Iterable[str]) -> LabelMatch:
    """Pair label names by :func:`label_key`.

    Examples
    --------
    >>> m = match_labels(["brain_stem", "Lens-L"], ["Brain-Stem", "Parotid"])
    >>> m.common, m.only_pred, m.only_ref
    (('Brain-Stem',), ('Lens-L',), ('Parotid',))
    """
    pred = {label_key(n): n for n in pred_names}
    ref = {label_key(n): n for n in ref_names}
    return LabelMatch(
        common=tuple(n for k, n in ref.items() if k in pred),
        only_pred=tuple(n for k, n in pred.items() if k not in ref),
        only_ref=tuple(n for k, n in ref.items() if k not in pred),
    )


@dataclass(frozen=True)
class LabelResult:
    """Metrics of one label of one case.

    ``values`` maps metric names to floats (``None`` only for labels empty in both inputs under
    ``both_empty="exclude"``). ``missed`` is true when exactly one input is empty
    (``empty_in`` says which: ``"pred"`` = organ missed by the prediction, ``"ref"`` = organ
    predicted but absent from the reference); distances are then the stated worst case.
    """

    name: str
    values: dict[str, float | None]
    missed: bool
    empty_in: str | None

    def to_json(self) -> dict[str, Any]:
        """``{metric: value, ..., "missed": bool, "empty_in": ...}``."""
        return {**self.values, "missed": self.missed, "empty_in": self.empty_in}


@dataclass(frozen=True)
class CaseResult:
    """Metrics of every label of one case, plus what was done to get them."""

    case: str
    labels: dict[str, LabelResult]
    config: MetricsConfig
    spacing_mm: tuple[float, float, float]
    provenance: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        """The per-case entry of the ``medseg evaluate`` JSON."""
        return {
            "case": self.case,
            "labels": {n: r.to_json() for n, r in self.labels.items()},
            "spacing_mm": list(self.spacing_mm),
            "provenance": list(self.provenance),
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class _Source:
    """Uniform access to named masks: their bounding boxes and cropped boolean arrays."""

    grid: Volume
    names: dict[str, str]  # key -> display name
    boxes: dict[str, Box | None]
    crop: Callable[[str, Box], npt.NDArray[np.bool_]]


def _from_label_volume(lv: LabelVolume) -> _Source:
    arr = lv.volume.array
    if not np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.int32)
    ids = {label_key(e.name): e.id for e in lv.label_map}
    if len(ids) != len(lv.label_map):
        raise InputError(f"label names collide after normalisation: {list(lv.label_map.names)}.")
    objects = ndimage.find_objects(arr) if arr.max() > 0 else []
    boxes: dict[str, Box | None] = {}
    for key, i in ids.items():
        obj = objects[i - 1] if i - 1 < len(objects) else None
        boxes[key] = None if obj is None else (obj[0], obj[1], obj[2])
    names = {label_key(e.name): e.name for e in lv.label_map}

    def crop(key: str, box: Box) -> npt.NDArray[np.bool_]:
        return np.asarray(arr[box] == ids[key])

    return _Source(lv.volume, names, boxes, crop)


def _from_mask_set(ms: MaskSet) -> _Source:
    names = {label_key(n): n for n in ms.masks}
    if len(names) != len(ms.masks):
        raise InputError(f"mask names collide after normalisation: {list(ms.masks)}.")
    boxes = {k: ms.bounding_box(n) for k, n in names.items()}

    def crop(key: str, box: Box) -> npt.NDArray[np.bool_]:
        return ms.cropped(names[key], box)

    return _Source(ms.grid, names, boxes, crop)


def _as_source(x: LabelVolume | MaskSet) -> _Source:
    if isinstance(x, LabelVolume):
        return _from_label_volume(x)
    if isinstance(x, MaskSet):
        return _from_mask_set(x)
    raise InputError(f"expected a LabelVolume or MaskSet; got {type(x).__name__}.")


def _label_values(
    pred: _Source,
    ref: _Source,
    key: str,
    config: MetricsConfig,
    spacing: tuple[float, float, float],
) -> tuple[dict[str, float | None], str | None]:
    box_p, box_r = pred.boxes.get(key), ref.boxes.get(key)
    box = union_box(box_p, box_r)
    voxel_mm3 = float(np.prod(spacing))
    distance_keys = ("hd", config.hd_key, "assd", "masd", "nsd")
    if box is None:  # empty in both
        v: float | None = 0.0 if config.both_empty == "perfect" else None
        values = overlap_from_counts(
            0, 0, 0, voxel_mm3, both_empty_value=None if v is None else 1.0
        )
        values.update({k: v for k in distance_keys[:-1]})
        values["nsd"] = None if v is None else 1.0
        return values, "both"
    mp = pred.crop(key, box) if box_p is not None else np.zeros(_shape(box), bool)
    mr = ref.crop(key, box) if box_r is not None else np.zeros(_shape(box), bool)
    n_pred, n_ref = int(np.count_nonzero(mp)), int(np.count_nonzero(mr))
    values = overlap_from_counts(int(np.count_nonzero(mp & mr)), n_pred, n_ref, voxel_mm3)
    if n_pred == 0 or n_ref == 0:
        worst = config.worst_case_mm or image_diagonal_mm(ref.grid.shape, spacing)
        values.update({k: worst for k in distance_keys[:-1]})
        values["nsd"] = 0.0
        return values, "pred" if n_pred == 0 else "ref"
    sd = surface_distances(mp, mr, spacing, config.definition, cropped=True)  # type: ignore[arg-type]
    assert sd is not None  # both non-empty
    dist = distance_summary(
        sd,
        tolerance_mm=config.tolerance_mm,
        percentile=config.percentile,
        hd_mode=config.hd_mode,  # type: ignore[arg-type]
    )
    values.update(
        {
            "hd": dist["hd"],
            config.hd_key: dist["hd_percentile"],
            "assd": dist["assd"],
            "masd": dist["masd"],
            "nsd": dist["nsd"],
        }
    )
    return values, None


def _shape(box: Box) -> tuple[int, int, int]:
    return (box[0].stop - box[0].start, box[1].stop - box[1].start, box[2].stop - box[2].start)


def _ordered_keys(pred: _Source, ref: _Source) -> Iterator[str]:
    yield from ref.names
    yield from (k for k in pred.names if k not in ref.names)


def compute_metrics(
    pred: LabelVolume | MaskSet,
    ref: LabelVolume | MaskSet,
    *,
    config: MetricsConfig | None = None,
    case: str = "case",
    provenance: tuple[str, ...] = (),
) -> CaseResult:
    """Compare every label of ``pred`` with the same-named label of ``ref``.

    Parameters
    ----------
    pred, ref
        Prediction and reference on the same grid (checked with ``Volume.same_grid``).
    config
        Metric options (default :class:`MetricsConfig`).
    case
        Case name recorded in the result.
    provenance
        Steps already applied to the inputs (e.g. resampling), copied into the result.

    Returns
    -------
    CaseResult
        Per label: ``dice``, ``jaccard``, ``sensitivity``, ``precision``, volumes in ml,
        ``hd``, ``hd95`` (``config.hd_key``), ``assd``, ``masd``, ``nsd`` (mm; NSD in [0, 1]).

    Raises
    ------
    GeometryError
        The two inputs are not on the same grid.
    InputError
        No label name of ``pred`` matches one of ``ref`` (every score would be 0). Labels found
        on one side only are scored (as empty on the other side) and named in ``warnings``.

    Examples
    --------
    >>> from medseg.volume import LabelMap, affine_from_geometry
    >>> a = np.zeros((8, 8, 8), np.uint8); a[2:5, 2:5, 2:5] = 1
    >>> grid = affine_from_geometry((2.0, 1.0, 1.0))
    >>> p = LabelVolume(Volume(a, grid), LabelMap.from_names(["Brainstem"]))
    >>> r = LabelVolume(Volume(np.roll(a, 1, axis=2), grid), LabelMap.from_names(["brainstem"]))
    >>> res = compute_metrics(p, r, config=MetricsConfig(definition="voxel"))
    >>> round(res.labels["brainstem"].values["dice"], 4), res.labels["brainstem"].values["hd"]
    (0.6667, 1.0)
    """
    cfg = config or MetricsConfig()
    ps, rs = _as_source(pred), _as_source(ref)
    if not ps.grid.same_grid(rs.grid):
        raise GeometryError(
            f"case {case!r}: prediction grid {ps.grid!r} (origin {ps.grid.origin_mm}) differs "
            f"from reference grid {rs.grid!r} (origin {rs.grid.origin_mm}). Resample the "
            "prediction onto the reference grid (CLI: --resample-to-reference, nearest neighbour)."
        )
    match = match_labels(ps.names.values(), rs.names.values())
    if not match.common:
        raise InputError(
            f"case {case!r}: no label of the prediction matches a label of the reference by "
            f"name; prediction labels {list(match.only_pred)}, reference labels "
            f"{list(match.only_ref)}. Labels are matched by name (case, '-', '_', spaces and "
            "dots ignored), never by number; rename them so the same organ has the same name."
        )
    spacing = rs.grid.spacing_mm
    labels: dict[str, LabelResult] = {}
    for key in _ordered_keys(ps, rs):
        name = rs.names.get(key) or ps.names[key]
        values, empty = _label_values(ps, rs, key, cfg, spacing)
        labels[name] = LabelResult(
            name=name, values=values, missed=empty in ("pred", "ref"), empty_in=empty
        )
    warnings: list[str] = []
    unmatched = match.warning()
    if unmatched:
        warnings.append(f"labels: {unmatched}")
        logger.warning("case %s: %s", case, unmatched)
    for src, what in ((pred, "prediction"), (ref, "reference")):
        if isinstance(src, LabelVolume):
            warnings.extend(f"{what}: {w}" for w in src.warnings)
    return CaseResult(
        case=case,
        labels=labels,
        config=cfg,
        spacing_mm=spacing,
        provenance=tuple(provenance),
        warnings=tuple(warnings),
    )
