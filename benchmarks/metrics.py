"""Benchmark: HD95 + ASSD + NSD@2mm on the 84 DeepMind organ pairs (oncologist vs radiographer).

medseg (both surface definitions) vs DeepMind ``surface-distance`` vs MONAI, in one run; prints
each time, the ratios, and the largest value difference against each peer.

    .venv/bin/python benchmarks/metrics.py            # everything (MONAI takes minutes)
    .venv/bin/python benchmarks/metrics.py --no-monai
    .venv/bin/python benchmarks/metrics.py --only-end-to-end

Metric cores: masks are read before timing starts; every tool gets the same boolean arrays.
MONAI gets the full masks as (1, 1, Z, Y, X) tensors, as a user would call it (it crops
internally).

End to end: ``medseg evaluate radiographer/ oncologist/ --json OUT`` run as a fresh process
(interpreter start, imports, reading the 168 NRRD masks, all metrics, JSON) against the peer
in this process (SimpleITK ``ReadImage`` + ``GetArrayFromImage`` of both masks of each pair,
then DeepMind's Dice, HD95, average surface distance and NSD@2mm). Every value of the CLI's JSON
is checked against the peer's (equal to 1e-12; the exception would stop the benchmark).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from medseg.io.mask_folder import read_mask_folder
from medseg.metrics import MetricsConfig, compute_metrics, surface_metrics

ROOT = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "data"
    / "deepmind_hn_oar_masks"
    / "test"
)
CASES = ("0522c0017", "0522c0248", "0522c0669", "TCGA-CV-7236")


def load_pairs():
    pairs, sets = [], []
    for case in CASES:
        onc = read_mask_folder(ROOT / "oncologist" / case)
        rad = read_mask_folder(ROOT / "radiographer" / case)
        sets.append((case, rad, onc))
        for organ, ref in onc.masks.items():
            pairs.append((case, organ, rad.masks[organ], ref, onc.grid.spacing_mm))
    # surface-distance 0.1 crashes on empty masks under numpy 2 (np.Inf was removed), MONAI
    # returns NaN/inf: time every tool on the pairs where both annotators drew the organ.
    both = [p for p in pairs if p[2].any() and p[3].any()]
    return pairs, both, sets


def run_medseg(pairs, definition):
    out = []
    t0 = time.perf_counter()
    for _, _, pred, ref, sp in pairs:
        out.append(surface_metrics(pred, ref, sp, definition=definition, tolerance_mm=2.0))
    return time.perf_counter() - t0, out


def run_medseg_cases(sets):
    cfg = MetricsConfig(definition="surfel", tolerance_mm=2.0)
    t0 = time.perf_counter()
    for case, rad, onc in sets:
        compute_metrics(rad, onc, config=cfg, case=case)
    return time.perf_counter() - t0


def run_deepmind(pairs):
    import surface_distance as dm

    out = []
    t0 = time.perf_counter()
    for _, _, pred, ref, sp in pairs:
        s = dm.compute_surface_distances(ref, pred, sp)
        hd95 = dm.compute_robust_hausdorff(s, 95)
        a_gp, a_pg = dm.compute_average_surface_distance(s)
        nsd = dm.compute_surface_dice_at_tolerance(s, 2.0)
        out.append({"hd_percentile": hd95, "masd": 0.5 * (a_gp + a_pg), "nsd": nsd})
    return time.perf_counter() - t0, out


def run_monai(pairs):
    import torch
    from monai.metrics import (
        compute_average_surface_distance,
        compute_hausdorff_distance,
        compute_surface_dice,
    )

    out = []
    t0 = time.perf_counter()
    for _, _, pred, ref, sp in pairs:
        p = torch.from_numpy(pred[None, None])
        r = torch.from_numpy(ref[None, None])
        hd95 = compute_hausdorff_distance(p, r, percentile=95, spacing=sp).item()
        assd = compute_average_surface_distance(p, r, symmetric=True, spacing=sp).item()
        nsd = compute_surface_dice(p, r, [2.0], spacing=sp).item()
        out.append({"hd_percentile": hd95, "assd": assd, "nsd": nsd})
    return time.perf_counter() - t0, out


def max_diff(ours, theirs):
    worst = 0.0
    for o, t in zip(ours, theirs, strict=True):
        for k, v in t.items():
            worst = max(worst, abs(float(o[k]) - float(v)))
    return worst


def run_cli_end_to_end(out_json: Path) -> float:
    """Wall time of ``medseg evaluate`` on the two annotator folders, as a new process."""
    cmd = [
        sys.executable, "-m", "medseg", "-q", "evaluate", str(ROOT / "radiographer"),
        str(ROOT / "oncologist"), "--json", str(out_json), "--overwrite",
    ]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def run_peer_end_to_end():
    """SimpleITK reading + DeepMind surface-distance on every pair, values per (case, organ)."""
    import SimpleITK as sitk
    import surface_distance as dm

    def read(path):
        image = sitk.ReadImage(str(path))
        sp = image.GetSpacing()
        return sitk.GetArrayFromImage(image).astype(bool), (sp[2], sp[1], sp[0])

    out = {}
    t0 = time.perf_counter()
    for case in CASES:
        folder = ROOT / "oncologist" / case / "segmentations"
        for ref_file in sorted(folder.glob("*.nrrd")):
            organ = ref_file.name[: -len(".nrrd")]
            ref, spacing = read(ref_file)
            pred, _ = read(ROOT / "radiographer" / case / "segmentations" / ref_file.name)
            # DeepMind's Dice returns np.NaN (gone in numpy 2) when both masks are empty
            both_empty = not ref.any() and not pred.any()
            values = {"dice": math.nan if both_empty else dm.compute_dice_coefficient(ref, pred)}
            if ref.any() and pred.any():  # surface-distance 0.1 crashes on an empty mask
                s = dm.compute_surface_distances(ref, pred, spacing)
                a_gp, a_pg = dm.compute_average_surface_distance(s)
                values.update(
                    hd95=dm.compute_robust_hausdorff(s, 95),
                    masd=0.5 * (a_gp + a_pg),
                    nsd=dm.compute_surface_dice_at_tolerance(s, 2.0),
                )
            out[(case, organ)] = values
    return time.perf_counter() - t0, out


def compare_end_to_end(doc, peer) -> tuple[int, float]:
    """Check every CLI value against the peer's; returns (values compared, largest difference)."""
    ours = {(c["case"], n): v for c in doc["cases"] for n, v in c["labels"].items()}
    if set(ours) != set(peer):
        raise AssertionError(f"different (case, organ) sets: {sorted(set(ours) ^ set(peer))}")
    n, worst = 0, 0.0
    for key, theirs in peer.items():
        for metric, value in theirs.items():
            if metric == "dice" and math.isnan(value):
                continue  # both empty: DeepMind says NaN, medseg states its rule (1.0)
            diff = abs(float(ours[key][metric]) - float(value))
            if diff > 1e-12:
                raise AssertionError(f"{key} {metric}: medseg {ours[key][metric]}, peer {value}")
            n, worst = n + 1, max(worst, diff)
    return n, worst


