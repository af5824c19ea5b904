"""Wound area over time: one row per photo, in the order the photos were taken.

A wound-care study photographs the wound at each visit. ``medseg photo predict`` segments the
photos; :func:`build_series` measures each photo's mask with *that photo's own* calibration (a
marker detected in each photo, since the camera distance changes between visits, or one
explicit ``mm_per_pixel`` for a fixed camera rig), dates it (an explicit date, else EXIF
``DateTimeOriginal``) and reports the area in cm² with its change since the first and the
previous calibrated photo as a *percentage area reduction*,
``PAR = (A_before - A_now) / A_before * 100`` -- positive while the wound shrinks, the usual
healing endpoint (e.g. PAR >= 50 % after 4 weeks).

Pixel areas of different photos are not comparable (the distance and zoom change), so
reductions are computed between calibrated photos only; an uncalibrated photo is listed with
its pixel area, a note saying why it has no scale, and no reduction. Photos are ordered by
date when every photo has one; otherwise they keep the order given, and the rows say so.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from medseg.errors import InputError
from medseg.io.atomic import nearest_existing, write_atomic
from medseg.photo.datasets import read_mask, read_photo
from medseg.photo.measure import (
    Calibration,
    check_calibration_options,
    detect_circular_marker,
    measure_mask,
)

logger = logging.getLogger(__name__)

__all__ = [
    "SeriesRow",
    "build_series",
    "find_mask",
    "parse_date",
    "photo_taken",
    "plot_series",
    "series_csv",
    "write_series",
]

_EXIF_IFD = 0x8769
_DATE_TAGS = (
    (_EXIF_IFD, 0x9003),
    (_EXIF_IFD, 0x9004),
    (None, 0x0132),
)  # Original, Digitized, DateTime


@dataclass(frozen=True)
class SeriesRow:
    """One photo of the series (``*_cm2`` / ``*_mm`` / reductions are None when uncalibrated)."""

    photo: str
    mask: str
    taken: str | None  # ISO 8601, from --date or EXIF
    date_source: str  # "given", "exif" or "none"
    days: float | None  # since the first photo (all photos dated only)
    calibrated: bool
    mm_per_pixel: float | None
    calibration: str  # where the scale came from, or why there is none
    n_regions: int
    area_px: int
    area_cm2: float | None
    length_mm: float | None
    width_mm: float | None
    perimeter_mm: float | None
    reduction_from_first_pct: float | None
    reduction_from_previous_pct: float | None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready)."""
        return asdict(self)


def parse_date(text: str) -> datetime:
    """Parse an ISO date or date-time (``2026-03-01``, ``2026-03-01T14:30``) or an EXIF one.

    A time-zone offset is dropped, keeping the wall-clock time, as EXIF dates carry none (so
    both kinds sort together).

    >>> parse_date("2026-03-01"), parse_date("2026:03:01 14:30:00")
    (datetime.datetime(2026, 3, 1, 0, 0), datetime.datetime(2026, 3, 1, 14, 30))
    >>> parse_date("2026-03-01T14:30+02:00")
    datetime.datetime(2026, 3, 1, 14, 30)

    Raises
    ------
    InputError
        Neither form.
    """
    text = text.strip()
    try:
        return datetime.fromisoformat(text).replace(tzinfo=None)
    except ValueError:
        pass
    try:
        return datetime.strptime(text, "%Y:%m:%d %H:%M:%S")
    except ValueError as exc:
        raise InputError(
            f"cannot read the date {text!r}: use YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS]."
        ) from exc


def photo_taken(path: str | Path) -> datetime | None:
    """When the photo was taken, from EXIF ``DateTimeOriginal`` (then ``DateTimeDigitized``,
    then ``DateTime``); None when the file carries no readable date.

    Raises
    ------
    InputError
        Missing, corrupt or non-image file.
    """
    try:
        with Image.open(path) as image:
            exif = image.getexif()
    except FileNotFoundError as exc:
        raise InputError(f"photo not found: {path}") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{path} is not a readable image: {exc}") from exc
    for ifd, tag in _DATE_TAGS:
        value = (exif.get_ifd(ifd) if ifd is not None else exif).get(tag)
        if isinstance(value, bytes):
            value = value.decode("ascii", "ignore")
        if isinstance(value, str) and value.strip(" \x00"):
            try:
                return parse_date(value.strip(" \x00"))
            except InputError:
                logger.warning("%s: unreadable EXIF date %r ignored", path, value)
    return None


