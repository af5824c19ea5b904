"""``medseg report OUT [--inputs INPUT...] [--show-identifiers]``: the review report of a batch.

Rebuilds ``OUT/report/index.html`` (batch page) and one page per study from the batch's
manifest and outputs: review flags per organ (missing, volume outside the training
distribution, laterality, fragments, shape plausibility), overlays, volumes and reference
metrics. Static files: open ``OUT/report/index.html`` from disk; no server, no network.

The manifest holds no input paths; give the batch's inputs again (``--inputs``) to draw the
CT under the contours and the reference contours (without them: contours on black).
No patient name or ID is shown unless ``--show-identifiers``. See docs/qa.md.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["register", "run_report"]


def register(subparsers: Any) -> None:
    """Add the ``report`` sub-command."""
    p = subparsers.add_parser(
        "report",
        help="write the HTML review report of a contouring batch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("output", type=Path, help="batch folder (the -o of medseg contour)")
    p.add_argument("--inputs", nargs="+", default=None, help="the batch's inputs (for the CT)")
    p.add_argument(
        "--show-identifiers", action="store_true", help="show study/series UIDs and input paths"
    )
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    """Write the report and print where it is."""
    from medseg.qa import write_report

    path = write_report(args.output, inputs=args.inputs, show_identifiers=args.show_identifiers)
    print(f"report: {path}")
    return 0
