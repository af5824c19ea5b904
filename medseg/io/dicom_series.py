"""Load a DICOM image series as a :class:`~medseg.volume.Volume` with exact geometry.

Steps: scan the tree (headers only, :mod:`medseg.io.dicom_scan`), skip non-image objects
(RTSTRUCT, SEG, RTPLAN, ...), select one series by explicit rules (:class:`DicomReadOptions`),
sort and check the slices (:mod:`medseg.io.dicom_geometry`), read the pixels once into one array
(uncompressed pixels straight from the file; compressed ones through pydicom's decoders, JPEG 2000
and JPEG via pylibjpeg), apply rescale slope/intercept (CT in HU) and, only when asked, fix
gantry tilt or irregular spacing, recording what was done in ``Volume.provenance``.

Selection rules (applied in this order):

1. Non-image objects are skipped (logged). A tree with no image series is an :class:`InputError`.
2. ``series_instance_uid`` (full UID or the hash shown by ``medseg info``) picks one series.
3. Instances whose ImageType contains one of ``exclude_image_types`` (default ``LOCALIZER``)
   are dropped; ``image_type`` requires values; ``orientation`` keeps one plane;
   ``acquisition_number`` keeps one acquisition.
4. Series with a modality other than ``modality`` (when set) or fewer than ``min_slices``
   slices are not candidates.
5. Among the candidates: best rank in ``modality_preference``, then most slices, then largest
   matrix, then the lowest SeriesInstanceUID (so the choice never depends on file order). The
   choice and the reason go into the Volume's ``provenance``; when the best candidates tie on
   every rule the choice is also logged as a WARNING and recorded as ambiguous (give
   ``series_instance_uid`` to choose).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.config import checked_mapping
from medseg.errors import InputError
from medseg.io.dicom_geometry import (
    SliceGeometry,
    analyze_slices,
    geometry_or_raise,
    plane_of,
    raise_problem,
)
from medseg.io.dicom_pixels import read_stack, resample_along_normal, shift_tilted_slices
from medseg.io.dicom_scan import InstanceHeader, SeriesGroup, group_series, scan_instances, uid_hash
from medseg.volume import DicomSource, Volume, orientation_code

logger = logging.getLogger(__name__)

#: Start of the selection reason (and provenance entry) when the choice between series was a tie.
AMBIGUOUS_SELECTION = "ambiguous series selection"

__all__ = [
    "AMBIGUOUS_SELECTION",
    "DicomReadOptions",
    "SeriesSummary",
    "load_dicom_series",
    "scan_dicom_tree",
]

_PLANES = ("axial", "coronal", "sagittal")


@dataclass(frozen=True)
class DicomReadOptions:
    """How to choose a series in a DICOM tree and which geometry fixes are allowed.

    Parameters
    ----------
    series_instance_uid
        Load this series (full SeriesInstanceUID, or a prefix of its hash from ``medseg info``).
    modality
        Only consider series of this modality (e.g. ``"CT"``).
    modality_preference
        Rank of modalities when several series qualify (earlier wins).
    min_slices
        Series with fewer slices are not candidates (at least 2 are needed for a volume).
    image_type
        Values that must all occur in ImageType (e.g. ``("ORIGINAL", "PRIMARY")``).
    exclude_image_types
        Instances whose ImageType contains any of these are dropped (scouts).
    orientation
        Keep only ``"axial"``, ``"coronal"`` or ``"sagittal"`` slices.
    acquisition_number
        Keep only this AcquisitionNumber (series holding several acquisitions).
    drop_duplicates
        Opt-in: keep the first instance (lowest InstanceNumber) at a repeated position.
    correct_tilt
        Opt-in: shift each slice in-plane (linear interpolation) to remove gantry tilt.
    resample_irregular
        Opt-in: interpolate along the normal onto a regular grid at the median slice step
        (fills missing slices, evens irregular spacing). Per-slice DICOM references are then
        dropped from ``Volume.source`` because slices no longer match instances.
    decode_threads
        Threads for decoding compressed pixel data.
    """

    series_instance_uid: str | None = None
    modality: str | None = None
    modality_preference: tuple[str, ...] = ("CT", "MR", "PT")
    min_slices: int = 2
    image_type: tuple[str, ...] = ()
    exclude_image_types: tuple[str, ...] = ("LOCALIZER",)
    orientation: str | None = None
    acquisition_number: int | None = None
    drop_duplicates: bool = False
    correct_tilt: bool = False
    resample_irregular: bool = False
    decode_threads: int = 2

    def __post_init__(self) -> None:
        if self.orientation is not None and self.orientation not in _PLANES:
            raise InputError(
                f"DicomReadOptions.orientation must be one of {_PLANES} or None; "
                f"got {self.orientation!r}."
            )
        if self.min_slices < 2:
            raise InputError(f"DicomReadOptions.min_slices must be ≥ 2; got {self.min_slices}.")
        if self.decode_threads < 1:
            raise InputError(f"decode_threads must be ≥ 1; got {self.decode_threads}.")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DicomReadOptions:
        """Build from a YAML/JSON mapping, rejecting unknown keys."""
        checked = checked_mapping(cls, data, what="DICOM read options", error=InputError)
        kw: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in checked.items()}
        return cls(**kw)


@dataclass(frozen=True)
class SeriesSummary:
    """One series found by :func:`scan_dicom_tree` (no patient data; UIDs hashed for display)."""

    study_hash: str
    series_hash: str
    modality: str
    n_instances: int
    is_image: bool
    shape: tuple[int, int, int] | None
    spacing_mm: tuple[float, float, float] | None
    orientation: str | None
    transfer_syntaxes: tuple[str, ...]
    problems: tuple[str, ...]
    series_instance_uid: str = field(repr=False, default="")

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly dict (without the full UID)."""
        return {
            "study": self.study_hash,
            "series": self.series_hash,
            "modality": self.modality,
            "instances": self.n_instances,
            "image": self.is_image,
            "shape": list(self.shape) if self.shape else None,
            "spacing_mm": [round(v, 5) for v in self.spacing_mm] if self.spacing_mm else None,
            "orientation": self.orientation,
            "transfer_syntaxes": list(self.transfer_syntaxes),
            "problems": list(self.problems),
        }


