"""OpenKBP reader: all 30 real patients load, with anatomically checked orientation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.errors import InputError
from medseg.io.openkbp import OPENKBP_OARS, load_openkbp_ct, load_openkbp_labels


def _patients(shared: Path) -> list[Path]:
    return sorted((shared / "openkbp_hn_ct" / "train-pats").glob("pt_*"))


def _centroid_lps(lab, name: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    idx = np.argwhere(lab.mask(name))
    return lab.volume.world_coordinates(idx).mean(axis=0)


def test_all_30_patients_load_with_oriented_anatomy(shared_data: Path) -> None:
    pats = _patients(shared_data)
    assert len(pats) == 30
    for p in pats:
        ct = load_openkbp_ct(p)
        lab = load_openkbp_labels(p)
        assert ct.shape == (128, 128, 128) and ct.orientation == "SPL"
        assert lab.volume.same_grid(ct)
        assert lab.label_map.names == OPENKBP_OARS
        # HU: outside is air, bone is present, soft tissue around 0..100
        assert ct.array.min() >= -1024.0 and ct.array.max() > 1000
        assert ct.array[0, 0, 0] == -1024.0
        for name in OPENKBP_OARS:
            assert lab.mask(name).sum() > 0, (p.name, name)
        left, right = _centroid_lps(lab, "LeftParotid"), _centroid_lps(lab, "RightParotid")
        assert left[0] > right[0] + 30, p.name  # patient left is +x in LPS
        brainstem, mandible = _centroid_lps(lab, "Brainstem"), _centroid_lps(lab, "Mandible")
        assert brainstem[2] > mandible[2], p.name  # brainstem is superior (+z)
        assert mandible[1] < brainstem[1], p.name  # mandible is anterior (-y)
        cord, esophagus = _centroid_lps(lab, "SpinalCord"), _centroid_lps(lab, "Esophagus")
        assert esophagus[1] < cord[1], p.name  # esophagus in front of the cord
        larynx = _centroid_lps(lab, "Larynx")
        assert larynx[2] < mandible[2], p.name


def test_hu_mapping_matches_the_csv(shared_data: Path) -> None:
    p = _patients(shared_data)[0]
    first = (p / "ct.csv").read_text().splitlines()[1].split(",")
    flat, value = int(first[0]), float(first[1])
    raw = np.unravel_index(flat, (128, 128, 128))  # raw axes (P, L, I)
    ct = load_openkbp_ct(p)
    assert ct.array[127 - raw[2], raw[0], raw[1]] == pytest.approx(value - 1024.0)
    spacing = np.loadtxt(p / "voxel_dimensions.csv")
    assert ct.spacing_mm == pytest.approx((spacing[2], spacing[0], spacing[1]))


def test_ptv_optional_and_missing_structure_warns(shared_data: Path) -> None:
    p = shared_data / "openkbp_hn_ct" / "train-pats" / "pt_4"
    lab = load_openkbp_labels(p, names=["PTV70", "PTV63", "Mandible"])
    assert lab.mask("PTV70").sum() > 1000
    assert lab.mask("PTV63").sum() == 0
    assert any("PTV63" in w for w in lab.warnings)


def test_not_an_openkbp_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"ct\.csv"):
        load_openkbp_ct(tmp_path)
