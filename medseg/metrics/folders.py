"""Evaluation of segmentations on disk: one prediction/reference pair, or two folders of cases.

:func:`evaluate_paths` is what ``medseg evaluate PRED REF`` runs. Each side is read by
:func:`read_segmentation`, which takes

* a label map file (NIfTI/NRRD/MHA) with its JSON sidecar of label names,
* a per-organ mask folder (read losslessly: overlapping organs allowed),
* a DICOM-SEG or RTSTRUCT file (or a folder holding exactly one), placed on the other side's
  grid, or an OpenKBP patient folder.

Two folders that are not single inputs (or ``batch=True``) are evaluated case by case, matched by
case name (sub-folder name, or file name without suffix): :func:`find_case_pairs`.

Nothing is scored silently against nothing: labels are matched by name, unmatched names on
either side are reported as warnings, and a case whose labels match none of the reference's is
an :class:`~medseg.errors.InputError` (typically a label map without its sidecar).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg.errors import GeometryError, InputError
from medseg.io.mask_folder import (
    MaskSet,
    is_mask_folder,
    list_folder,
    looks_like_mask_folder,
    read_mask_folder,
)
from medseg.metrics.case import CaseResult, LabelMatch, compute_metrics, match_labels
from medseg.metrics.config import MetricsConfig
from medseg.volume import LabelVolume, Volume

logger = logging.getLogger(__name__)

__all__ = [
    "Evaluation",
    "case_name",
    "evaluate_pair",
    "evaluate_paths",
    "find_case_pairs",
    "read_segmentation",
]

_LABEL_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: The label map ``medseg segment`` writes, always beside its ``segmentation.json``.
MEDSEG_LABEL_FILE = "segmentation.nii.gz"

Segmentation = LabelVolume | MaskSet
#: ``(case name, prediction path, reference path)``.
CasePair = tuple[str, Path, Path]


def case_name(path: str | os.PathLike[str]) -> str:
    """Case name of an input: the file name without its image suffix, or the folder name.

    Examples
    --------
    >>> case_name("preds/case_07.nii.gz"), case_name("refs/case_07")
    ('case_07', 'case_07')
    """
    name = Path(path).name
    for suffix in _LABEL_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _is_single_input(p: Path) -> bool:
    """True when ``p`` is one segmentation (a file, mask folder, OpenKBP or DICOM folder)."""
    if p.is_file():
        return True
    if not p.is_dir():
        raise InputError(f"{p}: no such file or folder.")
    entries = list_folder(p)
    if is_mask_folder(p) or (p / "ct.csv").is_file() or (p / "ct.csv.gz").is_file():
        return True
    from medseg.io.image_files import detect_file_format

    files = [f for f in entries if f.is_file() and not f.name.startswith(".")]
    return any(detect_file_format(f) == "dicom" for f in files[:20])


def find_case_pairs(
    pred_dir: str | os.PathLike[str], ref_dir: str | os.PathLike[str]
) -> tuple[list[CasePair], list[str]]:
    """Match the cases of two batch folders by name.

    A case is a sub-folder or a label file (``.nii.gz``, ``.nrrd``, ``.mha``, ``.dcm``, ...);
    hidden entries and JSON sidecars are ignored.

    Returns
    -------
    pairs, unmatched
        ``(case, pred_path, ref_path)`` in the reference folder's order, and the sorted names
        found in only one of the two folders.
    """

    def entries(d: Path) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for e in list_folder(d):
            if e.name.startswith(".") or e.name.lower().endswith(".json"):
                continue
            if e.is_dir() or e.name.lower().endswith(_LABEL_SUFFIXES):
                out[case_name(e)] = e
        return out

    pe, re_ = entries(Path(pred_dir)), entries(Path(ref_dir))
    common = [c for c in re_ if c in pe]
    unmatched = sorted(set(pe) ^ set(re_))
    return [(c, pe[c], re_[c]) for c in common], unmatched


def _dicom_label_file(folder: Path) -> Path:
    """The one SEG or RTSTRUCT file of a folder holding DICOM files."""
    from medseg.io.dicom_scan import scan_instances

    instances, _problems = scan_instances(folder)
    found = sorted(Path(h.path) for h in instances if h.modality in ("SEG", "RTSTRUCT"))
    if len(found) == 1:
        return found[0]
    if not found:
        modalities = sorted({h.modality or "(none)" for h in instances})
        raise InputError(
            f"{folder}: holds DICOM files ({', '.join(modalities)}) but no DICOM-SEG or RTSTRUCT "
            "to read labels from. Give the SEG/RTSTRUCT file, a label map or a mask folder."
        )
    raise InputError(
        f"{folder}: holds {len(found)} DICOM label objects ({', '.join(f.name for f in found)}); "
        "give the one to evaluate as a file path."
    )


def _not_a_label_folder(folder: Path) -> InputError:
    files = [e.name for e in list_folder(folder) if not e.name.startswith(".")]
    shown = ", ".join(files[:5]) + (", ..." if len(files) > 5 else "") if files else "nothing"
    return InputError(
        f"{folder}: a folder, but not a segmentation medseg can read: it holds {shown} -- no mask "
        "files (<organ>.nrrd / .nii.gz, one per organ), no DICOM-SEG/RTSTRUCT and no OpenKBP "
        "ct.csv. Give a label map file, a mask folder or a SEG/RTSTRUCT file."
    )


def _sidecar_path(path: Path) -> Path:
    """``<stem>.json`` beside a label map (where :func:`medseg.io.save_labels` writes names)."""
    name = path.name
    for suffix in _IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return path.with_name(name[: -len(suffix)] + ".json")
    return path.with_name(name + ".json")


def _check_sidecar(path: Path) -> None:
    """A medseg output label map must have its sidecar (else: an interrupted run)."""
    if path.name == MEDSEG_LABEL_FILE and not _sidecar_path(path).is_file():
        raise InputError(
            f"{path}: medseg's label map without its {_sidecar_path(path).name} (the label names "
            "and provenance written with it): an incomplete output, e.g. a run that was "
            "interrupted. Re-run medseg segment into a new folder; without the names the labels "
            "cannot be matched to the reference."
        )


def read_segmentation(
    path: str | os.PathLike[str], reference: Volume | None = None
) -> Segmentation:
    """Read one side of an evaluation (see the module docstring for what it takes).

    Parameters
    ----------
    path
        Label map file, mask folder, DICOM-SEG/RTSTRUCT file (or a folder with exactly one), or
        OpenKBP patient folder.
    reference
        The other side's grid: RTSTRUCT contours are rasterised on it, SEG frames placed on it.

    Returns
    -------
    LabelVolume or MaskSet
        Mask folders stay lossless (:class:`~medseg.io.mask_folder.MaskSet`).

    Raises
    ------
    InputError
        Missing, unreadable or unrecognised input; the message names the file and the problem.
    """
    from medseg.io import load_labels

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder.")
    if p.is_dir():
        from medseg.io.dicom_scan import contains_dicom
        from medseg.io.openkbp import is_openkbp_folder

        list_folder(p)  # a folder we cannot list is a clean error, before any reader sees it
        if is_openkbp_folder(p):
            return load_labels(p)
        if contains_dicom(p):
            return load_labels(_dicom_label_file(p), reference=reference)
        if looks_like_mask_folder(p):
            return read_mask_folder(p)
        raise _not_a_label_folder(p)
    if p.name.lower().endswith(_IMAGE_SUFFIXES):
        _check_sidecar(p)
    try:
        return load_labels(p, reference=reference)
    except PermissionError as exc:
        raise InputError(f"{p}: permission denied; make the file readable.") from exc


def _grid(x: Segmentation) -> Volume:
    return x.volume if isinstance(x, LabelVolume) else x.grid


def _names(x: Segmentation) -> tuple[str, ...]:
    return tuple(x.label_map.names) if isinstance(x, LabelVolume) else x.names


def _resample(pred: Segmentation, ref_grid: Volume) -> Segmentation:
    from medseg.preprocess import resample_to_grid

    if isinstance(pred, LabelVolume):
        vol = resample_to_grid(pred.volume, ref_grid, order=0, fill_value=0)
        return LabelVolume(vol, pred.label_map, pred.warnings)
    masks = {}
    grid = None
    for name, m in pred.masks.items():
        v = resample_to_grid(
            pred.grid.with_array(m.astype(np.uint8)), ref_grid, order=0, fill_value=0
        )
        masks[name] = np.asarray(v.array != 0)
        grid = grid or v
    if grid is None:
        raise InputError(f"{pred.source}: the mask set holds no masks to resample.")
    return MaskSet(grid=grid, masks=masks, source=pred.source)


def _unnamed_hint(path: Path, seg: Segmentation) -> str:
    if not isinstance(seg, LabelVolume) or not path.is_file():
        return ""
    if not path.name.lower().endswith(_IMAGE_SUFFIXES) or _sidecar_path(path).is_file():
        return ""
    return (
        f" {path} has no JSON sidecar ({_sidecar_path(path).name}), so its labels only have "
        "numbers; write one with the label names (medseg.io.save_labels does) or give the "
        "medseg output folder's segmentation.json beside it."
    )


def _no_match_error(
    case: str, match: LabelMatch, sides: tuple[tuple[Path, Segmentation], tuple[Path, Segmentation]]
) -> InputError:
    (pred_path, pred), (ref_path, ref) = sides
    return InputError(
        f"case {case!r}: no label of the prediction {pred_path} matches a label of the reference "
        f"{ref_path} by name; prediction labels {list(match.only_pred)}, reference labels "
        f"{list(match.only_ref)}. Labels are matched by name (case, '-', '_', spaces and dots "
        "ignored), never by number: every score would be 0."
        + _unnamed_hint(pred_path, pred)
        + _unnamed_hint(ref_path, ref)
    )


def evaluate_pair(
    pred_path: str | os.PathLike[str],
    ref_path: str | os.PathLike[str],
    *,
    config: MetricsConfig,
    case: str,
    resample_to_reference: bool = False,
) -> CaseResult:
    """Read one prediction/reference pair and compute its metrics.

    Parameters
    ----------
    pred_path, ref_path
        Anything :func:`read_segmentation` reads; the reference's RTSTRUCT/SEG is placed on the
        prediction's grid.
    config
        Metric options.
    case
        Case name recorded in the result.
    resample_to_reference
        Resample the prediction (nearest neighbour) when the grids differ, and record it.

    Raises
    ------
    GeometryError
        Different grids and ``resample_to_reference`` is false.
    InputError
        Unreadable input, or no label name in common.
    """
    pred_p, ref_p = Path(pred_path), Path(ref_path)
    pred = read_segmentation(pred_p, None)
    ref = read_segmentation(ref_p, _grid(pred))
    match = match_labels(_names(pred), _names(ref))
    if not match.common:
        raise _no_match_error(case, match, ((pred_p, pred), (ref_p, ref)))
    provenance: list[str] = []
    if not _grid(pred).same_grid(_grid(ref)):
        if not resample_to_reference:
            raise GeometryError(
                f"case {case!r}: prediction {pred_p} is on grid {_grid(pred)!r} origin "
                f"{_grid(pred).origin_mm}, reference {ref_p} on {_grid(ref)!r} origin "
                f"{_grid(ref).origin_mm}. Pass --resample-to-reference to resample the "
                "prediction (nearest neighbour) or export the prediction on the reference grid."
            )
        src = _grid(pred)
        pred = _resample(pred, _grid(ref))
        provenance.append(
            f"prediction resampled with nearest neighbour from shape {src.shape} spacing "
            f"{tuple(round(s, 4) for s in src.spacing_mm)} origin {src.origin_mm} onto the "
            f"reference grid shape {_grid(ref).shape}"
        )
        logger.warning("case %s: %s", case, provenance[-1])
    return compute_metrics(pred, ref, config=config, case=case, provenance=tuple(provenance))


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate_paths` found.

    Attributes
    ----------
    results
        One :class:`CaseResult` per evaluated case, in the reference folder's order.
    unmatched_cases
        Case names present in only one of two batch folders (skipped, with a warning).
    batch
        Whether the inputs were evaluated as two folders of cases.
    """

    results: list[CaseResult]
    unmatched_cases: list[str] = field(default_factory=list)
    batch: bool = False

    @property
    def n_missed(self) -> int:
        """Organs empty in exactly one input, over all cases."""
        return sum(lr.missed for r in self.results for lr in r.labels.values())


