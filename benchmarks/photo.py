"""Seconds per 512x512 photo on CPU: shipped photo models vs torchvision's ResNet-50-FPN Mask R-CNN.

Same process, same photo (a real FUSeg wound photo, 512x512), same thread count. The peer is
``torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)``
(random weights -- nothing may be downloaded here; at most 20 detections kept, like the shipped
models, since random weights otherwise return 100 low-score masks to paste), run at
its default ``min_size=800`` and also at the shipped models' input size for a like-for-like
comparison. The shipped models are timed in float32 and under CPU bfloat16 autocast
(``medseg photo predict --bf16``); the peer in float32. The shipped models are also timed as
``medseg photo predict`` runs them -- the whole ``predict_array`` call with the checkpoint's
settings (flip test-time augmentation = 4 forward passes, instance selection, mask pasting) --
in float32. Prints one line per model and the ratio peer / ours.

    .venv/bin/python benchmarks/photo.py [--threads 1] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torchvision.models.detection import maskrcnn_resnet50_fpn

from medseg.photo.checkpoint import WEIGHTS_DIR, load_photo_model
from medseg.photo.datasets import read_photo
from medseg.photo.inference import predict_array

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO.parent / "shared" / "data" / "fuseg_wound" / "train" / "images" / "0011.png"


@torch.no_grad()
def seconds_per_photo(
    model: torch.nn.Module, image: torch.Tensor, repeats: int, *, bf16: bool = False
) -> float:
    """Median wall-clock seconds of one forward pass (after one warm-up)."""
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        n = len(model([image])[0]["scores"])
        print(f"  ({type(model).__name__}: {n} detections per photo)", flush=True)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model([image])
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def seconds_per_prediction(
    model: torch.nn.Module, array: np.ndarray, repeats: int, *, settings: dict
) -> float:
    """Median wall-clock seconds of one full ``predict_array`` call (after one warm-up)."""
    predict_array(model, array, **settings)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict_array(model, array, **settings)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    array = read_photo(PHOTO)
    image = torch.from_numpy(array.copy()).permute(2, 0, 1).float().div(255)
    shape = tuple(image.shape[1:])
    print(f"photo {PHOTO.name} {shape}, threads={args.threads}, repeats={args.repeats}")
    results: dict[str, float] = {}
    sizes = set()
    for name in ("wound", "lesion"):
        if not (WEIGHTS_DIR / f"{name}.pt").is_file():
            print(f"{name}: not shipped, skipped")
            continue
        model, info = load_photo_model(name)
        spec = info.spec
        sizes.add(spec.image_size)
        settings = info.prediction_defaults()
        tag = "tta" if settings["tta"] else "no tta"
        results[f"{name} ({spec.architecture}, {spec.image_size}px, predict, {tag})"] = (
            seconds_per_prediction(model, array, args.repeats, settings=settings)
        )
        results[f"{name} ({spec.architecture}, {spec.image_size}px)"] = seconds_per_photo(
            model, image, args.repeats
        )
        results[f"{name} ({spec.architecture}, {spec.image_size}px, bf16)"] = seconds_per_photo(
            model, image, args.repeats, bf16=True
        )
    # Random weights give many low-confidence detections, and pasting each mask back costs time,
    # so the peer keeps at most as many detections as the shipped models (20).
    peer_default = maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=2, box_detections_per_img=20
    )
    results["torchvision maskrcnn_resnet50_fpn (800px default)"] = seconds_per_photo(
        peer_default, image, args.repeats
    )
    for size in sorted(sizes):
        peer = maskrcnn_resnet50_fpn(
            weights=None,
            weights_backbone=None,
            num_classes=2,
            min_size=size,
            max_size=round(size * 1.5),
            box_detections_per_img=20,
        )
        results[f"torchvision maskrcnn_resnet50_fpn ({size}px)"] = seconds_per_photo(
            peer, image, args.repeats
        )
    for name, seconds in results.items():
        print(f"{name:<55} {seconds:7.3f} s/photo")
    peers = {k: v for k, v in results.items() if k.startswith("torchvision")}
    for model_name, mine in results.items():
        if model_name in peers:
            continue
        for peer_name, theirs in peers.items():
            label = model_name.split()[0] + (" bf16" if "bf16" in model_name else "")
            label += " predict" if "predict" in model_name else ""
            print(f"ratio {peer_name} / {label}: {theirs / mine:.1f}x")


if __name__ == "__main__":
    main()
