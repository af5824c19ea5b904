"""Train a photo Mask R-CNN from a YAML config: augmentation, checkpoints, resume, CSV log.

Outputs in ``output_dir``: ``config.json`` (resolved config + versions), ``split.json`` (the
train / held-out photo lists), ``log.csv`` (one row per evaluation period -- ``eval_every``
optimizer steps, or an epoch when unset -- with losses, learning rate, held-out
Dice/Jaccard, seconds), ``learning_curve.png``, ``last.pt`` (resumable: model, optimizer,
epoch) and, at the end, ``final.pt`` (float16 weights + spec + metrics; what ``--model PATH``
and the shipped ``medseg/weights/*.pt`` files are).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import platform
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torchvision
from torch import nn
from torchvision.models.detection import MaskRCNN

from medseg.io.atomic import write_atomic
from medseg.photo.augment import augment_pair, random_crop, resize_pair
from medseg.photo.checkpoint import read_checkpoint, save_checkpoint
from medseg.photo.config import TrainConfig, load_train_config
from medseg.photo.datasets import (
    PhotoPair,
    find_pairs,
    instances_from_mask,
    read_mask,
    read_photo,
    split_pairs,
)
from medseg.photo.evaluate import dice_jaccard, pick_threshold
from medseg.photo.inference import keep_ranked, photo_autocast, predict_array, union_mask
from medseg.photo.models import ModelSpec, build_maskrcnn
from medseg.runtime import select_device

logger = logging.getLogger(__name__)

__all__ = [  # TrainConfig and load_train_config live in medseg.photo.config (re-exported)
    "TrainConfig",
    "load_train_config",
    "recalibrate_batchnorm",
    "train",
    "tune_score_threshold",
]


def _load_arrays(
    pairs: list[PhotoPair], size: int
) -> list[tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]]:
    """Photos + masks resized so the shorter side is ``size`` (aspect kept)."""
    out = []
    for pair in pairs:
        image, mask = read_photo(pair.image), read_mask(pair.mask)
        scale = size / min(mask.shape)
        shape = (round(mask.shape[0] * scale), round(mask.shape[1] * scale))
        out.append(resize_pair(image, mask, shape))
    return out


def _target(mask: npt.NDArray[np.bool_], min_area: int) -> dict[str, torch.Tensor]:
    masks, boxes = instances_from_mask(mask, min_area_px=min_area)
    return {
        "boxes": torch.from_numpy(boxes).reshape(-1, 4),
        "labels": torch.ones(len(boxes), dtype=torch.int64),
        "masks": torch.from_numpy(masks.astype(np.uint8)),
    }


def _lr_factor(iteration: int, total: int, warmup: int) -> float:
    if iteration < warmup:
        return 0.001 + (1 - 0.001) * iteration / max(1, warmup)
    progress = (iteration - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def recalibrate_batchnorm(
    model: MaskRCNN,
    data: list[tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]],
    batch_size: int = 4,
) -> int:
    """Recompute BatchNorm running statistics of the backbone on un-augmented training photos.

    From scratch the weights move fast, so the exponential running averages lag behind them and
    eval-mode outputs collapse (no detection above 0.05 although train-mode scores are ~0.5).
    This "precise BN" pass runs the backbone (the only part with BatchNorm) in train mode with a
    cumulative average (``momentum=None``) and restores the momenta; returns the number of
    BatchNorm layers updated.
    """
    layers = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    if not layers or not data:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in layers]
    device = next(model.parameters()).device
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    for start in range(0, len(data), batch_size):
        images = [
            torch.from_numpy(np.array(im)).permute(2, 0, 1).float().div(255).to(device)
            for im, _ in data[start : start + batch_size]
        ]
        batch, _ = model.transform(images)
        model.backbone(batch.tensors)
    for m, momentum in zip(layers, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)
    return len(layers)


def _optimizer(config: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params, lr=config.learning_rate, momentum=config.momentum, weight_decay=config.weight_decay
    )


@contextlib.contextmanager
def _input_size(model: MaskRCNN, crop_size: int | None) -> Iterator[None]:
    """Let ``crop_size`` crops through the model's resize unscaled (no-op for ``None``)."""
    if crop_size is None:
        yield
        return
    transform = model.transform
    saved = transform.min_size, transform.max_size
    transform.min_size, transform.max_size = (crop_size,), crop_size
    try:
        yield
    finally:
        transform.min_size, transform.max_size = saved


