"""The driver of a contouring batch: discover, plan against the manifest, run on Dask, record.

:func:`run_contour` is what ``medseg contour`` calls. It

1. discovers the studies (:func:`medseg.contour.discovery.discover_studies`);
2. compares each with the manifest: a study ``done`` for the same input fingerprint and model
   hash is kept, a complete output folder for them is adopted (its report was lost when a driver
   died), a ``failed`` one is retried only with ``retry_failed``, everything else runs;
3. runs the rest on Dask -- an embedded :class:`distributed.LocalCluster` or an existing
   scheduler (address or scheduler file) -- one task per study carrying only paths; the model is
   loaded once per worker by :class:`medseg.contour.worker.ModelPlugin`;
4. records every attempt (start events from the workers; a second start of the same study in
   one run means its worker died) and every result in ``OUT/manifest.sqlite``. Only this process
   writes the manifest.

A worker that dies mid-study (SIGKILL, out of memory) makes the scheduler rerun the task
elsewhere, up to ``cluster.allowed_failures`` times; the output folder of a study is written
atomically, so it is complete or absent whatever is killed when.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.contour.config import ContourConfig
from medseg.contour.discovery import StudyPlan, discover_studies
from medseg.contour.manifest import MANIFEST_NAME, Manifest
from medseg.contour.worker import (
    EVENT_TOPIC,
    PLUGIN_NAME,
    ModelPlugin,
    StudyTask,
    completed_output,
    run_study_task,
)
from medseg.errors import ConfigError, MedsegError

logger = logging.getLogger(__name__)

__all__ = ["BatchResult", "model_sha256", "run_contour", "start_local_cluster"]

STUDIES_DIR = "studies"


@dataclass(frozen=True)
class BatchResult:
    """What a batch did (the manifest holds the details).

    Attributes
    ----------
    output_dir, manifest
        The batch folder and its ``manifest.sqlite``.
    counts
        Studies per state after this run (``done``, ``failed``, ``skipped``, ...).
    ran
        Keys of the studies run in this invocation (a worker started them).
    kept
        Keys already done before (same input and model) and not run again.
    wall_s
        Seconds of this invocation.
    plans
        The studies found (and selected) in the inputs, for the review report.
    """

    output_dir: Path
    manifest: Path
    counts: dict[str, int]
    ran: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    wall_s: float = 0.0
    studies: list[dict[str, Any]] = field(default_factory=list, repr=False)
    plans: tuple[StudyPlan, ...] = field(default=(), repr=False)

    @property
    def exit_code(self) -> int:
        """0 when no study is failed (skipped ones are fine), 1 otherwise."""
        return 1 if self.counts.get("failed", 0) else 0


def model_sha256(model: str) -> str:
    """SHA-256 of a checkpoint (shipped name or path), the manifest's model hash."""
    from medseg.models.checkpoint import resolve_checkpoint_path

    h = hashlib.sha256()
    with open(resolve_checkpoint_path(model), "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _task(plan: StudyPlan, out: Path, config: ContourConfig, sha: str, run_id: int) -> StudyTask:
    return StudyTask(
        key=plan.key,
        kind=plan.kind,
        files=plan.files,
        output_dir=os.fspath(out / STUDIES_DIR / plan.key),
        run_id=run_id,
        fingerprint=plan.fingerprint,
        model_sha256=sha,
        series_instance_uid=plan.series_instance_uid,
        references=plan.references,
        formats=config.formats,
        allow_modality=config.allow_modality,
        dicom_fixes=dict(config.dicom),
        reference_config=config.references,
        provenance={
            "selection_reason": plan.selection_reason,
            "series_not_chosen": dict(plan.rejected),
            "study": plan.study_hash,
            "series": plan.series_hash,
        },
    )


def _plan_runs(
    plans: Sequence[StudyPlan],
    *,
    manifest: Manifest,
    out: Path,
    config: ContourConfig,
    sha: str,
    run_id: int,
    retry_failed: bool,
) -> tuple[list[StudyTask], list[str]]:
    """Record skipped/kept/adopted studies; return the tasks to run and the kept keys."""
    tasks: list[StudyTask] = []
    kept: list[str] = []
    for plan in plans:
        common = {
            "kind": plan.kind,
            "study_hash": plan.study_hash,
            "series_hash": plan.series_hash,
            "selection_json": plan.to_json(),
            "fingerprint": plan.fingerprint,
        }
        if plan.skip_reason:
            manifest.set_study(
                plan.key, run_id=run_id, state="skipped", reason=plan.skip_reason, **common
            )
            continue
        row = manifest.get(plan.key)
        same = bool(row and row["fingerprint"] == plan.fingerprint and row["model_sha256"] == sha)
        task = _task(plan, out, config, sha, run_id)
        if same and row and row["state"] == "done" and completed_output(task.output_dir, task):
            kept.append(plan.key)
            continue
        adopted = completed_output(task.output_dir, task)
        if adopted is not None:
            manifest.set_study(
                plan.key,
                run_id=run_id,
                state="done",
                model_sha256=sha,
                reason="",
                metrics_json=adopted.get("reference_metrics"),
                **common,
            )
            manifest.finish_attempt(
                plan.key,
                run_id=run_id,
                state="reused",
                reason="output folder already complete for this input and model",
            )
            kept.append(plan.key)
            continue
        if same and row and row["state"] == "failed" and not retry_failed:
            kept.append(plan.key)
            continue
        manifest.set_study(
            plan.key, run_id=run_id, state="pending", model_sha256=sha, reason="", **common
        )
        tasks.append(task)
    return tasks, kept


def start_local_cluster(cluster_config: Any, *, dashboard: bool = False) -> Any:
    """The embedded :class:`distributed.LocalCluster` sized by ``ContourConfig.cluster``.

    Worker processes on 127.0.0.1 (non-daemonic, so a worker may start its own processes),
    ``allowed_failures`` retries of a task whose worker died, the configured memory limit.
    Used by ``medseg contour`` and kept warm by the DICOM node.
    """
    import dask
    from distributed import LocalCluster

    cl = cluster_config
    settings = {
        "distributed.scheduler.allowed-failures": cl.allowed_failures,
        "distributed.worker.daemon": False,
    }
    with dask.config.set(settings):
        return LocalCluster(
            n_workers=cl.resolved_workers(),
            threads_per_worker=cl.threads_per_worker,
            processes=True,
            memory_limit=None if cl.memory_limit == "0" else cl.memory_limit,
            dashboard_address=":0" if dashboard else None,
            host="127.0.0.1",
            silence_logs=logging.ERROR,
        )


@contextmanager
def _client(config: ContourConfig, scheduler: str | None) -> Iterator[Any]:
    from distributed import Client

    if scheduler:
        if Path(scheduler).is_file():
            client = Client(scheduler_file=scheduler, timeout="30s")
        else:
            client = Client(scheduler, timeout="30s")
        try:
            yield client
        finally:
            client.close()
        return
    cluster = start_local_cluster(config.cluster, dashboard=True)
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def _record_result(manifest: Manifest, run_id: int, key: str, result: dict[str, Any]) -> None:
    t = result.get("timings") or {}
    state = "done" if result["state"] == "done" else "failed"
    attempt_state = "reused" if result.get("reused") and not result.get("predicted") else state
    manifest.finish_attempt(
        key,
        run_id=run_id,
        state=attempt_state,
        reason=result.get("reason", ""),
        predicted=bool(result.get("predicted")),
        timings=t,
        worker=result.get("worker", ""),
        timeline=result.get("timeline") or None,
    )
    values: dict[str, Any] = {
        "reason": result.get("reason", "") if state == "failed" else "",
        "warnings_json": list(result.get("warnings") or []),
        "metrics_json": result.get("metrics"),
    }
    if t:
        values.update({k: t.get(k) for k in ("load_s", "predict_s", "write_s", "total_s")})
    if result.get("worker"):
        values["worker"] = result["worker"]
    manifest.set_study(key, run_id=run_id, state=state, **values)


def _run_on_dask(
    tasks: Sequence[StudyTask],
    *,
    manifest: Manifest,
    run_id: int,
    config: ContourConfig,
    scheduler: str | None,
    progress: Callable[[int, int], None] | None,
    stamps: dict[str, float],
) -> None:
    from distributed import wait
    from distributed.scheduler import KilledWorker

    cl = config.cluster
    events: queue.Queue[Any] = queue.Queue()
    with _client(config, scheduler) as client:
        stamps["cluster_ready"] = time.time()
        n_workers = len(client.scheduler_info().get("workers", {})) or cl.resolved_workers()
        plugin = ModelPlugin(
            config.model,
            config.device,
            config.inference,
            torch_threads=cl.resolved_torch_threads() if not scheduler else cl.torch_threads or 1,
            volumes_in_flight=cl.volumes_in_flight,
        )
        logger.info("loading the model on %d worker(s)", n_workers)
        try:
            client.register_plugin(plugin, name=PLUGIN_NAME)
        except MedsegError as exc:  # e.g. CudaUnavailableError on a worker without a GPU
            raise type(exc)(f"loading the model on the Dask workers failed: {exc}") from exc
        stamps["model_loaded"] = time.time()
        client.subscribe_topic(EVENT_TOPIC, events.put)
        futures = {
            client.submit(run_study_task, t, key=f"contour-{t.key}-r{run_id}", pure=False): t
            for t in tasks
        }
        pending = set(futures)
        finished: set[str] = set()
        n_done = 0
        if progress:
            progress(0, len(tasks))
        while pending:
            try:
                done, pending = wait(pending, timeout=0.5, return_when="FIRST_COMPLETED")
            except TimeoutError:
                done = set()
            while not events.empty():
                _, msg = events.get()
                if msg.get("run_id") == run_id and msg.get("key") not in finished:
                    manifest.start_attempt(msg["key"], run_id=run_id, worker=msg.get("worker", ""))
            for fut in done:
                task = futures[fut]
                finished.add(task.key)
                try:
                    result = fut.result()
                except KilledWorker:
                    result = {
                        "state": "failed",
                        "reason": f"the worker died {cl.allowed_failures + 1} time(s) while "
                        "running this study (killed, or out of memory: lower "
                        "cluster.volumes_in_flight or raise cluster.memory_limit)",
                    }
                except Exception as exc:
                    result = {"state": "failed", "reason": f"{type(exc).__name__}: {exc}"}
                _record_result(manifest, run_id, task.key, result)
                n_done += 1
                if progress:
                    progress(n_done, len(tasks))
        stamps["tasks_done"] = time.time()
        client.unsubscribe_topic(EVENT_TOPIC)
    stamps["cluster_closed"] = time.time()


def run_contour(
    inputs: Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    config: ContourConfig | None = None,
    *,
    scheduler: str | None = None,
    retry_failed: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> BatchResult:
    """Contour every study under ``inputs`` into ``output_dir`` (resumable; see the module doc).

    Parameters
    ----------
    inputs
        DICOM trees, NIfTI files, OpenKBP folders, CSV lists of inputs.
    output_dir
        Batch folder: ``studies/<key>/`` per study and ``manifest.sqlite``.
    config
        Model, formats, selection rules, references, cluster (:class:`ContourConfig`).
    scheduler
        ``tcp://host:port`` or a scheduler file of a running Dask cluster; ``None`` starts an
        embedded LocalCluster (only when there is work to do).
    retry_failed
        Run again studies that failed before with the same input and model.
    progress
        ``progress(done, total)`` after each finished study of this run.

    Returns
    -------
    BatchResult

    Raises
    ------
    InputError, ConfigError
        No input found, unreadable config, model missing, output folder unusable.
    CudaUnavailableError
        ``device: cuda`` on the embedded cluster of a machine without a CUDA GPU (checked before
        discovery; on an external cluster each worker checks when it loads the model, before
        any study is submitted).
    """
    t0 = time.perf_counter()
    stamps: dict[str, float] = {"entered": time.time()}  # the run's timeline (manifest)
    config = config or ContourConfig()
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {out} is a file; give a folder for the batch (-o).")
    if scheduler is None:  # the embedded workers run on this machine: fail before any work
        from medseg.runtime import select_device

        select_device(config.device)
    from medseg.inference.predictor import check_inference_for_checkpoint

    check_inference_for_checkpoint(config.model, config.inference_config())
    plans = discover_studies(inputs, config.selection, exclude=[out])
    stamps["discovered"] = time.time()
    sha = model_sha256(config.model)
    stamps["hashed"] = time.time()
    (out / STUDIES_DIR).mkdir(parents=True, exist_ok=True)
    with Manifest(out / MANIFEST_NAME) as manifest:
        run_id = manifest.begin_run(model_sha256=sha, config=config.to_json(), n_studies=len(plans))
        outcome = "interrupted"
        try:
            tasks, kept = _plan_runs(
                plans,
                manifest=manifest,
                out=out,
                config=config,
                sha=sha,
                run_id=run_id,
                retry_failed=retry_failed,
            )
            stamps["planned"] = time.time()
            logger.info(
                "%d studies: %d to run, %d kept from earlier runs, %d skipped",
                len(plans),
                len(tasks),
                len(kept),
                sum(1 for p in plans if p.skip_reason),
            )
            if tasks:
                _run_on_dask(
                    tasks,
                    manifest=manifest,
                    run_id=run_id,
                    config=config,
                    scheduler=scheduler,
                    progress=progress,
                    stamps=stamps,
                )
            _clean_leftovers(out, plans)
            counts = manifest.counts()
            outcome = "some failed" if counts.get("failed") else "done"
        finally:
            stamps["finished"] = time.time()
            manifest.finish_run(run_id, outcome, timeline=stamps)
        studies = manifest.studies()
        keys = {p.key for p in plans}
        counts = dict.fromkeys(manifest.counts(), 0)
        for row in studies:
            if row["key"] in keys:
                counts[row["state"]] += 1
    return BatchResult(
        output_dir=out,
        manifest=out / MANIFEST_NAME,
        counts=counts,
        ran=tuple(t.key for t in tasks),
        kept=tuple(kept),
        wall_s=round(time.perf_counter() - t0, 3),
        studies=[r for r in studies if r["key"] in keys],
        plans=tuple(plans),
    )


def _clean_leftovers(out: Path, plans: Sequence[StudyPlan]) -> None:
    """Remove hidden partial folders left by workers killed while writing."""
    from medseg.io.atomic import clean_stale_folders

    for plan in plans:
        clean_stale_folders(out / STUDIES_DIR / plan.key)
