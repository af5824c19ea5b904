"""Reader for OpenKBP patient folders (sparse CSV CT and structure masks on a 128³ grid).

An OpenKBP folder (Babier et al., Med. Phys. 48:5549, 2021) holds ``ct.csv`` (rows
``flat_index,value``), one ``<ROI>.csv`` per structure (rows ``flat_index,``) and
``voxel_dimensions.csv`` (three spacings in mm). Each file may also be gzip-compressed on its own
(``ct.csv.gz``, ``<ROI>.csv.gz``, ...; the whole gzip stream is verified, CRC and length, so a
corrupt or truncated file is refused, never read as good). A missing ``<ROI>.csv`` means the
structure was not contoured for that patient (see :func:`openkbp_available_labels`), not that
the organ is absent from the image. The flat indices address a C-ordered
``(128, 128, 128)`` array whose axes were worked out by rendering slices and checking anatomy
(see ``docs/openkbp.md``):

* raw axis 0 runs anterior → **posterior** (mandible at small index, brainstem behind it),
* raw axis 1 runs patient right → **left** (LeftParotid at larger index than RightParotid),
* raw axis 2 runs superior → **inferior** (brainstem at smaller index than mandible);
  its spacing is the third entry of ``voxel_dimensions.csv`` (2.5–3 mm), the other two are the
  in-plane spacings (~3.9–5.1 mm).

The loaders return medseg's convention: array axes ``(slice, row, column)`` with slices going
inferior → superior, rows anterior → posterior and columns right → left, i.e. orientation
``"SPL"`` like a head-first axial DICOM series. OpenKBP stores no patient position, so the
origin (centre of voxel ``(0, 0, 0)``) is set to ``(0, 0, 0)`` mm; only relative geometry is
meaningful.
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from medseg.errors import InputError
from medseg.io.grid_limits import check_grid
from medseg.volume import LabelMap, LabelVolume, Volume, affine_from_geometry

logger = logging.getLogger(__name__)

__all__ = [
    "OPENKBP_OARS",
    "OPENKBP_PTVS",
    "is_openkbp_folder",
    "load_openkbp_ct",
    "load_openkbp_labels",
    "openkbp_available_labels",
    "openkbp_file",
]

#: The seven organs at risk of OpenKBP, in the label-id order medseg uses (ids 1..7).
OPENKBP_OARS: tuple[str, ...] = (
    "Brainstem",
    "SpinalCord",
    "LeftParotid",
    "RightParotid",
    "Esophagus",
    "Larynx",
    "Mandible",
)
#: Planning target volumes that may be present (not every patient has all three).
OPENKBP_PTVS: tuple[str, ...] = ("PTV56", "PTV63", "PTV70")

GRID_SHAPE = (128, 128, 128)
#: OpenKBP stores HU + 1024; unlisted voxels (outside the body) are air.
HU_OFFSET = 1024.0
AIR_HU = -1024.0


def openkbp_file(folder: str | os.PathLike[str], stem: str) -> Path | None:
    """The file holding OpenKBP item ``stem`` in ``folder``: ``stem.csv`` or ``stem.csv.gz``.

    Parameters
    ----------
    folder
        Patient folder.
    stem
        ``"ct"``, ``"voxel_dimensions"`` or a structure name such as ``"Brainstem"``.

    Returns
    -------
    Path or None
        ``stem.csv`` if it is a file, else ``stem.csv.gz`` if it is a file, else ``None``.
        When both exist the plain ``.csv`` is used.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "Mandible.csv.gz").write_bytes(gzip.compress(b",data\\n"))
    >>> openkbp_file(d, "Mandible").name, openkbp_file(d, "Larynx")
    ('Mandible.csv.gz', None)
    """
    p = Path(folder)
    for name in (f"{stem}.csv", f"{stem}.csv.gz"):
        candidate = p / name
        if candidate.is_file():
            return candidate
    return None


def is_openkbp_folder(folder: str | os.PathLike[str]) -> bool:
    """True if ``folder`` is an OpenKBP patient folder (holds ``ct.csv`` or ``ct.csv.gz``)."""
    return openkbp_file(folder, "ct") is not None


def read_openkbp_text(path: Path) -> str:
    """Text of an OpenKBP CSV, gunzipping ``*.gz`` with full stream verification.

    The whole gzip stream is decompressed, so its CRC-32 and length trailer are checked; a
    corrupt, truncated or unreadable file raises :class:`InputError` naming it.
    """
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                data = fh.read()
        else:
            data = path.read_bytes()
    except PermissionError as exc:
        raise InputError(
            f"{path}: cannot read OpenKBP file (permission denied); check the file's read "
            "permission for this user."
        ) from exc
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise InputError(
            f"{path}: corrupt or truncated gzip file ({exc}); the data cannot be trusted. "
            "Copy the file again from its source."
        ) from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read OpenKBP file ({exc}).") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: not an OpenKBP CSV (not text: {exc}); expected a sparse CSV with header "
            "',data'."
        ) from exc


def _read_sparse(path: Path, *, with_values: bool) -> tuple[npt.NDArray[np.int64], Any]:
    """Read an OpenKBP sparse CSV (plain or gzip): flat indices and (optionally) values."""
    text = read_openkbp_text(path)
    lines = text.splitlines()
    if not lines or lines[0].strip() != ",data":
        raise InputError(
            f"{path}: not an OpenKBP sparse CSV (expected header ',data', got "
            f"{lines[0][:40] if lines else 'an empty file'!r})."
        )
    if not text.endswith("\n"):
        # every row of an OpenKBP CSV ends with a line break; a file that stops inside a row was
        # cut short (an interrupted copy), and its last row may still parse as a wrong number
        raise InputError(
            f"{path}: truncated OpenKBP CSV (it ends inside a row: {lines[-1][-40:]!r}); the "
            "file was cut short. Copy it again from its source."
        )
    body = [ln for ln in lines[1:] if ln.strip()]
    n = int(np.prod(GRID_SHAPE))
    try:
        if with_values:
            table = np.array([ln.split(",") for ln in body], dtype=np.float64).reshape(-1, 2)
            idx = table[:, 0].astype(np.int64)
            values: Any = table[:, 1]
        else:
            idx = np.array([ln.split(",", 1)[0] for ln in body], dtype=np.int64)
            values = None
    except ValueError as exc:
        raise InputError(f"{path}: malformed row in OpenKBP CSV ({exc}).") from exc
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise InputError(
            f"{path}: flat index out of range 0..{n - 1} (got {idx.min()}..{idx.max()})."
        )
    return idx, values


def _require(folder: Path, stem: str) -> Path:
    """``openkbp_file(folder, stem)``, or :class:`InputError` if neither form exists."""
    path = openkbp_file(folder, stem)
    if path is None:
        raise InputError(
            f"{folder}: no {stem}.csv (or {stem}.csv.gz); an OpenKBP patient folder needs it."
        )
    return path


def _spacing(folder: Path) -> tuple[float, float, float]:
    """Raw-axis spacings (axis0, axis1, axis2) in mm from ``voxel_dimensions.csv[.gz]``."""
    path = _require(folder, "voxel_dimensions")
    text = read_openkbp_text(path)
    try:
        vals = np.array(text.split(), dtype=np.float64)
    except ValueError as exc:
        raise InputError(f"{path}: cannot read the voxel size ({exc}).") from exc
    if vals.size != 3 or not np.all(np.isfinite(vals)) or not np.all(vals > 0):
        raise InputError(f"{path}: expected three positive spacings in mm, got {vals.tolist()}.")
    return (float(vals[0]), float(vals[1]), float(vals[2]))


def _to_medseg(raw: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Raw (P, L, I) array → medseg (slice S-ward, row P-ward, column L-ward)."""
    return np.ascontiguousarray(np.transpose(raw, (2, 0, 1))[::-1])


