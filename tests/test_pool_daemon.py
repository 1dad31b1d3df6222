"""Slot pools through a real daemon: checkout/checkin/get_pool/accommodates, leases, the
wait queue, many processes at once, and ``atsclient run`` with CTest's environment."""

import asyncio
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from atsclient import (AsyncATSClient, ATSClient, BadRequest, Conflict, Forbidden,
                       ResourceUnavailable)
from atsclient.pool import ResourcePool
from daemon import cli_env, wait_for
from test_resource_groups import DOC_ENV, DOC_GROUPS

# the shape of CTest's documented example (ctest(1), "Resource Specification File")
SPEC = {"version": {"major": 1, "minor": 0},
        "local": [{"gpus": [{"id": "0", "slots": 2}, {"id": "1", "slots": 4},
                            {"id": "2", "slots": 2}, {"id": "3"}],
                   "crypto_chips": [{"id": "card0", "slots": 4}]}]}
TOTALS = {"gpus/0": 2, "gpus/1": 4, "gpus/2": 2, "gpus/3": 1, "crypto_chips/card0": 4}


def pool_config(tmp_path) -> dict:
    (tmp_path / "atsd").mkdir()
    (tmp_path / "atsd" / "spec.json").write_text(json.dumps(SPEC))
    return {"resource_spec": "spec.json", "default_lease_s": 60,
            "resources": [{"name": "scope-1", "type": "scope"}],
            "security": {"admins": ["labadmin"]}}


@pytest.fixture
def pool_daemon(daemon_factory, tmp_path):
    return daemon_factory(pool_config(tmp_path))


@pytest.fixture
def alice(pool_daemon):
    with pool_daemon.client("alice") as c:
        yield c


def free(client):
    return {f"{t}/{i['id']}": i["slots"]
            for t, insts in client.get_pool()["resources"].items() for i in insts}


def ended(client, allocation_id):
    """The reason the allocation ended, from the event log; None while it lives."""
    for e in client.get_events(0, topics=["reservation.status"], limit=10_000)["events"]:
        if e["reservation_id"] == allocation_id and e["reservation_status"] == "RESERVATION_ENDED":
            return e["reason"]
    return None


def test_checkout_checkin_and_get_pool(pool_daemon, alice):
    pool = alice.get_pool()
    assert pool["additional_properties"] == {}
    assert pool["resources"]["gpus"][3] == {"id": "3", "slots": 1, "total": 1}
    got = alice.checkout([{"type": "gpus", "slots": 4}, {"type": "crypto_chips", "slots": 1}],
                         lease_s=30)
    assert got["resources"] == {"gpus": [{"id": "1", "slots": 4}],
                                "crypto_chips": [{"id": "card0", "slots": 1}]}
    assert got["expire_time"] == pytest.approx(time.time() + 30, abs=2)
    assert free(alice) == {**TOTALS, "gpus/1": 0, "crypto_chips/card0": 3}
    rows = alice.list_reservations(owner="alice")
    assert {(r["kind"], r["resource"], r["slots"], r["id"]) for r in rows} == {
        ("allocation", "gpus/1", 4, got["allocation_id"]),
        ("allocation", "crypto_chips/card0", 1, got["allocation_id"])}
    with pool_daemon.client("mallory") as other, pytest.raises(Forbidden):
        other.checkin(got["allocation_id"])
    assert alice.checkin(got["allocation_id"]) is True
    assert free(alice) == TOTALS
    assert ended(alice, got["allocation_id"]) == "released"
    with pytest.raises(Conflict):
        alice.checkin(got["allocation_id"])
    pre, _, _ = alice.request_reservation("scope-1")
    with pytest.raises(Conflict):
        alice.checkin(pre)                       # not an allocation


