"""Faults a lab daemon meets over months, each injected for real: a full disk under the state
file, clients killed while holding slots, a daemon killed in the middle of a call, a
subscriber that stops reading, and state files that are damaged or come from an older atsd.
(An unreachable daemon named by the CLI: test_cli.py.)"""

import asyncio
import errno
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import pytest
import zmq

from atsclient import InternalError, ResourceUnavailable
from atsclient.events import Subscriber
from daemon import BASE_CONFIG, Daemon, cli_env, wait_for

DATA = Path(__file__).resolve().parent / "data"
SPEC = {"version": {"major": 1, "minor": 0},
        "local": [{"gpus": [{"id": "0", "slots": 2}, {"id": "1", "slots": 2}]}]}
ENDED = "RESERVATION_ENDED"


def pool_daemon(directory: Path, **config) -> Daemon:
    """BASE_CONFIG's lab plus a CTest spec's GPU pool."""
    d = Daemon(directory, {**BASE_CONFIG, "resource_spec": "spec.json", **config})
    (d.dir / "spec.json").write_text(json.dumps(SPEC))
    return d


def listing(client) -> list[tuple]:
    return sorted((r["id"], r["resource"], r["kind"], r["start_time"], r["end_time"])
                  for r in client.list_reservations())


def status_events(client, rid: str) -> list[dict]:
    return [e for e in client.get_events(0, topics=["reservation.status"], limit=10_000)["events"]
            if e["reservation_id"] == rid]


def free_gpus(client) -> int:
    return sum(i["slots"] for i in client.get_pool()["resources"]["gpus"])


# --- a failed commit ---

@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs: a real file system that can be filled up, and emptied again. Mounting
    needs root: elsewhere the test is skipped, unless ATSD_REQUIRE_TMPFS=1 (CI, which runs
    as root) makes that a failure."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                            capture_output=True, text=True)
    if result.returncode:
        why = f"cannot mount a tmpfs (needs root): {result.stderr.strip()}"
        if os.environ.get("ATSD_REQUIRE_TMPFS") == "1":
            pytest.fail(f"ATSD_REQUIRE_TMPFS=1 but {why}")
        pytest.skip(why)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)


def fill(directory: Path) -> Path:
    """Write a file until the file system has no block left."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def dealer(endpoint: str) -> zmq.Socket:
    """A DEALER connected to the daemon, handshake done (a round trip), so what it sends
    next goes straight onto the wire even while the daemon is stopped."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    sock.send_multipart([b"", msgpack.packb({"command": "get_version"})])
    assert sock.poll(10_000)
    sock.recv_multipart()
    return sock


def answers(sock: zmq.Socket, n: int) -> list[dict]:
    got = []
    for _ in range(n):
        assert sock.poll(30_000), f"{len(got)} of {n} replies came"
        got.append(msgpack.unpackb(sock.recv_multipart()[-1]))
    return got


def test_reads_after_a_change_that_could_not_be_saved_answer_internal(tmp_path, small_disk):
    """A read answered in the same group as a change, after it, may have seen that change:
    when the group cannot be saved, it is answered internal too; a read before the change
    is answered as usual. The group is made one wake-up for sure: the daemon is stopped
    while all of it reaches its socket."""
    d = Daemon(tmp_path / "atsd", {**BASE_CONFIG, "state": str(small_disk / "atsd.db")})
    d.start()
    try:
        alice = d.client("alice")
        held, _, _ = alice.request_reservation("dut-1", reservation_duration=600)
        before = alice.list_reservations()
        sock = dealer(d.listen)
        read = {"command": "list_reservations", "user": "alice"}
        change = {"command": "request_reservation", "resource": "dut-2",
                  "reservation_duration": 60, "user": "alice"}
        group = [msgpack.packb(m) for m in (read, change, read, read)]
        filler = fill(small_disk)
        port = int(d.listen.rpartition(":")[2])
        # on the wire, per message: the empty delimiter frame (2 bytes), then the request
        # frame (a 2-byte header up to 255 bytes, 9 bytes above)
        size = sum(2 + (2 if len(m) < 256 else 9) + len(m) for m in group)
        stop_process(d.proc.pid)
        try:
            for m in group:
                sock.send_multipart([b"", m])
            wait_for(lambda: unread_bytes(port) >= size, timeout=30,
                     what="the group to reach the daemon")
        finally:
            os.kill(d.proc.pid, signal.SIGCONT)
        first, changed, *after = answers(sock, len(group))
        assert first["ok"] and first["reservations"] == before, first
        for reply in [changed, *after]:
            assert reply.get("error", {}).get("code") == "internal", reply
            assert "nothing was changed" in reply["error"]["message"]
        assert alice.list_reservations() == before      # a read in a group of its own

        filler.unlink()
        sock.send_multipart([b"", group[1]])
        assert answers(sock, 1)[0]["ok"]
        assert len(alice.list_reservations()) == 2
        assert held in {r["id"] for r in alice.list_reservations()}
        sock.close()
        alice.close()
    finally:
        d.kill()


