"""Revocation through a real daemon: a holder process answering the countdown, rights, node
values, and a countdown that survives SIGKILL."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from atsclient import AsyncATSClient, BadRequest, Forbidden, NotFound, ResourceUnavailable
from atsclient.cli import main
from atsclient.events import Subscriber
from daemon import BASE_CONFIG, wait_for

FAST = dict(BASE_CONFIG, countdown_interval_s=0.2)
HOLDER = Path(__file__).with_name("elastic_holder.py")


def hold(client, name):
    pre, _, _ = client.request_reservation(name, reservation_duration=600)
    return client.claim_reservation(pre)["reservation_id"]


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def ended(client, rid):
    return all(r["id"] != rid for r in client.list_reservations())


def test_holder_answers_some_nodes_and_loses_the_rest_at_zero(daemon_factory, tmp_path):
    daemon = daemon_factory(FAST)
    with daemon.client("alice") as alice, daemon.client("labadmin") as admin:
        holder_answers(daemon, alice, admin, tmp_path)


def holder_answers(daemon, alice, admin, tmp_path):
    ids = {name: hold(alice, name) for name in ("dut-1", "dut-2", "scope-1")}
    since = admin.get_events(0, limit=1)["last_seq"]
    out = tmp_path / "holder.jsonl"
    with open(out, "w") as f:
        holder = subprocess.Popen([sys.executable, str(HOLDER), daemon.listen, daemon.events,
                                   "alice", str(since), "dut-1"], stdout=f,
                                  env={**os.environ, "PYTHONPATH": str(HOLDER.parents[1])})
    try:
        reply = admin.call("revoke", nodelist=[{"node_id": n} for n in ids], max_wait_time=2.0,
                           reason="rack move")
        deadline = reply["deadline"]
        # dut-1 is let go on the first notice: gone at once, long before the deadline
        first_gone = wait_for(lambda: [e for e in lines(out) if e["hook"] == "delete_complete"],
                              5, what="dut-1's delete_complete")[0]
        assert [n["node_id"] for n in first_gone["nodelist"]] == ["dut-1"]
        assert first_gone["t"] < deadline and first_gone["nodelist"][0]["final"] is False
        assert ended(alice, ids["dut-1"]) and not ended(alice, ids["dut-2"])
        # the rest go at zero, with the final delete_complete
        final = wait_for(lambda: [e for e in lines(out) if e["hook"] == "delete_complete"
                                  and e["nodelist"][0]["final"]], 10, what="final")[0]
        assert sorted(n["node_id"] for n in final["nodelist"]) == ["dut-2", "scope-1"]
        assert final["t"] >= deadline
        notices = [e for e in lines(out) if e["hook"] == "delete_pending"]
        waits = [e["nodelist"][0]["max_wait_time"] for e in notices]
        assert len(notices) >= 3 and waits == sorted(waits, reverse=True)
        assert {e["nodelist"][0]["deadline"] for e in notices} == {deadline}
        assert all(n["reason"] == "rack move" and n["owner"] == "alice"
                   and n["client_id"] == ids[n["node_id"]] for e in notices for n in e["nodelist"])
    finally:
        holder.kill()
        holder.wait()
    assert alice.list_reservations(owner="alice") == []
    states = {r["name"]: r["state"] for r in alice.list_resources()}
    assert states["dut-2"] == "out_of_service" and states["build-1"] == "free"
    with pytest.raises(ResourceUnavailable):
        alice.request_reservation("dut-2", next_available=False)
    assert admin.restore(["dut-2"]) == ["dut-2"]
    assert alice.request_reservation("dut-2", next_available=False)[0]


def test_only_admins_revoke_restore_and_set_values(daemon, client):
    rid = hold(client, "dut-1")
    for call in (lambda: client.revoke(["dut-1"], 10), lambda: client.restore(["dut-1"]),
                 lambda: client.set_resource_values({"dut-1": 0.5})):
        with pytest.raises(Forbidden):
            call()
    with daemon.client("labadmin") as admin, daemon.client("bob") as bob:
        with pytest.raises(BadRequest, match="max_wait_time"):
            admin.revoke(["dut-1"], -1)
        with pytest.raises(BadRequest, match=r"nodelist\[0\]\.value"):
            admin.set_resource_values({"dut-1": 1.5})
        admin.revoke(["dut-1"], 60)
        with pytest.raises(Forbidden):
            bob.ack_delete_pending(["dut-1"])           # not bob's to give
        with pytest.raises(NotFound, match="no resource"):  # not internal (bench/fuzz_long)
            client.ack_delete_pending(["no-such-node"])
        assert client.ack_delete_pending(["dut-1"]) == ["dut-1"]
    assert ended(client, rid)


async def test_values_round_trip_with_event_and_restart(daemon):
    async with AsyncATSClient(daemon.listen, user="labadmin") as admin:
        async with Subscriber(daemon.listen, daemon.events, ["resource.values"],
                              client=admin) as sub:
            assert await admin.set_resource_values({"dut-1": 0.25, "scope-1": 1}) == [
                "dut-1", "scope-1"]
            event = await sub.__anext__()
        assert event["nodelist"] == [{"node_id": "dut-1", "value": 0.25},
                                     {"node_id": "scope-1", "value": 1.0}]
        values = await admin.get_resource_values()
        assert values == {"dut-1": 0.25, "dut-2": None, "scope-1": 1.0, "build-1": None}
    daemon.restart(kill=True)
    async with AsyncATSClient(daemon.listen, user="alice") as alice:
        assert (await alice.get_resource_values())["dut-1"] == 0.25
        rows = {r["name"]: r["value"] for r in await alice.list_resources()}
        assert rows["scope-1"] == 1.0


async def test_countdown_resumes_after_sigkill_and_nothing_survives_it(daemon_factory):
    daemon = daemon_factory(FAST)
    with daemon.client("alice") as alice:
        await resumes_after_sigkill(daemon, alice)


async def resumes_after_sigkill(daemon, alice):
    ids = [hold(alice, "dut-1"), hold(alice, "dut-2")]
    async with AsyncATSClient(daemon.listen, user="labadmin") as admin:
        async with Subscriber(daemon.listen, daemon.events, client=admin,
                              idle_check_s=0.2) as sub:
            reply = await admin.call("revoke", nodelist=[{"node_id": "dut-1"},
                                                         {"node_id": "dut-2"}],
                                     max_wait_time=3.0)
            deadline = reply["deadline"]
            seen = []
            async for event in sub:
                seen.append(event)
                if event["topic"] == "resource.delete_pending":
                    break
            killed = time.time()
            daemon.restart(kill=True)           # SIGKILL mid-countdown
            async for event in sub:
                seen.append(event)
                if event["topic"] == "resource.delete_complete":
                    break
    notices = [e for e in seen if e["topic"] == "resource.delete_pending"]
    resumed = [e for e in notices if e["ts"] > killed]
    assert resumed, "no notice after the restart"
    assert all(e["deadline"] == deadline for e in notices)
    assert 0 < resumed[0]["max_wait_time"] < 3.0
    assert resumed[0]["max_wait_time"] == pytest.approx(deadline - resumed[0]["ts"], abs=0.5)
    done = seen[-1]
    assert done["final"] is True and done["ts"] >= deadline
    ends = {e["reservation_id"]: e["reason"] for e in seen
            if e["topic"] == "reservation.status" and e["reservation_status"] ==
            "RESERVATION_ENDED"}
    assert ends == {ids[0]: "revoked", ids[1]: "revoked"}
    assert alice.list_reservations(resource="dut-1") == []
    assert alice.list_reservations(resource="dut-2") == []
    seqs = [e["seq"] for e in seen]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))   # nothing lost, nothing twice


def test_maintenance_window_warns_the_holder(daemon_factory):
    daemon = daemon_factory(FAST)
    with daemon.client("alice") as alice, daemon.client("labadmin") as admin:
        maintenance_warns(alice, admin)


def maintenance_warns(alice, admin):
    rid = hold(alice, "scope-1")
    start = time.time() + 1.0
    reply = admin.call("request_reservation", resource="scope-1", time_needed=start,
                       reservation_duration=60, maintenance=True)
    rows = alice.list_reservations(resource="scope-1")
    assert [(r["kind"], r["owner"]) for r in rows] == [("claimed", "alice"),
                                                       ("maintenance", "labadmin")]
    assert rows[0]["end_time"] == pytest.approx(reply["time_available"])
    notices = admin.get_events(0, ["resource.delete_pending"])["events"]
    assert notices[0]["deadline"] == pytest.approx(start)
    assert notices[0]["nodelist"][0]["client_id"] == rid
    wait_for(lambda: ended(alice, rid), 5, what="the holder's reservation to end")
    assert time.time() >= start
    status = [e for e in admin.get_events(0, ["reservation.status"])["events"]
              if e["reservation_id"] == rid][-1]
    assert status["reason"] == "revoked"
    with pytest.raises(Forbidden):
        alice.call("request_reservation", resource="dut-1", maintenance=True)


def test_cli_values_revoke_restore_and_watch(daemon, capsys):
    base = ["--server", daemon.listen, "--events", daemon.events, "--user", "labadmin"]
    assert main(base + ["values", "dut-1=0.5", "scope-1=1"]) == 0
    assert main(base + ["values", "dut-1=2"]) == 2
    assert main(base + ["revoke", "dut-2", "--max-wait", "0", "--reason", "broken"]) == 0
    assert main(base + ["restore", "dut-2"]) == 0
    capsys.readouterr()
    assert main(base + ["--json", "values"]) == 0
    assert json.loads(capsys.readouterr().out)["dut-1"] == 0.5
    assert main(base + ["watch", "--since", "0", "--count", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "resource.values dut-1=0.5 scope-1=1.0" in out[0]
    assert "resource.delete_pending" in out[1] and "(broken): dut-2 go in 0s" in out[1]
    assert "resource.delete_complete" in out[2] and "complete: gone dut-2" in out[2]
    assert main(["--server", daemon.listen, "--user", "alice", "revoke", "dut-1",
                 "--max-wait", "5m"]) == 1
