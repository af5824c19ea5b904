"""Cache predictions of a checkpoint on OpenKBP patients for the QA flag validation.

Run (the 10 validation patients of runs/hn_oar_v1.pt, then the 140 partial patients)::

    V=../shared/data/openkbp_hn_ct/train-pats
    nice -n 10 .venv/bin/python pipelines/qa_predict.py runs/hn_oar_v1.pt runs/qa/pred_v1 \
        $V/pt_100 $V/pt_112 $V/pt_115 $V/pt_122 $V/pt_13 $V/pt_59 $V/pt_60 $V/pt_61 $V/pt_82 \
        $V/pt_96 ../shared/data/openkbp_hn_ct_partial/train-pats/pt_*
"""

from __future__ import annotations

import argparse
import logging

import torch

from medseg.qa.validation import predict_cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("checkpoint")
    ap.add_argument("cache_dir")
    ap.add_argument("cases", nargs="+")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    paths = predict_cases(args.checkpoint, args.cases, args.cache_dir)
    print(f"{len(paths)} predictions in {args.cache_dir}")


if __name__ == "__main__":
    main()
