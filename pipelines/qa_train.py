"""Fit the review model (training statistics + review SRM) beside a segmentation checkpoint.

The statistics (volume, side, components) come from every training patient of the checkpoint,
partially contoured ones for the organs they have; the review SRM learns whole organ sets from
the completely contoured ones.

Run (the files shipped with hn_oar: the 150 training patients of the shipped model, its SRM
from the 20 complete ones among them):

    nice -n 10 .venv/bin/python pipelines/qa_train.py medseg/weights/hn_oar.pt \
        --qa-json medseg/weights/hn_oar_qa.json --srm medseg/weights/hn_oar_srm.pt --reuse-srm

(--reuse-srm: the shipped SRM was trained on exactly these 20 complete patients already.)

The review model of the validation in docs/qa.md (the previous model's 20 training patients):

    nice -n 10 .venv/bin/python pipelines/qa_train.py runs/hn_oar_v1.pt \
        --qa-json runs/qa/hn_oar_v1_qa.json --srm runs/qa/hn_oar_v1_srm.pt
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from medseg.models.checkpoint import read_checkpoint
from medseg.qa.model import fit_review_model
from medseg.qa.shape import ShapeModel, ShapeTrainConfig
from medseg.training.config import DataConfig
from medseg.training.data import discover_cases, split_cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("checkpoint", help="segmentation checkpoint; its training cases are used")
    ap.add_argument("--qa-json", required=True)
    ap.add_argument("--srm", required=True)
    ap.add_argument("--steps", type=int, default=ShapeTrainConfig.steps)
    ap.add_argument(
        "--reuse-srm",
        action="store_true",
        help="keep the SRM already at --srm when it was trained on the same complete patients "
        "(only the statistics are refitted)",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    _, info = read_checkpoint(args.checkpoint)
    data = DataConfig(**{k: v for k, v in info.config["data"].items()})
    by_id = {c.id: c for c in discover_cases(data)}
    train_ids, _ = split_cases(list(by_id), data)
    every = [by_id[c].folder for c in train_ids]
    folders = [by_id[c].folder for c in train_ids if by_id[c].available == tuple(data.labels)]
    shape = None
    if args.reuse_srm:
        _, srm_info = read_checkpoint(args.srm)
        names = sorted(Path(f).name for f in folders)
        if sorted(srm_info.metrics.get("train_cases", [])) != names:
            raise SystemExit(
                f"{args.srm} was trained on other patients than the {len(names)} complete "
                "training patients of this checkpoint; run without --reuse-srm to train one."
            )
        shape = ShapeModel.load(args.srm)
    model = fit_review_model(
        folders,
        list(data.labels),
        statistics_folders=every,
        shape=shape,
        qa_json=args.qa_json,
        srm_path=args.srm,
        spec=info.preprocessing,
        shape_config=ShapeTrainConfig(steps=args.steps),
        info={
            "segmentation_model": Path(args.checkpoint).name,
            "case_list_hash": info.case_list_hash,
        },
    )
    print(
        f"review model: statistics from {len(every)} patients, SRM from {len(folders)} complete "
        f"ones: {args.qa_json}, {args.srm}"
    )
    for name, cal in (model.shape.calibration if model.shape else {}).items():
        print(
            f"  {name:14s} SRM error on training shapes: median {cal['q50']:.3f}, "
            f"q95 {cal['q95']:.3f}"
        )


if __name__ == "__main__":
    main()
