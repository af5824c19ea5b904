"""Fit the review model (training statistics + review SRM) beside a segmentation checkpoint.

Run (the files shipped with hn_oar: statistics and SRM from the 20 complete patients the
segmentation model of commit 1df5ac2 was trained on):

    nice -n 10 .venv/bin/python pipelines/qa_train.py runs/hn_oar_v1.pt \
        --qa-json medseg/weights/hn_oar_qa.json --srm medseg/weights/hn_oar_srm.pt
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from medseg.models.checkpoint import read_checkpoint
from medseg.qa.model import fit_review_model
from medseg.qa.shape import ShapeTrainConfig
from medseg.training.config import DataConfig
from medseg.training.data import discover_cases, split_cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("checkpoint", help="segmentation checkpoint; its training cases are used")
    ap.add_argument("--qa-json", required=True)
    ap.add_argument("--srm", required=True)
    ap.add_argument("--steps", type=int, default=ShapeTrainConfig.steps)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    _, info = read_checkpoint(args.checkpoint)
    data = DataConfig(**{k: v for k, v in info.config["data"].items()})
    by_id = {c.id: c for c in discover_cases(data)}
    train_ids, _ = split_cases(list(by_id), data)
    folders = [by_id[c].folder for c in train_ids if by_id[c].available == tuple(data.labels)]
    model = fit_review_model(
        folders,
        list(data.labels),
        qa_json=args.qa_json,
        srm_path=args.srm,
        spec=info.preprocessing,
        shape_config=ShapeTrainConfig(steps=args.steps),
        info={
            "segmentation_model": Path(args.checkpoint).name,
            "case_list_hash": info.case_list_hash,
        },
    )
    print(f"review model from {len(folders)} patients: {args.qa_json}, {args.srm}")
    for name, cal in (model.shape.calibration if model.shape else {}).items():
        print(
            f"  {name:14s} SRM error on training shapes: median {cal['q50']:.3f}, "
            f"q95 {cal['q95']:.3f}"
        )


if __name__ == "__main__":
    main()
