"""Limits on what one client can make the daemon do: frame size, msgpack shape, and requests
in flight, so that a flooding client cannot starve the others."""

import time

import msgpack
import pytest
import zmq

from atsd import config as configmod
from daemon import BASE_CONFIG, JOB_USER


def _dealer(daemon, **opts) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    for name, value in opts.items():
        setattr(sock, name, value)
    sock.connect(daemon.listen)
    return sock


def _recv(sock, timeout_s=10.0) -> dict:
    assert sock.poll(timeout_s * 1000), "no reply"
    return msgpack.unpackb(sock.recv_multipart()[-1])


BOOK = {"command": "request_reservation", "resource": "build-1", "reservation_mode": "shared",
        "reservation_duration": 60, "user": "flood"}


def test_a_flooding_client_cannot_starve_another(daemon_factory):
    """One DEALER pipelines thousands of bookings (each costlier than the last as the
    timeline fills); another client's REQ is still answered promptly. Without the
    per-identity cap a wake-up would take 512 of the flood's requests before the REQ's."""
    n = 3000
    daemon = daemon_factory({**BASE_CONFIG, "limits": {"max_reservations_per_user": n}})
    flood = _dealer(daemon, sndhwm=0, rcvhwm=0)
    for i in range(n):
        flood.send_multipart([b"", msgpack.packb({**BOOK, "request_id": f"f{i}"})])
    other = daemon.client("bob", timeout=30)
    replies, latencies = {}, []
    while len(replies) < n:
        t = time.monotonic()
        assert other.get_version()["protocol"] == 1
        latencies.append(time.monotonic() - t)
        while flood.poll(0):
            reply = msgpack.unpackb(flood.recv_multipart()[-1])
            assert reply["request_id"] not in replies          # exactly once each
            replies[reply["request_id"]] = reply
    other.close()
    flood.close()
    assert max(latencies) < 1.0, latencies
    codes = {r["error"]["code"] if not r["ok"] else "ok" for r in replies.values()}
    assert codes == {"ok", "overloaded"}


def test_pipelining_within_the_limit_is_never_overloaded(daemon_factory):
    d = daemon_factory({**BASE_CONFIG, "max_in_flight": 16})
    sock = _dealer(d)
    for round_ in range(20):
        for i in range(16):
            sock.send_multipart([b"", msgpack.packb(
                {"command": "list_resources", "request_id": f"{round_}-{i}"})])
        assert all(_recv(sock)["ok"] for _ in range(16))
    sock.close()


def test_oversized_frames_are_dropped_without_harm(daemon_factory):
    d = daemon_factory({**BASE_CONFIG, "max_frame_bytes": 10_000})
    big = _dealer(d)
    big.send_multipart([b"", msgpack.packb({"command": "get_version", "pad": "x" * 20_000})])
    c = d.client("bob")
    assert c.get_version()["protocol"] == 1
    assert big.poll(300) == 0                # the connection was cut, nothing answered
    big.close()
    c.close()
    assert d.proc.poll() is None


def test_msgpack_limits_come_from_the_config(daemon_factory):
    d = daemon_factory({**BASE_CONFIG, "limits": {"max_depth": 2, "max_str_len": 100}})
    sock = _dealer(d)
    sock.send_multipart([b"", msgpack.packb(
        {"command": "list_resources", "tags": {"a": {"b": 1}}, "request_id": "deep"})])
    reply = _recv(sock)
    assert reply["error"]["code"] == "bad_request" and "deeper than 2" in reply["error"]["message"]
    sock.send_multipart([b"", msgpack.packb({"command": "get_config", "resource": "x" * 101})])
    assert _recv(sock)["error"]["code"] == "bad_request"
    sock.close()


def test_unknown_limit_is_a_config_error(tmp_path):
    path = tmp_path / "atsd.yaml"
    path.write_text("limits: {max_nesting: 3}\n")
    with pytest.raises(configmod.ConfigError) as err:
        configmod.load(path)
    assert err.value.key == "limits.max_nesting"


