"""Selectors, service state, standing reservations and repair through a real daemon and the
real atsclient CLI."""

import json
import subprocess
import sys
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from atsclient import BadRequest, Forbidden, NotFound, ResourceUnavailable
from daemon import wait_for

LAB = {
    "resources": [
        {"name": "imx-1", "type": "board", "tags": {"board": "imx8", "usb": True}},
        {"name": "imx-2", "type": "board", "tags": {"board": "imx8", "usb": True}},
        {"name": "imx-3", "type": "board", "tags": {"board": "imx8"}},
        {"name": "rpi-1", "type": "board", "tags": {"board": "rpi4", "usb": True}},
    ],
    "security": {"admins": ["labadmin"]},
    "timezone": "Europe/Berlin",
    "series_max_occurrences": 20,
}
BERLIN = ZoneInfo("Europe/Berlin")


def events(client, topic, since=0):
    return [e for e in client.get_events(since, topics=[topic])["events"]]


def test_selector_request_check_and_list(daemon_factory):
    daemon = daemon_factory(LAB)
    with daemon.client("alice") as alice, daemon.client("bob") as bob:
        now = time.time()
        reply = alice.call("request_reservation", selector="board=imx8 and usb", count=2,
                           reservation_duration=600)
        assert reply["resources"] == ["imx-1", "imx-2"]
        assert reply["time_available"] == pytest.approx(now, abs=5)
        # the next pair has to wait for the first
        check = bob.call("check_available", selector="board=imx8 && usb", count=2,
                         end_time=now + 3600 * 2)
        assert check["available"] is False and check["resources"] == ["imx-1", "imx-2"]
        assert check["avail_start"] == pytest.approx(reply["end_time"])
        with pytest.raises(ResourceUnavailable):
            bob.call("request_reservation", selector="usb", count=2, next_available=False)
        one = bob.call("request_reservation", selector="usb", count=1, next_available=False)
        assert one["resources"] == ["rpi-1"]
        rows = alice.call("list_resources", selector="not usb")["resources"]
        assert [r["name"] for r in rows] == ["imx-3"]
        assert (rows[0]["service"], rows[0]["service_reason"]) == ("up", None)
        claimed = alice.claim_reservation(reply["pre_reservation_id"])
        held = alice.list_reservations(owner="alice")
        assert {r["resource"] for r in held} == {"imx-1", "imx-2"}
        assert {r["id"] for r in held} == {claimed["reservation_id"]}


@pytest.mark.parametrize("request_, message", [
    ({"command": "request_reservation", "selector": "board=imx8 and"},
     "selector: expected a tag name, found the end at position 14"),
    ({"command": "check_available", "selector": "(usb"}, "at position 4"),
    ({"command": "check_available", "selector": "usb", "resource": "imx-1"},
     "give resource or selector, not both"),
    ({"command": "list_resources", "selector": "usb $"}, "unexpected character '$' at position 4"),
    ({"command": "request_reservation", "selector": "usb", "resource": "imx-1"},
     "resource, resources or selector (one of them)"),
    ({"command": "request_reservation", "resource": "imx-1", "count": 2},
     "count goes with selector"),
    ({"command": "request_reservation", "selector": "usb", "count": 65}, "count must be from 1"),
    ({"command": "request_reservation", "selector": "x" * 1025}, "1 to 1024 characters"),
    ({"command": "request_reservation", "resource": "imx-1", "recurrence": "FREQ=SECONDLY;COUNT=2"},
     "FREQ must be one of"),
    ({"command": "request_reservation", "resources": [], "recurrence": "FREQ=DAILY;COUNT=2"},
     "resources must name at least one resource"),
    ({"command": "request_reservation", "resource": "imx-1", "recurrence": "FREQ=DAILY;COUNT=2",
      "maintenance": True}, "maintenance names its resources"),
    ({"command": "request_reservation", "resource": "imx-1", "partial": True},
     "partial goes with recurrence"),
    ({"command": "set_resource_state", "resource": "imx-1", "state": "broken"},
     "state must be one of up, down"),
])
def test_bad_selector_and_rule_requests_are_bad_request(daemon_factory, request_, message):
    daemon = daemon_factory(LAB)
    with daemon.client("labadmin") as admin:
        reply = admin.server_communicate(request_)
    assert reply["ok"] is False and reply["error"]["code"] == "bad_request", reply
    assert message in reply["error"]["message"]
    if "position" in message:
        assert reply["position"] == int(message.rsplit(" ", 1)[1])