def _ts_name(uid: str) -> str:
    import pydicom.uid

    return str(pydicom.uid.UID(uid).name)


def scan_dicom_tree(path: str | os.PathLike[str]) -> list[SeriesSummary]:
    """Summarise every series under ``path``: modality, size, spacing, orientation, problems.

    Raises
    ------
    InputError
        No DICOM instance at all under ``path``.
    """
    instances, unreadable = scan_instances(path)
    if not instances:
        raise InputError(_no_dicom_message(Path(path), unreadable))
    out = []
    for group in group_series(instances):
        name = group.name
        images = [i for i in group.instances if i.is_image]
        problems: list[str] = []
        shape = spacing = orient = None
        if images:
            kept, _ = _filter_instances(images, DicomReadOptions(), name)
            geom = analyze_slices(kept, name) if kept else []
            plist = list(geom.problems) if isinstance(geom, SliceGeometry) else geom
            problems = [f"{p.code}: {p.message}" for p in plist]
            if isinstance(geom, SliceGeometry) and not any(
                p.code in ("duplicate_positions", "multiple_acquisitions") for p in plist
            ):
                first = geom.instances[0]
                shape = (len(geom.instances), first.rows, first.columns)
                sp = np.linalg.norm(geom.affine[:3, :3], axis=0)
                spacing = (float(sp[0]), float(sp[1]), float(sp[2]))
                orient = orientation_code(geom.affine)
        out.append(
            SeriesSummary(
                study_hash=uid_hash(group.study_instance_uid),
                series_hash=uid_hash(group.series_instance_uid),
                modality=group.modality,
                n_instances=len(group.instances),
                is_image=bool(images),
                shape=shape,
                spacing_mm=spacing,
                orientation=orient,
                transfer_syntaxes=tuple(
                    sorted({_ts_name(i.transfer_syntax_uid) for i in group.instances})
                ),
                problems=tuple(problems) + tuple(f"unreadable: {u}" for u in unreadable[:3]),
                series_instance_uid=group.series_instance_uid,
            )
        )
    return out


def _no_dicom_message(root: Path, unreadable: Sequence[str]) -> str:
    if unreadable:
        return (
            f"{root}: no readable DICOM instance; {len(unreadable)} damaged file(s): "
            f"{unreadable[0]}"
        )
    if root.is_dir() and not any(root.iterdir()):
        return f"{root}: the folder is empty. Give a folder holding a DICOM series."
    return (
        f"{root}: no DICOM files found (searched recursively). Give a DICOM series folder, "
        "a .nii/.nii.gz, .nrrd or .mha file, or an OpenKBP patient folder."
    )


