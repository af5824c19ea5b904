"""The node's link to the contour engine (issue 16): complete studies go through
:func:`medseg.contour.run_contour`, so they get the same discovery and series selection, the same
``OUT/studies/<key>/`` folders, the same manifest rows and the same failure semantics as a
``medseg contour`` batch.

The engine runs on Dask. Without ``scheduler`` in the node config the node starts one
:class:`distributed.LocalCluster` when it starts (sized by ``contour.cluster``, the same
settings as the engine's embedded cluster) and keeps it for its lifetime, so the workers import
torch once; each hand-over then costs the engine's model (re)load on the workers, not a new
cluster.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.contour import ContourConfig, run_contour
from medseg.errors import MedsegError

logger = logging.getLogger(__name__)

__all__ = ["Engine", "StudyOutcome"]


@dataclass(frozen=True)
class StudyOutcome:
    """What the engine made of one spooled study.

    Attributes
    ----------
    state
        ``done``, ``failed`` or ``skipped`` (the engine's states).
    reason
        Why it failed or was skipped ('' when done).
    keys
        The engine's study keys (``<study hash>-<series hash>``; normally one).
    done_keys
        The keys whose output folder is complete.
    """

    state: str
    reason: str
    keys: tuple[str, ...]
    done_keys: tuple[str, ...]


def _warm_worker() -> str:
    import medseg.inference  # noqa: F401 -- torch and the model code, once per worker

    return "ok"


class Engine:
    """Hands complete spooled studies to the contour engine, one batch at a time.

    Parameters
    ----------
    output_dir
        The batch folder (``studies/``, ``manifest.sqlite``).
    config
        The contour engine's config.
    scheduler
        Address/scheduler file of an existing Dask cluster, or ``None`` for the node's own.
    """

    def __init__(self, output_dir: Path, config: ContourConfig, scheduler: str | None) -> None:
        self.output_dir = output_dir
        self.config = config
        self.scheduler = scheduler
        self._cluster: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # ------------------------------------------------------------------------------ cluster
    def start(self) -> None:
        """Start (in a thread) the node's own cluster, warm its workers; no-op with a
        scheduler."""
        if self.scheduler is not None:
            self._ready.set()
            return
        threading.Thread(
            target=self._start_cluster, name="medseg-node-cluster", daemon=True
        ).start()

    def _start_cluster(self) -> None:
        from distributed import Client

        from medseg.contour.runner import start_local_cluster

        cl = self.config.cluster
        try:
            self._cluster = start_local_cluster(cl)
            with Client(self._cluster.scheduler_address) as client:
                client.run(_warm_worker)
            # with an address, the engine takes torch threads from the config (0 → 1): pin it
            self.config = self.config.with_overrides(torch_threads=cl.resolved_torch_threads())
            logger.info(
                "contour cluster ready: %d worker(s) at %s",
                cl.resolved_workers(),
                self._cluster.scheduler_address,
            )
        except BaseException as exc:  # reported to the contour thread by wait_ready
            self._error = exc
        finally:
            self._ready.set()

    def wait_ready(self, timeout_s: float | None = None) -> bool:
        """Wait until the cluster can take work (True), or the timeout passes (False).

        Raises
        ------
        MedsegError
            The cluster could not start.
        """
        ok = self._ready.wait(timeout_s)
        if self._error is not None:
            raise MedsegError(f"the contour cluster did not start: {self._error}")
        return ok

    @property
    def address(self) -> str | None:
        """The scheduler the engine runs on."""
        if self.scheduler is not None:
            return self.scheduler
        return None if self._cluster is None else str(self._cluster.scheduler_address)

    def close(self) -> None:
        """Stop the node's own cluster."""
        if self._cluster is not None:
            try:
                self._cluster.close(timeout=10)
            except Exception as exc:  # shutting down: log, never raise
                logger.warning("closing the contour cluster: %s", exc)
            self._cluster = None

    # ------------------------------------------------------------------------------- studies
    def contour(self, study_dirs: Sequence[Path]) -> dict[str, StudyOutcome]:
        """Run the engine on spooled study folders; outcome per folder name (study hash).

        A study the engine already finished for the same input and model is kept (not run
        again); a ``failed`` one is retried (the sender sent it again). A batch-level error
        (model missing, nothing readable) fails every study of the call with its message.
        """
        self.wait_ready()
        names = [d.name for d in study_dirs]
        try:
            result = run_contour(
                [str(d) for d in study_dirs],
                self.output_dir,
                self.config,
                scheduler=self.address,
                retry_failed=True,
            )
        except MedsegError as exc:
            logger.warning("contour engine refused %d study(ies): %s", len(names), exc)
            return {n: StudyOutcome("failed", str(exc), (), ()) for n in names}
        out: dict[str, StudyOutcome] = {}
        for name in names:
            rows = [r for r in result.studies if str(r["key"]).startswith(f"{name}-")]
            done = tuple(r["key"] for r in rows if r["state"] == "done")
            keys = tuple(r["key"] for r in rows)
            if done:
                out[name] = StudyOutcome("done", "", keys, done)
                continue
            bad = [r for r in rows if r["state"] in ("failed", "skipped")]
            if bad:
                state = "failed" if any(r["state"] == "failed" for r in bad) else "skipped"
                reason = "; ".join(str(r["reason"] or r["state"]) for r in bad)
                out[name] = StudyOutcome(state, reason, keys, ())
            else:
                out[name] = StudyOutcome(
                    "failed", "the contour engine found no study in the spooled files", keys, ()
                )
        return out
