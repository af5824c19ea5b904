"""``medseg photo train|predict|measure|track|evaluate``: wound / skin-lesion photos."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from medseg.errors import InputError

logger = logging.getLogger(__name__)

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``photo`` and its sub-commands."""
    parser = subparsers.add_parser(
        "photo", help="wound / skin-lesion photos: train, predict, measure, track, evaluate"
    )
    sub = parser.add_subparsers(dest="photo_command", metavar="ACTION", required=True)

    p = sub.add_parser(
        "train",
        help="train a Mask R-CNN from a YAML config",
        description="Train a photo Mask R-CNN. Override any config key with --set KEY=VALUE "
        "(repeatable, VALUE is YAML): --set iterations=500 --set fold=2 --set "
        "holdout_fraction=0 --set output_dir=runs/x --set augment.rotate=30.",
    )
    p.add_argument("config", type=Path)
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pt")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override a config key (VALUE parsed as YAML; augment.KEY for augmentation); "
        "repeatable",
    )
    p.set_defaults(func=_train)

    p = sub.add_parser("predict", help="masks, overlays and predictions.json for photos")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    p.add_argument("--model", default="wound", help="wound | lesion | PATH to a checkpoint")
    p.add_argument(
        "--score-threshold",
        type=float,
        default=None,
        help="keep instances scoring at least this (default: the model's tuned threshold)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--bf16", action="store_true", help="CPU bfloat16 autocast (faster on AVX512-BF16 CPUs)"
    )
    p.add_argument(
        "--max-instances",
        type=int,
        default=None,
        help="keep the N best-scoring instances per photo, 0 = all (default: the model's "
        "setting; lesion keeps 1)",
    )
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="flip test-time augmentation, 4x the time (default: the model's setting)",
    )
    p.add_argument(
        "--centre-prior",
        type=float,
        default=None,
        metavar="SIGMA",
        help="with --max-instances: prefer instances near the photo's centre (sigma in photo "
        "sizes, e.g. 0.2), 0 = off (default: the model's setting; lesion 0.2)",
    )
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_predict)

    p = sub.add_parser("measure", help="area, length, width, perimeter of mask PNGs")
    p.add_argument("masks", nargs="+", type=Path, help="mask PNGs (non-zero = region)")
    p.add_argument("--mm-per-pixel", type=float, help="explicit calibration")
    p.add_argument("--photo", type=Path, help="photo to search for a calibration marker")
    p.add_argument("--marker-diameter-mm", type=float, help="diameter of the circular sticker")
    p.add_argument("--marker-color", default="#0000ff", help="#RRGGBB or red/green/blue/yellow")
    p.add_argument("-o", "--output", type=Path, help="write the JSON here (default: stdout)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.set_defaults(func=_measure)

    p = sub.add_parser(
        "track",
        help="wound area over time: area in cm² and its reduction, one row per photo (CSV, "
        "JSON, plot)",
        description="Measure the mask of each photo of a wound series with that photo's own "
        "calibration, order the photos by date (--date, else EXIF) and report the area in cm² "
        "and the percentage area reduction since the first and the previous photo. Masks come "
        "from `medseg photo predict PHOTOS -o DIR` (DIR/<stem>_mask.png) or are <stem>.png.",
    )
    p.add_argument("photos", nargs="+", type=Path, help="the photos of one wound, any order")
    p.add_argument("--masks", required=True, type=Path, help="folder holding the masks")
    p.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    p.add_argument("--mm-per-pixel", type=float, help="one scale for every photo (fixed rig)")
    p.add_argument(
        "--marker-diameter-mm",
        type=float,
        help="diameter of the circular sticker found in each photo (per-photo scale)",
    )
    p.add_argument("--marker-color", default="#0000ff", help="#RRGGBB or red/green/blue/yellow")
    p.add_argument(
        "--date",
        action="append",
        default=[],
        metavar="STEM=DATE",
        help="when a photo was taken (YYYY-MM-DD[THH:MM]); overrides EXIF; repeatable",
    )
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_track)

    p = sub.add_parser("evaluate", help="per-image Dice / Jaccard against reference masks")
    p.add_argument("pred_dir", type=Path)
    p.add_argument("ref_dir", type=Path)
    p.add_argument("-o", "--output", type=Path, help="write scores JSON here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.set_defaults(func=_evaluate)


def _train(args: argparse.Namespace) -> int:
    from medseg.photo.config import load_train_config, parse_overrides
    from medseg.photo.training import train

    config = load_train_config(args.config, parse_overrides(args.overrides))
    final = train(config, resume=args.resume)
    sys.stdout.write(f"{final}\n")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from medseg.photo.predict import predict_files

    with tqdm(total=len(args.images), disable=args.no_progress, file=sys.stderr) as bar:
        result = predict_files(
            args.images,
            args.output,
            model=args.model,
            score_threshold=args.score_threshold,
            device=args.device,
            overwrite=args.overwrite,
            bf16=args.bf16,
            max_instances=args.max_instances,
            tta=args.tta,
            centre_prior=args.centre_prior,
            progress=bar.update,
        )
    n = sum(len(r["instances"]) for r in result["images"])
    sys.stdout.write(f"{len(result['images'])} photo(s), {n} instance(s) -> {args.output}\n")
    return 0


def _measure(args: argparse.Namespace) -> int:
    from medseg.photo.measure import measure_files

    results = measure_files(
        args.masks,
        mm_per_pixel=args.mm_per_pixel,
        photo=args.photo,
        marker_diameter_mm=args.marker_diameter_mm,
        marker_color=args.marker_color,
        output=args.output,
        overwrite=args.overwrite,
    )
    if not args.output:
        sys.stdout.write(json.dumps(results, indent=2) + "\n")
    return 0


def _track(args: argparse.Namespace) -> int:
    from medseg.photo.series import build_series, find_mask, parse_date, write_series

    dates = {}
    for item in args.date:
        stem, sep, text = item.partition("=")
        if not sep or not stem.strip():
            raise InputError(f"--date expects STEM=YYYY-MM-DD, got {item!r}.")
        dates[stem.strip()] = parse_date(text)
    masks = [find_mask(photo, args.masks) for photo in args.photos]
    rows = build_series(
        args.photos,
        masks,
        mm_per_pixel=args.mm_per_pixel,
        marker_diameter_mm=args.marker_diameter_mm,
        marker_color=args.marker_color,
        dates=dates,
    )
    written = write_series(rows, args.output, overwrite=args.overwrite)
    for row in rows:
        area = f"{row.area_cm2:.2f} cm²" if row.area_cm2 is not None else f"{row.area_px} px"
        change = (
            f"  reduction {row.reduction_from_first_pct:+.1f}% since first"
            if row.reduction_from_first_pct is not None
            else ""
        )
        sys.stdout.write(f"{row.taken or '(undated)'}  {Path(row.photo).name}  {area}{change}\n")
    logger.info("wrote %s", ", ".join(str(w) for w in written))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from medseg.photo.evaluate import evaluate_folders, scores_table

    scores, summary = evaluate_folders(
        args.pred_dir, args.ref_dir, output=args.output, overwrite=args.overwrite
    )
    sys.stdout.write(scores_table(scores, summary) + "\n")
    return 0
