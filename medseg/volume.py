"""Volumes on a physical grid: :class:`Volume`, :class:`LabelVolume` and :class:`LabelMap`.

The geometry rule of medseg (see CONVENTIONS.md):

* ``Volume.array`` has axes ``(slice, row, column)``.
* ``Volume.affine`` is a 4×4 matrix mapping the voxel index ``(k, r, c, 1)`` (slice, row, column)
  to patient coordinates in **LPS millimetres** (DICOM / highdicom convention). Column ``c`` moves
  along the DICOM row direction cosine, row ``r`` along the column direction cosine and ``k``
  along the slice normal, so for a DICOM series
  ``affine[:3, 3] == ImagePositionPatient`` of the first slice.

RAS (nibabel, MONAI) and SimpleITK conventions are converted only in :mod:`medseg.io` and in the
converter functions at the bottom of this module.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from medseg.errors import GeometryError, InputError

if TYPE_CHECKING:  # heavy optional imports only for typing
    import nibabel as nib
    import SimpleITK as sitk
    from monai.data import MetaTensor

logger = logging.getLogger(__name__)

__all__ = [
    "DicomSource",
    "LabelEntry",
    "LabelMap",
    "LabelVolume",
    "Volume",
    "affine_from_geometry",
    "from_metatensor",
    "from_nibabel",
    "from_sitk",
    "orientation_code",
    "to_metatensor",
    "to_nibabel",
    "to_sitk",
]

#: LPS ↔ RAS: negate the first two world axes.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class DicomSource:
    """References to the DICOM series a Volume was read from (needed for DICOM-SEG/RTSTRUCT).

    Attributes
    ----------
    study_instance_uid, series_instance_uid, frame_of_reference_uid
        UIDs of the source series.
    sop_class_uid
        SOP Class UID of the image instances.
    sop_instance_uids
        One per slice, in the Volume's slice order (index ``k``).
    files
        Paths of the instance files in slice order (for copying patient/study attributes).
    """

    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    sop_class_uid: str
    sop_instance_uids: tuple[str, ...]
    files: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class Volume:
    """An image on a physical grid.

    Parameters
    ----------
    array
        Voxel values, shape ``(slices, rows, columns)``. CT in Hounsfield units.
    affine
        4×4 float64 matrix mapping ``(k, r, c, 1)`` to LPS millimetres.
    modality
        DICOM modality (``"CT"``, ``"MR"``, ``"SEG"``, ``"OT"`` when unknown).
    source
        DICOM references when the volume came from a DICOM series, else ``None``.
    provenance
        Human-readable record of every opt-in fix applied while loading (e.g. resampling a gantry
        tilt), so that outputs can state what was done.

    Examples
    --------
    >>> import numpy as np
    >>> v = Volume(np.zeros((2, 3, 4), np.int16), affine_from_geometry((2.5, 0.5, 0.5)))
    >>> v.spacing_mm
    (2.5, 0.5, 0.5)
    >>> v.orientation
    'SPL'
    """

    array: npt.NDArray[Any]
    affine: npt.NDArray[np.float64]
    modality: str = "OT"
    source: DicomSource | None = None
    provenance: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        affine = np.asarray(self.affine, dtype=np.float64)
        if array.ndim != 3:
            raise InputError(
                f"a Volume needs a 3D array (slice, row, column); got shape {array.shape}. "
                "For a 2D image use medseg.photo; for 4D data select one 3D frame first."
            )
        if 0 in array.shape:
            raise InputError(f"a Volume cannot be empty; got shape {array.shape}.")
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise GeometryError(f"affine must be a finite 4×4 matrix; got {affine!r}.")
        if not np.allclose(affine[3], [0, 0, 0, 1]):
            raise GeometryError(f"affine's last row must be [0, 0, 0, 1]; got {affine[3]}.")
        if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise GeometryError("affine is singular (zero spacing or collinear axes).")
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "affine", affine)

    # --- geometry -------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(slices, rows, columns)``."""
        s = self.array.shape
        return (int(s[0]), int(s[1]), int(s[2]))

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel spacing in mm along ``(slice, row, column)``."""
        n = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(n[0]), float(n[1]), float(n[2]))

    @property
    def direction(self) -> npt.NDArray[np.float64]:
        """3×3 matrix whose columns are the unit LPS directions of the slice, row, column axes."""
        return self.affine[:3, :3] / np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def origin_mm(self) -> tuple[float, float, float]:
        """LPS position of voxel ``(0, 0, 0)``'s centre in mm."""
        o = self.affine[:3, 3]
        return (float(o[0]), float(o[1]), float(o[2]))

    @property
    def orientation(self) -> str:
        """Three-letter code of the LPS direction each array axis points to (e.g. ``"SPL"``)."""
        return orientation_code(self.affine)

    def world_coordinates(self, indices: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Map ``(N, 3)`` voxel indices ``(k, r, c)`` to ``(N, 3)`` LPS mm coordinates."""
        idx = np.atleast_2d(np.asarray(indices, dtype=np.float64))
        return idx @ self.affine[:3, :3].T + self.affine[:3, 3]

    def voxel_indices(self, points_mm: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Map ``(N, 3)`` LPS mm points to continuous voxel indices ``(k, r, c)``."""
        pts = np.atleast_2d(np.asarray(points_mm, dtype=np.float64))
        inv = np.linalg.inv(self.affine)
        return pts @ inv[:3, :3].T + inv[:3, 3]

    def same_grid(self, other: Volume, *, tolerance_mm: float = 1e-3) -> bool:
        """True when ``other`` has the same shape and an affine equal within ``tolerance_mm``.

        The tolerance applies to the world position of every corner voxel, so a tiny direction
        difference on a big grid is judged by the displacement it causes.
        """
        if self.shape != other.shape:
            return False
        corners = np.array(np.meshgrid(*[[0, n - 1] for n in self.shape], indexing="ij"))
        corners = corners.reshape(3, -1).T
        diff = self.world_coordinates(corners) - other.world_coordinates(corners)
        return bool(np.max(np.abs(diff)) <= tolerance_mm)

    def with_array(self, array: npt.NDArray[Any], **changes: Any) -> Volume:
        """Return a copy with a new array of the same shape (and optional other field changes)."""
        if tuple(array.shape) != self.shape:
            raise GeometryError(
                f"with_array keeps the grid: expected shape {self.shape}, got {array.shape}."
            )
        return dataclasses.replace(self, array=array, **changes)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(shape={self.shape}, spacing_mm="
            f"{tuple(round(s, 4) for s in self.spacing_mm)}, orientation={self.orientation!r}, "
            f"modality={self.modality!r}, dtype={self.array.dtype})"
        )


# ----------------------------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelEntry:
    """One label: integer id, name, display colour and optional SNOMED-CT codes.

    ``snomed_type`` and ``snomed_category`` are ``(code value, meaning)`` pairs in the SNOMED-CT
    scheme (``SCT``); ``snomed_laterality`` is an optional modifier pair (left/right).
    """

    id: int
    name: str
    color: tuple[int, int, int] = (255, 0, 0)
    snomed_type: tuple[str, str] | None = None
    snomed_category: tuple[str, str] = ("123037004", "Anatomical Structure")
    snomed_laterality: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.id <= 65535:
            raise InputError(f"label id must be in 1..65535; got {self.id} for {self.name!r}.")
        if not self.name.strip():
            raise InputError(f"label {self.id} needs a non-empty name.")
        if len(self.color) != 3 or any(not 0 <= int(v) <= 255 for v in self.color):
            raise InputError(
                f"label {self.name!r}: colour must be 3 values 0..255, got {self.color}"
            )


# SNOMED-CT codes (SCT) for organs medseg knows by name. Only codes we are sure of are listed;
# anything else gets no type code and DICOM export falls back to a generic "Tissue" code.
_LEFT = ("7771000", "Left")
_RIGHT = ("24028007", "Right")
_KNOWN_ORGANS: dict[str, tuple[tuple[str, str], tuple[str, str] | None, tuple[int, int, int]]] = {
    "brainstem": (("15926001", "Brainstem"), None, (0, 160, 255)),
    "spinalcord": (("2748008", "Spinal cord"), None, (255, 255, 0)),
    "spinal_cord": (("2748008", "Spinal cord"), None, (255, 255, 0)),
    "leftparotid": (("45289007", "Parotid gland"), _LEFT, (0, 200, 0)),
    "rightparotid": (("45289007", "Parotid gland"), _RIGHT, (200, 0, 200)),
    "parotid-lt": (("45289007", "Parotid gland"), _LEFT, (0, 200, 0)),
    "parotid-rt": (("45289007", "Parotid gland"), _RIGHT, (200, 0, 200)),
    "esophagus": (("32849002", "Esophagus"), None, (255, 128, 0)),
    "larynx": (("4596009", "Larynx"), None, (0, 255, 200)),
    "mandible": (("91609006", "Mandible"), None, (230, 230, 230)),
    "brain": (("12738006", "Brain"), None, (250, 200, 180)),
    "heart": (("80891009", "Heart"), None, (200, 40, 40)),
    "liver": (("10200004", "Liver"), None, (160, 80, 40)),
    "spleen": (("78961009", "Spleen"), None, (150, 50, 150)),
}


def _default_color(label_id: int) -> tuple[int, int, int]:
    """A stable, well-spread colour for ``label_id`` (golden-angle hue walk)."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((label_id * 0.618033988749895) % 1.0, 0.75, 0.95)
    return (int(r * 255), int(g * 255), int(b * 255))


@dataclass(frozen=True)
class LabelMap:
    """Mapping from label id to :class:`LabelEntry`; ids are unique, names are unique.

    Examples
    --------
    >>> lm = LabelMap.from_names(["Brainstem", "Mandible"])
    >>> lm.id_of("mandible"), lm[1].snomed_type
    (2, ('15926001', 'Brainstem'))
    """

    entries: tuple[LabelEntry, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        ids = [e.id for e in self.entries]
        names = [e.name.lower() for e in self.entries]
        if len(set(ids)) != len(ids):
            raise InputError(f"duplicate label ids in LabelMap: {sorted(ids)}")
        if len(set(names)) != len(names):
            raise InputError(f"duplicate label names in LabelMap: {[e.name for e in self.entries]}")
        object.__setattr__(self, "entries", tuple(sorted(self.entries, key=lambda e: e.id)))

    @classmethod
    def from_names(cls, names: Sequence[str], *, start: int = 1) -> LabelMap:
        """Build a map numbering ``names`` from ``start``, with known SNOMED codes and colours."""
        entries = []
        for i, name in enumerate(names, start=start):
            known = _KNOWN_ORGANS.get(name.lower().replace(" ", ""))
            if known is not None:
                type_code, laterality, color = known
                entries.append(LabelEntry(i, name, color, type_code, snomed_laterality=laterality))
            else:
                entries.append(LabelEntry(i, name, _default_color(i)))
        return cls(tuple(entries))

    @classmethod
    def from_dict(cls, mapping: Mapping[int, str]) -> LabelMap:
        """Build from ``{id: name}`` (known organs get their codes and colours)."""
        entries = []
        for i, name in sorted(mapping.items()):
            entry = cls.from_names([name], start=int(i)).entries[0]
            entries.append(entry)
        return cls(tuple(entries))

    def to_json(self) -> list[dict[str, Any]]:
        """JSON-friendly list of entries."""
        return [dataclasses.asdict(e) for e in self.entries]

    @classmethod
    def from_json(cls, data: Iterable[Mapping[str, Any]]) -> LabelMap:
        """Inverse of :meth:`to_json`."""
        entries = []
        for d in data:
            kw = dict(d)
            for key in ("color", "snomed_type", "snomed_category", "snomed_laterality"):
                if kw.get(key) is not None:
                    kw[key] = tuple(kw[key])
            entries.append(LabelEntry(**kw))
        return cls(tuple(entries))

    @property
    def ids(self) -> tuple[int, ...]:
        """Label ids in ascending order."""
        return tuple(e.id for e in self.entries)

    @property
    def names(self) -> tuple[str, ...]:
        """Label names in id order."""
        return tuple(e.name for e in self.entries)

    def id_of(self, name: str) -> int:
        """Id of the label called ``name`` (case-insensitive)."""
        for e in self.entries:
            if e.name.lower() == name.lower():
                return e.id
        raise InputError(f"no label named {name!r}; known labels: {list(self.names)}")

    def __getitem__(self, label_id: int) -> LabelEntry:
        for e in self.entries:
            if e.id == label_id:
                return e
        raise KeyError(label_id)

    def __iter__(self) -> Iterator[LabelEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


@dataclass(frozen=True, eq=False)
class LabelVolume:
    """Integer labels on a grid, with names.

    Parameters
    ----------
    volume
        The grid and the label array (integer dtype, 0 = background).
    label_map
        Names, colours and codes of the ids that may occur.
    warnings
        Messages about the labels a user should see (e.g. laterality checks).
    """

    volume: Volume
    label_map: LabelMap
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        arr = self.volume.array
        if not np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.bool_:
            raise InputError(
                f"label arrays must be integer; got {arr.dtype}. Round or cast the array first."
            )
        present = np.unique(arr)
        unknown = sorted(set(present.tolist()) - {0} - set(self.label_map.ids))
        if unknown:
            raise InputError(
                f"label values {unknown[:10]} occur in the array but have no name in the LabelMap "
                f"(known ids {list(self.label_map.ids)}). Add them to the LabelMap."
            )

    @property
    def array(self) -> npt.NDArray[Any]:
        """The label array, axes (slice, row, column)."""
        return self.volume.array

    @property
    def affine(self) -> npt.NDArray[np.float64]:
        """Index → LPS mm affine."""
        return self.volume.affine

    def mask(self, name_or_id: str | int) -> npt.NDArray[np.bool_]:
        """Boolean mask of one label, by name or id."""
        label_id = name_or_id if isinstance(name_or_id, int) else self.label_map.id_of(name_or_id)
        return np.asarray(self.volume.array == label_id)

    def __repr__(self) -> str:
        return f"LabelVolume({self.volume!r}, labels={list(self.label_map.names)})"


# ----------------------------------------------------------------------------------------------
# Geometry helpers
# ----------------------------------------------------------------------------------------------
def affine_from_geometry(
    spacing_mm: Sequence[float],
    *,
    origin_mm: Sequence[float] = (0.0, 0.0, 0.0),
    direction: npt.ArrayLike | None = None,
) -> npt.NDArray[np.float64]:
    """Build an index→LPS affine from spacing ``(slice, row, column)``, origin and direction.

    ``direction`` is a 3×3 matrix whose columns are the LPS unit vectors of the slice, row and
    column axes. The default is a standard axial grid: columns go to patient left (+x), rows to
    posterior (+y), slices to superior (+z).

    Examples
    --------
    >>> affine_from_geometry((3.0, 1.0, 0.5))[:3, :3].diagonal().tolist()
    [0.0, 1.0, 0.0]
    """
    d = (
        np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
        if direction is None
        else np.asarray(direction, dtype=np.float64)
    )
    affine = np.eye(4)
    affine[:3, :3] = d * np.asarray(spacing_mm, dtype=np.float64)[None, :]
    affine[:3, 3] = np.asarray(origin_mm, dtype=np.float64)
    return affine


def orientation_code(affine: npt.ArrayLike) -> str:
    """Letters of the LPS direction each index axis points toward (dominant component).

    Examples
    --------
    >>> orientation_code(affine_from_geometry((1, 1, 1)))
    'SPL'
    """
    a = np.asarray(affine, dtype=np.float64)[:3, :3]
    letters = (("R", "L"), ("A", "P"), ("I", "S"))
    out = []
    for axis in range(3):
        v = a[:, axis]
        j = int(np.argmax(np.abs(v)))
        out.append(letters[j][1] if v[j] > 0 else letters[j][0])
    return "".join(out)


# ----------------------------------------------------------------------------------------------
# Converters (the only place besides medseg.io where other conventions appear)
# ----------------------------------------------------------------------------------------------
def to_sitk(volume: Volume) -> sitk.Image:
    """Convert to a SimpleITK image (LPS; SimpleITK index (x, y, z) = (column, row, slice))."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array))
    sp = volume.spacing_mm
    d = volume.direction
    image.SetSpacing((sp[2], sp[1], sp[0]))
    image.SetOrigin(volume.origin_mm)
    image.SetDirection(tuple(d[:, [2, 1, 0]].ravel().tolist()))
    return image


def from_sitk(image: sitk.Image, *, modality: str = "OT") -> Volume:
    """Convert a 3D SimpleITK image to a Volume (exact geometry)."""
    import SimpleITK as sitk

    if image.GetDimension() != 3:
        raise InputError(f"expected a 3D image; got a {image.GetDimension()}D SimpleITK image.")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"expected a scalar image; got {image.GetNumberOfComponentsPerPixel()} components "
            "per voxel (RGB or vector data cannot be segmented as a CT volume)."
        )
    array = sitk.GetArrayFromImage(image)
    d = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    sp = image.GetSpacing()
    affine = affine_from_geometry(
        (sp[2], sp[1], sp[0]), origin_mm=image.GetOrigin(), direction=d[:, [2, 1, 0]]
    )
    return Volume(array, affine, modality=modality)


