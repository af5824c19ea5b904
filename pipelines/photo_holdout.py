"""Thin launcher: evaluate a photo model on the held-out photos of a training run.

    .venv/bin/python pipelines/photo_holdout.py RUN_DIR OUT_DIR [--model wound|lesion|PATH] [--bf16]
        [--max-instances N] [--tta | --no-tta] [--centre-prior SIGMA]

Reads ``RUN_DIR/split.json``, runs ``medseg photo predict`` on the held-out photos (full
resolution, EXIF applied) into ``OUT_DIR/pred``, links their reference masks into
``OUT_DIR/ref`` and runs ``medseg photo evaluate`` (table on stdout, ``OUT_DIR/scores.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from medseg.cli import main as medseg
from medseg.photo.datasets import find_pairs


def run(
    run_dir: Path,
    out_dir: Path,
    model: str,
    *,
    bf16: bool = False,
    extra: tuple[str, ...] = (),
) -> int:
    held = [Path(p) for p in json.loads((run_dir / "split.json").read_text())["held_out"]]
    masks = {
        pair.image: pair.mask
        for root in {
            p.parent.parent if p.parent.parent.name != "train" else p.parent.parent.parent
            for p in held
        }
        for pair in find_pairs(root)
    }
    ref = out_dir / "ref"
    ref.mkdir(parents=True, exist_ok=True)
    for image in held:
        link = ref / f"{image.stem}.png"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(masks[image])
    args = ["photo", "predict", *map(str, held), "-o", str(out_dir / "pred"), "--model", model]
    code = medseg([*args, "--overwrite", "--no-progress", *(["--bf16"] if bf16 else []), *extra])
    if code:
        return code
    return medseg(
        ["photo", "evaluate", str(out_dir / "pred"), str(ref), "-o", str(out_dir / "scores.json")]
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--model", default=None, help="default: RUN_DIR/final.pt")
    parser.add_argument("--bf16", action="store_true", help="predict with bfloat16 autocast")
    parser.add_argument("--max-instances", type=int, help="override the model's max_instances")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--centre-prior", type=float, help="override the model's centre_prior")
    a = parser.parse_args()
    options = [
        *(["--max-instances", str(a.max_instances)] if a.max_instances is not None else []),
        *([] if a.tta is None else ["--tta" if a.tta else "--no-tta"]),
        *(["--centre-prior", str(a.centre_prior)] if a.centre_prior is not None else []),
    ]
    model = a.model or str(a.run_dir / "final.pt")
    sys.exit(run(a.run_dir, a.out_dir, model, bf16=a.bf16, extra=tuple(options)))
