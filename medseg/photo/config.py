"""Photo training configuration: :class:`TrainConfig`, YAML loading and ``--set`` overrides.

One override style for every photo command and launcher: ``--set KEY=VALUE`` (repeatable;
VALUE parsed as YAML, so ``--set fold=2``, ``--set holdout_fraction=0``,
``--set augment.rotate=30``, ``--set datasets=[fuseg_wound]``), turned into a mapping by
:func:`parse_overrides` and applied by :func:`load_train_config` before validation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medseg.config import checked_mapping
from medseg.errors import ConfigError
from medseg.photo.augment import AugmentConfig
from medseg.photo.models import valid_mask_size

logger = logging.getLogger(__name__)

__all__ = ["TrainConfig", "load_train_config", "parse_overrides"]


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["KEY=VALUE", ...]`` (the ``--set`` options) as a dict, VALUE parsed as YAML.

    Raises
    ------
    ConfigError
        An item without ``=`` or with an empty key, or a VALUE that is not YAML.

    Examples
    --------
    >>> parse_overrides(["fold=2", "augment.rotate=30", "datasets=[a, b]", "weights=null"])
    {'fold': 2, 'augment.rotate': 30, 'datasets': ['a', 'b'], 'weights': None}
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE (e.g. fold=2), got {item!r}.")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({exc}).") from exc
    return out


@dataclass(frozen=True)
class TrainConfig:
    """A training run (YAML keys = field names; unknown keys are an error).

    ``datasets`` are folder names under ``data_root`` (relative paths resolve against the YAML
    file's folder). ``max_minutes`` stops early (after a checkpoint) when the wall clock runs out.
    Training is step-based when ``iterations`` (optimizer steps) is set -- then ``epochs`` is
    ignored -- and evaluates/checkpoints every ``eval_every`` steps (default: once per epoch).
    ``optimizer`` is ``"sgd"`` (with ``momentum``) or ``"adamw"``; ``bf16`` trains and evaluates
    under CPU bfloat16 autocast (ignored on CUDA, which uses float16 AMP).
    ``fold`` picks the held-out group fold of ``split_seed``'s shuffle
    (:func:`~medseg.photo.datasets.split_pairs`); ``seed`` seeds the weights and augmentation
    only, so models differing in ``seed`` see the same split (ensembles, seed variance).
    ``mask_size`` is the side of each instance's predicted mask (Mask R-CNN: 28; see
    :func:`~medseg.photo.models.build_maskrcnn`).
    ``crop_size`` trains on random ``crop_size`` windows of the photos (resized so the shorter
    side is ``image_size``) at that resolution -- two thirds of them placed on foreground --
    while evaluation and prediction see the whole photo at ``image_size``: full-resolution
    training for the cost of ``crop_size``-pixel inputs.
    ``max_instances`` (keep only the N best-scoring instances, e.g. 1 for dermoscopy, which
    frames one lesion) and ``tta`` (flip test-time augmentation) are inference defaults: they are
    stored in the checkpoint for ``medseg photo predict``; ``max_instances`` also applies to the
    in-training evaluation and to the score-threshold tuning. So does ``centre_prior`` (with
    ``max_instances``): prefer instances near the photo's centre
    (:func:`medseg.photo.inference.keep_ranked`; 0.2 for dermoscopy, which centres the lesion).
    """

    name: str
    datasets: tuple[str, ...]
    data_root: str = "../../shared/data"
    output_dir: str = "runs/photo"
    architecture: str = "mobilenet_v3_fpn"
    class_name: str = "object"
    image_size: int = 256
    mask_size: int = 28
    crop_size: int | None = None
    batch_size: int = 4
    epochs: int = 30
    iterations: int | None = None
    eval_every: int | None = None
    optimizer: str = "sgd"
    bf16: bool = False
    learning_rate: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iterations: int = 100
    grad_clip: float = 10.0
    holdout_fraction: float = 0.2
    fold: int = 0
    seed: int = 0
    split_seed: int = 0
    score_threshold: float = 0.5
    max_instances: int | None = None
    centre_prior: float | None = None
    tta: bool = False
    min_instance_area_px: int = 16
    max_minutes: float | None = None
    weights: str | None = None
    device: str = "auto"
    num_threads: int = 1
    augment: AugmentConfig = field(default_factory=AugmentConfig)


def load_train_config(
    path: str | Path, overrides: Mapping[str, Any] | None = None, **kw_overrides: Any
) -> TrainConfig:
    """Read a :class:`TrainConfig` from YAML, with overrides applied before validation.

    Parameters
    ----------
    path
        The YAML file. Relative ``data_root`` / ``weights`` in it resolve against its folder.
    overrides
        ``{key: value}`` as :func:`parse_overrides` returns for ``--set KEY=VALUE``; a dotted
        key sets an ``augment`` entry (``augment.rotate``). Relative ``data_root`` / ``weights``
        given here resolve against the working directory (they were typed in a shell).
    **kw_overrides
        The same from Python (``fold=2``); ``None`` values are ignored.

    Raises
    ------
    ConfigError
        Unreadable YAML, unknown keys, missing required keys or bad values.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read training config {path}: {exc}") from exc
    data = checked_mapping(TrainConfig, data, what=str(path))
    base = path.resolve().parent
    for key in ("data_root", "weights"):
        if data.get(key) is not None and not Path(data[key]).is_absolute():
            data[key] = str((base / data[key]).resolve())
    aug = checked_mapping(AugmentConfig, data.pop("augment", None) or {}, what=f"{path}: augment")
    given = {**(overrides or {}), **{k: v for k, v in kw_overrides.items() if v is not None}}
    for key, value in given.items():
        typed = value
        if key in ("data_root", "weights") and value is not None and not Path(value).is_absolute():
            typed = str(Path(value).resolve())
        if key.startswith("augment."):
            aug[key.split(".", 1)[1]] = typed
        else:
            data[key] = typed
    data = checked_mapping(TrainConfig, data, what=f"{path} with overrides")
    checked_mapping(AugmentConfig, aug, what=f"{path}: augment (with overrides)")
    if "scale" in aug:
        aug["scale"] = tuple(float(v) for v in aug["scale"])
    for key in ("name", "datasets"):
        if key not in data:
            raise ConfigError(f"{path}: missing required key {key!r}.")
    data["datasets"] = tuple(data["datasets"])
    try:
        config = TrainConfig(**data, augment=AugmentConfig(**aug))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if not valid_mask_size(config.mask_size):
        raise ConfigError(
            f"{path}: mask_size (the mask head's output side) must be an even integer from 14 "
            f"to 112 (Mask R-CNN: 28); got {config.mask_size!r}."
        )
    if config.centre_prior is not None and (
        config.max_instances is None
        or isinstance(config.centre_prior, bool)
        or not isinstance(config.centre_prior, int | float)
        or not 0 < config.centre_prior <= 1
    ):
        raise ConfigError(
            f"{path}: centre_prior is a sigma in photo sizes, 0 < centre_prior <= 1 (e.g. 0.2), "
            f"and needs max_instances; got centre_prior={config.centre_prior!r}, "
            f"max_instances={config.max_instances!r}. Use null to switch it off."
        )
    if not 0 <= config.augment.rotate <= 180:
        raise ConfigError(
            f"{path}: augment.rotate is a maximum angle in degrees, 0 (off) to 180; "
            f"got {config.augment.rotate}."
        )
    if config.image_size < 64 or config.batch_size < 1 or config.epochs < 1:
        raise ConfigError(f"{path}: image_size >= 64, batch_size >= 1 and epochs >= 1 required.")
    if any(
        v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1)
        for v in (config.iterations, config.eval_every, config.max_instances)
    ):
        raise ConfigError(
            f"{path}: iterations, eval_every and max_instances must be integers >= 1 when given "
            "(max_instances: null keeps every instance)."
        )
    if config.crop_size is not None and not 64 <= config.crop_size <= config.image_size:
        raise ConfigError(
            f"{path}: crop_size must be between 64 and image_size ({config.image_size}), "
            f"got {config.crop_size}; use null to train on whole photos."
        )
    if any(isinstance(v, bool) or not isinstance(v, int) for v in (config.seed, config.split_seed)):
        raise ConfigError(
            f"{path}: seed and split_seed must be integers; got seed={config.seed!r}, "
            f"split_seed={config.split_seed!r}."
        )
    if config.optimizer not in ("sgd", "adamw"):
        raise ConfigError(f"{path}: optimizer must be 'sgd' or 'adamw', got {config.optimizer!r}.")
    if config.weights is not None and not Path(config.weights).is_file():
        # checked here, before the run folder is written
        raise ConfigError(
            f"{path}: weights file {config.weights} does not exist; pass an existing .pt/.pth "
            "file, or weights: null to train from scratch."
        )
    return config
