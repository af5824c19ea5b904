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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ExportError, InputError, ModelError
from medseg.io.atomic import write_atomic
from medseg.photo.checkpoint import load_photo_model
from medseg.photo.datasets import check_photo, read_photo
from medseg.photo.inference import network_shape, overlay, predict_array
from medseg.photo.outputs import check_output_folder, write_png

logger = logging.getLogger(__name__)

__all__ = ["predict_files", "write_png"]


@contextmanager
def _removed_on_failure(out: Path) -> Iterator[list[Path]]:
    """Yield a list to record written files in; on an error remove them (and ``out`` when this
    call created it and it is left empty), then re-raise."""
    created = not out.exists()
    written: list[Path] = []
    try:
        yield written
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise


def _remove_interrupted_outputs(out: Path, names: Sequence[str]) -> list[Path]:
    """Remove this run's output files left by an earlier run that was killed before finishing.

    ``predictions.json`` is written last and lists every mask and overlay of a complete run; an
    output folder holding some of ``names`` but no ``predictions.json`` is what a killed run
    leaves. Only files this run is about to write are removed (never other files).
    """
    if not out.is_dir() or (out / "predictions.json").exists():
        return []
    stale = [out / n for n in names if (out / n).is_file()]
    for path in stale:
        path.unlink()
    if stale:
        logger.warning(
            "%s: removed %d output file(s) of an earlier run that did not finish (no "
            "predictions.json)",
            out,
            len(stale),
        )
    return stale


def predict_files(  # noqa: PLR0913 -- every option after out_dir is keyword-only
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
    if max_instances is not None and max_instances < 0:
        raise InputError(f"max_instances must be >= 0 (0 keeps all), got {max_instances}.")
    if centre_prior is not None and not 0 <= centre_prior <= 1:
        raise InputError(
            f"centre_prior is a sigma in photo sizes, 0 (off) to 1; got {centre_prior}."
        )
    # Check every photo (decoded once, then dropped) and the output folder first, so a bad
    # input fails before any model work and leaves nothing behind.
    sizes = [check_photo(p) for p in paths]
    out = Path(out_dir)
    names = [n for s in stems for n in (f"{s}_mask.png", f"{s}_overlay.png")]
    _remove_interrupted_outputs(out, names)
    check_output_folder(out, [*names, "predictions.json"], overwrite=overwrite)
    net, info = load_photo_model(model, device=device)
    defaults = info.prediction_defaults()
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
    spec = info.spec
    records = []
    with _removed_on_failure(out) as written:
        for path, stem, (width, height) in zip(paths, stems, sizes, strict=True):
            image = read_photo(path)
            if network_shape((height, width)) != (height, width):
                rows, cols = network_shape((height, width))
                logger.info("%s: %dx%d photo predicted at %dx%d", stem, width, height, cols, rows)
            try:
                pred = predict_array(
                    net,
                    image,
                    score_threshold=score_threshold,
                    bf16=bf16,
                    max_instances=limit,
                    tta=tta,
                    centre_prior=prior,
                )
            except RuntimeError as exc:  # torch: out of memory, unsupported input
                raise ModelError(
                    f"{path}: the network failed on this {width} x {height} photo "
                    f"({str(exc).splitlines()[0][:200]})."
                ) from exc
            mask = np.multiply(pred.mask, 255, dtype=np.uint8)  # one uint8 copy, 0/255
            write_png(out / f"{stem}_mask.png", mask)
            written.append(out / f"{stem}_mask.png")
            del mask
            if not image.flags.writeable:
                image = image.copy()
            write_png(out / f"{stem}_overlay.png", overlay(image, pred.mask, in_place=True))
            written.append(out / f"{stem}_overlay.png")
            del image
            records.append(
                {
                    "image": str(path),
                    "stem": stem,
                    "width": width,
                    "height": height,
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
            "model": {**spec.to_dict(), "file": info.path},
            "score_threshold": score_threshold,
            "bf16": bf16,
            "max_instances": limit,
            "tta": tta,
            "centre_prior": prior,
            "images": records,
        }
        target = out / "predictions.json"
        try:
            write_atomic(target, lambda tmp: tmp.write_text(json.dumps(result, indent=2)))
        except OSError as exc:
            raise ExportError(f"cannot write {target}: {exc}") from exc
    return result
