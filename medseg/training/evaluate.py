"""Held-out evaluation of checkpoints on OpenKBP cases, on the *source* grid in mm.

Every figure goes through the shipped path: :class:`medseg.inference.Predictor` with an
explicit :class:`~medseg.inference.InferenceConfig` (the default is what ``medseg segment``
runs), so model-card numbers describe what users get.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medseg.errors import ModelError
from medseg.io.openkbp import load_openkbp_ct, load_openkbp_labels
from medseg.metrics import dice_per_label
from medseg.models import load_checkpoint
from medseg.preprocess import PreprocessingSpec
from medseg.volume import LabelVolume

logger = logging.getLogger(__name__)

__all__ = [
    "CaseScores",
    "evaluate_checkpoint",
    "grid_ceiling_dice",
    "reconstruction_dice",
    "srm_reconstruction_dice",
]


@dataclass(frozen=True)
class CaseScores:
    """Per-organ Dice and HD95 (mm) of one case, and inference seconds."""

    case: str
    dice: dict[str, float]
    hd95_mm: dict[str, float]
    seconds: float
    largest_component: bool = False


def evaluate_checkpoint(
    checkpoint: str | os.PathLike[str],
    case_folders: Sequence[str | os.PathLike[str]],
    *,
    device: str | torch.device = "cpu",
    config: Any = None,
    largest_component: Sequence[bool] = (False,),
) -> list[CaseScores]:
    """Segment each OpenKBP case with the shipped path and score it on the source grid.

    Parameters
    ----------
    checkpoint
        Shipped model name or ``.pt`` path.
    case_folders
        OpenKBP patient folders (every organ of the model contoured).
    device
        Where the network runs.
    config
        :class:`~medseg.inference.InferenceConfig`; default: the one ``medseg segment`` uses.
    largest_component
        Score each case once per value: ``True`` keeps only the largest connected component
        of each label (:func:`medseg.inference.postprocessing.keep_largest_component`) on top
        of the Predictor's own post-processing.

    Notes
    -----
    HD95 uses :func:`medseg.metrics.compute_metrics` (DeepMind surfel surface definition,
    max of the two directed 95th percentiles, in mm; an organ missed entirely gets the image
    diagonal).
    """
    from medseg.inference import InferenceConfig, Predictor
    from medseg.metrics import MetricsConfig, compute_metrics

    predictor = Predictor.from_checkpoint(
        checkpoint, device=device, config=config or InferenceConfig()
    )
    names = list(predictor.label_map.names)
    out = []
    for folder in case_folders:
        t0 = time.monotonic()
        ct = load_openkbp_ct(folder)
        raw = predictor.predict(ct)
        seconds = time.monotonic() - t0
        ref = load_openkbp_labels(folder, names)
        for lcc in largest_component:
            pred = raw
            if lcc:
                from medseg.inference.postprocessing import keep_largest_component

                arr = keep_largest_component(raw.volume.array)
                pred = LabelVolume(raw.volume.with_array(arr), raw.label_map)
            res = compute_metrics(pred, ref, config=MetricsConfig(), case=Path(folder).name)
            dice: dict[str, float] = {}
            hd: dict[str, float] = {}
            for name in names:
                values: dict[str, Any] = dict(res.labels[_key(res.labels, name)].values)
                dice[name] = float(values["dice"])
                hd[name] = float(values["hd95"])
            out.append(CaseScores(Path(folder).name, dice, hd, seconds, lcc))
            logger.info(
                "%s (lcc=%s): mean Dice %.3f", Path(folder).name, lcc, np.mean(list(dice.values()))
            )
    return out


def _key(labels: dict[str, Any], name: str) -> str:
    from medseg.metrics import label_key

    key = label_key(name)
    return key if key in labels else name


def reconstruction_dice(
    model: nn.Module,
    label_names: Sequence[str],
    spec: PreprocessingSpec,
    case_folders: Sequence[str | os.PathLike[str]],
    *,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Mean Dice per organ of ``argmax(SRM(onehot(gt)))`` vs ``gt`` over OpenKBP cases.

    Each reference label map is brought to ``spec``'s grid and cropped to the box around its
    organs plus 16 voxels, exactly as the SRM's stage-1 training patches are made
    (:class:`medseg.training.data.LoadLabelsOnlyd`), and passed through the autoencoder whole.
    An SRM that cannot reconstruct an organ carries no shape information about it into the
    regularised loss.
    """
    import torch.nn.functional as nnf

    from medseg.training.data import LoadLabelsOnlyd

    k = len(label_names) + 1
    load = LoadLabelsOnlyd(label_names, spec, margin=16)
    scores = []
    model.eval()
    for folder in case_folders:
        arr = torch.as_tensor(load({"case": str(folder)})["label"][0].astype(np.int64))
        x = nnf.one_hot(arr, k).permute(3, 0, 1, 2)[None].float().to(device)
        with torch.no_grad():
            rec = model(x).argmax(1)[0].cpu().numpy()
        scores.append(dice_per_label(rec, arr.numpy(), range(1, k)))
    mean = np.nanmean(np.array(scores, dtype=float), axis=0)
    return {n: float(v) for n, v in zip(label_names, mean, strict=True)}


def srm_reconstruction_dice(
    checkpoint: str | os.PathLike[str], case_folders: Sequence[str | os.PathLike[str]]
) -> dict[str, float]:
    """:func:`reconstruction_dice` of a saved SRM checkpoint (its labels and grid)."""
    model, info = load_checkpoint(checkpoint)
    if info.model_name != "srm":
        raise ModelError(f"{checkpoint}: holds a {info.model_name!r} model, not an SRM.")
    return reconstruction_dice(model, list(info.label_map.names), info.preprocessing, case_folders)


def grid_ceiling_dice(
    case_folders: Sequence[str | os.PathLike[str]], spec: PreprocessingSpec, names: Sequence[str]
) -> dict[str, float]:
    """Mean Dice per organ of the *reference* after a round trip through the model's grid.

    Each clinical label map is brought to ``spec``'s grid (nearest neighbour, as training does)
    and back to its own grid the way the Predictor returns labels; the Dice against the original
    is what a model that is perfect on its grid can reach at best: the cost of the grid alone.
    """
    from medseg.preprocess import apply_spec, reorient, resample_to_grid

    scores = []
    for folder in case_folders:
        ref = load_openkbp_labels(folder, list(names)).volume
        on_grid = apply_spec(ref, spec, order=0)
        canonical = reorient(ref, spec.orientation)
        back = resample_to_grid(on_grid, canonical, order=0, fill_value=0)
        back = reorient(back, ref.orientation)
        ids = range(1, len(names) + 1)
        scores.append(dice_per_label(back.array, ref.array, ids))
    mean = np.nanmean(np.array(scores, dtype=float), axis=0)
    return {n: float(v) for n, v in zip(names, mean, strict=True)}