def evaluate_paths(
    pred: str | os.PathLike[str],
    ref: str | os.PathLike[str],
    *,
    config: MetricsConfig | None = None,
    batch: bool | None = None,
    resample_to_reference: bool = False,
    progress: Callable[[Sequence[CasePair]], Iterable[CasePair]] | None = None,
) -> Evaluation:
    """Evaluate a prediction against a reference: one case, or two folders of cases.

    Parameters
    ----------
    pred, ref
        Inputs as :func:`read_segmentation` takes them, or two folders of cases.
    config
        Metric options (default :class:`MetricsConfig`).
    batch
        ``True`` forces folder-of-cases mode, ``False`` single-case mode; ``None`` decides: two
        folders that are not single inputs are batches.
    resample_to_reference
        See :func:`evaluate_pair`.
    progress
        Wraps the iteration over cases (e.g. a progress bar); identity by default.

    Returns
    -------
    Evaluation

    Raises
    ------
    InputError
        Missing inputs, no case in common between two batch folders, unreadable input, or a
        case with no label name in common.
    GeometryError
        Grids differ and ``resample_to_reference`` is false.
    """
    cfg = config or MetricsConfig()
    pred_path, ref_path = Path(pred), Path(ref)
    for p in (pred_path, ref_path):
        if not p.exists():
            raise InputError(f"{p}: no such file or folder.")
    if batch is None:
        batch = (
            pred_path.is_dir()
            and ref_path.is_dir()
            and not _is_single_input(pred_path)
            and not _is_single_input(ref_path)
        )
    unmatched: list[str] = []
    if batch:
        pairs, unmatched = find_case_pairs(pred_path, ref_path)
        if not pairs:
            raise InputError(
                f"no case names in common between {pred_path} and {ref_path}; batch mode matches "
                "sub-folders / files by name (e.g. pred/case1.nii.gz with ref/case1/)."
            )
        for name in unmatched:
            logger.warning("case %r is present in only one of the two folders; skipped", name)
    else:
        pairs = [(case_name(ref_path), pred_path, ref_path)]
    results = [
        evaluate_pair(p, r, config=cfg, case=c, resample_to_reference=resample_to_reference)
        for c, p, r in (progress(pairs) if progress is not None else pairs)
    ]
    evaluation = Evaluation(results, unmatched, batch)
    if evaluation.n_missed:
        logger.warning(
            "%d organ(s) empty in exactly one input (counted as missed)", evaluation.n_missed
        )
    return evaluation
