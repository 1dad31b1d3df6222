"""What a hostile request can make the daemon echo, keep or confuse, tried over the wire:
error messages quote at most a short piece of a request; the retry cache is bounded in
bytes and keeps short errors; messages of many frames are dropped unread; retries count as
in flight; a request_id means one request, per user, with no way to reach another user's."""

import sqlite3
import time

import msgpack
import pytest

from atsd.commands import load_all
from daemon import BASE_CONFIG
from fuzzing import FUZZ_CONFIG, dealer, plausible, recv

BIG = "Z" * 60_000                      # under the 64 KiB string limit: it gets decoded
HOSTILE = [BIG, [BIG] * 15, {BIG: 1}]   # the list: ~900 KB, in one 1 MiB frame


def _send(sock, request: dict) -> dict:
    sock.send_multipart([b"", msgpack.packb(request)])
    got = recv(sock)
    assert got is not None, f"no reply to {request['command']}"
    return got[1]


def _short(reply: dict) -> None:
    assert len(msgpack.packb(reply)) < 1024, reply
    if not reply["ok"]:
        assert reply["error"]["message"].count("Z") <= 200, reply


def test_no_reply_repeats_more_than_a_short_piece_of_a_request(daemon_factory):
    """Every argument of every command, and the keys and the command name, given a huge
    value: each reply is short (before: a 960 KB reservation_mode came back whole)."""
    d = daemon_factory(FUZZ_CONFIG)
    sock = dealer(d.listen)
    good = {"state": "up", **{k: v[0] for k, v in plausible(time.time()).items()}}
    for name, cmd in sorted(load_all().items()):
        base = {"command": name, "user": "fuzzadmin",
                **{k: good[k] for k, a in cmd.args.items() if a.required}}
        if name == "checkout":
            base["wait_s"] = 0
        for key in cmd.args:
            for value in HOSTILE:
                _short(_send(sock, {**base, key: value}))
        _short(_send(sock, {**base, BIG: 1}))                   # an unknown key
    _short(_send(sock, {"command": BIG}))
    _short(_send(sock, {"command": [BIG] * 15}))
    sock.close()


def test_cached_error_replies_are_short(daemon):
    """300 retryable requests with a 900 KB bad value: the retry cache (memory and state
    file) keeps each as a short error (before: +280 MB of state file)."""
    sock = dealer(daemon.listen)
    bad = {"command": "request_reservation", "resource": "dut-1", "user": "mallory",
           "reservation_mode": [BIG] * 15}
    for i in range(300):
        reply = _send(sock, {**bad, "request_id": f"bad-{i}"})
        assert reply["error"]["code"] == "bad_request"
    again = _send(sock, {**bad, "request_id": "bad-0"})         # a retry: the kept reply
    assert again["error"]["message"] == reply["error"]["message"].replace("bad-299", "bad-0")
    sock.close()
    con = sqlite3.connect(daemon.state)
    count, size = con.execute("SELECT count(*), sum(length(data)) FROM replies").fetchone()
    con.close()
    assert count == 300 and size < 300 * 400, (count, size)


def test_retry_cache_is_bounded_in_bytes(daemon_factory):
    """With reply_cache_bytes of 100 KB, 1,000 bookings' replies do not all fit: the oldest
    are forgotten (a retry of the first is a new request), the newest kept, and the state
    file holds no more than the bound either, also after a restart."""
    d = daemon_factory({**BASE_CONFIG, "reply_cache_bytes": 100_000})
    sock = dealer(d.listen)
    later = time.time() + 86400

    def book(i: int) -> dict:
        return {"command": "request_reservation", "resource": "dut-2", "user": "alice",
                "time_needed": later + 10 * i, "reservation_duration": 5,
                "next_available": False, "request_id": f"book-{i}"}
    first = {}
    for start in range(0, 1000, 50):            # within max_in_flight
        for i in range(start, start + 50):
            sock.send_multipart([b"", msgpack.packb(book(i))])
        for _ in range(50):
            reply = recv(sock)[1]
            assert reply["ok"], reply
            first[reply["request_id"]] = reply["pre_reservation_id"]
    assert _send(sock, book(999))["pre_reservation_id"] == first["book-999"]   # kept
    con = sqlite3.connect(d.state)
    count, size = con.execute("SELECT count(*), sum(length(data)) FROM replies").fetchone()
    assert 100 < count < 1000 and size < 100_000, (count, size)
    d.restart()
    sock.close()
    sock = dealer(d.listen)
    assert _send(sock, book(999))["pre_reservation_id"] == first["book-999"]   # kept
    retried = _send(sock, book(0))      # forgotten: run again, and its window is taken
    assert retried["error"]["code"] == "unavailable", retried
    count, size = con.execute("SELECT count(*), sum(length(data)) FROM replies").fetchone()
    con.close()
    assert count < 1000 and size < 100_000, (count, size)
    sock.close()


def test_messages_of_more_than_16_frames_are_dropped_unread(daemon):
    sock = dealer(daemon.listen)
    request = {"command": "get_version", "user": "alice"}
    # 16 frames at the ROUTER (identity + 14 + body): answered, the envelope returned
    sock.send_multipart([b"x"] * 14 + [msgpack.packb({**request, "request_id": "sixteen"})])
    frames, reply = recv(sock)
    assert reply["request_id"] == "sixteen" and frames[:-1] == [b"x"] * 14
    # 17: dropped; the next message on the same connection is the next one answered
    sock.send_multipart([b""] * 15 + [msgpack.packb({**request, "request_id": "seventeen"})])
    sock.send_multipart([b"", msgpack.packb({**request, "request_id": "after"})])
    assert recv(sock)[1]["request_id"] == "after"
    # a storm of 5,000-frame messages is not answered, and others still are
    storm = dealer(daemon.listen)
    for _ in range(20):
        storm.send_multipart([b""] * 5000 + [msgpack.packb(request)])
    with daemon.client("bob") as bob:
        assert bob.get_version()["protocol"] == 1
    sock.send_multipart([b"", msgpack.packb({**request, "request_id": "last"})])
    assert recv(sock)[1]["request_id"] == "last"
    assert storm.poll(0) == 0
    storm.close()
    sock.close()
    assert daemon.proc.poll() is None


