"""The DICOM node against a real PACS: Orthanc (Debian package) started by the tests on loopback.

Orthanc gets a real CT over its REST API, C-STOREs it to ``medseg listen`` (via
``/modalities/medseg/store``), and the node's RTSTRUCT and SEG must show up in the same Orthanc
study, referencing that CT series, with organs equal to ``medseg segment`` on the same CT.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from node_tools import ORTHANC_AE, PATIENT_ID, PATIENT_NAME, CtSeries, NodeEnv, Orthanc, wait_for

pytestmark = pytest.mark.slow


def _results(orthanc: Orthanc, study_uid: str) -> tuple[list[str], list[str]]:
    return (
        orthanc.instances_of_modality(study_uid, "RTSTRUCT"),
        orthanc.instances_of_modality(study_uid, "SEG"),
    )


def wait_results(orthanc: Orthanc, study_uid: str, timeout: float = 150) -> tuple[str, str]:
    """Wait until Orthanc holds an RTSTRUCT and a SEG in the study; exactly one of each."""

    def both() -> bool:
        return all(_results(orthanc, study_uid))

    wait_for(
        both,
        timeout,
        "the node's RTSTRUCT and SEG in Orthanc",
        step=0.5,
    )
    time.sleep(1.0)  # a duplicate result would arrive right behind the first
    rt, seg = _results(orthanc, study_uid)
    assert len(rt) == 1 and len(seg) == 1, f"{len(rt)} RTSTRUCT(s), {len(seg)} SEG(s) in Orthanc"
    return rt[0], seg[0]


def _masks(path: Path, ct: Any) -> dict[str, np.ndarray]:
    from medseg.io import load_labels

    labels = load_labels(path, reference=ct)
    return {name: labels.mask(name) for name in labels.label_map.names}


def check_results(orthanc: Orthanc, ids: tuple[str, str], ct: CtSeries, oracle: Path, tmp: Path):
    """RTSTRUCT and SEG reference the CT series; organs equal ``medseg segment`` (Dice 1.0)."""
    from medseg.io import load_volume

    rt_path = orthanc.download(ids[0], tmp / "node_rtstruct.dcm")
    seg_path = orthanc.download(ids[1], tmp / "node_seg.dcm")
    rt = pydicom.dcmread(rt_path)
    seg = pydicom.dcmread(seg_path)
    assert rt.StudyInstanceUID == seg.StudyInstanceUID == ct.study_instance_uid
    ref_series = (
        rt.ReferencedFrameOfReferenceSequence[0]
        .RTReferencedStudySequence[0]
        .RTReferencedSeriesSequence[0]
        .SeriesInstanceUID
    )
    assert ref_series == ct.series_instance_uid
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct.series_instance_uid
    volume = load_volume(ct.folder)
    for node_file, oracle_file in ((rt_path, "rtstruct.dcm"), (seg_path, "seg.dcm")):
        got = _masks(node_file, volume)
        want = _masks(oracle / oracle_file, volume)
        assert sorted(got) == sorted(want) and len(want) >= 5
        for name, mask in want.items():
            inter = np.logical_and(mask, got[name]).sum()
            dice = 2.0 * inter / (mask.sum() + got[name].sum()) if mask.any() else 1.0
            assert dice == 1.0, f"{oracle_file} {name}: Dice {dice:.4f}"
        assert sum(int(m.sum()) for m in want.values()) > 1000  # real organs, not empty masks


def test_orthanc_to_node_and_back_two_associations(
    node_env: Any, node_ct: CtSeries, oracle: Path, tmp_path: Path
) -> None:
    """Orthanc sends the CT over two associations (two store jobs): contoured once, RTSTRUCT +
    SEG back in Orthanc, Dice 1.0 against medseg segment; no patient data in logs or names."""
    env: NodeEnv = node_env()
    env.node.start()
    orthanc = env.orthanc
    ids = orthanc.upload(node_ct.files)
    half = len(ids) // 2
    job1 = orthanc.store_to_node(ids[:half])
    job2 = orthanc.store_to_node(ids[half:])
    assert job1["FailedInstancesCount"] == 0 and job1["InstancesCount"] == half
    assert job2["FailedInstancesCount"] == 0 and job2["InstancesCount"] == len(ids) - half
    result_ids = wait_results(orthanc, node_ct.study_instance_uid)
    check_results(orthanc, result_ids, node_ct, oracle, tmp_path)

    (study,) = env.node.rows("SELECT * FROM node_studies")
    assert study["state"] == "done" and study["contour_runs"] == 1
    assert study["received"] == len(ids) and study["caller_ae"] == ORTHANC_AE
    (row,) = env.node.rows("SELECT * FROM studies")  # the contour engine's own row
    assert row["state"] == "done" and row["attempts"] == 1
    sends = env.node.rows("SELECT * FROM sends ORDER BY output")
    assert [(s["output"], s["state"], s["attempts"]) for s in sends] == [
        ("rtstruct", "sent", 1),
        ("seg", "sent", 1),
    ]
    assert {s["destination"] for s in sends} == {f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"}
    spool = env.output_dir / "spool" / study["study_hash"]
    assert len(list(spool.glob("*.dcm"))) == len(ids)
    env.node.stop()
    log = env.node.log.read_text()
    names = "\n".join(str(p) for p in env.output_dir.rglob("*"))
    for secret in (PATIENT_NAME, PATIENT_ID, "Secretname"):
        assert secret not in log and secret not in names


def test_orthanc_down_at_send_time_then_node_killed(
    node_env: Any, node_ct: CtSeries, oracle: Path, tmp_path: Path
) -> None:
    """Orthanc stops right after sending the CT: the node retries with backoff; kill -9 of the
    node while results are pending; Orthanc and the node come back: results delivered once."""
    env: NodeEnv = node_env()
    env.node.start()
    orthanc = env.orthanc
    orthanc.store_to_node(orthanc.upload(node_ct.files))
    orthanc.stop()
    failing = wait_for(
        lambda: [s for s in env.node.rows("SELECT * FROM sends") if s["attempts"] >= 2] or None,
        150,
        "failed, retried sends while Orthanc is down",
        step=0.5,
    )
    assert all(s["state"] == "pending" and "no association" in s["last_error"] for s in failing)
    env.node.kill9()
    orthanc.start()  # same storage: the CT is still there
    env.node.start()
    result_ids = wait_results(orthanc, node_ct.study_instance_uid, timeout=60)
    check_results(orthanc, result_ids, node_ct, oracle, tmp_path)
    sends = env.node.rows("SELECT * FROM sends")
    assert len(sends) == 2 and all(s["state"] == "sent" and s["attempts"] >= 2 for s in sends)
    assert max(s["attempts"] for s in sends) >= 3  # ≥ 2 failures before the kill, then success
    (study,) = env.node.rows("SELECT * FROM node_studies")
    assert study["contour_runs"] == 1


def test_kill_mid_receive(node_env: Any, node_ct: CtSeries, oracle: Path, tmp_path: Path) -> None:
    """kill -9 while an association is delivering the CT: every instance answered success is
    on disk and readable; after a restart the sender resends, the study is contoured once."""
    from pynetdicom import AE

    from medseg.node import Destination, send_files

    env: NodeEnv = node_env(quiet_time_s=3.0)
    env.node.start()
    orthanc = env.orthanc
    orthanc.upload(node_ct.files)  # Orthanc has the CT (results go back into its study)
    ae = AE(ae_title=ORTHANC_AE)
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", env.port, ae_title="MEDSEG")
    assert assoc.is_established
    stored = []
    for f in node_ct.files[:50]:
        status = assoc.send_c_store(f)
        assert status.Status == 0x0000
        stored.append(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
    env.node.kill9()  # the association is still open: mid-receive
    assoc.abort()
    spooled = {p.stem: p for p in (env.output_dir / "spool").glob("*/*.dcm")}
    assert set(stored) <= set(spooled)  # nothing answered success was lost
    for uid in stored:
        assert pydicom.dcmread(spooled[uid]).SOPInstanceUID == uid  # complete, readable files
    env.node.start()
    outcomes = send_files(
        node_ct.files, Destination("MEDSEG", "127.0.0.1", env.port), calling_ae=ORTHANC_AE
    )  # the sender's retry: the whole series again
    assert all(o.ok for o in outcomes)
    result_ids = wait_results(orthanc, node_ct.study_instance_uid)
    check_results(orthanc, result_ids, node_ct, oracle, tmp_path)
    (study,) = env.node.rows("SELECT * FROM node_studies")
    assert study["contour_runs"] == 1 and study["state"] == "done"
    (row,) = env.node.rows("SELECT * FROM studies")
    assert row["attempts"] == 1


def test_kill_mid_contour_embedded_cluster(
    node_env: Any, node_ct: CtSeries, oracle: Path, tmp_path: Path
) -> None:
    """The node with its own Dask workers (the default) is killed -9 (workers too) while the
    engine contours; after a restart the study is contoured again into one folder and sent once."""
    env: NodeEnv = node_env(embedded=True)
    env.node.start()
    orthanc = env.orthanc
    orthanc.store_to_node(orthanc.upload(node_ct.files))
    wait_for(
        lambda: env.node.rows("SELECT 1 FROM studies WHERE state='running'"),
        180,
        "the engine to start contouring",
        step=0.1,
    )
    env.node.kill9()
    assert not orthanc.instances_of_modality(node_ct.study_instance_uid, "RTSTRUCT")
    env.node.start()
    result_ids = wait_results(orthanc, node_ct.study_instance_uid, timeout=240)
    check_results(orthanc, result_ids, node_ct, oracle, tmp_path)
    (study,) = env.node.rows("SELECT * FROM node_studies")
    assert study["contour_runs"] == 2 and study["state"] == "done"
    attempts = env.node.rows("SELECT state FROM attempts ORDER BY attempt_id")
    assert [a["state"] for a in attempts][-1] == "done" and len(attempts) == 2
    folders = [p.name for p in (env.output_dir / "contour" / "studies").iterdir()]
    assert len(folders) == 1  # one complete folder, no partial leftovers


def test_kill_mid_c_store_of_a_result(node_env: Any, node_ct: CtSeries, tmp_path: Path) -> None:
    """kill -9 while a result's C-STORE is in flight (the destination holds its answer): after a
    restart both results reach the destination -- at least once, same SOP Instance UIDs."""
    import threading

    from node_tools import free_port
    from pynetdicom import AE, evt

    from medseg.node import Destination, send_files

    port = free_port()
    received: list[str] = []
    in_flight, release = threading.Event(), threading.Event()

    def on_store(event: Any) -> int:
        if not received and not release.is_set():
            in_flight.set()
            release.wait(60)  # the first result hangs until the node is dead
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    ae = AE(ae_title="TPS")
    for uid in ("1.2.840.10008.5.1.4.1.1.481.3", "1.2.840.10008.5.1.4.1.1.66.4"):
        ae.add_supported_context(uid, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[
        (evt.EVT_C_STORE, on_store)])  # fmt: skip
    try:
        env: NodeEnv = node_env(
            send_to_sender=False, destinations=[{"ae_title": "TPS", "host": "127.0.0.1",
                                                 "port": port}]
        )  # fmt: skip
        env.node.start()
        outcomes = send_files(
            node_ct.files, Destination("MEDSEG", "127.0.0.1", env.port), calling_ae=ORTHANC_AE
        )
        assert all(o.ok for o in outcomes)
        assert in_flight.wait(150), "no result was sent"
        env.node.kill9()
        release.set()
        received.clear()
        env.node.start()
        wait_for(lambda: len(set(received)) >= 2, 60, "both results at the destination")
        sends = env.node.rows("SELECT * FROM sends")
        assert {s["sop_instance_uid"] for s in sends} == set(received)
        assert all(s["state"] == "sent" for s in sends)
        out = env.output_dir / "contour" / "studies"
        (folder,) = list(out.iterdir())
        for name in ("rtstruct.dcm", "seg.dcm"):
            assert str(pydicom.dcmread(folder / name).SOPInstanceUID) in received
    finally:
        release.set()
        server.shutdown()
