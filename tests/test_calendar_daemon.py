"""Calendar reservations through a real daemon, over real sockets."""

import time

import msgpack
import pytest
import zmq

from atsclient import (Conflict, Forbidden, NotFound, ResourceUnavailable,
                       TooEarly)
from daemon import wait_for


def test_request_claim_release_cycle(client):
    pre, avail, expire = client.request_reservation("dut-2", reservation_duration=60)
    assert avail <= time.time() + 1
    assert expire == pytest.approx(min(avail + 300, avail + 60))
    claim = client.claim_reservation(pre)
    assert claim["reservation_id"] == claim["reservation_ID"] == pre
    assert claim["resource_config"] == {"firmware": "v1"}
    rows = client.list_reservations(resource="dut-2")
    assert [(r["id"], r["kind"], r["owner"]) for r in rows] == [(pre, "claimed", "alice")]
    assert "dut-2" not in client.get_available_resources()
    assert client.release_resource(pre) is True
    assert client.release_resource(pre) is False          # already ended
    assert "dut-2" in client.get_available_resources()


def test_next_available_and_busy(client):
    now = time.time()
    first, a1, _ = client.request_reservation("scope-1", time_needed=now + 100,
                                              reservation_duration=100)
    second, a2, _ = client.request_reservation("scope-1", time_needed=now + 150,
                                               reservation_duration=100)
    assert a2 == pytest.approx(a1 + 100)                  # pushed past the first
    with pytest.raises(ResourceUnavailable):
        client.request_reservation("scope-1", time_needed=now + 150, reservation_duration=10,
                                   next_available=False)
    avail = client.get_resource_availablity("scope-1", now + 120, now + 130)
    assert avail["available"] is False
    assert avail["avail_start"] == pytest.approx(a2 + 100)
    assert client.get_resource_availability("scope-1", now + 10, now + 20)["available"] is True


def test_shared_bookings_respect_slots_and_config(client):
    ids = [client.request_reservation("build-1", reservation_mode="shared", slots=2,
                                      next_available=False)[0] for _ in range(2)]
    with pytest.raises(ResourceUnavailable):
        client.request_reservation("build-1", reservation_mode="shared", slots=1,
                                   next_available=False)
    client.release_resource(ids[0])
    pid, _, _ = client.request_reservation("build-1", reservation_mode="shared", slots=1,
                                           next_available=False)
    assert pid
    # a different config cannot share with bookings that asked for another one
    client.request_reservation("dut-2", res_config={"firmware": "v2"},
                               reservation_mode="shared", next_available=False)
    with pytest.raises(ResourceUnavailable):
        client.request_reservation("dut-2", res_config={"firmware": "v3"},
                                   reservation_mode="shared", next_available=False)


def test_availability_of_more_shared_slots_than_there_are_is_unavailable(client):
    """Not an internal error (found by bench/fuzz_long.py): the daemon says why."""
    with pytest.raises(ResourceUnavailable, match="slots"):
        client.call("check_available", resource="build-1", reservation_mode="shared",
                    slots=1000)


def test_reconfigure_adds_lead_time(client):
    now = time.time()
    _, avail, _ = client.request_reservation("dut-1", res_config={"firmware": "v2"},
                                             time_needed=now + 10, reservation_duration=60)
    assert avail == pytest.approx(now + 10 + 30, abs=0.5)   # reconfigure_s of dut-1
    _, avail_same, _ = client.request_reservation("dut-2", res_config={"firmware": "v1"},
                                                  time_needed=now + 10, reservation_duration=60)
    assert avail_same == pytest.approx(now + 10, abs=0.5)


