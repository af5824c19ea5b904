"""Thin launcher: set the prediction defaults stored in a photo checkpoint.

    .venv/bin/python pipelines/photo_inference_defaults.py CHECKPOINT [--set max_instances=N]
        [--set tta=true|false] [--set centre_prior=SIGMA] [--retune-threshold]

``medseg photo predict`` reads ``max_instances`` (0 = keep all), ``tta`` (flip test-time
augmentation) and ``centre_prior`` (0 = off) from the checkpoint unless given on its command
line; ``medseg photo train`` writes them from the config. This sets them on a checkpoint
trained before those keys existed (or changes them) without touching the weights; the file is
rewritten atomically. ``--retune-threshold`` re-picks the stored score threshold from the
checkpoint's own training-photo table (:func:`medseg.photo.evaluate.pick_threshold`).
The work is :func:`medseg.photo.checkpoint.update_prediction_defaults`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from medseg.errors import MedsegError
from medseg.photo.checkpoint import update_prediction_defaults
from medseg.photo.config import parse_overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="max_instances=N (0 keeps all), tta=true|false, centre_prior=SIGMA (0 = off)",
    )
    parser.add_argument(
        "--retune-threshold",
        action="store_true",
        help="re-pick the score threshold from the stored training-photo table",
    )
    args = parser.parse_args(argv)
    try:
        info = update_prediction_defaults(
            args.checkpoint,
            parse_overrides(args.overrides),
            retune_threshold=args.retune_threshold,
        )
    except MedsegError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    settings = {k: v for k, v in info.prediction_defaults().items() if k != "score_threshold"}
    sys.stdout.write(
        f"{args.checkpoint}: inference defaults {json.dumps(settings)}, "
        f"score threshold {info.score_threshold}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
