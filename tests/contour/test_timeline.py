"""Manifest timelines: the version 1 -> 2 upgrade, and the benchmark's interval union."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import sys
from pathlib import Path
from types import ModuleType

import pytest

from medseg.contour import Manifest

V1_ATTEMPTS = """CREATE TABLE attempts (
    attempt_id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, run_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL, worker TEXT, state TEXT NOT NULL, reason TEXT,
    predicted INTEGER NOT NULL DEFAULT 0, started_at TEXT, finished_at TEXT, load_s REAL,
    predict_s REAL, write_s REAL, total_s REAL);
CREATE TABLE runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT, started_at TEXT NOT NULL, finished_at TEXT,
    pid INTEGER, model_sha256 TEXT, medseg_version TEXT, config_json TEXT, n_studies INTEGER,
    outcome TEXT NOT NULL DEFAULT 'running');
INSERT INTO attempts (key, run_id, attempt, state) VALUES ('old', 1, 1, 'done');
PRAGMA user_version=1;
"""


def test_version_1_manifest_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "manifest.sqlite"
    db = sqlite3.connect(path)
    db.executescript(V1_ATTEMPTS)
    db.close()
    with Manifest(path) as m:
        run = m.begin_run(model_sha256="x", config={}, n_studies=1)
        m.start_attempt("new", run_id=run, worker="w")
        tl = {"task": [1.0, 5.0], "network_s": 2.0}
        m.finish_attempt("new", run_id=run, state="done", timeline=tl)
        m.finish_run(run, "done", timeline={"entered": 0.5, "finished": 6.0})
        rows = {a["key"]: a for a in m.attempts()}
        runs = m.runs()
    assert rows["old"]["timeline_json"] is None
    assert json.loads(rows["new"]["timeline_json"]) == tl
    assert json.loads(runs[-1]["timeline_json"]) == {"entered": 0.5, "finished": 6.0}
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    db.close()


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "contour.py"
    spec = importlib.util.spec_from_file_location("bench_contour", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _study(load: float, fwd: tuple[float, float], write: float, net: float) -> dict:
    return {
        "load": [load, fwd[0]],
        "predict": [fwd[0], fwd[1]],
        "forward": list(fwd),
        "write": [fwd[1], write],
        "score": [write, write],
        "network_s": net,
    }


def test_worker_split_is_a_union_by_priority(bench: ModuleType) -> None:
    # study 2 loads (3..6) while study 1 is in its forward pass (2..8): hidden, not added
    s1 = _study(0.0, (2.0, 8.0), 9.0, net=5.0)
    s2 = {**_study(3.0, (8.0, 12.0), 13.0, net=3.0), "load": [3.0, 6.0], "predict": [6.0, 12.0]}
    split = bench.worker_split([s1, s2], 0.0, 15.0)
    assert split == pytest.approx(
        # network 5 + 3; study CPU: load 0..2 + forward not in network (1 + 1); study 1's
        # write 8..9 is hidden behind study 2's forward pass
        {"network": 8.0, "study_cpu": 4.0, "writing": 1.0, "idle": 2.0}
    )
    assert sum(split.values()) == pytest.approx(15.0)  # the parts tile the interval
