"""Fault tests on a real Dask cluster: a `dask scheduler` and two `dask worker` processes.

SIGKILL a worker mid-study: the batch completes, every study once, no partial folder.
SIGKILL the driver mid-batch, rerun: only the studies without a complete output run again.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from contour_data import build_openkbp_tree

from medseg.contour import ContourConfig, Manifest, run_contour

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
N_STUDIES = 4
CONFIG = {"inference": {"overlap": 0.25}, "cluster": {"torch_threads": 1, "allowed_failures": 2}}
#: a slower prediction (70 % overlap: ~4.6x the windows of 50 %), so that a study seen running for
#: 3 s is still predicting when its worker is killed, even on a fast idle machine
SLOW_CONFIG = {**CONFIG, "inference": {"overlap": 0.7}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(cond, timeout: float, what: str, step: float = 0.3):  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def cluster() -> Iterator[tuple[str, dict[str, subprocess.Popen]]]:
    """A scheduler and two nanny-less workers on 127.0.0.1 (random ports), always torn down."""
    from distributed import Client

    # one task per worker thread at a time (dask queues up to 1.1x by default): a killed driver
    # then leaves at most one orphaned task per worker, whatever the machine's speed
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION": "1.0",
    }
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs: list[subprocess.Popen] = []
    workers: dict[str, subprocess.Popen] = {}
    try:
        procs.append(
            subprocess.Popen(
                [BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                 "--no-dashboard"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
        for _ in range(2):
            wport = _free_port()
            p = subprocess.Popen(
                [BIN / "dask", "worker", address, "--no-nanny", "--nthreads", "1",
                 "--host", "127.0.0.1", "--worker-port", str(wport), "--no-dashboard",
                 "--memory-limit", "0"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            procs.append(p)
            workers[f"tcp://127.0.0.1:{wport}"] = p
        with Client(address, timeout="60s") as c:
            c.wait_for_workers(2, timeout=120)
        yield address, workers
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p in procs:
            p.wait(timeout=30)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fault_tree")
    build_openkbp_tree(root, N_STUDIES, start=4)
    return root


def _manifest_rows(out: Path, sql: str) -> list[tuple]:
    import sqlite3

    path = out / "manifest.sqlite"
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return list(db.execute(sql))
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def _complete_folders(out: Path) -> dict[str, int]:
    studies = out / "studies"
    return {
        p.name: p.stat().st_ino
        for p in studies.iterdir()
        if not p.name.startswith(".") and (p / "segmentation.json").is_file()
    }


@pytest.mark.slow
def test_sigkill_worker_mid_study(cluster, tree: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    address, workers = cluster
    out = tmp_path / "batch"
    box: dict[str, object] = {}
    driver = threading.Thread(
        target=lambda: box.setdefault(
            "result",
            run_contour([tree], out, ContourConfig.from_dict(SLOW_CONFIG), scheduler=address),
        )
    )
    driver.start()
    # an attempt that has been running for 3 s is predicting (loading takes < 1 s)
    (victim_key, victim_worker) = _wait(
        lambda: _manifest_rows(
            out,
            "SELECT key, worker FROM attempts WHERE state='running' AND "
            "julianday('now') - julianday(started_at) > 3.0 / 86400 LIMIT 1",
        )[:1],
        300,
        "a study to be predicting",
    )[0]
    workers[victim_worker].send_signal(signal.SIGKILL)
    driver.join(timeout=600)
    assert not driver.is_alive()
    result = box["result"]
    assert result.counts["done"] == N_STUDIES and result.exit_code == 0  # type: ignore[attr-defined]
    with Manifest(out / "manifest.sqlite", readonly=True) as m:
        tries = m.attempts(victim_key)
        assert [a["state"] for a in tries] == ["lost", "done"]
        assert tries[0]["worker"] == victim_worker and tries[1]["worker"] != victim_worker
        assert m.get(victim_key)["attempts"] == 2
        done = [a["key"] for a in m.attempts() if a["state"] == "done" and a["predicted"]]
        assert sorted(done) == sorted(r["key"] for r in m.studies())  # each study once
    assert len(_complete_folders(out)) == N_STUDIES
    assert sorted(p.name for p in (out / "studies").iterdir()) == sorted(_complete_folders(out))


@pytest.mark.slow
def test_sigkill_driver_then_rerun(cluster, tree: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from distributed import Client

    address, _ = cluster
    out = tmp_path / "batch"
    cfg = tmp_path / "contour.yaml"
    cfg.write_text(  # slow predictions (SLOW_CONFIG): most studies are still running at the kill
        "inference: {overlap: 0.7}\ncluster: {torch_threads: 1, allowed_failures: 2}\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    driver = subprocess.Popen(
        [sys.executable, "-m", "medseg", "contour", str(tree), "-o", str(out), "--config",
         str(cfg), "--scheduler", address],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    # kill as soon as a worker has started a study, not when one is done: the two workers run in
    # lockstep (equal studies, equal speed), so by the time the driver records a first study done
    # the other worker may have finished its own and started the last one, and every study then
    # completes as an orphan (seen once in CI: 4 of 4 folders before the rerun)
    try:
        _wait(
            lambda: _manifest_rows(out, "SELECT key FROM attempts WHERE state='running'"),
            400,
            "a worker to start a first study",
        )
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    assert driver.returncode == -signal.SIGKILL
    # tasks already running finish on the workers (their reports are lost), the scheduler drops the
    # ones not started when the driver's connection closes: wait for the running ones
    with Client(address, timeout="30s") as c:
        _wait(
            lambda: sum(c.run(lambda dask_worker: len(dask_worker.active_threads)).values()) == 0,
            300,
            "the orphaned tasks to end",
            step=1.0,
        )
    before = _complete_folders(out)
    assert 1 <= len(before) < N_STUDIES
    result = run_contour([tree], out, ContourConfig.from_dict(CONFIG), scheduler=address)
    assert result.counts["done"] == N_STUDIES and result.exit_code == 0
    after = _complete_folders(out)
    assert set(after) == {r["key"] for r in result.studies}
    assert set(result.ran) == set(after) - set(before)  # only the remaining studies ran
    assert {k: after[k] for k in before} == before  # done folders untouched (same inode)
    with Manifest(out / "manifest.sqlite", readonly=True) as m:
        runs = m.runs()
        assert [r["outcome"] for r in runs] == ["interrupted", "done"]
        rerun = [a for a in m.attempts() if a["run_id"] == runs[1]["run_id"]]
        predicted = sorted(a["key"] for a in rerun if a["predicted"])
        assert predicted == sorted(result.ran)
        assert all(a["state"] in ("done", "reused") for a in rerun)