def test_command_waiting_across_a_change_that_could_not_be_saved_answers_internal(
        tmp_path, small_disk):
    """bob's checkout waits (a task); alice's checkin frees the slots and serves it, in a
    group that cannot be saved. What bob was given is not on disk and no longer in memory,
    so his checkout is answered internal, not with slots, and holds nothing."""
    d = pool_daemon(tmp_path / "atsd", state=str(small_disk / "atsd.db")).start()
    try:
        alice = d.client("alice")
        lease = alice.checkout([{"type": "gpus", "slots": 2}, {"type": "gpus", "slots": 2}],
                               lease_s=600)
        bob = dealer(d.listen)
        bob.send_multipart([b"", msgpack.packb({
            "command": "checkout", "request": [{"type": "gpus", "slots": 1}], "wait_s": 60,
            "user": "bob"})])
        bob.send_multipart([b"", msgpack.packb({"command": "get_version"})])
        assert answers(bob, 1)[0]["protocol"] == 1       # answered first: the checkout waits
        before = listing(alice)
        filler = fill(small_disk)

        with pytest.raises(InternalError, match="nothing was changed"):
            alice.checkin(lease["allocation_id"])
        reply = answers(bob, 1)[0]
        assert reply.get("error", {}).get("code") == "internal", reply
        assert "nothing was changed" in reply["error"]["message"]
        assert listing(alice) == before
        assert free_gpus(alice) == 0

        filler.unlink()
        assert listing(alice) == before
        assert alice.list_reservations(owner="bob") == []
        bob.close()
        alice.close()
    finally:
        d.kill()


