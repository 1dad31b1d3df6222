"""A wall-clock jump: logged with its size, the expiries it brings due published as such,
and durations (waits, leases, the countdown between revocation notices, the reply cache's
ages) kept as long as they were asked to be. ``step`` reads the wall clock it is given
once per wake-up; the tests give it one that reads an hour ahead or behind, as a clock set
forward or back would (the machine's own clock is not ours to set)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import msgpack
import pytest
import yaml
import zmq

from atsd import config as configmod
from atsd.commands.pool import ANSWER_MARGIN_S
from atsd.engine.errors import Unavailable
from atsd.engine.lab import Caller
from atsd.monitor import ClockWatch
from atsd.server import Server

HOUR = 3600.0
ADMIN = Caller("labadmin", admin=True)


@pytest.fixture
def server(tmp_path):
    """A Server on free ports, not running its loop: the test calls ``step`` itself."""
    path = tmp_path / "atsd.yaml"
    path.write_text(yaml.safe_dump({
        "resources": [{"name": "dut-1"}, {"name": "dut-2"}, {"name": "gpus/0", "type": "gpus"},
                      {"name": "fpga/0", "type": "fpga"}, {"name": "nic/0", "type": "nic"},
                      {"name": "scope/0", "type": "scope"}],
        "listen": "tcp://127.0.0.1:*", "events": "tcp://127.0.0.1:*",
        "claim_window_s": 300, "countdown_interval_s": 30,
        "security": {"admins": ["labadmin"]}}))
    cfg = configmod.load(path)
    configmod.resolve_job_user(cfg)
    server = Server(cfg)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server.bind()
    yield server
    server.vitals.detach()
    for sock in (server.monitor_socket, server.router, server.pub):
        sock.close(0)
    server.ctx.term()
    server.store.close()
    asyncio.set_event_loop(None)
    loop.close()


def step(server, now: float) -> None:
    """One wake-up of the server at ``now`` (the fixture's loop runs it)."""
    asyncio.get_event_loop().run_until_complete(server.step(lambda: now))


def published(server, since: int) -> list[dict]:
    return server.app.events.since(since, None, 100)["events"]


def test_jump_forward_expires_what_fell_due_and_keeps_durations(server):
    app = server.app
    now = time.time()
    lapsing = app.calendar.request(Caller("alice"), ["dut-1"], now, 600, None, "exclusive",
                                   False, None, now)
    later = app.calendar.request(Caller("alice"), ["dut-2"], now + 2 * HOUR, 600, None,
                                 "exclusive", False, None, now)
    held = app.pool.checkout(Caller("alice"), [("gpus", 1)], 600, now)
    waiter = app.pool.checkout(Caller("bob"), [("gpus", 1)], 60, now, wait_s=30)
    # leases whose moved time the calendar gave away: fpga/0 from half an hour after the
    # jump, nic/0 from before it (half an hour from now by the old clock)
    cut = app.pool.checkout(Caller("alice"), [("fpga", 1)], 600, now)
    app.calendar.request(Caller("carol"), ["fpga/0"], now + HOUR + 300, 600, None,
                         "exclusive", False, None, now, claim=True)
    taken = app.pool.checkout(Caller("alice"), [("nic", 1)], 600, now)
    app.calendar.request(Caller("carol"), ["nic/0"], now + 1800, 3 * HOUR, None, "exclusive",
                         False, None, now, claim=True)
    server.replies.put(("alice", "r1"), now, b"digest", b"first reply")
    step(server, now)
    seq = app.events.last_seq
    # a checkout answered in the wake-up that finds the jump is on the new clock already
    client = server.ctx.socket(zmq.DEALER)
    client.connect(server.endpoints["listen"])
    zmq.Socket.shadow(client.underlying).send_multipart([b"", msgpack.packb({
        "command": "checkout", "user": "dave", "request": [{"type": "scope", "slots": 1}],
        "lease_s": 600})])
    assert server.router_sync.poll(10_000), "the checkout never reached the daemon"
    ahead = time.time() + HOUR          # the wall clock, set an hour forward
    step(server, ahead)
    dealer = zmq.Socket.shadow(client.underlying)
    assert dealer.poll(10_000), "no reply to the checkout"
    _, reply = dealer.recv_multipart()
    client.close(0)
    assert msgpack.unpackb(reply)["expire_time"] == ahead + 600
    events = {e["reservation_id"]: e for e in published(server, seq)
              if e["topic"] == "reservation.status"}
    assert [e["owner"] for e in events.values() if "clock_jump_s" not in e] == ["dave"]
    assert all(abs(e["clock_jump_s"] - HOUR) < 5 for e in events.values() if "clock_jump_s" in e)
    # calendar times follow the wall clock: what fell due happened, and says why
    assert (events[lapsing.id]["reservation_status"], events[lapsing.id]["reason"]) == \
        ("RESERVATION_ENDED", "lapsed")
    assert app.lab.reservations[later.id].state == "RESERVATION_GRANTED"
    # a lease is a duration: still held, to the same monotonic end, published as moved
    assert held.state == "RESERVATION_ACTIVE" and events[held.id]["reason"] == "moved"
    assert 590 - 5 < held.end - ahead <= 600
    assert held.bookings[0].end == held.end and held.end - held.start == 600
    # ... unless the calendar gave the time away: it keeps what is left, or ends at once
    assert cut.state == "RESERVATION_ACTIVE" and cut.end == now + HOUR + 300
    assert (events[taken.id]["reservation_status"], events[taken.id]["reason"]) == \
        ("RESERVATION_ENDED", "expired")
    # a wait is a duration: still waiting after the jump, to the same monotonic end
    assert app.pool.waiters == [waiter] and waiter.result is None
    assert 20 < waiter.deadline - ahead <= 30
    assert server.replies.get(("alice", "r1")).data == b"first reply"
    seq = app.events.last_seq
    step(server, time.time() + HOUR)         # still an hour ahead: no new jump
    assert app.events.last_seq == seq


def test_jump_back_keeps_durations_and_leaves_no_waiter_behind(server):
    """The issue's example: after a backward jump, the waiter must leave the queue when
    its client is told "unavailable", not an hour later (when slots it is then granted
    would be held by nobody); a lease must not hold its slots an hour longer, nor look
    free for that hour; revocation notices keep their interval."""
    app = server.app
    now = time.time()
    held = app.pool.checkout(Caller("alice"), [("gpus", 1)], 600, now)
    waiter = app.pool.checkout(Caller("bob"), [("gpus", 1)], 60, now, wait_s=2)
    app.calendar.request(Caller("carol"), ["dut-1"], now, 2 * HOUR, None, "exclusive", False,
                         None, now, claim=True)
    rev = app.revocations.revoke(ADMIN, ["dut-1"], 2 * HOUR, "rewiring", now)
    server.replies.put(("alice", "r1"), now, b"digest", b"first reply")
    step(server, now)
    behind = time.time() - HOUR         # the wall clock, set an hour back
    step(server, behind)
    assert 0 < waiter.deadline - behind <= 2
    assert 590 < held.end - behind <= 600 and held.start < behind
    # the lease holds its slots now, by the new clock too: nothing else is granted them
    assert app.pool.accommodates([("gpus", 1)], 60, behind)[0] is False
    assert 0 < rev.next_notice - behind <= 30 and rev.deadline == now + 2 * HOUR
    seq = app.events.last_seq
    step(server, waiter.deadline)        # when its 2 s are up, by the monotonic clock
    assert app.pool.waiters == [] and isinstance(waiter.result, Unavailable)
    app.pool.checkin(Caller("alice"), held.id, time.time() - HOUR)
    step(server, time.time() - HOUR)
    assert [r for r in app.lab.reservations.values() if r.owner == "bob"] == []
    # the countdown and the reply cache's ages run on as before the jump
    step(server, rev.next_notice)
    assert [e["topic"] for e in published(server, seq)].count("resource.delete_pending") == 1
    assert server.replies.get(("alice", "r1")) is not None
    # a checkout's own guard timer never answers before the engine: a step of the clock
    # too small to be moved out of the waiter's deadline is smaller than its margin
    assert ANSWER_MARGIN_S > ClockWatch.THRESHOLD_S
    server.replies.expire(now - HOUR + server.replies.ttl_s + 1)
    assert server.replies.get(("alice", "r1")) is None


def test_a_claim_sent_after_expire_time_is_judged_after_it(server, monkeypatch):
    """A wake-up answers its requests at one reading of the clock. Taken before the requests,
    that reading is older than one that came in meanwhile: a claim sent just after its
    pre-reservation's expire_time was judged at a time before it, and the pre-reservation
    lapsed (published) before the expire_time its holder was told. The daemon's loop runs
    here on a wall clock whose next reading, once armed, is taken just before expire_time,
    while the claim is sent just after it."""
    app = server.app
    now = time.time()
    pre = app.calendar.request(Caller("alice"), ["dut-1"], now, 30, None, "exclusive", False,
                               None, now)
    # booked right after it, so that a claim after time_available cannot have its whole 30 s
    app.calendar.request(Caller("bob"), ["dut-1"], pre.end, 600, None, "exclusive", False,
                         None, now, claim=True)
    expire = pre.expire_time
    client = server.ctx.socket(zmq.DEALER)
    client.connect(server.endpoints["listen"])
    claim = msgpack.packb({"command": "claim_reservation", "user": "alice",
                           "pre_reservation_id": pre.id})
    sent: list[float] = []
    armed = False

    def wall() -> float:
        if not armed:
            return time.time()
        if not sent:            # this reading is taken, then the claim is sent
            sent.append(expire + 0.001)
            zmq.Socket.shadow(client.underlying).send_multipart([b"", claim])
            assert server.router_sync.poll(10_000), "the claim never reached the daemon"
            return expire - 0.001
        return sent[0]          # the daemon's clock reads the time it was sent, or later

    monkeypatch.setattr("atsd.server.time", SimpleNamespace(
        time=wall, perf_counter=time.perf_counter))

    async def scenario() -> dict:
        running = asyncio.ensure_future(server.run())
        # answered: the loop has gone to sleep (it yields only there)
        await client.send_multipart([b"", msgpack.packb({"command": "get_version"})])
        await asyncio.wait_for(client.recv_multipart(), 10)
        nonlocal armed
        armed = True
        server.wake()
        _, reply = await asyncio.wait_for(client.recv_multipart(), 10)
        client.close(0)
        server.stop()
        await asyncio.wait_for(running, 30)
        return msgpack.unpackb(reply)

    reply = asyncio.get_event_loop().run_until_complete(scenario())
    assert sent, "the armed reading was never taken"
    assert reply["error"]["code"] == "claim_late"
    lapse = [e for e in published(server, 0) if e.get("reservation_id") == pre.id
             and e.get("reason") == "lapsed"]
    assert len(lapse) == 1 and lapse[0]["ts"] >= expire, (lapse, expire)
    assert pre.ended_at >= expire
