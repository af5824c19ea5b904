"""The node's own tables in the batch manifest ``OUT/manifest.sqlite``.

The contour engine owns ``runs``, ``studies`` and ``attempts`` (see
:mod:`medseg.contour.manifest`); the node adds two tables in the same file, written only by the
``medseg listen`` process (the engine's driver). Times are UTC ISO 8601 strings with
milliseconds (they sort as text).

Schema::

    node_studies   one row per received study (key = spool folder, a Study Instance UID hash)
      study_hash TEXT PK, state TEXT ('receiving', 'contouring', 'done', 'failed', 'skipped'),
      reason TEXT, caller_ae TEXT, caller_host TEXT (the association that sent the last
      instance), received INTEGER (C-STOREs accepted, repeats included), first_received_at,
      last_received_at TEXT, contour_keys TEXT (JSON list of the engine's study keys),
      contour_runs INTEGER (times the study was handed to the engine), contoured_at TEXT,
      updated_at TEXT
    sends          one row per result file and destination
      send_id INTEGER PK, study_hash TEXT, key TEXT (engine study key), output TEXT
      ('rtstruct', 'seg'), path TEXT (relative to OUT), sop_instance_uid TEXT, destination TEXT
      (AE@HOST:PORT), state TEXT ('pending', 'sent', 'failed'), attempts INTEGER, last_status
      TEXT (C-STORE status, hex), last_error TEXT, created_at, first_try_at, next_try_at,
      sent_at TEXT; UNIQUE (key, output, sop_instance_uid, destination)

A study goes ``receiving`` → (quiet time) → ``contouring`` → ``done`` / ``failed`` /
``skipped``; an instance arriving later puts it back to ``receiving``. A row left
``contouring`` by a killed node is handed to the engine again at the next start; a ``pending``
send is retried until ``sent`` (at least once: a repeat of the same SOP Instance UID is
harmless) or ``failed`` after the retry policy's give-up time.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["NODE_STATES", "NodeState", "PendingSend", "parse_time", "utc_now"]

NODE_STATES = ("receiving", "contouring", "done", "failed", "skipped")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS node_studies (
    study_hash TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('receiving','contouring','done','failed','skipped')),
    reason TEXT, caller_ae TEXT, caller_host TEXT, received INTEGER NOT NULL DEFAULT 0,
    first_received_at TEXT, last_received_at TEXT, contour_keys TEXT,
    contour_runs INTEGER NOT NULL DEFAULT 0, contoured_at TEXT, updated_at TEXT);
CREATE TABLE IF NOT EXISTS sends (
    send_id INTEGER PRIMARY KEY AUTOINCREMENT, study_hash TEXT NOT NULL, key TEXT NOT NULL,
    output TEXT NOT NULL, path TEXT NOT NULL, sop_instance_uid TEXT NOT NULL,
    destination TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending','sent','failed')),
    attempts INTEGER NOT NULL DEFAULT 0, last_status TEXT, last_error TEXT, created_at TEXT,
    first_try_at TEXT, next_try_at TEXT, sent_at TEXT,
    UNIQUE (key, output, sop_instance_uid, destination));
CREATE INDEX IF NOT EXISTS sends_due ON sends (state, next_try_at);
"""


def utc_now(offset_s: float = 0.0) -> str:
    """Now (plus ``offset_s``) as the tables' UTC ISO string."""
    t = _dt.datetime.now(_dt.UTC) + _dt.timedelta(seconds=offset_s)
    return t.isoformat(timespec="milliseconds")


def parse_time(text: str) -> float:
    """A table time as Unix seconds.

    Examples
    --------
    >>> parse_time("1970-01-01T00:01:40.500+00:00")
    100.5
    """
    return _dt.datetime.fromisoformat(text).timestamp()


@dataclass(frozen=True)
class PendingSend:
    """A result file waiting to be sent."""

    send_id: int
    path: Path
    destination: str
    attempts: int
    first_try_at: str | None


