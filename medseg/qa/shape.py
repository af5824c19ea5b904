"""Shape plausibility from the shape representation model (SRM) of Tong et al. (2018).

The SRM (:func:`medseg.models.srm`) is a convolutional autoencoder of one-hot label maps. For
review, one is trained on label maps only (no CT): each training sample is a fixed-size box
of the label map, on the segmentation model's grid, centred on one organ. A contour under
review is put through the same box and autoencoder; its *reconstruction error* is
``1 - Dice(organ, reconstructed organ)``. An implausible shape (a bite out of a parotid, a
spinal cord that stops, a blob where a thin organ should be) is reconstructed towards the
shapes the SRM has seen, so its error is larger than that of training shapes; the error is
calibrated per organ on the training shapes (:attr:`ShapeModel.calibration`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as nnf
from torch import nn

from medseg.errors import ModelError
from medseg.preprocess import PreprocessingSpec, apply_spec
from medseg.volume import LabelMap, Volume

logger = logging.getLogger(__name__)

__all__ = ["ShapeModel", "ShapeTrainConfig", "organ_box", "train_shape_model"]

#: Model name recorded in an SRM checkpoint.
SRM_MODEL_NAME = "srm"


@dataclass(frozen=True)
class ShapeTrainConfig:
    """How :func:`train_shape_model` fits the SRM.

    Parameters
    ----------
    box
        Box side in voxels of the segmentation model's grid ``(slice, row, column)``.
    channels, latent_channels
        Autoencoder encoder levels and bottleneck channels.
    steps, batch_size, lr
        Optimisation (AdamW, polynomial decay).
    jitter
        Random shift (voxels) of the box centre around the organ centroid.
    input_noise
        Mix at most this share of softmax noise into the one-hot input (denoising, as in the
        training recipe of :mod:`medseg.training.loop`).
    seed
        Random seed.
    """

    box: tuple[int, int, int] = (32, 32, 32)
    channels: tuple[int, ...] = (16, 32, 64)
    latent_channels: int = 8
    steps: int = 1500
    batch_size: int = 4
    lr: float = 0.003
    jitter: int = 3
    input_noise: float = 0.3
    seed: int = 0


def organ_box(
    centre: Sequence[float] | npt.NDArray[np.float64], box: Sequence[int], shape: Sequence[int]
) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Source and destination slices of a ``box`` centred on ``centre`` (voxels), clipped.

    Examples
    --------
    >>> src, dst = organ_box((1.0, 5.0, 5.0), (4, 4, 4), (10, 10, 10))
    >>> [(s.start, s.stop) for s in src], [(s.start, s.stop) for s in dst]
    ([(0, 3), (3, 7), (3, 7)], [(1, 4), (0, 4), (0, 4)])
    """
    src, dst = [], []
    for c, b, n in zip(centre, box, shape, strict=True):
        lo = round(c) - b // 2
        s0, s1 = max(lo, 0), min(lo + b, n)
        src.append(slice(s0, max(s0, s1)))
        dst.append(slice(s0 - lo, s0 - lo + max(0, s1 - s0)))
    return tuple(src), tuple(dst)


def _crop(
    labels: npt.NDArray[Any], centre: Sequence[float] | npt.NDArray[np.float64], box: Sequence[int]
) -> npt.NDArray[np.int64]:
    out = np.zeros(tuple(box), np.int64)
    src, dst = organ_box(centre, box, labels.shape)
    out[dst] = labels[src]
    return out


