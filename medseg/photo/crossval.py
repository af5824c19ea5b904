"""Cross-validation of photo models: held-out evaluation per fold and pooling over folds.

The library side of ``pipelines/photo_cv.py`` and ``pipelines/photo_holdout.py``:

* :func:`held_out_pairs` -- the held-out photos of a training run (its ``split.json``) with
  their reference masks, found by locating each photo's dataset folder;
* :func:`evaluate_held_out` -- ``medseg photo predict`` on them at full resolution into
  ``OUT/pred`` and per-image Dice / Jaccard into ``OUT/scores.json``;
* :func:`fold_figures` -- one fold's summary (:class:`FoldFigures`) from those files;
* :func:`pool_folds` -- mean and standard deviation over folds;
* :func:`run_cross_validation` -- train every fold (skipping finished ones, resuming
  interrupted ones), evaluate, pool, write ``cv_summary.json``.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import InputError
from medseg.io.atomic import write_atomic
from medseg.photo.datasets import PhotoPair, find_pairs
from medseg.photo.evaluate import ImageScore, score_pairs, scores_json, summarise
from medseg.photo.predict import predict_files

logger = logging.getLogger(__name__)

__all__ = [
    "POOLED_KEYS",
    "CrossValidation",
    "FoldFigures",
    "dataset_root",
    "evaluate_held_out",
    "fold_figures",
    "format_cv_table",
    "held_out_pairs",
    "pool_folds",
    "run_cross_validation",
]

#: Per-fold figures averaged over folds (JSON names of :class:`FoldFigures` fields).
POOLED_KEYS: tuple[str, ...] = ("mean_dice", "mean_jaccard", "thresholded_jaccard_0.65")


@dataclass(frozen=True)
class FoldFigures:
    """Full-resolution held-out figures of one fold.

    Attributes
    ----------
    n_held_out
        Held-out photos.
    mean_dice, mean_jaccard, median_dice
        Per-image means / median (:func:`medseg.photo.evaluate.summarise`).
    thresholded_jaccard
        ISIC 2018 thresholded Jaccard (``"thresholded_jaccard_0.65"`` in JSON).
    n_nothing_predicted
        Held-out photos with an empty predicted mask.
    empty_reference_instances
        ``{photo stem: instances predicted}`` for photos whose reference is empty.
    score_threshold
        Threshold the prediction used.
    train_minutes
        Training time from the run's ``log.csv``.
    """

    n_held_out: int
    mean_dice: float
    mean_jaccard: float
    median_dice: float
    thresholded_jaccard: float
    n_nothing_predicted: int
    empty_reference_instances: dict[str, int] = field(default_factory=dict)
    score_threshold: float = 0.5
    train_minutes: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the thresholded Jaccard under its summary name)."""
        data = asdict(self)
        data["thresholded_jaccard_0.65"] = data.pop("thresholded_jaccard")
        return data


def dataset_root(image: Path) -> Path:
    """The dataset folder of a photo path (the layouts of :func:`find_pairs`).

    ``<root>/images/x.jpg`` -> ``<root>``; ``<root>/train/images/x.png`` -> ``<root>``.

    >>> dataset_root(Path("data/fuseg_wound/train/images/0011.png")).as_posix()
    'data/fuseg_wound'
    >>> dataset_root(Path("data/ham10000_skin_lesion/images/ISIC_1.jpg")).as_posix()
    'data/ham10000_skin_lesion'
    """
    base = image.parent.parent
    return base.parent if base.name == "train" else base


