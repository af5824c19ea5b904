"""``medseg evaluate PRED REF``: Dice, HD, HD95, ASSD, MASD, NSD per label, in mm.

PRED and REF are label maps (NIfTI/NRRD/MHA, with optional JSON sidecar names), per-organ mask
folders (read losslessly, overlapping organs allowed), or anything else
:func:`medseg.io.load_labels` reads (DICOM-SEG, RTSTRUCT). Two folders that are not single
inputs (or ``--batch``) are evaluated case by case, matched by case name (sub-folder name or
file name without suffix).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from medseg.errors import GeometryError, InputError
from medseg.io.mask_folder import MaskSet, is_mask_folder, read_mask_folder
from medseg.metrics import (
    CaseResult,
    MetricsConfig,
    box_plots,
    compute_metrics,
    format_table,
    results_to_csv,
    results_to_json,
)
from medseg.metrics.summary import write_text_atomic
from medseg.volume import LabelVolume, Volume

logger = logging.getLogger(__name__)

__all__ = ["evaluate_pair", "find_case_pairs", "register", "run"]

_LABEL_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")


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


def _case_name(p: Path) -> str:
    name = p.name
    for suffix in _LABEL_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _is_single_input(p: Path) -> bool:
    if p.is_file():
        return True
    if not p.is_dir():
        raise InputError(f"{p}: no such file or folder.")
    if is_mask_folder(p) or (p / "ct.csv").is_file():
        return True
    from medseg.io.image_files import detect_file_format

    files = [f for f in sorted(p.iterdir()) if f.is_file() and not f.name.startswith(".")]
    return any(detect_file_format(f) == "dicom" for f in files[:20])


def find_case_pairs(
    pred_dir: Path, ref_dir: Path
) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """Match the cases of two batch folders by name; returns pairs and unmatched names."""

    def entries(d: Path) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for e in sorted(d.iterdir()):
            if e.name.startswith(".") or e.name.lower().endswith(".json"):
                continue
            if e.is_dir() or e.name.lower().endswith(_LABEL_SUFFIXES):
                out[_case_name(e)] = e
        return out

    pe, re_ = entries(pred_dir), entries(ref_dir)
    common = [c for c in re_ if c in pe]
    unmatched = sorted(set(pe) ^ set(re_))
    return [(c, pe[c], re_[c]) for c in common], unmatched


def _read(path: Path, reference: Volume | None) -> LabelVolume | MaskSet:
    if path.is_dir() and is_mask_folder(path):
        return read_mask_folder(path)
    from medseg.io import load_labels

    return load_labels(path, reference=reference)


def _grid(x: LabelVolume | MaskSet) -> Volume:
    return x.volume if isinstance(x, LabelVolume) else x.grid


def _resample(pred: LabelVolume | MaskSet, ref_grid: Volume) -> LabelVolume | MaskSet:
    import numpy as np

    from medseg.preprocess import resample_to_grid

    if isinstance(pred, LabelVolume):
        vol = resample_to_grid(pred.volume, ref_grid, order=0, fill_value=0)
        return LabelVolume(vol, pred.label_map, pred.warnings)
    masks = {}
    grid = None
    for name, m in pred.masks.items():
        v = resample_to_grid(
            pred.grid.with_array(m.astype(np.uint8)), ref_grid, order=0, fill_value=0
        )
        masks[name] = np.asarray(v.array != 0)
        grid = grid or v
    assert grid is not None
    return MaskSet(grid=grid, masks=masks, source=pred.source)


def evaluate_pair(
    pred_path: Path,
    ref_path: Path,
    *,
    config: MetricsConfig,
    case: str,
    resample_to_reference: bool = False,
) -> CaseResult:
    """Read one prediction/reference pair and compute its metrics."""
    pred = _read(pred_path, None)
    ref = _read(ref_path, _grid(pred))
    provenance: list[str] = []
    if not _grid(pred).same_grid(_grid(ref)):
        if not resample_to_reference:
            raise GeometryError(
                f"case {case!r}: prediction {pred_path} is on grid {_grid(pred)!r} origin "
                f"{_grid(pred).origin_mm}, reference {ref_path} on {_grid(ref)!r} origin "
                f"{_grid(ref).origin_mm}. Pass --resample-to-reference to resample the "
                "prediction (nearest neighbour) or export the prediction on the reference grid."
            )
        src = _grid(pred)
        pred = _resample(pred, _grid(ref))
        provenance.append(
            f"prediction resampled with nearest neighbour from shape {src.shape} spacing "
            f"{tuple(round(s, 4) for s in src.spacing_mm)} origin {src.origin_mm} onto the "
            f"reference grid shape {_grid(ref).shape}"
        )
        logger.warning("case %s: %s", case, provenance[-1])
    return compute_metrics(pred, ref, config=config, case=case, provenance=tuple(provenance))


def _versions() -> dict[str, str]:
    import numpy
    import scipy

    from medseg import __version__

    return {"medseg": __version__, "numpy": numpy.__version__, "scipy": scipy.__version__}


def run(args: argparse.Namespace) -> int:
    """Handler of ``medseg evaluate``."""
    config = _config(args)
    pred_path, ref_path = Path(args.pred), Path(args.ref)
    for p in (pred_path, ref_path):
        if not p.exists():
            raise InputError(f"{p}: no such file or folder.")
    for out in (args.json, args.csv):
        if out is not None and out.exists() and not args.overwrite:
            raise InputError(f"{out} exists; pass --overwrite to replace it.")
    if args.plots is not None and not args.overwrite and args.plots.is_dir():
        clash = sorted(p.name for p in args.plots.glob("*.png"))
        if clash:
            raise InputError(
                f"{args.plots} already holds {clash}; pass --overwrite to replace them."
            )
    batch = args.batch or (
        pred_path.is_dir()
        and ref_path.is_dir()
        and not _is_single_input(pred_path)
        and not _is_single_input(ref_path)
    )
    unmatched: list[str] = []
    if batch:
        pairs, unmatched = find_case_pairs(pred_path, ref_path)
        if not pairs:
            raise InputError(
                f"no case names in common between {pred_path} and {ref_path}; batch mode matches "
                "sub-folders / files by name (e.g. pred/case1.nii.gz with ref/case1/)."
            )
        for name in unmatched:
            logger.warning("case %r is present in only one of the two folders; skipped", name)
    else:
        pairs = [(_case_name(ref_path), pred_path, ref_path)]
    results = []
    from tqdm import tqdm

    for case, p, r in tqdm(
        pairs, desc="evaluate", unit="case", file=sys.stderr, disable=len(pairs) < 2
    ):
        results.append(
            evaluate_pair(
                p, r, config=config, case=case, resample_to_reference=args.resample_to_reference
            )
        )
    sys.stdout.write(format_table(results) + "\n")
    if args.json:
        extra = {
            "inputs": {"pred": str(pred_path), "ref": str(ref_path)},
            "unmatched_cases": unmatched,
            "versions": _versions(),
        }
        write_text_atomic(
            results_to_json(results, extra=extra), args.json, overwrite=args.overwrite
        )
    if args.csv:
        write_text_atomic(results_to_csv(results), args.csv, overwrite=args.overwrite)
    if args.plots:
        box_plots(results, args.plots, overwrite=args.overwrite)
    n_missed = sum(lr.missed for r in results for lr in r.labels.values())
    if n_missed:
        logger.warning("%d organ(s) empty in exactly one input (counted as missed)", n_missed)
    return 0
