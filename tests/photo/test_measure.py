from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.draw import disk, ellipse

from medseg.errors import InputError
from medseg.photo.measure import Calibration, detect_circular_marker, measure_mask

MM = 0.1  # mm per pixel


def _total(mask: np.ndarray) -> dict:
    return measure_mask(mask, Calibration(MM, "explicit"))["total"]


def test_circle_area_length_width_perimeter() -> None:
    mask = np.zeros((500, 500), bool)
    mask[disk((250, 250), 150)] = True  # diameter 30 mm
    t = _total(mask)
    assert t["area_mm2"] == pytest.approx(math.pi * 15**2, rel=0.01)
    assert t["length_mm"] == pytest.approx(30.0, rel=0.01)
    assert t["width_mm"] == pytest.approx(30.0, rel=0.01)
    assert t["perimeter_mm"] == pytest.approx(2 * math.pi * 15, rel=0.01)


def test_rectangle() -> None:
    mask = np.zeros((300, 400), bool)
    mask[50:150, 40:340] = True  # 10 mm x 30 mm
    t = _total(mask)
    assert t["area_mm2"] == pytest.approx(300.0, rel=0.01)
    assert t["length_mm"] == pytest.approx(math.hypot(10, 30), rel=0.01)  # the diagonal
    assert t["perimeter_mm"] == pytest.approx(80.0, rel=0.01)


def test_ellipse() -> None:
    mask = np.zeros((400, 600), bool)
    mask[ellipse(200, 300, 80, 220)] = True  # semi-axes 8 mm and 22 mm
    t = _total(mask)
    assert t["area_mm2"] == pytest.approx(math.pi * 8 * 22, rel=0.01)
    assert t["length_mm"] == pytest.approx(44.0, rel=0.01)
    assert t["width_mm"] == pytest.approx(16.0, rel=0.02)


def test_uncalibrated_says_so_and_two_regions() -> None:
    mask = np.zeros((100, 100), bool)
    mask[10:20, 10:20] = True
    mask[50:90, 50:60] = True
    result = measure_mask(mask)
    assert result["calibrated"] is False and "uncalibrated" in result["note"]
    assert result["total"]["area_mm2"] is None and result["total"]["length_mm"] is None
    assert result["n_regions"] == 2
    assert [r["area_px"] for r in result["regions"]] == [400, 100]
    assert result["total"]["area_px"] == 500


def test_empty_mask() -> None:
    result = measure_mask(np.zeros((10, 10), bool), Calibration(1.0, "explicit"))
    assert result["n_regions"] == 0 and result["total"]["area_mm2"] == 0.0


def test_marker_calibration_then_area() -> None:
    rng = np.random.default_rng(0)
    photo = rng.integers(150, 200, size=(600, 800, 3)).astype(np.uint8)  # skin-ish noise
    photo[..., 2] //= 2
    photo[disk((120, 650), 100)] = (20, 40, 230)  # blue sticker, 200 px = 20 mm -> 0.1 mm/px
    calibration = detect_circular_marker(photo, diameter_mm=20.0, color="blue")
    assert calibration.source == "marker"
    assert calibration.mm_per_pixel == pytest.approx(0.1, rel=0.01)
    wound = np.zeros(photo.shape[:2], bool)
    wound[ellipse(350, 300, 90, 150)] = True
    area = measure_mask(wound, calibration)["total"]["area_mm2"]
    assert area == pytest.approx(math.pi * 9 * 15, rel=0.02)


def test_marker_absent_is_an_error() -> None:
    photo = np.full((100, 100, 3), 180, np.uint8)
    photo[20:80, 10:90] = (0, 0, 255)  # blue but a rectangle, not a circle
    with pytest.raises(InputError, match="no circular marker"):
        detect_circular_marker(photo, diameter_mm=10.0, color="blue")
