"""What runs on a Dask worker: the model, loaded once per worker, and one study per task.

:class:`ModelPlugin` is a ``distributed`` worker plugin: its ``setup`` loads the model when the
worker starts (and again on a restarted worker), so tasks carry only paths (a
:class:`StudyTask`), never volumes or weights. :func:`run_study_task` is the task;
:func:`execute_study` does the work and is plain Python (tested without Dask).

Per worker, at most ``volumes_in_flight`` studies are loaded at once (a semaphore), and one
forward pass runs at a time (a lock around ``Predictor.predict``): with two Dask threads per
worker, the next study is read from disk and the previous one written while the network runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from distributed import WorkerPlugin

from medseg.contour.config import ReferenceConfig
from medseg.errors import MedsegError, ModelError

if TYPE_CHECKING:
    from medseg.inference import Predictor
    from medseg.volume import Volume

logger = logging.getLogger(__name__)

__all__ = [
    "EVENT_TOPIC",
    "PLUGIN_NAME",
    "ModelPlugin",
    "SerialPredictor",
    "StudyTask",
    "completed_output",
    "execute_study",
    "run_study_task",
    "study_timeline",
]

PLUGIN_NAME = "medseg-contour-model"
EVENT_TOPIC = "medseg-contour"


@dataclass(frozen=True)
class StudyTask:
    """Everything a worker needs for one study: paths and settings, no pixel data."""

    key: str
    kind: str
    files: tuple[str, ...]
    output_dir: str
    run_id: int
    fingerprint: str
    model_sha256: str
    series_instance_uid: str = ""
    references: tuple[str, ...] = ()
    formats: tuple[str, ...] = ("nifti",)
    allow_modality: bool = False
    dicom_fixes: Mapping[str, bool] = field(default_factory=dict)
    reference_config: ReferenceConfig = field(default_factory=ReferenceConfig)
    provenance: Mapping[str, Any] = field(default_factory=dict)


class SerialPredictor:
    """A :class:`~medseg.inference.Predictor` shared by the threads of one worker.

    ``predict`` runs under a lock (one forward pass at a time, using all of the worker's
    torch threads); ``last_timings``/``last_windows`` are kept per thread so that each
    study's provenance gets its own, and so is ``last_interval`` (wall-clock seconds when this
    thread's last prediction got and released the lock). ``calls`` counts completed forward
    passes.
    """

    def __init__(self, predictor: Predictor) -> None:
        self._predictor = predictor
        self._lock = threading.Lock()
        self._local = threading.local()
        self.calls = 0

    def predict(self, volume: Volume, **kwargs: Any) -> Any:
        """Predict under the worker's lock."""
        with self._lock:
            start = time.time()
            out = self._predictor.predict(volume, **kwargs)
            self._local.timings = dict(self._predictor.last_timings)
            self._local.windows = dict(self._predictor.last_windows)
            self._local.interval = (start, time.time())
            self.calls += 1
        return out

    @property
    def last_interval(self) -> tuple[float, float] | None:
        """Wall-clock start and end of this thread's last prediction (lock held), or ``None``."""
        return cast("tuple[float, float] | None", getattr(self._local, "interval", None))

    @property
    def last_timings(self) -> dict[str, float]:
        """Stage seconds of this thread's last prediction."""
        return cast(dict[str, float], getattr(self._local, "timings", {}))

    @property
    def last_windows(self) -> dict[str, int]:
        """Window counts of this thread's last prediction."""
        return cast(dict[str, int], getattr(self._local, "windows", {}))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._predictor, name)


