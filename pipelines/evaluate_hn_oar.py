"""Score trained hn_oar runs on their held-out fold (Dice, HD95 per organ) → JSON + Markdown.

Usage: python pipelines/evaluate_hn_oar.py OUT.json RUN_DIR [RUN_DIR ...]
Scores each run raw and with largest-connected-component post-processing (name + '+lcc').
Each RUN_DIR is a training output folder (best.pt + cases.json). Thin launcher: the logic is
medseg.training.evaluate.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np

from medseg.training.evaluate import evaluate_checkpoint
from medseg.training.loop import _seed_everything

ROOT = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "openkbp_hn_ct" / "train-pats"
)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO)
    _seed_everything(0)
    out_path, runs = Path(argv[0]), [Path(a) for a in argv[1:]]
    results = json.loads(out_path.read_text()) if out_path.is_file() else {}
    for run in runs:
        cases = json.loads((run / "cases.json").read_text())["val"]
        scores = evaluate_checkpoint(
            run / "best.pt", [ROOT / c for c in cases], largest_component=(False, True)
        )
        for lcc in (False, True):
            sel = [s for s in scores if s.largest_component == lcc]
            name = run.name + ("+lcc" if lcc else "")
            results[name] = {
                "cases": cases,
                "dice": {s.case: s.dice for s in sel},
                "hd95_mm": {s.case: s.hd95_mm for s in sel},
                "seconds": {s.case: s.seconds for s in sel},
            }
            organs = list(sel[0].dice)
            d = np.array([[s.dice[o] for o in organs] for s in sel])
            h = np.array([[s.hd95_mm[o] for o in organs] for s in sel])
            print(f"{name}: mean Dice {d.mean():.3f}, mean HD95 {h.mean():.1f} mm")
            for i, o in enumerate(organs):
                dice, sd, hd = d[:, i].mean(), d[:, i].std(), h[:, i].mean()
                print(f"  {o:14s} Dice {dice:.3f} ± {sd:.3f}  HD95 {hd:.1f} mm")
        out_path.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
