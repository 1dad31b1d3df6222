"""Booking as people do (issue 12), through a real daemon: bookings confirmed at once, waits
that end with their client (real CLI processes, real signals), every change of a
reservation published, holders, ids, configs and retired resources."""

import asyncio
import json
import signal
import subprocess
import threading
import time

import msgpack
import pytest
import zmq

from atsclient import AsyncATSClient, BadRequest, Conflict, Forbidden, ResourceUnavailable
from atsclient.resource import ResourceReservation
from daemon import BASE_CONFIG, JOB_USER, cli_env, wait_for

POOL = {"resources": [{"name": f"gpus/{i}", "type": "gpus", "slots": 2} for i in range(2)]
        + [{"name": "scope-1", "type": "scope"}],
        "default_lease_s": 600, "security": {"admins": ["labadmin"]}}


def statuses(client, rid):
    """(reason, end_time) of every reservation.status event of ``rid``, oldest first."""
    events = client.get_events(0, topics=["reservation.status"])["events"]
    return [(e["reason"], e["end_time"]) for e in events if e["reservation_id"] == rid]


def row(client, rid):
    return next(r for r in client.list_reservations() if r["id"] == rid)


# --- bookings that hold ---

def test_claim_on_request_is_confirmed_at_once_and_starts_by_itself(daemon_factory):
    d = daemon_factory({**BASE_CONFIG, "claim_window_s": 0.3})
    with d.client() as c:
        start = time.time() + 1.0
        reply = c.call("request_reservation", resource="dut-2", time_needed=start,
                       reservation_duration=60, claim=True)
        rid = reply["reservation_id"]
        assert reply["pre_reservation_id"] == rid and reply["expire_time"] == reply["end_time"]
        listed = row(c, rid)
        assert (listed["kind"], listed["reservation_status"]) == ("claimed",
                                                                  "RESERVATION_GRANTED")
        assert listed["expire_time"] == reply["end_time"]
        wait_for(lambda: row(c, rid)["reservation_status"] == "RESERVATION_ACTIVE",
                 what="the booking to start")
        # well past start + claim window: a pre-reservation would have lapsed by now
        wait_for(lambda: time.time() > start + 1.0, what="the claim window to pass")
        c.get_version()             # a round trip: anything due was done before it
        assert row(c, rid)["reservation_status"] == "RESERVATION_ACTIVE"
        assert [r for r, _ in statuses(c, rid)] == ["granted", "started"]
        with pytest.raises(Conflict):
            c.claim_reservation(rid)


def test_request_without_claim_keeps_the_kissats_reply(client):
    reply = client.server_communicate({"command": "request_reservation", "resource": "dut-2",
                                       "time_needed": time.time() + 600,
                                       "reservation_duration": 3600})
    assert set(reply) == {"ok", "request_id", "pre_reservation_id", "time_available",
                          "expire_time", "end_time"}
    assert reply["expire_time"] < reply["end_time"]          # the claim deadline


def test_claimed_reservation_lists_its_end_as_expire_time(client):
    pre, _, deadline = client.request_reservation("dut-2", reservation_duration=3600)
    claimed = client.claim_reservation(pre)
    listed = row(client, pre)
    assert listed["expire_time"] == claimed["expire_time"] == listed["end_time"] > deadline


def test_resource_reservation_and_clients_take_claim(daemon):
    with daemon.client() as c:
        with ResourceReservation("scope-1", c, claim=True, duration=60) as res:
            assert res.reservation_id and res.pre_reservation_id is None
            assert row(c, res.reservation_id)["kind"] == "claimed"
        assert c.list_reservations() == []
        rid, _, end = c.request_reservation("dut-2", reservation_duration=60, claim=True)
        assert row(c, rid)["expire_time"] == end

    async def run():
        async with AsyncATSClient(daemon.listen, user="alice") as ac:
            return await ac.request_reservation("dut-1", time_needed=time.time() + 600,
                                                claim=True)
    rid, _, _ = asyncio.run(run())
    with daemon.client() as c:
        assert row(c, rid)["kind"] == "claimed"


def test_cli_reserve_confirms_by_default(daemon, client):
    out = daemon.cli("--json", "reserve", "scope-1", "--at", "now+1h", "--for", "30m")
    assert out.returncode == 0, out.stderr
    rid = json.loads(out.stdout)["reservation_id"]
    assert row(client, rid)["kind"] == "claimed"
    out = daemon.cli("reserve", "dut-2", "--at", "now+1h", "--for", "30m")
    assert out.returncode == 0 and out.stdout.startswith("reserved ")


