"""Batch contouring throughput: a loop of `medseg segment` processes vs `medseg contour`.

Same run, same studies (N OpenKBP CTs written as DICOM series, explicit VR, shuffled names):

(a) one `medseg segment INPUT -o OUT --format nifti,seg,rtstruct` process per study (the
    one-call-per-study pattern of TotalSegmentator / nnU-Net users);
(b) `medseg contour --workers 1` (embedded LocalCluster, model loaded once);
(c) `medseg contour` with the other worker/thread splits of this machine.

Printed: wall seconds, studies/hour, ratio to (a), peak resident memory of the whole process
tree (psutil, sampled every 0.2 s) and, for every `medseg contour` variant, where the wall time
went, from the wall-clock stage stamps the batch records in its manifest (``runs.timeline_json``
of the driver, ``attempts.timeline_json`` of each study on its worker). Shares are of
worker-seconds (workers x wall; for one worker simply the wall time):

network      forward passes (the predictor's ``network_s``, inside the worker's forward lock);
study CPU    the rest of the per-study work: DICOM reading, geometry/modality checks,
             resampling, pre- and post-processing, reference scoring;
writing      per-study outputs: provenance, DICOM-SEG/RTSTRUCT encoding, NIfTI, atomic write;
startup      interpreter and imports, embedded cluster start, model load on the workers;
QA report    the review report medseg contour writes at the end (issue 17: flags, overlays of
             every organ in three planes, plots), timed by its ``report/review.json``;
machinery    the batch machinery proper: discovery, model hash, manifest planning, scheduling
             and waiting while a worker has no study work (result recording, dispatch), and the
             teardown (cluster close, leftover cleanup, exit).

A worker's study time is the union over time of its studies' intervals (with pipelining the next
study loads while the current one predicts): an instant counts as network/study CPU while the
forward lock is held (split by ``network_s``), else as writing while a study writes, else as study
CPU while a study loads, waits for the forward lock or is scored. The six shares add up to 100 %.

    .venv/bin/python benchmarks/contour.py --studies 8
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "contour"), str(REPO / "tests")]

#: Issue 16's goal for the batch machinery, as a share of wall time.
MACHINERY_GOAL = 0.15


def _peak_rss(proc: subprocess.Popen[bytes], stop: threading.Event, box: list[int]) -> None:
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


def _run(cmd: list[str]) -> tuple[float, float, int]:
    """Run ``cmd``; wall-clock start and end (``time.time()``) and peak RSS of its tree."""
    start = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stop, box = threading.Event(), []  # type: ignore[var-annotated]
    th = threading.Thread(target=_peak_rss, args=(proc, stop, box))
    th.start()
    _, err = proc.communicate()
    end = time.time()
    stop.set()
    th.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return start, end, box[0]


def _network_s(folder: Path) -> float:
    total = 0.0
    for side in folder.rglob("segmentation.json"):
        total += float(json.loads(side.read_text())["timings"].get("network_s", 0.0))
    return total


def _covered(t: float, intervals: list[tuple[float, float]]) -> bool:
    return any(a <= t < b for a, b in intervals)


def worker_split(studies: list[dict[str, Any]], lo: float, hi: float) -> dict[str, float]:
    """Seconds of one worker within ``[lo, hi]``: network, study CPU, writing, idle.

    ``studies``: the worker's ``attempts.timeline_json`` dicts. Elementary segments between all
    interval ends are classified by priority: forward lock held (network + study CPU, split by
    ``network_s``) > writing > loading / waiting for the lock / scoring (study CPU) > idle.
    """
    kinds: dict[str, list[tuple[float, float]]] = defaultdict(list)
    network = 0.0
    for tl in studies:
        for k in ("load", "predict", "forward", "write", "score"):
            a, b = tl[k]
            a, b = max(a, lo), min(b, hi)
            if b > a:
                kinds[k].append((a, b))
        network += float(tl.get("network_s", 0.0))
    other = kinds["load"] + kinds["predict"] + kinds["score"]
    points = sorted({lo, hi, *(x for iv in kinds.values() for a_b in iv for x in a_b)})
    out = {"forward": 0.0, "write": 0.0, "other": 0.0, "idle": 0.0}
    for a, b in itertools.pairwise(points):
        mid = (a + b) / 2
        if _covered(mid, kinds["forward"]):
            out["forward"] += b - a
        elif _covered(mid, kinds["write"]):
            out["write"] += b - a
        elif _covered(mid, other):
            out["other"] += b - a
        else:
            out["idle"] += b - a
    network = min(network, out["forward"])
    return {
        "network": network,
        "study_cpu": out["forward"] - network + out["other"],
        "writing": out["write"],
        "idle": out["idle"],
    }


@dataclass
class Breakdown:
    """Where the worker-seconds of one ``medseg contour`` run went (seconds, all workers)."""

    workers: int
    wall: float
    network: float = 0.0
    study_cpu: float = 0.0
    writing: float = 0.0
    startup: float = 0.0
    machinery: float = 0.0
    report: float = 0.0
    detail: dict[str, float] = field(default_factory=dict)  # wall seconds per driver stage

    def share(self, name: str) -> float:
        """``name``'s share of workers x wall."""
        return float(getattr(self, name)) / (self.workers * self.wall)


