"""Folders of per-organ binary masks (one NRRD/NIfTI/MHA file per organ, name = file stem).

Two layouts are recognised:

* DeepMind/TCIA: ``<case>/segmentations/<Organ>.nrrd``;
* a plain folder whose files are all mask images on one grid: ``<folder>/<Organ>.nii.gz``.

Organ masks of real annotations overlap (the spinal cord lies inside the spinal canal, a lens
inside its orbit), which one integer label map cannot hold. :func:`read_mask_folder` is lossless
(a :class:`MaskSet` of boolean masks, what ``medseg evaluate`` uses). :func:`load_mask_folder`
returns a :class:`~medseg.volume.LabelVolume` and resolves overlaps by an explicit policy
(``overlap="smallest_wins"`` by default: a voxel claimed by several organs goes to the smallest
one, so small organs are not erased by big ones; every reassignment is listed in
``LabelVolume.warnings`` and logged), or ``overlap="error"`` to refuse.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from medseg.errors import GeometryError, InputError
from medseg.io._mask_reader import Box, CroppedMask, read_cropped_mask
from medseg.volume import LabelMap, LabelVolume, Volume

logger = logging.getLogger(__name__)

__all__ = [
    "CroppedMask",
    "CroppedMasks",
    "MaskSet",
    "is_mask_folder",
    "load_mask_folder",
    "looks_like_mask_folder",
    "read_mask_folder",
]

_MASK_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass(frozen=True, eq=False)
class MaskSet:
    """Named boolean masks on one grid (possibly overlapping).

    Attributes
    ----------
    grid
        A Volume giving the grid: use its shape, affine and spacing. (Its array is a read-only
        zero-stride placeholder for sets read by :func:`read_mask_folder`.)
    masks
        ``{name: bool array (slice, row, column)}`` in file-name order. For sets read by
        :func:`read_mask_folder` each full array is built when it is looked up (the set stores
        each organ cropped to its bounding box); :meth:`bounding_box` and :meth:`cropped` give
        the stored form without building it.
    source
        Where the masks were read from.
    """

    grid: Volume
    masks: Mapping[str, npt.NDArray[np.bool_]] = field(default_factory=dict)
    source: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        """Organ names in order."""
        return tuple(self.masks)

    def _cropped_mask(self, name: str) -> CroppedMask:
        if isinstance(self.masks, CroppedMasks):
            return self.masks.stored(name)
        return CroppedMask.from_array(self.masks[name])

    def bounding_box(self, name: str) -> Box | None:
        """Tight bounding box of organ ``name`` (``None`` when it is empty)."""
        return self._cropped_mask(name).box

    def cropped(self, name: str, box: Box) -> npt.NDArray[np.bool_]:
        """Organ ``name`` inside ``box`` (a box of the grid) as a new boolean array."""
        if isinstance(self.masks, CroppedMasks):
            return self.masks.stored(name).cropped(box)
        return np.array(self.masks[name][box], dtype=bool)


class CroppedMasks(Mapping[str, npt.NDArray[np.bool_]]):
    """A read-only ``{name: full boolean mask}`` mapping stored as cropped masks.

    Looking a name up builds the full array (a new array each time); iterate over
    :meth:`stored` values to work on the crops.
    """

    def __init__(self, masks: Mapping[str, CroppedMask]) -> None:
        self._masks = dict(masks)

    def stored(self, name: str) -> CroppedMask:
        """The cropped form of organ ``name``."""
        return self._masks[name]

    def __getitem__(self, name: str) -> npt.NDArray[np.bool_]:
        return self._masks[name].full()

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)


def _stem(p: Path) -> str:
    name = p.name
    for suffix in _MASK_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return p.stem


def list_folder(folder: Path) -> list[Path]:
    """Entries of ``folder``, sorted; an unreadable or missing folder is a clean InputError."""
    try:
        return sorted(folder.iterdir())
    except PermissionError as exc:
        raise InputError(
            f"{folder}: permission denied when listing the folder; make it readable "
            "(chmod u+rx) or run as a user who can read it."
        ) from exc
    except NotADirectoryError as exc:
        raise InputError(f"{folder}: not a folder.") from exc
    except OSError as exc:
        raise InputError(f"{folder}: cannot list the folder ({exc.strerror or exc}).") from exc


def _mask_files(folder: Path) -> list[Path]:
    return [
        f
        for f in list_folder(folder)
        if not f.name.startswith(".") and f.name.lower().endswith(_MASK_SUFFIXES) and f.is_file()
    ]


def _resolve(path: Path) -> Path:
    seg = path / "segmentations"
    return seg if seg.is_dir() and _mask_files(seg) else path


def _header_geometry(f: Path) -> tuple[Any, ...] | None:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(f))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    return (
        reader.GetSize(),
        tuple(round(v, 3) for v in reader.GetSpacing()),
        tuple(round(v, 3) for v in reader.GetOrigin()),
        tuple(round(v, 4) for v in reader.GetDirection()),
    )


def looks_like_mask_folder(path: str | os.PathLike[str]) -> bool:
    """True for a folder laid out as a mask folder, whether or not its files are readable.

    That is: a ``segmentations/`` sub-folder with mask files, or mask files (``.nrrd``,
    ``.nii.gz``, ...) and no sub-folder holding mask files. Use it to route a folder to
    :func:`read_mask_folder`, whose errors then name the file that is wrong;
    :func:`is_mask_folder` also checks grids and content.
    """
    p = Path(path)
    if not p.is_dir():
        return False
    seg = p / "segmentations"
    if seg.is_dir() and _mask_files(seg):
        return True
    if not _mask_files(p):
        return False
    return not any(d.is_dir() and _mask_files(_resolve(d)) for d in list_folder(p))


def is_mask_folder(path: str | os.PathLike[str]) -> bool:
    """True for a folder of per-organ masks (see module docstring for the layouts).

    A plain folder qualifies when it holds at least one mask file, no sub-folders with mask
    files, all its files share one grid by header (size, spacing, origin, direction) and the
    first file is binary. A folder of label maps of different patients (a batch folder) has
    differing grids or multi-label files; a batch of single-organ maps on one shared grid is
    indistinguishable and needs ``medseg evaluate --batch``.
    """
    p = Path(path)
    if not p.is_dir():
        return False
    seg = p / "segmentations"
    if seg.is_dir() and _mask_files(seg):
        return True
    if not looks_like_mask_folder(p):
        return False
    files = _mask_files(p)
    geometries = {_header_geometry(f) for f in files}
    if None in geometries or len(geometries) != 1:
        return False
    return _is_binary_file(files[0])


def _is_binary_file(f: Path) -> bool:
    """True when the image holds at most one non-zero value (a mask, not a label map)."""
    try:
        read_cropped_mask(f)
    except InputError:
        return False
    return True


def read_mask_folder(path: str | os.PathLike[str]) -> MaskSet:
    """Read every mask of a mask folder, losslessly.

    Each mask is kept cropped to its bounding box (see :class:`MaskSet`); NRRD masks are
    decompressed in small chunks and never held whole, so a folder of twenty 40 MB masks reads
    in a fraction of a second.

    Raises
    ------
    InputError
        Not a mask folder, unreadable folder or file (the message names the file and the
        problem), non-binary file, or two files giving the same name.
    GeometryError
        Masks on different grids.
    """
    p = Path(path)
    if not p.is_dir():
        raise InputError(f"{p}: not a folder of per-organ masks.")
    folder = _resolve(p)
    files = _mask_files(folder)
    if not files:
        raise InputError(
            f"{p}: no mask files found (expected {folder}/<organ>.nrrd or .nii.gz files)."
        )
    masks: dict[str, CroppedMask] = {}
    seen: dict[str, Path] = {}
    grid: Volume | None = None
    for f in files:
        name = _stem(f)
        key = name.casefold()
        if key in seen:
            raise InputError(f"{f} and {seen[key]} both give the organ name {name!r}; rename one.")
        seen[key] = f
        vol, mask = read_cropped_mask(f)
        if grid is None:
            grid = vol
        elif not grid.same_grid(vol):
            raise GeometryError(
                f"{f}: grid {vol!r} differs from {files[0].name}'s {grid!r}; all masks of a "
                "folder must share one grid. Resample the odd mask first."
            )
        masks[name] = mask
    assert grid is not None  # files is non-empty
    return MaskSet(grid=grid, masks=CroppedMasks(masks), source=str(folder))


def load_mask_folder(
    path: str | os.PathLike[str],
    reference: Volume | None = None,
    *,
    overlap: Literal["smallest_wins", "error"] = "smallest_wins",
) -> LabelVolume:
    """Load a mask folder as one label map; ids follow file-name order from 1.

    Parameters
    ----------
    path
        The folder (``<case>`` with ``segmentations/`` inside, or the mask folder itself).
    reference
        If given, the masks must lie on its grid (``GeometryError`` otherwise).
    overlap
        ``"smallest_wins"``: voxels claimed by several organs go to the smallest organ and each
        reassignment is recorded in ``warnings``; ``"error"``: raise ``InputError``.
    """
    ms = read_mask_folder(path)
    if reference is not None and not ms.grid.same_grid(reference):
        raise GeometryError(
            f"{path}: masks are on grid {ms.grid!r}, the reference is {reference!r}. "
            "Resample the masks onto the reference grid first."
        )
    names = list(ms.masks)
    label_map = LabelMap.from_names(names)
    labels = np.zeros(ms.grid.shape, dtype=np.uint8 if len(names) < 256 else np.uint16)
    boxes = {n: ms.bounding_box(n) for n in names}
    crops = {n: ms.cropped(n, b) for n, b in boxes.items() if b is not None}
    sizes = {n: int(np.count_nonzero(crops[n])) if n in crops else 0 for n in names}
    warnings: list[str] = []
    # Paint the largest first so the smallest organ ends on top.
    for name in sorted(names, key=lambda n: -sizes[n]):
        box = boxes[name]
        if box is None:
            continue
        mask = crops[name]
        region = labels[box]  # a view: painting it paints the label map
        label_id = label_map.id_of(name)
        taken = region[mask]
        clash = taken[taken != 0]
        if clash.size:
            ids, counts = np.unique(clash, return_counts=True)
            for other_id, n in zip(ids.tolist(), counts.tolist(), strict=True):
                msg = (
                    f"{n} voxels of {label_map[other_id].name!r} overlap {name!r} and were "
                    f"assigned to {name!r} (smaller organ wins)"
                )
                if overlap == "error":
                    raise InputError(
                        f"{path}: {n} voxels belong to both {label_map[other_id].name!r} and "
                        f"{name!r}; a label map cannot hold overlapping organs. Use "
                        "overlap='smallest_wins' or read_mask_folder() (lossless)."
                    )
                warnings.append(msg)
                logger.warning("%s: %s", path, msg)
        region[mask] = label_id
    volume = ms.grid.with_array(labels, modality="SEG")
    return LabelVolume(volume, label_map, tuple(warnings))