def _filter_instances(
    images: list[InstanceHeader], options: DicomReadOptions, name: str
) -> tuple[list[InstanceHeader], list[str]]:
    """Apply the instance-level filters; return kept instances and notes for the log."""
    notes = []
    kept = images
    if options.exclude_image_types:
        excl = {t.upper() for t in options.exclude_image_types}
        new = [i for i in kept if not excl.intersection(i.image_type)]
        if len(new) != len(kept):
            notes.append(
                f"dropped {len(kept) - len(new)} instance(s) with ImageType {sorted(excl)}"
            )
        kept = new
    if options.image_type:
        need = {t.upper() for t in options.image_type}
        new = [i for i in kept if need.issubset(i.image_type)]
        if len(new) != len(kept):
            notes.append(
                f"dropped {len(kept) - len(new)} instance(s) lacking ImageType {sorted(need)}"
            )
        kept = new
    if options.orientation:
        new = [i for i in kept if i.orientation and plane_of(i.orientation) == options.orientation]
        if len(new) != len(kept):
            notes.append(f"dropped {len(kept) - len(new)} instance(s) not {options.orientation}")
        kept = new
    if options.acquisition_number is not None:
        new = [i for i in kept if i.acquisition_number == options.acquisition_number]
        if len(new) != len(kept):
            notes.append(
                f"kept AcquisitionNumber {options.acquisition_number} "
                f"({len(new)} of {len(kept)} instances)"
            )
        kept = new
    for note in notes:
        logger.info("%s: %s", name, note)
    return kept, notes


def _select_series(
    groups: list[SeriesGroup], options: DicomReadOptions, root: Path
) -> tuple[SeriesGroup, list[InstanceHeader], str]:
    """The series to load, its kept instances and why it was chosen."""
    image_groups = []
    for g in groups:
        if g.is_image:
            image_groups.append(g)
        else:
            logger.info(
                "%s: skipped %s (%s, %d object(s)): not an image series",
                root,
                g.name,
                g.modality,
                len(g.instances),
            )
    if not image_groups:
        mods = sorted({g.modality for g in groups})
        raise InputError(
            f"{root}: no image series, only non-image DICOM objects ({', '.join(mods)}). An "
            "RTSTRUCT/SEG/RTPLAN needs its CT/MR series: put the image files in the folder too, "
            "or load the structures with load_labels(path, reference=<image volume>)."
        )
    if options.series_instance_uid:
        want = options.series_instance_uid
        image_groups = [
            g
            for g in image_groups
            if g.series_instance_uid == want or uid_hash(g.series_instance_uid).startswith(want)
        ]
        if not image_groups:
            found = ", ".join(uid_hash(g.series_instance_uid) for g in groups)
            raise InputError(
                f"{root}: no image series matches series_instance_uid={want!r}; "
                f"series found (hashes): {found}. Run `medseg info {root}` to list them."
            )
    candidates = []
    rejected = []
    for g in image_groups:
        kept, _ = _filter_instances([i for i in g.instances if i.is_image], options, g.name)
        if options.modality and g.modality != options.modality.upper():
            rejected.append(f"{g.name}: modality {g.modality} ≠ {options.modality}")
        elif len(kept) < options.min_slices:
            rejected.append(f"{g.name}: {len(kept)} slice(s) < min_slices={options.min_slices}")
        else:
            candidates.append((g, kept))
    if not candidates:
        if len(image_groups) == 1 and not options.modality:
            g = image_groups[0]
            kept, _ = _filter_instances([i for i in g.instances if i.is_image], options, g.name)
            if len(kept) == 1:
                blocking = analyze_slices(kept, g.name)
                if isinstance(blocking, list) and blocking:
                    raise_problem(blocking[0])
        raise InputError(
            f"{root}: no series matches the selection rules ({'; '.join(rejected)}). "
            "Relax DicomReadOptions (modality, min_slices, image_type, orientation)."
        )
    pref = [m.upper() for m in options.modality_preference]

    def rank(item: tuple[SeriesGroup, list[InstanceHeader]]) -> tuple[int, int, int]:
        g, kept = item
        m = pref.index(g.modality) if g.modality in pref else len(pref)
        return (m, -len(kept), -(kept[0].rows * kept[0].columns))

    candidates.sort(key=lambda item: (*rank(item), item[0].series_instance_uid))
    chosen, kept = candidates[0]
    ties = [g for g, k in candidates[1:] if rank((g, k)) == rank(candidates[0])]
    if len(candidates) == 1:
        why = "only candidate"
    elif ties:
        why = (
            f"{AMBIGUOUS_SELECTION}: {len(ties) + 1} series are equally good by modality "
            f"preference, slice count and matrix ({chosen.name}, "
            f"{', '.join(g.name for g in ties)}); chose {chosen.name}, the lowest "
            "SeriesInstanceUID. Give series_instance_uid to choose another."
        )
        logger.warning("%s: %s", root, why)
    else:
        why = f"best of {len(candidates)} by modality preference {pref}, then slice count"
    logger.info(
        "%s: chose %s (%s, %d slices): %s", root, chosen.name, chosen.modality, len(kept), why
    )
    return chosen, kept, why


