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


# --- gzip-compressed patients (openkbp_hn_ct_partial: 140 partially contoured patients) -------


def _partial(shared: Path) -> list[Path]:
    return sorted((shared / "openkbp_hn_ct_partial" / "train-pats").glob("pt_*"))


def _oars_table(shared: Path) -> dict[str, tuple[str, ...]]:
    lines = (shared / "openkbp_hn_ct_partial" / "oars.csv").read_text().splitlines()
    header = lines[0].split(",")
    table = {}
    for line in lines[1:]:
        cells = line.split(",")
        have = {name for name, flag in zip(header[1:8], cells[1:8], strict=True) if flag == "1"}
        table[cells[0]] = tuple(name for name in OPENKBP_OARS if name in have)
    return table


def test_gz_patient_loads_like_its_plain_copy(shared_data: Path, tmp_path: Path) -> None:
    import gzip
    import shutil

    src = _partial(shared_data)[0]
    plain = tmp_path / src.name
    plain.mkdir()
    for f in src.glob("*.csv.gz"):
        with gzip.open(f, "rb") as fin, (plain / f.name[: -len(".gz")]).open("wb") as fout:
            shutil.copyfileobj(fin, fout)
    ct_gz, ct_plain = load_openkbp_ct(src), load_openkbp_ct(plain)
    assert np.array_equal(ct_gz.array, ct_plain.array)
    assert np.allclose(ct_gz.affine, ct_plain.affine)
    assert ct_gz.array.max() > 1000 and ct_gz.array[0, 0, 0] == -1024.0
    spacing = np.loadtxt(src / "voxel_dimensions.csv.gz")
    assert ct_gz.spacing_mm == pytest.approx((spacing[2], spacing[0], spacing[1]))
    lab_gz, lab_plain = load_openkbp_labels(src), load_openkbp_labels(plain)
    assert np.array_equal(lab_gz.volume.array, lab_plain.volume.array)
    assert lab_gz.warnings == lab_plain.warnings


def test_available_labels_match_oars_table_for_all_140(shared_data: Path) -> None:
    from medseg.io.openkbp import is_openkbp_folder, openkbp_available_labels

    table = _oars_table(shared_data)
    pats = _partial(shared_data)
    assert len(pats) == 140 == len(table)
    for p in pats:
        assert is_openkbp_folder(p)
        assert openkbp_available_labels(p) == table[p.name], p.name
    # order follows `names`, PTVs can be asked for
    pt = pats[0]
    have = openkbp_available_labels(pt, ["Mandible", "Brainstem", "PTV70", "Nope"])
    expected = tuple(
        n for n in ("Mandible", "Brainstem", "PTV70") if (pt / f"{n}.csv.gz").is_file()
    )
    assert have == expected and len(expected) >= 2


def test_gz_labels_contoured_nonempty_uncontoured_warn(shared_data: Path) -> None:
    from medseg.io.openkbp import openkbp_available_labels

    table = _oars_table(shared_data)
    # a patient missing at least two OARs
    p = next(p for p in _partial(shared_data) if len(table[p.name]) <= 5)
    have = openkbp_available_labels(p)
    lab = load_openkbp_labels(p)
    for name in OPENKBP_OARS:
        if name in have:
            assert lab.mask(name).sum() > 0, name
        else:
            assert lab.mask(name).sum() == 0
            assert any(name in w and "not contoured" in w for w in lab.warnings)


def test_gz_patient_detected_by_load_volume(shared_data: Path) -> None:
    from medseg.io import detect_path_kind, load_labels, load_volume

    p = _partial(shared_data)[1]
    assert detect_path_kind(p) == "openkbp"
    assert load_volume(p).shape == (128, 128, 128)
    assert load_labels(p).label_map.names == OPENKBP_OARS


def test_available_labels_of_a_non_openkbp_folder(tmp_path: Path) -> None:
    from medseg.io.openkbp import openkbp_available_labels

    with pytest.raises(InputError, match=r"ct\.csv\.gz"):
        openkbp_available_labels(tmp_path)


@pytest.mark.parametrize("damage", ["flip_crc", "truncate", "flip_payload"])
def test_corrupt_gz_is_refused_naming_the_file(
    shared_data: Path, tmp_path: Path, damage: str
) -> None:
    import shutil

    src = _partial(shared_data)[0]
    pt = tmp_path / src.name
    shutil.copytree(src, pt)
    f = pt / "ct.csv.gz"
    data = bytearray(f.read_bytes())
    if damage == "flip_crc":
        data[-8] ^= 0xFF  # CRC-32 in the trailer
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0x01  # one bit inside the deflate stream
    f.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"ct\.csv\.gz: corrupt or truncated gzip"):
        load_openkbp_ct(pt)
