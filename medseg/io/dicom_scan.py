"""Scan a folder tree for DICOM instances and group them into series (headers only).

Each file is read once with its pixel data *deferred* (pydicom ``defer_size``): the header is
parsed, the pixel data bytes are not read, but their file offset and length are kept so that
:mod:`medseg.io.dicom_series` can read uncompressed pixels straight into the output array.

Nothing here logs or returns patient identifiers: series and studies are named by a short hash
of their UID (:func:`uid_hash`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import struct
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pydicom.tag
import pydicom.uid
from pydicom.errors import BytesLengthException, InvalidDicomError

from medseg.errors import InputError

logger = logging.getLogger(__name__)

__all__ = [
    "NON_IMAGE_MODALITIES",
    "InstanceHeader",
    "SeriesGroup",
    "UnreadablePathError",
    "check_readable",
    "contains_dicom",
    "group_series",
    "read_instance_header",
    "scan_instances",
    "uid_hash",
    "unreadable",
]

#: Modalities of DICOM objects that are not image slices of a volume.
NON_IMAGE_MODALITIES = frozenset(
    {"RTSTRUCT", "SEG", "RTPLAN", "RTDOSE", "RTRECORD", "SR", "PR", "KO", "REG", "DOC", "RWV"}
)

#: SOP classes that are never image slices (RT objects, SEG, SR, presentation states ...).
_NON_IMAGE_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.481.",  # RT objects (structure set, plan, dose, records)
    "1.2.840.10008.5.1.4.1.1.66.",  # SEG, registration, surface, fiducials
    "1.2.840.10008.5.1.4.1.1.88.",  # structured reports
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated documents
)

_HEADER_TAGS_DEFER = 2048  # bytes; larger values (pixel data, big sequences) are not read

#: Transfer syntaxes whose PixelData bytes lie in the file as stored (offset/length usable).
_NATIVE_TRANSFER_SYNTAXES = frozenset(
    {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
)

#: What pydicom (and the raw-byte field parsing below) raise on damaged header bytes; found by
#: fuzzing real headers (tests/io/test_fuzz_scan.py, docs/reliability.md). Each becomes an
#: InputError naming the file.
_HEADER_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    ValueError,  # includes UnicodeDecodeError
    KeyError,
    TypeError,
    AttributeError,
    IndexError,
    OverflowError,
    NotImplementedError,
    struct.error,
    BytesLengthException,
    RecursionError,
)


def uid_hash(uid: str, length: int = 10) -> str:
    """Short, stable, non-identifying name for a UID (hex SHA-256 prefix).

    Examples
    --------
    >>> uid_hash("1.2.3")
    'c47f5b18b8'
    >>> len(uid_hash("1.2.3", length=6))
    6
    """
    return hashlib.sha256(uid.encode("ascii", "replace")).hexdigest()[:length]


@dataclass(frozen=True)
class InstanceHeader:
    """The header fields of one DICOM instance that series assembly needs.

    Geometry fields are ``None`` when absent or unparsable; ``warnings`` lists tolerated header
    problems. ``pixel_offset``/``pixel_length`` locate uncompressed pixel bytes in the file
    (``None`` for encapsulated/compressed data or when there is no PixelData).
    """

    path: str
    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    modality: str
    transfer_syntax_uid: str
    image_type: tuple[str, ...] = ()
    position: tuple[float, float, float] | None = None
    orientation: tuple[float, float, float, float, float, float] | None = None
    pixel_spacing: tuple[float, float] | None = None
    rows: int = 0
    columns: int = 0
    number_of_frames: int = 1
    samples_per_pixel: int = 1
    bits_allocated: int = 0
    bits_stored: int = 0
    pixel_representation: int = 0
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    acquisition_number: int | None = None
    instance_number: int | None = None
    has_pixel_data: bool = False
    pixel_offset: int | None = None
    pixel_length: int | None = None
    file_size: int = 0
    warnings: tuple[str, ...] = ()

    @property
    def is_image(self) -> bool:
        """True for an instance that can be a slice of a volume."""
        if self.modality.upper() in NON_IMAGE_MODALITIES:
            return False
        return not self.sop_class_uid.startswith(_NON_IMAGE_SOP_PREFIXES)

    @property
    def truncated(self) -> bool:
        """True when the uncompressed pixel data run past the end of the file."""
        if self.pixel_offset is None or self.pixel_length is None:
            return False
        return self.pixel_offset + self.pixel_length > self.file_size


@dataclass
class SeriesGroup:
    """All instances of one SeriesInstanceUID found in a tree, plus what was skipped."""

    study_instance_uid: str
    series_instance_uid: str
    instances: list[InstanceHeader] = field(default_factory=list)

    @property
    def modality(self) -> str:
        """Most common modality of the instances."""
        mods = [i.modality for i in self.instances]
        return max(set(mods), key=mods.count) if mods else ""

    @property
    def is_image(self) -> bool:
        """True when the series holds image slices (not RTSTRUCT/SEG/RTPLAN...)."""
        return any(i.is_image for i in self.instances)

    @property
    def name(self) -> str:
        """Non-identifying name used in messages: ``series <hash>``."""
        if not self.series_instance_uid:
            return f"series {uid_hash('')} (no SeriesInstanceUID)"
        return f"series {uid_hash(self.series_instance_uid)}"


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    try:
        vals = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if len(vals) != n or not all(math.isfinite(v) for v in vals):
        return None
    return vals


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


_STR, _US = "str", "us"
#: Header fields read straight from the raw element bytes (pydicom's value conversion is the
#: slow part of a header scan; these are simple strings and unsigned shorts).
_FIELDS: dict[str, tuple[int, str]] = {
    "SOPInstanceUID": (0x00080018, _STR),
    "SOPClassUID": (0x00080016, _STR),
    "StudyInstanceUID": (0x0020000D, _STR),
    "SeriesInstanceUID": (0x0020000E, _STR),
    "FrameOfReferenceUID": (0x00200052, _STR),
    "Modality": (0x00080060, _STR),
    "ImageType": (0x00080008, _STR),
    "ImagePositionPatient": (0x00200032, _STR),
    "ImageOrientationPatient": (0x00200037, _STR),
    "PixelSpacing": (0x00280030, _STR),
    "RescaleSlope": (0x00281053, _STR),
    "RescaleIntercept": (0x00281052, _STR),
    "AcquisitionNumber": (0x00200012, _STR),
    "InstanceNumber": (0x00200013, _STR),
    "NumberOfFrames": (0x00280008, _STR),
    "Rows": (0x00280010, _US),
    "Columns": (0x00280011, _US),
    "SamplesPerPixel": (0x00280002, _US),
    "BitsAllocated": (0x00280100, _US),
    "BitsStored": (0x00280101, _US),
    "PixelRepresentation": (0x00280103, _US),
}


def _field(ds: pydicom.Dataset, keyword: str, warnings: list[str]) -> list[str] | int | None:
    """Value of one header field: list of strings (split on backslash) or an int; None if absent."""
    tag, kind = _FIELDS[keyword]
    elem: Any = ds._dict.get(pydicom.tag.Tag(tag))
    if elem is None:
        return None
    value = getattr(elem, "value", None)
    if isinstance(value, bytes | bytearray):
        if kind == _US:
            if len(value) < 2:
                warnings.append(f"empty {keyword}")
                return None
            little = getattr(elem, "is_little_endian", True)
            return int.from_bytes(value[:2], "little" if little else "big")
        text = bytes(value).decode("latin-1").strip("\x00 ")
        return [v.strip("\x00 ") for v in text.split("\\")] if text else []
    try:  # already converted (or deferred): let pydicom do it
        value = ds[tag].value
    except (ValueError, TypeError, KeyError) as exc:
        warnings.append(f"unreadable {keyword} ({exc})")
        return None
    if kind == _US:
        return _int_or_none(value)
    if value is None:
        return []
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        value = [value]
    return [str(v).strip() for v in value]


def _strings(value: list[str] | int | None) -> list[str]:
    return value if isinstance(value, list) else []


def _text(value: list[str] | int | None) -> str:
    return value[0] if isinstance(value, list) and value else ""


def _num(
    value: list[str] | int | None, keyword: str, warnings: list[str], n: int = 1
) -> tuple[float, ...] | None:
    if value is None:
        return None
    vals = _floats(value if isinstance(value, list) else [value], n)
    if vals is None:
        warnings.append(f"unparsable {keyword} {value!r}")
    return vals


class UnreadablePathError(InputError):
    """A file or folder of the tree cannot be read at all (permission denied, I/O error).

    Unlike a damaged file (skipped with a warning), this stops the scan: the missing file may
    be a slice of the series, and a volume silently missing slices is a wrong result.
    """


def unreadable(path: str | os.PathLike[str], exc: OSError) -> UnreadablePathError:
    """The :class:`UnreadablePathError` for ``path`` failing with ``exc``."""
    what = "folder" if os.path.isdir(path) else "file"
    if isinstance(exc, PermissionError):
        return UnreadablePathError(
            f"{path}: cannot read this {what} (permission denied). Give this user read access "
            f"(e.g. chmod -R u+rX '{path}') or copy the data somewhere readable."
        )
    return UnreadablePathError(f"{path}: cannot read this {what} ({exc.strerror or exc}).")


def check_readable(path: str | os.PathLike[str]) -> None:
    """Raise :class:`UnreadablePathError` if ``path`` (file or folder) cannot be opened/listed."""
    try:
        if os.path.isdir(path):
            with os.scandir(path):
                pass
        else:
            with open(path, "rb"):
                pass
    except OSError as exc:
        raise unreadable(path, exc) from exc


def _sniff(path: str) -> str:
    """``"dicom"`` (preamble + DICM), ``"raw"`` (no preamble, starts with a group 0008/0002 tag)
    or ``"other"``."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        raise unreadable(path, exc) from exc
    if len(head) == 132 and head[128:132] == b"DICM":
        return "dicom"
    if head[:2] in (b"\x08\x00", b"\x02\x00") and len(head) >= 8:
        return "raw"
    return "other"


