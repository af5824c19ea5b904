"""Photo-model checkpoints: weights + :class:`ModelSpec` + config, loaded with weights_only.

A checkpoint is a ``dict`` with ``"format": "medseg-photo-maskrcnn/1"``, ``"spec"`` (plain dict),
``"model"`` (state dict; shipped models store float16 tensors to halve the file size) and
optional ``"config"``, ``"metrics"``, ``"optimizer"``, ``"scheduler"``, ``"epoch"``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torchvision.models.detection import MaskRCNN

from medseg.errors import ModelError
from medseg.io.atomic import write_atomic
from medseg.photo.models import ModelSpec, build_maskrcnn

logger = logging.getLogger(__name__)

__all__ = [
    "FORMAT",
    "WEIGHTS_DIR",
    "load_photo_model",
    "prediction_defaults",
    "read_checkpoint",
    "save_checkpoint",
]

FORMAT = "medseg-photo-maskrcnn/1"
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
SHIPPED = {"wound": "wound.pt", "lesion": "lesion.pt"}


def save_checkpoint(path: str | Path, payload: dict[str, Any], *, half: bool = False) -> Path:
    """Atomically write a checkpoint (``payload`` must hold ``"model"`` and ``"spec"``).

    With ``half=True`` floating tensors of the model state are stored as float16.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = dict(payload, format=FORMAT)
    if half:
        data["model"] = {
            k: (v.half() if v.is_floating_point() else v) for k, v in payload["model"].items()
        }
    return write_atomic(path, lambda tmp: torch.save(data, tmp))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict with ``weights_only=True``.

    Raises
    ------
    ModelError
        Missing file, unsafe/corrupt content or not a medseg photo checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model checkpoint {path} does not exist.")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise ModelError(
            f"cannot load {path} with weights_only=True ({type(exc).__name__}: {exc})."
        ) from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelError(
            f"{path} is not a medseg photo checkpoint (expected format {FORMAT!r}); for "
            "third-party weights use `medseg photo train --weights FILE`."
        )
    return data


def resolve_model(name_or_path: str | Path) -> Path:
    """Map ``"wound"``/``"lesion"`` to the shipped file, otherwise treat it as a path."""
    if str(name_or_path) in SHIPPED:
        path = WEIGHTS_DIR / SHIPPED[str(name_or_path)]
        if not path.is_file():
            raise ModelError(f"shipped model {name_or_path!r} is missing ({path}).")
        return path
    return Path(name_or_path)


def load_photo_model(name_or_path: str | Path) -> tuple[MaskRCNN, ModelSpec, dict[str, Any]]:
    """Build the model of a checkpoint (``"wound"``, ``"lesion"`` or a path), in eval mode.

    Returns
    -------
    model, spec, checkpoint
        The float32 model on CPU, its spec and the whole checkpoint dict.
    """
    path = resolve_model(name_or_path)
    data = read_checkpoint(path)
    spec = ModelSpec.from_dict(dict(data["spec"]))
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
        raise ModelError(f"{path}: weights do not fit {spec.architecture} ({exc}).") from exc
    model.eval()
    logger.info("loaded photo model %s (%s)", path.name, spec.architecture)
    return model, spec, data


def prediction_defaults(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The prediction settings a checkpoint stores, as :func:`predict_array` keywords.

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
        "score_threshold": float(checkpoint.get("metrics", {}).get("score_threshold", 0.5)),
        "max_instances": stored.get("max_instances"),
        "tta": bool(stored.get("tta", False)),
        "centre_prior": stored.get("centre_prior"),
    }
