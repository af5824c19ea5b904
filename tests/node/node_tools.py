"""Test helpers for the DICOM node: a private Orthanc, the node as a subprocess, polling."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

REPO = Path(__file__).resolve().parents[2]
PYTHON = Path(sys.executable)
T = TypeVar("T")

NODE_AE = "MEDSEG"
ORTHANC_AE = "ORTHANC"


#: Patient identifiers written into the test CT: they must never reach a log or a file name.
PATIENT_NAME = "Secretname^Jane"
PATIENT_ID = "PID-4711-SECRET"


@dataclass(frozen=True)
class CtSeries:
    """A CT series written for the tests."""

    folder: Path
    files: list[Path]
    study_instance_uid: str
    series_instance_uid: str


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], T], timeout: float, what: str, step: float = 0.2) -> T:
    """Poll ``check`` until it returns a truthy value (returned) or ``timeout`` seconds pass."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


class Orthanc:
    """A private Orthanc (Debian package) on loopback ports with its own storage.

    ``DicomModalities`` has the node as ``medseg``; ``stop()`` and ``start()`` again keep the
    storage (a PACS that goes down and comes back).
    """

    def __init__(self, root: Path, node_port: int) -> None:
        self.root = root
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.config = root / "orthanc.json"
        self.log = root / "orthanc.log"
        self.proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "medseg-test",
            "StorageDirectory": str(root / "db"),
            "IndexDirectory": str(root / "db"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": ORTHANC_AE,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpServerEnabled": True,
            "DicomServerEnabled": True,
            "Plugins": [],
            "LuaScripts": [],
            "DicomModalities": {"medseg": [NODE_AE, "127.0.0.1", node_port]},
            "DicomScuTimeout": 10,
            "StableAge": 60,
            "SaveJobs": False,
            "ConcurrentJobs": 2,
            "HttpThreadsCount": 8,
        }
        self.config.write_text(json.dumps(config, indent=1))

    def start(self) -> None:
        """Start Orthanc and wait (bounded) for its REST API."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                ["Orthanc", str(self.config)], stdout=log, stderr=subprocess.STDOUT, cwd=self.root
            )
        wait_for(self._up, 30, "Orthanc's REST API")

    def _up(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited: {self.log.read_text()[-2000:]}")
        try:
            return bool(self.get("/system"))
        except (urllib.error.URLError, ConnectionError, OSError):
            return False

    def stop(self) -> None:
        """Stop Orthanc (SIGTERM, then SIGKILL after 20 s)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    # ---------------------------------------------------------------------------- REST
    def _request(self, method: str, path: str, data: bytes | None, ctype: str) -> Any:
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", ctype)
        with urllib.request.urlopen(req, timeout=120) as resp:
            body = resp.read()
        if resp.headers.get_content_type() == "application/json":
            return json.loads(body)
        return body

    def get(self, path: str) -> Any:
        return self._request("GET", path, None, "")

    def post(self, path: str, payload: Any) -> Any:
        if isinstance(payload, bytes):
            return self._request("POST", path, payload, "application/dicom")
        return self._request("POST", path, json.dumps(payload).encode(), "application/json")

    def upload(self, files: list[Path]) -> list[str]:
        """POST each file to /instances; returns the Orthanc instance ids."""
        return [str(self.post("/instances", f.read_bytes())["ID"]) for f in files]

    def store_to_node(self, resources: list[str]) -> Any:
        """Have Orthanc C-STORE resources (instances/series/studies) to the node (synchronous)."""
        return self.post("/modalities/medseg/store", {"Resources": resources, "Synchronous": True})

    def series_of_study(self, study_uid: str) -> list[dict[str, Any]]:
        """Expanded series of the study with this Study Instance UID ([] when unknown)."""
        found = self.post("/tools/lookup", study_uid.encode())
        ids = [f["ID"] for f in found if f.get("Type") == "Study"]
        if not ids:
            return []
        return list(self.get(f"/studies/{ids[0]}/series?expand"))

    def instances_of_modality(self, study_uid: str, modality: str) -> list[str]:
        """Orthanc instance ids of the study's series of ``modality``."""
        out: list[str] = []
        for s in self.series_of_study(study_uid):
            if s["MainDicomTags"].get("Modality") == modality:
                out.extend(s["Instances"])
        return out

    def download(self, instance_id: str, dest: Path) -> Path:
        dest.write_bytes(self.get(f"/instances/{instance_id}/file"))
        return dest


class NodeProcess:
    """``medseg listen`` as a subprocess in its own session (kill -9 takes its workers too)."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        data = yaml.safe_load(config.read_text())
        self.port = int(data["port"])
        self.output_dir = Path(data["output_dir"])
        self.caller_ae = str(data["callers"][0]["ae_title"])  # for the readiness C-ECHO

    def start(self, timeout: float = 60) -> None:
        """Start the node and wait until it answers C-ECHO."""
        from medseg.node import Destination, echo

        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "medseg", "listen", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

        def answers() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"the node exited: {self.log.read_text()[-3000:]}")
            try:
                echo(Destination(NODE_AE, "127.0.0.1", self.port), calling_ae=self.caller_ae,
                     timeout_s=2)  # fmt: skip
                return True
            except Exception:
                return False

        wait_for(answers, timeout, "the node to answer C-ECHO", step=0.3)

    def kill9(self) -> None:
        """SIGKILL the node's whole process group (the node and its Dask workers)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL of the group after 30 s."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # leftover workers of the group
        self.proc.wait(timeout=30)
        self.proc = None

    def rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Rows of the node's manifest (read-only)."""
        path = self.output_dir / "contour" / "manifest.sqlite"
        if not path.exists():
            return []
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        db.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in db.execute(sql, args)]
        except sqlite3.OperationalError:  # tables not created yet
            return []
        finally:
            db.close()


def write_node_config(
    path: Path,
    *,
    output_dir: Path,
    port: int,
    callers: list[dict[str, Any]],
    scheduler: str | None,
    quiet_time_s: float = 1.5,
    **extra: Any,
) -> Path:
    """A node config for the tests: fast inference (overlap 0.25), 1 worker, short retries."""
    contour: dict[str, Any] = {
        "inference": {"overlap": 0.25},
        "selection": {"min_slices": 10},
        "cluster": {"workers": 1, "threads_per_worker": 2, "torch_threads": 2},
    }
    data = {
        "ae_title": NODE_AE,
        "host": "127.0.0.1",
        "port": port,
        "output_dir": str(output_dir),
        "quiet_time_s": quiet_time_s,
        "callers": callers,
        "retry": {"initial_s": 1, "max_s": 2, "give_up_after_s": 600},
        "scheduler": scheduler,
        "contour": contour,
        **extra,
    }
    path.write_text(yaml.safe_dump(data))
    return path


@dataclass
class NodeEnv:
    """A private Orthanc and a node (not started) whose only caller is that Orthanc."""

    orthanc: Orthanc
    node: NodeProcess
    config: Path
    port: int
    output_dir: Path