def test_down_resource_degrades_and_selector_booking_is_replaced(daemon_factory):
    daemon = daemon_factory(LAB)
    with daemon.client("alice") as alice, daemon.client("bob") as bob, \
            daemon.client("labadmin") as admin:
        sel = alice.call("request_reservation", selector="board=imx8", count=2,
                         reservation_duration=600)
        named_pre, _, _ = bob.request_reservation("imx-3", reservation_duration=600)
        with pytest.raises(Forbidden):
            alice.call("set_resource_state", resource="imx-1", state="down", reason="x")
        with pytest.raises(BadRequest, match="reason"):
            admin.call("set_resource_state", resource="imx-1", state="down")
        since = admin.get_events(0, limit=1)["last_seq"]
        reply = admin.call("set_resource_state", resource="imx-1", state="down",
                           reason="USB hub dead")
        assert (reply["service"], reply["reason"], reply["changed"]) == ("down", "USB hub dead",
                                                                         True)
        state = events(admin, "resource.state", since)
        assert [(e["resource"], e["service"], e["reason"]) for e in state] == [
            ("imx-1", "down", "USB hub dead")]
        degraded = events(admin, "reservation.degraded", since)
        assert [(e["reservation_id"], e["resource"]) for e in degraded] == [
            (sel["pre_reservation_id"], "imx-1")]
        assert events(admin, "reservation.replaced", since) == []   # bob has imx-3
        row = next(r for r in admin.list_resources() if r["name"] == "imx-1")
        assert (row["service"], row["service_reason"], row["state"]) == (
            "down", "USB hub dead", "out_of_service")
        with pytest.raises(ResourceUnavailable):
            bob.request_reservation("imx-1", next_available=True)
        bob.release_reservation(named_pre)          # imx-3 frees: the retry takes it
        replaced = wait_for(lambda: events(admin, "reservation.replaced", since), 5,
                            what="reservation.replaced")
        assert [(e["reservation_id"], e["old"], e["new"]) for e in replaced] == [
            (sel["pre_reservation_id"], "imx-1", "imx-3")]
        rows = alice.list_reservations(owner="alice")
        assert sorted(r["resource"] for r in rows) == ["imx-2", "imx-3"]
        # the repair and the down state survive a restart
        daemon.restart()
    with daemon.client("alice") as alice, daemon.client("labadmin") as admin:
        rows = alice.list_reservations(owner="alice")
        assert sorted(r["resource"] for r in rows) == ["imx-2", "imx-3"]
        row = next(r for r in admin.list_resources() if r["name"] == "imx-1")
        assert row["service"] == "down"
        assert admin.call("set_resource_state", resource="imx-1", state="up")["service"] == "up"
        assert admin.call("set_resource_state", resource="imx-1", state="up")["changed"] is False


