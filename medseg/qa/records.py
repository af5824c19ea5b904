"""What the report knows about each study of a batch: :class:`StudyRecord`.

Records come from the batch manifest (``OUT/manifest.sqlite``, :func:`records_from_manifest`)
or, without one, from the study folders (``OUT/studies/<key>/segmentation.json``,
:func:`records_from_folders`). Where the CT and the reference contours of a study are is
not in the manifest (it holds no paths: they could identify a patient); the batch runner passes
its study plans (:class:`StudySources`), or ``medseg report OUT --inputs ...`` discovers them
again.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.volume import LabelVolume, Volume

logger = logging.getLogger(__name__)

__all__ = [
    "StudyRecord",
    "StudySources",
    "load_study_image",
    "load_study_reference",
    "records_from_folders",
    "records_from_manifest",
    "sources_from_plans",
]

_TIMINGS = ("load_s", "predict_s", "write_s", "total_s")


@dataclass(frozen=True)
class StudySources:
    """Where a study's image and reference contours are (paths; optional for the report).

    Attributes
    ----------
    kind
        ``"dicom"``, ``"file"`` or ``"openkbp"`` (as in the batch's study plans).
    files
        DICOM: the series' instance files; otherwise the one input path (an OpenKBP folder or
        a file inside it).
    references
        RTSTRUCT/SEG files with reference contours on that image (OpenKBP: its OAR files).
    series_instance_uid
        The chosen DICOM series.
    """

    kind: str
    files: tuple[str, ...]
    references: tuple[str, ...] = ()
    series_instance_uid: str = ""


@dataclass(frozen=True)
class StudyRecord:
    """One row of the batch page.

    Attributes
    ----------
    key
        Study key (output folder name; no patient identifier).
    state, reason
        Batch state (``done``, ``failed``, ``skipped``, ``pending``, ``running``) and why.
    timings
        Seconds: ``load_s``, ``predict_s``, ``write_s``, ``total_s`` (when known).
    output_dir
        ``OUT/studies/<key>`` (may not exist for failed studies).
    metrics
        Organ → {"dice", "hd95", ...} against the reference (or empty).
    attempts
        Attempts over all runs.
    finished_at
        UTC ISO time the study finished (for the throughput plot), or ``""``.
    sources
        Image and references, when known.
    identifiers
        Patient/study identifiers, shown only with ``show_identifiers``.
    """

    key: str
    state: str
    reason: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    output_dir: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    finished_at: str = ""
    sources: StudySources | None = None
    identifiers: dict[str, str] = field(default_factory=dict)

    @property
    def segmentation(self) -> Path | None:
        """The study's ``segmentation.nii.gz`` when it exists."""
        if self.output_dir is None:
            return None
        p = self.output_dir / "segmentation.nii.gz"
        return p if p.is_file() else None


def sources_from_plans(plans: Iterable[Any]) -> dict[str, StudySources]:
    """Key → :class:`StudySources` from the batch runner's study plans (duck-typed).

    Each plan needs ``key``, ``kind``, ``files`` and (optionally) ``references`` and
    ``series_instance_uid``, as :class:`medseg.contour.StudyPlan` has.
    """
    return {
        str(p.key): StudySources(
            str(p.kind),
            tuple(str(f) for f in p.files),
            tuple(str(f) for f in getattr(p, "references", ()) or ()),
            str(getattr(p, "series_instance_uid", "") or ""),
        )
        for p in plans
    }


