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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from medseg.errors import GeometryError, InputError
from medseg.volume import LabelMap, LabelVolume, Volume

logger = logging.getLogger(__name__)

__all__ = ["MaskSet", "is_mask_folder", "load_mask_folder", "read_mask_folder"]

_MASK_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass(frozen=True, eq=False)
class MaskSet:
    """Named boolean masks on one grid (possibly overlapping).

    Attributes
    ----------
    grid
        A Volume giving the grid (its array is the first mask, uint8); use its affine/spacing.
    masks
        ``{name: bool array (slice, row, column)}`` in file-name order.
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


def _stem(p: Path) -> str:
    name = p.name
    for suffix in _MASK_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return p.stem


def _mask_files(folder: Path) -> list[Path]:
    return sorted(
        f
        for f in folder.iterdir()
        if f.is_file() and not f.name.startswith(".") and f.name.lower().endswith(_MASK_SUFFIXES)
    )


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
    files = _mask_files(p)
    if not files:
        return False
    if any(d.is_dir() and _mask_files(_resolve(d)) for d in p.iterdir()):
        return False
    geometries = {_header_geometry(f) for f in files}
    if None in geometries or len(geometries) != 1:
        return False
    return _is_binary_file(files[0])


def _is_binary_file(f: Path) -> bool:
    """True when the image holds at most one non-zero value (a mask, not a label map)."""
    from medseg.io.image_files import read_image_file

    try:
        arr = read_image_file(f).array
    except InputError:
        return False
    top = arr.max()
    return bool(top == 0 or np.count_nonzero(arr) == np.count_nonzero(arr == top))


def read_mask_folder(path: str | os.PathLike[str]) -> MaskSet:
    """Read every mask of a mask folder, losslessly.

    Raises
    ------
    InputError
        Not a mask folder, unreadable file, non-binary file, or two files giving the same name.
    GeometryError
        Masks on different grids.
    """
    from medseg.io.image_files import read_image_file

    p = Path(path)
    if not p.is_dir():
        raise InputError(f"{p}: not a folder of per-organ masks.")
    folder = _resolve(p)
    files = _mask_files(folder)
    if not files:
        raise InputError(
            f"{p}: no mask files found (expected {folder}/<organ>.nrrd or .nii.gz files)."
        )
    masks: dict[str, npt.NDArray[np.bool_]] = {}
    seen: dict[str, Path] = {}
    grid: Volume | None = None
    for f in files:
        name = _stem(f)
        key = name.casefold()
        if key in seen:
            raise InputError(f"{f} and {seen[key]} both give the organ name {name!r}; rename one.")
        seen[key] = f
        vol = read_image_file(f)
        fg = np.asarray(vol.array != 0)
        top = vol.array.max()
        if top != 0 and np.count_nonzero(fg) != np.count_nonzero(vol.array == top):
            raise InputError(
                f"{f}: not a binary mask (several non-zero values, max {top}); a mask folder "
                "holds one organ per file. Load a multi-label map as a single file instead."
            )
        if grid is None:
            grid = vol.with_array(fg.view(np.uint8))
        elif not grid.same_grid(vol):
            raise GeometryError(
                f"{f}: grid {vol!r} differs from {files[0].name}'s {grid!r}; all masks of a "
                "folder must share one grid. Resample the odd mask first."
            )
        masks[name] = fg
    assert grid is not None  # files is non-empty
    return MaskSet(grid=grid, masks=masks, source=str(folder))


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
    sizes = {n: int(np.count_nonzero(m)) for n, m in ms.masks.items()}
    warnings: list[str] = []
    # Paint the largest first so the smallest organ ends on top.
    for name in sorted(names, key=lambda n: -sizes[n]):
        mask = ms.masks[name]
        label_id = label_map.id_of(name)
        taken = labels[mask]
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
        labels[mask] = label_id
    volume = ms.grid.with_array(labels, modality="SEG")
    return LabelVolume(volume, label_map, tuple(warnings))
