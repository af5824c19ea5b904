"""Batch prediction on photo files: masks, overlays and ``predictions.json``.

Per photo ``<stem>``: ``<stem>_mask.png`` (8-bit greyscale, 0/255, union of kept instances, the
photo's displayed size and orientation) and ``<stem>_overlay.png`` (RGB). ``predictions.json``::

    {"model": {...spec, "file": ...}, "score_threshold": 0.5, "bf16": false,
     "max_instances": null, "tta": true, "centre_prior": null,
     "images": [{"image": "a.jpg", "stem": "a", "width": W, "height": H,
                 "mask": "a_mask.png", "overlay": "a_overlay.png",
                 "instances": [{"box": [x0, y0, x1, y1], "score": s, "area_px": n,
                                "label": 1, "label_name": "wound"}]}]}
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from medseg.errors import ExportError, InputError
from medseg.io.atomic import write_atomic
from medseg.photo.checkpoint import load_photo_model, prediction_defaults, resolve_model
from medseg.photo.datasets import read_photo
from medseg.photo.inference import overlay, predict_array, select_device

logger = logging.getLogger(__name__)

__all__ = ["predict_files", "write_png"]


def write_png(path: Path, array: npt.NDArray[np.uint8]) -> None:
    """Atomically write a uint8 array (rows, columns[, 3]) as PNG."""
    write_atomic(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def predict_files(
    images: Sequence[str | Path],
    out_dir: str | Path,
    *,
    model: str | Path = "wound",
    score_threshold: float | None = None,
    device: str = "auto",
    overwrite: bool = False,
    bf16: bool = False,
    max_instances: int | None = None,
    tta: bool | None = None,
    centre_prior: float | None = None,
    progress: Callable[[int], object] | None = None,
) -> dict[str, Any]:
    """Predict every photo, write masks/overlays and ``predictions.json``; return the JSON dict.

    Parameters
    ----------
    images
        Photo files (PNG/JPEG/...; EXIF orientation applied).
    out_dir
        Output folder (created).
    model
        ``"wound"``, ``"lesion"`` or a checkpoint path written by ``medseg photo train``.
    score_threshold
        Instances scoring below are dropped; ``None`` uses the threshold stored in the
        checkpoint (tuned on training photos by ``medseg photo train``), else 0.5.
    overwrite
        Replace existing outputs (otherwise an existing output is an error).
    bf16
        Run the network under CPU bfloat16 autocast (faster on CPUs with AVX512-BF16; masks
        can differ from float32 by a few boundary pixels).
    max_instances
        Keep only the N best-scoring instances per photo; ``0`` keeps all; ``None`` uses the
        checkpoint's setting (the shipped ``lesion`` model keeps 1: dermoscopy frames one
        lesion), else all.
    tta
        Flip test-time augmentation (4 passes; see :func:`~medseg.photo.inference.predict_array`);
        ``None`` uses the checkpoint's setting, else off.
    centre_prior
        Prefer instances near the photo's centre when choosing the ``max_instances`` kept
        (a sigma in photo sizes, see :func:`~medseg.photo.inference.keep_ranked`); ``0`` switches
        it off; ``None`` uses the checkpoint's setting (the shipped ``lesion`` model: 0.2).
    progress
        Called with 1 after each photo (for a progress bar).

    Raises
    ------
    InputError
        Unreadable photo, duplicate stems or existing outputs without ``overwrite``.
    ModelError
        Unloadable model.
    """
    if not images:
        raise InputError("no photos given; pass one or more image files.")
    paths = [Path(p) for p in images]
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise InputError(f"two inputs share the name {dup!r}; outputs would collide. Rename one.")
    # Read every photo first so a corrupt file fails before any model work or output.
    arrays = [read_photo(p) for p in paths]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not overwrite:
        existing = [
            out / n
            for s in stems
            for n in (f"{s}_mask.png", f"{s}_overlay.png")
            if (out / n).exists()
        ] + ([out / "predictions.json"] if (out / "predictions.json").exists() else [])
        if existing:
            raise InputError(f"{existing[0]} exists; pass --overwrite to replace outputs.")
    if max_instances is not None and max_instances < 0:
        raise InputError(f"max_instances must be >= 0 (0 keeps all), got {max_instances}.")
    if centre_prior is not None and not 0 <= centre_prior <= 1:
        raise InputError(
            f"centre_prior is a sigma in photo sizes, 0 (off) to 1; got {centre_prior}."
        )
    net, spec, checkpoint = load_photo_model(model)
    defaults = prediction_defaults(checkpoint)
    if score_threshold is None:
        score_threshold = defaults["score_threshold"]
    limit = (defaults["max_instances"] if max_instances is None else max_instances) or None
    if tta is None:
        tta = defaults["tta"]
    prior = (defaults["centre_prior"] if centre_prior is None else centre_prior) or None
    if prior is not None and limit is None:
        raise InputError(
            f"the centre prior ({prior}) chooses which instances to keep and needs a limit; "
            "pass --max-instances N (N >= 1) or --centre-prior 0."
        )
    net.to(select_device(device))
    records = []
    for path, stem, image in zip(paths, stems, arrays, strict=True):
        pred = predict_array(
            net,
            image,
            score_threshold=score_threshold,
            bf16=bf16,
            max_instances=limit,
            tta=tta,
            centre_prior=prior,
        )
        write_png(out / f"{stem}_mask.png", pred.mask.astype(np.uint8) * 255)
        write_png(out / f"{stem}_overlay.png", overlay(image, pred.mask))
        records.append(
            {
                "image": str(path),
                "stem": stem,
                "width": int(image.shape[1]),
                "height": int(image.shape[0]),
                "mask": f"{stem}_mask.png",
                "overlay": f"{stem}_overlay.png",
                "instances": [
                    {
                        "box": [round(v, 2) for v in inst.box],
                        "score": round(inst.score, 4),
                        "area_px": inst.area_px,
                        "label": inst.label,
                        "label_name": spec.class_names[inst.label - 1]
                        if 0 < inst.label <= len(spec.class_names)
                        else str(inst.label),
                    }
                    for inst in pred.instances
                ],
            }
        )
        logger.info("%s: %d instance(s)", stem, len(pred.instances))
        if progress is not None:
            progress(1)
    result = {
        "model": {**spec.to_dict(), "file": str(resolve_model(model))},
        "score_threshold": score_threshold,
        "bf16": bf16,
        "max_instances": limit,
        "tta": tta,
        "centre_prior": prior,
        "images": records,
    }
    target = out / "predictions.json"
    try:
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=2))
        tmp.replace(target)
    except OSError as exc:
        raise ExportError(f"cannot write {target}: {exc}") from exc
    return result
