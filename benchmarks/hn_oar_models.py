"""Benchmark: seconds per CT of head-and-neck checkpoints through the shipped Predictor path.

Each checkpoint predicts the same OpenKBP CTs with the default ``InferenceConfig`` (what
``medseg segment`` runs), in this process, the checkpoints alternating per CT so that they see
the same load; the first CT is a warm-up and is not timed. The peer is the shipped ``hn_oar``.

    .venv/bin/python benchmarks/hn_oar_models.py CKPT [CKPT ...] [--cases A,B] [--threads 1]
"""

from __future__ import annotations

import argparse
import logging
import statistics as st
import time
from pathlib import Path

import torch

from medseg.inference import InferenceConfig, Predictor
from medseg.io.openkbp import load_openkbp_ct
from medseg.models import load_checkpoint

logger = logging.getLogger("bench.hn_oar_models")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "openkbp_hn_ct" / "train-pats"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", help="checkpoint files (the shipped hn_oar is added)")
    ap.add_argument(
        "--cases", default="pt_112,pt_13,pt_59", help="OpenKBP patients, comma-separated"
    )
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("medseg").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    names = ["hn_oar", *args.checkpoints]
    predictors = {}
    for name in names:
        _, info = load_checkpoint(name)
        predictor = Predictor.from_checkpoint(name, "cpu", config=InferenceConfig())
        predictors[name] = (predictor, info.model_name)
    cts = [load_openkbp_ct(DATA / c) for c in args.cases.split(",")]
    times: dict[str, list[float]] = {n: [] for n in names}
    for i, ct in enumerate([cts[0], *cts]):
        for name, (predictor, _) in predictors.items():
            t0 = time.perf_counter()
            predictor.predict(ct)
            if i > 0:
                times[name].append(time.perf_counter() - t0)
    peer = st.median(times["hn_oar"])
    logger.info("threads %d, %d CTs (%s), median s per CT", args.threads, len(cts), args.cases)
    logger.info("| checkpoint | network | s per CT | vs hn_oar |")
    logger.info("|---|---|---|---|")
    for name in names:
        med = st.median(times[name])
        logger.info("| %s | %s | %.2f | %.2fx |", name, predictors[name][1], med, med / peer)


if __name__ == "__main__":
    main()
