"""Write any label input as DICOM-SEG, RTSTRUCT or NIfTI on a reference DICOM series.

:func:`export_labels` is the one function behind ``medseg export``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from medseg.errors import InputError
from medseg.export._common import match_reference_grid
from medseg.export.rtstruct import write_rtstruct
from medseg.export.seg import write_dicom_seg
from medseg.io.dicom_write import SeriesInfo

logger = logging.getLogger(__name__)

__all__ = ["EXPORT_FORMATS", "export_labels"]

#: Formats :func:`export_labels` writes.
EXPORT_FORMATS = ("seg", "rtstruct", "nifti")


def export_labels(
    labels_path: str | os.PathLike[str],
    reference_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    fmt: str,
    info: SeriesInfo | None = None,
    segmentation_type: str = "binary",
    overwrite: bool = False,
) -> Path:
    """Load labels, align them exactly to a DICOM reference series and write one file.

    Parameters
    ----------
    labels_path
        Anything :func:`medseg.io.load_labels` reads (NIfTI/NRRD with JSON sidecar names, mask
        folder, DICOM-SEG, RTSTRUCT). The labels must hold the voxel centres of the reference
        series (the same grid, possibly in another axis order); they are never interpolated.
    reference_path
        The DICOM image series folder the output references.
    output
        The file to write (atomically; kept unless ``overwrite``).
    fmt
        ``"seg"``, ``"rtstruct"`` or ``"nifti"``.
    info
        Series description/number, algorithm name and version.
    segmentation_type
        DICOM-SEG type, ``"binary"`` or ``"labelmap"``.
    overwrite
        Replace an existing output.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    InputError
        The reference is not a DICOM series, an unknown format, labels off the reference grid.
    """
    from medseg.io import load_labels, load_volume, save_labels

    if fmt not in EXPORT_FORMATS:
        raise InputError(f"format must be one of {', '.join(EXPORT_FORMATS)}; got {fmt!r}.")
    reference = load_volume(reference_path)
    if reference.source is None:
        raise InputError(
            f"{reference_path}: the reference must be a DICOM series folder (got a "
            f"{reference.modality} image without DICOM references)."
        )
    labels = match_reference_grid(load_labels(labels_path, reference=reference), reference)
    if fmt == "seg":
        out = write_dicom_seg(
            labels,
            reference,
            output,
            info=info,
            segmentation_type=segmentation_type,
            overwrite=overwrite,
        )
    elif fmt == "rtstruct":
        out = write_rtstruct(labels, reference, output, info=info, overwrite=overwrite)
    else:
        out = save_labels(labels, output, overwrite=overwrite)
    logger.info("wrote %s (%d labels)", out, len(labels.label_map))
    return out