def test_accommodates_reasons_agree_with_checkout(alice):
    assert alice.accommodates([{"type": "gpus", "slots": 4}]) == (True, "")
    assert alice.accommodates([{"type": "fpga", "slots": 1}, {"type": "gpus", "slots": 1}]) \
        == (False, "missing types: fpga")
    ok, reason = alice.accommodates([{"type": "gpus", "slots": 5}])
    assert not ok and "never fit" in reason
    alice.checkout([{"type": "gpus", "slots": 4}, {"type": "gpus", "slots": 2}])
    request = [{"type": "gpus", "slots": 2}, {"type": "gpus", "slots": 2}]
    ok, reason = alice.accommodates(request)
    assert (ok, reason) == (False, "gpus: requested 4 slots, 3 available")
    with pytest.raises(ResourceUnavailable) as err:
        alice.checkout(request)
    assert err.value.message == reason
    # the canary-style facade: same answers, canary's shapes
    pool = ResourcePool(client=alice)
    assert pool.types == ["crypto_chips", "gpus"] and pool.count("gpu") == 4
    outcome = pool.accommodates(request)
    assert not outcome and outcome.reason == reason
    got = pool.checkout([{"type": "gpus", "slots": 1}])
    assert got == {"gpus": [{"id": "2", "slots": 1}]}
    pool.checkin(got)
    assert pool.resources["gpus"][2] == {"id": "2", "slots": 2}


@pytest.mark.parametrize("args, key", [
    ({"request": []}, "request"),
    ({"request": [{"type": "gpus"}]}, "request[0].slots"),
    ({"request": [{"type": "gpus", "slots": 0}]}, "request[0].slots"),
    ({"request": [{"type": "gpus", "slots": 1, "color": "red"}]}, "request[0].color"),
    ({"request": [{"type": "gpus", "slots": 1}], "lease_s": -1}, "lease_s"),
    ({"request": [{"type": "gpus", "slots": 1}], "wait_s": "soon"}, "wait_s"),
    ({"request": [{"type": "gpus", "slots": 1}], "priority": 1.5}, "priority"),
])
def test_bad_checkout_requests_name_the_key(alice, args, key):
    with pytest.raises(BadRequest) as err:
        alice.call("checkout", **args)
    assert key in err.value.message


def test_lease_expires_with_event_and_extend_renews(alice):
    got = alice.checkout([{"type": "gpus", "slots": 2}], lease_s=0.5)
    wait_for(lambda: ended(alice, got["allocation_id"]), 5, what="the lease to end")
    assert ended(alice, got["allocation_id"]) == "expired"
    assert free(alice) == TOTALS
    held = alice.checkout([{"type": "gpus", "slots": 2}], lease_s=0.5)
    assert held["resources"] == {"gpus": [{"id": "1", "slots": 2}]}     # most free first
    first_end = held["expire_time"]
    new_end = alice.extend_reservation(held["allocation_id"], 1.5)
    assert new_end == pytest.approx(first_end + 1.5)
    wait_for(lambda: time.time() > first_end + 0.3, 3, what="the first lease end to pass")
    assert ended(alice, held["allocation_id"]) is None
    assert free(alice)["gpus/1"] == 2                       # still held: 2 of its 4 slots
    wait_for(lambda: ended(alice, held["allocation_id"]), 5, what="the renewed lease to end")
    assert ended(alice, held["allocation_id"]) == "expired"


def test_calendar_exclusive_booking_and_checkout_never_collide(alice):
    pre, _, _ = alice.request_reservation("gpus/1", reservation_duration=60)
    alice.claim_reservation(pre)
    ok, reason = alice.accommodates([{"type": "gpus", "slots": 3}])
    assert not ok and "gpus" in reason
    with pytest.raises(ResourceUnavailable):
        alice.checkout([{"type": "gpus", "slots": 3}])
    got = alice.checkout([{"type": "gpus", "slots": 2}], lease_s=30)
    assert got["resources"]["gpus"][0]["id"] in ("0", "2")
    taken = "gpus/" + got["resources"]["gpus"][0]["id"]
    with pytest.raises(ResourceUnavailable):
        alice.request_reservation(taken, reservation_duration=10, next_available=False)
    _, avail, _ = alice.request_reservation(taken, reservation_duration=10)
    assert avail == pytest.approx(got["expire_time"])      # only after the lease
    # a calendar booking that starts during the lease keeps the checkout off that instance
    alice.request_reservation("gpus/3", time_needed=time.time() + 5, reservation_duration=60)
    with pytest.raises(ResourceUnavailable):
        alice.checkout([{"type": "gpus", "slots": 1}] * 3, lease_s=30)
    short = alice.checkout([{"type": "gpus", "slots": 1}] * 3, lease_s=2)   # ends before it
    assert "3" in [e["id"] for e in short["resources"]["gpus"]]


