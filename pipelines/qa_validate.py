"""Validate the review flags on patients the segmentation model never saw (docs/qa.md).

Run (after pipelines/qa_predict.py cached the predictions of runs/hn_oar_v1.pt):

    nice -n 10 .venv/bin/python pipelines/qa_validate.py runs/qa/pred_v1 \
        --qa-json medseg/weights/hn_oar_qa.json --out runs/qa/validation.json
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from medseg.io.atomic import write_atomic
from medseg.qa.model import load_review_model, model_validation_dice
from medseg.qa.validation import SCORES, flag_performance, validation_table

ROOTS = (
    Path(__file__).resolve().parents[2] / "shared/data/openkbp_hn_ct/train-pats",
    Path(__file__).resolve().parents[2] / "shared/data/openkbp_hn_ct_partial/train-pats",
)


def _validation_cases(checkpoint: str) -> list[str]:
    from medseg.models.checkpoint import read_checkpoint
    from medseg.training.config import DataConfig
    from medseg.training.data import discover_cases, split_cases

    _, info = read_checkpoint(checkpoint)
    data = DataConfig(**dict(info.config["data"]))
    _, val = split_cases([c.id for c in discover_cases(data)], data)
    return val


def _fmt(entry: dict[str, Any], key: str) -> str:
    value = entry.get(key)
    if value is None:
        return "–"
    ci = entry.get("ci95", {}).get(key)
    return f"{value:.3f}" + (f" ({ci[0]:.2f}–{ci[1]:.2f})" if ci else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("cache_dir")
    ap.add_argument("--qa-json", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument(
        "--segmentation-checkpoint",
        help="the model that made the predictions: its validation Dice feeds the model flag, "
        "and its validation patients (where that Dice was measured) are reported apart",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    model = load_review_model(args.qa_json)
    prior_cases: set[str] = set()
    if args.segmentation_checkpoint:
        model.model_dice = model_validation_dice(args.segmentation_checkpoint)
        prior_cases = set(_validation_cases(args.segmentation_checkpoint))
    cache = sorted(Path(args.cache_dir).glob("*.npz"))
    folders = []
    for c in cache:
        folders.append(next(r / c.stem for r in ROOTS if (r / c.stem).is_dir()))
    rows = validation_table(cache, folders, model)
    held = [r for r in rows if r["case"] not in prior_cases]
    results = {
        "dice": flag_performance(held, n_boot=args.boot),
        "dice_or_hd95": flag_performance(held, hd95_bad_mm=10.0, n_boot=args.boot),
        "dice_all_patients": flag_performance(rows, n_boot=args.boot),
    }
    doc = {"rows": rows, "results": results, "thresholds": model.thresholds}
    write_atomic(args.out, lambda t: t.write_text(json.dumps(doc, indent=1)))
    for name, res in results.items():
        print(
            f"\n{name} -- {res['definition']}: {res['bad']} bad of {res['contours']} contours, "
            f"{res['patients']} patients"
        )
        print("| score | AUC (95% CI) | sensitivity (95% CI) | specificity (95% CI) | flagged |")
        print("|---|---|---|---|---|")
        for key, e in res["scores"].items():
            cells = " | ".join(_fmt(e, k) for k in ("auc", "sensitivity", "specificity"))
            print(f"| {SCORES[key]} | {cells} | {e.get('flagged', '–')} |")
        print("| organ | contours | bad | flagged | AUC |")
        print("|---|---|---|---|---|")
        for organ, e in res["per_organ"].items():
            print(f"| {organ} | {e['contours']} | {e['bad']} | {e['flagged']} | {e['auc']:.3f} |")


if __name__ == "__main__":
    main()
