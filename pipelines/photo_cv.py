"""Thin launcher: k-fold cross-validation of a photo Mask R-CNN config (train + held-out eval).

    taskset -c 1 .venv/bin/python pipelines/photo_cv.py CONFIG OUT_DIR [--folds 0 1 2 3 4]
        [--set KEY=VALUE ...]

For each fold k (group folds of ``split_pairs``, ``round(1 / holdout_fraction)`` of them; a
photo series never spans both sides) it trains ``CONFIG`` with ``fold: k`` into
``OUT_DIR/fold<k>`` (skipped when ``final.pt`` exists, resumed from ``last.pt`` otherwise), then
predicts that fold's held-out photos at full resolution into ``OUT_DIR/fold<k>/eval``.
Per-fold figures, their mean and the instances predicted on held-out photos whose reference is
empty go to ``OUT_DIR/cv_summary.json``; the table to stdout. The work is
:func:`medseg.photo.crossval.run_cross_validation`; ``--set`` is the override style of
``medseg photo train`` (e.g. ``--set iterations=2000 --set image_size=256``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from medseg.errors import MedsegError
from medseg.photo.config import parse_overrides
from medseg.photo.crossval import format_cv_table, run_cross_validation


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override a config key (VALUE parsed as YAML), e.g. --set iterations=2000",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        result = run_cross_validation(
            args.config, args.out_dir, folds=args.folds, overrides=parse_overrides(args.overrides)
        )
    except MedsegError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    sys.stdout.write(format_cv_table(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
