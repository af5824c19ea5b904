"""Segment one study into an output folder: the one path behind every "segment" job.

:func:`segment_study` is what ``medseg segment``, the batch runner and a Python caller use:

1. check the output folder can be written (before any work);
2. load the image (or take an already loaded :class:`~medseg.volume.Volume`) and check that it
   is what the model expects (modality and Hounsfield range; :func:`check_modality`);
3. predict with a :class:`~medseg.inference.Predictor` (the model is loaded by the caller, once);
4. write the label map (NIfTI), DICOM-SEG and RTSTRUCT as asked, and the provenance sidecar
   ``segmentation.json``, into a hidden folder that is renamed into place as a whole
   (:func:`medseg.io.atomic.write_folder_atomic`): after a kill at any moment the output folder
   is complete or absent.

Output folder layout (:data:`OUTPUT_FILES`)::

    OUT/segmentation.nii.gz   label map on the input's grid (always)
    OUT/segmentation.json     label names/colours/codes + provenance (always)
    OUT/seg.dcm               DICOM Segmentation (format "seg", DICOM input only)
    OUT/rtstruct.dcm          RT Structure Set (format "rtstruct", DICOM input only)
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.errors import ConfigError, InputError
from medseg.volume import LabelVolume, Volume

if TYPE_CHECKING:
    from medseg.inference import Predictor

logger = logging.getLogger(__name__)

__all__ = [
    "FORMATS",
    "OUTPUT_FILES",
    "StudyOptions",
    "StudyResult",
    "check_modality",
    "check_output_folder",
    "is_complete_output",
    "parse_formats",
    "segment_study",
]

#: Output formats; NIfTI is always written.
FORMATS = ("nifti", "seg", "rtstruct")
#: File name of each output in a study folder.
OUTPUT_FILES = {
    "nifti": "segmentation.nii.gz",
    "json": "segmentation.json",
    "seg": "seg.dcm",
    "rtstruct": "rtstruct.dcm",
}
#: Modalities a CT model accepts without an override.
CT_MODALITIES = ("CT",)


def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    """Parse a format list (``"seg,rtstruct"`` or a sequence); NIfTI is always included.

    Examples
    --------
    >>> parse_formats("seg, nifti")
    ('nifti', 'seg')
    >>> parse_formats(["rtstruct"])
    ('nifti', 'rtstruct')
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [t.strip().lower() for t in items if t.strip()]
    unknown = [t for t in names if t not in FORMATS]
    if unknown:
        raise ConfigError(f"format: unknown {unknown}; choose from {', '.join(FORMATS)}.")
    return tuple(f for f in FORMATS if f in names or f == "nifti")


@dataclass(frozen=True)
class StudyOptions:
    """What :func:`segment_study` writes and accepts.

    Parameters
    ----------
    formats
        Outputs besides the always-written NIfTI + JSON (see :data:`FORMATS`).
    overwrite
        Replace an existing output folder (only one that holds medseg outputs or is empty).
    allow_modality
        Segment input that does not look like CT in Hounsfield units (another DICOM modality,
        or a value range without air); the override is recorded in the provenance.
    """

    formats: tuple[str, ...] = ("nifti",)
    overwrite: bool = False
    allow_modality: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", parse_formats(self.formats))


@dataclass(frozen=True)
class StudyResult:
    """What :func:`segment_study` produced.

    Attributes
    ----------
    output_dir
        The complete output folder.
    files
        Format (``"nifti"``, ``"json"``, ``"seg"``, ``"rtstruct"``) → path.
    labels
        The label map on the input's grid (kept in memory for callers that score it).
    timings
        Seconds: ``load_s``, ``predict_s``, ``write_s``, ``total_s`` (and the predictor's stages).
    warnings
        Everything a reviewer should know (empty body, removed organs, laterality, overrides).
    provenance
        The content of ``segmentation.json`` besides the label list.
    timeline
        Wall-clock (``time.time()``, seconds since the epoch) start and end of each stage:
        ``load``, ``predict`` (includes waiting for a shared predictor), ``write``; comparable
        across the processes of one machine (the batch benchmark uses them).
    """

    output_dir: Path
    files: dict[str, Path]
    labels: LabelVolume
    timings: dict[str, float]
    warnings: tuple[str, ...]
    provenance: dict[str, Any] = field(repr=False)
    timeline: dict[str, tuple[float, float]] = field(default_factory=dict, repr=False)