def _nib_affine_to_lps(affine_ras: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """nibabel (i, j, k) → RAS affine to medseg (slice=k, row=j, column=i) → LPS affine."""
    return LPS_TO_RAS @ np.asarray(affine_ras, dtype=np.float64)[:, [2, 1, 0, 3]]


def _lps_affine_to_nib(affine_lps: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return (LPS_TO_RAS @ affine_lps)[:, [2, 1, 0, 3]]


def to_nibabel(volume: Volume) -> nib.Nifti1Image:
    """Convert to a NIfTI-1 image (RAS affine, data axes (i, j, k) = (column, row, slice))."""
    import nibabel as nib

    data = np.ascontiguousarray(np.transpose(volume.array, (2, 1, 0)))
    img = nib.Nifti1Image(data, _lps_affine_to_nib(volume.affine))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    return img


def from_nibabel(image: nib.spatialimages.SpatialImage, *, modality: str = "OT") -> Volume:
    """Convert a 3D nibabel image (RAS affine) to a Volume.

    Scaling (``scl_slope``/``scl_inter``) is applied; integer data without scaling keep their
    dtype so that label maps stay integer.
    """
    shape = image.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InputError(f"expected a 3D image; got shape {image.shape}.")
    # an ArrayProxy (file-backed) carries scl_slope/scl_inter; an in-memory array has none
    slope = getattr(image.dataobj, "slope", None)
    inter = getattr(image.dataobj, "inter", None)
    raw_dtype = image.get_data_dtype()
    if np.issubdtype(raw_dtype, np.integer) and slope in (1.0, None) and inter in (0.0, None):
        data = np.asarray(image.dataobj).astype(raw_dtype, copy=False)
    else:
        data = np.asarray(image.get_fdata(dtype=np.float32))
    data = data.reshape(shape)
    array = np.ascontiguousarray(np.transpose(data, (2, 1, 0)))
    return Volume(array, _nib_affine_to_lps(image.affine), modality=modality)


def to_metatensor(volume: Volume) -> MetaTensor:
    """Convert to a channel-first MONAI MetaTensor ``(1, i, j, k)`` with a RAS affine."""
    import torch
    from monai.data import MetaTensor

    data = torch.from_numpy(np.ascontiguousarray(np.transpose(volume.array, (2, 1, 0))))
    affine = torch.as_tensor(_lps_affine_to_nib(volume.affine), dtype=torch.float64)
    return MetaTensor(data[None], affine=affine, meta={"space": "RAS"})


def from_metatensor(tensor: MetaTensor, *, modality: str = "OT") -> Volume:
    """Convert a MONAI MetaTensor (``(i, j, k)`` or ``(1, i, j, k)``) to a Volume.

    Honours ``meta["space"]`` (``"RAS"``, MONAI's default, or ``"LPS"``).
    """
    data = tensor.detach().cpu().numpy()
    if data.ndim == 4:
        if data.shape[0] != 1:
            raise InputError(f"expected one channel; MetaTensor has shape {tuple(data.shape)}.")
        data = data[0]
    if data.ndim != 3:
        raise InputError(f"expected a 3D MetaTensor; got shape {tuple(data.shape)}.")
    affine = np.asarray(tensor.affine.detach().cpu().numpy(), dtype=np.float64)
    space = str(tensor.meta.get("space", "RAS")).upper()
    if space == "LPS":
        affine = LPS_TO_RAS @ affine
    elif space != "RAS":
        raise GeometryError(f"unknown MetaTensor space {space!r}; expected 'RAS' or 'LPS'.")
    return Volume(
        np.ascontiguousarray(np.transpose(data, (2, 1, 0))),
        _nib_affine_to_lps(affine),
        modality=modality,
    )