def _affine(folder: Path) -> npt.NDArray[np.float64]:
    s0, s1, s2 = _spacing(folder)
    check_grid(GRID_SHAPE, (s2, s0, s1), f"{folder} (voxel_dimensions)")
    # slice axis (raw axis 2 reversed) → +z (S), rows (raw 0) → +y (P), columns (raw 1) → +x (L)
    return affine_from_geometry((s2, s0, s1))


def _check_folder(folder: str | os.PathLike[str]) -> Path:
    p = Path(folder)
    if not is_openkbp_folder(p):
        raise InputError(
            f"{p}: not an OpenKBP patient folder (no ct.csv or ct.csv.gz). Give a folder like "
            "train-pats/pt_4 containing ct.csv, voxel_dimensions.csv and <ROI>.csv files "
            "(each may be gzip-compressed)."
        )
    return p


def openkbp_available_labels(
    folder: str | os.PathLike[str], names: Sequence[str] | None = None
) -> tuple[str, ...]:
    """The structures of ``names`` that have a contour file in an OpenKBP patient folder.

    A structure has a contour when ``<name>.csv`` or ``<name>.csv.gz`` exists. A missing file
    means the structure was *not contoured* for this patient (partially labelled data), not
    that the organ is absent from the image; train on such patients with a loss that ignores
    the uncontoured labels.

    Parameters
    ----------
    folder
        Patient folder (with ``ct.csv`` or ``ct.csv.gz``).
    names
        Structures to check, default :data:`OPENKBP_OARS`.

    Returns
    -------
    tuple of str
        The contoured structures, in the order of ``names``.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> for f in ("ct.csv.gz", "Brainstem.csv.gz", "Mandible.csv"):
    ...     _ = (d / f).write_bytes(b"")
    >>> openkbp_available_labels(d)
    ('Brainstem', 'Mandible')
    """
    p = _check_folder(folder)
    wanted = OPENKBP_OARS if names is None else tuple(names)
    return tuple(name for name in wanted if openkbp_file(p, name) is not None)


