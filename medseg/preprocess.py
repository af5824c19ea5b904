"""Pure Volume → Volume preprocessing shared by training and inference.

Every function returns a new :class:`~medseg.volume.Volume` whose affine describes the new grid
exactly; nothing mutates its input. The :class:`PreprocessingSpec` stored in each checkpoint says
how a model's input was prepared, and :func:`apply_spec` replays it on a new image:

>>> import numpy as np
>>> from medseg.volume import Volume, affine_from_geometry
>>> ct = Volume(np.zeros((4, 6, 6), np.float32), affine_from_geometry((2.5, 1.0, 1.0)))
>>> spec = PreprocessingSpec(spacing_mm=(5.0, 2.0, 2.0), window_hu=(-100.0, 100.0))
>>> apply_spec(ct, spec).shape
(2, 3, 3)
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from medseg.config import checked_mapping
from medseg.errors import ConfigError, GeometryError, InputError
from medseg.volume import Volume, orientation_code

logger = logging.getLogger(__name__)

__all__ = [
    "PreprocessingSpec",
    "apply_spec",
    "body_bounding_box",
    "crop",
    "normalise_hu",
    "reorient",
    "resample_to_grid",
    "resample_to_spacing",
]

_OPPOSITE = {"L": "R", "R": "L", "P": "A", "A": "P", "S": "I", "I": "S"}


@dataclass(frozen=True)
class PreprocessingSpec:
    """How a model's input is prepared; saved in every checkpoint.

    Parameters
    ----------
    spacing_mm
        Target voxel spacing ``(slice, row, column)`` in mm.
    orientation
        Target orientation code (see :func:`medseg.volume.orientation_code`), e.g. ``"SPL"``.
    window_hu
        ``(low, high)`` HU window mapped linearly to ``[0, 1]`` (values outside are clipped).
    roi_size
        Patch / sliding-window size ``(slice, row, column)`` in voxels of the target grid.

    Examples
    --------
    >>> s = PreprocessingSpec((3.0, 4.0, 4.0), "SPL", (-500.0, 500.0), (48, 64, 64))
    >>> PreprocessingSpec.from_json(s.to_json()) == s
    True
    """

    spacing_mm: tuple[float, float, float] = (3.0, 4.0, 4.0)
    orientation: str = "SPL"
    window_hu: tuple[float, float] = (-500.0, 500.0)
    roi_size: tuple[int, int, int] = (48, 64, 64)

    def __post_init__(self) -> None:
        sp = tuple(float(v) for v in self.spacing_mm)
        win = tuple(float(v) for v in self.window_hu)
        roi = tuple(int(v) for v in self.roi_size)
        if len(sp) != 3 or min(sp) <= 0:
            raise ConfigError(f"spacing_mm must be 3 positive numbers; got {self.spacing_mm}.")
        if len(win) != 2 or win[0] >= win[1]:
            raise ConfigError(f"window_hu must be (low, high) with low < high; got {win}.")
        if len(roi) != 3 or min(roi) < 1:
            raise ConfigError(f"roi_size must be 3 positive integers; got {self.roi_size}.")
        code = str(self.orientation).upper()
        if len(code) != 3 or {_canon(c) for c in code} != {"L", "P", "S"}:
            raise ConfigError(f"orientation must name each of L/R, A/P, S/I once; got {code!r}.")
        object.__setattr__(self, "spacing_mm", sp)
        object.__setattr__(self, "window_hu", win)
        object.__setattr__(self, "roi_size", roi)
        object.__setattr__(self, "orientation", code)

    def to_json(self) -> str:
        """JSON string (stored in checkpoints as a plain string)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessingSpec:
        """Build from a mapping, refusing unknown keys."""
        kwargs: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v
            for k, v in checked_mapping(cls, data, what="preprocessing spec").items()
        }
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> PreprocessingSpec:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))


def _canon(letter: str) -> str:
    return letter if letter in ("L", "P", "S") else _OPPOSITE.get(letter, "?")