class NodeState:
    """The node's tables (one connection, shared by the node's threads under a lock).

    Parameters
    ----------
    path
        ``OUT/manifest.sqlite`` (created with the tables when missing).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._open: dict[str, tuple[str, str]] = {}  # receiving studies with a row: caller
        self._dirty: dict[str, tuple[str, int]] = {}  # study -> (last received, new count)
        self._db = sqlite3.connect(
            self.path, timeout=60, isolation_level=None, check_same_thread=False
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a row written = on disk (after a kill too)
        with self._lock:
            self._db.executescript(_SCHEMA)  # idempotent (IF NOT EXISTS); commits itself

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        """Write what is kept in memory and close the connection."""
        with self._lock:
            self._flush_locked()
            self._db.close()

    # ------------------------------------------------------------------------------ studies
    def record_instance(self, study_hash: str, *, caller_ae: str, caller_host: str) -> None:
        """An instance of ``study_hash`` is being spooled: count it, restart its quiet time.

        The row is written at once when the study is new to this process, comes from another
        caller or was finished (it reopens); otherwise the count and time are kept in memory and
        written by :meth:`flush` (every poll of the contour loop), so a 500-slice CT costs a
        few SQLite transactions, not 500.
        """
        now = utc_now()
        values = [study_hash, caller_ae, caller_host, now, now, now, caller_ae, caller_host, now]
        values.append(now)
        with self._lock:
            if self._open.get(study_hash) == (caller_ae, caller_host):
                n = self._dirty.get(study_hash, (now, 0))[1]
                self._dirty[study_hash] = (now, n + 1)
                return
            self._flush_locked()
            with self._tx() as db:
                db.execute(
                    "INSERT INTO node_studies (study_hash, state, caller_ae, caller_host, "
                    "received, first_received_at, last_received_at, updated_at) "
                    "VALUES (?, 'receiving', ?, ?, 1, ?, ?, ?) "
                    "ON CONFLICT(study_hash) DO UPDATE SET received=received+1, caller_ae=?, "
                    "caller_host=?, last_received_at=?, updated_at=?, "
                    "state=CASE WHEN state='contouring' THEN 'contouring' ELSE 'receiving' END, "
                    "reason=CASE WHEN state='contouring' THEN reason ELSE '' END",
                    values,
                )
            self._open[study_hash] = (caller_ae, caller_host)

    def flush(self) -> None:
        """Write the instance counts and times kept in memory."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._dirty:
            return
        items = list(self._dirty.items())
        self._dirty.clear()
        with self._tx() as db:
            for h, (last, n) in items:
                db.execute(
                    "UPDATE node_studies SET received=received+?, last_received_at=MAX("
                    "last_received_at, ?), updated_at=? WHERE study_hash=?",
                    (n, last, last, h),
                )

    def resume(self) -> list[str]:
        """At start: studies a stopped node left ``contouring`` go back to ``receiving``, and
        every ``receiving`` study waits one quiet time from now (a sender cut off by the stop
        can resume before the study is contoured); returns the studies left ``contouring``."""
        now = utc_now()
        with self._tx() as db:
            rows = db.execute(
                "SELECT study_hash FROM node_studies WHERE state='contouring'"
            ).fetchall()
            db.execute(
                "UPDATE node_studies SET state='receiving', updated_at=?, "
                "reason='node stopped while contouring; contoured again' "
                "WHERE state='contouring'",
                (now,),
            )
            db.execute("UPDATE node_studies SET last_received_at=? WHERE state='receiving'", (now,))
        return [str(r[0]) for r in rows]

    def adopt_spooled(self, study_hashes: Sequence[str]) -> list[str]:
        """Spool folders without a row (a node killed between file and row) get one."""
        added = []
        now = utc_now()
        with self._tx() as db:
            for h in study_hashes:
                cur = db.execute(
                    "INSERT OR IGNORE INTO node_studies (study_hash, state, received, "
                    "first_received_at, last_received_at, updated_at, reason) "
                    "VALUES (?, 'receiving', 0, ?, ?, ?, 'found in the spool at start')",
                    (h, now, now, now),
                )
                if cur.rowcount:
                    added.append(h)
        return added

    def ready_studies(self, quiet_time_s: float) -> list[dict[str, Any]]:
        """Studies ``receiving`` whose last instance is at least ``quiet_time_s`` old."""
        cutoff = utc_now(-quiet_time_s)
        with self._lock:
            self._flush_locked()
            rows = self._db.execute(
                "SELECT * FROM node_studies WHERE state='receiving' AND last_received_at <= ? "
                "ORDER BY last_received_at",
                (cutoff,),
            ).fetchall()
        return [dict(r) for r in rows]

    def start_contouring(self, study_hashes: Sequence[str]) -> dict[str, int]:
        """Mark studies ``contouring``; returns their ``received`` counts (to detect instances
        that arrive meanwhile)."""
        out: dict[str, int] = {}
        self.flush()
        with self._tx() as db:
            for h in study_hashes:
                db.execute(
                    "UPDATE node_studies SET state='contouring', contour_runs=contour_runs+1, "
                    "updated_at=? WHERE study_hash=?",
                    (utc_now(), h),
                )
                row = db.execute(
                    "SELECT received FROM node_studies WHERE study_hash=?", (h,)
                ).fetchone()
                out[h] = int(row[0]) if row else 0
        return out

    def requeue(self, study_hashes: Sequence[str], reason: str) -> None:
        """Studies whose hand-over broke (not the study's fault) wait one quiet time again."""
        now = utc_now()
        with self._tx() as db:
            for h in study_hashes:
                db.execute(
                    "UPDATE node_studies SET state='receiving', reason=?, last_received_at=?, "
                    "updated_at=? WHERE study_hash=? AND state='contouring'",
                    (reason, now, now, h),
                )

    def finish_contouring(
        self,
        study_hash: str,
        *,
        received: int,
        state: str,
        reason: str,
        keys: Sequence[str],
        sends: Sequence[dict[str, str]],
    ) -> bool:
        """Record the engine's outcome for a study and queue its sends, in one transaction.

        When instances arrived while it was contoured (``received`` changed), the study goes
        back to ``receiving`` (it is contoured again with them); the sends of this outcome are
        queued either way. Returns True when the study is finished.
        """
        if state not in NODE_STATES:
            raise ValueError(f"unknown node state {state!r}")
        now = utc_now()
        self.flush()
        with self._tx() as db:
            self._open.pop(study_hash, None)  # the next instance writes the row (reopens)
            row = db.execute(
                "SELECT received FROM node_studies WHERE study_hash=?", (study_hash,)
            ).fetchone()
            finished = row is not None and int(row[0]) == received
            db.execute(
                "UPDATE node_studies SET state=?, reason=?, contour_keys=?, contoured_at=?, "
                "updated_at=? WHERE study_hash=?",
                (
                    state if finished else "receiving",
                    reason,
                    json.dumps(list(keys)),
                    now,
                    now,
                    study_hash,
                ),
            )
            for s in sends:
                db.execute(
                    "INSERT OR IGNORE INTO sends (study_hash, key, output, path, "
                    "sop_instance_uid, destination, created_at, next_try_at) "
                    "VALUES (?,?,?,?,?,?,?,?)",
                    (
                        study_hash,
                        s["key"],
                        s["output"],
                        s["path"],
                        s["sop_instance_uid"],
                        s["destination"],
                        now,
                        now,
                    ),
                )
        return finished

    def study(self, study_hash: str) -> dict[str, Any] | None:
        """One node_studies row."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM node_studies WHERE study_hash=?", (study_hash,)
            ).fetchone()
        return dict(row) if row else None

    def studies(self) -> list[dict[str, Any]]:
        """Every node_studies row."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM node_studies ORDER BY study_hash").fetchall()
        return [dict(r) for r in rows]

    # -------------------------------------------------------------------------------- sends
    def due_sends(self, output_dir: Path) -> list[PendingSend]:
        """Pending sends whose next try is due, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT send_id, path, destination, attempts, first_try_at FROM sends "
                "WHERE state='pending' AND next_try_at <= ? ORDER BY send_id",
                (utc_now(),),
            ).fetchall()
        return [
            PendingSend(int(r[0]), output_dir / str(r[1]), str(r[2]), int(r[3]), r[4]) for r in rows
        ]

    def next_send_at(self) -> str | None:
        """When the earliest pending send is due (``None``: nothing pending)."""
        with self._lock:
            row = self._db.execute(
                "SELECT MIN(next_try_at) FROM sends WHERE state='pending'"
            ).fetchone()
        return str(row[0]) if row and row[0] else None

    def record_send(
        self,
        send_id: int,
        *,
        ok: bool,
        status: int | None,
        error: str,
        retry_in_s: float | None,
    ) -> None:
        """Close one attempt: ``sent``; or ``pending`` again in ``retry_in_s``; or ``failed``
        (``retry_in_s`` None)."""
        now = utc_now()
        state = "sent" if ok else ("pending" if retry_in_s is not None else "failed")
        with self._tx() as db:
            db.execute(
                "UPDATE sends SET state=?, attempts=attempts+1, last_status=?, last_error=?, "
                "first_try_at=COALESCE(first_try_at, ?), next_try_at=?, sent_at=? "
                "WHERE send_id=?",
                (
                    state,
                    None if status is None else f"0x{status:04X}",
                    error,
                    now,
                    utc_now(retry_in_s) if retry_in_s is not None else None,
                    now if ok else None,
                    send_id,
                ),
            )

    def sends(self, study_hash: str | None = None) -> list[dict[str, Any]]:
        """Send rows (of one study, or all), oldest first."""
        with self._lock:
            if study_hash is None:
                rows = self._db.execute("SELECT * FROM sends ORDER BY send_id").fetchall()
            else:
                rows = self._db.execute(
                    "SELECT * FROM sends WHERE study_hash=? ORDER BY send_id", (study_hash,)
                ).fetchall()
        return [dict(r) for r in rows]
