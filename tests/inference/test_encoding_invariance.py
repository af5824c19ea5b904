"""The same CT in any DICOM encoding gets the same labels, voxel for voxel (issue 15).

A real OpenKBP CT (pt_112, 2.5 mm slices resampled to the shipped model's 3 mm: nearest-
neighbour ties occur when labels come back) is written as three DICOM series that hold the same
voxels at the same world positions: head-first axial (IOP 1,0,0,0,1,0), feet-first with
IOP (-1,0,0,0,1,0), and negated cosines (IOP -1,0,0,0,-1,0). Each is read back and segmented by
the shipped model; the label maps, brought to one index order by exact flips, must be equal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.inference import Predictor
from medseg.io import load_volume
from medseg.io.dicom_write import write_dicom_series
from medseg.io.openkbp import load_openkbp_ct
from medseg.preprocess import reorient

pytestmark = pytest.mark.slow

# orientation codes (slice, row, column axis directions) of the three encodings
ENCODINGS = {
    "head_first_LP": "SPL",  # slices from the head down; rows → P, columns → L
    "feet_first_RP": "IPR",  # slices from the feet up; IOP (-1,0,0, 0,1,0)
    "negated_RA": "SAR",  # IOP (-1,0,0, 0,-1,0)
}


@pytest.fixture(scope="module")
def labels_by_encoding(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    ct = load_openkbp_ct(shared_data / "openkbp_hn_ct" / "train-pats" / "pt_112")
    ct = ct.with_array(np.rint(ct.array).astype(np.int16), modality="CT")
    predictor = Predictor.from_checkpoint("hn_oar", device="cpu")
    out = {}
    for name, code in ENCODINGS.items():
        folder = tmp_path_factory.mktemp(name)
        write_dicom_series(reorient(ct, code), folder)
        volume = load_volume(folder)
        assert volume.orientation == code, "the series was not written in the intended encoding"
        labels = predictor.predict(volume)
        out[name] = (volume, labels)
    return out


def test_encodings_hold_the_same_world_image(labels_by_encoding: dict) -> None:
    volumes = [reorient(v, "SPL") for v, _ in labels_by_encoding.values()]
    for v in volumes[1:]:
        assert v.same_grid(volumes[0], tolerance_mm=1e-3)
        np.testing.assert_array_equal(v.array, volumes[0].array)


def test_labels_identical_in_every_encoding(labels_by_encoding: dict) -> None:
    maps = {
        name: reorient(labels.volume, "SPL").array
        for name, (_, labels) in labels_by_encoding.items()
    }
    first = maps["head_first_LP"]
    assert len(np.unique(first)) == 8, "the shipped model should find all 7 organs on pt_112"
    for name, arr in maps.items():
        changed = int(np.count_nonzero(arr != first))
        assert changed == 0, f"{name}: {changed} voxels differ from the head-first labels"


def test_labels_on_each_inputs_own_grid(labels_by_encoding: dict) -> None:
    for volume, labels in labels_by_encoding.values():
        assert labels.volume.shape == volume.shape
        np.testing.assert_allclose(labels.volume.affine, volume.affine, atol=1e-6)
