"""Values written into SEG/RTSTRUCT are valid for their VR, or the export is refused (issue 20).

The source is the real dcmqi ct-3slice CT series, copied into ``tmp_path`` with one patient or
study attribute mutated (raw bytes where the point is the character set). Refused cases must name
the attribute and say how to fix it, and leave no file; accepted ones must pass dciodvfy with no
error and keep the value.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from dicom_testdata import dciodvfy
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from medseg.errors import ExportError
from medseg.export import SeriesInfo, match_reference_grid, write_dicom_seg, write_rtstruct
from medseg.io import load_labels, load_volume
from medseg.io.dicom_values import element_problems, value_problem
from medseg.volume import LabelMap, LabelVolume, Volume

Mutation = Callable[[Dataset], None]
WRITERS = {"seg": write_dicom_seg, "rtstruct": write_rtstruct}


def _set_raw(tag: int, vr: str, raw: bytes, charset: str | None = None) -> Mutation:
    def mutate(ds: Dataset) -> None:
        if charset is None:
            ds.pop(0x00080005, None)
        else:
            ds.SpecificCharacterSet = charset
        ds[tag] = DataElement(tag, vr, raw)

    return mutate


def _set(keyword: str, value: object) -> Mutation:
    def mutate(ds: Dataset) -> None:
        setattr(ds, keyword, value)

    return mutate


def _case(shared_data: Path, out: Path, mutate: Mutation | None) -> tuple[Volume, LabelVolume]:
    """Copy ct-3slice with ``mutate`` applied to every file; return (reference, liver+spine)."""
    src = shared_data / "dcmqi_ct3slice_seg"
    out.mkdir(parents=True)
    for p in sorted((src / "ct-3slice").iterdir()):
        ds = pydicom.dcmread(p)
        if mutate is not None:
            mutate(ds)
        ds.save_as(out / p.name)
    reference = load_volume(out)
    raw = load_labels(
        src / "liver_spine_seg.nrrd", label_map=LabelMap.from_dict({1: "Liver", 2: "Spine"})
    )
    return reference, match_reference_grid(raw, reference)


#: name → (mutation, attribute the error must name, words of the problem)
REFUSED: dict[str, tuple[Mutation, str, str]] = {
    "name_10000_chars": (_set("PatientName", "A" * 10_000), "PatientName", "10000 characters"),
    "utf8_bytes_without_charset": (
        _set_raw(0x00100010, "PN", "Müller^Hans".encode()),
        "PatientName",
        "outside the declared character set",
    ),
    "latin1_bytes_declared_utf8": (
        _set_raw(0x00100010, "PN", b"M\xfcller^Hans", "ISO_IR 192"),
        "PatientName",
        "not valid in the declared character set ISO_IR 192",
    ),
    "c1_control_in_latin1": (
        _set_raw(0x00100010, "PN", b"M\x9aller^Hans", "ISO_IR 100"),
        "PatientName",
        "control characters",
    ),
    "patient_id_two_values": (_set("PatientID", "99000\\12"), "PatientID", "2 values (VM 1"),
    "patient_id_65_chars": (_set("PatientID", "9" * 65), "PatientID", "65 characters"),
    "study_uid_70_chars": (
        _set("StudyInstanceUID", "1.2.826.0.1.3680043.8.498." + "1" * 44),
        "StudyInstanceUID",
        "70 characters",
    ),
    "study_date_not_a_date": (_set("StudyDate", "20031345"), "StudyDate", "not a calendar date"),
    "study_time_not_a_time": (_set("StudyTime", "25:61"), "StudyTime", "not a valid TM"),
    "patient_sex_lowercase": (_set("PatientSex", "m"), "PatientSex", "A-Z, 0-9"),
    "study_description_80_chars": (
        _set("StudyDescription", "CT thorax " * 8),
        "StudyDescription",
        "79 characters",
    ),
    "accession_with_newline": (_set("AccessionNumber", "A1\nB2"), "AccessionNumber", "control"),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_invalid_source_values_are_refused_naming_the_attribute(
    shared_data: Path, tmp_path: Path, writer: str, case: str
) -> None:
    mutate, attribute, problem = REFUSED[case]
    reference, labels = _case(shared_data, tmp_path / "ct", mutate)
    out = tmp_path / "out"
    with pytest.raises(ExportError) as err:
        WRITERS[writer](labels, reference, out / f"{writer}.dcm")
    message = str(err.value)
    assert attribute in message
    assert problem in message
    assert "source series" in message
    assert "dcmodify" in message or "re-export it from the PACS" in message  # how to fix it
    assert not out.exists() or list(out.iterdir()) == []


def test_charset_errors_say_how_to_declare_the_set(shared_data: Path, tmp_path: Path) -> None:
    mutate = REFUSED["utf8_bytes_without_charset"][0]
    reference, labels = _case(shared_data, tmp_path / "ct", mutate)
    with pytest.raises(ExportError, match=r"Specific Character Set \(0008,0005\).*ISO_IR 192"):
        write_rtstruct(labels, reference, tmp_path / "rt.dcm")


def test_seg_checks_what_highdicom_copies_beyond_our_list(
    shared_data: Path, tmp_path: Path
) -> None:
    """highdicom copies whole Patient/Study modules; a nested UID in one is checked too."""

    def mutate(ds: Dataset) -> None:
        item = Dataset()
        item.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
        item.ReferencedSOPInstanceUID = "1.2.03.4"  # leading zero in a component
        ds.ReferencedStudySequence = [item]

    reference, labels = _case(shared_data, tmp_path / "ct", mutate)
    with pytest.raises(ExportError) as err:
        write_dicom_seg(labels, reference, tmp_path / "seg.dcm")
    assert "ReferencedStudySequence[0].ReferencedSOPInstanceUID" in str(err.value)
    assert "is not a UID" in str(err.value)
    assert not (tmp_path / "seg.dcm").exists()


#: name → (mutation, PatientName expected back, SpecificCharacterSet expected in the output)
ACCEPTED: dict[str, tuple[Mutation | None, str, str | None]] = {
    "unchanged": (None, "JANCT000", None),
    "latin1": (
        _set_raw(0x00100010, "PN", b"M\xfcller^Hans", "ISO_IR 100"), "Müller^Hans", "ISO_IR 100"
    ),
    "utf8": (
        _set_raw(0x00100010, "PN", "山田^太郎".encode(), "ISO_IR 192"),
        "山田^太郎",
        "ISO_IR 192",
    ),
    "name_of_64_chars": (_set("PatientName", "D" * 30 + "^" + "J" * 33), "D" * 30 + "^" + "J" * 33,
                         None),
}  # fmt: skip


@pytest.mark.parametrize("writer", sorted(WRITERS))
@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_valid_unusual_values_are_kept_and_dciodvfy_is_clean(
    shared_data: Path, tmp_path: Path, writer: str, case: str
) -> None:
    mutate, name, charset = ACCEPTED[case]
    reference, labels = _case(shared_data, tmp_path / "ct", mutate)
    out = WRITERS[writer](labels, reference, tmp_path / f"{writer}.dcm")
    errors, _warnings = dciodvfy(out)
    assert errors == []
    ds = pydicom.dcmread(out)
    assert str(ds.PatientName) == name
    assert ds.get("SpecificCharacterSet") == charset
    assert ds.PatientID == "99000"


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_non_ascii_label_names_make_the_output_utf8(
    shared_data: Path, tmp_path: Path, writer: str
) -> None:
    """Our own names need characters the (ASCII) source lacks: the output is ISO_IR 192."""
    reference, labels = _case(shared_data, tmp_path / "ct", None)
    names = LabelMap.from_dict({1: "Leber (Foie)", 2: "Wirbelsäule"})
    labels = LabelVolume(labels.volume, names)
    out = WRITERS[writer](labels, reference, tmp_path / f"{writer}.dcm")
    errors, _warnings = dciodvfy(out)
    assert errors == []
    ds = pydicom.dcmread(out)
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == "JANCT000"
    items = ds.SegmentSequence if writer == "seg" else ds.StructureSetROISequence
    got = [i.SegmentLabel if writer == "seg" else i.ROIName for i in items]
    assert got == ["Leber (Foie)", "Wirbelsäule"]
    back = load_labels(out, reference=reference)
    assert back.label_map.names == ("Leber (Foie)", "Wirbelsäule")


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_series_info_is_written(shared_data: Path, tmp_path: Path, writer: str) -> None:
    reference, labels = _case(shared_data, tmp_path / "ct", None)
    uid = generate_uid()
    info = SeriesInfo(
        series_description="OAR auto-contours",
        series_number=77,
        series_instance_uid=uid,
        manufacturer="Clinic physics",
        algorithm_name="hn_oar",
        algorithm_version="2.1",
    )
    out = WRITERS[writer](labels, reference, tmp_path / f"{writer}.dcm", info=info)
    ds = pydicom.dcmread(out)
    assert (ds.SeriesDescription, ds.SeriesNumber, ds.SeriesInstanceUID) == (
        "OAR auto-contours",
        77,
        uid,
    )
    assert (ds.Manufacturer, ds.ManufacturerModelName, ds.SoftwareVersions) == (
        "Clinic physics",
        "hn_oar",
        "2.1",
    )
    if writer == "seg":
        alg = ds.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
        assert (alg.AlgorithmName, alg.AlgorithmVersion) == ("hn_oar", "2.1")
    else:
        assert {r.ROIGenerationDescription for r in ds.StructureSetROISequence} == {"hn_oar 2.1"}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_patient_fields_of_series_info_are_refused(
    shared_data: Path, tmp_path: Path, writer: str
) -> None:
    reference, labels = _case(shared_data, tmp_path / "ct", None)
    with pytest.raises(ExportError, match=r"\['patient_name'\].*from its source series"):
        WRITERS[writer](labels, reference, tmp_path / "x.dcm", info=SeriesInfo(patient_name="X^Y"))
    assert not (tmp_path / "x.dcm").exists()


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_label_name_with_a_backslash_is_refused(
    shared_data: Path, tmp_path: Path, writer: str
) -> None:
    reference, labels = _case(shared_data, tmp_path / "ct", None)
    labels = LabelVolume(labels.volume, LabelMap.from_dict({1: "Liver", 2: "C1\\C2"}))
    with pytest.raises(ExportError, match=r"label 2 name .*backslash.*Rename the label"):
        WRITERS[writer](labels, reference, tmp_path / "x.dcm")
    assert not (tmp_path / "x.dcm").exists()


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("series_description", "x" * 65, "65 characters long"),
        ("manufacturer", "a\\b", "backslash"),
        ("algorithm_version", "1\n2", "control characters"),
        ("series_number", 2**31, "32-bit range"),
        ("series_instance_uid", "1.2.3." + "4" * 60, "66 characters"),
        ("series_instance_uid", "", "empty"),
        ("patient_name", "a=b=c=d", "4 component groups"),
    ],
)
def test_series_info_values_are_checked(field: str, value: object, problem: str) -> None:
    with pytest.raises(ExportError, match=f"SeriesInfo.{field}") as err:
        SeriesInfo(**{field: value})  # type: ignore[arg-type]
    assert problem in str(err.value)


def test_structure_set_label_longer_than_sh_is_refused(shared_data: Path, tmp_path: Path) -> None:
    reference, labels = _case(shared_data, tmp_path / "ct", None)
    with pytest.raises(ExportError, match=r"structure_set_label.*17 characters"):
        write_rtstruct(labels, reference, tmp_path / "x.dcm", structure_set_label="x" * 17)


@pytest.mark.parametrize(
    ("vr", "value", "valid"),
    [
        ("DA", "20240229", True), ("DA", "20230229", False), ("DA", "2024022", False),
        ("TM", "235959.123456", True), ("TM", "1200", True), ("TM", "240000", False),
        ("DS", "-1.5e-3", True), ("DS", "1.234567890123456", False), ("DS", "1,5", False),
        ("IS", "-2147483648", True), ("IS", "2147483648", False),
        ("AS", "045Y", True), ("AS", "45Y", False),
        ("UI", "2.25.1234", True), ("UI", "1..2", False), ("UI", "1.2.a", False),
        ("CS", "ORGAN_AT_RISK", True), ("SH", "x" * 16, True), ("SH", "x" * 17, False),
        ("LT", "line 1\r\nline 2\\3", True), ("LO", "line 1\r\nline 2", False),
        ("PN", "A^B^C^D^E", True), ("PN", "A^B^C^D^E^F", False),
    ],
)  # fmt: skip
def test_value_rules(vr: str, value: str, valid: bool) -> None:
    assert (value_problem(vr, value) is None) is valid


def test_element_problems_walks_sequences() -> None:
    ds = Dataset()
    item = Dataset()
    item.CodeValue = "x" * 17  # SH
    ds.ProcedureCodeSequence = [Dataset(), item]
    problems = element_problems(ds["ProcedureCodeSequence"], ("",))
    assert problems == [
        (
            "ProcedureCodeSequence[1].CodeValue (0008,0100)",
            "SH",
            "it is 17 characters long (at most 16 for SH)",
        )
    ]


def test_export_command_refuses_with_a_message_not_a_traceback(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from medseg.cli import main
    from medseg.io import save_labels

    _, labels = _case(shared_data, tmp_path / "ct", REFUSED["name_10000_chars"][0])
    labels_path = save_labels(labels, tmp_path / "labels.nii.gz")
    base = ["export", str(labels_path), "--reference", str(tmp_path / "ct")]
    for fmt in ("seg", "rtstruct"):
        assert main([*base, "--format", fmt, "-o", str(tmp_path / f"{fmt}.dcm")]) == 2
        err = capsys.readouterr().err
        assert "PatientName (0010,0010)" in err and "10000 characters" in err
        assert "Traceback" not in err
    bad_name = ["--algorithm-name", "a\\b", "--format", "seg", "-o", str(tmp_path / "x.dcm")]
    assert main([*base, *bad_name]) == 2
    err = capsys.readouterr().err
    assert "SeriesInfo.algorithm_name" in err and "backslash" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct", "labels.json", "labels.nii.gz"]