def read_instance_header(path: str | os.PathLike[str]) -> InstanceHeader | None:
    """Read one file's header; ``None`` when it is not a DICOM instance (e.g. a README).

    Tolerant: missing or malformed optional fields are recorded in ``warnings``; a missing
    SOPInstanceUID/SOPClassUID is taken from the file meta information.

    Raises
    ------
    InputError
        When the file starts like DICOM but its header cannot be parsed (truncated/corrupt);
        :class:`UnreadablePathError` when the file cannot be opened (permission denied).
    """
    p = str(path)
    kind = _sniff(p)
    if kind == "other":
        return None
    try:
        return _parse_header(p, kind)
    except InvalidDicomError:
        return None
    except PermissionError as exc:
        raise unreadable(p, exc) from exc
    except _HEADER_ERRORS as exc:
        detail = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise InputError(
            f"{p}: DICOM header cannot be parsed ({type(exc).__name__}: {detail}); the file is "
            "truncated or corrupt. Remove it or re-export the series."
        ) from exc


def _parse_header(p: str, kind: str) -> InstanceHeader | None:
    warnings: list[str] = []
    ds = pydicom.dcmread(p, defer_size=_HEADER_TAGS_DEFER, force=kind == "raw")
    if kind == "raw":
        warnings.append("no DICOM preamble/file meta (read anyway)")
    if 0x00041220 in ds._dict or Path(p).name.upper() == "DICOMDIR":  # DICOMDIR record sequence
        return None
    meta = getattr(ds, "file_meta", None)
    ts = str(getattr(meta, "TransferSyntaxUID", "") or "")
    if not ts:
        ts = "1.2.840.10008.1.2"  # pydicom guessed implicit VR little endian
        warnings.append("no transfer syntax in file meta; assumed implicit VR little endian")
    f = {k: _field(ds, k, warnings) for k in _FIELDS}
    sop_uid = _text(f["SOPInstanceUID"])
    if not sop_uid:
        sop_uid = str(getattr(meta, "MediaStorageSOPInstanceUID", "") or "")
        warnings.append("empty SOPInstanceUID; used MediaStorageSOPInstanceUID from file meta")
    sop_class = _text(f["SOPClassUID"]) or str(getattr(meta, "MediaStorageSOPClassUID", "") or "")
    if not _text(f["SeriesInstanceUID"]):
        warnings.append("empty SeriesInstanceUID; files without one are grouped together")
    slope = _num(f["RescaleSlope"], "RescaleSlope", warnings)
    intercept = _num(f["RescaleIntercept"], "RescaleIntercept", warnings)
    pix: Any = ds._dict.get(pydicom.tag.Tag(0x7FE00010))  # raw element: value deferred
    offset = length = None
    if pix is not None and getattr(pix, "value_tell", None) is not None:
        undefined = pix.length == 0xFFFFFFFF
        if not undefined and ts in _NATIVE_TRANSFER_SYNTAXES:
            offset, length = int(pix.value_tell), int(pix.length)

    def integer(keyword: str) -> int | None:
        v = f[keyword]
        return v if isinstance(v, int) else _int_or_none(_text(v))

    return InstanceHeader(
        path=p,
        sop_instance_uid=sop_uid,
        sop_class_uid=sop_class,
        study_instance_uid=_text(f["StudyInstanceUID"]),
        series_instance_uid=_text(f["SeriesInstanceUID"]),
        frame_of_reference_uid=_text(f["FrameOfReferenceUID"]),
        modality=_text(f["Modality"]).upper() or "OT",
        transfer_syntax_uid=ts,
        image_type=tuple(v.upper() for v in _strings(f["ImageType"])),
        position=_num(f["ImagePositionPatient"], "ImagePositionPatient", warnings, 3),  # type: ignore[arg-type]
        orientation=_num(f["ImageOrientationPatient"], "ImageOrientationPatient", warnings, 6),  # type: ignore[arg-type]
        pixel_spacing=_num(f["PixelSpacing"], "PixelSpacing", warnings, 2),  # type: ignore[arg-type]
        rows=integer("Rows") or 0,
        columns=integer("Columns") or 0,
        number_of_frames=integer("NumberOfFrames") or 1,
        samples_per_pixel=integer("SamplesPerPixel") or 1,
        bits_allocated=integer("BitsAllocated") or 0,
        bits_stored=integer("BitsStored") or 0,
        pixel_representation=integer("PixelRepresentation") or 0,
        rescale_slope=slope[0] if slope else 1.0,
        rescale_intercept=intercept[0] if intercept else 0.0,
        acquisition_number=integer("AcquisitionNumber"),
        instance_number=integer("InstanceNumber"),
        has_pixel_data=pix is not None,
        pixel_offset=offset,
        pixel_length=length,
        file_size=os.path.getsize(p),
        warnings=tuple(warnings),
    )


