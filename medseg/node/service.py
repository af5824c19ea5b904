"""The DICOM node as one service: receive, wait for quiet, contour, send back -- and lose nothing.

:class:`NodeService` runs three things in one process:

- the Storage SCP (:mod:`medseg.node.scp`), which spools every instance durably before it
  answers success;
- the contour loop: every study whose last instance is ``quiet_time_s`` old (over any number of
  associations) is handed to the contour engine (:class:`medseg.node.engine.Engine`); its
  results are queued as ``sends`` rows in the same transaction that closes the study;
- the send loop: pending sends are C-STOREd to their destination, retried with exponential
  backoff (:class:`medseg.node.config.RetryPolicy`) while it is down.

Restart safety: every step's state is on disk (spool files, ``node_studies`` and ``sends`` in
``manifest.sqlite``, the engine's atomic study folders). At start the node removes partial spool
files, hands studies left ``contouring`` to the engine again (a complete output folder is
adopted by the engine, not recomputed) and resends every pending result. So a kill -9 at any
moment loses no instance, contours each study into one output folder, and sends every result at
least once.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.errors import MedsegError
from medseg.node.config import NodeConfig, parse_address
from medseg.node.engine import Engine, StudyOutcome
from medseg.node.network import DicomNetworkError, send_files
from medseg.node.scp import build_scp
from medseg.node.spool import Spool
from medseg.node.state import NodeState, PendingSend, parse_time, utc_now

logger = logging.getLogger(__name__)

__all__ = ["NodeService", "NodeSummary", "run_node"]

#: How often the loops look for work (seconds).
POLL_S = 0.2


@dataclass(frozen=True)
class NodeSummary:
    """What a node did while it ran (for the CLI's last line)."""

    studies: dict[str, int]
    sends: dict[str, int]


class NodeService:
    """A running DICOM node (see the module docstring).

    Parameters
    ----------
    config
        The node config (:func:`medseg.node.config.load_node_config`).
    """

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.batch_dir = config.batch_dir
        self.stopping = threading.Event()
        self._work = threading.Event()  # wakes the send loop
        self._threads: list[threading.Thread] = []
        self._server: Any = None
        self.spool = Spool(config.spool_dir)
        self.state = NodeState(self.batch_dir / "manifest.sqlite")
        self.engine = Engine(self.batch_dir, config.contour, config.scheduler)

    # ----------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Recover what a previous run left, then listen and start the loops."""
        self.spool.clean_incoming()
        adopted = self.state.adopt_spooled(self.spool.studies())
        resumed = self.state.resume()
        pending = sum(1 for s in self.state.sends() if s["state"] == "pending")
        if adopted or resumed or pending:
            logger.info(
                "recovered: %d study(ies) found in the spool, %d to contour again, %d send(s) "
                "pending",
                len(adopted),
                len(resumed),
                pending,
            )
        self.engine.start()
        ae, handlers = build_scp(self.config, self.spool, self.state)
        self._server = ae.start_server(
            (self.config.host, self.config.port), block=False, evt_handlers=handlers
        )
        for name, target in (("contour", self._contour_loop), ("send", self._send_loop)):
            t = threading.Thread(target=target, name=f"medseg-node-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        logger.info(
            "node %s listening on %s:%d; outputs in %s",
            self.config.ae_title,
            self.config.host,
            self.config.port,
            self.config.output_dir,
        )

    def stop(self) -> NodeSummary:
        """Stop listening and the loops (work in progress resumes at the next start)."""
        self.stopping.set()
        self._work.set()
        if self._server is not None:
            self._server.shutdown()
        for t in self._threads:
            t.join(timeout=5)
        self.engine.close()
        summary = self.summary()
        self.state.close()
        return summary

    def summary(self) -> NodeSummary:
        """Studies per node state and sends per state."""
        studies: dict[str, int] = defaultdict(int)
        for row in self.state.studies():
            studies[str(row["state"])] += 1
        sends: dict[str, int] = defaultdict(int)
        for row in self.state.sends():
            sends[str(row["state"])] += 1
        return NodeSummary(dict(studies), dict(sends))

    # -------------------------------------------------------------------------------- contour
    def _contour_loop(self) -> None:
        while not self.stopping.wait(POLL_S):
            try:
                self._contour_ready()
            except Exception:  # keep the node alive; the study stays queued for a retry
                logger.exception("contour loop: unexpected error (retried in 10 s)")
                self.stopping.wait(10.0)

    def _contour_ready(self) -> None:
        ready = self.state.ready_studies(self.config.quiet_time_s)
        if not ready:
            return
        by_hash = {str(r["study_hash"]): r for r in ready}
        received = self.state.start_contouring(list(by_hash))
        with_files = [h for h in by_hash if self.spool.count(h) > 0]
        t0 = time.perf_counter()
        logger.info("contouring %d complete study(ies): %s", len(by_hash), ", ".join(by_hash))
        outcomes: dict[str, StudyOutcome] = {}
        if with_files:
            try:
                outcomes = self.engine.contour([self.spool.study_dir(h) for h in with_files])
            except MedsegError as exc:
                outcomes = {h: StudyOutcome("failed", str(exc), (), ()) for h in with_files}
            except Exception as exc:  # the cluster, not the studies: try them again later
                if not self.stopping.is_set():
                    self.state.requeue(list(by_hash), f"hand-over failed ({exc}); retried")
                raise
        for h, row in by_hash.items():
            outcome = outcomes.get(h) or StudyOutcome(
                "skipped", "no instance of this study is in the spool", (), ()
            )
            sends = self._sends_for(h, row, outcome)
            finished = self.state.finish_contouring(
                h,
                received=received[h],
                state=outcome.state,
                reason=outcome.reason,
                keys=outcome.keys,
                sends=sends,
            )
            logger.info(
                "study %s: %s%s in %.1f s; %d result(s) queued%s",
                h,
                outcome.state,
                f" ({outcome.reason})" if outcome.reason else "",
                time.perf_counter() - t0,
                len(sends),
                "" if finished else "; more instances arrived meanwhile, contoured again",
            )
        self._work.set()

    def _sends_for(
        self, study_hash: str, row: dict[str, Any], outcome: StudyOutcome
    ) -> list[dict[str, str]]:
        from pydicom import dcmread

        from medseg.study import OUTPUT_FILES

        caller = None
        if row.get("caller_ae"):
            caller = self.config.caller(str(row["caller_ae"]), str(row["caller_host"] or ""))
        destinations = self.config.destinations_for(caller)
        if outcome.done_keys and not destinations:
            logger.warning(
                "study %s: no destination for its results (caller %r is not configured with a "
                "port and no destinations are set)",
                study_hash,
                row.get("caller_ae"),
            )
        sends = []
        for key in outcome.done_keys:
            for name in self.config.send:
                rel = Path("studies") / key / OUTPUT_FILES[name]
                path = self.batch_dir / rel
                if not path.is_file():
                    continue
                uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
                for dest in destinations:
                    sends.append(
                        {
                            "key": key,
                            "output": name,
                            "path": rel.as_posix(),
                            "sop_instance_uid": uid,
                            "destination": str(dest),
                        }
                    )
        return sends

    # ----------------------------------------------------------------------------------- send
    def _send_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self._send_due()
            except Exception:  # keep the node alive; sends stay pending
                logger.exception("send loop: unexpected error (retried in 10 s)")
                self.stopping.wait(10.0)
            nxt = self.state.next_send_at()
            wait = 1.0 if nxt is None else max(0.05, min(1.0, parse_time(nxt) - time.time()))
            self._work.wait(wait)
            self._work.clear()

    def _send_due(self) -> None:
        due = self.state.due_sends(self.batch_dir)
        by_dest: dict[str, list[PendingSend]] = defaultdict(list)
        for s in due:
            by_dest[s.destination].append(s)
        for dest_text, items in by_dest.items():
            if self.stopping.is_set():
                return
            dest = parse_address(dest_text)
            for s in items:
                if not s.path.is_file():
                    self._failed_attempt(s, None, f"result file {s.path} is gone", final=True)
            present = [s for s in items if s.path.is_file()]
            if not present:
                continue
            try:
                outcomes = send_files(
                    [s.path for s in present], dest, calling_ae=self.config.ae_title
                )
            except DicomNetworkError as exc:
                for s in present:
                    self._failed_attempt(s, None, str(exc))
                continue
            for s, o in zip(present, outcomes, strict=True):
                if o.ok:
                    self.state.record_send(
                        s.send_id, ok=True, status=o.status, error="", retry_in_s=None
                    )
                    logger.info("sent %s to %s", s.path.relative_to(self.batch_dir), dest)
                else:
                    self._failed_attempt(s, o.status, o.error)

    def _failed_attempt(
        self, s: PendingSend, status: int | None, error: str, *, final: bool = False
    ) -> None:
        policy = self.config.retry
        first = parse_time(s.first_try_at) if s.first_try_at else time.time()
        give_up = final or time.time() - first >= policy.give_up_after_s
        retry_in = None if give_up else policy.delay_s(s.attempts + 1)
        self.state.record_send(s.send_id, ok=False, status=status, error=error, retry_in_s=retry_in)
        if give_up:
            logger.error("gave up sending %s to %s: %s", s.path.name, s.destination, error)
        else:
            logger.warning(
                "send of %s to %s failed (attempt %d: %s); retry in %.0f s",
                s.path.name,
                s.destination,
                s.attempts + 1,
                error,
                retry_in,
            )


def run_node(config: NodeConfig, *, stop: threading.Event | None = None) -> NodeSummary:
    """Run the node until SIGTERM/SIGINT (or ``stop`` is set); returns its summary.

    Signal handlers are installed only when called from the main thread.
    """
    service = NodeService(config)
    done = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: done.set())
    service.start()
    try:
        while not done.wait(0.5):
            pass
    finally:
        logger.info("stopping at %s", utc_now())
        summary = service.stop()
    return summary
