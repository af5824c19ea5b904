"""Training configuration: frozen dataclasses loaded from YAML with unknown-key checks.

See ``pipelines/train_hn_oar_*.yaml`` for complete examples. Relative paths in a YAML file are
resolved against the directory of that file.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from medseg.config import checked_mapping
from medseg.errors import ConfigError
from medseg.io.openkbp import OPENKBP_OARS
from medseg.preprocess import PreprocessingSpec

__all__ = [
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "SRMConfig",
    "TrainConfig",
    "load_train_config",
]

T = TypeVar("T")


@dataclass(frozen=True)
class DataConfig:
    """Which cases to train and validate on, and which of their labels can be trusted.

    ``root`` holds one OpenKBP patient folder per case (``ct.csv`` or ``ct.csv.gz``);
    ``extra_roots`` adds more folders of patients (names must be unique over all roots).
    Validation: ``val_cases`` names a fixed validation set (kept out of training whatever the
    fold); otherwise cases are sorted, shuffled with ``split_seed`` and dealt into ``folds``
    folds (case ``i`` of the shuffled list goes to fold ``i % folds``), fold ``fold`` validates
    and the rest train; ``fold: null`` trains on all cases without validation. ``max_cases``
    keeps only the first cases (smoke tests).

    Label availability (partially contoured patients): a patient *has* an organ when its file
    is present (``availability: files``), or per a CSV (``availability: PATH``) with a
    ``patient`` column and one 0/1 column per organ (like OpenKBP-partial's ``oars.csv``).
    An organ a patient does not have was *not contoured*; :class:`LossConfig` says how
    training treats it.
    """

    root: str = ""
    extra_roots: tuple[str, ...] = ()
    labels: tuple[str, ...] = OPENKBP_OARS
    folds: int = 5
    fold: int | None = 0
    split_seed: int = 0
    val_cases: tuple[str, ...] = ()
    max_cases: int | None = None
    availability: str = "files"
    cache_dir: str = ""
    body_threshold_hu: float = -500.0
    body_margin: int = 4

    @property
    def roots(self) -> tuple[str, ...]:
        """``root`` then ``extra_roots``."""
        return (self.root, *self.extra_roots)


@dataclass(frozen=True)
class LossConfig:
    """Segmentation loss.

    ``partial``: how an organ a patient has no contour for is treated.

    - ``"marginal"`` (default): the marginal loss of Shi et al. 2021 (Medical Image Analysis
      70:101979): for that patient the probabilities of its uncontoured organs are merged into
      background before Dice and cross-entropy, so the network is never taught "background"
      where an uncontoured organ may lie; complete patients get plain Dice + CE.
    - ``"ignore"``: treat missing contours as background (the naive baseline; wrong for
      partial data, kept for comparison).

    ``exclusion_weight``: weight of Shi et al.'s exclusion loss (the soft Dice between an
    uncontoured organ's probability and the union of the patient's contoured organs: organs do
    not overlap, so what is known to be another organ cannot be this one); 0 turns it off.
    """

    partial: str = "marginal"
    exclusion_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.partial not in ("marginal", "ignore"):
            raise ConfigError(f"loss.partial must be marginal or ignore; got {self.partial!r}.")
        if self.exclusion_weight < 0:
            raise ConfigError(f"loss.exclusion_weight must be ≥ 0; got {self.exclusion_weight}.")


@dataclass(frozen=True)
class ModelConfig:
    """Registry name and builder options of the segmentation network."""

    name: str = "unet3d"
    options: Mapping[str, Any] = field(default_factory=dict)


#: patch sampling schemes of :class:`OptimConfig` (``optim.sampling``)
SAMPLING = ("voxel", "class")
#: augmentation schemes of :class:`OptimConfig` (``optim.augmentation``)
AUGMENTATION = ("light", "strong")


@dataclass(frozen=True)
class OptimConfig:
    """Optimisation schedule.

    One epoch visits every training case once (``batch_size`` cases per step, each giving
    ``samples_per_case`` foreground-weighted patches). ``max_minutes`` stops gracefully (the
    last checkpoint is saved, ``--resume`` continues).

    ``sampling``: where the ``pos_fraction`` of foreground patches are centred. ``voxel`` (the
    default, what the shipped models before issue 19's sampling study used): on a random
    contoured voxel, so organs are picked in proportion to their volume. ``class`` (nnU-Net's
    choice): on a random voxel of an organ picked uniformly among those the case has, so a small
    organ (esophagus) is centred as often as a large one (mandible).

    ``augmentation`` (with ``augment``): ``light`` (the default: ±8° rotations, ±10 % scaling,
    mild intensity changes) or ``strong`` (nnU-Net's default set without mirroring: ±30°,
    0.7–1.4 scaling, blur, brightness, contrast, gamma, simulated low resolution).
    """

    epochs: int = 100
    batch_size: int = 1
    samples_per_case: int = 2
    pos_fraction: float = 0.67
    sampling: str = "voxel"
    lr: float = 2e-3
    weight_decay: float = 1e-5
    val_every: int = 10
    augment: bool = True
    augmentation: str = "light"
    max_minutes: float | None = None
    amp: bool = True

    def __post_init__(self) -> None:
        counts = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "samples_per_case": self.samples_per_case,
            "val_every": self.val_every,
        }
        for key, value in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"optim.{key} must be an integer ≥ 1; got {value!r}.")
        if not 0.0 <= self.pos_fraction <= 1.0:
            raise ConfigError(f"optim.pos_fraction must be in [0, 1]; got {self.pos_fraction}.")
        if self.sampling not in SAMPLING:
            raise ConfigError(
                f"optim.sampling must be one of {', '.join(SAMPLING)}; got {self.sampling!r}."
            )
        if self.augmentation not in AUGMENTATION:
            raise ConfigError(
                f"optim.augmentation must be one of {', '.join(AUGMENTATION)}; "
                f"got {self.augmentation!r}."
            )
        if not self.lr > 0:
            raise ConfigError(f"optim.lr must be > 0; got {self.lr}.")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ConfigError(
                f"optim.max_minutes must be > 0 (or left out for no limit); got {self.max_minutes}."
            )


@dataclass(frozen=True)
class SRMConfig:
    """The shape representation model (stage 1) and its weights in the stage-2 loss.

    ``checkpoint``: where the trained SRM is (re)used; if the file does not exist the SRM is
    trained first and saved there. ``input_noise`` in [0, 1) mixes random class probabilities
    into the one-hot inputs during SRM training (so the SRM learns to map imperfect soft
    predictions onto plausible shapes).
    """

    checkpoint: str = ""
    channels: tuple[int, ...] = (16, 32, 64)
    latent_channels: int = 16
    lambda_latent: float = 0.1
    lambda_recon: float = 0.5
    input_noise: float = 0.3
    epochs: int = 40
    lr: float = 2e-3


@dataclass(frozen=True)
class TrainConfig:
    """A complete training run."""

    name: str
    output_dir: str
    data: DataConfig
    preprocessing: PreprocessingSpec
    model: ModelConfig
    optim: OptimConfig
    srm: SRMConfig | None = None
    loss: LossConfig = field(default_factory=LossConfig)
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict (stored in checkpoints and next to outputs)."""
        return _plain(dataclasses.asdict(self))


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def _build(cls: type[T], data: Any, where: str) -> T:
    data = checked_mapping(cls, {} if data is None else data, what=where)
    kwargs = {k: tuple(v) if isinstance(v, list) and k != "options" else v for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _resolve(base: Path, value: str) -> str:
    if not value:
        return value
    p = Path(os.path.expanduser(value))
    return str(p if p.is_absolute() else (base / p).resolve())


def load_train_config(
    path: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None
) -> TrainConfig:
    """Read a training YAML file (relative paths resolved against its folder).

    ``overrides`` is merged per section before validation, e.g.
    ``{"optim": {"epochs": 1}, "output_dir": "/tmp/run"}``. ``{fold}`` in ``output_dir`` and
    ``srm.checkpoint`` is replaced by ``data.fold`` (``all`` when it is null), so one file serves
    every fold of a cross-validation and each fold gets its own SRM, trained on that fold's
    training cases only.
    """
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{p}: cannot read training config ({exc}).") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: top level must be a mapping.")
    for key, value in (overrides or {}).items():
        if isinstance(value, Mapping) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{p}: unknown keys {unknown}; known keys: {sorted(known)}.")
    for required in ("name", "output_dir", "data"):
        if required not in raw:
            raise ConfigError(f"{p}: missing required key {required!r}.")
    base = p.resolve().parent
    data = _build(DataConfig, raw["data"], f"{p}: data")
    data = dataclasses.replace(
        data,
        root=_resolve(base, data.root),
        extra_roots=tuple(_resolve(base, r) for r in data.extra_roots),
        availability=(
            data.availability if data.availability == "files" else _resolve(base, data.availability)
        ),
        cache_dir=_resolve(base, data.cache_dir),
    )
    for root in data.roots:
        if not root or not Path(root).is_dir():
            raise ConfigError(f"{p}: data root {root!r} is not a folder.")
    if data.availability != "files" and not Path(data.availability).is_file():
        raise ConfigError(
            f"{p}: data.availability must be 'files' or a CSV file; {data.availability!r} is "
            "neither."
        )
    if data.fold is not None and not 0 <= data.fold < data.folds:
        raise ConfigError(f"{p}: data.fold must be in 0..{data.folds - 1} or null.")
    fold_tag = "all" if data.fold is None else str(data.fold)
    srm = None
    if raw.get("srm") is not None:
        srm = _build(SRMConfig, raw["srm"], f"{p}: srm")
        if not srm.checkpoint:
            raise ConfigError(f"{p}: srm.checkpoint must name where the SRM is stored.")
        ckpt = srm.checkpoint.replace("{fold}", fold_tag)
        srm = dataclasses.replace(srm, checkpoint=_resolve(base, ckpt))
    try:
        spec = PreprocessingSpec.from_dict(raw.get("preprocessing") or {})
    except ConfigError as exc:
        raise ConfigError(f"{p}: preprocessing: {exc}") from exc
    cfg = TrainConfig(
        name=str(raw["name"]),
        output_dir=_resolve(base, str(raw["output_dir"]).replace("{fold}", fold_tag)),
        data=data,
        preprocessing=spec,
        model=_build(ModelConfig, raw.get("model"), f"{p}: model"),
        optim=_build(OptimConfig, raw.get("optim"), f"{p}: optim"),
        srm=srm,
        loss=_build(LossConfig, raw.get("loss"), f"{p}: loss"),
        seed=int(raw.get("seed", 0)),
        device=str(raw.get("device", "auto")),
        num_threads=raw.get("num_threads"),
    )
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"{p}: device must be auto, cpu or cuda; got {cfg.device!r}.")
    return cfg
