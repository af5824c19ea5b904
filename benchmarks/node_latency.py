"""DICOM node latency: last CT instance received → RTSTRUCT stored in the PACS (Orthanc).

A private Orthanc (Debian package, loopback) gets a 150-slice CT over REST and C-STOREs it to
``medseg listen`` (shipped ``pipelines/node.yaml``: its own warm Dask worker, hn_oar, overlap
0.5; only ports, folder, caller and ``quiet_time_s`` changed). Measured per study:

- ``last``: the node's ``node_studies.last_received_at`` (time its last instance was accepted);
- ``stored``: when Orthanc's REST API first lists the RTSTRUCT in the study (polled every 50 ms);
- latency = stored - last - quiet_time_s (the wait for quiet is configuration, not work), split
  into the engine's time for the study (manifest ``total_s``: load, predict, write) and the rest
  (hand-over, discovery, model reload on the worker, C-STORE back).

The CT is OpenKBP pt_4 (128 slices) resampled to 150 slices (same extent, linear), new UIDs per
study. The first study is run after the node's cluster is warm.

    .venv/bin/python benchmarks/node_latency.py --studies 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "node")]

from node_tools import NodeProcess, Orthanc, free_port, wait_for  # noqa: E402

SHARED = REPO.parent / "shared" / "data"


def ct_150(folder: Path) -> tuple[list[Path], str]:
    """A 150-slice CT series (pt_4 resampled along the slice axis); returns files, study UID."""
    from scipy.ndimage import zoom

    from medseg.io.dicom_write import write_dicom_series
    from medseg.io.openkbp import load_openkbp_ct
    from medseg.volume import Volume

    ct = load_openkbp_ct(SHARED / "openkbp_hn_ct" / "train-pats" / "pt_4")
    n = ct.shape[0]
    array = zoom(ct.array, (150 / n, 1.0, 1.0), order=1).astype(np.float32)
    affine = ct.affine.copy()
    affine[:3, 0] *= (n - 1) / (array.shape[0] - 1)
    files = write_dicom_series(Volume(array, affine, modality="CT"), folder)
    import pydicom

    return files, str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


def _t(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=3)
    parser.add_argument("--quiet-time", type=float, default=2.0)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="medseg-node-bench-"))
    node_port = free_port()
    orthanc = Orthanc(root / "orthanc", node_port)
    config = yaml.safe_load((REPO / "pipelines" / "node.yaml").read_text())
    config.update(
        host="127.0.0.1",
        port=node_port,
        output_dir=str(root / "node"),
        quiet_time_s=args.quiet_time,
        callers=[{"ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc.dicom_port}],
    )
    (root / "node.yaml").write_text(yaml.safe_dump(config))
    node = NodeProcess(root / "node.yaml", root / "node.log")
    orthanc.start()
    rows = []
    try:
        node.start(timeout=120)
        wait_for(lambda: "contour cluster ready" in node.log.read_text(), 300, "warm cluster")
        for i in range(args.studies):
            files, study_uid = ct_150(root / f"ct{i}")
            ids = orthanc.upload(files)
            t0 = time.time()
            orthanc.store_to_node(ids)
            t_sent = time.time() - t0

            def stored(uid: str = study_uid) -> float | None:
                return time.time() if orthanc.instances_of_modality(uid, "RTSTRUCT") else None

            t_stored = wait_for(stored, 600, "the RTSTRUCT in Orthanc", step=0.05)
            (study,) = node.rows(
                "SELECT n.last_received_at, n.received, s.total_s FROM node_studies n "
                "JOIN studies s ON s.key LIKE n.study_hash || '-%' ORDER BY n.last_received_at "
                "DESC LIMIT 1"
            )
            latency = t_stored - _t(study["last_received_at"]) - args.quiet_time
            rows.append((study["received"], t_sent, latency, study["total_s"]))
            engine = float(study["total_s"])
            print(
                f"study {i + 1}: {study['received']} instances sent by Orthanc in {t_sent:.1f} s;"
                f" last instance -> RTSTRUCT in Orthanc {latency:.1f} s (+ {args.quiet_time:g} s"
                f" quiet time); engine {engine:.1f} s, rest {latency - engine:.1f} s",
                flush=True,
            )
    finally:
        node.stop()
        orthanc.stop()
    lat = [r[2] for r in rows]
    print(
        f"median over {len(rows)} studies of 150 slices: {statistics.median(lat):.1f} s from the"
        f" last instance to the RTSTRUCT stored in Orthanc, quiet time ({args.quiet_time:g} s)"
        " excluded"
    )


if __name__ == "__main__":
    main()