class ModelPlugin(WorkerPlugin):
    """Distributed worker plugin: loads the model once per worker (re-run on restarted workers).

    Parameters
    ----------
    model, device, inference, torch_threads
        Passed to :meth:`medseg.inference.Predictor.from_checkpoint`.
    volumes_in_flight
        Most studies held in memory at once by this worker.
    """

    name = PLUGIN_NAME

    def __init__(
        self,
        model: str,
        device: str,
        inference: Mapping[str, Any],
        torch_threads: int,
        volumes_in_flight: int,
    ) -> None:
        self.model = model
        self.device = device
        self.inference = dict(inference)
        self.torch_threads = torch_threads
        self.volumes_in_flight = volumes_in_flight
        self.predictor: SerialPredictor | None = None
        self.slots: threading.BoundedSemaphore | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["predictor"] = state["slots"] = None  # never ship a loaded model
        return state

    def setup(self, worker: Any) -> None:
        """Load the model on ``worker`` (called by distributed when the plugin is registered)."""
        import torch

        from medseg.inference import InferenceConfig, Predictor, fix_mmap_threshold

        fix_mmap_threshold()
        torch.set_num_threads(self.torch_threads)
        t0 = time.perf_counter()
        predictor = Predictor.from_checkpoint(
            self.model,
            device=self.device,
            config=InferenceConfig(**self.inference),
            num_threads=self.torch_threads,
        )
        self.predictor = SerialPredictor(predictor)
        self.slots = threading.BoundedSemaphore(self.volumes_in_flight)
        logger.info(
            "worker %s: model %s loaded in %.1f s",
            worker.address,
            self.model,
            time.perf_counter() - t0,
        )

    def teardown(self, worker: Any) -> None:
        """Drop the model."""
        self.predictor = None


def completed_output(output_dir: str | os.PathLike[str], task: StudyTask) -> dict[str, Any] | None:
    """The ``segmentation.json`` of a complete output folder for the same input and model.

    ``None`` when the folder is absent, incomplete, or from another input fingerprint or model.
    """
    from medseg.study import OUTPUT_FILES, is_complete_output

    out = Path(output_dir)
    if not is_complete_output(out):
        return None
    try:
        data = json.loads((out / OUTPUT_FILES["json"]).read_text())
    except (OSError, ValueError):
        return None
    contour = data.get("contour") or {}
    model = data.get("model") or {}
    if contour.get("fingerprint") != task.fingerprint or model.get("sha256") != task.model_sha256:
        return None
    return cast(dict[str, Any], data)


def _load(task: StudyTask) -> Volume:
    """Load the study's image; a DICOM series from exactly its files (links in a temp folder)."""
    from medseg.io import DicomReadOptions, load_volume
    from medseg.io.dicom_series import load_dicom_series

    if task.kind != "dicom":
        return load_volume(task.files[0])
    options = DicomReadOptions(
        series_instance_uid=task.series_instance_uid,
        min_slices=2,
        **cast(dict[str, Any], dict(task.dicom_fixes)),
    )
    with tempfile.TemporaryDirectory(prefix="medseg-contour-") as tmp:
        links: dict[str, str] = {}
        for i, f in enumerate(task.files):
            link = os.path.join(tmp, f"{i:05d}.dcm")
            os.symlink(os.path.abspath(f), link)
            links[link] = f
        volume = load_dicom_series(tmp, options=options)
    src = volume.source
    if src is not None and src.files:
        src = dataclasses.replace(src, files=tuple(links.get(f, f) for f in src.files))
        volume = dataclasses.replace(volume, source=src)
    return volume


