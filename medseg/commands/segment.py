"""``medseg segment INPUT -o OUTDIR``: organ labels for a CT on its own grid.

INPUT is a DICOM folder or file, a NIfTI/NRRD/MHA file or an OpenKBP patient folder. Writes
``OUTDIR/segmentation.nii.gz`` and ``OUTDIR/segmentation.json`` (label id → name, colour, SNOMED
codes; model name and version; timings; warnings) and, with ``--format seg,rtstruct`` and a DICOM
input, ``OUTDIR/seg.dcm`` / ``OUTDIR/rtstruct.dcm``. Existing outputs
are kept unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from medseg.errors import ConfigError, InputError

logger = logging.getLogger(__name__)

__all__ = ["FORMATS", "output_paths", "parse_formats", "register", "run_segment"]

FORMATS = ("nifti", "seg", "rtstruct")
_FILES = {
    "nifti": "segmentation.nii.gz",
    "seg": "seg.dcm",
    "rtstruct": "rtstruct.dcm",
}


def register(subparsers: Any) -> None:
    """Add the ``segment`` sub-command."""
    p = subparsers.add_parser(
        "segment",
        help="segment organs in a CT with a trained model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", type=Path, help="DICOM folder/file, NIfTI/NRRD/MHA or OpenKBP folder")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.add_argument("--model", default="hn_oar", help="shipped model name or checkpoint path")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation (slower)")
    p.add_argument("--overlap", type=float, default=0.5, help="window overlap in [0, 1)")
    p.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "float32", "bfloat16", "float16"),
        help="network arithmetic: auto = float16 on CUDA, bfloat16 on CPUs that have it, "
        "else float32",
    )
    p.add_argument(
        "--accumulator",
        default="float16",
        choices=("float16", "float32"),
        help="storage of the blended window logits: float16 (half the memory, default) or "
        "float32 (with --precision float32: the same sums as MONAI)",
    )
    p.add_argument(
        "--format",
        default="nifti",
        help="comma-separated outputs: nifti, seg (DICOM-SEG), rtstruct (default: nifti)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=run_segment)


def parse_formats(text: str) -> tuple[str, ...]:
    """Parse ``--format``; NIfTI is always written.

    Examples
    --------
    >>> parse_formats("seg, nifti")
    ('nifti', 'seg')
    """
    items = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = [t for t in items if t not in FORMATS]
    if unknown:
        raise ConfigError(f"--format: unknown {unknown}; choose from {', '.join(FORMATS)}.")
    return tuple(f for f in FORMATS if f in items or f == "nifti")


def output_paths(outdir: Path, formats: tuple[str, ...]) -> dict[str, Path]:
    """Files written for ``formats`` (plus the JSON sidecar)."""
    paths = {f: outdir / _FILES[f] for f in formats}
    paths["json"] = outdir / "segmentation.json"
    return paths


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def run_segment(args: argparse.Namespace) -> int:
    """Handler of ``medseg segment``."""
    from medseg import __version__
    from medseg.inference import InferenceConfig, Predictor, fix_mmap_threshold
    from medseg.io import load_volume, save_labels

    t0 = time.perf_counter()
    fix_mmap_threshold()  # freed activations go back to the system (medseg.inference.allocator)
    formats = parse_formats(args.format)
    config = InferenceConfig(
        overlap=args.overlap,
        tta=args.tta,
        precision=getattr(args, "precision", "auto"),
        accumulator=getattr(args, "accumulator", "float16"),
    )
    outdir: Path = args.output
    paths = output_paths(outdir, formats)
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not args.overwrite:
        raise InputError(
            f"outputs already exist: {', '.join(existing)}; pass --overwrite to replace them or "
            "choose another --output folder."
        )
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"--output {outdir} exists and is not a folder.")

    volume = load_volume(args.input)
    if ("seg" in formats or "rtstruct" in formats) and volume.source is None:
        raise InputError(
            f"--format seg/rtstruct needs a DICOM input to reference; {args.input} is not a DICOM "
            "series. Use --format nifti, or convert the image to DICOM first."
        )
    t_load = time.perf_counter() - t0

    t1 = time.perf_counter()
    predictor = Predictor.from_checkpoint(
        args.model, device=args.device, config=config, num_threads=_cpu_count()
    )
    t_model = time.perf_counter() - t1

    from tqdm import tqdm

    quiet = bool(getattr(args, "quiet", False))
    bars: list[Any] = []

    def progress(done: int, total: int) -> None:
        if not bars:  # created on the first report, when the number of windows is known
            bars.append(tqdm(total=total, unit="window", file=sys.stderr, disable=quiet))
        bars[0].update(done - bars[0].n)

    try:
        labels = predictor.predict(volume, progress=progress)
    finally:
        for bar in bars:
            bar.close()

    t2 = time.perf_counter()
    outdir.mkdir(parents=True, exist_ok=True)
    if "seg" in formats or "rtstruct" in formats:
        from medseg.export import write_dicom_seg, write_rtstruct

        kw = {"algorithm_name": f"medseg {predictor.name}", "overwrite": args.overwrite}
        if "seg" in formats:
            write_dicom_seg(labels, volume, paths["seg"], algorithm_version=__version__, **kw)
        if "rtstruct" in formats:
            write_rtstruct(labels, volume, paths["rtstruct"], algorithm_version=__version__, **kw)
    t_export = time.perf_counter() - t2
    timings = {
        "load_s": round(t_load, 3),
        "model_load_s": round(t_model, 3),
        **{f"{k}_s": round(v, 3) for k, v in predictor.last_timings.items() if k != "total"},
        "predict_s": round(predictor.last_timings.get("total", 0.0), 3),
        "export_dicom_s": round(t_export, 3),
    }
    timings["total_s"] = round(time.perf_counter() - t0, 3)  # before writing the NIfTI
    extra = {
        "medseg_version": __version__,
        "model": {
            "name": predictor.name,
            "version": predictor.version,
            "preprocessing": predictor.spec.to_json(),
        },
        "input": {
            "shape": list(volume.shape),
            "spacing_mm": [round(s, 6) for s in volume.spacing_mm],
            "orientation": volume.orientation,
            "series_instance_uid": volume.source.series_instance_uid if volume.source else None,
        },
        "inference": {
            "device": str(predictor.device),
            "overlap": config.overlap,
            "tta": config.tta,
            "precision": predictor.precision,
            "accumulator": config.accumulator,
            "windows_run": predictor.last_windows.get("run", 0),
            "windows_skipped": predictor.last_windows.get("skipped", 0),
        },
        "outputs": {f: paths[f].name for f in formats},
        "timings": timings,
    }
    save_labels(labels, paths["nifti"], overwrite=args.overwrite, extra=extra)
    for w in labels.warnings:
        sys.stderr.write(f"warning: {w}\n")
    sys.stderr.write(f"segmentation written to {outdir} in {timings['total_s']:.1f} s\n")
    return 0
