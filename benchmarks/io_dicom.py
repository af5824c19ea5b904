"""Benchmark: load a 512×512×200 CT series: medseg vs SimpleITK ImageSeriesReader vs pydicom.

The series is built from real CT: the 20 slices of the TotalSegmentator example series
(``../shared/data/totalsegmentator_example_ct/example_ct_dicom``, 512×512, JPEG 2000) are decoded,
linearly interpolated along z to 200 slices (1 mm apart) and written with
:func:`medseg.io.dicom_write.write_dicom_series` into a temporary folder, uncompressed (Explicit VR
Little Endian, the usual PACS export), with shuffled file names. ``--j2k`` also times the same
series re-encoded as JPEG 2000 lossless.

Each reader runs ``--repeats`` times in the same process, interleaved, after one unmeasured
warm-up pass (files in the page cache for everyone); the best time is reported with the ratio to
medseg. The three outputs are checked to agree voxel for voxel.

Run from the repository root::

    .venv/bin/python benchmarks/io_dicom.py [--repeats 3] [--j2k]
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk

from medseg.io.dicom_series import load_dicom_series
from medseg.io.dicom_write import write_dicom_series
from medseg.volume import Volume

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SOURCE = SHARED / "totalsegmentator_example_ct" / "example_ct_dicom"


def build_series(folder: Path, n_slices: int = 200, *, j2k: bool = False) -> Path:
    """Write the 512×512×n_slices benchmark series (from the real 20-slice CT) into ``folder``."""
    src = load_dicom_series(SOURCE)
    z = np.linspace(0, src.shape[0] - 1, n_slices)
    lo = np.floor(z).astype(int).clip(0, src.shape[0] - 2)
    w = (z - lo)[:, None, None]
    arr = src.array.astype(np.float32)
    stack = np.rint(arr[lo] * (1 - w) + arr[lo + 1] * w).astype(np.int16)
    affine = src.affine.copy()
    affine[:3, 0] = src.affine[:3, 0] / np.linalg.norm(src.affine[:3, 0])  # 1 mm slices
    volume = Volume(stack, affine, modality="CT")
    modify = None
    if j2k:
        from pydicom.uid import JPEG2000Lossless

        def modify(k: int, ds: Any) -> None:
            ds.compress(JPEG2000Lossless)

    paths = write_dicom_series(volume, folder, modify=modify)
    order = list(range(len(paths)))
    random.Random(0).shuffle(order)
    for p, i in zip(paths, order, strict=True):
        p.rename(p.with_name(f"IMG{i:05d}"))
    return folder


def read_medseg(folder: Path) -> np.ndarray:
    return load_dicom_series(folder).array


def read_sitk(folder: Path) -> np.ndarray:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return sitk.GetArrayFromImage(reader.Execute())


def read_pydicom_loop(folder: Path) -> np.ndarray:
    """The loop most scripts use: read every file, sort by position along the normal, stack."""
    datasets = [pydicom.dcmread(p) for p in folder.iterdir()]
    iop = np.asarray(datasets[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    datasets.sort(key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float))))
    out = np.stack([ds.pixel_array for ds in datasets]).astype(np.float32)
    for k, ds in enumerate(datasets):
        out[k] = out[k] * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return out


def run_interleaved(
    readers: dict[str, Callable[[Path], np.ndarray]], folder: Path, repeats: int
) -> dict[str, tuple[float, Any]]:
    """Best time of each reader; repeats are interleaved (round robin) so that load from other
    processes on the machine falls on all readers alike."""
    for fn in readers.values():
        fn(folder)  # warm-up (page cache, imports, plugin discovery)
    best: dict[str, float] = dict.fromkeys(readers, float("inf"))
    last: dict[str, Any] = {}
    for _ in range(repeats):
        for name, fn in readers.items():
            t0 = time.perf_counter()
            last[name] = fn(folder)
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: (best[name], last[name]) for name in readers}


def run(folder: Path, repeats: int, label: str) -> list[str]:
    readers = {
        "medseg": read_medseg,
        "SimpleITK ImageSeriesReader": read_sitk,
        "pydicom loop": read_pydicom_loop,
    }
    results = run_interleaved(readers, folder, repeats)
    ref = results["medseg"][1]
    for name, (_, arr) in results.items():
        if not np.array_equal(np.asarray(arr, dtype=np.float32), ref.astype(np.float32)):
            raise SystemExit(f"{name} disagrees with medseg on {label}")
    base = results["medseg"][0]
    lines = [f"{label}: shape {ref.shape}, medseg dtype {ref.dtype}, best of {repeats}"]
    for name, (t, _) in results.items():
        lines.append(f"  {name:<28} {t:7.3f} s   ×{t / base:5.2f} of medseg")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--j2k", action="store_true", help="also time a JPEG 2000 copy")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="medseg-bench-") as tmp:
        plain = build_series(Path(tmp) / "plain", args.slices)
        lines = run(plain, args.repeats, "uncompressed (Explicit VR LE)")
        if args.j2k:
            j2k = build_series(Path(tmp) / "j2k", args.slices, j2k=True)
            lines += run(j2k, args.repeats, "JPEG 2000 lossless")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