def reorient(volume: Volume, code: str = "SPL") -> Volume:
    """Permute and flip array axes so they point along ``code``; world geometry unchanged.

    Only axis permutations and flips are used (no interpolation), so every voxel keeps its value
    and its world position; the affine is updated exactly.

    Parameters
    ----------
    volume
        Input volume (any orientation; oblique grids use their dominant directions).
    code
        Three letters, one of L/R, one of A/P, one of S/I, e.g. ``"SPL"``.

    Returns
    -------
    Volume
        Same voxels, ``orientation == code``.

    Examples
    --------
    >>> import numpy as np
    >>> from medseg.volume import affine_from_geometry
    >>> v = Volume(np.arange(24).reshape(2, 3, 4), affine_from_geometry((3.0, 2.0, 1.0)))
    >>> r = reorient(v, "LPI")
    >>> r.orientation, r.shape, r.spacing_mm
    ('LPI', (4, 3, 2), (1.0, 2.0, 3.0))
    >>> bool(np.allclose(r.world_coordinates([[0, 0, 0]]), v.world_coordinates([[1, 0, 0]])))
    True
    """
    code = code.upper()
    current = orientation_code(volume.affine)
    if len(code) != 3 or {_canon(c) for c in code} != {"L", "P", "S"}:
        raise InputError(f"orientation code must name L/R, A/P, S/I once each; got {code!r}.")
    if len({_canon(c) for c in current}) != 3:
        raise GeometryError(
            f"cannot reorient an oblique grid with ambiguous axes (orientation {current!r}); "
            "resample it with resample_to_grid instead."
        )
    perm: list[int] = []
    flips: list[bool] = []
    for letter in code:
        j = next(i for i, c in enumerate(current) if _canon(c) == _canon(letter))
        perm.append(j)
        flips.append(current[j] != letter)
    array = np.transpose(volume.array, perm)
    affine = np.eye(4)
    origin = volume.affine[:3, 3].copy()
    for new_axis, (j, flip) in enumerate(zip(perm, flips, strict=True)):
        col = volume.affine[:3, j]
        if flip:
            array = np.flip(array, axis=new_axis)
            origin = origin + (volume.shape[j] - 1) * col
            col = -col
        affine[:3, new_axis] = col
    affine[:3, 3] = origin
    return dataclasses.replace(volume, array=np.ascontiguousarray(array), affine=affine)


def resample_to_grid(
    volume: Volume,
    reference: Volume,
    *,
    order: int,
    fill_value: float | None = None,
) -> Volume:
    """Resample ``volume`` onto the grid (shape + affine) of ``reference``.

    Used to map predictions back to the source image grid (``order=0`` for labels).

    Parameters
    ----------
    volume
        Values to resample.
    reference
        Target grid; its array is not read.
    order
        Spline order: 0 nearest (labels), 1 linear (images, probabilities), 3 cubic.
    fill_value
        Value for points outside ``volume``; ``None`` repeats the nearest edge voxel.

    Returns
    -------
    Volume
        Array of ``reference.shape`` with ``volume``'s dtype for ``order=0`` and float32
        otherwise; ``modality``/``source`` are taken from ``reference``.

    Examples
    --------
    >>> import numpy as np
    >>> from medseg.volume import affine_from_geometry
    >>> src = Volume(np.arange(8.0).reshape(2, 2, 2), affine_from_geometry((1, 1, 1)))
    >>> float(resample_to_grid(src, src, order=1).array[1, 1, 1])
    7.0
    """
    from scipy import ndimage

    if order not in (0, 1, 2, 3, 4, 5):
        raise InputError(f"spline order must be 0..5; got {order}.")
    # index → index map; rounded so that float noise of affine arithmetic (the same grid written
    # head- or feet-first) cannot decide nearest-neighbour ties differently
    m = np.round(np.linalg.inv(volume.affine) @ reference.affine, 9)
    src = volume.array
    is_int = np.issubdtype(src.dtype, np.integer) or src.dtype == np.bool_
    data = src if order == 0 else src.astype(np.float32, copy=False)
    mode = "nearest" if fill_value is None else "constant"
    out = ndimage.affine_transform(
        data,
        m[:3, :3],
        offset=m[:3, 3],
        output_shape=reference.shape,
        order=order,
        mode=mode,
        cval=0.0 if fill_value is None else float(fill_value),
        prefilter=order > 1,
    )
    if order == 0 and is_int:
        out = out.astype(src.dtype)
    return Volume(
        out, reference.affine.copy(), volume.modality, reference.source, volume.provenance
    )


