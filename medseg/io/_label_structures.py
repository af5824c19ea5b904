"""What the DICOM-SEG and RTSTRUCT readers share: the structure record and the warning helper.

A module of its own so that :mod:`medseg.io.dicom_labels` (RTSTRUCT, public entry points) and
:mod:`medseg.io._dicom_seg_read` (SEG frames) both import it and not each other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from medseg.volume import LabelEntry

logger = logging.getLogger("medseg.io.dicom_labels")

__all__ = ["SCT_DESIGNATORS", "StructureMask", "warn"]

#: Coding schemes read as SNOMED CT (SRT: the SNOMED-RT designator older SEGs, e.g. dcmqi, use).
SCT_DESIGNATORS = ("SCT", "SRT")


@dataclass(frozen=True)
class StructureMask:
    """One structure read from a SEG segment or an RTSTRUCT ROI.

    ``mask`` is boolean on the grid of the Volume returned with it; ``n_items`` counts the SEG
    frames or RTSTRUCT contours the structure had in the file.
    """

    entry: LabelEntry
    mask: npt.NDArray[np.bool_]
    n_items: int


def warn(warnings: list[str], p: Path, msg: str) -> None:
    """Record a reading warning and log it with the file name."""
    warnings.append(msg)
    logger.warning("%s: %s", p.name, msg)
