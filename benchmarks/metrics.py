"""Benchmark: HD95 + ASSD + NSD@2mm on the 84 DeepMind organ pairs (oncologist vs radiographer).

medseg (both surface definitions) vs DeepMind ``surface-distance`` vs MONAI, in one run; prints
each time, the ratios, and the largest value difference against each peer.

    .venv/bin/python benchmarks/metrics.py            # everything (MONAI takes minutes)
    .venv/bin/python benchmarks/metrics.py --no-monai

Masks are read before timing starts; every tool gets the same boolean arrays. MONAI gets the
full masks as (1, 1, Z, Y, X) tensors, as a user would call it (it crops internally).
"""

from __future__ import annotations

import argparse
import logging
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-monai", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(1)
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
