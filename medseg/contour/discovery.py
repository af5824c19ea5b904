"""Find the studies in a batch's inputs and choose the planning CT series of each.

Inputs are DICOM trees (any layout: patients, studies and series mixed, shuffled file names,
RTSTRUCT/RTPLAN/SEG/scouts beside the CTs), NIfTI/NRRD/MHA files, OpenKBP patient folders (or a
folder of them), and CSV files listing such inputs (a ``path`` column; relative paths are
relative to the CSV). DICOM headers are read once with :func:`medseg.io.dicom_scan.scan_instances`
and grouped by series with :func:`medseg.io.dicom_scan.group_series`; series are then grouped by
StudyInstanceUID (a study split over several input folders is one study).

Each study becomes one :class:`StudyPlan`: its key (from UID hashes, never a patient identifier),
the files of the chosen series, why it was chosen, why every other series was not, the
reference RTSTRUCT/SEG files that point at it, and an input fingerprint for resume.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.contour.config import SelectionRules
from medseg.errors import InputError
from medseg.io.dicom_geometry import SliceGeometry, analyze_slices, plane_of
from medseg.io.dicom_scan import InstanceHeader, SeriesGroup, group_series, scan_instances, uid_hash

logger = logging.getLogger(__name__)

__all__ = [
    "SeriesChoice",
    "StudyPlan",
    "choose_series",
    "discover_studies",
    "file_key",
]

_IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass(frozen=True)
class SeriesChoice:
    """The outcome of the selection rules for one study's series."""

    chosen: SeriesGroup | None
    instances: tuple[InstanceHeader, ...]
    reason: str
    rejected: dict[str, str]  # series hash → why it was not chosen


