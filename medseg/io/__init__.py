"""Reading and writing volumes and label maps, choosing the reader by content.

Entry points: :func:`load_volume` (images), :func:`load_labels` (label maps, mask folders,
DICOM-SEG, RTSTRUCT), :func:`save_volume` and :func:`save_labels`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from medseg.errors import InputError
from medseg.io.atomic import write_atomic
from medseg.io.dicom_series import DicomReadOptions
from medseg.io.image_files import detect_file_format, read_image_file, write_image_file
from medseg.volume import LabelMap, LabelVolume, Volume

logger = logging.getLogger(__name__)

__all__ = [
    "DicomReadOptions",
    "detect_path_kind",
    "labels_from_volume",
    "load_labels",
    "load_volume",
    "save_labels",
    "save_volume",
]


def detect_path_kind(path: str | os.PathLike[str]) -> str:
    """Classify ``path`` by content.

    Returns one of ``"openkbp"`` (folder with ``ct.csv`` or ``ct.csv.gz``), ``"mask_folder"``
    (folder of per-organ binary masks), ``"dicom_folder"``, ``"nifti"``, ``"nrrd"``,
    ``"metaimage"``, ``"dicom"`` (one file) or raises :class:`InputError`.
    """
    p = Path(path)
    from medseg.io.dicom_scan import check_readable, unreadable

    try:
        exists = p.exists()
    except OSError as exc:  # a folder above it cannot be searched
        raise unreadable(p.parent, exc) from exc
    if not exists:
        raise InputError(f"{p}: no such file or folder.")
    check_readable(p)
    if p.is_dir():
        from medseg.io.openkbp import is_openkbp_folder

        if is_openkbp_folder(p):
            return "openkbp"
        from medseg.io.dicom_scan import contains_dicom
        from medseg.io.mask_folder import is_mask_folder

        if contains_dicom(p):  # DICOM wins over label files lying beside it (dcmqi layout)
            return "dicom_folder"
        if is_mask_folder(p):
            return "mask_folder"
        return "dicom_folder"
    if p.stat().st_size == 0:
        raise InputError(f"{p}: file is empty (0 bytes).")
    kind = detect_file_format(p)
    if kind == "unknown":
        raise InputError(
            f"{p}: unknown file type (not DICOM, NIfTI, NRRD or MetaImage by content). "
            "Give a DICOM folder, a .nii/.nii.gz, .nrrd or .mha file, or an OpenKBP patient folder."
        )
    return kind


def load_volume(
    path: str | os.PathLike[str],
    *,
    dicom: DicomReadOptions | None = None,
) -> Volume:
    """Load an image volume from a DICOM folder or file, NIfTI, NRRD, MetaImage or OpenKBP folder.

    Parameters
    ----------
    path
        File or folder; the reader is chosen by content, not by name.
    dicom
        Series selection and opt-in fixes for DICOM input (see :class:`DicomReadOptions`).

    Returns
    -------
    Volume
        Axes (slice, row, column), affine to LPS mm; CT in HU.
    """
    kind = detect_path_kind(path)
    if kind == "openkbp":
        from medseg.io.openkbp import load_openkbp_ct

        return load_openkbp_ct(path)
    if kind == "mask_folder":
        raise InputError(
            f"{path}: this folder holds per-organ masks, not an image; use load_labels() "
            "(CLI: medseg evaluate/export take it as a label input)."
        )
    if kind in ("dicom_folder", "dicom"):
        from medseg.io.dicom_series import load_dicom_series

        return load_dicom_series(path, options=dicom or DicomReadOptions())
    return read_image_file(path)


def load_labels(
    path: str | os.PathLike[str],
    *,
    reference: Volume | None = None,
    label_map: LabelMap | None = None,
) -> LabelVolume:
    """Load a label map: label file, mask folder, OpenKBP folder, DICOM-SEG or RTSTRUCT.

    Parameters
    ----------
    path
        The label input.
    reference
        The image grid; required for RTSTRUCT (contours are rasterised on it) and used to check
        DICOM-SEG placement.
    label_map
        Names for the integer ids of a plain label file. Without it, a ``.json`` sidecar written
        by :func:`save_labels` is used, else labels are named ``label_<id>``.
    """
    kind = detect_path_kind(path)
    p = Path(path)
    if kind == "openkbp":
        from medseg.io.openkbp import load_openkbp_labels

        return load_openkbp_labels(p)
    if kind == "mask_folder":
        from medseg.io.mask_folder import load_mask_folder

        return load_mask_folder(p)
    if kind in ("dicom", "dicom_folder"):
        from medseg.io.dicom_labels import load_dicom_labels

        return load_dicom_labels(p, reference=reference)
    volume = read_image_file(p)
    return labels_from_volume(volume, label_map=label_map or _sidecar_label_map(p), source=p)


def labels_from_volume(
    volume: Volume, *, label_map: LabelMap | None = None, source: Path | None = None
) -> LabelVolume:
    """Wrap an integer-valued Volume as a LabelVolume (float arrays must hold whole numbers)."""
    import numpy as np

    arr = volume.array
    where = f"{source}: " if source else ""
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise InputError(
                f"{where}label map holds non-integer values (e.g. probabilities); threshold or "
                "argmax it into integer labels first."
            )
        arr = arr.astype(np.int32 if arr.max() > 255 else np.uint8)
    if arr.min() < 0:
        raise InputError(f"{where}label map has negative values (min {arr.min()}).")
    present = [int(v) for v in np.unique(arr) if v != 0]
    if label_map is None:
        label_map = LabelMap.from_dict({v: f"label_{v}" for v in present})
    return LabelVolume(volume.with_array(arr), label_map)


def _sidecar_path(p: Path) -> Path:
    name = p.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".nhdr"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return p.with_name(name + ".json")


def _sidecar_label_map(p: Path) -> LabelMap | None:
    side = _sidecar_path(p)
    if not side.is_file():
        return None
    try:
        data: Any = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{side}: label sidecar is not valid JSON ({exc}).") from exc
    labels = data.get("labels") if isinstance(data, dict) else None
    if labels is None:
        return None
    return LabelMap.from_json(labels)


def save_volume(volume: Volume, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write a volume as NIfTI/NRRD/MetaImage by suffix, atomically."""
    return write_image_file(volume, path, overwrite=overwrite)


def save_labels(
    labels: LabelVolume,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a label map (NIfTI/NRRD by suffix) and a ``.json`` sidecar with the label names.

    The sidecar holds ``{"labels": [...LabelEntry...], **extra}`` and is read back by
    :func:`load_labels`.
    """
    out = write_image_file(labels.volume, path, overwrite=overwrite)
    side = _sidecar_path(out)
    payload: dict[str, Any] = {
        "labels": labels.label_map.to_json(),
        "warnings": list(labels.warnings),
    }
    payload.update(extra or {})
    write_atomic(side, lambda tmp: tmp.write_text(json.dumps(payload, indent=2)))
    return out
