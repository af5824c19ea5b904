"""``medseg train CONFIG [--resume CKPT]``: train a model from a YAML config."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add the ``train`` sub-command."""
    p = subparsers.add_parser(
        "train",
        help="train a segmentation model (plain or SRM-regularised) from a YAML config",
        description=(
            "Train from a YAML config (see pipelines/train_hn_oar_*.yaml). Writes best.pt, "
            "last.pt (resumable), log.csv, learning_curve.png, config.json and cases.json "
            "to the config's output_dir."
        ),
    )
    p.add_argument("config", help="training YAML file")
    p.add_argument("--resume", metavar="CKPT", help="continue from a run's last.pt")
    p.add_argument("--output-dir", help="override output_dir")
    p.add_argument("--epochs", type=int, help="override optim.epochs")
    p.add_argument("--max-cases", type=int, help="use only the first N cases (smoke runs)")
    p.add_argument(
        "--fold",
        type=int,
        help="override data.fold (cross-validation; fills {fold} in output_dir/srm.checkpoint)",
    )
    p.add_argument("--max-minutes", type=float, help="override optim.max_minutes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handler: load the config, train, report where the checkpoints are."""
    from tqdm import tqdm

    from medseg.errors import ConfigError
    from medseg.training import load_train_config, train

    if args.resume is not None and not Path(args.resume).is_file():
        raise ConfigError(
            f"--resume {args.resume}: no such checkpoint file; give the last.pt of an earlier "
            "run (in its output_dir)."
        )
    overrides: dict[str, Any] = {}
    if args.output_dir:
        # a path given on the command line is relative to the working directory, not the config
        overrides["output_dir"] = str(Path(args.output_dir).resolve())
    optim: dict[str, Any] = {}
    if args.epochs is not None:
        if args.epochs < 1:
            raise ConfigError(f"--epochs {args.epochs}: give at least 1 epoch.")
        optim["epochs"] = args.epochs
    if args.max_minutes is not None:
        optim["max_minutes"] = args.max_minutes
    if optim:
        overrides["optim"] = optim
    data: dict[str, Any] = {}
    if args.max_cases is not None:
        data["max_cases"] = args.max_cases
    if args.fold is not None:
        data["fold"] = args.fold
    if data:
        overrides["data"] = data
    cfg = load_train_config(args.config, overrides)
    bar = None if args.no_progress else tqdm(desc=cfg.name, unit="step", dynamic_ncols=True)

    def progress(step: int, total: int, info: dict[str, float]) -> None:
        if bar is None:
            return
        bar.total = total
        bar.n = step
        bar.set_postfix(epoch=int(info["epoch"]), loss=f"{info['loss']:.3f}", refresh=False)
        bar.refresh()

    try:
        result = train(cfg, resume=args.resume, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    dice = "n/a" if result.best_mean_dice is None else f"{result.best_mean_dice:.3f}"
    logger.info(
        "done: %d epochs, %d steps in %.1f min; best validation mean Dice %s; best %s, last %s",
        result.epochs_done,
        result.steps_done,
        result.elapsed_s / 60,
        dice,
        result.best_checkpoint,
        result.last_checkpoint,
    )
    return 0