async def test_wait_queue_is_served_by_priority_when_slots_come_back(pool_daemon, alice):
    holder = alice.checkout([{"type": "gpus", "slots": 4}], lease_s=30)
    async with AsyncATSClient(pool_daemon.listen, user="bob") as bob, \
            AsyncATSClient(pool_daemon.listen, user="carol") as carol:
        low = asyncio.ensure_future(bob.checkout([{"type": "gpus", "slots": 4}], lease_s=5,
                                                 wait_s=1.5))
        await bob.get_version()       # same connection: the checkout was handled before it
        high = asyncio.ensure_future(carol.checkout([{"type": "gpus", "slots": 4}], lease_s=5,
                                                    wait_s=10, priority=5))
        await carol.get_version()
        # waiting requests do not hold up the daemon
        t0 = time.monotonic()
        assert (await carol.get_pool())["resources"]["gpus"][1]["slots"] == 0
        assert time.monotonic() - t0 < 0.5
        released_at = time.time()
        await asyncio.get_running_loop().run_in_executor(None, alice.checkin,
                                                         holder["allocation_id"])
        got = await asyncio.wait_for(high, 5)
        assert got["resources"] == {"gpus": [{"id": "1", "slots": 4}]}
        assert got["expire_time"] >= released_at + 5
        with pytest.raises(ResourceUnavailable) as err:
            await asyncio.wait_for(low, 5)
        assert "waited 1.5s" in err.value.message and "gpus" in err.value.message


def test_allocations_survive_a_restart(daemon_factory, tmp_path, store_config):
    pool_daemon = daemon_factory({**pool_config(tmp_path), **store_config})
    with pool_daemon.client("alice") as alice:
        got = alice.checkout([{"type": "crypto_chips", "slots": 3}], lease_s=60)
    pool_daemon.restart()
    with pool_daemon.client("alice") as c:
        assert free(c)["crypto_chips/card0"] == 1
        assert c.checkin(got["allocation_id"]) is True
        assert free(c) == TOTALS


# --- many processes at once ---

REQUESTS = [[("gpus", 2)], [("gpus", 1), ("gpus", 1)], [("gpus", 4)],
            [("crypto_chips", 2), ("gpus", 1)], [("crypto_chips", 3)], [("gpus", 2)] * 2]


def _worker(endpoint: str, n: int, cycles: int, go, out) -> None:
    rng = random.Random(n)
    got = []
    with ATSClient(endpoint, user=f"worker{n}", timeout=15) as c:
        c.get_version()
        go.wait(30)                                   # all start together
        for _ in range(cycles):
            request = [{"type": t, "slots": s} for t, s in rng.choice(REQUESTS)]
            try:
                reply = c.checkout(request, lease_s=20, wait_s=10)
            except ResourceUnavailable:
                continue
            got.append((reply["allocation_id"], reply["resources"]))
            c.get_pool()                              # "use" it for a round trip
            c.checkin(reply["allocation_id"])
    out.put(got)


def test_many_processes_never_over_allocate(pool_daemon, alice):
    ctx = multiprocessing.get_context("spawn")
    out, go = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_worker, args=(pool_daemon.listen, n, 30, go, out))
             for n in range(4)]
    for p in procs:
        p.start()
    try:
        go.set()
        results = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(10)
            assert p.exitcode == 0
    finally:
        for p in procs:          # none left behind if the test failed on the way
            if p.is_alive():
                p.kill()
    slots = {aid: resources for got in results for aid, resources in got}
    assert len(slots) > 60                              # most cycles got their slots
    # an independent check: the daemon's own log of when each allocation began and ended,
    # with the slots each process was given, never adds up to more than an instance has
    changes = []
    for e in alice.get_events(0, topics=["reservation.status"], limit=10_000)["events"]:
        if e["reservation_id"] not in slots or e["reservation_status"] == "RESERVATION_GRANTED":
            continue
        sign = 1 if e["reservation_status"] == "RESERVATION_ACTIVE" else -1
        for t, entries in slots[e["reservation_id"]].items():
            for entry in entries:
                changes.append((e["seq"], f"{t}/{entry['id']}", sign * entry["slots"]))
    assert len(changes) == 2 * sum(len(v) for r in slots.values() for v in r.values())
    used = dict.fromkeys(TOTALS, 0)
    busiest = 0
    for _, name, delta in sorted(changes):
        used[name] += delta
        assert used[name] <= TOTALS[name], f"{name} over-allocated"
        busiest = max(busiest, sum(used.values()))
    assert busiest > 6                                  # they did overlap
    assert set(used.values()) == {0}
    assert free(alice) == TOTALS


