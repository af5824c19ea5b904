"""Score trained hn_oar runs on their validation patients (Dice, HD95 per organ) → JSON.

Usage: python pipelines/evaluate_hn_oar.py OUT.json RUN_DIR [RUN_DIR ...] [--checkpoint last.pt]
Each RUN_DIR is a training output folder (best.pt/last.pt, cases.json, config.json); each run is
scored raw and with largest-component post-processing (name + '+lcc'), through the Predictor
path of `medseg segment`. Thin launcher: the logic is medseg.training.report.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from medseg.training.report import evaluate_runs, results_table


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("runs", type=Path, nargs="+")
    p.add_argument("--checkpoint", default="best.pt")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results = evaluate_runs(args.runs, checkpoint=args.checkpoint, previous=previous)
    args.out.write_text(json.dumps(results, indent=1))
    for run in args.runs:
        print(results_table(results, [run.name, f"{run.name}+lcc"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
