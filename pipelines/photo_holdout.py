"""Thin launcher: evaluate a photo model on the held-out photos of a training run.

    .venv/bin/python pipelines/photo_holdout.py RUN_DIR OUT_DIR [--model wound|lesion|PATH] [--bf16]
        [--max-instances N] [--tta | --no-tta] [--centre-prior SIGMA]

Predicts the held-out photos of ``RUN_DIR/split.json`` at full resolution (EXIF applied) into
``OUT_DIR/pred`` and scores them against their reference masks (table on stdout,
``OUT_DIR/scores.json``): :func:`medseg.photo.crossval.evaluate_held_out`. The prediction
options are those of ``medseg photo predict``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from medseg.errors import MedsegError
from medseg.photo.crossval import evaluate_held_out
from medseg.photo.evaluate import scores_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--model", default=None, help="default: RUN_DIR/final.pt")
    parser.add_argument("--bf16", action="store_true", help="predict with bfloat16 autocast")
    parser.add_argument("--max-instances", type=int, help="override the model's max_instances")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--centre-prior", type=float, help="override the model's centre_prior")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        scores, summary = evaluate_held_out(
            args.run_dir,
            args.out_dir,
            model=args.model,
            bf16=args.bf16,
            max_instances=args.max_instances,
            tta=args.tta,
            centre_prior=args.centre_prior,
        )
    except MedsegError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    sys.stdout.write(scores_table(scores, summary) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
