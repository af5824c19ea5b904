"""The :class:`Predictor`: CT volume in, organ labels on the same grid out.

Pipeline of :meth:`Predictor.predict` (every step keeps exact world geometry):

1. reorient to the model's orientation (axis permutation/flip, no interpolation) and resample
   linearly to the model's spacing (:mod:`medseg.preprocess`);
2. find the body (largest component above ``body_threshold_hu``, its box plus a margin); the
   windows are placed on the whole model grid (MONAI's placement) and every window without a
   body voxel is skipped; labels outside the body box are background;
3. run the cell-wise stitched sliding window (:mod:`medseg.inference.sliding_window`),
   normalising HU with the model's window one batch of windows at a time, in the precision of
   :attr:`InferenceConfig.precision` (bfloat16 autocast on CPUs that have it);
4. post-process per organ (:mod:`medseg.inference.postprocessing`) and check laterality;
5. map the labels back to exactly the input's affine and shape. When no resampling was needed
   this is the exact inverse axis permutation; otherwise it is nearest-neighbour interpolation
   of the label map (each input voxel takes the label of the model-grid voxel nearest to its
   centre). Resampling logits before the arg-max would give smoother boundaries but needs
   ``classes ×`` the input's voxels in memory, which is what this module avoids.

The model is loaded once and reused for every :meth:`~Predictor.predict` call.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from medseg.config import checked_mapping
from medseg.errors import ConfigError, InputError, ModelError
from medseg.inference.postprocessing import (
    PostprocessConfig,
    label_side,
    laterality_warnings,
    postprocess_labels,
)
from medseg.inference.quality import organ_quality
from medseg.inference.sliding_window import (
    WindowConfig,
    flip_combinations,
    sliding_window_labels,
)
from medseg.preprocess import (
    PreprocessingSpec,
    body_bounding_box,
    crop,
    normalise_hu,
    reorient,
    resample_to_grid,
    resample_to_spacing,
)
from medseg.runtime import PRECISIONS, resolve_device, resolve_precision
from medseg.volume import LabelMap, LabelVolume, Volume, orientation_code

logger = logging.getLogger(__name__)

__all__ = ["PRECISIONS", "InferenceConfig", "Predictor", "resolve_device", "resolve_precision"]

#: Accepted values of :attr:`InferenceConfig.accumulator`.
ACCUMULATORS = ("float16", "float32")

EMPTY_WARNING = (
    "no body found: no voxel above {thr:g} HU (value range {lo:g}..{hi:g}); the label map is "
    "empty. Check that the input is a CT in Hounsfield units."
)


@dataclass(frozen=True)
class InferenceConfig:
    """How :class:`Predictor` runs (the model's own preprocessing comes from its checkpoint).

    Parameters
    ----------
    overlap
        Window overlap fraction in ``[0, 1)``; 0.5 as nnU-Net.
    sigma_scale
        Gaussian blending sigma as a fraction of the window size.
    batch_size
        Windows per network call; 0 chooses 1 on CPU and 4 on CUDA.
    tta
        Flip test-time augmentation (mirror along the model axes; the left-right axis is left
        out when the label map names sided organs, since mirroring would swap them).
    precision
        Arithmetic of the network (see :func:`resolve_precision`): ``"auto"`` (float16
        autocast on CUDA, bfloat16 autocast on CPUs with native bfloat16 instructions, else
        float32), ``"float32"``, ``"bfloat16"`` or ``"float16"`` (autocast).
    accumulator
        Storage of the blended logits while windows are stitched: ``"float16"`` (default; half
        the memory of float32: each window's logits are shifted by their per-voxel maximum over
        channels before blending, which leaves the arg-max and the softmax unchanged; on the
        300 × 512 × 512 benchmark CT with a float32 network it changed 640 of 78.6 M voxels,
        all near-ties, against float32) or ``"float32"`` (plain weighted sums: with
        ``precision="float32"`` the same sums as MONAI's ``sliding_window_inference``).
    body_threshold_hu
        Voxels above this are body; windows without any are skipped.
    body_margin_mm
        Margin added around the body box before cropping.
    min_extent_fraction
        A volume shorter than this fraction of the window along any axis (on the model grid) is
        refused with :class:`~medseg.errors.InputError`; between this and a full window it is
        padded with air.
    postprocess
        Clean-ups applied to the labels.
    quality
        Also measure how much the network trusts each organ (:mod:`medseg.inference.quality`:
        expected Dice from its probabilities, and TTA disagreement when ``tta`` is on) into
        :attr:`Predictor.last_quality`. Costs one probability map on the model grid (and one
        accumulator per flip with TTA); the labels are the same either way.
    """

    overlap: float = 0.5
    sigma_scale: float = 0.125
    batch_size: int = 0
    tta: bool = False
    precision: str = "auto"
    accumulator: str = "float16"
    body_threshold_hu: float = -500.0
    body_margin_mm: float = 10.0
    min_extent_fraction: float = 0.5
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    quality: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError(f"overlap must be in [0, 1); got {self.overlap}.")
        if self.batch_size < 0:
            raise ConfigError(f"batch_size must be ≥ 0 (0 = auto); got {self.batch_size}.")
        if self.sigma_scale <= 0:
            raise ConfigError(f"sigma_scale must be > 0; got {self.sigma_scale}.")
        if not 0.0 < self.min_extent_fraction <= 1.0:
            raise ConfigError(
                f"min_extent_fraction must be in (0, 1]; got {self.min_extent_fraction}."
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}."
            )
        if self.accumulator not in ACCUMULATORS:
            raise ConfigError(
                f"accumulator must be one of {', '.join(ACCUMULATORS)}; got {self.accumulator!r}."
            )
        if self.body_margin_mm < 0:
            raise ConfigError(f"body_margin_mm must be ≥ 0; got {self.body_margin_mm}.")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InferenceConfig:
        """Build from a mapping (e.g. parsed YAML), refusing unknown keys.

        Examples
        --------
        >>> c = InferenceConfig.from_dict({"overlap": 0.25, "postprocess": {"fill_holes": False}})
        >>> c.overlap, c.postprocess.fill_holes
        (0.25, False)
        """
        kw = checked_mapping(cls, data, what="inference config")
        if isinstance(kw.get("postprocess"), Mapping):
            kw["postprocess"] = PostprocessConfig.from_dict(kw["postprocess"])
        return cls(**kw)


def declared_mirror_axes(training_config: Mapping[str, Any]) -> tuple[int, ...] | None:
    """The model-grid axes a checkpoint's training mirrored, from its stored training config.

    A checkpoint trained by medseg declares them (``mirror_axes``; medseg's CT training never
    mirrors, so ``()``); one without a training config leaves them undeclared (``None``).
    """
    if training_config.get("optim") is None:
        return None
    return tuple(int(a) for a in training_config.get("mirror_axes") or ())


def tta_flips(
    mirror_axes: Sequence[int] | None, label_map: LabelMap, orientation: str
) -> list[tuple[int, ...]]:
    """Mirror combinations for TTA: the declared axes (all three when undeclared), never the
    left–right axis when the label map names sided organs (mirroring would swap them)."""
    axes = [0, 1, 2] if mirror_axes is None else sorted({int(a) for a in mirror_axes})
    if any(label_side(e.name) for e in label_map):
        lr = next(i for i, c in enumerate(orientation) if c in "LR")
        axes = [a for a in axes if a != lr]
    return flip_combinations(axes)


def _check_tta(name: str, flips: Sequence[tuple[int, ...]]) -> None:
    if len(flips) < 2:
        raise ConfigError(
            f"test-time augmentation mirrors the image, but model {name!r} was trained "
            "without mirrored images (its checkpoint declares no mirror axes): a mirrored "
            "head is anatomy it never saw, and averaging over it loses organs. Run without "
            "--tta (inference.tta: false), or train a model with mirroring."
        )


def check_inference_for_checkpoint(
    name_or_path: str | os.PathLike[str], config: InferenceConfig
) -> None:
    """Refuse, before any work, an inference config the checkpoint cannot honour (TTA on a
    model trained without mirroring). Reads the checkpoint; builds no network."""
    if not config.tta:
        return
    from medseg.models.checkpoint import read_checkpoint

    _, info = read_checkpoint(name_or_path)
    flips = tta_flips(
        declared_mirror_axes(info.config), info.label_map, info.preprocessing.orientation
    )
    name = os.path.basename(os.fspath(name_or_path)).removesuffix(".pt")
    _check_tta(name, flips)


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class _GridRef:
    """Shape and affine of a grid (no voxels)."""

    shape: tuple[int, int, int]
    affine: npt.NDArray[np.float64]


class Predictor:
    """Run a segmentation network on CT volumes; the model is loaded once.

    Parameters
    ----------
    model
        Module mapping ``(B, 1, d, h, w)`` normalised CT to ``(B, len(label_map) + 1, d, h, w)``
        logits (channel 0 = background, channel ``i`` = ``label_map.entries[i - 1]``).
    spec
        The model's preprocessing (spacing, orientation, HU window, window size).
    label_map
        Names of the output channels 1..K.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or a :class:`torch.device`.
    config
        Inference options.
    name, version
        Recorded in outputs (e.g. ``segmentation.json``).
    num_threads
        Set torch's CPU thread count (``None`` keeps the current setting).

    Examples
    --------
    >>> import numpy as np, torch
    >>> from medseg.preprocess import PreprocessingSpec
    >>> from medseg.volume import LabelMap, Volume, affine_from_geometry
    >>> class Bone(torch.nn.Module):  # 2 channels: background, "bone" where input > 0.9
    ...     def forward(self, x):
    ...         return torch.cat([0.9 - x, x - 0.9], dim=1)
    >>> spec = PreprocessingSpec((2.0, 2.0, 2.0), "SPL", (-1000.0, 1000.0), (8, 8, 8))
    >>> p = Predictor(Bone(), spec, LabelMap.from_names(["Bone"]), device="cpu")
    >>> ct = np.full((12, 12, 12), -1000.0); ct[3:9, 3:9, 3:9] = 0.0; ct[5:7, 5:7, 5:7] = 1000.0
    >>> out = p.predict(Volume(ct, affine_from_geometry((2.0, 2.0, 2.0))))
    >>> int(out.volume.array.sum()), out.volume.shape
    (8, (12, 12, 12))
    """

    def __init__(  # noqa: PLR0913 -- three inputs, then keyword-only options
        self,
        model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        spec: PreprocessingSpec,
        label_map: LabelMap,
        *,
        device: str | torch.device = "auto",
        config: InferenceConfig | None = None,
        name: str = "model",
        version: str = "",
        num_threads: int | None = None,
        mirror_axes: Sequence[int] | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.config = config or InferenceConfig()
        if isinstance(model, nn.Module):
            model = model.to(self.device).eval()
        self.model = model
        self.spec = spec
        self.label_map = label_map
        self.name = name
        self.version = version
        #: sha256 of the checkpoint file ("" for a model passed in memory).
        self.model_sha256 = ""
        if num_threads is not None and self.device.type == "cpu":
            torch.set_num_threads(max(1, int(num_threads)))
        #: Seconds per stage of the last :meth:`predict` call.
        self.last_timings: dict[str, float] = {}
        #: Windows run / skipped in the last call.
        self.last_windows: dict[str, int] = {}
        #: Largest size of the blended-logit accumulator in the last call (bytes).
        self.last_accumulator_bytes = 0
        #: Organ → expected Dice (and TTA disagreement) of the last call (``config.quality``).
        self.last_quality: dict[str, dict[str, float]] = {}
        #: Network precision used (``config.precision`` resolved for the device).
        self.precision = resolve_precision(self.config.precision, self.device)
        #: Model-grid axes the network was trained to see mirrored (``None``: not declared).
        self.mirror_axes = None if mirror_axes is None else tuple(int(a) for a in mirror_axes)
        if self.config.tta:
            _check_tta(name, self.flips)

    @classmethod
    def from_checkpoint(
        cls,
        name_or_path: str | os.PathLike[str],
        device: str | torch.device = "auto",
        *,
        config: InferenceConfig | None = None,
        num_threads: int | None = None,
    ) -> Predictor:
        """Load a checkpoint (shipped name such as ``"hn_oar"`` or a ``.pt`` path) once."""
        from medseg.models import load_checkpoint

        dev = resolve_device(device)
        model, info = load_checkpoint(name_or_path, device=dev)
        name = os.fspath(name_or_path)
        name = os.path.basename(name).removesuffix(".pt") if name.endswith(".pt") else name
        digest = _file_sha256(info.path)
        version = f"medseg {info.medseg_version}; sha256 {digest[:16]}"
        predictor = cls(
            model,
            info.preprocessing,
            info.label_map,
            device=dev,
            config=config,
            name=name,
            version=version,
            num_threads=num_threads,
            mirror_axes=declared_mirror_axes(info.config),
        )
        predictor.model_sha256 = digest
        return predictor

    # ------------------------------------------------------------------------------------------
    @property
    def flips(self) -> list[tuple[int, ...]]:
        """Mirror combinations used for TTA (``[()]`` without TTA).

        Only axes the model was trained to see mirrored (:attr:`mirror_axes`; all three when
        undeclared), never the left–right axis when the label map names sided organs.
        """
        if not self.config.tta:
            return [()]
        return tta_flips(self.mirror_axes, self.label_map, self.spec.orientation)

    def _check_extent(self, grid: Volume, original: Volume) -> None:
        roi = self.spec.roi_size
        need = [int(np.ceil(self.config.min_extent_fraction * r)) for r in roi]
        short = [i for i in range(3) if grid.shape[i] < need[i]]
        if short:
            i = short[0]
            got_mm = grid.shape[i] * grid.spacing_mm[i]
            need_mm = need[i] * self.spec.spacing_mm[i]
            raise InputError(
                f"volume too small for model {self.name!r}: axis {i} of the resampled image "
                f"({self.spec.orientation[i]}) covers {got_mm:.1f} mm ({grid.shape[i]} voxels of "
                f"{grid.spacing_mm[i]:.2f} mm); the model needs at least {need_mm:.1f} mm "
                f"({need[i]} voxels, half its {roi[i]}-voxel window). Input shape "
                f"{original.shape}, spacing {tuple(round(s, 3) for s in original.spacing_mm)} mm. "
                "Give a 3D CT covering the region (a single slice or 2D image cannot be segmented)."
            )

    def _body_box(self, grid: Volume) -> tuple[slice, slice, slice]:
        """Body bounding box plus ``body_margin_mm`` (found on a subsampled copy when large)."""
        step = max(1, int(np.ceil((grid.array.size / 4e6) ** (1.0 / 3.0))))
        if step > 1:
            affine = grid.affine.copy()
            affine[:3, :3] = grid.affine[:3, :3] * step
            small = Volume(grid.array[::step, ::step, ::step], affine)
            box = body_bounding_box(small, self.config.body_threshold_hu)
            box = tuple(  # type: ignore[assignment]
                slice(max(0, s.start * step - step + 1), min(n, s.stop * step))
                for s, n in zip(box, grid.shape, strict=True)
            )
        else:
            box = body_bounding_box(grid, self.config.body_threshold_hu)
        out = []
        for i, s in enumerate(box):
            margin = int(np.ceil(self.config.body_margin_mm / grid.spacing_mm[i]))
            out.append(slice(max(0, s.start - margin), min(grid.shape[i], s.stop + margin)))
        return (out[0], out[1], out[2])

    def _empty(self, volume: Volume, warning: str) -> LabelVolume:
        labels = np.zeros(
            volume.shape, dtype=np.uint8 if max(self.label_map.ids, default=0) < 256 else np.uint16
        )
        vol = Volume(labels, volume.affine.copy(), modality="SEG", source=volume.source)
        return LabelVolume(vol, self.label_map, (warning,))

    @overload
    def predict(
        self,
        volume: Volume,
        *,
        return_probabilities: Literal[False] = ...,
        progress: Callable[[int, int], None] | None = ...,
    ) -> LabelVolume: ...

    @overload
    def predict(
        self,
        volume: Volume,
        *,
        return_probabilities: Literal[True],
        progress: Callable[[int, int], None] | None = ...,
    ) -> tuple[LabelVolume, npt.NDArray[np.float16]]: ...

    def predict(
        self,
        volume: Volume,
        *,
        return_probabilities: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> LabelVolume | tuple[LabelVolume, npt.NDArray[np.float16]]:
        """Segment ``volume`` (CT in HU); labels come back on exactly its grid.

        Parameters
        ----------
        volume
            Any orientation and spacing (a 3D :class:`~medseg.volume.Volume`).
        return_probabilities
            Also return softmax probabilities ``(K + 1, *volume.shape)`` float16 on the input
            grid (channel 0 background; linear interpolation). Needs ``(K + 1) × voxels × 2``
            bytes.
        progress
            Called with ``(windows_done, windows_total)``.

        Returns
        -------
        LabelVolume or (LabelVolume, ndarray)
            Labels with the model's :class:`~medseg.volume.LabelMap` ids; warnings name an empty
            body, removed organs and failed laterality checks.

        Raises
        ------
        InputError
            Volume shorter than half a window along an axis (e.g. a single slice).
        """
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        spec, cfg = self.spec, self.config
        # one canonical index order for every DICOM encoding of the same image (head/feet
        # first, negated cosines): exact flips/permutations; labels come back the same way
        grid = reorient(volume, spec.orientation)
        canonical = _GridRef(grid.shape, grid.affine)
        resampled = not np.allclose(grid.spacing_mm, spec.spacing_mm, rtol=1e-4, atol=1e-4)
        if resampled:
            grid = resample_to_spacing(grid, spec.spacing_mm, order=1)
        self._check_extent(grid, volume)
        foreground = grid.array > cfg.body_threshold_hu
        if not foreground.any():
            a = volume.array
            msg = EMPTY_WARNING.format(
                thr=cfg.body_threshold_hu, lo=float(a.min()), hi=float(a.max())
            )
            logger.warning(msg)
            empty = self._empty(volume, msg)
            self.last_timings = {"total": time.perf_counter() - t0}
            self.last_windows = {"run": 0, "skipped": 0}
            if return_probabilities:
                background = np.zeros((len(self.label_map) + 1, *volume.shape), np.float16)
                background[0] = 1.0
                return empty, background
            return empty
        del foreground
        box = self._body_box(grid)
        threshold = cfg.body_threshold_hu

        def has_body(window: tuple[slice, slice, slice]) -> bool:
            """Body voxel in ``window`` (tested on the HU array: no full-size mask in memory)."""
            inner = tuple(
                slice(max(w.start, b.start), min(w.stop, b.stop))
                for w, b in zip(window, box, strict=True)
            )
            if any(s.start >= s.stop for s in inner):
                return False
            return bool((grid.array[inner] > threshold).any())

        timings["preprocess"] = time.perf_counter() - t0

        t1 = time.perf_counter()
        batch = cfg.batch_size or (4 if self.device.type == "cuda" else 1)
        window_hu = spec.window_hu
        window = WindowConfig(
            spec.roi_size,
            overlap=cfg.overlap,
            sigma_scale=cfg.sigma_scale,
            batch_size=batch,
            flips=self.flips,
            precision=self.precision,  # type: ignore[arg-type]
            accumulator=cfg.accumulator,  # type: ignore[arg-type]
            pad_value=-1024.0,
            flip_labels=cfg.quality,
        )
        result = sliding_window_labels(
            grid.array,
            self.model,
            window,
            foreground=has_body,
            device=self.device,
            normalise=lambda a: normalise_hu(a, window_hu),
            return_probabilities=return_probabilities or cfg.quality,
            progress=progress,
        )
        timings["network"] = time.perf_counter() - t1
        self.last_windows = {"run": result.windows_run, "skipped": result.windows_skipped}
        self.last_accumulator_bytes = result.accumulator_peak_bytes

        t2 = time.perf_counter()
        ids = np.array([0, *self.label_map.ids], dtype=np.int64)
        if result.windows_run and int(result.labels.max()) >= len(ids):
            raise ModelError(
                f"model {self.name!r} produced channel {int(result.labels.max())} but the label "
                f"map names only {len(ids) - 1} labels."
            )
        dtype = np.uint8 if ids.max() < 256 else np.uint16
        # organs live inside the body box: labels outside it are background
        region = crop(Volume(result.labels, grid.affine), box)
        labels = ids.astype(dtype)[region.array]
        labels, warnings = postprocess_labels(
            labels, region.spacing_mm, cfg.postprocess, self.label_map
        )
        body = grid.array[box] > threshold
        warnings += laterality_warnings(labels, region.affine, self.label_map, body)
        del body
        self.last_quality = {}
        if cfg.quality and result.windows_run:
            self.last_quality = organ_quality(
                labels,
                None if result.probabilities is None else result.probabilities[(slice(None), *box)],
                {e.name: (e.id, c) for c, e in enumerate(self.label_map, start=1)},
                [f[box] for f in result.flip_labels],
            )
        for w in warnings:
            logger.warning(w)
        timings["postprocess"] = time.perf_counter() - t2

        t3 = time.perf_counter()
        out = self._to_input_grid(labels, region, grid, volume, box=box, canonical=canonical)
        vol = Volume(out, volume.affine.copy(), modality="SEG", source=volume.source)
        label_volume = LabelVolume(vol, self.label_map, tuple(warnings))
        probs: npt.NDArray[np.float16] | None = None
        if return_probabilities and result.probabilities is not None:
            probs = self._probabilities_to_input(result.probabilities, grid, volume)
        timings["resample_back"] = time.perf_counter() - t3
        timings["total"] = time.perf_counter() - t0
        self.last_timings = timings
        logger.info(
            "predicted %s: %d windows run, %d skipped, %.1f s",
            volume.shape,
            result.windows_run,
            result.windows_skipped,
            timings["total"],
        )
        if return_probabilities:
            assert probs is not None
            return label_volume, probs
        return label_volume

    @staticmethod
    def _to_input_grid(
        labels: npt.NDArray[np.integer],
        region: Volume,
        grid: Volume,
        volume: Volume,
        *,
        box: tuple[slice, slice, slice],
        canonical: _GridRef,
    ) -> npt.NDArray[np.integer]:
        """Labels on the cropped model grid → array of ``volume.shape`` on ``volume.affine``.

        Nearest-neighbour resampling (when the model grid differs from the input's spacing)
        is done on the *canonical* grid (the input reoriented to the model's axis order), then
        the axis permutation/flips are undone exactly; so the same image stored in another
        encoding gets the same labels voxel for voxel (ties of nearest-neighbour rounding are
        broken in the same index direction).
        """
        target = orientation_code(volume.affine)
        if canonical.shape == grid.shape and np.allclose(canonical.affine, grid.affine):
            full = np.zeros(grid.shape, dtype=labels.dtype)  # not resampled: paste
            full[box] = labels
        else:
            ref = Volume(np.broadcast_to(np.zeros((), np.uint8), canonical.shape), canonical.affine)
            full = resample_to_grid(Volume(labels, region.affine), ref, order=0, fill_value=0).array
        back = reorient(Volume(full, canonical.affine), target)
        if back.same_grid(volume, tolerance_mm=1e-3):
            return back.array.astype(labels.dtype, copy=False)
        # oblique grids whose axes reorient cannot match exactly: resample directly
        moved = resample_to_grid(Volume(labels, region.affine), volume, order=0, fill_value=0)
        return moved.array.astype(labels.dtype, copy=False)

    @staticmethod
    def _probabilities_to_input(
        probs: npt.NDArray[np.float16], grid: Volume, volume: Volume
    ) -> npt.NDArray[np.float16]:
        out = np.zeros((probs.shape[0], *volume.shape), dtype=np.float16)
        for c in range(probs.shape[0]):
            channel = Volume(probs[c].astype(np.float32), grid.affine)
            fill = 1.0 if c == 0 else 0.0
            out[c] = resample_to_grid(channel, volume, order=1, fill_value=fill).array
        return out