def _centroid(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    return np.argwhere(mask).mean(axis=0)


def _on_grid(labels: Volume, spec: PreprocessingSpec) -> npt.NDArray[np.int64]:
    return np.asarray(apply_spec(labels, spec, order=0).array, dtype=np.int64)


@dataclass
class ShapeModel:
    """A trained SRM with its grid, box and per-organ calibration.

    Attributes
    ----------
    model
        The autoencoder (eval mode, CPU).
    label_map
        Organ names of channels 1..K.
    spec
        Grid the labels are resampled to (the segmentation model's spacing and orientation).
    box
        Box side in voxels.
    calibration
        Organ → {"n", "mean", "sd", "q50", "q95", "q99", "max"} of the reconstruction error on
        the training shapes.
    """

    model: nn.Module
    label_map: LabelMap
    spec: PreprocessingSpec
    box: tuple[int, int, int]
    calibration: dict[str, dict[str, float]] = field(default_factory=dict)
    model_options: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Channels including background."""
        return len(self.label_map) + 1

    def errors_on_grid(self, grid_labels: npt.NDArray[np.integer]) -> dict[str, float]:
        """Reconstruction error per present organ of labels already on :attr:`spec`'s grid."""
        names, crops = [], []
        for entry in self.label_map:
            mask = grid_labels == entry.id
            if not mask.any():
                continue
            names.append(entry)
            crops.append(_crop(grid_labels, _centroid(mask), self.box))
        if not crops:
            return {}
        x = torch.from_numpy(np.stack(crops))
        onehot = nnf.one_hot(x, self.num_classes).permute(0, 4, 1, 2, 3).float()
        with torch.no_grad():
            recon = self.model(onehot).argmax(1).numpy()
        out = {}
        for i, entry in enumerate(names):
            a = crops[i] == entry.id
            b = recon[i] == entry.id
            denom = int(a.sum()) + int(b.sum())
            dice = 2.0 * int(np.logical_and(a, b).sum()) / denom if denom else 1.0
            out[entry.name] = round(1.0 - dice, 5)
        return out

    def errors(self, labels: Volume) -> dict[str, float]:
        """Reconstruction error ``1 - Dice`` per present organ of a label volume (any grid).

        Parameters
        ----------
        labels
            Label ids as in :attr:`label_map`, any orientation/spacing (resampled, nearest).
        """
        return self.errors_on_grid(_on_grid(labels, self.spec))

    def save(self, path: str | os.PathLike[str], *, metrics: dict[str, Any] | None = None) -> Path:
        """Write the SRM checkpoint with box and calibration in its metrics (atomic)."""
        from medseg.models import save_checkpoint

        return save_checkpoint(
            path,
            self.model,
            model_name=SRM_MODEL_NAME,
            model_options=self.model_options,
            label_map=self.label_map,
            preprocessing=self.spec,
            metrics={
                **(metrics or {}),
                "qa_box": list(self.box),
                "qa_calibration": self.calibration,
            },
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ShapeModel:
        """Load a checkpoint written by :meth:`save`.

        Raises
        ------
        ModelError
            Not an SRM, or without the review box and calibration.
        """
        from medseg.models import load_checkpoint

        model, info = load_checkpoint(path, device="cpu")
        box = info.metrics.get("qa_box")
        if info.model_name != SRM_MODEL_NAME or not box:
            raise ModelError(
                f"{path}: not a review SRM (model {info.model_name!r}, box {box!r}); train one "
                "with medseg.qa.train_shape_model (pipelines/qa_train.py)."
            )
        return cls(
            model.eval(),
            info.label_map,
            info.preprocessing,
            (int(box[0]), int(box[1]), int(box[2])),
            dict(info.metrics.get("qa_calibration", {})),
            dict(info.model_options),
        )


def _samples(
    grids: Sequence[npt.NDArray[np.int64]], label_map: LabelMap
) -> list[tuple[int, npt.NDArray[np.float64], int]]:
    out = []
    for g, grid in enumerate(grids):
        for entry in label_map:
            mask = grid == entry.id
            if mask.any():
                out.append((g, _centroid(mask), entry.id))
    return out


def _calibrate(values: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    cal = {}
    for name, v in values.items():
        a = np.asarray(v, float)
        cal[name] = {
            "n": int(a.size),
            "mean": round(float(a.mean()), 5),
            "sd": round(float(a.std(ddof=1)) if a.size > 1 else 0.0, 5),
            "q50": round(float(np.quantile(a, 0.5)), 5),
            "q95": round(float(np.quantile(a, 0.95)), 5),
            "q99": round(float(np.quantile(a, 0.99)), 5),
            "max": round(float(a.max()), 5),
        }
    return cal


def train_shape_model(
    label_volumes: Sequence[Volume],
    label_map: LabelMap,
    spec: PreprocessingSpec,
    config: ShapeTrainConfig | None = None,
) -> ShapeModel:
    """Fit the review SRM on ground-truth label maps (labels only) and calibrate it.

    Parameters
    ----------
    label_volumes
        Completely contoured label maps (ids of ``label_map``), any grid.
    label_map
        Organ names of ids 1..K.
    spec
        The segmentation model's grid (spacing, orientation).
    config
        Box, network and optimisation (:class:`ShapeTrainConfig`).

    Returns
    -------
    ShapeModel
        Trained, with ``calibration`` = reconstruction errors of the training shapes.
    """
    from monai.losses import DiceCELoss

    from medseg.models import build_model

    cfg = config or ShapeTrainConfig()
    if not label_volumes:
        raise ModelError("train_shape_model: no label maps given.")
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    grids = [_on_grid(v, spec) for v in label_volumes]
    samples = _samples(grids, label_map)
    k = len(label_map) + 1
    options: dict[str, Any] = {
        "in_channels": k,
        "out_channels": k,
        "channels": list(cfg.channels),
        "latent_channels": cfg.latent_channels,
    }
    ae = build_model("srm", **options)
    opt = torch.optim.AdamW(ae.parameters(), lr=cfg.lr, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (1 - s / cfg.steps) ** 0.9)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    t0 = time.monotonic()
    ae.train()
    for step in range(cfg.steps):
        pick = rng.integers(0, len(samples), cfg.batch_size)
        crops = []
        for i in pick:
            g, c, _ = samples[int(i)]
            shift = rng.integers(-cfg.jitter, cfg.jitter + 1, 3)
            crops.append(_crop(grids[g], c + shift, cfg.box))
        y = torch.from_numpy(np.stack(crops))
        x = nnf.one_hot(y, k).permute(0, 4, 1, 2, 3).float()
        if cfg.input_noise > 0:
            a = torch.rand(x.shape[0], 1, 1, 1, 1) * cfg.input_noise
            x = (1 - a) * x + a * torch.softmax(3.0 * torch.randn_like(x), dim=1)
        loss = loss_fn(ae(x), y[:, None])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == cfg.steps - 1:
            logger.info(
                "SRM step %d/%d loss %.4f (%.0f s)",
                step + 1,
                cfg.steps,
                float(loss),
                time.monotonic() - t0,
            )
    ae.eval()
    shape_model = ShapeModel(ae, label_map, spec, cfg.box, model_options=options)
    errors: dict[str, list[float]] = {e.name: [] for e in label_map}
    for grid in grids:
        for name, err in shape_model.errors_on_grid(grid).items():
            errors[name].append(err)
    shape_model.calibration = _calibrate({k_: v for k_, v in errors.items() if v})
    return shape_model