def test_claim_too_early_and_not_owner(daemon, client):
    pre, avail, _ = client.request_reservation("dut-2", time_needed=time.time() + 3600)
    with pytest.raises(TooEarly) as err:
        client.claim_reservation(pre)
    assert err.value.reply["time_available"] == pytest.approx(avail)
    with daemon.client("mallory") as other:
        with pytest.raises(Forbidden):
            other.claim_reservation(pre)
        with pytest.raises(Forbidden):
            other.release_reservation(pre)
        with pytest.raises(Forbidden):
            other.extend_reservation(pre, 10)
    with daemon.client("labadmin") as admin:
        assert admin.release_reservation(pre) is True


def test_late_claim_gets_a_fresh_offer(daemon_factory):
    cfg = {"resources": [{"name": "r1"}], "claim_window_s": 0.3}
    d = daemon_factory(cfg)
    with d.client() as c:
        pre, _, expire = c.request_reservation("r1", reservation_duration=60)
        # the pre-reservation lapses on its own, with an event saying so
        wait_for(lambda: any(e["reason"] == "lapsed" for e in c.get_events(0)["events"]),
                 what="lapse event")
        reply = c.claim_reservation(pre)
        assert reply["error"]["code"] == "claim_late"
        assert reply["pre_reservation_id"] != pre
        assert reply["new_avail"] >= expire - 0.01
        assert reply["new_expire"] == pytest.approx(reply["new_avail"] + 0.3)


def test_extend_and_its_limit(client):
    now = time.time()
    a, _, _ = client.request_reservation("scope-1", time_needed=now, reservation_duration=100)
    client.request_reservation("scope-1", time_needed=now + 200, reservation_duration=100)
    end = client.extend_reservation(a, 50)
    assert end == pytest.approx(now + 150, abs=1)
    with pytest.raises(ResourceUnavailable) as err:
        client.extend_reservation(a, 500)
    assert err.value.reply["max_extension"] == pytest.approx(50, abs=1)


def test_co_reservation_is_all_or_nothing(client):
    now = time.time()
    client.request_reservation("dut-1", time_needed=now, reservation_duration=100)
    client.request_reservation("scope-1", time_needed=now + 100, reservation_duration=50)
    pre, avail, _ = client.request_reservation(["dut-1", "scope-1"], time_needed=now,
                                               reservation_duration=30)
    assert avail == pytest.approx(now + 150, abs=1)         # both free only then
    rows = [r for r in client.list_reservations() if r["id"] == pre]
    assert sorted(r["resource"] for r in rows) == ["dut-1", "scope-1"]
    with pytest.raises(NotFound):
        client.request_reservation(["dut-2", "nope"], reservation_duration=30)
    assert not [r for r in client.list_reservations(resource="dut-2")]


def test_idempotent_retry_with_request_id(client):
    r1 = client.call("request_reservation", resource="dut-2", request_id="retry-1")
    r2 = client.call("request_reservation", resource="dut-2", request_id="retry-1")
    assert r1 == r2
    assert len(client.list_reservations(resource="dut-2")) == 1


def test_events_published_on_pub(daemon, client):
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"reservation.status")
    sub.connect(daemon.events)
    # a slow joiner misses early events: publish until one arrives
    seen = []

    def got():
        pre, _, _ = client.request_reservation("build-1", reservation_mode="shared")
        client.release_resource(pre)
        if sub.poll(100):
            seen.append(msgpack.unpackb(sub.recv_multipart()[1]))
        return seen
    wait_for(got, what="a published event")
    e = seen[0]
    assert e["topic"] == "reservation.status" and e["seq"] >= 1 and e["ts"] > 0
    sub.close(0)


def test_kill_and_restart_keeps_acknowledged_reservations(daemon, client):
    ids = [client.request_reservation("build-1", reservation_mode="shared")[0] for _ in range(3)]
    client.claim_reservation(ids[0])
    client.release_resource(ids[2])
    daemon.restart(kill=True)
    with daemon.client() as c:
        rows = {r["id"]: r for r in c.list_reservations()}
        assert set(rows) == {ids[0], ids[1]}
        assert rows[ids[0]]["kind"] == "claimed"
        with pytest.raises(Conflict):
            c.claim_reservation(ids[0])
