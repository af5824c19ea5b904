"""predict_array's instance selection (max_instances) and flip test-time augmentation.

The network is replaced by small deterministic detectors whose outputs are known by hand, so
the expected masks, boxes and scores below follow from the test's geometry, not from the code.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy import ndimage

from medseg.photo.inference import TTA_FLIPS, predict_array

Rule = Callable[[slice, slice, int, int], bool]


class SquareDetector(torch.nn.Module):
    """Finds bright squares in the red channel: one detection per square, score = its red value.

    ``rule(rows, cols, height, width)`` decides, in the frame the detector is shown, which
    squares it reports -- a flip-equivariant detector reports all of them.
    """

    def __init__(self, rule: Rule | None = None) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.rule = rule
        self.calls = 0

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        self.calls += 1
        red = images[0][0].numpy()
        height, width = red.shape
        regions, _ = ndimage.label(red > 0.1)
        boxes, scores, masks = [], [], []
        for index, (rows, cols) in enumerate(ndimage.find_objects(regions), start=1):
            if self.rule is not None and not self.rule(rows, cols, height, width):
                continue
            region = regions == index
            boxes.append([cols.start, rows.start, cols.stop, rows.stop])
            scores.append(float(red[region].mean()))
            masks.append(region.astype(np.float32))
        n = len(scores)
        return [
            {
                "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(n, 4),
                "scores": torch.tensor(scores, dtype=torch.float32),
                "labels": torch.ones(n, dtype=torch.int64),
                "masks": torch.from_numpy(np.array(masks, np.float32).reshape(n, 1, height, width)),
            }
        ]


def _photo(squares: list[tuple[int, int, int]], shape: tuple[int, int] = (60, 80)) -> np.ndarray:
    """RGB photo with 10x10 squares at (row, col) of red value ``level`` (0-255)."""
    image = np.zeros((*shape, 3), np.uint8)
    for row, col, level in squares:
        image[row : row + 10, col : col + 10, 0] = level
    return image


def _square(row: int, col: int, shape: tuple[int, int] = (60, 80)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[row : row + 10, col : col + 10] = True
    return mask


SQUARES = [(5, 5, 102), (25, 35, 204), (45, 60, 153)]  # scores 0.4, 0.8, 0.6


@pytest.mark.parametrize("tta", [False, True])
def test_max_instances_keeps_the_best_scoring(tta: bool) -> None:
    image = _photo(SQUARES)
    everything = predict_array(SquareDetector(), image, score_threshold=0.0, tta=tta)
    assert len(everything.instances) == 3
    assert everything.mask.sum() == 300
    best = predict_array(SquareDetector(), image, score_threshold=0.0, max_instances=1, tta=tta)
    assert [round(i.score, 3) for i in best.instances] == [0.8]
    np.testing.assert_array_equal(best.mask, _square(25, 35))
    two = predict_array(SquareDetector(), image, score_threshold=0.5, max_instances=2, tta=tta)
    assert [round(i.score, 3) for i in two.instances] == [0.8, 0.6]
    np.testing.assert_array_equal(two.mask, _square(25, 35) | _square(45, 60))


def test_tta_of_a_flip_equivariant_detector_equals_one_pass() -> None:
    image = _photo(SQUARES)
    detector = SquareDetector()
    plain = predict_array(detector, image, score_threshold=0.5)
    assert detector.calls == 1
    tta = predict_array(detector, image, score_threshold=0.5, tta=True)
    assert detector.calls == 1 + len(TTA_FLIPS) == 5
    np.testing.assert_array_equal(tta.mask, plain.mask)
    assert [(i.box, round(i.score, 3)) for i in tta.instances] == [
        ((35.0, 25.0, 45.0, 35.0), 0.8),
        ((60.0, 45.0, 70.0, 55.0), 0.6),
    ]
    for inst, ref in zip(tta.instances, (_square(25, 35), _square(45, 60)), strict=True):
        np.testing.assert_array_equal(inst.mask, ref)


def test_tta_drops_a_region_seen_in_half_the_passes() -> None:
    # The detector reports only squares whose centre lies in the left 40 % of what it is shown.
    # The square (columns 5-14 of 80) is on the left in the identity and row-flipped passes and
    # on the right in the two column-flipped ones: mean probability 2/4, not above 0.5.
    def left(rows: slice, cols: slice, height: int, width: int) -> bool:
        return (cols.start + cols.stop) / 2 < 0.4 * width

    image = _photo([(5, 5, 204)])
    plain = predict_array(SquareDetector(left), image, score_threshold=0.0)
    np.testing.assert_array_equal(plain.mask, _square(5, 5))
    tta = predict_array(SquareDetector(left), image, score_threshold=0.0, tta=True)
    assert not tta.mask.any() and tta.instances == ()


def test_tta_keeps_a_region_seen_in_three_of_four_passes() -> None:
    # Reported when the square's centre is in the left 55 % or the top 55 % of the frame:
    # a square at the top left is seen in the identity, column-flip and row-flip passes
    # (3 of 4, mean 0.75 > 0.5) and missed only when both axes are mirrored.
    def top_or_left(rows: slice, cols: slice, height: int, width: int) -> bool:
        return (cols.start + cols.stop) / 2 < 0.55 * width or (
            rows.start + rows.stop
        ) / 2 < 0.55 * height

    image = _photo([(5, 5, 204)])
    detector = SquareDetector(top_or_left)
    tta = predict_array(detector, image, score_threshold=0.0, tta=True)
    np.testing.assert_array_equal(tta.mask, _square(5, 5))
    assert len(tta.instances) == 1 and tta.instances[0].box == (5.0, 5.0, 15.0, 15.0)
    assert tta.instances[0].score == pytest.approx(0.8)


@pytest.mark.parametrize("flip", TTA_FLIPS)
def test_each_pass_maps_boxes_and_masks_back_to_the_photo(flip: tuple[bool, bool]) -> None:
    from medseg.photo.inference import _detect

    image = _photo(SQUARES)
    det = _detect(SquareDetector(), image, torch.device("cpu"), False, flip)
    order = np.argsort(-det.scores)
    assert det.boxes[order].tolist() == [[35, 25, 45, 35], [60, 45, 70, 55], [5, 5, 15, 15]]
    np.testing.assert_array_equal(det.soft[order[0]] > 0.5, _square(25, 35))


@pytest.mark.parametrize("tta", [False, True])
def test_centre_prior_prefers_the_central_candidate(tta: bool) -> None:
    # 60 x 80 photo: a bright square (0.8) in the top-left corner, a dimmer one (0.4) whose
    # centre (30, 40) is the photo's centre. Corner centroid: 0.5 - 10/60 heights and
    # 0.5 - 10/80 widths off centre, weight exp(-(0.333^2 + 0.375^2) / 0.08) ~ 0.0057.
    corner, centre = (0, 0, 204), (25, 35, 102)
    image = _photo([corner, centre])
    by_score = predict_array(SquareDetector(), image, score_threshold=0.5, max_instances=1, tta=tta)
    np.testing.assert_array_equal(by_score.mask, _square(0, 0))
    prior = predict_array(
        SquareDetector(), image, score_threshold=0.5, max_instances=1, centre_prior=0.2, tta=tta
    )
    np.testing.assert_array_equal(prior.mask, _square(25, 35))
    # the kept instance reports its own score, not the weighted one
    assert [round(i.score, 3) for i in prior.instances] == [0.4]
    # presence is still decided by the threshold: the dim central square alone gives nothing
    alone = predict_array(
        SquareDetector(),
        _photo([centre]),
        score_threshold=0.5,
        max_instances=1,
        centre_prior=0.2,
        tta=tta,
    )
    assert alone.instances == () and not alone.mask.any()


def test_centre_prior_needs_max_instances() -> None:
    with pytest.raises(ValueError, match="max_instances"):
        predict_array(SquareDetector(), _photo(SQUARES), centre_prior=0.2)
