"""``medseg segment INPUT -o OUTDIR``: organ labels for a CT on its own grid.

INPUT is a DICOM folder or file, a NIfTI/NRRD/MHA file or an OpenKBP patient folder. Writes
``OUTDIR/segmentation.nii.gz`` and ``OUTDIR/segmentation.json`` (label id → name, colour, SNOMED
codes; model name, version and hash; input; timings; warnings) and, with ``--format
seg,rtstruct`` and a DICOM input, ``OUTDIR/seg.dcm`` / ``OUTDIR/rtstruct.dcm``. The folder is
written as a whole (complete or absent, even after a kill); an existing one is replaced only
with ``--overwrite``. The work is :func:`medseg.study.segment_study`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["register", "run_segment"]


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
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument(
        "--allow-modality",
        action="store_true",
        help="segment input that does not look like CT in HU (recorded in the provenance)",
    )
    p.set_defaults(func=run_segment)


def run_segment(args: argparse.Namespace) -> int:
    """Handler of ``medseg segment``: parse, call :func:`~medseg.study.segment_study`, print."""
    from tqdm import tqdm

    from medseg.inference import InferenceConfig, Predictor, fix_mmap_threshold
    from medseg.runtime import cpu_count
    from medseg.study import StudyOptions, check_output_folder, segment_study

    options = StudyOptions(
        formats=args.format, overwrite=args.overwrite, allow_modality=args.allow_modality
    )
    config = InferenceConfig(
        overlap=args.overlap,
        tta=args.tta,
        precision=args.precision,
        accumulator=args.accumulator,
    )
    check_output_folder(args.output, overwrite=args.overwrite)  # before loading the model
    fix_mmap_threshold()  # freed activations go back to the system (medseg.inference.allocator)
    predictor = Predictor.from_checkpoint(
        args.model, device=args.device, config=config, num_threads=cpu_count()
    )
    bars: list[Any] = []

    def progress(done: int, total: int) -> None:
        if not bars:  # created on the first report, when the number of windows is known
            bars.append(tqdm(total=total, unit="window", file=sys.stderr, disable=args.quiet))
        bars[0].update(done - bars[0].n)

    try:
        result = segment_study(
            args.input, args.output, predictor, options=options, progress=progress
        )
    finally:
        for bar in bars:
            bar.close()
    for w in result.warnings:
        sys.stderr.write(f"warning: {w}\n")
    sys.stderr.write(
        f"segmentation written to {result.output_dir} in {result.timings['total_s']:.1f} s\n"
    )
    return 0
