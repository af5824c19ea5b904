"""Export label maps for clinical systems: DICOM-SEG (highdicom), RTSTRUCT (pydicom), NIfTI.

``write_dicom_seg`` and ``write_rtstruct`` take a :class:`~medseg.volume.LabelVolume` on the grid
of a reference image Volume read from DICOM (``Volume.source`` filled) and write one file
atomically; NIfTI goes through :func:`medseg.io.save_labels`. Conformance notes (dciodvfy results,
hole representation, overlap policy on reading) are in ``docs/dicom-conformance.md``.
"""

from __future__ import annotations

from medseg.export._common import match_reference_grid
from medseg.export.rtstruct import write_rtstruct
from medseg.export.seg import write_dicom_seg

__all__ = ["match_reference_grid", "write_dicom_seg", "write_rtstruct"]
