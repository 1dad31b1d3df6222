"""Every kind of bad input gets one clear bad_request (or the right code), never a crash."""

import math

import msgpack
import pytest
import zmq

from daemon import Daemon


def raw(daemon, data: bytes) -> dict:
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(daemon.listen)
    sock.send(data)
    assert sock.poll(5000), "no reply"
    reply = msgpack.unpackb(sock.recv(), raw=False)
    sock.close()
    return reply


def ask(daemon, request: dict) -> dict:
    return raw(daemon, msgpack.packb(request))


@pytest.mark.parametrize("request_, code, words", [
    ({"command": "nope"}, "bad_request", "unknown command 'nope'"),
    ({}, "bad_request", "missing key command"),
    ({"command": 7}, "bad_request", "command must be a string"),
    ({"command": "get_version", "color": "red"}, "bad_request", "unknown key color"),
    ({"command": "check_available"}, "bad_request", "missing key resource"),
    ({"command": "check_available", "resource": 5}, "bad_request", "resource must be a string"),
    ({"command": "check_available", "resource": "dut-1", "start_time": math.nan},
     "bad_request", "start_time must be finite"),
    ({"command": "check_available", "resource": "dut-1", "start_time": math.inf},
     "bad_request", "start_time must be finite"),
    ({"command": "check_available", "resource": "dut-1", "start_time": 1e308},
     "bad_request", "start_time must be an epoch time"),
    ({"command": "check_available", "resource": "dut-1", "start_time": 2000.0,
      "end_time": 1000.0}, "bad_request", "end_time must be after start_time"),
    ({"command": "request_reservation", "resource": "dut-1", "reservation_duration": -5},
     "bad_request", "reservation_duration must be a duration"),
    ({"command": "request_reservation", "resource": "dut-1", "reservation_duration": 0},
     "bad_request", "reservation_duration must be more than 0"),
    ({"command": "request_reservation", "resource": "dut-1", "reservation_duration": True},
     "bad_request", "reservation_duration must be a number"),
    ({"command": "request_reservation", "resource": "dut-1", "reservation_mode": "greedy"},
     "bad_request", "reservation_mode must be one of exclusive, shared"),
    ({"command": "request_reservation", "resource": "dut-1", "slots": 0},
     "bad_request", "slots must be from 1"),
    ({"command": "request_reservation", "resource": "", "reservation_duration": 5},
     "bad_request", "resource must be 1 to 256 characters"),
    ({"command": "request_reservation"}, "bad_request", "give resource or resources"),
    ({"command": "request_reservation", "resources": ["dut-1", "dut-1"]},
     "bad_request", "named twice"),
    ({"command": "request_reservation", "resource": "nope"}, "not_found", "no resource"),
    ({"command": "claim_reservation", "pre_reservation_id": "nope"}, "not_found", "nope"),
    ({"command": "extend_reservation", "reservation_id": "x", "extra_s": math.nan},
     "bad_request", "extra_s must be finite"),
    ({"command": "get_events", "since_seq": -1}, "bad_request", "since_seq must be from 0"),
    ({"command": "get_events", "since_seq": 0, "topics": ["x"]}, "bad_request", "topics[0]"),
])
def test_bad_requests_are_refused_with_a_reason(daemon, request_, code, words):
    request_ = {**request_, "request_id": "r-1"}
    reply = ask(daemon, request_)
    assert reply["ok"] is False
    assert reply["error"]["code"] == code
    assert words in reply["error"]["message"]
    assert reply["request_id"] == "r-1"


@pytest.mark.parametrize("data, words", [
    (b"", "not valid msgpack"),
    (b"\xc1", "not valid msgpack"),
    (msgpack.packb([1, 2, 3]), "must be a msgpack map"),
    (msgpack.packb("get_version"), "must be a msgpack map"),
    (msgpack.packb({1: 2}), "not valid msgpack"),           # map keys must be strings
    (b"\x91" * 2000 + b"\x90", "not valid msgpack"),        # nesting beyond msgpack's stack
    (msgpack.packb({"command": "get_version", "x": "a" * 70_000}),
     "within atsd's limits: 70000 exceeds max_str_len(65536)"),
    (msgpack.packb({"command": "get_version", "x": [[[[[[[[[[1]]]]]]]]]]}), "nests deeper"),
])
def test_garbage_frames_get_one_reply(daemon, data, words):
    reply = raw(daemon, data)
    assert reply["ok"] is False and reply["error"]["code"] == "bad_request"
    assert words in reply["error"]["message"]
    assert ask(daemon, {"command": "get_version"})["ok"] is True      # still up


def test_refused_requests_change_nothing(daemon):
    before = ask(daemon, {"command": "get_events", "since_seq": 0})["last_seq"]
    ask(daemon, {"command": "request_reservation", "resource": "dut-1", "slots": -1})
    ask(daemon, {"command": "request_reservation", "resources": ["dut-1", "nope"]})
    assert ask(daemon, {"command": "list_reservations"})["reservations"] == []
    assert ask(daemon, {"command": "get_events", "since_seq": 0})["last_seq"] == before


@pytest.mark.parametrize("config, words", [
    ("resources: [{name: a, slots: 0}]", "resources[0].slots: must be an integer of at least 1"),
    ("resources: [{name: a}, {name: a}]", "resources[1].name: 'a' is defined twice"),
    ("resources: [{type: x}]", "resources[0]: missing key name"),
    ("colour: blue", "colour: unknown key"),
    ("claim_window_s: -1", "claim_window_s: must be more than 0"),
    ("listen: localhost:5555", "listen: 'localhost:5555' is not a ZeroMQ endpoint"),
    ("queues: {q: {backend: pbs}}", "queues.q.backend: must be local or slurm"),
    ("resources: [{name: a}]\n  bad: [", "(file): not valid YAML"),
    ("resource_spec: missing.json", "resource_spec:"),
])
def test_bad_config_stops_startup_with_file_key_and_reason(tmp_path, config, words):
    import subprocess
    import sys
    path = tmp_path / "atsd.yaml"
    path.write_text(config)
    for argv in (["check-config", str(path)], ["--config", str(path)]):
        result = subprocess.run([sys.executable, "-m", "atsd", *argv], capture_output=True,
                                text=True, timeout=30)
        assert result.returncode == 2
        assert str(path) in result.stderr and words in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_check_config_accepts_the_shipped_example():
    import subprocess
    import sys
    from pathlib import Path
    conf = Path(__file__).resolve().parents[1] / "conf" / "atsd.yaml"
    result = subprocess.run([sys.executable, "-m", "atsd", "check-config", str(conf)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_state_file_from_a_newer_schema_is_refused_and_kept(tmp_path):
    import sqlite3
    d = Daemon(tmp_path / "d")
    con = sqlite3.connect(d.state)
    con.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value);"
                      "CREATE TABLE records (kind TEXT, key TEXT, data BLOB);"
                      "INSERT INTO meta VALUES ('schema_version', 99);")
    con.close()
    before = d.state.read_bytes()
    with pytest.raises(AssertionError, match="newer than this atsd"):
        d.start(timeout=10)
    assert d.state.read_bytes() == before


def test_corrupted_state_file_is_refused_and_kept(tmp_path):
    d = Daemon(tmp_path / "d")
    d.state.write_bytes(b"this is not a database" * 100)
    with pytest.raises(AssertionError, match="not a usable atsd state file"):
        d.start(timeout=10)
    assert d.state.read_bytes() == b"this is not a database" * 100