def test_failed_commit_answers_internal_and_memory_stays_equal_to_disk(tmp_path, small_disk):
    d = pool_daemon(tmp_path / "atsd", state=str(small_disk / "atsd.db")).start()
    try:
        alice = d.client("alice")
        held, _, _ = alice.request_reservation("dut-1", reservation_duration=600)
        alice.claim_reservation(held)
        lease = alice.checkout([{"type": "gpus", "slots": 2}], lease_s=3.0)
        before = listing(alice)
        filler = fill(small_disk)

        request = {"command": "request_reservation", "resource": "dut-2",
                   "reservation_duration": 60, "request_id": "while-the-disk-is-full"}
        reply = alice.server_communicate(request)
        assert reply["error"]["code"] == "internal", reply
        assert "disk is full" in reply["error"]["message"]
        assert d.proc.poll() is None
        assert listing(alice) == before           # nothing of the refused request stayed
        assert "commit_failed" in d.log() and "database or disk is full" in d.log()
        # no request_id: the change was still not saved, and the reply must say so
        raw = zmq.Context.instance().socket(zmq.REQ)
        raw.connect(d.listen)
        raw.send(msgpack.packb({"command": "release_reservation", "reservation_id": held,
                                "user": "alice"}))
        assert raw.poll(10_000)
        assert msgpack.unpackb(raw.recv())["error"]["code"] == "internal"
        raw.close(0)
        assert listing(alice) == before
        alice.close()
        d.restart()                               # memory was what the disk has
        alice = d.client("alice")
        assert listing(alice) == before
        # the audit trail is in the same transaction: the changes not saved are not in it
        assert [e["command"] for e in alice.get_audit()] == [
            "request_reservation", "claim_reservation", "checkout"]

        # the lease ends while nothing can be saved: the slots are free in memory ...
        wait_for(lambda: free_gpus(alice) == 4, what="the lease to end", interval=0.05)
        assert not [e for e in status_events(alice, lease["allocation_id"])
                    if e["reservation_status"] == ENDED]

        filler.unlink()                           # ... and once the disk has room again
        again = alice.server_communicate(request)     # not answered before: done now
        assert again["ok"], again
        ended = [e["reason"] for e in status_events(alice, lease["allocation_id"])
                 if e["reservation_status"] == ENDED]
        assert ended == ["expired"]               # saved and published with that group
        after = listing(alice)
        assert after == sorted([r for r in before if r[0] == held]
                               + [(again["pre_reservation_id"], "dut-2", "pre",
                                   again["time_available"], again["end_time"])])
        assert alice.server_communicate(request) == again
        alice.close()

        d.restart()                               # and still is
        with d.client("alice") as c:
            assert listing(c) == after
            assert [e["reason"] for e in status_events(c, lease["allocation_id"])
                    if e["reservation_status"] == ENDED] == ["expired"]
            assert c.server_communicate(request) == again
    finally:
        d.kill()


def observe(client) -> tuple:
    """Everything a client can see of the lab's state."""
    return (listing(client), client.get_pool(), client.list_resources(),
            client.get_resource_values(), client.get_events(0, limit=1)["last_seq"])


def test_failed_commit_puts_back_exactly_what_its_group_changed(tmp_path, small_disk):
    """One group touching every kind of record (reservations made, claimed, extended,
    released; a resource's config, service and value; a revocation; a waiter) fails to
    commit: afterwards the daemon shows exactly the state from before the group, a checkout
    that was waiting is answered at once, and the same changes succeed once there is room."""
    d = pool_daemon(tmp_path / "atsd", state=str(small_disk / "atsd.db")).start()
    try:
        alice = d.client("alice")
        pre, _, _ = alice.request_reservation("dut-2", {"firmware": "v2"},
                                              reservation_duration=600)
        held, _, _ = alice.request_reservation("dut-1", reservation_duration=600)
        alice.claim_reservation(held)
        lease = alice.checkout([{"type": "gpus", "slots": 2}, {"type": "gpus", "slots": 2}],
                               lease_s=600)
        waiter = zmq.Context.instance().socket(zmq.DEALER)
        waiter.linger = 0
        waiter.connect(d.listen)
        waiter.send_multipart([b"", msgpack.packb({
            "command": "checkout", "request": [{"type": "gpus", "slots": 1}], "wait_s": 60,
            "user": "bob", "request_id": "waits"})])
        waiter.send_multipart([b"", msgpack.packb({"command": "get_version"})])
        assert waiter.poll(10_000)                        # answered after the checkout:
        assert msgpack.unpackb(waiter.recv_multipart()[-1])["protocol"] == 1   # it waits
        before = observe(alice)
        filler = fill(small_disk)

        group = [
            {"command": "claim_reservation", "pre_reservation_id": pre, "user": "alice"},
            {"command": "extend_reservation", "reservation_id": lease["allocation_id"],
             "extra_s": 60, "user": "alice"},
            {"command": "release_reservation", "reservation_id": held, "user": "alice"},
            {"command": "request_reservation", "resource": "scope-1", "user": "alice"},
            {"command": "revoke", "nodelist": [{"node_id": "build-1"}], "max_wait_time": 60,
             "user": "labadmin"},
            {"command": "set_resource_values", "nodelist": [{"node_id": "dut-2", "value": 0.5}],
             "user": "labadmin"},
            {"command": "checkin", "allocation_id": lease["allocation_id"], "user": "alice"},
        ]
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(d.listen)
        for i, request in enumerate(group):              # pipelined: one group or a few
            sock.send_multipart([b"", msgpack.packb({**request, "request_id": f"g{i}"})])
        for _ in group:
            assert sock.poll(10_000)
            reply = msgpack.unpackb(sock.recv_multipart()[-1])
            assert reply["error"]["code"] == "internal", reply
        assert waiter.poll(10_000), "the waiting checkout was not answered"
        reply = msgpack.unpackb(waiter.recv_multipart()[-1])
        assert reply["error"]["code"] == "internal" and "nothing was changed" in str(reply)
        assert observe(alice) == before
        assert "commit_failed" in d.log()

        filler.unlink()                                   # room again: all of it works
        for i, request in enumerate(group):
            sock.send_multipart([b"", msgpack.packb({**request, "request_id": f"again{i}"})])
            assert sock.poll(10_000)
            reply = msgpack.unpackb(sock.recv_multipart()[-1])
            assert reply["ok"], (request, reply)
        after = observe(alice)
        assert after != before
        assert {r["name"]: r["config"] for r in after[2]}["dut-2"] == {"firmware": "v2"}
        sock.close()
        waiter.close()
        alice.close()
        d.restart()
        with d.client("alice") as c:
            assert observe(c)[:4] == after[:4]
    finally:
        d.kill()


