"""Photo-model checkpoints: weights + :class:`ModelSpec` + config, loaded with weights_only.

A checkpoint is a ``torch.save``-d dict of tensors and plain values (so it is read with
``torch.load(weights_only=True)``), with the same typed front door as
:mod:`medseg.models.checkpoint`: :func:`read_checkpoint` returns the raw payload and a frozen
:class:`PhotoCheckpointInfo`; :func:`load_photo_model` builds the model.

==================  ====================================================================
key                 content
==================  ====================================================================
``format``          ``"medseg-photo-maskrcnn/1"``
``spec``            :meth:`ModelSpec.to_dict` (architecture, classes, input size)
``model``           state dict (shipped models store float16 tensors to halve the size)
``digest``          sha256 of the weights (files written before it existed have none and
                    still load, the shipped ``wound.pt`` / ``lesion.pt`` among them)
``config``          optional: resolved training config (dict)
``metrics``         optional: ``score_threshold`` and training / held-out figures
``inference``       optional: ``max_instances``, ``tta``, ``centre_prior`` prediction defaults
``optimizer``,      optional, ``last.pt`` only: what ``--resume`` needs
``epoch``, ...
==================  ====================================================================

Typical use::

    model, info = load_photo_model("wound")   # shipped model, or a path to a .pt file
    info.spec.image_size, info.score_threshold, info.tta
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torchvision.models.detection import MaskRCNN

from medseg.errors import ModelError
from medseg.io.atomic import write_atomic
from medseg.photo.models import ModelSpec, build_maskrcnn
from medseg.runtime import select_device

logger = logging.getLogger(__name__)

__all__ = [
    "FORMAT",
    "SHIPPED",
    "WEIGHTS_DIR",
    "PhotoCheckpointInfo",
    "PredictionDefaults",
    "load_photo_model",
    "prediction_defaults",
    "read_checkpoint",
    "resolve_model",
    "save_checkpoint",
    "update_prediction_defaults",
    "weights_digest",
]

FORMAT = "medseg-photo-maskrcnn/1"
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
#: Shipped model names and their files in :data:`WEIGHTS_DIR`.
SHIPPED = {"wound": "wound.pt", "lesion": "lesion.pt"}


@dataclass(frozen=True)
class PhotoCheckpointInfo:
    """Everything about a photo checkpoint except the weights.

    Attributes
    ----------
    spec
        How to rebuild the network.
    score_threshold
        Instance score threshold tuned on training photos (0.5 when the file has none).
    max_instances, tta, centre_prior
        Prediction defaults (``None``/``False`` when the file has none; see
        :func:`prediction_defaults`).
    config, metrics
        Resolved training config and recorded metrics (plain dicts, may be empty).
    path
        Where it was read from.
    """

    spec: ModelSpec
    score_threshold: float = 0.5
    max_instances: int | None = None
    tta: bool = False
    centre_prior: float | None = None
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    def prediction_defaults(self) -> dict[str, Any]:
        """The stored prediction settings as :func:`~medseg.photo.inference.predict_array`
        keywords (``score_threshold``, ``max_instances``, ``tta``, ``centre_prior``)."""
        return {
            "score_threshold": self.score_threshold,
            "max_instances": self.max_instances,
            "tta": self.tta,
            "centre_prior": self.centre_prior,
        }


def weights_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of a state dict's tensors.

    Examples
    --------
    >>> one, zero = {"w": torch.ones(2)}, {"w": torch.zeros(2)}
    >>> weights_digest(one) == weights_digest({"w": torch.ones(2)}) != weights_digest(zero)
    True
    """
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(name.encode() + b"\0" + str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(path: str | Path, payload: dict[str, Any], *, half: bool = False) -> Path:
    """Atomically write a checkpoint (``payload`` must hold ``"model"`` and ``"spec"``).

    With ``half=True`` floating tensors of the model state are stored as float16. The weights'
    :func:`weights_digest` is stored and checked by :func:`read_checkpoint`.

    Raises
    ------
    ModelError
        ``payload`` lacks ``"model"`` or ``"spec"``.
    """
    if not isinstance(payload.get("model"), Mapping) or not isinstance(
        payload.get("spec"), Mapping
    ):
        raise ModelError("a photo checkpoint needs a 'model' state dict and a 'spec' dict.")
    data = dict(payload, format=FORMAT)
    data["model"] = {
        k: (v.half() if half and v.is_floating_point() else v).detach().cpu()
        for k, v in payload["model"].items()
    }
    data["digest"] = weights_digest(data["model"])
    return write_atomic(Path(path), lambda tmp: torch.save(data, tmp))


def resolve_model(name_or_path: str | os.PathLike[str]) -> Path:
    """Map ``"wound"``/``"lesion"`` to the shipped file, otherwise an existing file path.

    Raises
    ------
    ModelError
        Shipped file missing, or neither a shipped name nor an existing file.
    """
    text = os.fspath(name_or_path)
    if text in SHIPPED:
        path = WEIGHTS_DIR / SHIPPED[text]
        if not path.is_file():
            raise ModelError(
                f"shipped model {text!r} is missing from the installation ({path}); reinstall "
                "medseg or pass a checkpoint path."
            )
        return path
    path = Path(text)
    if not path.is_file():
        raise ModelError(
            f"model checkpoint {path} does not exist; pass wound, lesion or the path of a "
            "checkpoint written by `medseg photo train`."
        )
    return path


def prediction_defaults(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The prediction settings a checkpoint payload stores, as :func:`predict_array` keywords.

    ``score_threshold`` (tuned on training photos; 0.5 when absent), ``max_instances`` (``None``
    keeps all), ``tta`` and ``centre_prior`` (off when absent: checkpoints written before these
    keys existed).

    >>> prediction_defaults({"metrics": {"score_threshold": 0.6},
    ...                      "inference": {"max_instances": 1, "tta": True, "centre_prior": 0.2}})
    {'score_threshold': 0.6, 'max_instances': 1, 'tta': True, 'centre_prior': 0.2}
    >>> prediction_defaults({})
    {'score_threshold': 0.5, 'max_instances': None, 'tta': False, 'centre_prior': None}
    """
    stored = checkpoint.get("inference") or {}
    return {
        "score_threshold": float((checkpoint.get("metrics") or {}).get("score_threshold", 0.5)),
        "max_instances": stored.get("max_instances"),
        "tta": bool(stored.get("tta", False)),
        "centre_prior": stored.get("centre_prior"),
    }


def read_checkpoint(
    name_or_path: str | os.PathLike[str],
) -> tuple[dict[str, Any], PhotoCheckpointInfo]:
    """Read and check a photo checkpoint (``torch.load(weights_only=True)``).

    Parameters
    ----------
    name_or_path
        ``"wound"``, ``"lesion"`` or a ``.pt`` path.

    Returns
    -------
    payload, info
        The raw dict (weights under ``"model"``) and its :class:`PhotoCheckpointInfo`.

    Raises
    ------
    ModelError
        Missing, truncated/corrupt or unsafe file, not a medseg photo checkpoint, malformed
        entries, or weights that do not match the stored digest.
    """
    path = resolve_model(name_or_path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        first = (str(exc).splitlines() or [""])[0][:200]
        raise ModelError(
            f"cannot load {path} as a photo checkpoint: torch.load(weights_only=True) failed "
            f"({type(exc).__name__}: {first}); the file is truncated, corrupt or not a safe "
            "medseg checkpoint. Re-copy it or retrain with `medseg photo train`."
        ) from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelError(
            f"{path} is not a medseg photo checkpoint (expected format {FORMAT!r}); for "
            "third-party weights use `medseg photo train --weights FILE`."
        )
    state, spec = data.get("model"), data.get("spec")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path}: the 'model' entry is not a state dict of tensors.")
    if not isinstance(spec, dict):
        raise ModelError(f"{path}: the 'spec' entry is missing or not a mapping.")
    if "digest" in data and data["digest"] != weights_digest(state):
        raise ModelError(
            f"{path}: weights do not match the stored digest (modified or corrupted after "
            "saving). Re-copy the file or retrain."
        )
    defaults = prediction_defaults(data)
    try:
        info = PhotoCheckpointInfo(
            spec=ModelSpec.from_dict(dict(spec)),
            config=dict(data.get("config") or {}),
            metrics=dict(data.get("metrics") or {}),
            path=str(path),
            **defaults,
        )
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{path}: checkpoint metadata cannot be parsed ({exc}).") from exc
    return data, info


def load_photo_model(
    name_or_path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> tuple[MaskRCNN, PhotoCheckpointInfo]:
    """Build the model of a checkpoint (``"wound"``, ``"lesion"`` or a path), in eval mode.

    Returns
    -------
    model, info
        The float32 model on ``device`` (see :func:`medseg.runtime.select_device`) and the
        checkpoint's :class:`PhotoCheckpointInfo`.

    Raises
    ------
    ModelError
        Unreadable checkpoint (see :func:`read_checkpoint`) or weights not fitting the spec.
    """
    data, info = read_checkpoint(name_or_path)
    spec = info.spec
    model = build_maskrcnn(
        spec.architecture,
        num_classes=spec.num_classes,
        image_size=spec.image_size,
        mask_size=spec.mask_size,
    )
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in data["model"].items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(
            f"{info.path}: weights do not fit {spec.architecture} "
            f"({str(exc).splitlines()[0][:300]})."
        ) from exc
    model.to(select_device(device)).eval()
    logger.info("loaded photo model %s (%s)", Path(info.path).name, spec.architecture)
    return model, info


@dataclass(frozen=True)
class PredictionDefaults:
    """The prediction settings a checkpoint's ``"inference"`` entry holds (``--set`` keys).

    ``max_instances`` (``None`` or 0: keep all), ``tta``, ``centre_prior`` (``None`` or 0: off;
    else a sigma in (0, 1] that needs ``max_instances``).
    """

    max_instances: int | None = None
    tta: bool = False
    centre_prior: float | None = None


def update_prediction_defaults(
    path: str | Path, overrides: Mapping[str, Any], *, retune_threshold: bool = False
) -> PhotoCheckpointInfo:
    """Change the prediction defaults stored in a checkpoint file, weights untouched.

    ``overrides`` holds :class:`PredictionDefaults` keys (``--set max_instances=1``);
    ``retune_threshold`` re-picks ``metrics.score_threshold`` from the stored training-photo
    table with :func:`medseg.photo.evaluate.pick_threshold`. The file is rewritten atomically.

    Raises
    ------
    ConfigError
        Unknown keys or invalid values.
    ModelError
        Unreadable checkpoint, or no threshold table to retune from.
    """
    from medseg.config import checked_mapping
    from medseg.errors import ConfigError
    from medseg.photo.evaluate import pick_threshold

    given = checked_mapping(PredictionDefaults, overrides, what="prediction defaults (--set)")
    data, info = read_checkpoint(Path(path))
    settings = {
        "max_instances": info.max_instances,
        "tta": info.tta,
        "centre_prior": info.centre_prior,
        **given,
    }
    limit, prior = settings["max_instances"] or None, settings["centre_prior"] or None
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ConfigError(f"max_instances must be an integer >= 0 (0 keeps all), got {limit!r}.")
    if not isinstance(settings["tta"], bool):
        raise ConfigError(f"tta must be true or false, got {settings['tta']!r}.")
    if prior is not None and (
        limit is None
        or isinstance(prior, bool)
        or not isinstance(prior, int | float)
        or not 0 < prior <= 1
    ):
        raise ConfigError(
            f"centre_prior is a sigma in (0, 1] and needs max_instances >= 1; got "
            f"centre_prior={prior!r}, max_instances={limit!r}."
        )
    data["inference"] = {"max_instances": limit, "tta": settings["tta"], "centre_prior": prior}
    metrics = data.setdefault("metrics", {})
    if retune_threshold:
        table = metrics.get("train_dice_by_threshold")
        if not table:
            raise ModelError(f"{path} stores no training-photo threshold table to retune from.")
        metrics["score_threshold"] = pick_threshold({float(t): d for t, d in table.items()})
    save_checkpoint(Path(path), data)
    return read_checkpoint(Path(path))[1]