def end_to_end(repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out_json = Path(tmp) / "metrics.json"
        t_cli, t_peer, peer = math.inf, math.inf, {}
        for _ in range(repeats):  # interleaved, best of each
            t_cli = min(t_cli, run_cli_end_to_end(out_json))
            t, peer = run_peer_end_to_end()
            t_peer = min(t_peer, t)
        n, worst = compare_end_to_end(json.loads(out_json.read_text()), peer)
    print(f"end to end, 84 pairs (best of {repeats}):")
    print(f"  medseg evaluate (new process, read + all metrics + JSON): {t_cli:8.2f} s")
    print(f"  SimpleITK read + DeepMind surface-distance (in process): {t_peer:8.2f} s")
    print(f"  ratio peer / medseg evaluate:                           {t_peer / t_cli:8.1f} x")
    print(f"  {n} values (Dice, HD95, MASD, NSD) equal; largest difference {worst:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-monai", action="store_true")
    parser.add_argument("--only-end-to-end", action="store_true")
    parser.add_argument("--repeats", type=int, default=1, help="end-to-end repeats (best of)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(1)
    end_to_end(args.repeats)
    if args.only_end_to_end:
        return
    all_pairs, pairs, sets = load_pairs()
    n_vox = sum(int(p[2].size) for p in pairs)
    print(
        f"{len(all_pairs)} organ pairs in {len(CASES)} cases; {len(pairs)} with both masks "
        f"non-empty are timed ({n_vox / 1e6:.0f} M voxels per side)"
    )
    run_medseg(pairs[:3], "surfel")  # warm-up (imports, caches)
    t_surfel, r_surfel = run_medseg(pairs, "surfel")
    t_voxel, r_voxel = run_medseg(pairs, "voxel")
    t_cases = run_medseg_cases(sets)
    t_dm, r_dm = run_deepmind(pairs)
    print(f"medseg surfel  (surface_metrics):           {t_surfel:8.2f} s")
    print(f"medseg voxel   (surface_metrics):           {t_voxel:8.2f} s")
    print(
        f"medseg surfel  (compute_metrics, all 84 pairs, all metrics incl. Dice): {t_cases:.2f} s"
    )
    print(f"DeepMind surface-distance:                  {t_dm:8.2f} s")
    print(f"ratio DeepMind / medseg surfel:             {t_dm / t_surfel:8.1f} x")
    print(f"max |medseg surfel - DeepMind| (HD95, MASD, NSD): {max_diff(r_surfel, r_dm):.2e}")
    if not args.no_monai:
        t_monai, r_monai = run_monai(pairs)
        print(f"MONAI 1.6.1:                                {t_monai:8.2f} s")
        print(f"ratio MONAI / medseg voxel:                 {t_monai / t_voxel:8.1f} x")
        print(f"max |medseg voxel - MONAI| (HD95, ASSD, NSD): {max_diff(r_voxel, r_monai):.2e}")


if __name__ == "__main__":
    main()
