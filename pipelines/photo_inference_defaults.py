"""Thin launcher: set the prediction defaults stored in a photo checkpoint.

    .venv/bin/python pipelines/photo_inference_defaults.py CHECKPOINT [--max-instances N]
        [--tta | --no-tta] [--centre-prior SIGMA] [--retune-threshold]

``medseg photo predict`` reads ``max_instances`` (0 = keep all), ``tta`` (flip test-time
augmentation) and ``centre_prior`` (0 = off) from the checkpoint unless given on its command
line; ``medseg photo train`` writes them from the config. This sets them on a checkpoint
trained before those keys existed (or changes them) without touching the weights; the file is
rewritten atomically.
``--retune-threshold`` re-picks the stored score threshold from the checkpoint's own
training-photo table (``metrics.train_dice_by_threshold``) with the current rule
(:func:`medseg.photo.training.pick_threshold`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from medseg.photo.checkpoint import prediction_defaults, read_checkpoint, save_checkpoint
from medseg.photo.training import pick_threshold


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--max-instances", type=int, help="0 keeps every instance")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--centre-prior", type=float, help="sigma in photo sizes, 0 = off")
    parser.add_argument(
        "--retune-threshold",
        action="store_true",
        help="re-pick the score threshold from the stored training-photo table",
    )
    args = parser.parse_args()
    if args.max_instances is not None and args.max_instances < 0:
        parser.error("--max-instances must be >= 0 (0 keeps every instance)")
    data = read_checkpoint(args.checkpoint)
    defaults = prediction_defaults(data)
    settings = {key: defaults[key] for key in ("max_instances", "tta", "centre_prior")}
    if args.max_instances is not None:
        settings["max_instances"] = args.max_instances or None
    if args.tta is not None:
        settings["tta"] = args.tta
    if args.centre_prior is not None:
        settings["centre_prior"] = args.centre_prior or None
    if settings["centre_prior"] is not None and (
        settings["max_instances"] is None or not 0 < settings["centre_prior"] <= 1
    ):
        parser.error("--centre-prior is a sigma in (0, 1] and needs --max-instances N >= 1")
    data["inference"] = settings
    metrics = data.setdefault("metrics", {})
    if args.retune_threshold:
        table = metrics.get("train_dice_by_threshold")
        if not table:
            parser.error(f"{args.checkpoint} stores no training-photo threshold table")
        metrics["score_threshold"] = pick_threshold({float(t): d for t, d in table.items()})
    save_checkpoint(args.checkpoint, data)
    sys.stdout.write(
        f"{args.checkpoint}: inference defaults {json.dumps(settings)}, "
        f"score threshold {metrics.get('score_threshold')}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