# --- quotas: what one user may hold (limits.max_reservations_per_user, max_booking_s,
# max_waiting_per_user) ---

POOL = [{"name": "gpus/0", "type": "gpus", "slots": 1}]


def _call(sock, request: dict) -> dict:
    sock.send_multipart([b"", msgpack.packb(request)])
    return _recv(sock)


def _forbidden(reply: dict, limit: str) -> str:
    assert not reply["ok"] and reply["error"]["code"] == "forbidden", reply
    assert limit in reply["error"]["message"], reply
    return reply["error"]["message"]


def test_live_reservations_per_user_are_capped_waiting_checkouts_included(daemon_factory):
    d = daemon_factory({**BASE_CONFIG, "resources": BASE_CONFIG["resources"] + POOL,
                        "limits": {"max_reservations_per_user": 3}})
    alice, bob = d.client("alice"), d.client("bob")
    bob.checkout([{"type": "gpus", "slots": 1}], lease_s=600)
    first, _, _ = alice.request_reservation("dut-1", reservation_duration=60)
    alice.request_reservation("dut-2", reservation_duration=60)
    sock = _dealer(d)
    waiting = {"command": "checkout", "request": [{"type": "gpus", "slots": 1}], "wait_s": 60,
               "user": "alice", "request_id": "w1"}
    sock.send_multipart([b"", msgpack.packb(waiting)])       # the third: it waits for bob
    assert _call(sock, {"command": "get_version"})["ok"]     # (so it is waiting now)
    message = _forbidden(alice.server_communicate(
        {"command": "request_reservation", "resource": "scope-1", "reservation_duration": 60}),
        "most one user may hold is 3 (limits.max_reservations_per_user)")
    assert "alice holds 3" in message
    _forbidden(_call(sock, {**waiting, "request_id": "w2"}), "max_reservations_per_user")
    assert bob.request_reservation("scope-1", reservation_duration=60)[0]   # bob is not alice
    alice.release_reservation(first)                                       # room again
    assert alice.request_reservation("scope-1", reservation_duration=60)[0]
    _forbidden(alice.server_communicate(
        {"command": "request_reservation", "resource": "dut-1", "reservation_duration": 60}),
        "max_reservations_per_user")
    sock.close()
    alice.close()
    bob.close()


def test_bookings_longer_than_the_limit_are_refused(daemon_factory):
    hour = 3600
    d = daemon_factory({**BASE_CONFIG, "resources": BASE_CONFIG["resources"] + POOL,
                        "queues": {"debug": {"backend": "local", "hosts": ["host-1"]}},
                        "jobs": {"run_as": JOB_USER}, "limits": {"max_booking_s": hour}})
    alice = d.client("alice")
    too_long = [
        {"command": "request_reservation", "resource": "dut-1", "reservation_duration": hour + 1},
        {"command": "checkout", "request": [{"type": "gpus", "slots": 1}], "lease_s": hour + 1},
        {"command": "create_reservation", "queue_id": "debug", "host_count": 1,
         "wall_time": hour + 1, "start_time": 0},
        {"command": "create_deadline_reservation", "queue_id": "debug", "host_count": 1,
         "wall_time": hour + 1, "deadline_time": 4e9},
    ]
    for request in too_long:
        message = _forbidden(alice.server_communicate(request), "(limits.max_booking_s)")
        assert "at most 3600s" in message and "3601s asked" in message
    assert alice.list_reservations() == []
    pre, _, _ = alice.request_reservation("dut-1", reservation_duration=hour)   # at the limit
    reply = alice.server_communicate({"command": "extend_reservation", "reservation_id": pre,
                                      "extra_s": 1})
    _forbidden(reply, "limits.max_booking_s")
    lease = alice.checkout([{"type": "gpus", "slots": 1}], lease_s=hour - 10)
    assert alice.extend_reservation(lease["allocation_id"], 10) == lease["expire_time"] + 10
    # an admin's maintenance window is not a user's booking: no limit on its length
    admin = d.client("labadmin")
    reply = admin.server_communicate({"command": "request_reservation", "resource": "scope-1",
                                      "reservation_duration": 48 * hour, "maintenance": True})
    assert reply["ok"], reply
    admin.close()
    alice.close()


