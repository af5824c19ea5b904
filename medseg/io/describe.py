"""What is in a DICOM tree, image file or label folder (``medseg info``), as plain data.

For a DICOM tree: one entry per series (hashed UIDs, never patient names), modality, instance
count, shape, spacing, orientation code and the problems found. For a file or an OpenKBP / mask
folder: shape, spacing, orientation, dtype and value range.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["describe_path"]


def _dicom_info(path: Path) -> dict[str, Any]:
    from medseg.io.dicom_series import scan_dicom_tree

    series = [s.to_json() for s in scan_dicom_tree(path)]
    return {"path": str(path), "kind": "dicom", "series": series}


def _volume_info(path: Path, kind: str) -> dict[str, Any]:
    from medseg.io import load_labels, load_volume

    if kind == "mask_folder":
        labels = load_labels(path)
        volume = labels.volume
        extra: dict[str, Any] = {"labels": list(labels.label_map.names)}
    else:
        volume = load_volume(path)
        extra = {}
    arr = volume.array
    return {
        "path": str(path),
        "kind": kind,
        "shape": list(volume.shape),
        "spacing_mm": [round(v, 5) for v in volume.spacing_mm],
        "orientation": volume.orientation,
        "origin_mm": [round(v, 4) for v in volume.origin_mm],
        "dtype": str(arr.dtype),
        "min": float(np.min(arr)),
        "max": float(np.max(arr)),
        "modality": volume.modality,
        **extra,
    }


def describe_path(path: Path) -> dict[str, Any]:
    """The information ``medseg info`` prints, as a JSON-friendly dict.

    Raises
    ------
    InputError
        Unreadable folder or file, or a file that is not an image or label input.
    """
    from medseg.io import detect_path_kind
    from medseg.io.dicom_scan import check_readable, contains_dicom

    if path.is_dir():
        check_readable(path)  # an unreadable folder is an InputError, not a PermissionError
    if path.is_dir() and not (path / "ct.csv").is_file() and contains_dicom(path):
        return _dicom_info(path)  # DICOM wins over label files lying beside it
    kind = detect_path_kind(path)
    if kind in ("dicom_folder", "dicom"):
        return _dicom_info(path)
    return _volume_info(path, kind)
