"""The report's figures drawn with numpy + Pillow: contour pixels, dashes, geometry, orientation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from medseg.qa.figures import organ_overlay, overlay_view, volume_chart

GREEN = (0, 200, 0)
WHITE = (255, 255, 255)
GREY_40HU = 128  # 40 HU in the W400/L40 window: (40 + 160) / 400 * 255 = 127.5, rounded


def _is(img: npt.NDArray[np.uint8], rgb: tuple[int, int, int]) -> npt.NDArray[np.bool_]:
    return np.all(img == np.array(rgb, np.uint8), axis=-1)


def _bbox(mask: npt.NDArray[np.bool_]) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1), inclusive."""
    rows, cols = np.nonzero(mask)
    return int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())


def test_contour_is_the_squares_boundary_after_the_upscale() -> None:
    ct = np.full((40, 40), 40.0)
    square = np.zeros((40, 40), bool)
    square[15:25, 20:30] = True  # rows 15..24, columns 20..29
    img = overlay_view(ct, square, None, GREEN, (160, 160))  # 4 output pixels per input pixel
    assert img.shape == (160, 160, 3) and img.dtype == np.uint8
    # the upscaled square covers rows 60..99, columns 80..119; its 2-pixel inner band is green
    expected = np.zeros((160, 160), bool)
    expected[60:100, 80:120] = True
    expected[62:98, 82:118] = False
    np.testing.assert_array_equal(_is(img, GREEN), expected)
    # everything else is the CT at 40 HU
    assert np.all(img[~expected] == GREY_40HU)


def test_reference_is_dashed_white_on_its_boundary() -> None:
    ct = np.full((40, 40), 40.0)
    ref = np.zeros((40, 40), bool)
    ref[10:30, 5:35] = True  # output rows 40..119, columns 20..139
    pred = np.zeros((40, 40), bool)
    pred[15:25, 12:28] = True
    img = overlay_view(ct, pred, ref, GREEN, (160, 160))
    white = _is(img, WHITE)
    band = np.zeros((160, 160), bool)
    band[40:120, 20:140] = True
    band[42:118, 22:138] = False
    assert white.any() and not (white & ~band).any()  # only on the reference's boundary
    assert 0.45 < white.sum() / band.sum() < 0.75  # dashes: 6 on, 4 off
    # along the top edge: runs of 6 white pixels separated by 4 of CT
    top = white[40, 20:140]
    np.testing.assert_array_equal(top, (np.arange(20, 140) % 10) < 6)
    # along the left edge (a vertical run) too, between the corners (which follow the columns)
    left = white[42:118, 20]
    np.testing.assert_array_equal(left, (np.arange(42, 118) % 10) < 6)
    # the prediction's contour is untouched where the reference is not
    assert _is(img, GREEN)[60:100, 48:112].sum() > 0


def test_no_ct_is_black() -> None:
    mask = np.zeros((10, 10), bool)
    mask[3:7, 3:7] = True
    img = overlay_view(None, mask, None, GREEN, (20, 20))
    assert _is(img, GREEN).sum() == 8 * 8 - 4 * 4
    assert np.all(img[~_is(img, GREEN)] == 0)


def _panels(img: npt.NDArray[np.uint8]) -> list[tuple[int, int, int, int]]:
    """Bounding boxes of the three views (the CT at 40 HU), left to right."""
    ct = np.all(img == GREY_40HU, axis=-1)
    third = img.shape[1] // 3
    boxes = []
    for n in range(3):
        part = ct[:, n * third : (n + 1) * third]
        # rows and columns that are mostly CT (the antialiased titles have a few such pixels)
        rows = np.nonzero(part.sum(axis=1) > 30)[0]
        cols = np.nonzero(part[rows].sum(axis=0) > 30)[0] + n * third
        assert rows.size and cols.size, f"view {n}: no CT panel found"
        boxes.append((int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())))
    return boxes