def _train_step(
    model: MaskRCNN,
    batch: list[tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]],
    *,
    config: TrainConfig,
    rng: np.random.Generator,
    device: torch.device,
    bf16: bool,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Augment a batch and run the forward pass; returns the loss dict and its sum."""
    images, targets = [], []
    for raw_image, raw_mask in batch:
        image, mask = augment_pair(raw_image, raw_mask, config.augment, rng)
        if config.crop_size is not None:
            image, mask = random_crop(image, mask, config.crop_size, rng)
        images.append(torch.from_numpy(image).permute(2, 0, 1).float().div(255).to(device))
        targets.append(
            {k: v.to(device) for k, v in _target(mask, config.min_instance_area_px).items()}
        )
    with photo_autocast(device, bf16), _input_size(model, config.crop_size):
        losses = model(images, targets)
    losses = {k: v.float() for k, v in losses.items()}
    loss = torch.stack(list(losses.values())).sum()
    return losses, loss


def _evaluate(
    model: MaskRCNN, data: list, threshold: float, bf16: bool, config: TrainConfig
) -> tuple[float, float]:
    scores = [
        dice_jaccard(
            predict_array(
                model,
                im,
                score_threshold=threshold,
                bf16=bf16,
                max_instances=config.max_instances,
                centre_prior=config.centre_prior,
            ).mask,
            m,
        )
        for im, m in data
    ]
    return float(np.mean([s[0] for s in scores])), float(np.mean([s[1] for s in scores]))


def tune_score_threshold(
    model: MaskRCNN,
    data: list[tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]],
    candidates: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7),
    *,
    bf16: bool = False,
    max_instances: int | None = None,
    centre_prior: float | None = None,
    tolerance: float = 0.005,
) -> tuple[float, dict[float, float]]:
    """Pick the instance score threshold with the best mean Dice on (training) photos.

    One forward pass per photo; the union mask is rebuilt for every candidate from the
    ``max_instances`` best instances above it (ranked with ``centre_prior`` when given, as
    :func:`~medseg.photo.inference.keep_ranked` does). Call it on training photos only, so held-out
    figures stay unbiased. The *highest* threshold within ``tolerance`` of the best mean Dice
    wins: the training photos all show a wound or lesion, so a lower threshold that wins by a
    hair there would buy nothing but false positives on photos without one.

    Returns
    -------
    best, table
        The chosen threshold and ``{threshold: mean Dice}``.
    """
    sums = dict.fromkeys(candidates, 0.0)
    for image, mask in data:
        found = predict_array(model, image, score_threshold=0.0, bf16=bf16).instances
        for t in candidates:
            chosen = keep_ranked(
                [inst.score for inst in found],
                [inst.mask for inst in found],
                score_threshold=t,
                max_instances=max_instances,
                centre_prior=centre_prior,
            )
            kept = [found[i] for i in chosen]
            sums[t] += dice_jaccard(union_mask(kept, mask.shape), mask)[0]
    table = {t: sums[t] / max(1, len(data)) for t in candidates}
    return pick_threshold(table, tolerance), table


def _plot(log_path: Path, png: Path) -> None:
    from medseg.plotting import new_figure

    with log_path.open() as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return
    steps = [int(r["iteration"]) for r in rows]
    fig, ax = new_figure((9, 3.5), 1, 2)
    ax[0].plot(steps, [float(r["loss"]) for r in rows], label="train loss")
    ax[0].plot(steps, [float(r["loss_mask"]) for r in rows], label="mask loss")
    ax[0].set_xlabel("iteration")
    ax[0].legend()
    ax[1].plot(steps, [float(r["val_dice"]) for r in rows], label="held-out Dice")
    ax[1].plot(steps, [float(r["val_jaccard"]) for r in rows], label="held-out Jaccard")
    ax[1].set_xlabel("iteration")
    ax[1].set_ylim(0, 1)
    ax[1].legend()
    fig.tight_layout()
    write_atomic(png, lambda tmp: fig.savefig(tmp, dpi=80, format="png"))


def _write_json(path: Path, data: Any) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=str)))


def _drop_rows_after(log_path: Path, epoch: int) -> None:
    """Keep only the ``log.csv`` rows of periods up to ``epoch`` (the resumed checkpoint's).

    A run killed after logging a period but before its checkpoint was saved would otherwise
    repeat that period's row on ``--resume``; a row cut short by the kill is dropped too.
    """
    if not log_path.is_file():
        return
    with log_path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or [])
        rows = list(reader)
    keep = [
        r
        for r in rows
        if str(r.get("epoch", "")).isdigit() and int(r["epoch"]) <= epoch and None not in r.values()
    ]
    if len(keep) == len(rows):
        return
    logger.warning(
        "%s: dropped %d row(s) logged after the checkpoint resumed from",
        log_path,
        len(rows) - len(keep),
    )

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=fields)
            writer.writeheader()
            writer.writerows(keep)

    write_atomic(log_path, write)


def train(config: TrainConfig, *, resume: bool = False) -> Path:
    """Run (or resume) training; returns the path of ``final.pt``.

    Raises
    ------
    ConfigError, InputError, ModelError
        Bad config, unreadable data or weights.
    """
    torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    out = Path(config.output_dir)
    device = select_device(config.device)
    pairs = [p for d in config.datasets for p in find_pairs(Path(config.data_root) / d)]
    train_pairs, held = split_pairs(
        pairs, holdout_fraction=config.holdout_fraction, seed=config.split_seed, fold=config.fold
    )
    out.mkdir(parents=True, exist_ok=True)  # only once the data is there: a bad input leaves none
    _write_json(
        out / "split.json",
        {"train": [str(p.image) for p in train_pairs], "held_out": [str(p.image) for p in held]},
    )
    _write_json(
        out / "config.json",
        {
            "config": asdict(config),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "python": platform.python_version(),
        },
    )
    logger.info("%d training / %d held-out photos", len(train_pairs), len(held))
    train_data = _load_arrays(train_pairs, config.image_size)
    held_data = _load_arrays(held, config.image_size)
    spec = ModelSpec(
        config.architecture, 2, config.image_size, (config.class_name,), config.mask_size
    )
    model = build_maskrcnn(
        spec.architecture,
        num_classes=2,
        image_size=spec.image_size,
        weights=config.weights,
        mask_size=spec.mask_size,
    ).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _optimizer(config, params)
    steps_per_epoch = max(1, len(train_data) // config.batch_size)
    total = config.iterations or steps_per_epoch * config.epochs
    eval_every = config.eval_every or steps_per_epoch
    start_epoch, iteration = 0, 0
    log_path = out / "log.csv"
    if resume and (out / "last.pt").is_file():
        state, _ = read_checkpoint(out / "last.pt")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, iteration = int(state["epoch"]), int(state["iteration"])
        logger.info("resumed from iteration %d (period %d)", iteration, start_epoch)
        _drop_rows_after(log_path, start_epoch)
    elif log_path.exists():
        log_path.unlink()
    rng = np.random.default_rng(config.seed + iteration)
    scaler = torch.amp.GradScaler(enabled=device.type == "cuda")
    bf16 = config.bf16 and device.type == "cpu"
    started = time.monotonic()
    order: list[int] = []
    for period in range(start_epoch, math.ceil(total / eval_every)):
        model.train()
        t0 = time.monotonic()
        sums: dict[str, float] = {}
        steps = 0
        while iteration < min(total, (period + 1) * eval_every):
            if len(order) < config.batch_size:
                order = [int(i) for i in rng.permutation(len(train_data))]
            batch = [train_data[order.pop()] for _ in range(config.batch_size)]
            losses, loss = _train_step(
                model, batch, config=config, rng=rng, device=device, bf16=bf16
            )
            for group in optimizer.param_groups:
                group["lr"] = config.learning_rate * _lr_factor(
                    iteration, total, config.warmup_iterations
                )
            iteration += 1
            optimizer.zero_grad()
            if not torch.isfinite(loss):
                logger.warning("non-finite loss at iteration %d; batch skipped", iteration)
                continue
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            steps += 1
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
        recalibrate_batchnorm(model, train_data[:64], config.batch_size)
        val_dice, val_jac = (
            _evaluate(model, held_data, config.score_threshold, bf16, config)
            if held_data
            else (float("nan"),) * 2
        )
        row = {
            "epoch": period + 1,
            "iteration": iteration,
            "lr": optimizer.param_groups[0]["lr"],
            **{k: round(v / max(1, steps), 5) for k, v in sums.items()},
            "val_dice": round(val_dice, 4),
            "val_jaccard": round(val_jac, 4),
            "seconds": round(time.monotonic() - t0, 1),
        }
        new = not log_path.exists()
        with log_path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        logger.info("period %d: %s", period + 1, row)
        save_checkpoint(
            out / "last.pt",
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "spec": spec.to_dict(),
                "epoch": period + 1,
                "iteration": iteration,
                "config": asdict(config),
            },
        )
        _plot(log_path, out / "learning_curve.png")
        if config.max_minutes is not None and time.monotonic() - started > 60 * config.max_minutes:
            logger.warning(
                "max_minutes=%s reached after iteration %d; stopping", config.max_minutes, iteration
            )
            break
    with log_path.open() as fh:
        last = list(csv.DictReader(fh))[-1]
    threshold, table = tune_score_threshold(
        model,
        train_data[::2],
        bf16=bf16,
        max_instances=config.max_instances,
        centre_prior=config.centre_prior,
    )
    logger.info(
        "score threshold %.2f (training-photo mean Dice by threshold: %s)", threshold, table
    )
    metrics = {
        "score_threshold": threshold,
        "train_dice_by_threshold": {str(k): round(v, 4) for k, v in table.items()},
        "held_out_dice": float(last["val_dice"]) if held else None,
        "held_out_jaccard": float(last["val_jaccard"]) if held else None,
        "epochs_trained": int(last["epoch"]),  # evaluation periods when `iterations` is set
        "iterations_trained": int(last["iteration"]),
        "n_train": len(train_pairs),
        "n_held_out": len(held),
        "note": "held-out figures: in-training evaluation at the training resolution and the "
        "config's score_threshold; see the model card for full-resolution figures",
    }
    return save_checkpoint(
        out / "final.pt",
        {
            "model": model.state_dict(),
            "spec": spec.to_dict(),
            "config": asdict(config),
            "metrics": metrics,
            "inference": {
                "max_instances": config.max_instances,
                "tta": config.tta,
                "centre_prior": config.centre_prior,
            },
        },
        half=True,
    )