def _dedupe(geom: SliceGeometry) -> list[InstanceHeader]:
    kept: list[InstanceHeader] = []
    last = None
    for inst, s in zip(geom.instances, geom.positions_mm, strict=True):
        if last is None or s - last >= 1e-3:
            kept.append(inst)
            last = s
    return kept


def load_dicom_series(
    path: str | os.PathLike[str], *, options: DicomReadOptions | None = None
) -> Volume:
    """Load one image series from a DICOM folder (searched recursively) or file.

    Parameters
    ----------
    path
        Folder holding the series (other series and RT objects may be present) or one file of
        the series (its folder is then not searched: a single slice is an error).
    options
        Selection rules and opt-in fixes.

    Returns
    -------
    Volume
        Axes (slice, row, column) sorted along the slice normal; affine to LPS mm with the
        first slice's ImagePositionPatient as origin; CT in HU (int16 when exact, else float32);
        ``source`` holds the UIDs and per-slice SOPInstanceUIDs/files; ``provenance`` lists the
        series chosen and every fix applied.

    Raises
    ------
    InputError
        No image series, missing pixel data or geometry tags, single slice, unreadable files.
    GeometryError
        Tilt, gaps, irregular spacing, mixed orientation/matrix, duplicates, several
        acquisitions, unless the matching opt-in fix is enabled.
    """
    options = options or DicomReadOptions()
    root = Path(path)
    instances, unreadable = scan_instances(root)
    if not instances:
        raise InputError(_no_dicom_message(root, unreadable))
    group, kept, why = _select_series(group_series(instances), options, root)
    name = group.name
    provenance = [f"DICOM {name} ({group.modality}) from {len(kept)} instance(s): {why}"]
    if why.startswith(AMBIGUOUS_SELECTION):
        provenance.append(why)
    geom = geometry_or_raise(kept, name)
    if options.drop_duplicates and any(p.code == "duplicate_positions" for p in geom.problems):
        deduped = _dedupe(geom)
        provenance.append(
            f"drop_duplicates: kept {len(deduped)} of {len(kept)} instances (first per position)"
        )
        logger.warning("%s: %s", name, provenance[-1])
        geom = geometry_or_raise(deduped, name)
    for p in geom.problems:
        if not (p.fix and getattr(options, p.fix, False) is True):
            raise_problem(p)
    if unreadable:
        logger.warning("%s: %d unreadable file(s) in the tree were skipped", root, len(unreadable))
    array = read_stack(geom.instances, threads=options.decode_threads, name=name)
    affine = geom.affine
    per_slice_refs = True
    codes = {p.code for p in geom.problems}
    if "gantry_tilt" in codes:
        array = shift_tilted_slices(array, geom.tilt_offsets_mm, geom.instances[0].pixel_spacing)
        found = next(p for p in geom.problems if p.code == "gantry_tilt").message
        what = found.split(". Pass")[0].split(": ", 1)[-1]
        provenance.append(f"correct_tilt: slices shifted in-plane onto an orthogonal grid ({what})")
        logger.warning("%s: corrected gantry tilt", name)
        span = float(geom.positions_mm[-1] - geom.positions_mm[0])
        affine = affine.copy()
        affine[:3, 0] = geom.normal * span / (len(geom.positions_mm) - 1)
    if codes & {"missing_slices", "irregular_spacing"}:
        array, step = resample_along_normal(array, geom.positions_mm)
        affine = affine.copy()
        affine[:3, 0] = geom.normal * step
        per_slice_refs = False
        provenance.append(
            f"resample_irregular: {len(geom.positions_mm)} slices interpolated (linear) onto "
            f"{array.shape[0]} slices {step:g} mm apart; per-slice DICOM references dropped"
        )
        logger.warning("%s: %s", name, provenance[-1])
    first = geom.instances[0]
    refs = geom.instances if per_slice_refs else ()
    source = DicomSource(
        study_instance_uid=group.study_instance_uid,
        series_instance_uid=group.series_instance_uid,
        frame_of_reference_uid=first.frame_of_reference_uid,
        sop_class_uid=first.sop_class_uid,
        sop_instance_uids=tuple(i.sop_instance_uid for i in refs),
        files=tuple(i.path for i in refs),
    )
    fors = {i.frame_of_reference_uid for i in geom.instances}
    if len(fors) > 1:
        logger.warning("%s: %d different FrameOfReferenceUIDs in one series", name, len(fors))
    return Volume(
        array, affine, modality=group.modality, source=source, provenance=tuple(provenance)
    )