# --- clients that die, daemons that die ---

HOLDER = """
import sys
from atsclient import ATSClient
c = ATSClient(sys.argv[1], user="crashy")
lease = c.checkout([{"type": "gpus", "slots": 2}, {"type": "gpus", "slots": 1}], lease_s=2.0)
pre, _, _ = c.request_reservation("dut-1", reservation_duration=2.0)
c.claim_reservation(pre)
print(lease["allocation_id"], pre, lease["expire_time"], flush=True)
sys.stdin.read()          # hold them until killed
"""


def test_client_killed_while_holding_gets_nothing_past_its_lease_or_end(tmp_path):
    d = pool_daemon(tmp_path / "atsd").start()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, d.listen],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env=cli_env())
    try:
        allocation, reservation, expire = holder.stdout.readline().split()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        with d.client("watcher") as c:
            assert free_gpus(c) == 1
            assert {r["id"] for r in c.list_reservations(owner="crashy")} == {allocation,
                                                                              reservation}

            def ended():
                got = {}
                for rid in (allocation, reservation):
                    ends = [e for e in status_events(c, rid) if e["reservation_status"] == ENDED]
                    if ends:
                        got[rid] = ends[-1]
                return len(got) == 2 and got
            got = wait_for(ended, what="the dead client's holdings to end")
            assert {e["reason"] for e in got.values()} == {"expired"}
            assert float(expire) <= got[allocation]["ts"] < float(expire) + 1.0
            assert free_gpus(c) == 4
            assert c.list_reservations(owner="crashy") == []
    finally:
        holder.kill()
        d.kill()


def test_call_in_flight_when_the_daemon_is_killed_is_answered_by_the_next_one(tmp_path,
                                                                              store_config):
    """Lazy Pirate across a restart: the request reaches a daemon that dies without
    answering it; the same request (same request_id) is answered by the restarted one, and
    books once."""
    d = Daemon(tmp_path / "atsd", {**BASE_CONFIG, **store_config}).start()
    try:
        c = d.client("alice", timeout=1.0, retries=10)
        c.get_version()
        stop_process(d.proc.pid)               # receives, never answers
        answer = {}
        call = threading.Thread(target=lambda: answer.update(
            r=c.request_reservation("dut-2", reservation_duration=60)))
        call.start()
        port = int(d.listen.rpartition(":")[2])
        wait_for(lambda: unread_bytes(port), what="the request to reach the stopped daemon")
        d.restart()                            # SIGKILL (a stopped process dies too), start
        call.join(30)
        assert not call.is_alive()
        pre = answer["r"][0]
        assert [r["id"] for r in c.list_reservations(resource="dut-2")] == [pre]
        c.close()
    finally:
        d.kill()


