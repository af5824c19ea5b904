"""Node config (YAML, unknown keys, addresses) and the node's manifest tables (study states,
sends, retries) -- no network."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from medseg.errors import ConfigError
from medseg.node import NodeConfig, NodeState, load_node_config, parse_address
from medseg.node.config import Destination
from medseg.node.state import utc_now

REPO = Path(__file__).resolve().parents[2]


def test_shipped_config_loads_with_output_override(tmp_path: Path) -> None:
    config = load_node_config(REPO / "pipelines" / "node.yaml", output_dir=tmp_path / "n")
    assert config.ae_title == "MEDSEG" and config.port == 11112
    assert config.batch_dir == tmp_path / "n" / "contour"
    assert config.spool_dir == tmp_path / "n" / "spool"
    assert config.contour.formats == ("nifti", "seg", "rtstruct")
    orthanc = config.caller("ORTHANC", "127.0.0.1")
    assert orthanc is not None
    assert config.destinations_for(orthanc) == [Destination("ORTHANC", "127.0.0.1", 4242)]
    assert config.caller("ORTHANC", "10.1.2.3") is None and config.caller("X", "127.0.0.1") is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"quiet_tme_s": 3}, "unknown keys ['quiet_tme_s']"),
        ({"callers": []}, "no calling AE is allowed"),
        ({"callers": [{"ae_title": "A" * 17, "host": "h"}]}, "17 characters long"),
        ({"callers": [{"ae_title": "PACS", "hots": "h"}]}, "unknown keys ['hots']"),
        ({"callers": [{"ae_title": "PACS", "host": "10.0.0.1"}]}, "have no port"),
        ({"port": 70000}, "a TCP port is an integer"),
        ({"retry": {"initial_s": 0}}, "retry.initial_s must be a number > 0"),
        ({"send": ["nifti"]}, "send: choose from"),
        ({"contour": {"formats": ["nifti", "seg"]}}, "['rtstruct'] are not made"),
        ({"contour": {"modle": "x"}}, "unknown keys ['modle']"),
        ({"send_to_sender": False}, "results would go nowhere"),
    ],
)
def test_config_errors_say_what_and_how(change: dict, message: str, tmp_path: Path) -> None:
    base = {
        "output_dir": str(tmp_path),
        "callers": [{"ae_title": "PACS", "host": "10.0.0.1", "port": 104}],
    }
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        NodeConfig.from_dict({**base, **change})


def test_destinations_and_addresses() -> None:
    config = NodeConfig.from_dict(
        {
            "output_dir": "x",
            "callers": [{"ae_title": "PACS", "host": "*"}],
            "destinations": [{"ae_title": "TPS", "host": "10.0.0.5", "port": 104}],
        }
    )
    pacs = config.caller("PACS", "192.168.7.7")  # host '*': any address
    assert pacs is not None and pacs.destination() is None
    assert config.destinations_for(pacs) == [Destination("TPS", "10.0.0.5", 104)]
    assert parse_address("PACS@[::1]:11112") == Destination("PACS", "::1", 11112)
    with pytest.raises(ConfigError, match="AE@HOST:PORT"):
        parse_address("PACS@host")


def test_study_states_quiet_time_and_late_instances(tmp_path: Path) -> None:
    state = NodeState(tmp_path / "manifest.sqlite")
    for _ in range(3):
        state.record_instance("s1", caller_ae="PACS", caller_host="10.0.0.1")
    assert state.ready_studies(quiet_time_s=60) == []  # not quiet yet
    time.sleep(0.3)
    (ready,) = state.ready_studies(quiet_time_s=0.2)
    assert (ready["study_hash"], ready["received"], ready["caller_ae"]) == ("s1", 3, "PACS")
    received = state.start_contouring(["s1"])
    assert received == {"s1": 3}
    state.record_instance("s1", caller_ae="PACS", caller_host="10.0.0.1")  # late instance
    send = {"key": "s1-x", "output": "rtstruct", "path": "studies/s1-x/rtstruct.dcm",
            "sop_instance_uid": "1.2.3", "destination": "PACS@10.0.0.1:104"}  # fmt: skip
    finished = state.finish_contouring(
        "s1", received=received["s1"], state="done", reason="", keys=["s1-x"], sends=[send]
    )
    assert not finished  # back to receiving: contoured again with the late instance
    row = state.study("s1")
    assert row is not None and row["state"] == "receiving" and row["received"] == 4
    received = state.start_contouring(["s1"])
    assert state.finish_contouring(
        "s1", received=received["s1"], state="done", reason="", keys=["s1-x"], sends=[send]
    )
    row = state.study("s1")
    assert row is not None and (row["state"], row["contour_runs"]) == ("done", 2)
    assert len(state.sends()) == 1  # the same result is queued once
    state.close()

    # a node killed while contouring: at start the study waits one quiet time, then goes again
    state = NodeState(tmp_path / "manifest.sqlite")
    state.start_contouring(["s1"])
    state.close()
    state = NodeState(tmp_path / "manifest.sqlite")
    assert state.resume() == ["s1"]
    assert state.ready_studies(quiet_time_s=5) == []
    assert [r["study_hash"] for r in state.ready_studies(quiet_time_s=0)] == ["s1"]
    assert state.adopt_spooled(["s1", "s2"]) == ["s2"]  # spool folder without a row
    state.start_contouring(["s2"])
    state.requeue(["s2"], "hand-over failed (cluster gone); retried")  # not the study's fault
    row = state.study("s2")
    assert row is not None and row["state"] == "receiving" and "cluster gone" in row["reason"]
    state.close()


def test_sends_retry_then_succeed_or_give_up(tmp_path: Path) -> None:
    state = NodeState(tmp_path / "manifest.sqlite")
    state.record_instance("s1", caller_ae="PACS", caller_host="h")
    received = state.start_contouring(["s1"])
    sends = [
        {"key": "s1-x", "output": o, "path": f"studies/s1-x/{o}.dcm", "sop_instance_uid": u,
         "destination": "PACS@h:104"}
        for o, u in (("rtstruct", "1.1"), ("seg", "1.2"))
    ]  # fmt: skip
    state.finish_contouring(
        "s1", received=received["s1"], state="done", reason="", keys=["s1-x"], sends=sends
    )
    due = state.due_sends(tmp_path)
    assert [d.path.name for d in due] == ["rtstruct.dcm", "seg.dcm"]
    assert due[0].path == tmp_path / "studies" / "s1-x" / "rtstruct.dcm"
    state.record_send(due[0].send_id, ok=False, status=None, error="down", retry_in_s=30)
    state.record_send(due[1].send_id, ok=False, status=0xA700, error="full", retry_in_s=None)
    assert state.due_sends(tmp_path) == []  # the retry is 30 s away
    nxt = state.next_send_at()
    assert nxt is not None and utc_now(25) < nxt < utc_now(35)
    state.record_send(due[0].send_id, ok=True, status=0, error="", retry_in_s=None)
    rows = {r["output"]: r for r in state.sends("s1")}
    assert (rows["rtstruct"]["state"], rows["rtstruct"]["attempts"]) == ("sent", 2)
    # sent after the first try (the two calls above can fall in the same millisecond)
    assert rows["rtstruct"]["first_try_at"] <= rows["rtstruct"]["sent_at"]
    assert (rows["seg"]["state"], rows["seg"]["last_status"]) == ("failed", "0xA700")
    state.close()


def test_listen_refuses_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from medseg.cli import main

    bad = tmp_path / "node.yaml"
    bad.write_text("output_dir: out\nport: 11112\ncallers: [{ae_title: PACS, host: h, port: 1}]\n"
                   "quiet_time: 5\n")  # fmt: skip
    assert main(["listen", "--config", str(bad)]) == 2
    assert "unknown keys ['quiet_time']" in capsys.readouterr().err
    assert main(["listen", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot be read" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing started, nothing written