def contour_breakdown(out: Path, start: float, end: float, workers: int) -> Breakdown:
    """Split the wall time ``[start, end]`` of a ``medseg contour`` process (see module doc)."""
    db = sqlite3.connect(f"file:{out / 'manifest.sqlite'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    run = db.execute("SELECT * FROM runs ORDER BY run_id DESC LIMIT 1").fetchone()
    if run is None or not run["timeline_json"]:
        raise RuntimeError(f"{out}: the manifest has no run timeline (medseg too old?).")
    st: dict[str, float] = json.loads(run["timeline_json"])
    per_worker: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in db.execute(
        "SELECT worker, timeline_json FROM attempts WHERE run_id=? AND state='done'",
        (run["run_id"],),
    ):
        if row["timeline_json"]:
            per_worker[row["worker"]].append(json.loads(row["timeline_json"]))
    db.close()
    if len(per_worker) > workers:
        raise RuntimeError(f"{len(per_worker)} workers in the manifest, {workers} expected.")
    lo, hi = st["model_loaded"], st["tasks_done"]
    d = {
        "interpreter + imports": st["entered"] - start,
        "discovery": st["discovered"] - st["entered"],
        "model hash": st["hashed"] - st["discovered"],
        "manifest plan": st["planned"] - st["hashed"],
        "cluster start": st["cluster_ready"] - st["planned"],
        "model load": lo - st["cluster_ready"],
        "study phase": hi - lo,
        "cluster close": st["cluster_closed"] - hi,
        "cleanup + manifest": st["finished"] - st["cluster_closed"],
    }
    built = _report_built(out)
    if built is not None:  # the QA report (issue 17) is its own product, not batch machinery
        d["exit"] = built["started"] - st["finished"]
        d["QA report"] = built["finished"] - built["started"]
        d["exit"] += end - built["finished"]
    else:
        d["review report + exit"] = end - st["finished"]
    b = Breakdown(workers=workers, wall=end - start, detail=d)
    idle = 0.0
    for w in range(workers):  # a worker that got no study is idle all the study phase
        studies = list(per_worker.values())[w] if w < len(per_worker) else []
        split = worker_split(studies, lo, hi)
        b.network += split["network"]
        b.study_cpu += split["study_cpu"]
        b.writing += split["writing"]
        idle += split["idle"]
    d["idle in study phase (per worker)"] = idle / workers
    b.startup = workers * (d["interpreter + imports"] + d["cluster start"] + d["model load"])
    machinery_wall = d["discovery"] + d["model hash"] + d["manifest plan"]
    teardown = end - hi  # cluster close, leftover cleanup, manifest close, review report, exit
    b.report = workers * d.get("QA report", 0.0)
    b.machinery = workers * (machinery_wall + teardown) - b.report + idle
    return b


def _report_built(out: Path) -> dict[str, float] | None:
    """Wall-clock start/end of the batch's QA report build (``report/review.json``)."""
    try:
        built = json.loads((out / "report" / "review.json").read_text()).get("built")
    except (OSError, ValueError):
        return None
    return built if isinstance(built, dict) else None


def main() -> None:
    """Build the studies, time the three variants, print the tables."""
    from contour_data import build_openkbp_tree

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--studies", type=int, default=8)
    ap.add_argument("--overlap", type=float, default=0.5)
    args = ap.parse_args()
    exe = [sys.executable, "-m", "medseg", "-q"]
    work = Path(tempfile.mkdtemp(prefix="medseg-bench-contour-"))
    tree = work / "tree"
    build_openkbp_tree(tree, args.studies)
    cfg = work / "c.yaml"
    cfg.write_text(f"inference: {{overlap: {args.overlap}}}\n")
    rows: list[tuple[str, int, int, float, int, float, Breakdown | None]] = []
    # (a) one process per study
    out_a = work / "a"
    t_a, peak_a = 0.0, 0
    for study in sorted(tree.iterdir()):
        s, e, peak = _run(
            [*exe, "segment", str(study), "-o", str(out_a / study.name), "--overlap",
             str(args.overlap), "--format", "nifti,seg,rtstruct"]
        )  # fmt: skip
        t_a += e - s
        peak_a = max(peak_a, peak)
    rows.append(("(a) loop of medseg segment", 1, 0, t_a, peak_a, _network_s(out_a), None))
    cpus = len(os.sched_getaffinity(0))
    splits = [(1, 2)] + [(w, 2) for w in (2,) if w <= cpus]
    for workers, threads in splits:
        out = work / f"b{workers}x{threads}"
        s, e, peak = _run(
            [*exe, "contour", str(tree), "-o", str(out), "--config", str(cfg), "--workers",
             str(workers), "--threads-per-worker", str(threads)]
        )  # fmt: skip
        b = contour_breakdown(out, s, e, workers)
        label = "(b) medseg contour --workers 1" if workers == 1 else "(c) medseg contour"
        rows.append((label, workers, threads, e - s, peak, b.network, b))
    _print(rows, args.studies, args.overlap, cpus, t_a)
    shutil.rmtree(work, ignore_errors=True)


def _print(
    rows: list[tuple[str, int, int, float, int, float, Breakdown | None]],
    n: int,
    overlap: float,
    cpus: int,
    t_a: float,
) -> None:
    print(f"# {n} OpenKBP CTs as DICOM, overlap {overlap}, {cpus} CPU cores")
    print(f"{'variant':<32} {'workers x threads':>17} {'wall s':>8} {'studies/h':>10} "
          f"{'vs (a)':>7} {'outside fwd':>11} {'peak RSS GiB':>12}")  # fmt: skip
    for label, w, t, dt, peak, net, b in rows:
        worker_s = (w if b else 1) * dt
        print(
            f"{label:<32} {f'{w} x {t}' if t else '-':>17} {dt:8.1f} {n / dt * 3600:10.1f} "
            f"{t_a / dt:6.2f}x {max(0.0, 1.0 - net / worker_s):10.1%} {peak / 2**30:12.2f}"
        )
    print("\n# share of worker-seconds (workers x wall) per activity; see the module docstring")
    print(f"{'variant':<32} {'network':>8} {'study CPU':>10} {'writing':>8} {'startup':>8} "
          f"{'QA report':>10} {'machinery':>10} {'mach.+writing':>14}")  # fmt: skip
    for label, _w, _t, _dt, _peak, _net, b in rows:
        if b is None:
            continue
        print(
            f"{label:<32} {b.share('network'):8.1%} {b.share('study_cpu'):10.1%} "
            f"{b.share('writing'):8.1%} {b.share('startup'):8.1%} {b.share('report'):10.1%} "
            f"{b.share('machinery'):10.1%} "
            f"{b.share('machinery') + b.share('writing'):14.1%}"
        )
    print(
        f"\n# goal (issue 16): batch machinery <= {MACHINERY_GOAL:.0%} of wall time, compared "
        "against 'machinery' = discovery + model hash + manifest + scheduling/waiting + teardown "
        "(startup and the QA report shown apart); 'mach.+writing' also counts per-study output "
        "writing, as the issue's list does"
    )
    for label, _w, _t, _dt, _peak, _net, b in rows:
        if b is None:
            continue
        m, mw = b.share("machinery"), b.share("machinery") + b.share("writing")
        print(
            f"{label:<32} machinery {m:.1%} ({'met' if m <= MACHINERY_GOAL else 'NOT met'}); "
            f"with writing {mw:.1%} ({'met' if mw <= MACHINERY_GOAL else 'NOT met'}); "
            f"with startup too {mw + b.share('startup'):.1%}"
        )
    print("\n# wall seconds per driver stage")
    for label, _w, _t, _dt, _peak, _net, b in rows:
        if b is None:
            continue
        print(f"{label}: " + ", ".join(f"{k} {v:.2f}" for k, v in b.detail.items()))


if __name__ == "__main__":
    main()