@dataclass(frozen=True)
class StudyPlan:
    """One study of the batch, as discovered (paths only; nothing is loaded).

    Attributes
    ----------
    key
        Output folder name: ``<study hash>-<series hash>`` for DICOM (hashes of the UIDs),
        ``f-<path hash>`` for files; no patient identifier.
    kind
        ``"dicom"``, ``"file"`` (NIfTI/NRRD/MHA) or ``"openkbp"``.
    files
        DICOM: the chosen series' instance files; otherwise the one input path.
    fingerprint
        SHA-256 of what identifies the input's content (SOPInstanceUIDs and file sizes of the
        chosen series and references; for files: path, size, modification time).
    skip_reason
        Set when the study has nothing to segment (e.g. an RTSTRUCT without its CT).
    """

    key: str
    kind: str
    files: tuple[str, ...]
    fingerprint: str
    study_hash: str = ""
    series_hash: str = ""
    series_instance_uid: str = ""
    selection_reason: str = ""
    rejected: dict[str, str] = field(default_factory=dict)
    references: tuple[str, ...] = ()
    skip_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Non-identifying summary (hashes, reasons) for the manifest and provenance."""
        return {
            "key": self.key,
            "kind": self.kind,
            "study": self.study_hash,
            "series": self.series_hash,
            "instances": len(self.files) if self.kind == "dicom" else None,
            "selection_reason": self.selection_reason,
            "not_chosen": dict(self.rejected),
            "references": len(self.references),
        }


def file_key(path: str | os.PathLike[str]) -> str:
    """Study key of a non-DICOM input: ``f-`` + hash of its absolute path.

    Examples
    --------
    >>> file_key("/data/a.nii.gz") == file_key("/data/./a.nii.gz"), file_key("/x")[:2]
    (True, 'f-')
    """
    text = os.path.abspath(os.fspath(path))
    return "f-" + hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:14]


def _sha(parts: Iterable[str]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8", "replace"))
        h.update(b"\0")
    return h.hexdigest()


def _slice_spacing(geom: SliceGeometry | list[Any]) -> float | None:
    if not isinstance(geom, SliceGeometry) or len(geom.positions_mm) < 2:
        return None
    return float(np.median(np.diff(geom.positions_mm)))


def choose_series(groups: Sequence[SeriesGroup], rules: SelectionRules) -> SeriesChoice:
    """Apply the selection rules to the series of one study.

    Parameters
    ----------
    groups
        The study's series (image and non-image).
    rules
        See :class:`~medseg.contour.config.SelectionRules` (rules and tie-break).

    Returns
    -------
    SeriesChoice
        ``chosen`` is ``None`` when no series qualifies; ``reason`` then says why.
    """
    rejected: dict[str, str] = {}
    candidates: list[tuple[tuple[Any, ...], SeriesGroup, list[InstanceHeader], float | None]] = []
    excl = set(rules.exclude_image_types)
    for g in groups:
        h = uid_hash(g.series_instance_uid)
        if not g.is_image:
            rejected[h] = f"not an image series ({g.modality}, {len(g.instances)} object(s))"
            continue
        if g.modality not in rules.modalities:
            rejected[h] = f"modality {g.modality} not in {list(rules.modalities)}"
            continue
        images = [i for i in g.instances if i.is_image]
        kept = [i for i in images if not excl.intersection(i.image_type)]
        if not kept:
            rejected[h] = f"all {len(images)} instance(s) have ImageType in {sorted(excl)} (scout)"
            continue
        missing = [t for t in rules.require_image_type if not all(t in i.image_type for i in kept)]
        if missing:
            rejected[h] = f"ImageType lacks {missing}"
            continue
        if rules.orientation:
            planes = {plane_of(i.orientation) for i in kept if i.orientation}
            if planes and planes != {rules.orientation}:
                rejected[h] = f"{'/'.join(sorted(planes))} slices, not {rules.orientation}"
                continue
        if len(kept) < rules.min_slices:
            rejected[h] = f"{len(kept)} slice(s) < min_slices {rules.min_slices}"
            continue
        spacing = _slice_spacing(analyze_slices(kept, g.name))
        if spacing is not None and spacing > rules.max_slice_spacing_mm + 1e-6:
            rejected[h] = (
                f"slice spacing {spacing:.3g} mm > max_slice_spacing_mm "
                f"{rules.max_slice_spacing_mm:g}"
            )
            continue
        original = all("ORIGINAL" in i.image_type for i in kept)
        rank = (
            0 if original else 1,
            -len(kept),
            spacing if spacing is not None else float("inf"),
            -(kept[0].rows * kept[0].columns),
            h,
        )
        candidates.append((rank, g, kept, spacing))
    if not candidates:
        why = "; ".join(f"series {h}: {r}" for h, r in rejected.items()) or "no series"
        return SeriesChoice(None, (), f"no series matches the selection rules ({why})", rejected)
    candidates.sort(key=lambda c: c[0])
    _, chosen, kept, spacing = candidates[0]
    apart = f"{spacing:.3g} mm apart" if spacing is not None else "spacing not determined"
    desc = f"{chosen.modality}, {len(kept)} slices, {apart}"
    if len(candidates) == 1:
        reason = f"only candidate ({desc})"
    else:
        reason = (
            f"best of {len(candidates)} candidates ({desc}) by ImageType ORIGINAL, slice count, "
            "slice spacing, matrix size"
        )
        for _, g, k, _ in candidates[1:]:
            rejected[uid_hash(g.series_instance_uid)] = (
                f"candidate ranked lower ({len(k)} slices) than series "
                f"{uid_hash(chosen.series_instance_uid)}"
            )
    return SeriesChoice(chosen, tuple(kept), reason, rejected)


def _referenced_series(path: str) -> set[str]:
    """SeriesInstanceUIDs an RTSTRUCT or SEG refers to (empty when it names none)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:
        logger.warning("reference object unreadable (%s); not used", type(exc).__name__)
        return set()
    out: set[str] = set()
    for fr in getattr(ds, "ReferencedFrameOfReferenceSequence", []) or []:
        for st in getattr(fr, "RTReferencedStudySequence", []) or []:
            for se in getattr(st, "RTReferencedSeriesSequence", []) or []:
                out.add(str(getattr(se, "SeriesInstanceUID", "")))
    for se in getattr(ds, "ReferencedSeriesSequence", []) or []:
        out.add(str(getattr(se, "SeriesInstanceUID", "")))
    return out - {""}


def _dicom_plans(instances: list[InstanceHeader], rules: SelectionRules) -> list[StudyPlan]:
    by_study: dict[str, list[SeriesGroup]] = defaultdict(list)
    for g in group_series(instances):
        by_study[g.study_instance_uid].append(g)
    plans = []
    for study_uid, groups in by_study.items():
        s_hash = uid_hash(study_uid)
        choice = choose_series(groups, rules)
        if choice.chosen is None:
            non_image = sorted({g.modality for g in groups if not g.is_image})
            reason = choice.reason
            if not any(g.is_image for g in groups):
                reason = (
                    f"no image series in the study, only {', '.join(non_image)}; nothing to "
                    "segment (add the CT series to the input)"
                )
            plans.append(
                StudyPlan(
                    key=f"{s_hash}-none",
                    kind="dicom",
                    files=(),
                    fingerprint=_sha(
                        sorted(i.sop_instance_uid for g in groups for i in g.instances)
                    ),
                    study_hash=s_hash,
                    rejected=choice.rejected,
                    skip_reason=reason,
                )
            )
            continue
        chosen = choice.chosen
        ref_insts = [
            inst
            for g in groups
            if g.modality in ("RTSTRUCT", "SEG")
            for inst in g.instances
            if chosen.series_instance_uid in _referenced_series(inst.path)
        ]
        refs = [i.path for i in ref_insts]
        sizes = [f"{i.sop_instance_uid}:{i.file_size}" for i in choice.instances] + [
            f"ref:{i.sop_instance_uid}:{i.file_size}" for i in ref_insts
        ]
        se_hash = uid_hash(chosen.series_instance_uid)
        plans.append(
            StudyPlan(
                key=f"{s_hash}-{se_hash}",
                kind="dicom",
                files=tuple(i.path for i in choice.instances),
                fingerprint=_sha(sorted(sizes)),
                study_hash=s_hash,
                series_hash=se_hash,
                series_instance_uid=chosen.series_instance_uid,
                selection_reason=choice.reason,
                rejected=choice.rejected,
                references=tuple(sorted(refs)),
            )
        )
    return plans