def test_a_reservation_ended_early_says_when_it_really_ended(daemon, client):
    rid = client.request_reservation("dut-2", reservation_duration=3600, claim=True)[0]
    booked_end = row(client, rid)["end_time"]
    before = time.time()
    assert client.release_reservation(rid)
    reason, end = statuses(client, rid)[-1]
    assert reason == "released" and before <= end <= time.time() < booked_end

    with daemon.client("labadmin") as admin:
        rid = client.request_reservation("scope-1", reservation_duration=3600, claim=True)[0]
        admin.revoke(["scope-1"], max_wait_time=0)
        reason, end = statuses(client, rid)[-1]
        assert reason == "revoked" and end <= time.time()


# --- every change is published ---

def test_extend_publishes_the_new_end_and_a_refusal_says_how_much_fits(daemon, client):
    rid = client.request_reservation("dut-2", reservation_duration=600, claim=True)[0]
    end = row(client, rid)["end_time"]
    assert client.extend_reservation(rid, 300) == end + 300
    assert statuses(client, rid)[-1] == ("extended", end + 300)

    with daemon.client("bob") as bob:
        bob.request_reservation("dut-2", time_needed=end + 900, reservation_duration=60,
                                next_available=False, claim=True)
    with pytest.raises(ResourceUnavailable) as refused:
        client.extend_reservation(rid, 3600)
    assert refused.value.reply["max_extension"] == pytest.approx(600)
    out = daemon.cli("extend", rid, "--by", "1h")
    assert out.returncode == 1
    assert out.stderr.strip().endswith("at most --by 10m is free")


def test_a_maintenance_window_publishes_the_end_it_moves(daemon, client):
    rid = client.request_reservation("dut-2", reservation_duration=3600, claim=True)[0]
    window = time.time() + 600
    with daemon.client("labadmin") as admin:
        admin.call("request_reservation", resource="dut-2", time_needed=window,
                   reservation_duration=600, maintenance=True)
    reason, end = statuses(client, rid)[-1]
    assert (reason, end) == ("shortened", row(client, rid)["end_time"])
    assert window <= end < window + 1


# --- waits end with their client ---

def waiting(client):
    return client.call("get_pool")["waiting"]


def start_cli(daemon, *args):
    return subprocess.Popen(daemon.cli_argv(*args), env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def exit_status(proc) -> int:
    """The CLI's exit status once it has given back what it held (a generous deadline: a
    loaded machine may be slow, a hung CLI is not)."""
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"atsclient did not exit: {proc.communicate()}") from None


@pytest.fixture
def pool(daemon_factory):
    return daemon_factory(POOL)


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("command", [["checkout", "gpus:2", "--wait", "10m"],
                                     ["run", "--wait", "10m", "--resources", "gpus:2",
                                      "--", "true"]])
def test_interrupting_a_waiting_cli_cancels_its_wait(pool, command, how):
    with pool.client("bob") as bob:
        held = [bob.checkout([{"type": "gpus", "slots": 2}])["allocation_id"]
                for _ in range(2)]
        proc = start_cli(pool, *command)
        wait_for(lambda: [w["owner"] for w in waiting(bob)] == ["alice"],
                 what="the CLI to wait")
        proc.send_signal(how)
        assert exit_status(proc) == 130
        assert waiting(bob) == []
        bob.checkin(held[0])
        assert [r["owner"] for r in bob.list_reservations()] == ["bob"]   # none for alice


@pytest.mark.parametrize("command", [["checkout", "gpus:2", "--wait", "1m"],
                                     ["run", "--wait", "1m", "--resources", "gpus:2",
                                      "--", "true"]])
def test_a_waiting_cli_off_a_terminal_says_its_place_in_line(pool, command):
    with pool.client("bob") as bob, pool.client("carol", timeout=30) as carol:
        held = bob.checkout([{"type": "gpus", "slots": 2}, {"type": "gpus", "slots": 2}])
        carol_waits = threading.Thread(target=lambda: carol.checkout(
            [{"type": "gpus", "slots": 2}], wait_s=20))
        carol_waits.start()
        wait_for(lambda: len(waiting(bob)) == 1, what="carol to wait")
        proc = start_cli(pool, *command)
        lines = []
        threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
        try:
            wait_for(lambda: any("2nd in line for gpus:2" in line for line in lines),
                     timeout=15, what="a progress line with the CLI's place")
            assert [w["request_id"] is None for w in waiting(bob)] == [True, True]
        finally:
            proc.send_signal(signal.SIGINT)
            exit_status(proc)
            bob.checkin(held["allocation_id"])
            carol_waits.join(30)
        line = next(line for line in lines if "in line" in line)
        assert line.startswith("atsclient: 2nd in line for gpus:2: ") and "\r" not in line


