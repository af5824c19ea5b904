"""Thin launcher: k-fold cross-validation of a photo Mask R-CNN config (train + held-out eval).

    taskset -c 1 .venv/bin/python pipelines/photo_cv.py CONFIG OUT_DIR [--folds 0 1 2 3 4]
        [--iterations N] [--set KEY=VALUE ...]

For each fold k (group folds of ``split_pairs``, ``round(1 / holdout_fraction)`` of them; a
photo series never spans both sides) it trains ``CONFIG`` with ``fold: k`` into
``OUT_DIR/fold<k>`` (skipped when ``final.pt`` exists, resumed from ``last.pt`` otherwise), then
runs ``pipelines/photo_holdout.py`` on that fold's held-out photos at full resolution into
``OUT_DIR/fold<k>/eval``. Per-fold figures, their mean and the instances predicted on held-out
photos whose reference is empty (no wound/lesion) go to ``OUT_DIR/cv_summary.json`` and stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from photo_holdout import run as holdout

from medseg.photo.training import load_train_config, train


def fold_figures(fold_dir: Path) -> dict[str, Any]:
    """Summary of one fold's full-resolution held-out evaluation."""
    scores = json.loads((fold_dir / "eval" / "scores.json").read_text())
    preds = json.loads((fold_dir / "eval" / "pred" / "predictions.json").read_text())
    instances = {img["stem"]: len(img["instances"]) for img in preds["images"]}
    empty_ref = [s["name"] for s in scores["images"] if s["ref_area_px"] == 0]
    log = (fold_dir / "log.csv").read_text().splitlines()
    minutes = sum(float(row.split(",")[-1]) for row in log[1:]) / 60
    summary = scores["summary"]
    return {
        "n_held_out": summary["n_images"],
        "mean_dice": summary["mean_dice"],
        "mean_jaccard": summary["mean_jaccard"],
        "median_dice": summary["median_dice"],
        "thresholded_jaccard_0.65": summary["thresholded_jaccard_0.65"],
        "n_nothing_predicted": sum(1 for s in scores["images"] if s["pred_area_px"] == 0),
        "empty_reference_instances": {name: instances[name] for name in empty_ref},
        "score_threshold": preds["score_threshold"],
        "train_minutes": round(minutes, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--iterations", type=int, help="override the config's iterations")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a top-level config key (VALUE parsed as YAML), e.g. --set image_size=256",
    )
    args = parser.parse_args()
    overrides: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    per_fold: dict[str, Any] = {}
    for fold in args.folds:
        fold_dir = args.out_dir / f"fold{fold}"
        if not (fold_dir / "final.pt").is_file():
            config = load_train_config(
                args.config,
                output_dir=str(fold_dir),
                fold=fold,
                iterations=args.iterations,
                **overrides,
            )
            start = time.monotonic()
            train(config, resume=(fold_dir / "last.pt").is_file())
            logging.info("fold %d trained in %.1f min", fold, (time.monotonic() - start) / 60)
        if not (fold_dir / "eval" / "scores.json").is_file():
            code = holdout(fold_dir, fold_dir / "eval", str(fold_dir / "final.pt"))
            if code:
                return code
        per_fold[str(fold)] = fold_figures(fold_dir)
    keys = ("mean_dice", "mean_jaccard", "thresholded_jaccard_0.65")
    result = {
        "config": str(args.config),
        "folds": per_fold,
        "mean_over_folds": {k: float(np.mean([f[k] for f in per_fold.values()])) for k in keys},
        "sd_over_folds": {k: float(np.std([f[k] for f in per_fold.values()])) for k in keys},
    }
    (args.out_dir / "cv_summary.json").write_text(json.dumps(result, indent=2))
    print("| fold | photos | mean Dice | mean Jaccard | thr. Jaccard | nothing predicted |")
    print("|---|---|---|---|---|---|")
    for fold, f in per_fold.items():
        print(
            f"| {fold} | {f['n_held_out']} | {f['mean_dice']:.3f} | {f['mean_jaccard']:.3f} | "
            f"{f['thresholded_jaccard_0.65']:.3f} | {f['n_nothing_predicted']} |"
        )
    m, sd = result["mean_over_folds"], result["sd_over_folds"]
    print(
        f"| mean ± sd | | {m['mean_dice']:.3f} ± {sd['mean_dice']:.3f} | "
        f"{m['mean_jaccard']:.3f} ± {sd['mean_jaccard']:.3f} | "
        f"{m['thresholded_jaccard_0.65']:.3f} | |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