GPU_CONFIG = {**BASE_CONFIG, "max_in_flight": 8,
              "resources": BASE_CONFIG["resources"] + [{"name": "gpus/0", "type": "gpus",
                                                        "slots": 1}]}


def test_retries_of_a_waiting_request_count_as_in_flight(daemon_factory):
    """A waiting checkout sent 21 times on one connection: past max_in_flight (8) the
    retries are refused overloaded, not each kept for a copy of the reply (before: all 21
    kept and answered)."""
    d = daemon_factory(GPU_CONFIG)
    with d.client("alice") as alice:
        held = alice.checkout([{"type": "gpus", "slots": 1}])
        sock = dealer(d.listen)
        wait = {"command": "checkout", "request": [{"type": "gpus", "slots": 1}],
                "wait_s": 30, "user": "bob", "request_id": "waiting"}
        for _ in range(21):
            sock.send_multipart([b"", msgpack.packb(wait)])
        sock.send_multipart([b"", msgpack.packb({"command": "get_version",
                                                 "request_id": "sentinel"})])
        now = []                            # answered at once: before the sentinel's reply
        while (reply := recv(sock)[1])["request_id"] != "sentinel":
            now.append(reply["error"]["code"])
        assert set(now) == {"overloaded"} and len(now) >= 13, now
        # another request under the id while it waits (from elsewhere) is refused
        other = dealer(d.listen)
        assert _send(other, {**wait, "wait_s": 10})["error"]["code"] == "conflict"
        other.close()
        alice.checkin(held["allocation_id"])
        later = [recv(sock)[1] for _ in range(21 - len(now))]
        assert all(r["ok"] for r in later), later
        assert len({r["allocation_id"] for r in later}) == 1
        assert sock.poll(200) == 0
        sock.close()


def test_a_request_id_means_one_request(daemon):
    """A used request_id with other content is refused conflict, also while the first is
    running and after a restart; the same content gets the first reply."""
    sock = dealer(daemon.listen)
    book = {"command": "request_reservation", "resource": "dut-1", "user": "alice",
            "reservation_duration": 600, "request_id": "one"}
    first = _send(sock, book)
    assert first["ok"]
    assert _send(sock, dict(reversed(book.items()))) == first      # key order is no matter
    release = {"command": "release_reservation", "user": "alice",
               "reservation_id": first["pre_reservation_id"], "request_id": "one"}
    for other in (release, {**book, "reservation_duration": 60}, {**book, "extra": None}):
        reply = _send(sock, other)
        assert reply["error"]["code"] == "conflict", reply
        assert "request_id" in reply["error"]["message"]
    daemon.restart()
    sock.close()
    sock = dealer(daemon.listen)
    assert _send(sock, release)["error"]["code"] == "conflict"
    assert _send(sock, book) == first
    with daemon.client("alice") as alice:
        assert [r["id"] for r in alice.list_reservations()] == [first["pre_reservation_id"]]
    sock.close()


@pytest.mark.parametrize("user", ["x\0y", "x\ny", "x\x7fy", "x\u202ey", "x\u200by"])
def test_user_names_with_control_characters_are_refused(daemon, user):
    sock = dealer(daemon.listen)
    reply = _send(sock, {"command": "request_reservation", "resource": "dut-1",
                         "user": user, "request_id": "z"})
    assert reply["error"]["code"] == "bad_request" and "user" in reply["error"]["message"]
    sock.close()


def test_cache_keys_of_two_users_never_meet(daemon):
    """User x with id "y\\0z" and user "x\\0y" with id z shared one cache entry before;
    now the second is refused, and a user's id is never another user's."""
    sock = dealer(daemon.listen)
    book = {"command": "request_reservation", "resource": "dut-1", "user": "x",
            "reservation_duration": 60, "request_id": "y\0z"}
    first = _send(sock, book)
    assert first["ok"]
    assert _send(sock, {**book, "user": "x\0y", "request_id": "z"})["error"]["code"] == \
        "bad_request"
    bob = _send(sock, {**book, "user": "bob", "resource": "dut-2"})
    assert bob["ok"] and bob["pre_reservation_id"] != first["pre_reservation_id"]
    assert _send(sock, book) == first
    sock.close()


def test_a_booking_keeps_no_big_config(daemon):
    """A config is kept with the reservation and returned to everyone who lists it: over
    4 KB it is refused, saying the bound."""
    with daemon.client("mallory") as mallory:
        big = {f"k{i}": "v" * 1000 for i in range(60)}
        reply = mallory.server_communicate({"command": "request_reservation",
                                            "resource": "dut-1", "resource_config": big})
        assert reply["error"]["code"] == "bad_request"
        assert "resource_config must encode to at most 4096 bytes" in reply["error"]["message"]
        assert mallory.list_reservations() == []
        pre, _, _ = mallory.request_reservation("dut-1", res_config={"firmware": "v2"})
        assert pre