def test_waiting_requests_are_capped_per_user_across_connections(daemon_factory):
    d = daemon_factory({**BASE_CONFIG, "resources": BASE_CONFIG["resources"] + POOL,
                        "limits": {"max_waiting_per_user": 2}})
    bob = d.client("bob")
    held = bob.checkout([{"type": "gpus", "slots": 1}], lease_s=600)
    one, two, carol = _dealer(d), _dealer(d), _dealer(d)
    wait = {"command": "checkout", "request": [{"type": "gpus", "slots": 1}], "wait_s": 60,
            "user": "alice"}
    for i, sock in enumerate((one, two)):          # one waiting request on each connection
        sock.send_multipart([b"", msgpack.packb({**wait, "request_id": f"w{i}"})])
        assert _call(sock, {"command": "get_version"})["ok"]
    message = _forbidden(_call(one, {**wait, "request_id": "w2"}),
                         "limits.max_waiting_per_user = 2")
    assert "alice has 2 requests waiting" in message
    _forbidden(_call(carol, {**wait, "request_id": "w3"}), "max_waiting_per_user")  # any conn.
    # at the cap, what need not wait is still served, and other users still wait
    assert _call(one, {"command": "checkout", "request": [{"type": "dut", "slots": 1}],
                       "user": "alice"})["error"]["code"] == "unavailable"   # not a pool type
    carol.send_multipart([b"", msgpack.packb({**wait, "user": "carol", "request_id": "c"})])
    assert _call(carol, {"command": "get_version"})["ok"]
    bob.checkin(held["allocation_id"])             # alice's first waiter gets the GPU ...
    granted = _recv(one)
    assert granted["ok"] and granted["request_id"] == "w0", granted
    reply = _call(one, {**wait, "request_id": "w4", "wait_s": 0.2})   # ... and she may wait
    assert reply["error"]["code"] == "unavailable" and "waited 0.2s" in reply["error"]["message"]
    for sock in (one, two, carol):
        sock.close()
    bob.close()


def test_quotas_are_read_from_limits_and_checked(tmp_path):
    path = tmp_path / "atsd.yaml"
    path.write_text("limits: {max_reservations_per_user: 5, max_booking_s: 7200, "
                    "max_waiting_per_user: 3, max_depth: 4}\n")
    cfg = configmod.load(path)
    assert (cfg.quotas.max_reservations_per_user, cfg.quotas.max_booking_s,
            cfg.quotas.max_waiting_per_user, cfg.limits.max_depth) == (5, 7200.0, 3, 4)
    for bad, key in (("max_booking_s: 0", "limits.max_booking_s"),
                     ("max_waiting_per_user: 1.5", "limits.max_waiting_per_user"),
                     ("max_reservations_per_user: 0", "limits.max_reservations_per_user")):
        path.write_text(f"limits: {{{bad}}}\n")
        with pytest.raises(configmod.ConfigError) as err:
            configmod.load(path)
        assert err.value.key == key


def test_each_occurrence_of_a_series_and_each_selector_booking_counts(daemon_factory):
    d = daemon_factory({**BASE_CONFIG, "limits": {"max_reservations_per_user": 3}})
    alice = d.client("alice")
    series = {"command": "request_reservation", "resource": "dut-2",
              "reservation_duration": 60, "recurrence": "FREQ=DAILY;COUNT=4"}
    message = _forbidden(alice.server_communicate(series), "(limits.max_reservations_per_user)")
    assert "this would add 4" in message
    assert alice.list_reservations() == []                  # all or nothing
    reply = alice.server_communicate({**series, "recurrence": "FREQ=DAILY;COUNT=3"})
    assert reply["ok"] and len(reply["occurrences"]) == 3, reply
    _forbidden(alice.server_communicate({"command": "request_reservation",
                                         "selector": "dut", "count": 1}),
               "max_reservations_per_user")
    alice.close()
