"""Export label maps for clinical systems: DICOM-SEG (highdicom), RTSTRUCT (pydicom), NIfTI.

``write_dicom_seg`` and ``write_rtstruct`` take a :class:`~medseg.volume.LabelVolume` on the grid
of a reference image Volume read from DICOM (``Volume.source`` filled) and write one file
atomically; NIfTI goes through :func:`medseg.io.save_labels`. Both take one :class:`SeriesInfo`
(series description and number, manufacturer, algorithm name and version; the class lives in
:mod:`medseg.io.dicom_write` and is re-exported here) and check every value they write against its
DICOM VR (:mod:`medseg.io.dicom_values`). Conformance notes (dciodvfy results,
hole representation, overlap policy on reading) are in ``docs/dicom-conformance.md``.
"""

from __future__ import annotations

from medseg.export._common import match_reference_grid
from medseg.export.convert import EXPORT_FORMATS, export_labels
from medseg.export.rtstruct import write_rtstruct
from medseg.export.seg import write_dicom_seg
from medseg.io.dicom_write import SeriesInfo

__all__ = [
    "EXPORT_FORMATS",
    "SeriesInfo",
    "export_labels",
    "match_reference_grid",
    "write_dicom_seg",
    "write_rtstruct",
]