def held_out_pairs(run_dir: str | Path) -> list[PhotoPair]:
    """The held-out photos of a training run (``RUN_DIR/split.json``) with their masks.

    Raises
    ------
    InputError
        No readable ``split.json``, or a held-out photo whose dataset has no mask for it.
    """
    split_path = Path(run_dir) / "split.json"
    try:
        held = [Path(p) for p in json.loads(split_path.read_text())["held_out"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"cannot read the held-out list {split_path} ({exc}); pass the output_dir of a "
            "`medseg photo train` run."
        ) from exc
    pairs = {p.image: p for root in {dataset_root(i) for i in held} for p in find_pairs(root)}
    missing = [str(i) for i in held if i not in pairs]
    if missing:
        raise InputError(
            f"{len(missing)} held-out photo(s) of {split_path} are not in their dataset any "
            f"more (first: {missing[0]}); was the data moved?"
        )
    return [pairs[i] for i in held]


def evaluate_held_out(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    model: str | Path | None = None,
    bf16: bool = False,
    max_instances: int | None = None,
    tta: bool | None = None,
    centre_prior: float | None = None,
) -> tuple[list[ImageScore], dict[str, Any]]:
    """Predict a run's held-out photos at full resolution and score them.

    Writes ``OUT_DIR/pred`` (:func:`~medseg.photo.predict.predict_files`, replaced when it
    exists) and ``OUT_DIR/scores.json``. ``model`` defaults to ``RUN_DIR/final.pt``; the other
    options override the checkpoint's prediction defaults as in ``medseg photo predict``.

    Returns
    -------
    scores, summary
        As :func:`medseg.photo.evaluate.evaluate_folders`.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    pairs = held_out_pairs(run_dir)
    if not pairs:
        raise InputError(f"{run_dir} holds no photo out (holdout_fraction 0); nothing to score.")
    result = predict_files(
        [p.image for p in pairs],
        out_dir / "pred",
        model=model if model is not None else run_dir / "final.pt",
        overwrite=True,
        bf16=bf16,
        max_instances=max_instances,
        tta=tta,
        centre_prior=centre_prior,
    )
    masks = {r["stem"]: out_dir / "pred" / r["mask"] for r in result["images"]}
    scores = score_pairs([(p.image.stem, masks[p.image.stem], p.mask) for p in pairs])
    summary = summarise(scores)
    write_atomic(out_dir / "scores.json", lambda tmp: tmp.write_text(scores_json(scores, summary)))
    return scores, summary


def fold_figures(fold_dir: str | Path) -> FoldFigures:
    """Summary of one fold from ``eval/scores.json``, ``eval/pred/predictions.json`` and
    ``log.csv`` in ``fold_dir`` (as :func:`run_cross_validation` lays them out).

    Raises
    ------
    InputError
        A file is missing or not what :func:`evaluate_held_out` / training write.
    """
    fold_dir = Path(fold_dir)
    try:
        scores = json.loads((fold_dir / "eval" / "scores.json").read_text())
        preds = json.loads((fold_dir / "eval" / "pred" / "predictions.json").read_text())
        with (fold_dir / "log.csv").open(newline="") as fh:
            seconds = sum(float(row["seconds"]) for row in csv.DictReader(fh))
        instances = {img["stem"]: len(img["instances"]) for img in preds["images"]}
        images, summary = scores["images"], scores["summary"]
        return FoldFigures(
            n_held_out=int(summary["n_images"]),
            mean_dice=float(summary["mean_dice"]),
            mean_jaccard=float(summary["mean_jaccard"]),
            median_dice=float(summary["median_dice"]),
            thresholded_jaccard=float(summary["thresholded_jaccard_0.65"]),
            n_nothing_predicted=sum(1 for s in images if s["pred_area_px"] == 0),
            empty_reference_instances={
                s["name"]: instances[s["name"]] for s in images if s["ref_area_px"] == 0
            },
            score_threshold=float(preds["score_threshold"]),
            train_minutes=round(seconds / 60, 1),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"{fold_dir}: incomplete fold ({type(exc).__name__}: {exc}); rerun its training "
            "and held-out evaluation."
        ) from exc


def pool_folds(per_fold: Mapping[str, FoldFigures]) -> dict[str, dict[str, float]]:
    """Mean and (population) standard deviation over folds of :data:`POOLED_KEYS`.

    >>> a = FoldFigures(10, 0.8, 0.7, 0.85, 0.6, 0)
    >>> b = FoldFigures(12, 0.6, 0.5, 0.65, 0.4, 1)
    >>> pooled = pool_folds({"0": a, "1": b})
    >>> [round(pooled["mean_over_folds"][k], 3) for k in POOLED_KEYS]
    [0.7, 0.6, 0.5]
    >>> round(pooled["sd_over_folds"]["mean_dice"], 3)
    0.1
    """
    if not per_fold:
        raise InputError("no folds to pool; pass at least one fold.")
    rows = [f.to_dict() for f in per_fold.values()]
    return {
        "mean_over_folds": {k: float(np.mean([r[k] for r in rows])) for k in POOLED_KEYS},
        "sd_over_folds": {k: float(np.std([r[k] for r in rows])) for k in POOLED_KEYS},
    }


@dataclass(frozen=True)
class CrossValidation:
    """Result of :func:`run_cross_validation` (``to_dict`` is ``cv_summary.json``)."""

    config: str
    folds: dict[str, FoldFigures]
    mean_over_folds: dict[str, float]
    sd_over_folds: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "config": self.config,
            "folds": {k: f.to_dict() for k, f in self.folds.items()},
            "mean_over_folds": self.mean_over_folds,
            "sd_over_folds": self.sd_over_folds,
        }


def run_cross_validation(
    config: str | Path,
    out_dir: str | Path,
    *,
    folds: Sequence[int] = (0, 1, 2, 3, 4),
    overrides: Mapping[str, Any] | None = None,
) -> CrossValidation:
    """Train and evaluate each fold of ``config`` into ``OUT_DIR/fold<k>``; pool the figures.

    A fold whose ``final.pt`` exists is not retrained (an interrupted one resumes from
    ``last.pt``); one whose ``eval/scores.json`` exists is not re-evaluated. ``overrides``
    are ``--set`` values (:func:`medseg.photo.config.parse_overrides`). Writes
    ``OUT_DIR/cv_summary.json``.
    """
    from medseg.photo.config import load_train_config
    from medseg.photo.training import train

    out = Path(out_dir)
    per_fold: dict[str, FoldFigures] = {}
    for fold in folds:
        fold_dir = out / f"fold{fold}"
        if not (fold_dir / "final.pt").is_file():
            settings = {**(overrides or {}), "output_dir": str(fold_dir), "fold": fold}
            cfg = load_train_config(config, settings)
            start = time.monotonic()
            train(cfg, resume=(fold_dir / "last.pt").is_file())
            logger.info("fold %d trained in %.1f min", fold, (time.monotonic() - start) / 60)
        if not (fold_dir / "eval" / "scores.json").is_file():
            evaluate_held_out(fold_dir, fold_dir / "eval")
        per_fold[str(fold)] = fold_figures(fold_dir)
    pooled = pool_folds(per_fold)
    result = CrossValidation(str(config), per_fold, **pooled)
    text = json.dumps(result.to_dict(), indent=2)
    write_atomic(out / "cv_summary.json", lambda tmp: tmp.write_text(text))
    return result


def format_cv_table(result: CrossValidation) -> str:
    """Markdown table of the per-fold figures and their mean ± sd."""
    lines = [
        "| fold | photos | mean Dice | mean Jaccard | thr. Jaccard | nothing predicted |",
        "|---|---|---|---|---|---|",
    ]
    for fold, f in result.folds.items():
        lines.append(
            f"| {fold} | {f.n_held_out} | {f.mean_dice:.3f} | {f.mean_jaccard:.3f} | "
            f"{f.thresholded_jaccard:.3f} | {f.n_nothing_predicted} |"
        )
    m, sd = result.mean_over_folds, result.sd_over_folds
    lines.append(
        f"| mean ± sd | | {m['mean_dice']:.3f} ± {sd['mean_dice']:.3f} | "
        f"{m['mean_jaccard']:.3f} ± {sd['mean_jaccard']:.3f} | "
        f"{m['thresholded_jaccard_0.65']:.3f} | |"
    )
    return "\n".join(lines)
