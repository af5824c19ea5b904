"""``medseg info PATH [--json]``: what is in a DICOM tree or an image/label file.

For a DICOM tree: one row per series (hashed UIDs, never patient names), modality, instance
count, shape, spacing, orientation code and the problems found. For a file or an OpenKBP / mask
folder: shape, spacing, orientation, dtype and value range.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from medseg.errors import InputError
from medseg.io.describe import describe_path

logger = logging.getLogger(__name__)

__all__ = ["register", "run_info"]


def register(subparsers: Any) -> None:
    """Add the ``info`` sub-command."""
    p = subparsers.add_parser(
        "info",
        help="describe a DICOM tree, image file or label folder",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", type=Path, help="DICOM folder/file, NIfTI/NRRD/MHA, OpenKBP folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_info)


def _fmt_tuple(values: Any, digits: int = 4) -> str:
    if values is None:
        return "-"
    return "×".join(f"{v:.{digits}g}" if isinstance(v, float) else str(v) for v in values)


def _print_table(info: dict[str, Any]) -> None:
    out = sys.stdout
    if info["kind"] != "dicom":
        out.write(f"{info['path']} ({info['kind']})\n")
        for key in ("modality", "shape", "spacing_mm", "orientation", "origin_mm", "dtype"):
            value = info[key]
            shown = _fmt_tuple(value, 6) if isinstance(value, list) else value
            out.write(f"  {key:<12} {shown}\n")
        out.write(f"  {'range':<12} {info['min']:g} .. {info['max']:g}\n")
        if "labels" in info:
            out.write(f"  {'labels':<12} {', '.join(info['labels'])}\n")
        return
    rows = info["series"]
    out.write(f"{info['path']}: {len(rows)} series\n")
    header = f"{'study':<11}{'series':<11}{'mod':<9}{'files':>6}  {'shape':<14}"
    header += f"{'spacing mm':<22}{'orient':<7}problems\n"
    out.write(header)
    for s in rows:
        problems = "; ".join(p.split(":")[0] for p in s["problems"]) or "-"
        out.write(
            f"{s['study']:<11}{s['series']:<11}{s['modality']:<9}{s['instances']:>6}  "
            f"{_fmt_tuple(s['shape']):<14}{_fmt_tuple(s['spacing_mm']):<22}"
            f"{s['orientation'] or '-':<7}{problems}\n"
        )
    for s in rows:
        for p in s["problems"]:
            out.write(f"  series {s['series']}: {p}\n")


def run_info(args: argparse.Namespace) -> int:
    """Handler of ``medseg info``; returns the exit code."""
    path = Path(args.path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder.")
    info = describe_path(path)
    if args.json:
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
    else:
        _print_table(info)
    return 0
