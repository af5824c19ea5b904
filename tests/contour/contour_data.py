"""Build DICOM trees of real CTs for the contour tests and benchmark (from ../shared/data).

OpenKBP head-and-neck CTs (128x128 slices) are written as DICOM series with
medseg.io.dicom_write in several transfer syntaxes, with shuffled file names, plus the clinical
OAR contours as an RTSTRUCT under TG-263 names.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pydicom
import pydicom.uid
from pydicom.uid import generate_uid

from medseg.io import load_labels, load_volume
from medseg.io.dicom_write import SeriesInfo, write_dicom_series
from medseg.volume import LabelEntry, LabelMap, LabelVolume, Volume

OPENKBP = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "openkbp_hn_ct"
PATIENTS = sorted(p.name for p in (OPENKBP / "train-pats").iterdir())
#: OpenKBP structure name -> TG-263 name written into the reference RTSTRUCT.
TG263 = {
    "LeftParotid": "Parotid_L",
    "RightParotid": "Parotid_R",
    "Mandible": "Bone_Mandible",
    "SpinalCord": "SpinalCord",
    "Brainstem": "Brainstem",
    "Esophagus": "Esophagus",
    "Larynx": "Larynx",
}


def openkbp_ct(patient: str) -> Volume:
    """The OpenKBP CT of ``patient`` (HU)."""
    return load_volume(OPENKBP / "train-pats" / patient)


def write_series(
    volume: Volume,
    folder: Path,
    *,
    study_uid: str,
    series_uid: str | None = None,
    number: int = 1,
    syntax: str = "explicit",
    shuffle: bool = True,
) -> list[Path]:
    """Write ``volume`` as a CT series (``syntax``: explicit, implicit, rle, j2k)."""
    info = SeriesInfo(
        patient_name="Test^Contour",
        patient_id="CONTOUR-TEST",
        study_instance_uid=study_uid,
        series_instance_uid=series_uid or generate_uid(),
        series_number=number,
    )

    def modify(_k: int, ds: pydicom.Dataset) -> None:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        if syntax == "implicit":
            ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        elif syntax == "rle":
            ds.compress(pydicom.uid.RLELossless)
        elif syntax == "j2k":
            ds.compress(pydicom.uid.JPEG2000Lossless)

    paths = write_dicom_series(volume, folder, info=info, modify=modify)
    if shuffle:
        rng = random.Random(len(paths) + number)
        names = [f"IMG{rng.randrange(10**8):08d}_{i}" for i in range(len(paths))]
        rng.shuffle(names)
        paths = [p.rename(p.with_name(n)) for p, n in zip(paths, names, strict=True)]
    return paths


def write_reference_rtstruct(ct_folder: Path, patient: str, path: Path) -> Path:
    """The clinical OARs of ``patient`` as an RTSTRUCT (TG-263 names) on the written series."""
    from medseg.export import write_rtstruct

    reference = load_volume(ct_folder)
    labels = load_labels(OPENKBP / "train-pats" / patient)
    entries = [
        LabelEntry(e.id, TG263.get(e.name, e.name), e.color)
        for e in labels.label_map
        if e.name in TG263
    ]
    keep = {e.id for e in entries}
    arr = labels.volume.array.copy()
    arr[~__import__("numpy").isin(arr, list(keep))] = 0
    lv = LabelVolume(reference.with_array(arr), LabelMap(tuple(entries)))
    return write_rtstruct(lv, reference, path)


def build_tree(root: Path, shared: Path) -> dict[str, str]:
    """The mixed tree of the contour tests; returns role -> StudyInstanceUID.

    Roles: ``rt`` (explicit VR + clinical RTSTRUCT), ``rle`` (RLE lossless), ``two`` (two CT
    series: full + every third slice at 7.5 mm), ``truncated`` (one slice file cut short),
    ``rtonly`` (an RTSTRUCT + RTPLAN without their CT), ``totalseg`` (20-slice JPEG 2000 series).
    """
    from dicom_testdata import repaired_copy

    uids = {r: generate_uid() for r in ("rt", "rle", "two", "truncated")}
    tree = root / "pacs"
    ct = openkbp_ct(PATIENTS[0])
    write_series(ct, tree / "a", study_uid=uids["rt"])
    write_reference_rtstruct(tree / "a", PATIENTS[0], tree / "a" / "RS_ref.dcm")
    write_series(openkbp_ct(PATIENTS[1]), tree / "b", study_uid=uids["rle"], syntax="rle")
    two = openkbp_ct(PATIENTS[2])
    write_series(two, tree / "c", study_uid=uids["two"], syntax="implicit", number=2)
    sparse = Volume(two.array[::3], two.affine @ _scale_slices(3.0), modality="CT")
    write_series(sparse, tree / "c", study_uid=uids["two"], number=3)
    paths = write_series(openkbp_ct(PATIENTS[3]), tree / "d", study_uid=uids["truncated"])
    victim = sorted(paths)[len(paths) // 2]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 20000])
    rt = tree / "e"
    rt.mkdir(parents=True)
    src = shared / "dicompyler_breast_rtstruct"
    shutil.copy(src / "rtss.dcm", rt / "x1")
    shutil.copy(src / "rtplan.dcm", rt / "x2")
    uids["rtonly"] = str(pydicom.dcmread(rt / "x1", stop_before_pixels=True).StudyInstanceUID)
    ts = repaired_copy(shared / "totalsegmentator_example_ct" / "example_ct_dicom", tree / "f")
    uids["totalseg"] = str(pydicom.dcmread(next(ts.iterdir())).StudyInstanceUID)
    return uids


def _scale_slices(factor: float):  # type: ignore[no-untyped-def]
    import numpy as np

    m = np.eye(4)
    m[0, 0] = factor
    return m


def build_openkbp_tree(root: Path, n: int, *, start: int = 0) -> list[str]:
    """``n`` OpenKBP CTs as DICOM studies (explicit VR, shuffled names); returns study UIDs."""
    uids = []
    for i in range(n):
        uid = generate_uid()
        write_series(openkbp_ct(PATIENTS[start + i]), root / f"s{i}", study_uid=uid)
        uids.append(uid)
    return uids