def _walk_error(exc: OSError) -> None:
    raise unreadable(exc.filename or "?", exc) from exc


def _iter_files(root: Path) -> Iterable[Path]:
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root, onerror=_walk_error):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def contains_dicom(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is, or a folder under it holds, a file with the DICOM preamble."""
    return any(_sniff(str(f)) == "dicom" for f in _iter_files(Path(path)))


def scan_instances(path: str | os.PathLike[str]) -> tuple[list[InstanceHeader], list[str]]:
    """Read the header of every DICOM file under ``path`` (recursively) or of one file.

    Returns
    -------
    instances, problems
        Parsed headers, and messages about files that look like DICOM but could not be parsed
        (those files are skipped; the caller decides whether that matters).
    """
    root = Path(path)
    if not root.exists():
        raise InputError(f"{root}: no such file or folder.")
    instances: list[InstanceHeader] = []
    problems: list[str] = []
    n_other = 0
    tolerated: dict[str, int] = {}
    for f in _iter_files(root):
        try:
            header = read_instance_header(f)
        except UnreadablePathError:
            raise
        except InputError as exc:
            problems.append(str(exc))
            logger.warning("skipped unreadable file: %s", exc)
            continue
        if header is None:
            n_other += 1
            continue
        for w in header.warnings:
            tolerated[w] = tolerated.get(w, 0) + 1
        instances.append(header)
    for w, n in tolerated.items():
        logger.warning("%s: tolerated header problem in %d file(s): %s", root, n, w)
    if n_other:
        logger.info("%s: ignored %d non-DICOM file(s)", root, n_other)
    return instances, problems


def group_series(instances: Iterable[InstanceHeader]) -> list[SeriesGroup]:
    """Group instances by (StudyInstanceUID, SeriesInstanceUID), in first-seen order."""
    groups: dict[tuple[str, str], SeriesGroup] = {}
    by_key: dict[tuple[str, str], list[InstanceHeader]] = defaultdict(list)
    for inst in instances:
        key = (inst.study_instance_uid, inst.series_instance_uid)
        if key not in groups:
            groups[key] = SeriesGroup(*key)
        by_key[key].append(inst)
    for key, group in groups.items():
        group.instances = by_key[key]
    return list(groups.values())
