"""Independent clients against the node -- dcmtk's echoscu/storescu -- and the operator commands
``medseg echo`` / ``medseg send`` against the node and against a real Orthanc."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from node_tools import (
    CtSeries,
    NodeProcess,
    Orthanc,
    free_port,
    wait_for,
    write_node_config,
)
from pydicom.uid import generate_uid

from medseg.cli import main
from medseg.node import Spool

J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"


@pytest.fixture
def receiving_node(tmp_path: Path) -> Iterator[NodeProcess]:
    """A node that only receives (quiet time 10 min, no contouring during the test)."""
    cfg = write_node_config(
        tmp_path / "node.yaml",
        output_dir=tmp_path / "node",
        port=free_port(),
        callers=[{"ae_title": "STORESCU", "host": "127.0.0.1"}],
        scheduler="tcp://127.0.0.1:9",  # never used: nothing completes during the test
        quiet_time_s=600,
        send_to_sender=False,
        destinations=[{"ae_title": "NOWHERE", "host": "127.0.0.1", "port": 9}],
    )
    node = NodeProcess(cfg, tmp_path / "node.log")
    try:
        node.start()
        yield node
    finally:
        node.stop()


def j2k_series(shared_data: Path, folder: Path) -> list[Path]:
    """The TotalSegmentator example series (real JPEG 2000 lossless CT) with the UIDs its
    de-identification emptied filled in (SOP Instance UID from the file meta, new study and
    series UIDs); pixel data untouched."""
    folder.mkdir()
    study, series = generate_uid(), generate_uid()
    out = []
    for f in sorted((shared_data / "totalsegmentator_example_ct" / "example_ct_dicom").iterdir()):
        ds = pydicom.dcmread(f)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
        out.append(folder / f"{ds.SOPInstanceUID}.dcm")
    return out


def _dcmtk(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=False, capture_output=True, text=True, timeout=120)


def test_echoscu_and_storescu(
    receiving_node: NodeProcess, node_ct: CtSeries, shared_data: Path, tmp_path: Path
) -> None:
    node = receiving_node
    port = str(node.port)
    assert (
        _dcmtk("echoscu", "-aet", "STORESCU", "-aec", "MEDSEG", "127.0.0.1", port).returncode == 0
    )
    refused = _dcmtk("echoscu", "-aet", "INTRUDER", "-aec", "MEDSEG", "127.0.0.1", port)
    assert refused.returncode != 0 and "Rejected" in refused.stderr + refused.stdout

    files = [str(f) for f in node_ct.files[:40]]
    sent = _dcmtk("storescu", "-aet", "STORESCU", "-aec", "MEDSEG", "127.0.0.1", port, *files)
    assert sent.returncode == 0, sent.stderr
    j2k = j2k_series(shared_data, tmp_path / "j2k")
    # -xv: propose JPEG 2000 lossless (the files' own transfer syntax)
    sent = _dcmtk("storescu", "-xv", "-aet", "STORESCU", "-aec", "MEDSEG", "127.0.0.1", port,
                  *map(str, j2k))  # fmt: skip
    assert sent.returncode == 0, sent.stderr

    spool = Spool(node.output_dir / "spool")
    ct_study = spool.study_key(node_ct.study_instance_uid)
    j2k_study = spool.study_key(str(pydicom.dcmread(j2k[0]).StudyInstanceUID))
    assert sorted(spool.studies()) == sorted([ct_study, j2k_study])
    assert spool.count(ct_study) == 40 and spool.count(j2k_study) == len(j2k) == 20
    for f in j2k:  # stored as received: same transfer syntax, same compressed bytes
        src = pydicom.dcmread(f)
        got = pydicom.dcmread(spool.study_dir(j2k_study) / f.name)
        assert got.file_meta.TransferSyntaxUID == J2K_LOSSLESS
        assert got.PixelData == src.PixelData
    rows = wait_for(
        lambda: node.rows("SELECT study_hash, received, state FROM node_studies") or None,
        10,
        "node_studies rows",
    )
    assert {(r["study_hash"], r["state"]) for r in rows} == {
        (ct_study, "receiving"),
        (j2k_study, "receiving"),
    }


def test_medseg_echo_and_send_to_the_node(
    receiving_node: NodeProcess, node_ct: CtSeries, capsys: pytest.CaptureFixture[str]
) -> None:
    address = f"MEDSEG@127.0.0.1:{receiving_node.port}"
    assert main(["echo", address, "--calling-ae", "STORESCU"]) == 0
    assert "success" in capsys.readouterr().out
    assert main(["echo", address, "--calling-ae", "INTRUDER"]) == 2
    assert "rejected the association" in capsys.readouterr().err
    assert main(["send", str(node_ct.files[0]), str(node_ct.files[1]), "--to", address,
                 "--calling-ae", "STORESCU"]) == 0  # fmt: skip
    assert "2 of 2 file(s) stored" in capsys.readouterr().out
    spool = Spool(receiving_node.output_dir / "spool")
    assert spool.count(spool.study_key(node_ct.study_instance_uid)) == 2


def test_medseg_send_and_echo_against_orthanc(
    tmp_path: Path, node_ct: CtSeries, capsys: pytest.CaptureFixture[str]
) -> None:
    orthanc = Orthanc(tmp_path / "orthanc", node_port=free_port())
    orthanc.start()
    try:
        address = f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"
        assert main(["echo", address]) == 0
        folder = tmp_path / "to_send"
        (folder / "sub").mkdir(parents=True)
        for f in node_ct.files[:12]:  # a folder tree of DICOM files and one that is not
            shutil.copy(f, folder / "sub" / f.name)
        (folder / "notes.txt").write_text("not DICOM")
        code = main(["send", str(folder), str(node_ct.files[12]), "--to", address])
        captured = capsys.readouterr()
        assert code == 1  # one file was not stored
        assert "13 of 14 file(s) stored" in captured.out
        assert "notes.txt" in captured.err
        (series,) = orthanc.series_of_study(node_ct.study_instance_uid)
        assert len(series["Instances"]) == 13
    finally:
        orthanc.stop()
    # Orthanc is gone: a clear error, exit status 2
    assert main(["echo", f"ORTHANC@127.0.0.1:{orthanc.dicom_port}", "--timeout", "3"]) == 2
    assert "nothing answered" in capsys.readouterr().err