def _add_metrics(output_dir: Path, metrics: Mapping[str, Any]) -> None:
    from medseg.io.atomic import write_atomic
    from medseg.study import OUTPUT_FILES

    side = output_dir / OUTPUT_FILES["json"]
    data = json.loads(side.read_text())
    data["reference_metrics"] = dict(metrics)
    write_atomic(side, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


def execute_study(
    task: StudyTask,
    predictor: Predictor | SerialPredictor,
    *,
    slots: AbstractContextManager[Any] | None = None,
    worker: str = "",
) -> dict[str, Any]:
    """Segment one study into ``task.output_dir`` and score it; never raises for a bad study.

    Returns
    -------
    dict
        ``key``, ``state`` (``"done"`` or ``"failed"``), ``reason``, ``predicted`` (the model
        ran), ``reused`` (a complete folder for the same input and model was already there),
        ``timings`` (``load_s``, ``predict_s``, ``write_s``, ``total_s``), ``timeline``
        (:func:`study_timeline`), ``warnings``, ``metrics`` (or ``None``), ``worker``,
        ``model_sha256``.
    """
    from medseg.contour.references import score_references
    from medseg.study import StudyOptions, segment_study

    out = Path(task.output_dir)
    base: dict[str, Any] = {
        "key": task.key,
        "worker": worker,
        "model_sha256": task.model_sha256,
        "predicted": False,
        "reused": False,
        "timings": {},
        "timeline": {},
        "warnings": [],
        "metrics": None,
        "reason": "",
    }
    t0 = time.perf_counter()
    e_start = time.time()
    done = completed_output(out, task)
    if done is not None:
        return {
            **base,
            "state": "done",
            "reused": True,
            "reason": "output already complete",
            "metrics": done.get("reference_metrics"),
        }
    formats = task.formats if task.kind == "dicom" else ("nifti",)
    try:
        with slots if slots is not None else nullcontext():
            e_slot = time.time()
            volume = _load(task)
            t_load = time.perf_counter() - t0
            result = segment_study(
                volume,
                out,
                cast("Predictor", predictor),
                options=StudyOptions(
                    formats=formats, overwrite=out.exists(), allow_modality=task.allow_modality
                ),
                provenance={
                    "contour": {
                        **dict(task.provenance),
                        "key": task.key,
                        "fingerprint": task.fingerprint,
                        "worker": worker,
                    },
                },
            )
            metrics = score_references(
                result.labels, volume, task.references, task.reference_config, case=task.key
            )
            if metrics is not None:
                _add_metrics(out, metrics)
            e_scored = time.time()
    except FileExistsError:
        # another attempt (e.g. one orphaned by a killed driver) finished this study first
        if completed_output(out, task) is not None:
            return {
                **base,
                "state": "done",
                "reused": True,
                "predicted": True,
                "reason": "written meanwhile by another attempt",
            }
        return {**base, "state": "failed", "reason": f"output folder {out.name} is in the way"}
    except MedsegError as exc:
        logger.info("study %s failed: %s", task.key, exc)
        return {**base, "state": "failed", "reason": str(exc)}
    except Exception as exc:
        logger.exception("study %s: unexpected error", task.key)
        return {**base, "state": "failed", "reason": f"unexpected {type(exc).__name__}: {exc}"}
    timings = dict(result.timings)
    timings["load_s"] = round(t_load + float(timings.get("load_s", 0.0)), 3)
    timings["total_s"] = round(time.perf_counter() - t0, 3)
    if formats != task.formats:
        base["warnings"].append("DICOM outputs skipped: the input is not DICOM")
    forward = predictor.last_interval if isinstance(predictor, SerialPredictor) else None
    timeline = study_timeline(
        e_start, e_slot, result.timeline, forward, e_scored, network_s=timings.get("network_s")
    )
    return {
        **base,
        "state": "done",
        "predicted": True,
        "timings": timings,
        "timeline": timeline,
        "warnings": [*base["warnings"], *result.warnings],
        "metrics": metrics,
    }


def study_timeline(
    start: float,
    slot: float,
    stages: Mapping[str, tuple[float, float]],
    forward: tuple[float, float] | None,
    scored: float,
    *,
    network_s: float | None = None,
) -> dict[str, Any]:
    """Wall-clock stages of one study on a worker (``time.time()`` seconds), for the manifest.

    Keys: ``task`` (task start to end, including the wait for a memory slot), ``load``
    (slot acquired to prediction start: reading, geometry and modality checks), ``predict``
    (:func:`~medseg.study.segment_study`'s prediction stage, including the wait for the
    worker's forward-pass lock), ``forward`` (the lock held: preprocessing, network,
    postprocessing; ``network_s`` of it are forward passes), ``write`` (provenance, DICOM-SEG /
    RTSTRUCT encoding, NIfTI, atomic folder write) and ``score`` (reference metrics).
    """
    predict = stages.get("predict", (slot, slot))
    write = stages.get("write", (predict[1], predict[1]))
    out: dict[str, Any] = {
        "task": [start, scored],
        "load": [slot, predict[0]],
        "predict": list(predict),
        "forward": list(forward or predict),
        "write": list(write),
        "score": [write[1], scored],
    }
    if network_s is not None:
        out["network_s"] = float(network_s)
    return {k: [round(v, 4) for v in x] if isinstance(x, list) else x for k, x in out.items()}


def run_study_task(task: StudyTask) -> dict[str, Any]:
    """The Dask task: announce the attempt to the driver, then :func:`execute_study`."""
    from distributed import get_worker

    worker = get_worker()
    plugin = cast(ModelPlugin, worker.plugins[PLUGIN_NAME])
    worker.log_event(
        EVENT_TOPIC,
        {"event": "start", "key": task.key, "run_id": task.run_id, "worker": worker.address},
    )
    if plugin.predictor is None:
        raise ModelError(f"worker {worker.address}: the model plugin did not load the model.")
    return execute_study(task, plugin.predictor, slots=plugin.slots, worker=worker.address)
