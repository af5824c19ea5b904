"""Checkpoints that carry everything needed to use a model, loaded without unpickling code.

A checkpoint is a ``torch.save``-d dict holding only tensors and plain Python values, so it is
read with ``torch.load(weights_only=True)``:

========================  ==========================================================
key                       content
========================  ==========================================================
``format``                ``"medseg-checkpoint"``, ``format_version`` (int)
``model_name``            registry name (``"unet3d"``, ``"fcn3d"``, ``"srm"``)
``model_options``         JSON string of builder options incl. in/out channels
``label_map``             JSON string of :meth:`medseg.volume.LabelMap.to_json`
``preprocessing``         JSON string of :class:`medseg.preprocess.PreprocessingSpec`
``config``                JSON string of the resolved training config
``metrics``               JSON string of validation metrics (may be ``{}``)
``medseg_version``        package version that wrote it
``case_list_hash``        sha256 of the sorted training case ids
``state_dict``            the model weights
``digest``                sha256 over the weights and all the strings above
``training_state``        optional: optimiser state, step, … (for ``--resume``)
========================  ==========================================================

Typical use (the inference Predictor does this)::

    model, info = load_checkpoint("hn_oar")        # shipped model, or a path to a .pt file
    spec = info.preprocessing                       # spacing, orientation, HU window, roi size
    names = info.label_map.names                    # channel i+1 ↔ names[i]; channel 0 background
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pickle
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medseg.errors import ConfigError, InputError, ModelError
from medseg.io.atomic import write_atomic
from medseg.models.registry import build_model
from medseg.preprocess import PreprocessingSpec
from medseg.volume import LabelMap

logger = logging.getLogger(__name__)

__all__ = [
    "SHIPPED_MODELS",
    "CheckpointInfo",
    "case_list_hash",
    "load_checkpoint",
    "read_checkpoint",
    "resolve_checkpoint_path",
    "save_checkpoint",
]

FORMAT = "medseg-checkpoint"
FORMAT_VERSION = 1
#: Model names that resolve to weights shipped inside the package (``medseg/weights/<name>.pt``).
SHIPPED_MODELS: tuple[str, ...] = ("hn_oar",)
_STRING_KEYS = (
    "model_name",
    "model_options",
    "label_map",
    "preprocessing",
    "config",
    "metrics",
    "medseg_version",
    "case_list_hash",
)


@dataclass(frozen=True)
class CheckpointInfo:
    """Everything about a checkpoint except the weights.

    Attributes
    ----------
    model_name, model_options
        Registry name and builder options (``in_channels``, ``out_channels`` included).
    label_map
        Names of output channels 1..K (channel 0 is background).
    preprocessing
        How inputs must be prepared (spacing, orientation, HU window, roi size).
    config
        Resolved training configuration (plain dict).
    metrics
        Validation metrics recorded when the checkpoint was written.
    medseg_version, case_list_hash
        Writer version and sha256 of the sorted training case ids.
    path
        Where it was loaded from.
    """

    model_name: str
    model_options: dict[str, Any]
    label_map: LabelMap
    preprocessing: PreprocessingSpec
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    medseg_version: str = ""
    case_list_hash: str = ""
    path: str = ""


def case_list_hash(case_ids: Iterable[str]) -> str:
    """sha256 hex digest of the sorted case ids, one per line.

    Examples
    --------
    >>> case_list_hash(["b", "a"]) == case_list_hash(["a", "b"])
    True
    """
    text = "\n".join(sorted(str(c) for c in case_ids))
    return hashlib.sha256(text.encode()).hexdigest()


def _digest(strings: Mapping[str, str], state_dict: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in _STRING_KEYS:
        h.update(key.encode() + b"\0" + strings[key].encode() + b"\0")
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(name.encode() + b"\0" + str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("medseg")
    except Exception:  # metadata missing in a bare checkout
        return "unknown"


def save_checkpoint(  # noqa: PLR0913 -- keyword-only; one argument per field of the format
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    model_name: str,
    model_options: Mapping[str, Any],
    label_map: LabelMap,
    preprocessing: PreprocessingSpec,
    config: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    case_ids: Iterable[str] = (),
    training_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file + rename) and return its path.

    ``model_options`` must include ``in_channels`` and ``out_channels``; ``config``,
    ``metrics`` and ``model_options`` must be JSON-serialisable. ``training_state`` (optimiser
    state dict, step, best score…) must hold only tensors and plain Python values.
    """
    opts = dict(model_options)
    if "in_channels" not in opts or "out_channels" not in opts:
        raise ModelError("model_options must include in_channels and out_channels.")
    try:
        strings = {
            "model_name": model_name,
            "model_options": json.dumps(opts, sort_keys=True),
            "label_map": json.dumps(label_map.to_json()),
            "preprocessing": preprocessing.to_json(),
            "config": json.dumps(dict(config or {}), sort_keys=True),
            "metrics": json.dumps(dict(metrics or {}), sort_keys=True),
            "medseg_version": _version(),
            "case_list_hash": case_list_hash(case_ids),
        }
    except TypeError as exc:
        raise ConfigError(f"checkpoint metadata must be JSON-serialisable ({exc}).") from exc
    state = _detached_state(model)
    payload: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION, **strings}
    payload["state_dict"] = state
    payload["digest"] = _digest(strings, state)
    if training_state is not None:
        payload["training_state"] = dict(training_state)
    out = Path(path)
    return write_atomic(out, lambda tmp: torch.save(payload, tmp))


