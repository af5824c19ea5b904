"""PNG figures of the review report (matplotlib without pyplot; written atomically).

- :func:`organ_overlay` — axial, coronal and sagittal slices through an organ's centroid: CT in a
  soft-tissue window, the predicted contour in the label colour, the reference dashed.
- :func:`volume_chart` — each organ's volume against the training contours' volumes.
- :func:`batch_timing_chart` — seconds per study by stage, and studies finished over time.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from medseg.io.atomic import write_atomic
from medseg.plotting import new_figure

__all__ = ["CT_WINDOW_HU", "batch_timing_chart", "organ_overlay", "volume_chart"]

#: Soft-tissue window (level 40, width 400) for the CT under the contours.
CT_WINDOW_HU = (-160.0, 240.0)
_DPI = 80


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    return write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=_DPI, format="png"))


def _views(
    array: npt.NDArray[Any], centre: Sequence[int] | npt.NDArray[Any]
) -> list[npt.NDArray[Any]]:
    """Axial, coronal, sagittal 2D views of an SPL array (superior up, patient left right)."""
    k, j, i = (int(c) for c in centre)
    return [array[k], array[:, j, :][::-1], array[:, :, i][::-1]]


def _zoom(
    ax: Any, mask: npt.NDArray[np.bool_], mm: tuple[float, float], shape: tuple[int, ...]
) -> None:
    """Limit a view to the organ with a margin of 30 mm (at least 100 mm across)."""
    where = np.argwhere(mask)
    if where.size == 0:
        return
    limits = []
    for axis in (0, 1):
        lo, hi = where[:, axis].min(), where[:, axis].max()
        margin = 30.0 / mm[axis]
        half = max((hi - lo) / 2.0 + margin, 50.0 / mm[axis])
        mid = (lo + hi) / 2.0
        limits.append((max(mid - half, -0.5), min(mid + half, shape[axis] - 0.5)))
    ax.set_xlim(limits[1])
    ax.set_ylim(limits[0][1], limits[0][0])


def organ_overlay(
    ct: npt.NDArray[np.floating] | None,
    labels: npt.NDArray[np.integer],
    reference: npt.NDArray[np.integer] | None,
    label_id: int,
    colour: tuple[int, int, int],
    spacing_mm: Sequence[float],
    path: str | os.PathLike[str],
    *,
    title: str = "",
) -> Path:
    """Three orthogonal views through one organ, written as a PNG.

    Parameters
    ----------
    ct
        CT in HU on an SPL grid ``(slice, row, column)`` (superior, posterior, left), or
        ``None`` (black background).
    labels, reference
        Predicted and reference label arrays on the same grid (reference may be ``None``).
    label_id
        The organ's id in both.
    colour
        RGB 0–255 of the organ's label.
    spacing_mm
        Grid spacing ``(slice, row, column)`` for the aspect ratio.
    path
        PNG to write.
    title
        Figure title.
    """
    mask = labels == label_id
    ref = None if reference is None else reference == label_id
    where = np.argwhere(mask) if mask.any() else (np.argwhere(ref) if ref is not None else None)
    centre = (
        np.round(where.mean(0)).astype(int)
        if where is not None and len(where)
        else np.array(labels.shape) // 2
    )
    rgb = tuple(c / 255.0 for c in colour)
    fig, axes = new_figure((9.0, 3.4), 1, 3)
    s0, s1, s2 = (float(s) for s in spacing_mm)
    aspects = [s1 / s2, s0 / s2, s0 / s1]
    names = ["axial", "coronal", "sagittal"]
    bg = _views(ct, centre) if ct is not None else [None] * 3
    pm = _views(mask, centre)
    rm = _views(ref, centre) if ref is not None else [None] * 3
    pix = [(s1, s2), (s0, s2), (s0, s1)]  # (row, column) mm per pixel of each view
    for ax, b, p, r, asp, name, mm in zip(axes, bg, pm, rm, aspects, names, pix, strict=True):
        shape = p.shape
        if b is not None:
            ax.imshow(
                b,
                cmap="gray",
                vmin=CT_WINDOW_HU[0],
                vmax=CT_WINDOW_HU[1],
                aspect=asp,
                interpolation="bilinear",
            )
        else:
            ax.imshow(np.zeros(shape), cmap="gray", vmin=0, vmax=1, aspect=asp)
        if p.any():
            ax.contour(p.astype(float), levels=[0.5], colors=[rgb], linewidths=1.6)
        if r is not None and r.any():
            ax.contour(
                r.astype(float), levels=[0.5], colors=["white"], linewidths=1.2, linestyles="dashed"
            )
        _zoom(ax, p if r is None else (p | r), mm, shape)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def volume_chart(
    volumes: Mapping[str, float],
    training: Mapping[str, Any],
    colours: Mapping[str, tuple[int, int, int]],
    path: str | os.PathLike[str],
) -> Path:
    """Each organ's volume (diamond) over the training contours' volumes (dots, 5–95 % bar).

    Parameters
    ----------
    volumes
        Organ → volume in cm³ (0 for a missing organ).
    training
        Organ → training summary (``volume_cm3`` with ``values``, ``q05``, ``q95``).
    colours
        Organ → RGB 0–255.
    path
        PNG to write.
    """
    names = list(volumes)
    fig, ax = new_figure((7.0, 0.45 * len(names) + 1.0))
    for row, name in enumerate(names):
        stats = training.get(name, {}).get("volume_cm3")
        if stats:
            vals = np.asarray(stats.get("values", []), float)
            if vals.size:
                ax.plot(vals, np.full(vals.size, row), "o", color="0.7", ms=3, zorder=1)
            ax.plot([stats["q05"], stats["q95"]], [row, row], "-", color="0.4", lw=2, zorder=2)
        v = volumes[name]
        rgb = tuple(c / 255.0 for c in colours.get(name, (255, 0, 0)))
        ax.plot([max(v, 0.05)], [row], "D", color=rgb, mec="black", ms=8, zorder=3)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names)
    ax.set_xscale("log")
    ax.set_xlabel("volume (cm³, log scale); grey: training contours, bar: 5–95 %")
    ax.invert_yaxis()
    fig.tight_layout()
    return _save(fig, path)


def _parse_time(text: str) -> _dt.datetime | None:
    try:
        t = _dt.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return t if t.tzinfo else t.replace(tzinfo=_dt.UTC)


def batch_timing_chart(
    rows: Sequence[tuple[str, Mapping[str, float], str]], path: str | os.PathLike[str]
) -> Path:
    """Seconds per study by stage (left) and studies finished over time (right).

    Parameters
    ----------
    rows
        ``(label, timings, finished_at)`` per study; timings with ``load_s``, ``predict_s``,
        ``write_s``; ``finished_at`` UTC ISO or ``""``.
    path
        PNG to write.
    """
    fig, (ax1, ax2) = new_figure((9.0, 3.2), 1, 2)
    x = np.arange(len(rows))
    bottom = np.zeros(len(rows))
    for stage, colour in (
        ("load_s", "tab:blue"),
        ("predict_s", "tab:orange"),
        ("write_s", "tab:green"),
    ):
        v = np.array([float(r[1].get(stage, 0.0) or 0.0) for r in rows])
        ax1.bar(x, v, bottom=bottom, color=colour, label=stage.removesuffix("_s"))
        bottom += v
    ax1.set_xticks(x)
    ax1.set_xticklabels([r[0] for r in rows], rotation=60, fontsize=7, ha="right")
    ax1.set_ylabel("seconds")
    ax1.set_title("time per study", fontsize=10)
    if rows:
        ax1.legend(fontsize=8)
    times = sorted(t for t in (_parse_time(r[2]) for r in rows) if t is not None)
    if times:
        t0 = times[0] - _dt.timedelta(seconds=max(bottom.max() if bottom.size else 0.0, 1.0))
        minutes = [(t - t0).total_seconds() / 60.0 for t in times]
        ax2.step([0.0, *minutes], range(len(times) + 1), where="post", color="tab:purple")
        span_h = max(minutes[-1], 1e-6) / 60.0
        ax2.set_title(f"throughput {len(times) / span_h:.0f} studies/hour", fontsize=10)
    else:
        ax2.set_title("no finished studies", fontsize=10)
    ax2.set_xlabel("minutes since the first study started (estimated)")
    ax2.set_ylabel("studies finished")
    fig.tight_layout()
    return _save(fig, path)