def test_a_killed_client_hands_its_place_to_the_next_waiter(pool):
    with pool.client("bob") as bob, pool.client("carol", timeout=30) as carol:
        held = bob.checkout([{"type": "gpus", "slots": 2}, {"type": "gpus", "slots": 2}])
        proc = start_cli(pool, "checkout", "gpus:2", "--wait", "10m", "--priority", "5")
        wait_for(lambda: len(waiting(bob)) == 1, what="the CLI to wait")
        got = {}
        carol_waits = threading.Thread(target=lambda: got.update(carol.checkout(
            [{"type": "gpus", "slots": 2}], wait_s=20)))
        carol_waits.start()
        wait_for(lambda: [w["owner"] for w in waiting(bob)] == ["alice", "carol"],
                 what="carol to queue behind the CLI")
        proc.kill()
        proc.wait()
        wait_for(lambda: [w["owner"] for w in waiting(bob)] == ["carol"], timeout=10,
                 what="atsd to notice the CLI is gone")
        bob.checkin(held["allocation_id"])
        carol_waits.join(20)
        assert got["allocation_id"]                  # the slots went to carol
        owners = sorted(r["owner"] for r in bob.list_reservations())
        assert owners == ["carol"]


def test_a_socket_closed_while_waiting_is_forgotten(pool):
    with pool.client("bob") as bob:
        bob.checkout([{"type": "gpus", "slots": 2}, {"type": "gpus", "slots": 2}])
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.DEALER)
        sock.connect(pool.listen)
        sock.send_multipart([b"", msgpack.packb({
            "command": "checkout", "user": "alice", "request_id": "w1",
            "request": [{"type": "gpus", "slots": 2}], "wait_s": 600})])
        wait_for(lambda: len(waiting(bob)) == 1, what="the request to wait")
        sock.close(0)
        wait_for(lambda: waiting(bob) == [], timeout=10, what="atsd to forget it")


def test_cancel_request_stops_a_wait_or_releases_what_it_got(pool):
    with pool.client("bob") as bob, pool.client("alice") as alice:
        held = bob.checkout([{"type": "gpus", "slots": 2}, {"type": "gpus", "slots": 2}])
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.DEALER)
        sock.connect(pool.listen)
        try:
            sock.send_multipart([b"", msgpack.packb({
                "command": "checkout", "user": "alice", "request_id": "w1",
                "request": [{"type": "gpus", "slots": 2}], "wait_s": 600})])
            wait_for(lambda: len(waiting(bob)) == 1, what="the request to wait")
            assert bob.cancel_request("w1") is False          # not bob's to cancel
            assert alice.cancel_request("w1") is True
            assert sock.poll(5000)
            reply = msgpack.unpackb(sock.recv_multipart()[-1])
            assert reply["error"]["code"] == "conflict" and "cancel" in reply["error"]["message"]
            assert waiting(bob) == [] and alice.cancel_request("w1") is False
        finally:
            sock.close(0)
        bob.checkin(held["allocation_id"])
        # granted before the cancel came: what it got is released
        got = alice.call("checkout", request=[{"type": "gpus", "slots": 2}],
                         request_id="fast")
        assert alice.cancel_request("fast") is True
        assert alice.list_reservations() == []
        assert statuses(alice, got["allocation_id"])[-1][0] == "released"
        # a booking whose reply its client gave up on
        booked = alice.call("request_reservation", resource="scope-1", claim=True,
                            time_needed=time.time() + 600, request_id="book")
        assert bob.cancel_request("book") is False
        assert alice.cancel_request("book") is True
        assert statuses(alice, booked["reservation_id"])[-1][0] == "released"


def test_a_cancelled_async_checkout_leaves_the_queue(pool):
    async def run():
        async with AsyncATSClient(pool.listen, user="alice") as ac:
            task = asyncio.ensure_future(ac.checkout([{"type": "gpus", "slots": 2}],
                                                     wait_s=600))
            while not waiting(bob):
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    with pool.client("bob") as bob:
        bob.checkout([{"type": "gpus", "slots": 2}, {"type": "gpus", "slots": 2}])
        asyncio.run(asyncio.wait_for(run(), 20))
        assert waiting(bob) == []


def test_reserve_wait_interrupted_releases_the_booking(daemon, client):
    for how, extra in ((signal.SIGINT, []), (signal.SIGTERM, ["--two-step"])):
        proc = start_cli(daemon, "reserve", "scope-1", "--at", "now+1h", "--wait", *extra)
        wait_for(lambda: client.list_reservations(resource="scope-1"),
                 what="the booking")
        proc.send_signal(how)
        assert exit_status(proc) == 130
        assert client.list_reservations(resource="scope-1") == []


# --- resources, ids and config ---