def stop_process(pid: int) -> None:
    """SIGSTOP ``pid`` and wait until every thread of it has stopped: the signal is only
    queued when kill returns, and a daemon still running for a moment may read some of
    what is sent next."""
    os.kill(pid, signal.SIGSTOP)

    def stopped():
        states = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                states.append((task / "stat").read_text().rpartition(")")[2].split()[0])
            except FileNotFoundError:       # a thread that ended meanwhile
                continue
        return states and all(state in "Tt" for state in states)
    wait_for(stopped, what=f"process {pid} to stop")


def unread_bytes(port: int) -> int:
    """Bytes waiting, unread, on the daemon's side of connections to ``port``."""
    total = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "01":   # ESTABLISHED
            total += int(fields[4].split(":")[1], 16)
    return total


# --- a subscriber that stops reading ---

BOARDS = [f"board-{i}-{'x' * 110}" for i in range(8)]   # long names: big event payloads


def publish(endpoint: str, pairs: int) -> float:
    """``pairs`` request + release of all BOARDS, 32 in flight: two reservation.status
    events each. No request_id, so no reply is kept for retries: what the daemon keeps per
    event is its log entry only. Returns events per second."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    request = msgpack.packb({"command": "request_reservation", "resources": BOARDS,
                             "reservation_duration": 60, "user": "load"})
    sent = done = 0
    start = time.perf_counter()
    while sent < min(32, pairs):
        sock.send_multipart([b"", request])
        sent += 1
    while done < pairs:
        assert sock.poll(30_000), "the daemon stopped answering"
        reply = msgpack.unpackb(sock.recv_multipart()[-1])
        assert reply["ok"], reply
        if "pre_reservation_id" in reply:
            sock.send_multipart([b"", msgpack.packb({
                "command": "release_reservation", "user": "load",
                "reservation_id": reply["pre_reservation_id"]})])
            continue
        done += 1
        if sent < pairs:
            sock.send_multipart([b"", request])
            sent += 1
    sock.close()
    return 2 * pairs / (time.perf_counter() - start)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


async def test_subscriber_that_stops_reading_costs_bounded_memory_and_recovers(tmp_path):
    hwm = 1000
    d = Daemon(tmp_path / "atsd", {
        "resources": [{"name": n, "type": "board"} for n in BOARDS],
        "event_hwm": hwm, "event_log_size": 50_000,
        "history_s": 0.5}).start()       # ended reservations are dropped: memory is flat
    try:
        pairs = 3000
        publish(d.listen, 1000)                   # warm up
        r0 = rss_mb(d.proc.pid)
        rate_alone = publish(d.listen, pairs)     # what the events cost with nobody stalled
        grown_alone = rss_mb(d.proc.pid) - r0
        async with Subscriber(d.listen, d.events, since_seq=None,
                              sockopts={zmq.RCVHWM: 100, zmq.RCVBUF: 8192}) as sub:
            first = sub.last_seq
            publish(d.listen, pairs)              # fills the stalled subscriber's queue
            r1 = rss_mb(d.proc.pid)
            rates = [publish(d.listen, pairs) for _ in range(2)]   # and then some
            grown_stalled = rss_mb(d.proc.pid) - r1
            # had the daemon queued every event for the subscriber, it would have grown by
            # their payloads too (12000 of over 1 KB); it grew as it does without one
            assert grown_stalled < 2 * grown_alone * 1.3 + 3, (grown_alone, grown_stalled)
            assert min(rates) > rate_alone / 3, (rate_alone, rates)   # it never blocks
            with d.client("other") as other:
                start = time.perf_counter()
                last = other.get_events(0, limit=1)["last_seq"]
                assert time.perf_counter() - start < 0.5
            assert last - first >= 6 * pairs > 10 * hwm

            async def read_up_to_last():          # reading again: nothing is missing
                seqs = []
                async for event in sub:
                    seqs.append(event["seq"])
                    if event["seq"] == last:
                        return seqs
            seqs = await asyncio.wait_for(read_up_to_last(), 30)
            assert seqs == list(range(first + 1, last + 1))
            assert sub.fetched > 0 and sub.lost == []
    finally:
        d.kill()


# --- state files ---

def test_state_file_of_schema_1_is_migrated(tmp_path):
    """tests/data/state-schema1.sqlite was written with schema 1 (no replies table) and holds
    alice's claimed reservation of dut-1 until 2100, and the two events that made it."""
    # (a booking of 74 years: over the default limits.max_booking_s, that it predates)
    d = Daemon(tmp_path / "atsd", {**BASE_CONFIG, "limits": {"max_booking_s": 3e9}})
    shutil.copy(DATA / "state-schema1.sqlite", d.state)
    d.start()
    try:
        with d.client("alice") as c:
            rows = c.list_reservations()
            assert [(r["id"], r["resource"], r["kind"], r["owner"], r["end_time"])
                    for r in rows] == [("v1LiveClaimed001", "dut-1", "claimed", "alice",
                                        4_102_444_800.0)]
            with pytest.raises(ResourceUnavailable, match="dut-1"):
                c.request_reservation("dut-1", next_available=False)
            old = c.get_events(0)["events"]
            assert [e["seq"] for e in old[:2]] == [1, 2]
            extend = {"command": "extend_reservation", "reservation_id": "v1LiveClaimed001",
                      "extra_s": 60, "request_id": "after-migration"}
            first = c.server_communicate(extend)
            assert first["expire_time"] == 4_102_444_860.0
            assert c.server_communicate(extend) == first    # the new replies table works
        d.restart()
        with d.client("alice") as c:
            assert c.server_communicate(extend) == first
        d.stop()
        con = sqlite3.connect(d.state)
        assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (3,)
        assert con.execute("SELECT count(*) FROM replies").fetchone()[0] >= 1
        assert con.execute("SELECT count(*) FROM audit").fetchone()[0] == 1     # the extend
        con.close()
    finally:
        d.kill()