def test_organ_overlay_geometry_orientation_and_aspect(tmp_path: Path) -> None:
    # SPL grid: 40 slices of 3 mm, 120 rows of 1 mm, 240 columns of 0.5 mm (120 mm cube)
    shape, spacing = (40, 120, 240), (3.0, 1.0, 0.5)
    ct = np.full(shape, 40.0, np.float32)
    labels = np.zeros(shape, np.uint8)
    # an organ high up (superior: slices 28..37), at the front (anterior: rows 5..24) and
    # 80 mm wide (columns 40..199): crops clipped at the array's superior and anterior faces
    labels[28:38, 5:25, 40:200] = 3
    reference = np.zeros(shape, np.uint8)
    reference[29:37, 8:22, 60:180] = 3
    out = organ_overlay(
        ct, labels, reference, 3, GREEN, spacing, tmp_path / "organ.png", title="Organ"
    )
    assert out == tmp_path / "organ.png"
    with Image.open(out) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        img = np.asarray(im)
    assert img.shape == (260 + 24 + 18 + 12, 3 * 260 + 4 * 12, 3)
    boxes = _panels(img)
    # crops (organ ± 30 mm, at least 100 mm across, clipped to the array), in mm (rows, cols):
    # axial 65 x 120 (rows 0..64 of 1 mm, all 240 columns), coronal 72 x 120 (24 slices),
    # sagittal 72 x 65; each fitted into 260 px with square output pixels
    crops_mm = [(65.0, 120.0), (72.0, 120.0), (72.0, 65.0)]
    for (r0, r1, c0, c1), (h_mm, w_mm) in zip(boxes, crops_mm, strict=True):
        scale = 260.0 / max(h_mm, w_mm)
        assert abs((r1 - r0 + 1) - h_mm * scale) <= 1
        assert abs((c1 - c0 + 1) - w_mm * scale) <= 1
    # the organ's contour in each view: size in mm x scale, and where it must be
    organ_mm = [(20.0, 80.0), (30.0, 80.0), (30.0, 20.0)]
    green = _is(img, GREEN)
    white = _is(img, WHITE)
    for n, ((r0, r1, c0, c1), (h_mm, w_mm), (oh, ow)) in enumerate(
        zip(boxes, crops_mm, organ_mm, strict=True)
    ):
        scale = 260.0 / max(h_mm, w_mm)
        g = green[r0 : r1 + 1, c0 : c1 + 1]
        gr0, gr1, gc0, gc1 = _bbox(g)
        assert abs((gr1 - gr0 + 1) - oh * scale) <= 2, n
        assert abs((gc1 - gc0 + 1) - ow * scale) <= 2, n
        assert white[r0 : r1 + 1, c0 : c1 + 1].sum() > 20, n  # the dashed reference is drawn
        width = g.shape[1]
        if n == 0:  # axial: anterior (row 5 of 1 mm) up: 5 mm from the top
            assert abs(gr0 - 5 * scale) <= 1
            assert abs(gc0 - 20 * scale) <= 1  # column 40 of 0.5 mm: 20 mm from the left
        else:  # coronal, sagittal: superior up: slice 37 is 2 slices (6 mm) below the top
            assert abs(gr0 - 6 * scale) <= 1, n
        if n == 2:  # sagittal: anterior on the left (row 5: 5 mm)
            assert abs(gc0 - 5 * scale) <= 1
            assert gc1 < width / 2


def test_volume_chart_marks_in_log_position(tmp_path: Path) -> None:
    training = {
        "A": {"volume_cm3": {"values": [8.0, 10.0, 12.0], "q05": 8.0, "q95": 12.0}},
        "B": {"volume_cm3": {"values": [80.0, 100.0, 120.0], "q05": 80.0, "q95": 120.0}},
    }
    colours = {"A": (255, 0, 0), "B": (0, 0, 255)}
    out = volume_chart({"A": 1.0, "B": 100.0}, training, colours, tmp_path / "v.png")
    with Image.open(out) as im:
        img = np.asarray(im.convert("RGB"))
    assert img.shape[1] == 560 and img.shape[0] == 10 + 2 * 36 + 46
    centres = []
    for colour in colours.values():
        r0, r1, c0, c1 = _bbox(_is(img, colour))
        centres.append(((r0 + r1) / 2, (c0 + c1) / 2))
    (ya, xa), (yb, xb) = centres
    assert ya < yb  # rows in the given order
    # 1 → 100 cm³ is two decades; A's 5–95 % bar (8–12 cm³, grey 102) is centred half-way
    assert xb - xa > 200
    bar = np.nonzero(_is(img, (102, 102, 102))[round(ya)])[0]
    assert bar.size > 5
    assert abs((bar.min() + bar.max()) / 2 - (xa + xb) / 2) <= 3
