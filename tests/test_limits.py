"""Limits on what one client can make the daemon do: frame size, msgpack shape, and requests
in flight, so that a flooding client cannot starve the others."""

import time

import msgpack
import pytest
import zmq

from atsd import config as configmod
from daemon import BASE_CONFIG


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
