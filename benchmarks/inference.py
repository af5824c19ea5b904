"""Inference benchmark: medseg's Predictor vs MONAI's sliding_window_inference, same network.

Cases (real CT, OpenKBP patient pt_4, HU):

* ``openkbp``: the OpenKBP CT as stored (128³, 2.5 × 3.9 × 3.9 mm), 8-class head.
* ``large``: the same CT resampled (linear) to 300 × 512 × 512 (1.06 × 0.97 × 0.97 mm), 14-class
  head: the size of a clinical head-and-neck CT.

Every variant uses the same network (MONAI ``UNet`` channels 16..256, strides 2, 2 residual units,
random weights, seed 0), the same normalisation (window -1000..1000 HU), ROI 96³, overlap 0.5,
Gaussian blending, batch 1, 2 torch threads. A trained model predicts background in air; a
random one does not, so the network is wrapped in a fixed rule "input below -500 HU →
background" (:class:`AirIsBackground`), applied identically in every variant. MONAI is called
plainly: ``sliding_window_inference(image, roi, 1, net, overlap=0.5, mode="gaussian")`` on the
whole volume under ``torch.no_grad()``, then ``argmax``. medseg runs ``Predictor.predict`` with
a spec whose spacing and orientation equal the CT's (so no resampling) and post-processing off.

medseg variants (``--variants``): ``medseg`` is the Predictor's default (``precision="auto"``:
bfloat16 autocast on CPUs with native bfloat16; float16 accumulator), ``medseg-float32`` runs the
network in float32 with the default float16 accumulator, ``medseg-exact`` is float32 throughout
(float32 accumulator: the same sums as MONAI).

Every variant runs in a fresh subprocess that first fixes glibc's malloc mmap threshold at
1 MiB (:func:`medseg.inference.fix_mmap_threshold`, as ``medseg segment`` does; the same for
MONAI's worker; ``--default-malloc`` leaves glibc's default). Peak RSS is that process's
``ru_maxrss`` (it includes the interpreter, torch, MONAI and the input array, the same for all);
``baseline_rss_mb`` is the RSS after the imports and the network, before any data; CPU seconds
are the process's user + system time during the inference call. ``--parallel`` starts all
variants at once, so that on a shared, loaded machine they see the same load; then the wall
ratio understates the speed-up (the faster worker shares the cores while it runs and the slower
one has them to itself afterwards: with work ratio ``r`` the wall ratio is about ``(r + 1) / 2``),
and CPU seconds are the better measure. Labels are compared by the mean Dice over the
foreground classes.

``--e2e`` also times ``medseg segment`` end to end (subprocess wall time, imports included) on a
512 × 512 × 150 DICOM series written from the same CT, with the shipped ``hn_oar`` model.

Run from the repository root::

    .venv/bin/python benchmarks/inference.py --case openkbp --case large --e2e
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OPENKBP = REPO.parent / "shared" / "data" / "openkbp_hn_ct" / "train-pats" / "pt_4"
ROI = (96, 96, 96)
OVERLAP = 0.5
WINDOW_HU = (-1000.0, 1000.0)
CLASSES = {"openkbp": 8, "large": 14}
#: medseg variants → (precision, accumulator): the Predictor's default ("auto": bfloat16 on
#: CPUs with native bfloat16, else float32; float16 accumulator), a float32 network with the
#: default accumulator, and float32 throughout (MONAI's sums).
VARIANTS = {
    "medseg": ("auto", "float16"),
    "medseg-float32": ("float32", "float16"),
    "medseg-exact": ("float32", "float32"),
}


def current_rss_mb() -> float:
    """Resident set size of this process now (MB, Linux ``/proc/self/status``)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def build_net(n_classes: int):  # type: ignore[no-untyped-def]
    """UNet(16..256) with random weights (seed 0) and the fixed air → background rule."""
    import torch
    from monai.networks.nets import UNet

    class AirIsBackground(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.net(x)
            air = (x < 0.25).to(y.dtype)  # normalised -500 HU with window (-1000, 1000)
            return torch.cat([y[:, :1] + 1e4 * air, y[:, 1:]], dim=1)

    torch.manual_seed(0)
    net = UNet(3, 1, n_classes, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2)
    return AirIsBackground(net).eval()


def make_case(case: str, folder: Path) -> tuple[Path, Path]:
    """Write the case CT (int16 HU, .npy) and its affine; return both paths."""
    from scipy import ndimage

    sys.path.insert(0, str(REPO))
    from medseg.io.openkbp import load_openkbp_ct

    ct = load_openkbp_ct(OPENKBP)
    array, affine = ct.array.astype(np.float32), ct.affine.copy()
    if case == "large":
        shape = (300, 512, 512)
        zoom = [n / o for n, o in zip(shape, array.shape, strict=True)]
        array = ndimage.zoom(array, zoom, order=1, grid_mode=False)
        scale = [(o - 1) / (n - 1) for n, o in zip(shape, ct.array.shape, strict=True)]
        affine[:3, :3] = ct.affine[:3, :3] * np.array(scale)[None, :]
    img, aff = folder / f"{case}.npy", folder / f"{case}_affine.npy"
    np.save(img, np.round(array).astype(np.int16))
    np.save(aff, affine)
    return img, aff


def worker(
    variant: str, case: str, img: Path, aff: Path, out: Path, *, fix_malloc: bool = True
) -> None:
    """Run one variant in this (fresh) process and write labels + figures."""
    import torch

    torch.set_num_threads(2)
    sys.path.insert(0, str(REPO))
    from medseg.inference.allocator import fix_mmap_threshold

    # the same process setting for every variant (what `medseg segment` does at start-up)
    malloc_fixed = fix_mmap_threshold() if fix_malloc else False
    from medseg.preprocess import normalise_hu

    net = build_net(CLASSES[case])
    if variant != "monai":
        import medseg.inference  # noqa: F401  (imported before the baseline is taken)
    baseline_mb = current_rss_mb()  # interpreter + torch + MONAI + network, before any data
    array = np.load(img)
    affine = np.load(aff)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rss_before, cpu_before = usage.ru_maxrss, usage.ru_utime + usage.ru_stime
    t0 = time.perf_counter()
    extra: dict[str, object] = {}
    if variant == "monai":
        from monai.inferers import sliding_window_inference

        image = torch.from_numpy(normalise_hu(array, WINDOW_HU))[None, None]
        with torch.no_grad():
            logits = sliding_window_inference(image, ROI, 1, net, overlap=OVERLAP, mode="gaussian")
        labels = torch.argmax(logits[0], dim=0).numpy().astype(np.uint8)
    else:
        from medseg.inference import InferenceConfig, PostprocessConfig, Predictor
        from medseg.preprocess import PreprocessingSpec
        from medseg.volume import LabelMap, Volume

        volume = Volume(array, affine, modality="CT")
        spacing = volume.spacing_mm
        spec = PreprocessingSpec(spacing, volume.orientation, WINDOW_HU, ROI)
        names = LabelMap.from_names([f"organ_{i}" for i in range(1, CLASSES[case])])
        config = InferenceConfig(
            overlap=OVERLAP,
            batch_size=1,
            precision=VARIANTS[variant][0],
            accumulator=VARIANTS[variant][1],
            postprocess=PostprocessConfig(largest_component=False, fill_holes=False),
        )
        predictor = Predictor(net, spec, names, device="cpu", config=config)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu_before = usage.ru_utime + usage.ru_stime
        t0 = time.perf_counter()
        labels = predictor.predict(volume).volume.array
        extra = {
            "windows": predictor.last_windows,
            "stages_s": predictor.last_timings,
            "precision": predictor.precision,
            "accumulator": config.accumulator,
            "accumulator_peak_mb": predictor.last_accumulator_bytes / 2**20,
        }
    seconds = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rss = usage.ru_maxrss
    extra["cpu_s"] = usage.ru_utime + usage.ru_stime - cpu_before
    np.save(out.with_suffix(".npy"), labels)
    result = {
        "seconds": seconds,
        "peak_rss_mb": rss / 1024,
        "rss_before_mb": rss_before / 1024,
        "baseline_rss_mb": baseline_mb,
        "malloc_mmap_threshold_fixed": malloc_fixed,
    }
    out.with_suffix(".json").write_text(json.dumps({**result, **extra}))


def mean_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Dice over the foreground labels present in either map (1.0 if none)."""
    values = [v for v in np.union1d(np.unique(a), np.unique(b)) if v != 0]
    if not values:
        return 1.0
    dices = []
    for v in values:
        x, y = a == v, b == v
        dices.append(2.0 * np.sum(x & y) / (np.sum(x) + np.sum(y)))
    return float(np.mean(dices))


def run_case(
    case: str,
    folder: Path,
    *,
    variants: list[str],
    parallel: bool = False,
    fix_malloc: bool = True,
) -> list[dict[str, object]]:
    img, aff = make_case(case, folder)
    shape = np.load(img, mmap_mode="r").shape
    procs = []
    for variant in variants:
        out = folder / f"{case}_{variant}"
        cmd = [sys.executable, __file__, "--worker", variant, "--case", case]
        cmd += [] if fix_malloc else ["--default-malloc"]
        cmd += ["--img", str(img), "--aff", str(aff), "--out", str(out)]
        procs.append(subprocess.Popen(cmd))
        if not parallel:
            procs[-1].wait()
    for proc in procs:
        if proc.wait() != 0:
            raise RuntimeError(f"benchmark worker failed: {proc.args!r}")
    return [summarise(case, folder, shape, v) for v in variants if v != "monai"]


def summarise(
    case: str, folder: Path, shape: tuple[int, ...], variant: str = "medseg"
) -> dict[str, object]:
    """Compare one medseg worker's output in ``folder`` with MONAI's and print one line."""
    m = json.loads((folder / f"{case}_{variant}.json").read_text())
    r = json.loads((folder / f"{case}_monai.json").read_text())
    ours = np.load(folder / f"{case}_{variant}.npy")
    ref = np.load(folder / f"{case}_monai.npy")
    summary = {
        "case": case,
        "variant": variant,
        "shape": list(shape),
        "classes": CLASSES[case],
        "medseg": m,
        "monai": r,
        "speedup": r["seconds"] / m["seconds"],
        "cpu_speedup": r["cpu_s"] / m["cpu_s"],
        "memory_ratio": m["peak_rss_mb"] / r["peak_rss_mb"],
        "dice": mean_dice(ours, ref),
        "voxel_agreement": float(np.mean(ours == ref)),
        "load_average": os.getloadavg(),
    }
    print(
        f"[{case}] shape {tuple(shape)} classes {CLASSES[case]}: "
        f"{variant} ({m.get('precision')}, {m.get('accumulator')} accumulator) "
        f"{m['seconds']:.1f} s wall / {m['cpu_s']:.1f} s CPU / "
        f"{m['peak_rss_mb']:.0f} MB (baseline {m.get('baseline_rss_mb', 0):.0f} MB, accumulator "
        f"{m.get('accumulator_peak_mb', 0):.0f} MB, windows {m.get('windows')}); "
        f"MONAI {r['seconds']:.1f} s wall / {r['cpu_s']:.1f} s CPU / {r['peak_rss_mb']:.0f} MB "
        f"(baseline {r.get('baseline_rss_mb', 0):.0f} MB); "
        f"speed-up {summary['speedup']:.2f}x wall, {summary['cpu_speedup']:.2f}x CPU; "
        f"memory {summary['memory_ratio']:.3f} of MONAI; mean Dice {summary['dice']:.4f}, "
        f"voxel agreement {summary['voxel_agreement']:.5f}; load average "
        f"{' '.join(f'{v:.2f}' for v in summary['load_average'])}",
        flush=True,
    )
    return summary


def run_e2e(folder: Path) -> dict[str, object]:
    """``medseg segment`` on a 512×512×150 DICOM series with the shipped model."""
    sys.path.insert(0, str(REPO))
    from scipy import ndimage

    from medseg.io.dicom_write import write_dicom_series
    from medseg.io.openkbp import load_openkbp_ct
    from medseg.volume import Volume

    weights = REPO / "medseg" / "weights" / "hn_oar.pt"
    if not weights.is_file():
        print(f"[e2e] skipped: shipped model {weights} does not exist yet", flush=True)
        return {"skipped": "no shipped model"}
    ct = load_openkbp_ct(OPENKBP)
    shape = (150, 512, 512)
    zoom = [n / o for n, o in zip(shape, ct.shape, strict=True)]
    array = ndimage.zoom(ct.array.astype(np.float32), zoom, order=1, grid_mode=False)
    affine = ct.affine.copy()
    scale = [(o - 1) / (n - 1) for n, o in zip(shape, ct.shape, strict=True)]
    affine[:3, :3] = ct.affine[:3, :3] * np.array(scale)[None, :]
    series = folder / "dicom"
    write_dicom_series(Volume(np.round(array).astype(np.int16), affine, modality="CT"), series)
    out = folder / "segment_out"
    cmd = [sys.executable, "-m", "medseg", "segment", str(series), "-o", str(out)]
    cmd += ["--model", "hn_oar", "--device", "cpu", "--overwrite"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    sidecar = json.loads((out / "segmentation.json").read_text())
    print(
        f"[e2e] medseg segment, DICOM {shape}: {wall:.1f} s wall (imports included); "
        f"stages {sidecar['timings']}",
        flush=True,
    )
    return {"shape": list(shape), "wall_s": wall, "timings": sidecar["timings"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", choices=sorted(CLASSES))
    parser.add_argument("--e2e", action="store_true", help="time medseg segment end to end")
    parser.add_argument("--json", type=Path, help="write all figures here")
    parser.add_argument(
        "--parallel",
        action="store_true",
        help="run the variants at the same time (shared, loaded machines: all see the "
        "same load; compare CPU seconds)",
    )
    parser.add_argument(
        "--variants",
        default="medseg,monai",
        help="comma-separated workers to run: medseg (Predictor defaults), medseg-float32 "
        "(float32 network, float16 accumulator), medseg-exact (float32 throughout), monai "
        "(default: medseg,monai)",
    )
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's dynamic mmap threshold on in the workers (default: fixed at 1 MiB "
        "in every worker, as medseg segment does)",
    )
    parser.add_argument("--summarise", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=(*VARIANTS, "monai"), help=argparse.SUPPRESS)
    parser.add_argument("--img", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--aff", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        fix = not args.default_malloc
        worker(args.worker, args.case[0], args.img, args.aff, args.out, fix_malloc=fix)
        return
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in (*VARIANTS, "monai")]
    if unknown or "monai" not in variants:
        parser.error(f"--variants must name monai and medseg variants {list(VARIANTS)}")
    if args.summarise:  # re-print figures of workers run by hand into this folder
        for case in args.case or []:
            shape = np.load(args.summarise / f"{case}_monai.npy", mmap_mode="r").shape
            for v in variants:
                if v != "monai":
                    summarise(case, args.summarise, shape, v)
        return
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="medseg_bench_") as tmp:
        for case in args.case or []:
            results += run_case(
                case,
                Path(tmp),
                variants=variants,
                parallel=args.parallel,
                fix_malloc=not args.default_malloc,
            )
        if args.e2e:
            results.append({"e2e": run_e2e(Path(tmp))})
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
