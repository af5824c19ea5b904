"""``medseg evaluate PRED REF``: Dice, HD, HD95, ASSD, MASD, NSD per label, in mm.

PRED and REF are label maps (NIfTI/NRRD/MHA, with their JSON sidecar of label names), per-organ
mask folders (read losslessly, overlapping organs allowed), DICOM-SEG or RTSTRUCT files. Two
folders that are not single inputs (or ``--batch``) are evaluated case by case, matched by case
name (sub-folder name or file name without suffix). Labels are matched by name; names found on
one side only are reported, and a case with no name in common is an error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from medseg.errors import InputError
from medseg.io.atomic import nearest_existing
from medseg.metrics import (
    MetricsConfig,
    box_plots,
    evaluate_paths,
    format_table,
    results_to_csv,
    results_to_json,
)
from medseg.metrics.summary import write_text_atomic

logger = logging.getLogger(__name__)

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``evaluate`` sub-command."""
    p = subparsers.add_parser(
        "evaluate",
        help="compare predicted and reference segmentations (Dice, HD95, ASSD, NSD in mm)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("pred", type=Path, help="prediction: label map, mask folder, or batch folder")
    p.add_argument("ref", type=Path, help="reference: label map, mask folder, or batch folder")
    p.add_argument("--json", type=Path, help="write per-case and summary metrics as JSON")
    p.add_argument("--csv", type=Path, help="write one row per (case, label) as CSV")
    p.add_argument("--plots", type=Path, metavar="DIR", help="write one box-plot PNG per metric")
    p.add_argument("--config", type=Path, help="YAML file of MetricsConfig options")
    p.add_argument("--definition", choices=("surfel", "voxel"), help="surface definition")
    p.add_argument("--tolerance-mm", type=float, help="NSD tolerance in mm (default 2)")
    p.add_argument("--percentile", type=float, help="robust Hausdorff percentile (default 95)")
    p.add_argument("--hd-mode", choices=("max_directed", "pooled"), help="HD95 variant")
    p.add_argument(
        "--both-empty", choices=("perfect", "exclude"), help="labels empty in both inputs"
    )
    p.add_argument("--worst-case-mm", type=float, help="distance when one mask is empty")
    p.add_argument(
        "--resample-to-reference",
        action="store_true",
        help="resample the prediction onto the reference grid (nearest neighbour) if they differ",
    )
    p.add_argument("--batch", action="store_true", help="force batch mode (folders of cases)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)


def _config(args: argparse.Namespace) -> MetricsConfig:
    base = MetricsConfig.from_yaml(args.config).to_dict() if args.config else {}
    for opt, key in (
        ("definition", "definition"),
        ("tolerance_mm", "tolerance_mm"),
        ("percentile", "percentile"),
        ("hd_mode", "hd_mode"),
        ("both_empty", "both_empty"),
        ("worst_case_mm", "worst_case_mm"),
    ):
        value = getattr(args, opt)
        if value is not None:
            base[key] = value
    return MetricsConfig.from_dict(base)


def _versions() -> dict[str, str]:
    import numpy
    import scipy

    from medseg import __version__

    return {"medseg": __version__, "numpy": numpy.__version__, "scipy": scipy.__version__}


def _check_outputs(args: argparse.Namespace) -> None:
    for out in (args.json, args.csv, args.plots):
        if out is None:
            continue
        parent = nearest_existing(out.parent)
        if not parent.is_dir():
            raise InputError(
                f"cannot write {out}: {parent} is a file, so no folder can be made under it; "
                "choose another output path."
            )
    for out in (args.json, args.csv):
        if out is not None and out.exists() and not args.overwrite:
            raise InputError(f"{out} exists; pass --overwrite to replace it.")
    if args.plots is not None and not args.overwrite and args.plots.is_dir():
        clash = sorted(p.name for p in args.plots.glob("*.png"))
        if clash:
            raise InputError(
                f"{args.plots} already holds {clash}; pass --overwrite to replace them."
            )


def run(args: argparse.Namespace) -> int:
    """Handler of ``medseg evaluate``."""
    from tqdm import tqdm

    config = _config(args)
    _check_outputs(args)
    evaluation = evaluate_paths(
        args.pred,
        args.ref,
        config=config,
        batch=True if args.batch else None,
        resample_to_reference=args.resample_to_reference,
        progress=lambda pairs: tqdm(
            pairs, desc="evaluate", unit="case", file=sys.stderr, disable=len(pairs) < 2
        ),
    )
    results = evaluation.results
    sys.stdout.write(format_table(results) + "\n")
    if args.json:
        extra = {
            "inputs": {"pred": str(args.pred), "ref": str(args.ref)},
            "unmatched_cases": evaluation.unmatched_cases,
            "versions": _versions(),
        }
        write_text_atomic(
            results_to_json(results, extra=extra), args.json, overwrite=args.overwrite
        )
    if args.csv:
        write_text_atomic(results_to_csv(results), args.csv, overwrite=args.overwrite)
    if args.plots:
        box_plots(results, args.plots, overwrite=args.overwrite)
    return 0