def find_mask(photo: Path, mask_dir: Path) -> Path:
    """The mask of ``photo`` in ``mask_dir``: ``<stem>_mask.png`` (``medseg photo predict``'s
    naming), else ``<stem>.png`` (reference masks).

    Raises
    ------
    InputError
        Neither exists (the photo itself does not count).
    """
    if not Path(photo).is_file():
        raise InputError(f"photo {photo} does not exist; pass an existing image file.")
    if not Path(mask_dir).is_dir():
        raise InputError(f"--masks {mask_dir} is not a folder; give the folder holding the masks.")
    for name in (f"{photo.stem}_mask.png", f"{photo.stem}.png"):
        candidate = mask_dir / name
        # a PNG photo in its own folder is not its mask
        if candidate.is_file() and candidate.resolve() != Path(photo).resolve():
            return candidate
    raise InputError(
        f"no mask for {photo.name} in {mask_dir}: expected {photo.stem}_mask.png (from "
        f"`medseg photo predict {photo} -o {mask_dir}`) or {photo.stem}.png."
    )


def _calibrate(
    photo: Path,
    image: npt.NDArray[np.uint8],
    mm_per_pixel: float | None,
    marker_diameter_mm: float | None,
    marker_color: str,
) -> tuple[Calibration | None, str]:
    """The photo's scale and a note on where it came from (or why there is none)."""
    if mm_per_pixel is not None:
        return Calibration(mm_per_pixel, "explicit"), f"explicit {mm_per_pixel} mm/pixel"
    if marker_diameter_mm is None:
        return None, "uncalibrated: no --mm-per-pixel or marker"
    try:
        calibration = detect_circular_marker(
            image, diameter_mm=marker_diameter_mm, color=marker_color
        )
    except InputError as exc:
        logger.warning("%s: %s", photo, exc)
        return None, f"uncalibrated: {exc}"
    return calibration, calibration.detail


def _reduction(before: float, now: float) -> float | None:
    return None if before <= 0 else (before - now) / before * 100.0


def build_series(
    photos: Sequence[Path],
    masks: Sequence[Path],
    *,
    mm_per_pixel: float | None = None,
    marker_diameter_mm: float | None = None,
    marker_color: str = "#0000ff",
    dates: Mapping[str, datetime] | None = None,
) -> list[SeriesRow]:
    """Measure each photo's mask and order the rows in time (see the module docstring).

    ``masks[i]`` belongs to ``photos[i]`` and must have its displayed size. ``dates`` (keyed by
    photo stem) override EXIF dates. Give at most one of ``mm_per_pixel`` and
    ``marker_diameter_mm``; a photo whose marker is not found becomes an uncalibrated row.

    Raises
    ------
    InputError
        Unequal lists, a photo listed twice, a mask of the wrong size, both calibrations,
        unreadable files, or a ``dates`` key that names no photo.
    """
    if len(photos) != len(masks):
        raise InputError(f"{len(photos)} photos but {len(masks)} masks: give one mask per photo.")
    if not photos:
        raise InputError("no photos given.")
    check_calibration_options(mm_per_pixel, marker_diameter_mm)
    stems = [Path(p).stem for p in photos]
    repeated = sorted({s for s in stems if stems.count(s) > 1})
    if repeated:
        raise InputError(f"photo name(s) {repeated} listed more than once; each visit once.")
    dates = dict(dates or {})
    unknown = sorted(set(dates) - set(stems))
    if unknown:
        raise InputError(f"--date names no given photo: {unknown} (use the photo's file stem).")

    measured: list[tuple[datetime | None, str, dict[str, Any]]] = []
    for photo, mask_path in zip(map(Path, photos), map(Path, masks), strict=True):
        image = read_photo(photo)
        mask = read_mask(mask_path)
        if mask.shape != image.shape[:2]:
            raise InputError(
                f"mask {mask_path} is {mask.shape[0]}x{mask.shape[1]} but photo {photo} is "
                f"{image.shape[0]}x{image.shape[1]} (rows x columns, as displayed): this is not "
                "its mask; `medseg photo predict` writes masks of the photo's size."
            )
        calibration, note = _calibrate(photo, image, mm_per_pixel, marker_diameter_mm, marker_color)
        taken: datetime | None
        if photo.stem in dates:
            taken, source = dates[photo.stem], "given"
        else:
            taken = photo_taken(photo)
            source = "exif" if taken is not None else "none"
        result = measure_mask(mask, calibration)
        result.update(photo=str(photo), mask=str(mask_path), note=note)
        measured.append((taken, source, result))

    all_dated = all(taken is not None for taken, _, _ in measured)
    if all_dated:
        measured.sort(key=lambda item: item[0])  # type: ignore[arg-type,return-value]
    else:
        missing = [Path(r["photo"]).name for t, _, r in measured if t is None]
        logger.warning(
            "no date for %s (no EXIF date, no --date): rows keep the order given", missing
        )
    first_time = measured[0][0] if all_dated else None
    rows: list[SeriesRow] = []
    first_area: float | None = None
    previous_area: float | None = None
    for taken, source, result in measured:
        total = result["total"]
        area_cm2 = None if total["area_mm2"] is None else total["area_mm2"] / 100.0
        reduction_first = reduction_previous = None
        if area_cm2 is not None:
            if first_area is None:
                first_area = area_cm2
            else:
                reduction_first = _reduction(first_area, area_cm2)
                reduction_previous = _reduction(previous_area or 0.0, area_cm2)
            previous_area = area_cm2
        rows.append(
            SeriesRow(
                photo=result["photo"],
                mask=result["mask"],
                taken=None if taken is None else taken.isoformat(),
                date_source=source,
                days=None
                if first_time is None or taken is None
                else (taken - first_time).total_seconds() / 86400.0,
                calibrated=result["calibrated"],
                mm_per_pixel=None
                if result["calibration"] is None
                else result["calibration"]["mm_per_pixel"],
                calibration=result["note"],
                n_regions=result["n_regions"],
                area_px=total["area_px"],
                area_cm2=area_cm2,
                length_mm=total["length_mm"],
                width_mm=total["width_mm"],
                perimeter_mm=total["perimeter_mm"],
                reduction_from_first_pct=reduction_first,
                reduction_from_previous_pct=reduction_previous,
            )
        )
    return rows