def _file_plan(path: Path, kind: str) -> StudyPlan:
    files = sorted(p for p in path.iterdir() if p.is_file()) if kind == "openkbp" else [path]
    parts = []
    for f in files:
        st = f.stat()
        parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return StudyPlan(
        key=file_key(path),
        kind=kind,
        files=(os.fspath(path),),
        fingerprint=_sha([os.path.abspath(path), *parts]),
        selection_reason=f"{kind} input",
    )


def _csv_inputs(path: Path) -> list[Path]:
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "path" not in rows[0]:
        raise InputError(
            f"{path}: a list of inputs must be a CSV with a 'path' column (one input per row)."
        )
    return [(path.parent / r["path"]).resolve() for r in rows if (r.get("path") or "").strip()]


def _is_image_file(p: Path) -> bool:
    return p.name.lower().endswith(_IMAGE_SUFFIXES)


def _expand(inputs: Sequence[str | os.PathLike[str]]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Split inputs into DICOM roots and (path, kind) single-study inputs."""
    from medseg.io.openkbp import is_openkbp_folder

    dicom_roots: list[Path] = []
    singles: list[tuple[Path, str]] = []
    queue = [Path(p) for p in inputs]
    while queue:
        p = queue.pop(0)
        if not p.exists():
            raise InputError(f"input {p}: no such file or folder.")
        if p.is_file():
            if p.suffix.lower() == ".csv" and p.name.lower() not in ("ct.csv",):
                queue.extend(_csv_inputs(p))
            elif _is_image_file(p):
                singles.append((p, "file"))
            else:
                dicom_roots.append(p)
            continue
        if is_openkbp_folder(p):
            singles.append((p, "openkbp"))
            continue
        subs = sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
        kbp = [d for d in subs if is_openkbp_folder(d)]
        if kbp:
            singles.extend((d, "openkbp") for d in kbp)
            continue
        for dirpath, dirnames, filenames in os.walk(p):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            found = [Path(dirpath) / f for f in sorted(filenames)]
            singles.extend((f, "file") for f in found if _is_image_file(f))
        dicom_roots.append(p)
    return dicom_roots, singles


def discover_studies(
    inputs: Sequence[str | os.PathLike[str]],
    rules: SelectionRules | None = None,
    *,
    exclude: Sequence[str | os.PathLike[str]] = (),
) -> list[StudyPlan]:
    """Find every study under ``inputs`` and plan what to segment (headers only).

    Parameters
    ----------
    inputs
        DICOM trees/files, NIfTI/NRRD/MHA files, OpenKBP folders, CSV lists of inputs.
    rules
        Series selection rules.
    exclude
        Folders whose files are ignored (the batch's own output folder).

    Returns
    -------
    list of StudyPlan
        Sorted by key. Files that look like DICOM but cannot be parsed are skipped (counted in
        the log, never named: their path could identify a patient).

    Raises
    ------
    InputError
        An input does not exist, or nothing at all was found.
    """
    rules = rules or SelectionRules()
    roots, singles = _expand(inputs)
    skip = [os.path.abspath(e) + os.sep for e in exclude]
    instances: list[InstanceHeader] = []
    n_bad = 0
    seen: set[str] = set()
    for root in roots:
        found, problems = scan_instances(root)
        n_bad += len(problems)
        for inst in found:
            ap = os.path.abspath(inst.path)
            if ap in seen or any(ap.startswith(s) for s in skip):
                continue
            seen.add(ap)
            instances.append(inst)
    if n_bad:
        logger.warning("%d DICOM file(s) could not be parsed and were skipped", n_bad)
    plans = _dicom_plans(instances, rules)
    plans.extend(
        _file_plan(p, kind)
        for p, kind in singles
        if not any(os.path.abspath(p).startswith(s) for s in skip)
    )
    if not plans:
        raise InputError(
            "no study found in the inputs (no DICOM instance, NIfTI/NRRD/MHA file or OpenKBP "
            "folder). Check the paths given to medseg contour."
        )
    by_key: dict[str, StudyPlan] = {}
    for plan in plans:
        by_key.setdefault(plan.key, plan)
    logger.info("discovered %d studies from %d DICOM instance(s)", len(by_key), len(instances))
    return sorted(by_key.values(), key=lambda p: p.key)
