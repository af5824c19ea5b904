"""Benchmark: seconds per training step of the hn_oar networks, float32 vs bfloat16 autocast.

The peer is the same step in plain float32 (what a MONAI training loop does by default on a
CPU); medseg's loop uses bfloat16 autocast on CPUs with native bf16 (``optim.amp: true``).
Every variant runs in this process, one after the other, with the same random batch:
2 × 1 × 48 × 64 × 64 patches (the shipped configs' ``samples_per_case × roi_size``), 8 classes,
Dice + CE loss (+ the SRM terms for the ``+srm`` rows), backward, AdamW step.

Arms (``--arms``): ``unet`` (U-Net 16–128, the shipped network), ``unet-wide`` (32–256),
``fcn``, ``unet+srm``, ``fcn+srm``, ``dynunet`` (nnU-Net's U-Net 16–128) and ``dynunet+ds`` (with
two deep-supervision heads, their loss weighted as in training).

    .venv/bin/python benchmarks/training.py [--threads 1] [--steps 6] [--arms unet,fcn,...]
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

from medseg.models import ShapeRegularizedLoss, build_model
from medseg.models.networks import deep_supervision_loss
from medseg.runtime import autocast, cpu_has_native_bf16

logger = logging.getLogger("bench.training")

ROI = (48, 64, 64)
K = 8
ARMS = ("unet", "unet-wide", "fcn", "unet+srm", "fcn+srm", "dynunet", "dynunet+ds")
DEFAULT_ARMS = "unet,fcn,unet+srm,fcn+srm"


def _network(arm: str) -> torch.nn.Module:
    channels = [32, 64, 128, 256] if arm == "unet-wide" else [16, 32, 64, 128]
    if arm.startswith("fcn"):
        return build_model("fcn3d", in_channels=1, out_channels=K, channels=channels)
    if arm.startswith("dynunet"):
        heads = 2 if arm.endswith("+ds") else 0
        return build_model(
            "dynunet3d", in_channels=1, out_channels=K, channels=channels, deep_supervision=heads
        )
    return build_model("unet3d", in_channels=1, out_channels=K, channels=channels, num_res_units=1)


def step_seconds(arm: str, dtype: torch.dtype | None, steps: int) -> float:
    """Median seconds per step (after two warm-up steps)."""
    torch.manual_seed(0)
    net = _network(arm)
    srm = None
    if arm.endswith("+srm"):
        srm = build_model(
            "srm", in_channels=K, out_channels=K, channels=[16, 32], latent_channels=16
        )
    loss_fn = ShapeRegularizedLoss(
        srm,  # type: ignore[arg-type]
        lambda_latent=0.1 if srm is not None else 0.0,
        lambda_recon=0.2 if srm is not None else 0.0,
        autocast_dtype=dtype,
    )
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.rand(2, 1, *ROI)
    y = torch.randint(0, K, (2, 1, *ROI))
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        with autocast("cpu", dtype):
            logits = net(x)
        if logits.ndim == 6:  # deep supervision: full-resolution logits first, then the heads
            loss, _ = deep_supervision_loss(
                loss_fn(logits[:, 0].float(), y), logits[:, 1:], lambda h: loss_fn.seg(h, y)
            )
        else:
            loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--arms", default=DEFAULT_ARMS, help=f"comma-separated, of {', '.join(ARMS)}")
    args = ap.parse_args()
    arms = args.arms.split(",")
    unknown = set(arms) - set(ARMS)
    if unknown:
        ap.error(f"unknown arms {sorted(unknown)}; choose from {', '.join(ARMS)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    if not cpu_has_native_bf16():
        logger.warning("this CPU has no native bf16: the bf16 rows run emulated (slower)")
    logger.info(
        "threads %d, batch 2 x 1 x %s, %d classes", args.threads, "x".join(map(str, ROI)), K
    )
    logger.info("| arm | float32 s/step | bf16 s/step | float32 / bf16 |")
    logger.info("|---|---|---|---|")
    for arm in arms:
        f32 = step_seconds(arm, None, args.steps)
        b16 = step_seconds(arm, torch.bfloat16, args.steps)
        logger.info("| %s | %.3f | %.3f | %.2fx |", arm, f32, b16, f32 / b16)


if __name__ == "__main__":
    main()
