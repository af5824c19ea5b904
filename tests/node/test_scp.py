"""The node's Storage SCP in-process (pynetdicom server in a thread, pynetdicom as the client):
durable spooling, refusals of unknown callers, wrong hosts, bad instances and too many
associations."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from node_tools import CtSeries, free_port, wait_for
from pynetdicom import AE

from medseg.node import NodeConfig, NodeState, Spool
from medseg.node.scp import build_scp

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"


@pytest.fixture
def scp(tmp_path: Path) -> Iterator[tuple[NodeConfig, Spool, NodeState]]:
    port = free_port()
    config = NodeConfig.from_dict(
        {
            "output_dir": str(tmp_path / "out"),
            "host": "127.0.0.1",
            "port": port,
            "callers": [{"ae_title": "PACS", "host": "127.0.0.1", "port": 104}],
            "max_associations": 1,
            "max_instance_mb": 0.05,  # one 128×128 CT slice (33 kB) fits, a 512×512 one not
        }
    )
    spool = Spool(config.spool_dir)
    state = NodeState(config.batch_dir / "manifest.sqlite")
    ae, handlers = build_scp(config, spool, state)
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    try:
        yield config, spool, state
    finally:
        server.shutdown()
        state.close()


def _associate(config: NodeConfig, *, calling: str = "PACS", called: str = "MEDSEG",
               bind: str = "127.0.0.1") -> Any:  # fmt: skip
    ae = AE(ae_title=calling)
    ae.add_requested_context(CT_STORAGE, EXPLICIT)
    ae.add_requested_context("1.2.840.10008.1.1")
    return ae.associate("127.0.0.1", config.port, ae_title=called, bind_address=(bind, 0))


def test_store_is_durable_and_counted(scp: Any, node_ct: CtSeries) -> None:
    config, spool, state = scp
    assoc = _associate(config)
    assert assoc.is_established
    for f in node_ct.files[:3]:
        assert assoc.send_c_store(f).Status == 0x0000
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()
    study = Spool.study_key(node_ct.study_instance_uid)
    assert spool.studies() == [study] and spool.count(study) == 3
    for f in node_ct.files[:3]:
        src = pydicom.dcmread(f)
        got = pydicom.dcmread(spool.study_dir(study) / f"{src.SOPInstanceUID}.dcm")
        assert got.PixelData == src.PixelData and got.PatientID == src.PatientID
        assert got.file_meta.TransferSyntaxUID == EXPLICIT
    state.flush()
    (row,) = state.studies()
    assert (row["study_hash"], row["state"], row["received"]) == (study, "receiving", 3)
    assert (row["caller_ae"], row["caller_host"]) == ("PACS", "127.0.0.1")
    assert not list(spool.incoming.iterdir())  # no temporary file left


@pytest.mark.parametrize(
    ("calling", "called", "bind", "why"),
    [
        ("INTRUDER", "MEDSEG", "127.0.0.1", "unknown calling AE title"),
        ("PACS", "MEDSEG", "127.0.0.2", "known AE title from another host"),
        ("PACS", "OTHERNODE", "127.0.0.1", "wrong called AE title"),
    ],
)
def test_refused_associations(scp: Any, calling: str, called: str, bind: str, why: str) -> None:
    config, spool, _ = scp
    assoc = _associate(config, calling=calling, called=called, bind=bind)
    assert assoc.is_rejected, why
    assert not assoc.is_established
    assert spool.studies() == []


def test_too_many_associations_refused(scp: Any) -> None:
    config, _, _ = scp
    first = _associate(config)
    assert first.is_established
    second = _associate(config)
    assert second.is_rejected and not second.is_established  # max_associations 1
    first.release()

    def accepted() -> Any:  # the server's association thread ends shortly after the release
        assoc = _associate(config)
        return assoc if assoc.is_established else None

    wait_for(accepted, 10, "an association once the first one is released").release()


def test_bad_instances_refused(scp: Any, node_ct: CtSeries, shared_data: Path) -> None:
    config, spool, state = scp
    assoc = _associate(config)
    ds = pydicom.dcmread(node_ct.files[0])
    ds.StudyInstanceUID = ""  # no study to file it under
    assert assoc.send_c_store(ds).Status == 0xC000
    big = pydicom.dcmread(node_ct.files[1])
    big.PixelData = bytes(600 * 1024)  # over max_instance_mb (0.05 MB)
    big.Rows = big.Columns = 548
    assert assoc.send_c_store(big).Status == 0xA700
    assoc.release()
    assert spool.studies() == [] and state.studies() == []