def series_csv(rows: Sequence[SeriesRow]) -> str:
    """The rows as CSV text (header = :class:`SeriesRow` fields; None = empty cell)."""
    buffer = io.StringIO()
    names = list(SeriesRow.__dataclass_fields__)
    writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.to_dict().items()})
    return buffer.getvalue()


def plot_series(rows: Sequence[SeriesRow], path: Path) -> bool:
    """Plot area (cm²) against date (or visit number when undated) for the calibrated rows;
    returns False (and writes nothing) when no row is calibrated."""
    points = [(k, r, r.area_cm2) for k, r in enumerate(rows, start=1) if r.area_cm2 is not None]
    if not points:
        return False
    from medseg.plotting import new_figure

    dated = all(r.taken is not None for r in rows)
    xs: list[Any] = [
        datetime.fromisoformat(r.taken) if r.taken is not None and dated else k
        for k, r, _ in points
    ]
    fig, ax = new_figure((6, 3.5))
    ax.plot(xs, [area for _, _, area in points], "o-", color="tab:red")
    for x, (_, r, area) in zip(xs, points, strict=True):
        if r.reduction_from_first_pct is not None:
            change = r.reduction_from_first_pct
            ax.annotate(
                f"{abs(change):.0f}% {'smaller' if change >= 0 else 'larger'}",
                (x, area),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize=8,
            )
    ax.set_ylabel("wound area (cm²)")
    ax.set_xlabel("date taken" if dated else "visit (order given; photos undated)")
    ax.set_ylim(bottom=0)
    ax.margins(x=0.1)  # room for the labels of the first and last photo
    ax.set_title("wound area over time (labels: change since the first photo)", fontsize=9)
    if dated:
        fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def write_series(
    rows: Sequence[SeriesRow], out_dir: Path, *, overwrite: bool = False
) -> list[Path]:
    """Write ``area_series.csv``, ``area_series.json`` and (when a row is calibrated)
    ``area_series.png`` into ``out_dir``; each file appears complete or not at all.

    ``area_series.json`` is written last: a set without it is what a killed run left, and is
    replaced without ``overwrite`` (a replacement removes the old JSON first, so a killed
    replacement is never a complete-looking mix of old and new files).

    Raises
    ------
    InputError
        An output exists and ``overwrite`` is False.
    """
    parent = nearest_existing(out_dir)
    if not parent.is_dir():
        raise InputError(
            f"output {out_dir}: {parent} is a file, not a folder; give another -o folder."
        )
    csv_path, index, png = (out_dir / f"area_series.{ext}" for ext in ("csv", "json", "png"))
    if not index.exists():
        stale = [p for p in (csv_path, png) if p.is_file()]
        for path in stale:
            path.unlink()
        if stale:
            logger.warning(
                "%s: removed %s of an earlier run that did not finish (no area_series.json)",
                out_dir,
                [p.name for p in stale],
            )
    existing = [str(t) for t in (csv_path, index, png) if t.exists()]
    if existing and not overwrite:
        raise InputError(f"{existing} already exist; pass --overwrite or another -o folder.")
    index.unlink(missing_ok=True)
    written = [write_atomic(csv_path, lambda tmp: tmp.write_text(series_csv(rows)))]
    if any(r.area_cm2 is not None for r in rows):
        written.append(write_atomic(png, lambda tmp: plot_series(rows, tmp)))
    else:
        png.unlink(missing_ok=True)
        logger.warning("no calibrated photo: area_series.png (cm² over time) not drawn")
    table = json.dumps({"rows": [r.to_dict() for r in rows]}, indent=2)
    written.insert(1, write_atomic(index, lambda tmp: tmp.write_text(table)))
    return written