def resample_to_spacing(
    volume: Volume,
    spacing_mm: tuple[float, float, float] | list[float],
    *,
    order: int,
) -> Volume:
    """Resample to a new voxel spacing, keeping direction and the centre of voxel ``(0,0,0)``.

    The new shape covers the old extent: ``n_new = floor((n_old - 1) * old / new) + 1``.

    Parameters
    ----------
    volume
        Input volume.
    spacing_mm
        ``(slice, row, column)`` spacing in mm.
    order
        Spline order (0 for labels, 1 for CT).

    Examples
    --------
    >>> import numpy as np
    >>> from medseg.volume import affine_from_geometry
    >>> v = Volume(np.zeros((5, 9, 9)), affine_from_geometry((1.0, 1.0, 1.0)))
    >>> r = resample_to_spacing(v, (2.0, 4.0, 4.0), order=1)
    >>> r.shape, r.spacing_mm
    ((3, 3, 3), (2.0, 4.0, 4.0))
    """
    new = np.asarray(spacing_mm, dtype=np.float64)
    if new.shape != (3,) or np.any(new <= 0):
        raise InputError(f"spacing_mm must be 3 positive numbers; got {spacing_mm}.")
    old = np.asarray(volume.spacing_mm)
    shape = tuple(
        int(np.floor((n - 1) * o / s + 1e-6)) + 1
        for n, o, s in zip(volume.shape, old, new, strict=True)
    )
    affine = volume.affine.copy()
    affine[:3, :3] = volume.direction * new[None, :]
    reference = Volume(np.zeros(shape, np.uint8), affine)
    out = resample_to_grid(volume, reference, order=order)
    return dataclasses.replace(out, source=volume.source)


def normalise_hu(
    array: npt.NDArray[Any], window_hu: tuple[float, float]
) -> npt.NDArray[np.float32]:
    """Clip HU to ``window_hu = (low, high)`` and scale linearly to ``[0, 1]`` (float32).

    Examples
    --------
    >>> import numpy as np
    >>> normalise_hu(np.array([-1000.0, 0.0, 250.0, 3000.0]), (-500.0, 500.0)).tolist()
    [0.0, 0.5, 0.75, 1.0]
    """
    low, high = float(window_hu[0]), float(window_hu[1])
    if not high > low:
        raise InputError(f"window_hu must be (low, high) with low < high; got {window_hu}.")
    out = (np.clip(np.asarray(array, dtype=np.float32), low, high) - low) / (high - low)
    return out.astype(np.float32, copy=False)


def body_bounding_box(
    volume: Volume, threshold_hu: float = -500.0, *, margin: int = 0
) -> tuple[slice, slice, slice]:
    """Index box around the largest connected component above ``threshold_hu`` (the body).

    The largest component excludes the couch and stray noise in most CTs.

    Examples
    --------
    >>> import numpy as np
    >>> from medseg.volume import affine_from_geometry
    >>> a = np.full((5, 8, 8), -1000.0); a[1:4, 2:6, 3:5] = 40.0; a[0, 0, 0] = 40.0
    >>> body_bounding_box(Volume(a, affine_from_geometry((1, 1, 1))))
    (slice(1, 4, None), slice(2, 6, None), slice(3, 5, None))
    """
    from scipy import ndimage

    mask = volume.array > threshold_hu
    labels, n = ndimage.label(mask)
    if n == 0:
        raise InputError(
            f"no voxel above {threshold_hu} HU: is this a CT in HU? "
            f"(value range {float(volume.array.min())}..{float(volume.array.max())})"
        )
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    box = ndimage.find_objects((labels == int(np.argmax(sizes))).astype(np.uint8))[0]
    return tuple(
        slice(max(0, s.start - margin), min(n_ax, s.stop + margin))
        for s, n_ax in zip(box, volume.shape, strict=True)
    )  # type: ignore[return-value]


def crop(volume: Volume, box: tuple[slice, slice, slice]) -> Volume:
    """Crop to an index box, shifting the affine's origin so world positions are unchanged.

    Examples
    --------
    >>> import numpy as np
    >>> from medseg.volume import affine_from_geometry
    >>> v = Volume(np.zeros((4, 4, 4)), affine_from_geometry((2.0, 1.0, 1.0)))
    >>> crop(v, (slice(1, 3), slice(0, 4), slice(2, 4))).origin_mm
    (2.0, 0.0, 2.0)
    """
    starts = np.array([s.indices(n)[0] for s, n in zip(box, volume.shape, strict=True)])
    affine = volume.affine.copy()
    affine[:3, 3] = volume.affine[:3, :3] @ starts + volume.affine[:3, 3]
    return dataclasses.replace(volume, array=volume.array[box].copy(), affine=affine)


def apply_spec(volume: Volume, spec: PreprocessingSpec, *, order: int = 1) -> Volume:
    """Reorient and resample ``volume`` as ``spec`` says (no intensity change).

    Use ``order=1`` for CT and ``order=0`` for labels; then :func:`normalise_hu` the CT array
    with ``spec.window_hu``.
    """
    out = reorient(volume, spec.orientation)
    if not np.allclose(out.spacing_mm, spec.spacing_mm, atol=1e-4):
        out = resample_to_spacing(out, spec.spacing_mm, order=order)
    return out