# --- atsclient run ---

def atsclient(daemon, *args, **kw):
    return subprocess.Popen(daemon.cli_argv(*args), env=cli_env(), **kw)


DUMP_ENV = ("import json, os, sys; json.dump({k: v for k, v in os.environ.items() "
            "if k.startswith('CTEST_RESOURCE_GROUP')}, open(sys.argv[1], 'w')); "
            "import time; time.sleep(float(sys.argv[2])); sys.exit(3)")


def test_run_gives_ctest_environment_renews_and_checks_in(pool_daemon, alice, tmp_path):
    dump = tmp_path / "env.json"
    proc = atsclient(pool_daemon, "run", "--resources", DOC_GROUPS,
                     "--lease", "0.6", "--", sys.executable, "-c", DUMP_ENV, str(dump), "1.5")
    assert proc.wait(20) == 3
    assert json.loads(dump.read_text()) == DOC_ENV     # ctest(1)'s documented answer
    events = alice.get_events(0, topics=["reservation.status"])["events"]
    reasons = [e["reason"] for e in events]
    assert reasons[0] == "started" and reasons[-1] == "released"
    renewals = reasons[1:-1]                      # each renewal published its new end
    assert renewals and set(renewals) == {"extended"}
    ends = [e["end_time"] for e in events[:-1]]
    assert ends == sorted(ends) and len(set(ends)) == len(ends)
    assert free(alice) == TOTALS                  # renewed past its 0.6 s lease, then in


def test_run_refuses_what_cannot_fit(pool_daemon, tmp_path):
    proc = atsclient(pool_daemon, "run", "--resources", "gpus:9", "--", sys.executable, "-c",
                     "open('ran', 'w')", cwd=tmp_path, stderr=subprocess.PIPE)
    assert proc.wait(20) == 1
    assert b"unavailable" in proc.stderr.read()
    proc.stderr.close()
    assert not (tmp_path / "ran").exists()


def test_killed_run_gives_slots_back_when_its_lease_ends(pool_daemon, alice, tmp_path):
    pid_file = tmp_path / "pid"
    proc = atsclient(pool_daemon, "run", "--resources", "gpus:4", "--lease", "1", "--",
                     sys.executable, "-c",
                     f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid()));"
                     " time.sleep(60)")
    try:
        wait_for(pid_file.exists, 10, what="the command to start")
        wait_for(lambda: pid_file.read_text(), 5, what="the command's pid")
        assert free(alice)["gpus/1"] == 0
        held = alice.list_reservations(resource="gpus/1")[0]["id"]
        proc.kill()
        proc.wait(5)
        wait_for(lambda: ended(alice, held), 5, what="the lease to end")
        assert ended(alice, held) == "expired"
        assert free(alice) == TOTALS
    finally:
        proc.kill()
        proc.wait(5)
        if pid_file.exists() and pid_file.read_text():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_sigterm_to_run_ends_the_command_and_checks_in(pool_daemon, alice, tmp_path):
    started = tmp_path / "started"
    proc = atsclient(pool_daemon, "run", "--resources", "crypto_chips:1", "--lease", "30",
                     "--", sys.executable, "-c",
                     f"import time; open({str(started)!r}, 'w'); time.sleep(60)")
    try:
        wait_for(started.exists, 10, what="the command to start")
        held = alice.list_reservations(resource="crypto_chips/card0")[0]["id"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 128 + signal.SIGTERM
        assert ended(alice, held) == "released"
    finally:
        proc.kill()
        proc.wait(5)
