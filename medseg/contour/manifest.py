"""The batch manifest: ``OUT/manifest.sqlite`` (stdlib :mod:`sqlite3`, WAL journal).

Only the driver process writes it (workers report back through Dask); ``medseg contour
status`` reads it. Schema (version 2)::

    runs      one row per invocation of ``medseg contour``
      run_id INTEGER PK, started_at TEXT (UTC ISO), finished_at TEXT, pid INTEGER,
      model_sha256 TEXT, medseg_version TEXT, config_json TEXT, n_studies INTEGER,
      outcome TEXT ('running', 'done', 'some failed', 'interrupted'),
      timeline_json TEXT (driver stages, wall-clock seconds since the epoch: ``entered``,
      ``discovered``, ``hashed``, ``planned``, ``cluster_ready``, ``model_loaded``,
      ``tasks_done``, ``cluster_closed``, ``finished``; a stage not reached is absent)
    studies   one row per study (key = output folder name under OUT/studies/)
      key TEXT PK, kind TEXT ('dicom', 'file', 'openkbp'), study_hash TEXT, series_hash TEXT,
      state TEXT ('pending', 'running', 'done', 'failed', 'skipped'), reason TEXT,
      selection_json TEXT (chosen series, reason, every other series and why not),
      fingerprint TEXT (input), model_sha256 TEXT, attempts INTEGER (all runs), worker TEXT,
      load_s, predict_s, write_s, total_s REAL (last successful attempt),
      metrics_json TEXT (per-organ Dice/HD95/ASSD/NSD against the reference, or NULL),
      warnings_json TEXT, run_id INTEGER (last run that touched it), updated_at TEXT
    attempts  one row per time a worker started a study
      attempt_id INTEGER PK, key TEXT, run_id INTEGER, attempt INTEGER (1, 2, ... per study),
      worker TEXT, state TEXT ('running', 'done', 'failed', 'lost', 'interrupted', 'reused'),
      reason TEXT, predicted INTEGER (1 when the model ran to the end), started_at TEXT,
      finished_at TEXT, load_s, predict_s, write_s, total_s REAL,
      timeline_json TEXT (the worker's wall-clock ``[start, end]`` of ``task``, ``load``,
      ``predict``, ``forward``, ``write``, ``score`` and ``network_s``; see
      :func:`medseg.contour.worker.study_timeline`; NULL when the attempt did not complete)

Version 1 files (without the two ``timeline_json`` columns) are upgraded in place on open.

``lost`` = the worker died during the attempt (the study was retried elsewhere);
``interrupted`` = the driver stopped before the attempt reported; ``reused`` = the output folder
was already complete for the same input and model (written by an attempt whose report was lost).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medseg.errors import InputError

__all__ = ["MANIFEST_NAME", "STATES", "Manifest"]

MANIFEST_NAME = "manifest.sqlite"
STATES = ("pending", "running", "done", "failed", "skipped")
_SCHEMA_VERSION = 2
_TIMINGS = ("load_s", "predict_s", "write_s", "total_s")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT, started_at TEXT NOT NULL, finished_at TEXT,
    pid INTEGER, model_sha256 TEXT, medseg_version TEXT, config_json TEXT, n_studies INTEGER,
    outcome TEXT NOT NULL DEFAULT 'running', timeline_json TEXT);
CREATE TABLE IF NOT EXISTS studies (
    key TEXT PRIMARY KEY, kind TEXT NOT NULL, study_hash TEXT, series_hash TEXT,
    state TEXT NOT NULL CHECK (state IN ('pending','running','done','failed','skipped')),
    reason TEXT, selection_json TEXT, fingerprint TEXT, model_sha256 TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, worker TEXT, load_s REAL, predict_s REAL,
    write_s REAL, total_s REAL, metrics_json TEXT, warnings_json TEXT, run_id INTEGER,
    updated_at TEXT);
CREATE TABLE IF NOT EXISTS attempts (
    attempt_id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, run_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL, worker TEXT, state TEXT NOT NULL, reason TEXT,
    predicted INTEGER NOT NULL DEFAULT 0, started_at TEXT, finished_at TEXT, load_s REAL,
    predict_s REAL, write_s REAL, total_s REAL, timeline_json TEXT);
CREATE INDEX IF NOT EXISTS attempts_key ON attempts (key);
"""


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


