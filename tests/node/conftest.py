"""Fixtures of the DICOM node tests: a real CT as DICOM, its `medseg segment` oracle, a warm Dask
cluster shared by the node processes, a private Orthanc and the node per test."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from node_tools import (
    ORTHANC_AE,
    PATIENT_ID,
    PATIENT_NAME,
    REPO,
    CtSeries,
    NodeEnv,
    NodeProcess,
    Orthanc,
    free_port,
    write_node_config,
)

BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def node_ct(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> CtSeries:
    """OpenKBP pt_4 (128 slices of 128×128) written as a DICOM CT series with patient data."""
    from medseg.io.dicom_write import SeriesInfo, write_dicom_series
    from medseg.io.openkbp import load_openkbp_ct

    folder = tmp_path_factory.mktemp("node_ct") / "ct"
    volume = load_openkbp_ct(shared_data / "openkbp_hn_ct" / "train-pats" / "pt_4")
    info = SeriesInfo(patient_name=PATIENT_NAME, patient_id=PATIENT_ID)
    files = write_dicom_series(volume, folder, info=info)
    import pydicom

    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    return CtSeries(folder, files, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID))


@pytest.fixture(scope="session")
def oracle(node_ct: CtSeries, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``medseg segment`` on the same CT with the node's inference settings (RTSTRUCT + SEG)."""
    from medseg.cli import main

    out = tmp_path_factory.mktemp("node_oracle") / "seg"
    code = main(
        ["-q", "segment", str(node_ct.folder), "-o", str(out), "--overlap", "0.25",
         "--format", "nifti,seg,rtstruct"]
    )  # fmt: skip
    assert code == 0
    return out


@pytest.fixture(scope="session")
def dask_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `dask scheduler` and one warm `dask worker` (2 threads) shared by the node processes
    (they outlive a killed node, as a cluster on other machines would)."""
    from distributed import Client
    from node_tools import wait_for

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("node_dask") / "dask.log"
    procs: list[subprocess.Popen[bytes]] = []
    with log.open("ab") as fh:
        try:
            procs.append(
                subprocess.Popen(
                    [BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                     "--no-dashboard"],
                    env=env, stdout=fh, stderr=subprocess.STDOUT,
                )
            )  # fmt: skip
            procs.append(
                subprocess.Popen(
                    [BIN / "dask", "worker", address, "--no-nanny", "--nthreads", "2",
                     "--host", "127.0.0.1", "--no-dashboard", "--memory-limit", "0"],
                    env=env, stdout=fh, stderr=subprocess.STDOUT,
                )
            )  # fmt: skip
            wait_for(lambda: _connectable(address), 60, "the dask scheduler")
            with Client(address, timeout="60s") as c:
                c.wait_for_workers(1, timeout=120)
                c.run(lambda: __import__("medseg.inference") and "ok")  # torch imported once
            yield address
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
            for p in procs:
                p.wait(timeout=30)


def _connectable(address: str) -> bool:
    import socket

    host, port = address.removeprefix("tcp://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def node_env(tmp_path: Path, dask_address: str) -> Iterator[Callable[..., NodeEnv]]:
    """Factory: ``node_env(**config)`` -> a started Orthanc + a configured node (start it).

    Both are stopped at the end whatever happens.
    """
    made: list[NodeEnv] = []

    def make(*, embedded: bool = False, **config: object) -> NodeEnv:
        port = free_port()
        orthanc = Orthanc(tmp_path / "orthanc", port)
        callers = config.pop(
            "callers",
            [{"ae_title": ORTHANC_AE, "host": "127.0.0.1", "port": orthanc.dicom_port}],
        )
        out = tmp_path / "node"
        cfg = write_node_config(
            tmp_path / "node.yaml",
            output_dir=out,
            port=port,
            callers=callers,  # type: ignore[arg-type]
            scheduler=None if embedded else dask_address,
            **config,
        )
        env = NodeEnv(orthanc, NodeProcess(cfg, tmp_path / "node.log"), cfg, port, out)
        made.append(env)
        orthanc.start()
        return env

    try:
        yield make
    finally:
        for env in made:
            env.node.stop()
            env.orthanc.stop()
