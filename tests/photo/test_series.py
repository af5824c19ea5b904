"""Wound area over time (`medseg photo track`) on real wound photos with drawn markers and masks."""

from __future__ import annotations

import csv
import json
import logging
import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.draw import disk

from medseg.cli import main as medseg
from medseg.errors import InputError
from medseg.photo.series import build_series, find_mask, photo_taken, plot_series, write_series

MARKER_MM = 10.0
MARKER_RGB = (20, 40, 230)
# visit: (photo, EXIF date, marker diameter in px, true wound area in cm2)
VISITS = {
    "visit2": ("0012.png", "2026:03:15 09:30:00", 80, 3.0),  # 0.125 mm/px
    "visit1": ("0011.png", "2026:03:01 09:30:00", 100, 4.0),  # 0.1 mm/px
    "visit3": ("0015.png", "2026:03:29 09:30:00", 125, 1.5),  # 0.08 mm/px
}


def _exif(date: str | None, *, digitized: str | None = None) -> Image.Exif:
    exif = Image.Exif()
    if date is not None:
        exif.get_ifd(0x8769)[0x9003] = date
    if digitized is not None:
        exif[0x0132] = digitized  # IFD0 DateTime: used only without DateTimeOriginal
    return exif


def _visit(
    folder: Path,
    name: str,
    source: Path,
    date: str | None,
    *,
    marker_px: int | None,
    area_cm2: float,
) -> Path:
    """A real wound photo with a blue 10 mm sticker of `marker_px` px (None: no sticker, scale
    0.1 mm/px) and a disc wound mask of `area_cm2` at that scale, saved losslessly with the EXIF
    date."""
    photo = np.asarray(Image.open(source).convert("RGB")).copy()
    if marker_px is not None:
        photo[disk((70, 70), marker_px / 2, shape=photo.shape[:2])] = MARKER_RGB
    mm_per_px = MARKER_MM / (marker_px or 100)
    radius_px = math.sqrt(area_cm2 * 100 / math.pi) / mm_per_px
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[disk((300, 300), radius_px)] = 255
    (folder / "masks").mkdir(exist_ok=True)
    Image.fromarray(mask).save(folder / "masks" / f"{name}_mask.png")
    path = folder / f"{name}.png"
    Image.fromarray(photo).save(path, exif=_exif(date).tobytes())
    return path


@pytest.fixture
def series(tmp_path: Path, shared_data: Path) -> dict[str, Path]:
    images = shared_data / "fuseg_wound" / "train" / "images"
    return {
        name: _visit(tmp_path, name, images / src, date, marker_px=px, area_cm2=area)
        for name, (src, date, px, area) in VISITS.items()
    }