def _json(text: Any) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def read_sidecar(folder: Path) -> dict[str, Any]:
    """A study folder's ``segmentation.json`` as a dict (``{}`` when missing or unreadable)."""
    try:
        data = json.loads((folder / "segmentation.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _damaged_outputs(folder: Path) -> str:
    """Why a ``done`` study's outputs cannot be reviewed ('' when they can).

    The report must not show such a study as done without flags: it is listed as failed with
    this reason (and a warning is logged).
    """
    side = folder / "segmentation.json"
    problem = ""
    if not (folder / "segmentation.nii.gz").is_file():
        problem = "its segmentation.nii.gz is missing"
    else:
        try:
            data = json.loads(side.read_text())
            if not isinstance(data, dict):
                problem = "its segmentation.json is not a JSON object"
        except (OSError, ValueError) as exc:
            problem = f"its segmentation.json cannot be read ({exc})"
    if problem:
        problem += (
            "; the study's outputs are damaged: delete the study folder and run medseg contour "
            "again to redo it"
        )
        logger.warning("study %s: %s", folder.name, problem)
    return problem


def _identifiers(side: Mapping[str, Any]) -> dict[str, str]:
    inp = side.get("input", {}) if isinstance(side.get("input"), dict) else {}
    out = {
        "study_instance_uid": str(inp.get("study_instance_uid") or ""),
        "series_instance_uid": str(inp.get("series_instance_uid") or ""),
        "input": str(inp.get("path") or ""),
    }
    return {k: v for k, v in out.items() if v}


def records_from_manifest(
    out_dir: str | os.PathLike[str], sources: Mapping[str, StudySources] | None = None
) -> list[StudyRecord]:
    """One record per study row of ``OUT/manifest.sqlite`` (read-only).

    Raises
    ------
    InputError
        No manifest in ``out_dir``.
    """
    from medseg.contour import MANIFEST_NAME, Manifest

    out = Path(out_dir)
    records = []
    with Manifest(out / MANIFEST_NAME, readonly=True) as manifest:
        finished = {}
        for a in manifest.attempts():
            if a.get("state") in ("done", "reused") and a.get("finished_at"):
                finished[a["key"]] = str(a["finished_at"])
        for row in manifest.studies():
            key = str(row["key"])
            folder = out / "studies" / key
            side = read_sidecar(folder)
            metrics = _json(row.get("metrics_json")) or side.get("reference_metrics") or {}
            state, reason = str(row["state"]), str(row.get("reason") or "")
            damaged = _damaged_outputs(folder) if state == "done" else ""
            if damaged:
                state, reason = "failed", damaged
            records.append(
                StudyRecord(
                    key=key,
                    state=state,
                    reason=reason,
                    timings={t: float(row[t]) for t in _TIMINGS if row.get(t) is not None},
                    output_dir=None if damaged else folder,
                    metrics=metrics if isinstance(metrics, dict) else {},
                    attempts=int(row.get("attempts") or 0),
                    finished_at=finished.get(key, str(row.get("updated_at") or "")),
                    sources=(sources or {}).get(key),
                    identifiers=_identifiers(side),
                )
            )
    return records


def records_from_folders(
    out_dir: str | os.PathLike[str], sources: Mapping[str, StudySources] | None = None
) -> list[StudyRecord]:
    """One ``done`` record per ``OUT/studies/<key>/`` holding a ``segmentation.json``."""
    out = Path(out_dir) / "studies"
    records = []
    for folder in sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")):
        side = read_sidecar(folder)
        if not side:
            if (folder / "segmentation.json").exists() or (folder / "segmentation.nii.gz").exists():
                records.append(
                    StudyRecord(
                        key=folder.name,
                        state="failed",
                        reason=_damaged_outputs(folder),
                    )
                )
            continue
        damaged = _damaged_outputs(folder)
        if damaged:
            records.append(StudyRecord(key=folder.name, state="failed", reason=damaged))
            continue
        timings = side.get("timings", {}) if isinstance(side.get("timings"), dict) else {}
        metrics = side.get("reference_metrics") or {}
        mtime = (folder / "segmentation.json").stat().st_mtime
        import datetime as _dt

        records.append(
            StudyRecord(
                key=folder.name,
                state="done",
                timings={t: float(timings[t]) for t in _TIMINGS if t in timings},
                output_dir=folder,
                metrics=metrics if isinstance(metrics, dict) else {},
                attempts=1,
                finished_at=_dt.datetime.fromtimestamp(mtime, _dt.UTC).isoformat(),
                sources=(sources or {}).get(folder.name),
                identifiers=_identifiers(side),
            )
        )
    return records


def _openkbp_folder(src: StudySources) -> Path:
    p = Path(src.files[0])
    return p if p.is_dir() else p.parent


def load_study_image(src: StudySources) -> Volume:
    """The study's CT (HU) as the batch segmented it."""
    from medseg.io import load_volume

    if src.kind == "openkbp":
        from medseg.io.openkbp import load_openkbp_ct

        return load_openkbp_ct(_openkbp_folder(src))
    if src.kind != "dicom" or len(src.files) == 1:
        return load_volume(src.files[0])
    import tempfile

    from medseg.io import DicomReadOptions
    from medseg.io.dicom_series import load_dicom_series

    options = DicomReadOptions(series_instance_uid=src.series_instance_uid or None, min_slices=2)
    with tempfile.TemporaryDirectory(prefix="medseg-report-") as tmp:
        for i, f in enumerate(src.files):
            os.symlink(os.path.abspath(f), os.path.join(tmp, f"{i:05d}.dcm"))
        return load_dicom_series(tmp, options=options)


def load_study_reference(
    src: StudySources, image: Volume, labels: tuple[str, ...]
) -> LabelVolume | None:
    """Reference contours of the model's ``labels`` on the image grid, or ``None``.

    OpenKBP: the organ files present (an organ without a file was not contoured and is left
    out). DICOM: the first RTSTRUCT/SEG, structures matched by the TG-263 name map.
    """
    import numpy as np

    from medseg.volume import LabelMap

    if src.kind == "openkbp":
        from medseg.io.openkbp import load_openkbp_labels, openkbp_available_labels

        folder = _openkbp_folder(src)
        have = openkbp_available_labels(folder, labels)
        if not have:
            return None
        lv = load_openkbp_labels(folder, list(labels))
        keep = np.isin(lv.array, [lv.label_map.id_of(n) for n in have])
        arr = np.where(keep, lv.array, 0).astype(np.uint8)
        return LabelVolume(lv.volume.with_array(arr), lv.label_map)
    if not src.references:
        return None
    from medseg.contour import TG263_NAME_MAP, match_names
    from medseg.errors import MedsegError
    from medseg.io.dicom_labels import load_dicom_labels

    try:
        ref = load_dicom_labels(src.references[0], image)
    except MedsegError as exc:
        logger.warning("reference contours unreadable: %s", exc)
        return None
    matched = match_names(list(ref.label_map.names), list(labels), TG263_NAME_MAP)
    label_map = LabelMap.from_names(list(labels))
    arr = np.zeros(ref.array.shape, np.uint8)
    for ref_name, name in matched.items():
        arr[ref.array == ref.label_map.id_of(ref_name)] = label_map.id_of(name)
    if not arr.any():
        return None
    return LabelVolume(ref.volume.with_array(arr), label_map)
