"""Plain and SRM-regularised (two-stage) training loops.

``train(config)`` runs: (stage 1, when ``config.srm`` is set and its checkpoint does not exist
yet) train the shape autoencoder on ground-truth label patches; (stage 2) train the segmenter
with :class:`~medseg.models.ShapeRegularizedLoss` (plain Dice + CE when there is no SRM).
Patients with only some organs contoured train with :class:`~medseg.training.losses.
PartialLabelLoss` (``loss.partial``); with an SRM they also get its shape terms, against their
contours completed by the prediction for the organs they lack
(:func:`~medseg.training.losses.pseudo_complete_target`). Every ``optim.val_every`` epochs the
validation patients are segmented on their own grid by :class:`~medseg.inference.Predictor`
with the default :class:`~medseg.inference.InferenceConfig` (exactly what ``medseg segment``
runs) and scored with Dice; the best mean Dice is kept as ``best.pt``, the latest state as
``last.pt`` (resumable), with ``log.csv``, ``learning_curve.png``, ``config.json`` and
``cases.json`` beside them.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf
from torch import nn

from medseg.errors import ConfigError, ModelError
from medseg.io.atomic import write_atomic
from medseg.metrics import dice_per_label
from medseg.models import ShapeRegularizedLoss, build_model, load_checkpoint, save_checkpoint
from medseg.models.checkpoint import read_checkpoint
from medseg.models.networks import deep_supervision_loss
from medseg.runtime import autocast, autocast_dtype, select_device
from medseg.training.config import TrainConfig
from medseg.training.data import (
    Case,
    availability_vector,
    deterministic_transforms,
    discover_cases,
    label_only_transforms,
    random_transforms,
    split_cases,
)
from medseg.training.losses import PartialLabelLoss, pseudo_complete_target
from medseg.volume import LabelMap, LabelVolume, Volume

logger = logging.getLogger(__name__)

__all__ = ["TrainResult", "train"]

Progress = Callable[[int, int, dict[str, float]], None]


@dataclass(frozen=True)
class TrainResult:
    """Where a run left its checkpoints and how good the best one was."""

    output_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    best_mean_dice: float | None
    epochs_done: int
    steps_done: int
    elapsed_s: float
    stopped_early: bool


def _seed_everything(seed: int) -> None:
    from monai.utils import set_determinism

    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (global state used by MONAI transforms)
    torch.manual_seed(seed)
    set_determinism(seed=seed)


def _datasets(
    cfg: TrainConfig, train_cases: Sequence[Case], val_cases: Sequence[Case]
) -> tuple[Any, list[tuple[str, Volume, LabelVolume]]]:
    """Training dataset (cached, random patches) and the validation CTs on their own grids."""
    from monai.data import CacheDataset
    from monai.transforms import Compose

    from medseg.io.openkbp import load_openkbp_ct, load_openkbp_labels

    det = deterministic_transforms(cfg.data, cfg.preprocessing)
    labels = cfg.data.labels
    train_items = [
        {"case": c.folder, "id": c.id, "available": availability_vector(c, labels)}
        for c in train_cases
    ]
    train_ds = CacheDataset(
        train_items,
        Compose([*det, *random_transforms(cfg.preprocessing, cfg.optim)]),
        progress=False,
        num_workers=0,
    )
    val = [
        (c.id, load_openkbp_ct(c.folder), load_openkbp_labels(c.folder, labels)) for c in val_cases
    ]
    return train_ds, val


def _loader(ds: Any, batch_size: int, seed: int) -> Any:
    from monai.data import DataLoader, list_data_collate

    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=True,
        num_workers=0,
        collate_fn=list_data_collate,
        generator=g,
    )


def _onehot(label: torch.Tensor, k: int) -> torch.Tensor:
    return nnf.one_hot(label[:, 0].long(), k).permute(0, 4, 1, 2, 3).float()


def _train_srm(
    cfg: TrainConfig,
    k: int,
    device: torch.device,
    case_ids: list[str],
    val_ids: Sequence[str] = (),
) -> None:
    """Stage 1: fit the shape autoencoder to (noised) one-hot ground-truth patches."""
    from monai.data import CacheDataset
    from monai.losses import DiceCELoss
    from monai.transforms import Compose

    train_ds = CacheDataset(
        [{"case": c} for c in case_ids],
        Compose(label_only_transforms(cfg.data, cfg.preprocessing, cfg.optim)),
        progress=False,
        num_workers=0,
    )

    assert cfg.srm is not None
    srm_cfg = cfg.srm
    opts: dict[str, Any] = {
        "in_channels": k,
        "out_channels": k,
        "channels": list(srm_cfg.channels),
        "latent_channels": srm_cfg.latent_channels,
    }
    model = build_model("srm", **opts).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=srm_cfg.lr, weight_decay=1e-5)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    loader = _loader(train_ds, cfg.optim.batch_size, cfg.seed + 1)
    total = srm_cfg.epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (1 - s / max(1, total)) ** 0.9)
    t0 = time.monotonic()
    rows = []
    for epoch in range(srm_cfg.epochs):
        losses = []
        for batch in loader:
            label = batch["label"].to(device)
            x = _onehot(label, k)
            if srm_cfg.input_noise > 0:
                a = torch.rand(x.shape[0], 1, 1, 1, 1, device=device) * srm_cfg.input_noise
                noise = torch.softmax(3.0 * torch.randn_like(x), dim=1)
                x = (1 - a) * x + a * noise
            loss = loss_fn(model(x), label)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        rows.append({"epoch": epoch + 1, "srm_loss": float(np.mean(losses))})
        logger.info("SRM epoch %d/%d loss %.4f", epoch + 1, srm_cfg.epochs, rows[-1]["srm_loss"])
    metrics: dict[str, Any] = {
        "final_loss": rows[-1]["srm_loss"] if rows else None,
        "train_s": time.monotonic() - t0,
    }
    if val_ids:
        from medseg.training.evaluate import reconstruction_dice

        metrics["val_recon_dice"] = reconstruction_dice(
            model, cfg.data.labels, cfg.preprocessing, list(val_ids), device=device
        )
        logger.info(
            "SRM reconstruction Dice on %d held-out label maps: %s",
            len(val_ids),
            ", ".join(f"{n} {v:.3f}" for n, v in metrics["val_recon_dice"].items()),
        )
    save_checkpoint(
        srm_cfg.checkpoint,
        model,
        model_name="srm",
        model_options=opts,
        label_map=LabelMap.from_names(list(cfg.data.labels)),
        preprocessing=cfg.preprocessing,
        config=cfg.to_dict(),
        metrics={**metrics, "history": rows},
        case_ids=[Path(c).name for c in case_ids],
    )
    logger.info("SRM saved to %s (%.0f s)", srm_cfg.checkpoint, metrics["train_s"])


def _load_srm(cfg: TrainConfig, k: int, device: torch.device) -> nn.Module:
    assert cfg.srm is not None
    model, info = load_checkpoint(cfg.srm.checkpoint, device=device)
    if info.model_name != "srm" or info.model_options.get("out_channels") != k:
        raise ModelError(
            f"{cfg.srm.checkpoint}: expected an SRM over {k} classes; got {info.model_name} "
            f"with {info.model_options}."
        )
    ours, theirs = cfg.preprocessing, info.preprocessing
    if (
        not np.allclose(ours.spacing_mm, theirs.spacing_mm)
        or ours.orientation != theirs.orientation
    ):
        raise ModelError(
            f"{cfg.srm.checkpoint}: the SRM learned shapes at {theirs.spacing_mm} mm "
            f"({theirs.orientation}), this run segments at {ours.spacing_mm} mm "
            f"({ours.orientation}); shapes on another grid would regularise wrongly. Point "
            "srm.checkpoint to a new file to train an SRM on this grid."
        )
    return model


def _validate(
    model: nn.Module,
    val: Sequence[tuple[str, Volume, LabelVolume]],
    cfg: TrainConfig,
    device: torch.device,
    label_map: LabelMap,
) -> list[list[float]]:
    """Dice per organ of each validation patient, on its own grid, through the shipped path."""
    from medseg.inference import InferenceConfig, Predictor

    predictor = Predictor(
        model, cfg.preprocessing, label_map, device=device, config=InferenceConfig()
    )
    scores = []
    for _case, ct, ref in val:
        pred = predictor.predict(ct)
        scores.append(dice_per_label(pred.volume.array, ref.volume.array, label_map.ids))
    model.train()
    return scores


def _write_log(out: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    fields: list[str] = []
    for r in rows:
        fields += [f for f in r if f not in fields]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    text = buf.getvalue()
    write_atomic(out / "log.csv", lambda tmp: tmp.write_text(text))


def plot_learning_curve(rows: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """Train loss per epoch and validation mean Dice on a twin axis, saved as PNG."""
    from medseg.plotting import new_figure

    ep = [r["epoch"] for r in rows]
    fig, ax = new_figure((6, 3.5))
    ax.plot(ep, [r["train_loss"] for r in rows], color="tab:blue", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss", color="tab:blue")
    val = [(r["epoch"], r["val_mean_dice"]) for r in rows if r.get("val_mean_dice") is not None]
    if val:
        ax2 = ax.twinx()
        ax2.plot(*zip(*val, strict=True), "o-", color="tab:red", label="val mean Dice")
        ax2.set_ylabel("validation mean Dice", color="tab:red")
        ax2.set_ylim(0, 1)
    ax.set_title(title)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=80, format="png"))


def _read_resume(resume: str | os.PathLike[str], cfg: TrainConfig) -> dict[str, Any]:
    """The checkpoint to resume from, checked against the config before any work."""
    payload, info = read_checkpoint(resume)
    if info.model_name != cfg.model.name or "training_state" not in payload:
        raise ModelError(
            f"{resume}: cannot resume: it holds model {info.model_name!r} "
            f"{'without' if 'training_state' not in payload else 'with'} training state; "
            f"the config trains {cfg.model.name!r}. Pass the run's last.pt."
        )
    return dict(payload)


def train(
    cfg: TrainConfig,
    *,
    resume: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Run a training configuration (see module docstring). ``progress(step, total, info)``."""
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    _seed_everything(cfg.seed)
    device = select_device(cfg.device)
    # optim.amp: float16 on CUDA (with loss scaling), bfloat16 on CPUs with native bf16
    amp_dtype = autocast_dtype(device) if cfg.optim.amp else None
    logger.info("device %s, autocast %s", device, amp_dtype or "off (float32)")
    out = Path(cfg.output_dir)
    by_id = {c.id: c for c in discover_cases(cfg.data)}
    train_ids, val_ids = split_cases(list(by_id), cfg.data)
    train_cases = [by_id[c] for c in train_ids]
    val_cases = [by_id[c] for c in val_ids]
    labels = tuple(cfg.data.labels)
    partial = [c.id for c in train_cases if c.available != labels]
    incomplete_val = [c.id for c in val_cases if c.available != labels]
    if incomplete_val:
        raise ConfigError(
            f"validation patients {incomplete_val} lack contours of some organs; validate on "
            "completely contoured patients (data.val_cases or another fold)."
        )
    resumed = _read_resume(resume, cfg) if resume is not None else None
    # every check above runs before the run folder is made: a refused run leaves nothing
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "config.json", lambda t: t.write_text(json.dumps(cfg.to_dict(), indent=2)))
    cases_json = {
        "train": train_ids,
        "val": val_ids,
        "partial": {c.id: list(c.available) for c in train_cases if c.id in set(partial)},
    }
    write_atomic(out / "cases.json", lambda t: t.write_text(json.dumps(cases_json, indent=2)))
    logger.info(
        "%d training patients (%d partially contoured), %d validation",
        len(train_cases),
        len(partial),
        len(val_cases),
    )
    label_map = LabelMap.from_names(list(labels))
    k = len(label_map) + 1
    if cfg.srm is not None and not Path(cfg.srm.checkpoint).is_file():
        # stage 1 (labels only, complete patients: the SRM learns whole organ sets)
        complete = [c.folder for c in train_cases if c.available == labels]
        _train_srm(cfg, k, device, complete, [c.folder for c in val_cases])
    t_load = time.monotonic()
    train_ds, val_ds = _datasets(cfg, train_cases, val_cases)
    partial_loss = (
        PartialLabelLoss(exclusion_weight=cfg.loss.exclusion_weight)
        if cfg.loss.partial == "marginal"
        else None
    )
    logger.info(
        "cached %d+%d cases in %.0f s", len(train_cases), len(val_cases), time.monotonic() - t_load
    )

    srm_model = None
    if cfg.srm is not None:
        srm_model = _load_srm(cfg, k, device)
    lam1 = cfg.srm.lambda_latent if cfg.srm else 0.0
    lam2 = cfg.srm.lambda_recon if cfg.srm else 0.0
    loss_fn = ShapeRegularizedLoss(
        srm_model,  # type: ignore[arg-type]
        lambda_latent=lam1,
        lambda_recon=lam2,
        autocast_dtype=amp_dtype,
    )

    model_opts = {"in_channels": 1, "out_channels": k, **dict(cfg.model.options)}
    model_opts = json.loads(json.dumps(model_opts))  # tuples → lists, plain types
    model = build_model(cfg.model.name, **model_opts).to(device)
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay
    )
    loader = _loader(train_ds, cfg.optim.batch_size, cfg.seed)
    total_steps = cfg.optim.epochs * len(loader)
    # poly decay over the run; with optim.max_minutes the decay follows whichever of steps or
    # time is further along, so a time-limited run still ends with an annealed learning rate
    clock = {"elapsed": 0.0}
    limit_s = 60.0 * cfg.optim.max_minutes if cfg.optim.max_minutes else math.inf

    def poly(s: int) -> float:
        frac = max(s / max(1, total_steps), clock["elapsed"] / limit_s)
        return max(0.0, 1.0 - frac) ** 0.9

    sched = torch.optim.lr_scheduler.LambdaLR(opt, poly)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    rows: list[dict[str, Any]] = []
    epoch0, step, best, elapsed0 = 0, 0, -math.inf, 0.0
    if resumed is not None:
        payload = resumed
        model.load_state_dict(payload["state_dict"])
        st = payload["training_state"]
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        epoch0, step, best = int(st["epoch"]), int(st["step"]), float(st["best"])
        elapsed0 = float(st["elapsed_s"])
        rows = json.loads(st["history"])
        logger.info("resumed from %s at epoch %d", resume, epoch0)

    def save(path: Path, with_state: bool, metrics: dict[str, Any]) -> None:
        state = None
        if with_state:
            state = {
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "epoch": epoch,
                "step": step,
                "best": best,
                "elapsed_s": elapsed,
                "history": json.dumps(rows),
            }
        save_checkpoint(
            path,
            model,
            model_name=cfg.model.name,
            model_options=model_opts,
            label_map=label_map,
            preprocessing=cfg.preprocessing,
            config=cfg.to_dict(),
            metrics=metrics,
            case_ids=train_ids,
            training_state=state,
        )

    t0 = time.monotonic()
    epoch, elapsed, stopped = epoch0, elapsed0, False
    model.train()
    loss_fn.train()
    for epoch in range(epoch0 + 1, cfg.optim.epochs + 1):
        terms: dict[str, list[float]] = {}
        losses = []
        for batch in loader:
            image, label = batch["image"].to(device), batch["label"].to(device)
            available = torch.as_tensor(batch["available"]).bool()
            with autocast(device.type, amp_dtype):
                logits = model(image)
            heads = None
            if logits.ndim == image.ndim + 1:  # deep supervision: (B, heads, K, ...), full first
                logits, heads = logits[:, 0], logits[:, 1:]
            is_partial = partial_loss is not None and not bool(available.all())
            if is_partial:
                assert partial_loss is not None
                loss = partial_loss(logits.float(), label, available)
                last_terms = dict(partial_loss.last_terms)
                if loss_fn.has_shape_terms:  # SRM terms on the contours plus the prediction
                    full = pseudo_complete_target(logits, label, available)
                    loss = loss + loss_fn.shape_loss(logits.float(), full)
                    last_terms.update(loss_fn.last_terms)
            else:
                loss = loss_fn(logits.float(), label)
                last_terms = loss_fn.last_terms
            if heads is not None:  # the coarser heads: data term only, nnU-Net's weights
                # the head loss is called within this step, so binding the loop variables is safe
                loss, coarse = deep_supervision_loss(
                    loss,
                    heads,
                    lambda h: (
                        partial_loss(h, label, available)  # type: ignore[misc]  # noqa: B023
                        if is_partial  # noqa: B023
                        else loss_fn.seg(h, label)  # noqa: B023
                    ),
                )
                last_terms = {**last_terms, "heads": float(coarse.detach())}
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            step += 1
            elapsed = elapsed0 + time.monotonic() - t0
            clock["elapsed"] = elapsed
            sched.step()
            losses.append(float(loss.detach()))
            for key, v in last_terms.items():
                terms.setdefault(key, []).append(v)
            elapsed = elapsed0 + time.monotonic() - t0
            if progress is not None:
                progress(step, total_steps, {"epoch": epoch, "loss": losses[-1]})
            if cfg.optim.max_minutes and elapsed > 60 * cfg.optim.max_minutes:
                stopped = True
                break
        row: dict[str, Any] = {
            "epoch": epoch,
            "step": step,
            "lr": sched.get_last_lr()[0],
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            **{f"train_{key}": float(np.mean(v)) for key, v in terms.items()},
        }
        last_epoch = epoch == cfg.optim.epochs or stopped
        if val_ds and (epoch % cfg.optim.val_every == 0 or last_epoch):
            scores = np.array(_validate(model, val_ds, cfg, device, label_map))
            per_label = np.nanmean(scores, axis=0)
            mean = float(np.nanmean(per_label))
            row["val_mean_dice"] = mean
            row.update(
                {f"dice_{n}": float(v) for n, v in zip(label_map.names, per_label, strict=True)}
            )
            if mean > best:
                best = mean
                save(
                    out / "best.pt",
                    False,
                    {
                        "val_mean_dice": mean,
                        "epoch": epoch,
                        "val_dice": dict(zip(label_map.names, map(float, per_label), strict=True)),
                    },
                )
            logger.info(
                "epoch %d: loss %.4f, val mean Dice %.3f (best %.3f)",
                epoch,
                row["train_loss"],
                mean,
                best,
            )
        row["elapsed_s"] = round(elapsed0 + time.monotonic() - t0, 1)
        rows.append(row)
        elapsed = row["elapsed_s"]
        if "val_mean_dice" in row or last_epoch:
            save(out / "last.pt", True, {"epoch": epoch})
            _write_log(out, rows)
            plot_learning_curve(rows, out / "learning_curve.png", cfg.name)
        if stopped:
            logger.warning(
                "stopped after %.1f min (optim.max_minutes); resume with last.pt", elapsed / 60
            )
            break
    if not val_ds:
        save(out / "best.pt", False, {"epoch": epoch})
    return TrainResult(
        output_dir=out,
        best_checkpoint=out / "best.pt",
        last_checkpoint=out / "last.pt",
        best_mean_dice=None if best == -math.inf else best,
        epochs_done=epoch,
        steps_done=step,
        elapsed_s=elapsed,
        stopped_early=stopped,
    )
