"""Batch contouring throughput: a loop of `medseg segment` processes vs `medseg contour`.

Same run, same studies (N OpenKBP CTs written as DICOM series, explicit VR, shuffled names):

(a) one `medseg segment INPUT -o OUT --format nifti,seg,rtstruct` process per study (the
    one-call-per-study pattern of TotalSegmentator / nnU-Net users);
(b) `medseg contour --workers 1` (embedded LocalCluster, model loaded once);
(c) `medseg contour` with the other worker/thread splits of this machine (best printed).

Printed: studies/hour, ratio to (a), the share of wall time outside the network's forward
passes (sum of `network_s` from each study's segmentation.json over the wall time, per worker),
and peak resident memory of the whole process tree (sampled with psutil).

    .venv/bin/python benchmarks/contour.py --studies 8
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "contour"), str(REPO / "tests")]


def _peak_rss(proc: subprocess.Popen, stop: threading.Event, box: list[int]) -> None:
    ps = psutil.Process(proc.pid)
    peak = 0
    while not stop.is_set():
        try:
            procs = [ps, *ps.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.2)
    box.append(peak)


def _run(cmd: list[str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stop, box = threading.Event(), []  # type: ignore[var-annotated]
    th = threading.Thread(target=_peak_rss, args=(proc, stop, box))
    th.start()
    _, err = proc.communicate()
    stop.set()
    th.join()
    if proc.returncode not in (0,):
        raise RuntimeError(f"{cmd[:4]} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return time.perf_counter() - t0, box[0]


def _network_s(folder: Path) -> float:
    total = 0.0
    for side in folder.rglob("segmentation.json"):
        total += float(json.loads(side.read_text())["timings"].get("network_s", 0.0))
    return total


def main() -> None:
    from contour_data import build_openkbp_tree

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--studies", type=int, default=8)
    ap.add_argument("--overlap", type=float, default=0.5)
    args = ap.parse_args()
    exe = [sys.executable, "-m", "medseg", "-q"]
    work = Path(tempfile.mkdtemp(prefix="medseg-bench-contour-"))
    tree = work / "tree"
    build_openkbp_tree(tree, args.studies)
    cfg = work / "c.yaml"
    cfg.write_text(f"inference: {{overlap: {args.overlap}}}\n")
    rows = []
    # (a) one process per study
    out_a = work / "a"
    t_a, peak_a = 0.0, 0
    for study in sorted(tree.iterdir()):
        dt, peak = _run(
            [*exe, "segment", str(study), "-o", str(out_a / study.name), "--overlap",
             str(args.overlap), "--format", "nifti,seg,rtstruct"]
        )  # fmt: skip
        t_a += dt
        peak_a = max(peak_a, peak)
    rows.append(("(a) loop of medseg segment", 1, 0, t_a, peak_a, _network_s(out_a)))
    cpus = len(__import__("os").sched_getaffinity(0))
    splits = [(1, 2)] + [(w, 2) for w in (2,) if w <= cpus]
    for workers, threads in splits:
        out = work / f"b{workers}x{threads}"
        torch_threads = max(1, cpus // workers)
        dt, peak = _run(
            [*exe, "contour", str(tree), "-o", str(out), "--config", str(cfg), "--workers",
             str(workers), "--threads-per-worker", str(threads)]
        )  # fmt: skip
        label = "(b) medseg contour --workers 1" if workers == 1 else "(c) medseg contour"
        rows.append((label, workers, threads, dt, peak, _network_s(out) / workers))
        del torch_threads
    print(f"# {args.studies} OpenKBP CTs as DICOM, overlap {args.overlap}, {cpus} CPU cores")
    print(f"{'variant':<32} {'workers x threads':>17} {'wall s':>8} {'studies/h':>10} "
          f"{'vs (a)':>7} {'outside fwd':>11} {'peak RSS GiB':>12}")  # fmt: skip
    for label, w, t, dt, peak, net in rows:
        rate = args.studies / dt * 3600
        outside = max(0.0, 1.0 - net / dt)
        print(
            f"{label:<32} {f'{w} x {t}' if t else '-':>17} {dt:8.1f} {rate:10.1f} "
            f"{t_a / dt:6.2f}x {outside:10.1%} {peak / 2**30:12.2f}"
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