def test_state_file_of_schema_2_keeps_its_replies(tmp_path):
    """Schema 2 keyed replies by "user NUL request_id"; schema 3 by the pair. A retry after
    the upgrade still gets the reply kept before it."""
    d = Daemon(tmp_path / "atsd")
    kept = msgpack.packb({"ok": True, "release_status": True, "request_id": "r-1"})
    con = sqlite3.connect(d.state)
    con.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
        CREATE TABLE records (kind TEXT, key TEXT, data BLOB, PRIMARY KEY (kind, key))
            WITHOUT ROWID;
        CREATE TABLE events (seq INTEGER PRIMARY KEY, data BLOB);
        CREATE TABLE replies (key TEXT PRIMARY KEY, ts REAL, data BLOB) WITHOUT ROWID;
        INSERT INTO meta VALUES ('schema_version', 2);""")
    con.execute("INSERT INTO replies VALUES (?, ?, ?)", ("alice\0r-1", time.time(), kept))
    con.commit()
    con.close()
    d.start()
    try:
        with d.client("alice") as c:
            again = {"command": "release_reservation", "reservation_id": "gone",
                     "request_id": "r-1"}
            assert c.server_communicate(again) == msgpack.unpackb(kept)
        with d.client("bob") as c:      # the same id is bob's own
            assert c.server_communicate(again)["error"]["code"] == "not_found"
    finally:
        d.kill()


def test_damaged_state_file_is_refused_before_any_migration_writes_it(tmp_path):
    d = Daemon(tmp_path / "atsd")
    data = bytearray((DATA / "state-schema1.sqlite").read_bytes())
    data[2 * 4096:2 * 4096 + 12] = b"\xff" * 12      # the records table's page header
    d.state.write_bytes(bytes(data))
    with pytest.raises(AssertionError, match="damaged state file") as err:
        d.start(timeout=10)
    assert str(d.state) in str(err.value) and "left as it is" in str(err.value)
    assert d.state.read_bytes() == bytes(data)
