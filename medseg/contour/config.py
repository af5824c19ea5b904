"""Configuration of a contouring batch: a frozen dataclass loaded from YAML (unknown keys refused).

Example (``pipelines/contour_hn_oar.yaml``)::

    model: hn_oar
    formats: [nifti, seg, rtstruct]
    inference: {overlap: 0.5, precision: auto}
    selection: {modalities: [CT], min_slices: 30, max_slice_spacing_mm: 5.0, orientation: axial}
    references: {name_map: {Parotid_L: LeftParotid, Parotid_R: RightParotid}}
    cluster: {workers: 0, threads_per_worker: 2, volumes_in_flight: 2}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from medseg.config import checked_mapping
from medseg.errors import ConfigError
from medseg.runtime import cpu_count

__all__ = [
    "TG263_NAME_MAP",
    "ClusterConfig",
    "ContourConfig",
    "ReferenceConfig",
    "SelectionRules",
    "load_contour_config",
]

#: Reference ROI names (TG-263 and common variants) → the shipped H&N model's label names.
#: Matching ignores case, spaces, ``_`` and ``-``; a name equal to a model label always matches.
TG263_NAME_MAP: dict[str, str] = {
    "Brainstem": "Brainstem",
    "SpinalCord": "SpinalCord",
    "Cord": "SpinalCord",
    "Parotid_L": "LeftParotid",
    "Parotid_R": "RightParotid",
    "Parotid_Lt": "LeftParotid",
    "Parotid_Rt": "RightParotid",
    "Esophagus": "Esophagus",
    "Esophagus_Upper": "Esophagus",
    "Larynx": "Larynx",
    "Bone_Mandible": "Mandible",
    "Mandible": "Mandible",
}

_PLANES = ("axial", "coronal", "sagittal")


def _tuple_of_str(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{what}: expected a list of strings, got {value!r}.")
    return tuple(value)


@dataclass(frozen=True)
class SelectionRules:
    """How the planning CT series of a study is chosen (headers only, no pixels read).

    A series is a candidate when its modality is in ``modalities``, it keeps at least
    ``min_slices`` instances after dropping ``exclude_image_types`` (scouts), all its slices
    are in the ``orientation`` plane, it has every value of ``require_image_type`` and its
    slice spacing is at most ``max_slice_spacing_mm``. Tie-break among candidates, in order:
    ImageType ORIGINAL before DERIVED, more slices, smaller slice spacing, larger matrix, then
    the series UID hash (so the choice never depends on file order). Every series not chosen
    gets its reason in the manifest.
    """

    modalities: tuple[str, ...] = ("CT",)
    min_slices: int = 30
    max_slice_spacing_mm: float = 5.0
    orientation: str | None = "axial"
    exclude_image_types: tuple[str, ...] = ("LOCALIZER",)
    require_image_type: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("modalities", "exclude_image_types", "require_image_type"):
            vals = _tuple_of_str(getattr(self, name), f"selection.{name}")
            object.__setattr__(self, name, tuple(v.upper() for v in vals))
        if not self.modalities:
            raise ConfigError("selection.modalities: give at least one modality (e.g. [CT]).")
        if int(self.min_slices) < 2:
            raise ConfigError(f"selection.min_slices must be ≥ 2; got {self.min_slices}.")
        if float(self.max_slice_spacing_mm) <= 0:
            raise ConfigError(
                f"selection.max_slice_spacing_mm must be > 0; got {self.max_slice_spacing_mm}."
            )
        if self.orientation is not None and self.orientation not in _PLANES:
            raise ConfigError(
                f"selection.orientation must be one of {_PLANES} or null; got {self.orientation!r}."
            )


@dataclass(frozen=True)
class ReferenceConfig:
    """Scoring against reference contours (an RTSTRUCT or SEG on the chosen CT).

    ``name_map`` maps reference ROI names to model label names (added to
    :data:`TG263_NAME_MAP` when ``use_tg263`` is true); ``tolerance_mm`` is the NSD tolerance.
    """

    enabled: bool = True
    name_map: Mapping[str, str] = field(default_factory=dict)
    use_tg263: bool = True
    tolerance_mm: float = 2.0

    def __post_init__(self) -> None:
        if not isinstance(self.name_map, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.name_map.items()
        ):
            raise ConfigError(
                f"references.name_map: expected a mapping of ROI name to label name, got "
                f"{self.name_map!r}."
            )
        if self.tolerance_mm <= 0:
            raise ConfigError(f"references.tolerance_mm must be > 0; got {self.tolerance_mm}.")

    def resolved_map(self) -> dict[str, str]:
        """The name map in use (TG-263 defaults overridden by ``name_map``)."""
        return {**(TG263_NAME_MAP if self.use_tg263 else {}), **dict(self.name_map)}


@dataclass(frozen=True)
class ClusterConfig:
    """The embedded Dask cluster (ignored with ``--scheduler``, except the failure budget).

    Parameters
    ----------
    workers
        Worker processes; ``0`` = one per 4 CPU cores (at least 1).
    threads_per_worker
        Dask threads per worker: with 2, one study loads or writes while another predicts.
    torch_threads
        Threads of the network's forward pass per worker; ``0`` = cores / workers.
    volumes_in_flight
        Most studies one worker holds in memory at once (bounds RAM; ≤ threads_per_worker
        makes sense).
    allowed_failures
        Worker deaths (SIGKILL, out of memory) one study may cause before it is ``failed``.
    memory_limit
        Per-worker memory limit of the embedded cluster (``"auto"``, ``"4GiB"``, or ``"0"`` for
        none); a worker past it is restarted and its study retried.
    """

    workers: int = 0
    threads_per_worker: int = 2
    torch_threads: int = 0
    volumes_in_flight: int = 2
    allowed_failures: int = 2
    memory_limit: str = "auto"

    def __post_init__(self) -> None:
        for name in ("workers", "torch_threads"):
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"cluster.{name} must be ≥ 0; got {getattr(self, name)}.")
        for name in ("threads_per_worker", "volumes_in_flight"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"cluster.{name} must be ≥ 1; got {getattr(self, name)}.")
        if int(self.allowed_failures) < 0:
            raise ConfigError(f"cluster.allowed_failures must be ≥ 0; got {self.allowed_failures}.")

    def resolved_workers(self, cpus: int | None = None) -> int:
        """Worker count: ``workers`` or one per 4 cores.

        Examples
        --------
        >>> ClusterConfig().resolved_workers(cpus=16), ClusterConfig(workers=3).resolved_workers(2)
        (4, 3)
        """
        n = cpus if cpus is not None else cpu_count()
        return self.workers or max(1, n // 4)

    def resolved_torch_threads(self, cpus: int | None = None) -> int:
        """Forward-pass threads per worker: ``torch_threads`` or the cores shared by workers."""
        n = cpus if cpus is not None else cpu_count()
        return self.torch_threads or max(1, n // self.resolved_workers(n))


@dataclass(frozen=True)
class ContourConfig:
    """Everything a contouring batch needs besides its inputs and output folder.

    Parameters
    ----------
    model
        Shipped model name or checkpoint path.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"`` (workers run the forward pass there).
    formats
        Outputs per study: ``nifti`` (always), ``seg``, ``rtstruct``.
    allow_modality
        Segment series that do not look like CT in HU (recorded in the provenance).
    inference
        Keys of :class:`medseg.inference.InferenceConfig` (``overlap``, ``tta``, ``precision``...).
    dicom
        Opt-in fixes of :class:`medseg.io.DicomReadOptions` (``correct_tilt``,
        ``resample_irregular``, ``drop_duplicates``); without them such series fail.
    selection, references, cluster
        See :class:`SelectionRules`, :class:`ReferenceConfig`, :class:`ClusterConfig`.
    """

    model: str = "hn_oar"
    device: str = "auto"
    formats: tuple[str, ...] = ("nifti", "seg", "rtstruct")
    allow_modality: bool = False
    inference: Mapping[str, Any] = field(default_factory=dict)
    dicom: Mapping[str, bool] = field(default_factory=dict)
    selection: SelectionRules = field(default_factory=SelectionRules)
    references: ReferenceConfig = field(default_factory=ReferenceConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def __post_init__(self) -> None:
        from medseg.inference import InferenceConfig
        from medseg.study import parse_formats

        object.__setattr__(self, "formats", parse_formats(self.formats))
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda; got {self.device!r}.")
        checked_mapping(InferenceConfig, self.inference, what="inference")
        self.inference_config()  # validates values
        allowed = {"correct_tilt", "resample_irregular", "drop_duplicates"}
        unknown = sorted(set(self.dicom) - allowed)
        if unknown:
            raise ConfigError(f"dicom: unknown keys {unknown}; known keys: {sorted(allowed)}.")

    def inference_config(self) -> Any:
        """The :class:`~medseg.inference.InferenceConfig` of the workers."""
        from medseg.inference import InferenceConfig

        try:
            return InferenceConfig(**dict(self.inference))
        except TypeError as exc:
            raise ConfigError(f"inference: {exc}") from exc

    def with_overrides(self, **changes: Any) -> ContourConfig:
        """A copy with top-level fields or ``cluster`` fields (``workers=``...) replaced."""
        import dataclasses

        cluster_keys = {f.name for f in fields(ClusterConfig)}
        cl = {k: v for k, v in changes.items() if k in cluster_keys and v is not None}
        top = {k: v for k, v in changes.items() if k not in cluster_keys and v is not None}
        out = dataclasses.replace(self, **top)
        if cl:
            out = dataclasses.replace(out, cluster=dataclasses.replace(out.cluster, **cl))
        return out

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly dict (written into the manifest's run row)."""
        import dataclasses

        data = dataclasses.asdict(self)
        data["references"]["name_map"] = dict(self.references.name_map)
        return data

    @classmethod
    def from_dict(cls, data: Any, *, what: str = "contour config") -> ContourConfig:
        """Build from a parsed YAML mapping; unknown keys anywhere raise ConfigError."""
        top = checked_mapping(cls, data if data is not None else {}, what=what)
        parts: dict[str, Any] = {}
        for key, sub in (
            ("selection", SelectionRules),
            ("references", ReferenceConfig),
            ("cluster", ClusterConfig),
        ):
            if key in top:
                parts[key] = sub(**checked_mapping(sub, top[key] or {}, what=f"{what}: {key}"))
        if "formats" in top:
            top["formats"] = _tuple_of_str(top["formats"], f"{what}: formats")
        for key in ("inference", "dicom"):
            if key in top and not isinstance(top[key] or {}, Mapping):
                raise ConfigError(f"{what}: {key} must be a mapping.")
        try:
            return cls(**{**top, **parts})
        except TypeError as exc:
            raise ConfigError(f"{what}: {exc}") from exc


def load_contour_config(path: str | os.PathLike[str] | None) -> ContourConfig:
    """Read a YAML contour config (``None`` → defaults).

    Raises
    ------
    ConfigError
        Unreadable file, invalid YAML, unknown keys or bad values (message names the file).
    """
    if path is None:
        return ContourConfig()
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise ConfigError(f"config {p}: cannot be read ({exc.strerror}).") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {p}: invalid YAML ({exc}).") from exc
    return ContourConfig.from_dict(data, what=f"config {p}")
