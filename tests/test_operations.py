"""Running atsd for months: its health (get_stats, atsclient stats), systemd's notify
protocol, and log lines a machine can read."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.request

import msgpack
import pytest
import zmq

from atsclient import Forbidden
from daemon import BASE_CONFIG, cli_env, wait_for

SPEC = {"version": {"major": 1, "minor": 0}, "local": [{"gpus": [{"id": "0", "slots": 1}]}]}


@pytest.fixture
def pool_daemon(daemon_factory, tmp_path):
    (tmp_path / "atsd").mkdir()
    (tmp_path / "atsd" / "spec.json").write_text(json.dumps(SPEC))
    return daemon_factory({"resource_spec": "spec.json", "default_lease_s": 60,
                           "resources": [{"name": "dut-1"}],
                           "security": {"admins": ["labadmin"]}})


def test_stats_show_connections_waiters_reservations_events_and_commits(pool_daemon):
    d = pool_daemon
    alice, admin = d.client("alice"), d.client("labadmin")
    held = alice.checkout([{"type": "gpus", "slots": 1}], lease_s=60)
    pre = alice.call("request_reservation", resource="dut-1", reservation_duration=60)
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.connect(d.events)
    waited = {}

    def bob_waits():
        with d.client("bob", timeout=30) as bob:
            waited["reply"] = bob.checkout([{"type": "gpus", "slots": 1}], lease_s=5,
                                           wait_s=30)
    waiter = threading.Thread(target=bob_waits)
    waiter.start()
    try:
        # the socket monitor counts peers as libzmq reports them, a moment after they come
        stats = wait_for(lambda: (s := admin.get_stats())["waiting"] and s["subscribers"]
                         and s["connections"] >= 3 and s,
                         what="bob to wait and the subscriber to connect")
        assert stats["waiting"] == {"gpus": 1}
        assert stats["requests_in_flight"] == 1
        assert stats["connections"] == 3        # alice, admin, bob
        assert stats["subscribers"] == 1
        assert stats["reservations"] == {"RESERVATION_ACTIVE": 1, "RESERVATION_GRANTED": 1}
        assert stats["events"]["last_seq"] == 2 and stats["events"]["in_log"] == 2
        store = stats["store"]
        assert store["bytes"] > 0 and store["commits"] >= 2 and store["last_error"] is None
        assert 0 < store["commit_ms"]["p50"] <= store["commit_ms"]["max"]
        assert stats["uptime_s"] > 0

        with pytest.raises(Forbidden):
            alice.get_stats()
        out = d.cli("stats", user="labadmin")
        assert out.returncode == 0, out.stderr
        assert "waiting checkouts: gpus 1" in out.stdout
        assert "reservations: RESERVATION_ACTIVE 1, RESERVATION_GRANTED 1" in out.stdout
        assert "last commit error: none" in out.stdout
        out = d.cli("stats", "--json", user="labadmin")
        assert json.loads(out.stdout)["waiting"] == {"gpus": 1}
    finally:
        alice.checkin(held["allocation_id"])
        waiter.join(10)
    assert waited["reply"]["allocation_id"]
    sub.close(0)
    after = wait_for(lambda: (s := admin.get_stats())["subscribers"] == 0 and s,
                     what="the subscriber to be gone")
    assert after["waiting"] == {} and after["requests_in_flight"] == 0
    assert after["reservations"]["RESERVATION_ENDED"] == 1
    alice.close(), admin.close()
    assert pre["pre_reservation_id"]


def test_systemd_hears_ready_watchdog_pings_with_status_and_stopping(daemon_factory):
    directory = tempfile.mkdtemp(prefix="atsd-notify-")    # short: a socket path is < 108
    path = os.path.join(directory, "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(10)
    try:
        d = daemon_factory(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
        first = listener.recv(4096).decode()
        assert first.startswith("READY=1\nSTATUS=4 resources; 0 reservations active"), first
        d.client("alice").call("request_reservation", resource="dut-1")
        pings = []
        while len(pings) < 3 or "1 granted" not in pings[-1]:
            pings.append(listener.recv(4096).decode())
        assert all(p.startswith("WATCHDOG=1\nSTATUS=") for p in pings)
        d.stop()
        while (message := listener.recv(4096).decode()) != "STOPPING=1":
            assert message.startswith("WATCHDOG=1")
    finally:
        listener.close()
        shutil.rmtree(directory)


def _json_lines(text: str) -> list[dict]:
    """Every line, parsed: a line that is not JSON fails here, naming it."""
    lines = []
    for line in text.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
    return lines


def test_debug_logs_each_request_and_every_line_is_json(daemon_factory):
    d = daemon_factory(extra_args=["--log-level", "debug"])
    with d.client("alice") as c:
        c.call("request_reservation", resource="dut-1")
        c._do({"command": "no_such_command"}, accept={"bad_request"})
    d.stop()
    lines = _json_lines(d.log_path.read_text())
    requests = [e for e in lines if e["event"] == "request"]
    ok = [e for e in requests if e["command"] == "request_reservation"]
    assert ok and ok[0]["user"] == "alice" and ok[0]["outcome"] == "ok"
    assert ok[0]["latency_ms"] >= 0 and ok[0]["level"] == "debug"
    assert [e["outcome"] for e in requests if e["command"] == "no_such_command"] == \
        ["bad_request"]
    assert lines[-1]["event"] == "stopped"


def test_info_level_has_no_request_lines(daemon):
    with daemon.client("alice") as c:
        c.call("request_reservation", resource="dut-1")
    daemon.stop()
    assert not [e for e in _json_lines(daemon.log_path.read_text()) if e["event"] == "request"]


LOG_EVERYTHING = """
import asyncio, gc, logging, warnings
from atsd import log
log.configure("json", "info")
try:
    1 / 0