def test_standing_reservation_over_the_wire(daemon_factory):
    daemon = daemon_factory(LAB)
    now = time.time()
    first = datetime.fromtimestamp(now + 86400, BERLIN).replace(hour=9, minute=0, second=0,
                                                                microsecond=0)
    with daemon.client("alice") as alice, daemon.client("bob") as bob:
        second = (first + timedelta(days=1)).timestamp()     # wall clock: 09:00 again
        busy, _, _ = bob.request_reservation("imx-1", time_needed=second,
                                             reservation_duration=60, next_available=False)
        with pytest.raises(ResourceUnavailable) as refused:
            alice.call("request_reservation", resource="imx-1", time_needed=first.timestamp(),
                       reservation_duration=3600, recurrence="FREQ=DAILY;COUNT=3")
        assert [c["start_time"] for c in refused.value.reply["conflicts"]] == [second]
        assert len(alice.list_reservations(owner="alice")) == 0
        got = alice.call("request_reservation", resource="imx-1", time_needed=first.timestamp(),
                         reservation_duration=3600, recurrence="FREQ=DAILY;COUNT=3",
                         partial=True)
        assert len(got["occurrences"]) == 2 and len(got["conflicts"]) == 1
        for o in got["occurrences"]:
            local = datetime.fromtimestamp(o["start_time"], BERLIN)
            assert (local.hour, local.minute) == (9, 0)
            assert o["end_time"] - o["start_time"] == 3600
        rows = alice.list_reservations(owner="alice")
        assert {r["series_id"] for r in rows} == {got["series_id"]}
        assert {r["kind"] for r in rows} == {"claimed"}
        assert all(r["series_id"] is None for r in bob.list_reservations(owner="bob"))
        with pytest.raises(Forbidden):
            bob.release_reservation(got["series_id"])
        with pytest.raises(NotFound):
            bob.release_reservation("no-such-series")
        reply = alice.call("release_reservation", reservation_id=got["series_id"])
        assert sorted(reply["released"]) == sorted(o["reservation_id"]
                                                   for o in got["occurrences"])
        assert alice.list_reservations(owner="alice") == []


def test_series_occurrence_starts_by_itself(daemon_factory):
    daemon = daemon_factory(LAB)
    with daemon.client("alice") as alice:
        start = time.time() + 1.0
        got = alice.call("request_reservation", selector="usb", count=2, time_needed=start,
                         reservation_duration=300, recurrence="FREQ=DAILY;COUNT=2")
        first = got["occurrences"][0]
        assert first["resources"] == ["imx-1", "imx-2"]
        wait_for(lambda: [e for e in events(alice, "reservation.status")
                          if e["reservation_id"] == first["reservation_id"]
                          and e["reservation_status"] == "RESERVATION_ACTIVE"], 10,
                 what="the first occurrence to start")
        with pytest.raises(BadRequest, match="more than 20 occurrences"):
            alice.call("request_reservation", resource="rpi-1",
                       recurrence="FREQ=DAILY;COUNT=21", reservation_duration=60)


def test_cli_select_repeat_and_set_state(daemon_factory):
    daemon = daemon_factory(LAB)
    out = daemon.cli("reserve", "--select", "board=imx8 and usb", "--count", "2",
                     "--for", "2h", "--json")
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)
    assert reply["resources"] == ["imx-1", "imx-2"] and reply["reservation_id"]
    out = daemon.cli("reserve", "rpi-1", "--at", "mon09:00", "--for", "2h",
                     "--repeat", "FREQ=WEEKLY;BYDAY=MO;COUNT=2")
    assert out.returncode == 0, out.stderr
    assert "2 occurrences booked" in out.stdout
    out = daemon.cli("reserve", "--select", "board=", "--for", "1h")
    assert out.returncode == 2 and out.stderr.count("\n") == 1     # bad_request: 2
    assert "bad_request: selector: expected a value after =, found the end at position 6" \
        in out.stderr
    out = daemon.cli("reserve", "rpi-1", "--select", "usb")
    assert out.returncode == 2 and "one of the two" in out.stderr
    out = daemon.cli("set-state", "imx-3", "down", "--reason", "fan noise", user="labadmin")
    assert out.returncode == 0 and "imx-3 is down (fan noise)" in out.stdout, out.stderr
    out = daemon.cli("resources", "--select", "board=imx8")
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line.split() for line in out.stdout.splitlines()[1:]}
    assert sorted(lines) == ["imx-1", "imx-2", "imx-3"]
    assert lines["imx-3"][3] == "down" and lines["imx-1"][3] == "up"
    # when: the earliest window for --count matching resources together (imx-3 is down,
    # imx-1 and imx-2 are held for 2h)
    out = daemon.cli("when", "--select", "board=imx8", "--count", "2", "--for", "1h",
                     "--json")
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found["resources"] == ["imx-1", "imx-2"] and found["available"] is False
    assert datetime.fromisoformat(found["avail_start"]).timestamp() > time.time() + 3600
    out = daemon.cli("when", "imx-1", "--select", "usb")
    assert out.returncode == 2 and "one of the two" in out.stderr