def test_track_orders_by_exif_date_and_reports_cm2_and_reduction(
    series: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["photo", "track", *map(str, series.values()), "--masks", str(tmp_path / "masks")]
    code = medseg([*args, "-o", str(out), "--marker-diameter-mm", "10", "--marker-color", "blue"])
    assert code == 0
    rows = list(csv.DictReader((out / "area_series.csv").open()))
    assert [Path(r["photo"]).stem for r in rows] == ["visit1", "visit2", "visit3"]
    assert [r["date_source"] for r in rows] == ["exif"] * 3
    assert [float(r["days"]) for r in rows] == [0.0, 14.0, 28.0]
    assert [float(r["mm_per_pixel"]) for r in rows] == pytest.approx([0.1, 0.125, 0.08], rel=0.01)
    assert [float(r["area_cm2"]) for r in rows] == pytest.approx([4.0, 3.0, 1.5], rel=0.02)
    # PAR since the first visit: (4 - 3) / 4 = 25 %, (4 - 1.5) / 4 = 62.5 %; since the previous
    assert rows[0]["reduction_from_first_pct"] == rows[0]["reduction_from_previous_pct"] == ""
    assert float(rows[1]["reduction_from_first_pct"]) == pytest.approx(25.0, abs=1.5)
    assert float(rows[2]["reduction_from_first_pct"]) == pytest.approx(62.5, abs=1.5)
    assert float(rows[2]["reduction_from_previous_pct"]) == pytest.approx(50.0, abs=1.5)
    data = json.loads((out / "area_series.json").read_text())["rows"]
    assert [r["area_px"] for r in data] == [int(r["area_px"]) for r in rows]
    with Image.open(out / "area_series.png") as plot:
        assert plot.size[0] > 300 and plot.size[1] > 200
    assert "4.0" in capsys.readouterr().out.splitlines()[0]  # visit 1: ~4.00 cm2
    # the outputs exist now: a second run must not overwrite them silently
    assert medseg([*args, "-o", str(out), "--mm-per-pixel", "0.1"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert [float(r["mm_per_pixel"]) for r in csv.DictReader((out / "area_series.csv").open())][
        1
    ] == pytest.approx(0.125, rel=0.01)


def test_given_date_overrides_exif_and_a_photo_without_marker_is_listed_uncalibrated(
    series: dict[str, Path], tmp_path: Path, shared_data: Path
) -> None:
    # visit 2 without its sticker: listed with its pixel area, excluded from the reductions
    bare = _visit(
        tmp_path,
        "bare",
        shared_data / "fuseg_wound/train/images/0012.png",
        None,
        marker_px=None,
        area_cm2=3.0,
    )
    photos = [series["visit1"], bare, series["visit3"]]
    masks = [find_mask(p, tmp_path / "masks") for p in photos]
    rows = build_series(
        photos,
        masks,
        marker_diameter_mm=MARKER_MM,
        marker_color="blue",
        dates={"bare": datetime(2026, 3, 10), "visit3": datetime(2026, 2, 20)},
    )
    assert [Path(r.photo).stem for r in rows] == ["visit3", "visit1", "bare"]
    assert [r.date_source for r in rows] == ["given", "exif", "given"]
    assert [r.days for r in rows] == pytest.approx([0.0, 9 + 9.5 / 24, 18.0])  # visit 1 09:30
    assert [r.calibrated for r in rows] == [True, True, False]
    assert rows[2].area_cm2 is None and rows[2].area_px > 0
    assert "no circular marker" in rows[2].calibration
    assert rows[2].reduction_from_first_pct is None and rows[2].reduction_from_previous_pct is None
    assert rows[1].reduction_from_first_pct == pytest.approx((1.5 - 4.0) / 1.5 * 100, abs=3.0)


def test_undated_photos_keep_the_order_given(
    tmp_path: Path, shared_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    images = shared_data / "fuseg_wound" / "train" / "images"
    late = _visit(tmp_path, "late", images / "0011.png", None, marker_px=100, area_cm2=2.0)
    early = _visit(tmp_path, "early", images / "0012.png", None, marker_px=100, area_cm2=3.0)
    with caplog.at_level(logging.WARNING):
        rows = build_series(
            [late, early],
            [find_mask(p, tmp_path / "masks") for p in (late, early)],
            mm_per_pixel=0.1,
        )
    assert [Path(r.photo).stem for r in rows] == ["late", "early"]
    assert [r.taken for r in rows] == [None, None] and [r.days for r in rows] == [None, None]
    assert "order given" in caplog.text
    assert rows[1].reduction_from_first_pct == pytest.approx(-50.0, abs=1.5)  # it grew


def test_photo_taken_prefers_date_time_original(tmp_path: Path) -> None:
    path = tmp_path / "p.png"
    exif = _exif("2025:12:24 18:00:00", digitized="2026:01:02 08:00:00")
    Image.new("RGB", (8, 8)).save(path, exif=exif.tobytes())
    assert photo_taken(path) == datetime(2025, 12, 24, 18, 0)
    Image.new("RGB", (8, 8)).save(path, exif=_exif(None, digitized="2026:01:02 08:00:00").tobytes())
    assert photo_taken(path) == datetime(2026, 1, 2, 8, 0)
    Image.new("RGB", (8, 8)).save(path)
    assert photo_taken(path) is None
    path.write_bytes(b"not an image")
    with pytest.raises(InputError, match="not a readable image"):
        photo_taken(path)


def test_bad_inputs_are_clear_errors(
    series: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = series["visit1"]
    with pytest.raises(InputError, match=r"visit1_mask\.png"):
        find_mask(photo, tmp_path)  # visit1.png there is the photo itself, not its mask
    small = tmp_path / "small.png"
    Image.new("L", (64, 64)).save(small)
    with pytest.raises(InputError, match="not its mask"):
        build_series([photo], [small], mm_per_pixel=0.1)
    with pytest.raises(InputError, match="not both"):
        build_series([photo], [small], mm_per_pixel=0.1, marker_diameter_mm=10)
    with pytest.raises(InputError, match="more than once"):
        build_series([photo, photo], [small, small])
    with pytest.raises(InputError, match="names no given photo"):
        build_series([photo], [small], dates={"visit9": datetime(2026, 1, 1)})
    track = ["photo", "track", str(photo), "--masks", str(tmp_path / "masks")]
    out = tmp_path / "o"
    assert medseg([*track, "-o", str(out), "--date", "x"]) == 2
    assert "STEM=YYYY-MM-DD" in capsys.readouterr().err
    assert medseg([*track, "-o", str(out), "--date", "visit1=March"]) == 2
    assert "cannot read the date 'March'" in capsys.readouterr().err
    assert medseg([*track, "-o", str(out), "--mm-per-pixel", "-1"]) == 2
    assert "must be > 0" in capsys.readouterr().err
    assert not out.exists()


def test_plotting_leaves_the_callers_matplotlib_backend_alone(
    series: dict[str, Path], tmp_path: Path
) -> None:
    # matplotlib.use("Agg") inside a library call would switch a notebook's inline plots off
    import matplotlib

    before = matplotlib.get_backend()
    matplotlib.use("pdf")
    try:
        rows = build_series(
            list(series.values()),
            [find_mask(p, tmp_path / "masks") for p in series.values()],
            mm_per_pixel=0.1,
        )
        assert plot_series(rows, tmp_path / "plot.png")
        assert matplotlib.get_backend() == "pdf"
        with Image.open(tmp_path / "plot.png") as plot:
            assert plot.format == "PNG"
    finally:
        matplotlib.use(before)


def test_uncalibrated_series_writes_tables_but_no_cm2_plot(
    series: dict[str, Path], tmp_path: Path
) -> None:
    photos = list(series.values())
    rows = build_series(photos, [find_mask(p, tmp_path / "masks") for p in photos])
    assert all(r.area_cm2 is None and r.reduction_from_first_pct is None for r in rows)
    assert all(r.area_px > 1000 and r.calibration.startswith("uncalibrated") for r in rows)
    written = write_series(rows, tmp_path / "out")
    assert sorted(p.name for p in written) == ["area_series.csv", "area_series.json"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "area_series.csv",
        "area_series.json",
    ]  # no plot, no temporary file left behind