except ZeroDivisionError:
    log.get("atsd").exception("ours")
    logging.getLogger("zmq.auth").exception("stdlib %s", "logger")
warnings.warn("a warning")
async def fails():
    raise ValueError("in a task")
async def main():
    task = asyncio.ensure_future(fails())
    await asyncio.sleep(0.01)
    del task
    gc.collect()
asyncio.run(main())
raise KeyError("nobody caught it")
"""


def test_json_log_is_json_on_every_line_tracebacks_included():
    out = subprocess.run([sys.executable, "-c", LOG_EVERYTHING], capture_output=True,
                         text=True, env=cli_env(), timeout=30)
    assert out.stdout == ""
    lines = _json_lines(out.stderr)
    assert [e["event"].split("\n")[0] for e in lines] == [
        "ours", "stdlib logger", lines[2]["event"].split("\n")[0],
        "Task exception was never retrieved", "uncaught_exception"]
    assert "UserWarning: a warning" in lines[2]["event"]
    for i, error in ((0, "ZeroDivisionError"), (1, "ZeroDivisionError"), (3, "ValueError"),
                     (4, "KeyError")):
        assert lines[i]["exception"].startswith("Traceback") and error in lines[i]["exception"]


def test_metrics_page_counts_requests_and_shows_live_state(daemon_factory):
    from prometheus_client.parser import text_string_to_metric_families
    d = daemon_factory({**BASE_CONFIG, "metrics": {"listen": "127.0.0.1:0"}})
    url = json.loads(d.endpoints_file.read_text())["metrics"]
    with d.client("alice") as c:
        c.call("request_reservation", resource="dut-1", reservation_duration=600)
        with pytest.raises(Forbidden):
            c.get_stats()
        c.get_version()
    with urllib.request.urlopen(url, timeout=10) as page:
        assert page.headers["Content-Type"].startswith("text/plain")
        text = page.read().decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("atsd_requests_total", (("command", "request_reservation"),
                                            ("outcome", "ok")))] == 1
    assert samples[("atsd_requests_total", (("command", "get_version"), ("outcome", "ok")))] == 1
    assert samples[("atsd_request_seconds_count", (("command", "request_reservation"),))] == 1
    assert samples[("atsd_reservations", (("state", "RESERVATION_GRANTED"),))] == 1
    assert samples[("atsd_event_seq", ())] == 1
    assert samples[("atsd_commits_total", ())] >= 1
    assert samples[("atsd_state_bytes", (("part", "file"),))] > 0
    assert ("atsd_connections", ()) in samples and ("atsd_subscribers", ()) in samples
    # get_stats was refused before its command ran (the admin check): counted, never timed
    assert samples[("atsd_requests_total", (("command", "get_stats"),
                                            ("outcome", "forbidden")))] == 1
    assert samples[("atsd_request_seconds_count", (("command", "get_stats"),))] == 0


def _scrape(url: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen(url, timeout=10) as page:
        text = page.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _ask(sock, request) -> dict:
    sock.send_multipart([b"", request if isinstance(request, bytes) else msgpack.packb(request)])
    assert sock.poll(10_000), "no reply"
    return msgpack.unpackb(sock.recv_multipart()[-1])


def test_metrics_count_requests_refused_before_their_command_runs(daemon_factory, tmp_path):
    """Undecodable, unknown command, forbidden, a reused request_id, bad arguments,
    overloaded: each counted with its code, under a label from a fixed set (a request's
    made-up command name never becomes one); a retry answered from the cache is not counted
    again."""
    (tmp_path / "atsd").mkdir()
    (tmp_path / "atsd" / "spec.json").write_text(json.dumps(SPEC))
    d = daemon_factory({"resource_spec": "spec.json", "resources": [{"name": "dut-1"}],
                        "max_in_flight": 1, "metrics": {"listen": "127.0.0.1:0"}})
    url = json.loads(d.endpoints_file.read_text())["metrics"]
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(d.listen)
    codes = [_ask(sock, b"\xc1")["error"]["code"]]
    codes += [_ask(sock, {"command": f"made-up-{i}", "user": "alice"})["error"]["code"]
              for i in range(3)]
    codes.append(_ask(sock, {"command": "get_stats", "user": "alice"})["error"]["code"])
    book = {"command": "request_reservation", "resource": "dut-1", "user": "alice",
            "reservation_duration": 60, "request_id": "r-1"}
    assert _ask(sock, book)["ok"] and _ask(sock, book)["ok"]        # the second: a retry
    codes.append(_ask(sock, {**book, "reservation_duration": 90})["error"]["code"])
    codes.append(_ask(sock, {"command": "get_version", "colour": 1})["error"]["code"])
    with d.client("bob") as bob:
        held = bob.checkout([{"type": "gpus", "slots": 1}], lease_s=60)
        sock.send_multipart([b"", msgpack.packb({
            "command": "checkout", "request": [{"type": "gpus", "slots": 1}], "wait_s": 30,
            "user": "alice", "request_id": "wait-1"})])
        waiting = ("atsd_waiting_checkouts", (("type", "gpus"),))
        wait_for(lambda: _scrape(url).get(waiting) == 1, what="alice's checkout waiting")
        codes.append(_ask(sock, {"command": "get_version"})["error"]["code"])
        bob.checkin(held["allocation_id"])
        assert sock.poll(10_000) and msgpack.unpackb(sock.recv_multipart()[-1])["ok"]
    assert codes == ["bad_request"] * 4 + ["forbidden", "conflict", "bad_request", "overloaded"]
    samples = _scrape(url)
    counts = {dict(labels)["command"] + "/" + dict(labels)["outcome"]: value
              for (name, labels), value in samples.items() if name == "atsd_requests_total"}
    assert counts == {"invalid/bad_request": 1, "unknown/bad_request": 3,
                      "get_stats/forbidden": 1, "request_reservation/ok": 1,
                      "request_reservation/conflict": 1, "get_version/bad_request": 1,
                      "get_version/overloaded": 1, "checkout/ok": 2, "checkin/ok": 1}
    assert samples[("atsd_request_seconds_count", (("command", "get_version"),))] == 0
    sock.close()


def test_metrics_also_on_the_web_listener(daemon_factory):
    d = daemon_factory({**BASE_CONFIG, "web": {"listen": "127.0.0.1:0"}})
    endpoints = json.loads(d.endpoints_file.read_text())
    assert "metrics" not in endpoints              # no metrics.listen of its own
    with d.client("alice") as c:
        c.get_version()
    with urllib.request.urlopen(endpoints["web"] + "metrics", timeout=10) as page:
        text = page.read().decode()
    assert 'atsd_requests_total{command="get_version",outcome="ok"} 1.0' in text