def check_output_folder(output_dir: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Fail early, with the fix, when ``output_dir`` cannot receive a study's outputs.

    Checks (before any loading or prediction): no regular file in the way, a file can really be
    created in the nearest existing parent (permissions, read-only mounts), and an existing
    output folder is replaced only with ``overwrite`` and only when it holds medseg outputs (or
    nothing). Leftovers of a killed earlier run for the same folder are cleaned up first.

    Raises
    ------
    InputError
        With what is wrong and how to fix it.
    """
    from medseg.io.atomic import clean_stale_folders

    out = Path(output_dir)
    clean_stale_folders(out)  # a killed earlier run's temporary folder, or its moved-aside outputs
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder; choose another output folder.")
    parent = out
    while not parent.exists():
        if parent.parent == parent:
            break
        parent = parent.parent
    if parent != out and not parent.is_dir():
        raise InputError(
            f"output {out}: {parent} is a file, so no folder can be made under it; choose another "
            "output folder."
        )
    writable_dir = out.parent if out.exists() else parent
    _probe_writable(writable_dir, out)
    if out.is_dir():
        try:
            entries = [p.name for p in out.iterdir()]
        except PermissionError as exc:
            raise InputError(f"output {out}: cannot list it ({exc.strerror}).") from exc
        if entries and not overwrite:
            raise InputError(
                f"output folder {out} already exists and is not empty; pass --overwrite "
                "(overwrite=True) to replace it, or choose another output folder."
            )
        if entries and OUTPUT_FILES["json"] not in entries:
            raise InputError(
                f"output folder {out} holds files that are not medseg outputs "
                f"({', '.join(sorted(entries)[:5])}); medseg replaces only its own output "
                "folders. Choose a new or empty output folder."
            )
    return out


def _probe_writable(folder: Path, out: Path) -> None:
    """Create and remove a file in ``folder`` (permissions, read-only mounts, full quotas)."""
    import tempfile

    try:
        fd, name = tempfile.mkstemp(prefix=".medseg-write-test-", dir=folder)
    except OSError as exc:
        raise InputError(
            f"output {out}: cannot write in {folder} ({exc.strerror or exc}); choose a writable "
            "output folder or fix its permissions."
        ) from exc
    os.close(fd)
    os.unlink(name)


def is_complete_output(output_dir: str | os.PathLike[str]) -> bool:
    """True when ``output_dir`` holds every file its ``segmentation.json`` lists.

    Folders written by :func:`segment_study` are complete by construction; this also
    recognises output sets written by hand or by older versions that a kill left incomplete.
    """
    import json

    out = Path(output_dir)
    side = out / OUTPUT_FILES["json"]
    try:
        data = json.loads(side.read_text())
    except (OSError, ValueError):
        return False
    outputs = data.get("outputs") if isinstance(data, dict) else None
    if not isinstance(outputs, dict) or not outputs:
        return False
    return all((out / str(name)).is_file() for name in outputs.values())


def check_modality(volume: Volume) -> str | None:
    """Why ``volume`` does not look like a CT in Hounsfield units (``None`` when it does).

    A DICOM modality other than CT is reported; for inputs without one (NIfTI, NRRD) the value
    range is checked on a subsample: a CT in HU contains air (≤ −700 HU) and bone or soft
    tissue (≥ 0 HU) and no values below −1100 HU beyond padding.

    Examples
    --------
    >>> import numpy as np
    >>> from medseg.volume import Volume
    >>> ct = np.full((4, 8, 8), -1000.0, np.float32); ct[:, 2:6, 2:6] = 40.0
    >>> check_modality(Volume(ct, np.eye(4), modality="CT")) is None
    True
    >>> print(check_modality(Volume(ct, np.eye(4), modality="MR")))
    the input is a MR series; this model was trained on CT
    >>> print(check_modality(Volume(ct + 1024.0, np.eye(4))))  # doctest: +ELLIPSIS
    values 24..1064 do not look like CT in Hounsfield units (no air ≤ -700 HU)...
    """
    modality = (volume.modality or "OT").upper()
    if modality not in ("OT", *CT_MODALITIES):
        return f"the input is a {modality} series; this model was trained on CT"
    a = volume.array
    step = max(1, int(np.ceil((a.size / 2e6) ** (1.0 / 3.0))))
    sample = np.asarray(a[::step, ::step, ::step], dtype=np.float32)
    lo, hi = float(sample.min()), float(sample.max())
    if lo > -700.0 or hi < 0.0:
        return (
            f"values {lo:g}..{hi:g} do not look like CT in Hounsfield units (no "
            f"{'air ≤ -700 HU' if lo > -700.0 else 'tissue ≥ 0 HU'}); an MR or PET image, or a "
            "CT stored without its rescale (HU + 1024)"
        )
    return None


def _load(source: str | os.PathLike[str] | Volume) -> tuple[Volume, str]:
    if isinstance(source, Volume):
        return source, "<in memory>"
    from medseg.io import load_volume

    return load_volume(source), os.fspath(source)


def _no_dicom(formats: Sequence[str], input_name: str) -> None:
    raise InputError(
        f"--format {','.join(formats)} needs a DICOM input to reference; {input_name} is not a "
        "DICOM series. Use --format nifti, or convert the image to DICOM first."
    )


def _provenance(
    volume: Volume,
    input_name: str,
    predictor: Predictor,
    options: StudyOptions,
    modality_override: str | None,
) -> dict[str, Any]:
    from medseg import __version__

    cfg = predictor.config
    src = volume.source
    return {
        "medseg_version": __version__,
        "model": {
            "name": predictor.name,
            "version": predictor.version,
            "sha256": predictor.model_sha256,
            "preprocessing": predictor.spec.to_json(),
        },
        "input": {
            "path": input_name,
            "shape": list(volume.shape),
            "spacing_mm": [round(s, 6) for s in volume.spacing_mm],
            "orientation": volume.orientation,
            "modality": volume.modality,
            "reader": list(volume.provenance),
            "study_instance_uid": src.study_instance_uid if src else None,
            "series_instance_uid": src.series_instance_uid if src else None,
            "modality_override": modality_override,
        },
        "inference": {
            "device": str(predictor.device),
            "overlap": cfg.overlap,
            "tta": cfg.tta,
            "precision": predictor.precision,
            "accumulator": cfg.accumulator,
            "windows_run": predictor.last_windows.get("run", 0),
            "windows_skipped": predictor.last_windows.get("skipped", 0),
        },
        # per organ: the network's expected Dice (and TTA disagreement), for the review flags
        "quality": predictor.last_quality,
        "outputs": {f: OUTPUT_FILES[f] for f in options.formats},
    }


def segment_study(
    source: str | os.PathLike[str] | Volume,
    output_dir: str | os.PathLike[str],
    predictor: Predictor,
    *,
    options: StudyOptions | None = None,
    provenance: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> StudyResult:
    """Segment one CT and write its complete output folder atomically.

    Parameters
    ----------
    source
        A DICOM folder/file, NIfTI/NRRD/MHA file or OpenKBP folder, or a loaded Volume (HU).
    output_dir
        The study's output folder (created; see the module docstring for its files).
    predictor
        A loaded :class:`~medseg.inference.Predictor` (reuse one for many studies).
    options
        Formats, overwrite and modality override (:class:`StudyOptions`).
    provenance
        Extra entries merged into ``segmentation.json`` (e.g. the batch runner's series
        selection reason); they cannot replace the keys this function writes.
    progress
        ``progress(windows_done, windows_total)`` during prediction.

    Returns
    -------
    StudyResult

    Raises
    ------
    InputError
        Output folder not writable or already there (without ``overwrite``), DICOM outputs asked
        for a non-DICOM input, input that is not CT (without ``allow_modality``), unreadable or
        broken input (from the readers).
    """
    opts = options or StudyOptions()
    t0 = time.perf_counter()
    e_load = time.time()  # wall-clock stage stamps for StudyResult.timeline
    out = check_output_folder(output_dir, overwrite=opts.overwrite)
    dicom_formats = [f for f in opts.formats if f in ("seg", "rtstruct")]
    if dicom_formats and not isinstance(source, Volume):
        from medseg.io import detect_path_kind

        if detect_path_kind(source) not in ("dicom", "dicom_folder"):
            _no_dicom(dicom_formats, os.fspath(source))  # before loading anything
    volume, input_name = _load(source)
    if dicom_formats and volume.source is None:
        _no_dicom(dicom_formats, input_name)
    # what the reader chose or fixed (ambiguous series choice, tilt, gaps) is for the reviewer
    warnings: list[str] = list(volume.provenance[1:]) if volume.source is not None else []
    problem = check_modality(volume)
    override = None
    if problem is not None:
        if not opts.allow_modality:
            raise InputError(
                f"{input_name}: {problem}. Give a CT in Hounsfield units, or pass "
                "--allow-modality (allow_modality=True) to segment it anyway (recorded in the "
                "output's provenance)."
            )
        override = problem
        warnings.append(f"modality override: {problem}; segmented anyway (allow_modality)")
    t_load = time.perf_counter() - t0

    e_predict = time.time()
    t1 = time.perf_counter()
    labels = predictor.predict(volume, progress=progress)
    t_predict = time.perf_counter() - t1

    e_write = time.time()
    t2 = time.perf_counter()
    record = _provenance(volume, input_name, predictor, opts, override)
    for key, value in (provenance or {}).items():
        if key in record:
            raise ConfigError(f"provenance key {key!r} is reserved by segment_study.")
        record[key] = value
    labels = LabelVolume(labels.volume, labels.label_map, (*labels.warnings, *warnings))
    timings = {
        "load_s": round(t_load, 3),
        **{f"{k}_s": round(v, 3) for k, v in predictor.last_timings.items() if k != "total"},
        "predict_s": round(t_predict, 3),
    }
    files = _write_outputs(
        labels, volume, out, predictor=predictor, opts=opts, record=record, timings=timings, t0=t0
    )
    t_write = time.perf_counter() - t2
    timings = dict(record["timings"], write_s=round(t_write, 3))
    timings["total_s"] = round(time.perf_counter() - t0, 3)
    e_end = time.time()
    timeline = {
        "load": (e_load, e_predict),
        "predict": (e_predict, e_write),
        "write": (e_write, e_end),
    }
    logger.info("study written to %s in %.1f s", out, timings["total_s"])
    return StudyResult(out, files, labels, timings, labels.warnings, record, timeline)


def _write_outputs(
    labels: LabelVolume,
    volume: Volume,
    out: Path,
    *,
    predictor: Predictor,
    opts: StudyOptions,
    record: dict[str, Any],
    timings: dict[str, float],
    t0: float,
) -> dict[str, Path]:
    from medseg.io import save_labels
    from medseg.io.atomic import write_folder_atomic

    t2 = time.perf_counter()
    try:
        with write_folder_atomic(out, replace=opts.overwrite) as tmp:
            if "seg" in opts.formats or "rtstruct" in opts.formats:
                _write_dicom(labels, volume, tmp, predictor, opts)
            record["timings"] = {
                **timings,
                "export_dicom_s": round(time.perf_counter() - t2, 3),
                "total_s": round(time.perf_counter() - t0, 3),  # before the NIfTI is written
            }
            save_labels(labels, tmp / OUTPUT_FILES["nifti"], extra=record)
    except FileExistsError as exc:
        raise InputError(
            f"output folder {out} appeared while this study was running (another process?); "
            "pass --overwrite or choose another output folder."
        ) from exc
    return {f: out / OUTPUT_FILES[f] for f in (*opts.formats, "json")}


def _write_dicom(
    labels: LabelVolume, volume: Volume, folder: Path, predictor: Predictor, opts: StudyOptions
) -> None:
    from medseg import __version__
    from medseg.export import SeriesInfo, write_dicom_seg, write_rtstruct

    kw: dict[str, Any] = {
        "info": SeriesInfo(algorithm_name=f"medseg {predictor.name}", algorithm_version=__version__)
    }
    if "seg" in opts.formats:
        write_dicom_seg(labels, volume, folder / OUTPUT_FILES["seg"], **kw)
    if "rtstruct" in opts.formats:
        write_rtstruct(labels, volume, folder / OUTPUT_FILES["rtstruct"], **kw)
