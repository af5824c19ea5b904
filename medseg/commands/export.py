"""``medseg export LABELS --reference DICOM_DIR --format seg|rtstruct|nifti -o FILE``.

LABELS is anything :func:`medseg.io.load_labels` reads (NIfTI/NRRD with JSON sidecar names, mask
folder, DICOM-SEG, RTSTRUCT). Labels must hold the voxel centres of the reference series (the same
grid, possibly in another axis order such as a NIfTI written in RAS); they are never interpolated.
Existing outputs are kept unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``export`` sub-command."""
    p = subparsers.add_parser(
        "export",
        help="write labels as DICOM-SEG or RTSTRUCT referencing a DICOM series (or NIfTI)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("labels", type=Path, help="label map, mask folder, SEG or RTSTRUCT")
    p.add_argument("--reference", type=Path, required=True, help="the DICOM image series folder")
    p.add_argument("--format", choices=("seg", "rtstruct", "nifti"), required=True)
    p.add_argument("-o", "--output", type=Path, required=True, help="output file")
    p.add_argument(
        "--segmentation-type",
        choices=("binary", "labelmap"),
        default="binary",
        help="DICOM-SEG type (default binary; labelmap needs a 2024+ reader)",
    )
    p.add_argument("--algorithm-name", default="medseg", help="written into the output")
    p.add_argument("--algorithm-version", default=None, help="default: medseg's version")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handler: call :func:`medseg.export.export_labels` with the parsed arguments."""
    from medseg import __version__
    from medseg.export import SeriesInfo, export_labels

    info = SeriesInfo(
        algorithm_name=args.algorithm_name, algorithm_version=args.algorithm_version or __version__
    )
    out = export_labels(
        args.labels,
        args.reference,
        args.output,
        fmt=args.format,
        info=info,
        segmentation_type=args.segmentation_type,
        overwrite=args.overwrite,
    )
    sys.stderr.write(f"wrote {out}\n")
    return 0