class Manifest:
    """The SQLite manifest of one output folder.

    Parameters
    ----------
    path
        ``OUT/manifest.sqlite``.
    readonly
        Open without writing (``medseg contour status``); the file must exist.
    """

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly:
            if not self.path.is_file():
                raise InputError(
                    f"{self.path}: no manifest here; give the output folder of a medseg contour "
                    "batch (the folder passed as -o)."
                )
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
            try:  # a damaged file or another program's database: say so, not a traceback
                for table in ("studies", "attempts", "runs"):
                    self._db.execute(f"SELECT * FROM {table} LIMIT 0")
            except sqlite3.DatabaseError as exc:
                self._db.close()
                raise InputError(
                    f"{self.path}: not a readable medseg contour manifest ({exc}); give the "
                    "output folder of a medseg contour batch, or run medseg contour again "
                    "into a new folder."
                ) from exc
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)  # idempotent; executescript commits itself
            for table in ("runs", "attempts"):  # version 1 -> 2
                cols = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
                if "timeline_json" not in cols:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN timeline_json TEXT")
            self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        self._db.row_factory = sqlite3.Row

    # ---------------------------------------------------------------------------------------
    @contextmanager
    def _tx(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        """Close the connection (the WAL is checkpointed by SQLite)."""
        self._db.close()

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------------------------- runs
    def begin_run(self, *, model_sha256: str, config: Mapping[str, Any], n_studies: int) -> int:
        """Record a new run; rows left ``running`` by a dead driver become ``pending``."""
        from medseg import __version__

        with self._tx():
            self._db.execute(
                "UPDATE attempts SET state='interrupted', finished_at=?, "
                "reason='the driver stopped before this attempt reported' WHERE state='running'",
                (_now(),),
            )
            self._db.execute(
                "UPDATE studies SET state='pending', reason='interrupted run' WHERE state='running'"
            )
            self._db.execute(
                "UPDATE runs SET outcome='interrupted' WHERE outcome='running'",
            )
            cur = self._db.execute(
                "INSERT INTO runs (started_at, pid, model_sha256, medseg_version, config_json, "
                "n_studies) VALUES (?,?,?,?,?,?)",
                (
                    _now(),
                    os.getpid(),
                    model_sha256,
                    __version__,
                    json.dumps(dict(config)),
                    n_studies,
                ),
            )
        return int(cur.lastrowid or 0)

    def finish_run(
        self, run_id: int, outcome: str, *, timeline: Mapping[str, float] | None = None
    ) -> None:
        """Close a run row (``timeline``: the driver's stage stamps, see the module doc)."""
        with self._tx():
            self._db.execute(
                "UPDATE runs SET finished_at=?, outcome=?, timeline_json=? WHERE run_id=?",
                (_now(), outcome, json.dumps(dict(timeline)) if timeline else None, run_id),
            )

    # ------------------------------------------------------------------------------ studies
    def get(self, key: str) -> dict[str, Any] | None:
        """The study row as a dict, or ``None``."""
        row = self._db.execute("SELECT * FROM studies WHERE key=?", (key,)).fetchone()
        return dict(row) if row else None

    def set_study(self, key: str, *, run_id: int, state: str, **values: Any) -> None:
        """Insert or update a study row (``values``: any studies column)."""
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}")
        cols = {"state": state, "run_id": run_id, "updated_at": _now(), **values}
        for k in ("selection_json", "metrics_json", "warnings_json"):
            if k in cols and not isinstance(cols[k], str | type(None)):
                cols[k] = json.dumps(cols[k])
        names = ", ".join(cols)
        marks = ", ".join("?" for _ in cols)
        updates = ", ".join(f"{c}=excluded.{c}" for c in cols)
        with self._tx():
            self._db.execute(
                f"INSERT INTO studies (key, kind, {names}) VALUES (?, ?, {marks}) "
                f"ON CONFLICT(key) DO UPDATE SET {updates}",
                (key, values.get("kind", "dicom"), *cols.values()),
            )

    def start_attempt(self, key: str, *, run_id: int, worker: str) -> int:
        """A worker started ``key``: close an open attempt of this run as ``lost``, open a new one.

        Returns the attempt number of the study (1, 2, ...).
        """
        now = _now()
        with self._tx():
            self._db.execute(
                "UPDATE attempts SET state='lost', finished_at=?, reason=? "
                "WHERE key=? AND run_id=? AND state='running'",
                (now, "the worker died during this attempt; study retried elsewhere", key, run_id),
            )
            row = self._db.execute(
                "SELECT COALESCE(MAX(attempt), 0) FROM attempts WHERE key=?", (key,)
            ).fetchone()
            n = int(row[0]) + 1
            self._db.execute(
                "INSERT INTO attempts (key, run_id, attempt, worker, state, started_at) "
                "VALUES (?,?,?,?, 'running', ?)",
                (key, run_id, n, worker, now),
            )
            self._db.execute(
                "UPDATE studies SET state='running', attempts=attempts+1, worker=?, run_id=?, "
                "updated_at=? WHERE key=?",
                (worker, run_id, now, key),
            )
        return n

    def finish_attempt(
        self,
        key: str,
        *,
        run_id: int,
        state: str,
        reason: str = "",
        predicted: bool = False,
        timings: Mapping[str, float] | None = None,
        worker: str = "",
        timeline: Mapping[str, Any] | None = None,
    ) -> None:
        """Close the open attempt of ``key`` in this run (or add one that never reported).

        ``timeline``: the worker's wall-clock stages (:func:`medseg.contour.worker.study_timeline`).
        """
        t = [float(timings[k]) if timings and k in timings else None for k in _TIMINGS]
        now = _now()
        with self._tx():
            row = self._db.execute(
                "SELECT attempt_id FROM attempts WHERE key=? AND run_id=? AND state='running' "
                "ORDER BY attempt_id DESC LIMIT 1",
                (key, run_id),
            ).fetchone()
            if row is None:
                n = self._db.execute(
                    "SELECT COALESCE(MAX(attempt), 0) FROM attempts WHERE key=?", (key,)
                ).fetchone()[0]
                self._db.execute(
                    "INSERT INTO attempts (key, run_id, attempt, worker, state, started_at) "
                    "VALUES (?,?,?,?, 'running', ?)",
                    (key, run_id, int(n) + 1, worker, now),
                )
                self._db.execute("UPDATE studies SET attempts=attempts+1 WHERE key=?", (key,))
                row = self._db.execute("SELECT last_insert_rowid()").fetchone()
            self._db.execute(
                "UPDATE attempts SET state=?, reason=?, predicted=?, finished_at=?, load_s=?, "
                "predict_s=?, write_s=?, total_s=?, timeline_json=? WHERE attempt_id=?",
                (
                    state,
                    reason,
                    int(predicted),
                    now,
                    *t,
                    json.dumps(dict(timeline)) if timeline else None,
                    row[0],
                ),
            )

    # ------------------------------------------------------------------------------ reading
    def studies(self) -> list[dict[str, Any]]:
        """Every study row, by key."""
        return [dict(r) for r in self._db.execute("SELECT * FROM studies ORDER BY key")]

    def attempts(self, key: str | None = None) -> list[dict[str, Any]]:
        """Attempt rows (of one study, or all), oldest first."""
        if key is None:
            rows = self._db.execute("SELECT * FROM attempts ORDER BY attempt_id")
        else:
            rows = self._db.execute(
                "SELECT * FROM attempts WHERE key=? ORDER BY attempt_id", (key,)
            )
        return [dict(r) for r in rows]

    def runs(self) -> list[dict[str, Any]]:
        """Run rows, oldest first."""
        return [dict(r) for r in self._db.execute("SELECT * FROM runs ORDER BY run_id")]

    def counts(self) -> dict[str, int]:
        """Number of studies per state (every state present, zeros included)."""
        out = dict.fromkeys(STATES, 0)
        for state, n in self._db.execute("SELECT state, COUNT(*) FROM studies GROUP BY state"):
            out[str(state)] = int(n)
        return out