def test_list_resources_names_the_holders(daemon, client):
    rid = client.request_reservation("dut-2", reservation_duration=600, claim=True)[0]
    client.request_reservation("dut-1", time_needed=time.time() + 3600, claim=True)
    rows = {r["name"]: r for r in client.list_resources()}
    assert rows["dut-2"]["holders"] == [{"owner": "alice", "reservation_id": rid,
                                         "end_time": row(client, rid)["end_time"]}]
    assert rows["dut-1"]["holders"] == []             # booked for later, free now


def test_ids_given_out_never_start_with_a_dash(daemon, client):
    now = time.time()
    ids = [client.request_reservation("scope-1", time_needed=now + 3600 * (i + 1),
                                      reservation_duration=60, claim=True)[0]
           for i in range(400)]                  # ~1 in 64 did: 400 miss it by chance 0.2%
    assert not [i for i in ids if i.startswith("-")]
    out = daemon.cli("release", ids[0])
    assert out.returncode == 0, out.stderr


def test_ids_never_start_with_a_dash(monkeypatch):
    from atsd.engine import lab
    drawn = iter(["-starts-with-dash", "fine-id"])
    monkeypatch.setattr(lab.secrets, "token_urlsafe", lambda n: next(drawn))
    assert lab.new_id() == "fine-id"


def test_an_unknown_config_key_is_refused_naming_the_known_ones(daemon, client):
    with pytest.raises(BadRequest) as refused:
        client.request_reservation("dut-1", {"firmwre": "v2"})
    assert "firmwre" in refused.value.message and "firmware" in refused.value.message
    assert client.list_reservations() == []
    out = daemon.cli("reserve", "dut-1", "--config", "firmwre=v2")
    assert out.returncode == 2 and out.stderr.startswith("atsclient: bad_request:")
    assert "firmware" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_a_removed_resource_with_reservations_stops_startup_until_retired(daemon_factory):
    d = daemon_factory()
    with d.client() as c:
        rid = c.request_reservation("scope-1", reservation_duration=3600, claim=True)[0]
    d.stop()
    without = {**BASE_CONFIG, "resources": [r for r in BASE_CONFIG["resources"]
                                            if r["name"] != "scope-1"]}
    d.config_path.write_text(json.dumps(without))
    with pytest.raises(AssertionError) as failed:
        d.start()
    assert "scope-1" in str(failed.value) and rid in str(failed.value)
    assert d.proc.returncode == 2

    retired = {**BASE_CONFIG, "resources": [
        {**r, "retired": True} if r["name"] == "scope-1" else r
        for r in BASE_CONFIG["resources"]]}
    d.config_path.write_text(json.dumps(retired))
    d.start()
    with d.client() as c:
        assert row(c, rid)["resource"] == "scope-1"
        scope = next(r for r in c.list_resources() if r["name"] == "scope-1")
        assert scope["service"] == "retired"
        with pytest.raises(ResourceUnavailable):
            c.request_reservation("scope-1", time_needed=time.time() + 7200)
        c.extend_reservation(rid, 60)                  # what it has is still served
        assert c.release_reservation(rid)


def test_release_ends_an_active_batch_reservation(daemon_factory, tmp_path):
    jobs = tmp_path / "atsd" / "jobs"
    jobs.mkdir(parents=True)
    (jobs / "sleep.sh").write_text("#!/bin/sh\nexec sleep 60\n")
    (jobs / "sleep.sh").chmod(0o755)
    d = daemon_factory({"resources": [], "security": {"admins": ["labadmin"]},
                        "queues": {"q": {"backend": "local", "hosts": ["h1", "h2"]}},
                        "jobs": {"allowed_dirs": ["jobs"], "output_dir": "out",
                                 "run_as": JOB_USER}})
    with d.client() as alice, d.client("bob") as bob, d.client("labadmin") as admin:
        r = alice.create_reservation("q", 1, 3600)
        later = alice.create_reservation("q", 1, 60, start_time=time.time() + 3600)
        job = alice.submit_job_to_reservation(r["reservation_id"], str(jobs / "sleep.sh"))
        wait_for(lambda: alice.get_job_status(job)["state"] == "RUNNING", what="the job")
        with pytest.raises(Conflict):
            alice.cancel_reservation(r["reservation_id"])     # cancel is for GRANTED
        with pytest.raises(Conflict, match="cancel_reservation"):
            alice.release_reservation(later["reservation_id"])
        with pytest.raises(Forbidden):
            bob.release_reservation(r["reservation_id"])
        assert alice.release_reservation(r["reservation_id"])
        status = alice.get_reservation_status(r["reservation_id"])
        assert (status["reservation_status"], status["reason"]) == ("RESERVATION_ENDED",
                                                                    "released")
        assert status["end_time"] < r["end_time"]
        wait_for(lambda: alice.get_job_status(job)["state"] == "CANCELLED",
                 what="the job to be stopped")
        other = bob.create_reservation("q", 1, 3600)
        assert admin.release_reservation(other["reservation_id"])