def load_openkbp_ct(folder: str | os.PathLike[str]) -> Volume:
    """Load the CT of an OpenKBP patient folder in Hounsfield units.

    Parameters
    ----------
    folder
        Patient folder containing ``ct.csv`` and ``voxel_dimensions.csv`` (or their
        ``.csv.gz`` forms).

    Returns
    -------
    Volume
        float32 array of shape ``(128, 128, 128)`` (slice, row, column), orientation ``"SPL"``,
        spacing ``(slice, in-plane, in-plane)`` mm. Listed voxels are ``value - 1024`` HU;
        unlisted voxels (outside the patient) are set to air, ``-1024`` HU.
    """
    p = _check_folder(folder)
    idx, values = _read_sparse(_require(p, "ct"), with_values=True)
    flat = np.full(int(np.prod(GRID_SHAPE)), AIR_HU, dtype=np.float32)
    flat[idx] = values - HU_OFFSET
    array = _to_medseg(flat.reshape(GRID_SHAPE))
    return Volume(
        array,
        _affine(p),
        modality="CT",
        provenance=(
            "OpenKBP sparse CSV: HU = value - 1024, unlisted voxels set to -1024 HU; "
            "origin arbitrary (0,0,0).",
        ),
    )


def load_openkbp_labels(
    folder: str | os.PathLike[str], names: Sequence[str] | None = None
) -> LabelVolume:
    """Load OpenKBP structure masks as one label volume.

    Parameters
    ----------
    folder
        Patient folder with ``<ROI>.csv`` (or ``<ROI>.csv.gz``) files.
    names
        Structures to load, in label-id order (id 1, 2, ...). Default: the seven OARs in
        :data:`OPENKBP_OARS`. PTVs (``"PTV56"``, ``"PTV63"``, ``"PTV70"``) can be asked for.
        A requested structure whose file is absent gets an id but no voxels, and a warning;
        that means "not contoured", not "absent": use :func:`openkbp_available_labels` to know
        which labels of a patient can be trusted.

    Returns
    -------
    LabelVolume
        uint8 labels on the same grid as :func:`load_openkbp_ct`. Where structures overlap,
        the one listed first in ``names`` keeps the voxel; overlaps are reported in
        ``warnings``.
    """
    p = _check_folder(folder)
    wanted = list(OPENKBP_OARS if names is None else names)
    if not wanted:
        raise InputError("load_openkbp_labels: names is empty; give at least one structure.")
    label_map = LabelMap.from_names(wanted)
    flat = np.zeros(int(np.prod(GRID_SHAPE)), dtype=np.uint8)
    warnings: list[str] = []
    for entry in label_map:
        path = openkbp_file(p, entry.name)
        if path is None:
            msg = (
                f"{p.name}: structure {entry.name!r} has no file (not contoured); its label is "
                "empty."
            )
            logger.warning(msg)
            warnings.append(msg)
            continue
        idx, _ = _read_sparse(path, with_values=False)
        taken = flat[idx] != 0
        if np.any(taken):
            warnings.append(
                f"{p.name}: {int(taken.sum())} voxels of {entry.name} overlap structures listed "
                "earlier and keep the earlier label."
            )
        flat[idx[~taken]] = entry.id
    array = _to_medseg(flat.reshape(GRID_SHAPE))
    volume = Volume(array, _affine(p), modality="SEG", provenance=("OpenKBP structure CSVs",))
    return LabelVolume(volume, label_map, tuple(warnings))