def _detached_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """CPU copies of the model's state, one copy per tensor the model shares between names.

    Some networks register one module under two names (MONAI's DynUNet holds its skip blocks in
    both ``downsamples`` and ``skip_layers``), so ``state_dict()`` lists the same tensor twice.
    Copying each name separately would store those weights twice in the file.
    """
    copies: dict[tuple[int, torch.Size, tuple[int, ...], torch.dtype], torch.Tensor] = {}
    state: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tensor.shape, tensor.stride(), tensor.dtype)
        if key not in copies:
            copies[key] = tensor.detach().cpu().clone()
        state[name] = copies[key]
    return state


def resolve_checkpoint_path(name_or_path: str | os.PathLike[str]) -> Path:
    """Map a shipped model name (``"hn_oar"``) or a file path to an existing file."""
    text = os.fspath(name_or_path)
    if text in SHIPPED_MODELS:
        p = Path(__file__).resolve().parents[1] / "weights" / f"{text}.pt"
        if not p.is_file():
            raise ModelError(
                f"shipped model {text!r} is missing from the installation (expected {p}); "
                "reinstall medseg or pass a checkpoint path."
            )
        return p
    p = Path(text)
    if not p.is_file():
        raise ModelError(
            f"{text!r} is neither a shipped model name {list(SHIPPED_MODELS)} nor an existing "
            "checkpoint file."
        )
    return p


def read_checkpoint(
    name_or_path: str | os.PathLike[str],
) -> tuple[dict[str, Any], CheckpointInfo]:
    """Read and verify a checkpoint file; return the raw payload and its :class:`CheckpointInfo`.

    Raises
    ------
    ModelError
        The file holds non-tensor pickled objects, is not a medseg checkpoint, misses keys,
        or its digest does not match its content (tampered or corrupted).
    """
    path = resolve_checkpoint_path(name_or_path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise ModelError(
            f"{path}: refused to load: not a safe medseg checkpoint (torch.load with "
            f"weights_only=True failed: {str(exc).splitlines()[0][:200]}). Only checkpoints "
            "written by medseg.models.save_checkpoint are accepted."
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(f"{path}: not a medseg checkpoint (no format={FORMAT!r} entry).")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"{path}: checkpoint format version {payload.get('format_version')} is not supported "
            f"(this medseg reads version {FORMAT_VERSION})."
        )
    missing = [k for k in (*_STRING_KEYS, "state_dict", "digest") if k not in payload]
    if missing or not all(isinstance(payload[k], str) for k in _STRING_KEYS):
        raise ModelError(f"{path}: checkpoint is incomplete or malformed (missing {missing}).")
    strings = {k: payload[k] for k in _STRING_KEYS}
    if _digest(strings, payload["state_dict"]) != payload["digest"]:
        raise ModelError(
            f"{path}: checkpoint digest mismatch: weights or metadata were modified after "
            "saving (tampered or corrupted file). Re-export it with save_checkpoint."
        )
    try:
        info = CheckpointInfo(
            model_name=strings["model_name"],
            model_options=json.loads(strings["model_options"]),
            label_map=LabelMap.from_json(json.loads(strings["label_map"])),
            preprocessing=PreprocessingSpec.from_json(strings["preprocessing"]),
            config=json.loads(strings["config"]),
            metrics=json.loads(strings["metrics"]),
            medseg_version=strings["medseg_version"],
            case_list_hash=strings["case_list_hash"],
            path=str(path),
        )
    except (ValueError, TypeError, ConfigError, InputError) as exc:
        raise ModelError(f"{path}: checkpoint metadata cannot be parsed ({exc}).") from exc
    return payload, info


def load_checkpoint(
    name_or_path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, CheckpointInfo]:
    """Build the model a checkpoint describes and load its weights (eval mode).

    Parameters
    ----------
    name_or_path
        ``"hn_oar"`` (the shipped head-and-neck OAR model) or a ``.pt`` path.
    device
        Where to put the model.

    Returns
    -------
    (torch.nn.Module, CheckpointInfo)
        The model outputs logits with ``len(info.label_map) + 1`` channels (0 = background).

    Raises
    ------
    ModelError
        Unsafe, tampered, incomplete or mismatched checkpoint (weights not fitting the model).
    """
    payload, info = read_checkpoint(name_or_path)
    opts = dict(info.model_options)
    try:
        in_ch, out_ch = int(opts.pop("in_channels")), int(opts.pop("out_channels"))
    except KeyError as exc:
        raise ModelError(f"{info.path}: model_options lack {exc}.") from exc
    if info.model_name != "srm" and out_ch != len(info.label_map) + 1:
        raise ModelError(
            f"{info.path}: model has {out_ch} output channels but the label map names "
            f"{len(info.label_map)} labels (+1 background expected)."
        )
    model = build_model(info.model_name, in_channels=in_ch, out_channels=out_ch, **opts)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ModelError(
            f"{info.path}: weights do not fit model {info.model_name!r} with options "
            f"{info.model_options}: {str(exc).splitlines()[0][:300]}"
        ) from exc
    model.to(device).eval()
    return model, dataclasses.replace(info)
