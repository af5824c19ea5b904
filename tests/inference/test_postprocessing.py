"""Post-processing and the laterality check on real OpenKBP contours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from medseg.inference.postprocessing import (
    PostprocessConfig,
    fill_label_holes,
    keep_largest_component,
    label_side,
    laterality_warnings,
    postprocess_labels,
)
from medseg.io.openkbp import load_openkbp_ct, load_openkbp_labels
from medseg.volume import LabelVolume, Volume


@pytest.fixture(scope="module")
def kbp(shared_data: Path) -> tuple[Volume, LabelVolume]:
    folder = shared_data / "openkbp_hn_ct" / "train-pats" / "pt_4"
    return load_openkbp_ct(folder), load_openkbp_labels(folder)


def test_true_contours_pass_the_laterality_check(kbp: tuple[Volume, LabelVolume]) -> None:
    ct, labels = kbp
    body = ct.array > -500
    assert laterality_warnings(labels.volume.array, ct.affine, labels.label_map, body) == []


def test_left_right_swap_is_flagged(kbp: tuple[Volume, LabelVolume]) -> None:
    ct, labels = kbp
    body = ct.array > -500
    # mirror the labels about the body midline column: parotids land on the wrong side
    cols = np.nonzero(body.any(axis=(0, 1)))[0]
    centre = (cols.min() + cols.max()) / 2.0
    src = np.clip(np.round(2 * centre - np.arange(ct.shape[2])).astype(int), 0, ct.shape[2] - 1)
    mirrored = labels.volume.array[:, :, src]
    warnings = laterality_warnings(mirrored, ct.affine, labels.label_map, body)
    flagged = sorted(w.split(":")[0] for w in warnings)
    assert flagged == ["LeftParotid", "RightParotid"]
    assert "patient's right" in next(w for w in warnings if w.startswith("LeftParotid"))


def test_postprocessing_removes_fragments_and_fills_holes(kbp: tuple[Volume, LabelVolume]) -> None:
    _, labels = kbp
    truth = labels.volume.array
    mandible = labels.label_map.id_of("Mandible")
    noisy = truth.copy()
    noisy[5:8, 5:8, 5:8] = mandible  # a stray fragment far from the mandible
    zz, yy, xx = np.nonzero(truth == mandible)
    centre = (int(np.median(zz)), int(np.median(yy)), int(np.median(xx)))
    hole = ndimage.binary_erosion(truth == mandible, iterations=1)
    noisy[hole & (truth == mandible)] = 0  # hollow it out: enclosed holes
    cleaned, warnings = postprocess_labels(noisy, (2.5, 3.9, 3.9), PostprocessConfig())
    assert warnings == []
    assert cleaned[6, 6, 6] == 0
    # every organ is one connected component afterwards
    for value in labels.label_map.ids:
        _, n = ndimage.label(cleaned == value, structure=np.ones((3, 3, 3)))
        assert n <= 1
    # the hollowed interior was enclosed, so it comes back (the fragment does not)
    assert np.sum(noisy == mandible) < 0.8 * np.sum(truth == mandible)
    assert np.sum(cleaned == mandible) >= 0.99 * np.sum(truth == mandible)
    assert cleaned[centre] in (0, mandible)


def test_min_volume_removes_small_organs_with_a_warning(kbp: tuple[Volume, LabelVolume]) -> None:
    _, labels = kbp
    arr = labels.volume.array
    sizes = {e.name: int(np.sum(arr == e.id)) for e in labels.label_map}
    smallest = min(sizes, key=lambda k: sizes[k])
    voxel = 2.5 * 3.9 * 3.9
    cfg = PostprocessConfig(False, False, min_volume_mm3=(sizes[smallest] + 1) * voxel)
    out, warnings = postprocess_labels(arr, (2.5, 3.9, 3.9), cfg, labels.label_map)
    assert not np.any(out == labels.label_map.id_of(smallest))
    assert any(w.startswith(smallest) for w in warnings)


def test_helpers_leave_other_labels_alone() -> None:
    a = np.zeros((5, 5, 7), np.uint8)
    a[1:4, 1:4, 1:4] = 1
    a[2, 2, 2] = 2  # another organ inside organ 1: not a hole to fill
    a[0, 0, 6] = 1
    kept = keep_largest_component(a)
    assert kept[0, 0, 6] == 0 and kept[2, 2, 2] == 2
    assert fill_label_holes(a)[2, 2, 2] == 2
    a[2, 2, 2] = 0
    assert fill_label_holes(a)[2, 2, 2] == 1
    assert label_side("Submandibular-Lt") == "L" and label_side("Optic-Nerve-Rt") == "R"
    assert label_side("Brainstem") is None