def health_lab(directory):
    probe = [sys.executable, "-c", "import os, sys; open(sys.argv[1] + '.runs', 'a').write('.'); "
             "sys.exit(0 if os.path.exists(sys.argv[1]) else 3)"]
    fast = {"interval_s": 0.2, "timeout_s": 5}
    return {
        "resources": [
            {"name": "b-1", "tags": {"board": "x"},
             "health_check": {"command": probe + ["b-1.ok"], "failures": 2, **fast}},
            {"name": "b-2", "tags": {"board": "x"}},
            {"name": "slow", "health_check": {"command": ["sleep", "30"], "interval_s": 0.2,
                                              "timeout_s": 0.2, "failures": 1}},
            {"name": "gone", "health_check": {"command": [str(directory / "no-such-probe")],
                                              "failures": 1, **fast}},
        ],
        "security": {"admins": ["labadmin"]},
    }


def test_health_checks_take_resources_down_and_up(daemon_factory, tmp_path):
    directory = tmp_path / "atsd"
    directory.mkdir()
    ok = directory / "b-1.ok"
    ok.touch()
    daemon = daemon_factory(health_lab(directory))
    with daemon.client("alice") as alice, daemon.client("labadmin") as admin:
        def service(name):
            return next(r for r in admin.list_resources() if r["name"] == name)

        wait_for(lambda: service("slow")["service"] == "down", 10, what="slow to go down")
        assert service("slow")["service_reason"] == (
            "health check failed 1 times: no answer within 0.2s")
        wait_for(lambda: service("gone")["service"] == "down", 10, what="gone to go down")
        assert "cannot run" in service("gone")["service_reason"]
        sel = alice.call("request_reservation", selector="board=x", reservation_duration=600)
        assert sel["resources"] == ["b-1"] and service("b-1")["service"] == "up"
        ok.unlink()
        wait_for(lambda: service("b-1")["service"] == "down", 10, what="b-1 to go down")
        assert service("b-1")["service_reason"] == "health check failed 2 times: exit status 3"
        state = [e for e in events(admin, "resource.state") if e["resource"] == "b-1"]
        assert [(e["service"], e["by"]) for e in state] == [("down", "health")]
        replaced = wait_for(lambda: events(admin, "reservation.replaced"), 5, what="replaced")
        assert [(e["old"], e["new"]) for e in replaced] == [("b-1", "b-2")]
        ok.touch()
        wait_for(lambda: service("b-1")["service"] == "up", 10, what="b-1 to come up")
        # an admin's down is not lifted by a passing check
        admin.call("set_resource_state", resource="b-1", state="down", reason="bench")
        since = admin.get_events(0, limit=1)["last_seq"]
        runs = directory / "b-1.ok.runs"
        before = len(runs.read_text())
        wait_for(lambda: len(runs.read_text()) >= before + 2, 10, what="two more passing checks")
        assert service("b-1")["service"] == "down"
        assert [e for e in events(admin, "resource.state", since) if e["resource"] == "b-1"] == []


@pytest.mark.parametrize("config, words", [
    ("resources: [{name: a, health_check: {command: probe}}]",
     "resources[0].health_check.command: must be a non-empty list"),
    ("resources: [{name: a, health_check: {command: [p], every: 3}}]",
     "resources[0].health_check.every: unknown key"),
    ("resources: [{name: a, health_check: {command: [p], failures: 0}}]",
     "resources[0].health_check.failures: must be an integer of at least 1"),
    ("timezone: Mars/Olympus", "timezone: 'Mars/Olympus' is not a time zone name"),
    ("series_max_occurrences: 0", "series_max_occurrences: must be an integer of at least 1"),
])
def test_bad_health_and_series_config_stops_startup(tmp_path, config, words):
    path = tmp_path / "atsd.yaml"
    path.write_text(config)
    result = subprocess.run([sys.executable, "-m", "atsd", "check-config", str(path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert str(path) in result.stderr and words in result.stderr, result.stderr
