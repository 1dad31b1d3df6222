"""Several atsd on one PostgreSQL database (issue 19, atsd/store_pg.py, atsd/leader.py):
one leads, the others answer ``standby``; a standby takes over when the leader dies, with
everything it acknowledged; a leader that loses its session stops serving at once. Real
daemons, real sockets, a real (private) PostgreSQL server (tests/pg_cluster.py)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

import msgpack
import psycopg
import pytest
import zmq

from atsclient import ResourceUnavailable
from daemon import BASE_CONFIG, JOB_USER, Daemon, cli_env, wait_for
from atsd.leader import advertised
from atsd.store_pg import LOCK_KEY, SCHEMA_VERSION, PgStore, SessionLost

TAKEOVER_S = 5.0        # issue 19: a standby leads within this of the leader's death


def pg_config(url: str, **extra) -> dict:
    return {**BASE_CONFIG, "state": url, **extra}


def refusal(daemon, command: str, **args) -> dict:
    """The error reply ``daemon`` sends to ``command``, as it is on the wire (a plain REQ
    socket: clients move on from a standby by themselves); the test fails on an ok."""
    with zmq.Context() as ctx, ctx.socket(zmq.REQ) as sock:
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(daemon.listen)
        sock.send(msgpack.packb({"command": command, "user": "alice", **args}))
        assert sock.poll(5000), f"no reply from {daemon.listen}"
        reply = msgpack.unpackb(sock.recv())
    assert not reply["ok"], reply
    return reply


def book(client, i: int, t0: float) -> str:
    """One exclusive booking of dut-1 in its own slot, acknowledged (returns its id)."""
    pre, _, _ = client.request_reservation("dut-1", time_needed=t0 + 3600 + i * 120,
                                           reservation_duration=60, next_available=False)
    return pre


def reservation_ids(client) -> set[str]:
    return {r["id"] for r in client.list_reservations(resource="dut-1")}


def event_seqs(client) -> list[int]:
    return [e["seq"] for e in client.get_events(0)["events"]]


def leader_backend(url: str) -> int:
    """The PostgreSQL backend PID of the session holding the lead."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND"
                           " objid = %s AND granted", (LOCK_KEY,)).fetchone()
    return row[0]


# --- the store ---

async def test_store_keeps_a_group_and_gives_it_back_when_taking_the_lead(pg_url):
    store = PgStore(pg_url, event_log_size=2)
    try:
        assert await store.try_lead("tcp://a:1")
        with store.records() as records:
            assert records == {} and store.last_seq() == 0
        await store.write([("reservation", "r1", {"id": "r1"}), ("reservation", "r2", {"x": 2})],
                          [{"seq": s, "topic": "t"} for s in (1, 2, 3)],
                          [("alice", "q1", 10.0, b"d", b"reply")], keep_events=2,
                          audit=[{"seq": 1, "time": 5.0, "user": "alice", "ids": ["r1"]}])
        await store.write([("reservation", "r2", None)], [], [], keep_events=2,
                          dropped_replies=[("alice", "nope")])
        assert [e["ids"] for e in await store.read_audit(None, None, None, "r1", 10)] == [["r1"]]
        assert await store.read_audit(None, None, "bob", None, 10) == []
    finally:
        await store.close()
    again = PgStore(pg_url, event_log_size=2)
    try:
        assert await again.try_lead("tcp://b:1")
        with again.records() as records:
            assert {k: list(v) for k, v in records.items()} == {"reservation": [{"id": "r1"}]}
        assert again.load_events(2) == [{"seq": 2, "topic": "t"}, {"seq": 3, "topic": "t"}]
        assert again.last_seq() == 3 and again.last_audit_seq() == 1
        assert again.load_replies(5.0) == [("alice", "q1", 10.0, b"d", b"reply")]
        assert again.load_replies(11.0) == []
    finally:
        await again.close()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT version FROM schema_migrations").fetchall() == [
            (SCHEMA_VERSION,)]
        assert conn.execute("SELECT endpoint FROM leader").fetchone() == ("tcp://b:1",)


async def test_a_group_that_fails_part_way_commits_nothing_and_ends_the_session(pg_url):
    """A group is one transaction, though it goes out in one pipeline: a statement that
    fails after the record's upsert (an event seq already there) leaves the upsert undone,
    and the session is not written on again."""
    store = PgStore(pg_url, event_log_size=10)
    try:
        assert await store.try_lead("tcp://a:1")
        await store.write([], [{"seq": 1, "topic": "t"}], [], keep_events=10)
        with pytest.raises(psycopg.errors.UniqueViolation):
            await store.write([("reservation", "r1", {"id": "r1"})],
                              [{"seq": 1, "topic": "t"}], [], keep_events=10)
        with pytest.raises(SessionLost):
            await store.write([("reservation", "r2", {"id": "r2"})], [], [], keep_events=10)
    finally:
        await store.close()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT kind, key FROM records").fetchall() == []
        assert conn.execute("SELECT seq FROM events").fetchall() == [(1,)]


async def test_only_one_store_holds_the_lead(pg_url):
    first, second = PgStore(pg_url, 10), PgStore(pg_url, 10)
    try:
        assert await first.try_lead("tcp://a:1")
        assert not await second.try_lead("tcp://b:1")
        assert await second.leader() == "tcp://a:1"
        await first.close()     # its session ends: the lock is free once its backend exits
        deadline = time.monotonic() + 5
        while not await second.try_lead("tcp://b:1"):
            assert time.monotonic() < deadline, "the lock was not let go"
            await asyncio.sleep(0.01)
        with pytest.raises(SessionLost):        # and it opens no new one to write on
            await first.write([("reservation", "r", {})], [], [], 10)
    finally:
        await first.close()
        await second.close()


@pytest.mark.parametrize("setup, why", [
    ("CREATE TABLE payroll (id INT)", "not an atsd database (tables: payroll)"),
    (f"CREATE TABLE schema_migrations (version INT, applied FLOAT, description TEXT);"
     f"INSERT INTO schema_migrations VALUES ({SCHEMA_VERSION + 1}, 0, 'future')",
     f"schema {SCHEMA_VERSION + 1} is newer than this atsd's"),
])
def test_a_database_atsd_cannot_use_stops_it_and_is_left_as_it_is(pg_url, tmp_path, setup,
                                                                   why):
    with psycopg.connect(pg_url) as conn:
        for statement in setup.split(";"):
            conn.execute(statement)
    d = Daemon(tmp_path, pg_config(pg_url))
    done = subprocess.run([sys.executable, "-m", "atsd", "--config", str(d.config_path),
                           "--listen", d.listen, "--events", d.events], capture_output=True,
                          text=True, env=cli_env(), timeout=60)
    assert done.returncode == 2
    assert why in done.stderr.splitlines()[-1]
    with psycopg.connect(pg_url) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert "records" not in tables


def test_state_takes_only_sqlite_files_and_postgresql_urls(tmp_path):
    from atsd.config import ConfigError, load
    path = tmp_path / "atsd.yaml"
    path.write_text("state: mysql://db/atsd\n")
    with pytest.raises(ConfigError, match="state: 'mysql' URLs are not a state atsd can use"):
        load(path)
    path.write_text("state: postgresql://atsd@db.example/atsd\n")
    assert load(path).state == "postgresql://atsd@db.example/atsd"


# --- leader and standby ---

def test_a_wildcard_listen_address_is_advertised_by_the_host_name():
    host = socket.getfqdn()
    assert advertised("tcp://0.0.0.0:5555") == f"tcp://{host}:5555"
    assert advertised("tcp://[::]:5555") == f"tcp://{host}:5555"
    assert advertised("tcp://10.0.0.11:5555") == "tcp://10.0.0.11:5555"


def test_standby_names_the_leader_and_serves_nothing_else(pg_url, daemon_factory):
    leader = daemon_factory(pg_config(pg_url), name="a")
    standby = daemon_factory(pg_config(pg_url), name="b", role="standby")
    with leader.client() as c, standby.client() as s:
        pre = book(c, 0, time.time())
        assert s.get_version()["role"] == "standby" and c.get_version()["role"] == "leader"
        wait_for(lambda: "leader" in refusal(standby, "list_reservations"),
                 what="the standby to learn who leads")
        for command, args in (("list_reservations", {}), ("release_reservation",
                                                          {"reservation_id": pre})):
            reply = refusal(standby, command, **args)
            assert reply["error"]["code"] == "standby"
            assert reply["leader"] == leader.listen
        assert pre in reservation_ids(c)          # the refused release changed nothing


def test_standby_takes_over_a_killed_leader_with_everything_it_acknowledged(pg_url,
                                                                            daemon_factory):
    leader = daemon_factory(pg_config(pg_url), name="a")
    standby = daemon_factory(pg_config(pg_url), name="b", role="standby")
    t0 = time.time()
    with leader.client() as c:
        booked = {book(c, i, t0) for i in range(20)}
        seqs = event_seqs(c)
    leader.kill()                                   # SIGKILL
    killed = time.monotonic()
    wait_for(lambda: standby.role() == "leader", TAKEOVER_S, what="the standby to lead")
    assert time.monotonic() - killed < TAKEOVER_S
    with standby.client() as s:
        assert reservation_ids(s) == booked
        booked.add(book(s, 20, t0))
        after = event_seqs(s)
        assert after[:len(seqs)] == seqs
        assert after == list(range(after[0], after[0] + len(after)))     # no gap
        assert len(after) > len(seqs)
    leader.start(role="standby")                   # the old leader comes back as a standby
    assert refusal(leader, "list_reservations")["error"]["code"] == "standby"
    with standby.client() as s:
        assert reservation_ids(s) == booked


def test_a_stopped_leader_hands_over_what_it_had(pg_url, daemon_factory):
    """SIGTERM: the leader commits what it has, ends its session, and the standby leads."""
    leader = daemon_factory(pg_config(pg_url), name="a")
    standby = daemon_factory(pg_config(pg_url), name="b", role="standby")
    with leader.client() as c:
        booked = {book(c, i, time.time()) for i in range(3)}
    assert leader.stop() == 0
    wait_for(lambda: standby.role() == "leader", TAKEOVER_S, what="the standby to lead")
    with standby.client() as s:
        assert reservation_ids(s) == booked


def test_timers_run_on_after_a_takeover(pg_url, daemon_factory):
    """A pre-reservation lapses at its expire_time on whichever atsd leads then."""
    leader = daemon_factory(pg_config(pg_url, claim_window_s=1.0), name="a")
    standby = daemon_factory(pg_config(pg_url, claim_window_s=1.0), name="b", role="standby")
    with leader.client() as c:
        pre, _, expire = c.request_reservation("dut-2", reservation_duration=60)
    leader.kill()
    wait_for(lambda: standby.role() == "leader", TAKEOVER_S, what="the standby to lead")
    with standby.client() as s:
        wait_for(lambda: not any(r["id"] == pre for r in s.list_reservations()),
                 what="the pre-reservation to lapse")
        ended = [e for e in s.get_events(0, topics=["reservation.status"])["events"]
                 if e["reservation_id"] == pre]
        assert ended[-1]["reason"] == "lapsed" and ended[-1]["ts"] >= expire


# --- fencing ---

PIDFILE_JOB = "#!/bin/sh\necho $$ > \"$ATS_JOB_ID.pid\"\nexec sleep 60\n"


def test_leader_that_loses_its_session_stops_its_jobs(pg_cluster, pg_url, daemon_factory,
                                                      tmp_path):
    """Its reservations may be another leader's now: a local job it runs is stopped at
    once (while the database is away, so nobody leads), and recorded as lost when the lead
    is taken again."""
    jobs = tmp_path / "atsd" / "jobs"
    jobs.mkdir(parents=True)
    (jobs / "hold.sh").write_text(PIDFILE_JOB)
    (jobs / "hold.sh").chmod(0o755)
    d = daemon_factory(pg_config(pg_url, queues={"q": {"backend": "local", "hosts": ["h1"]}},
                                 jobs={"allowed_dirs": ["jobs"], "output_dir": "out",
                                       "run_as": JOB_USER}))
    with d.client() as c:
        rid = c.create_reservation("q", 1, 60)["reservation_id"]
        job = c.submit_job_to_reservation(rid, str(jobs / "hold.sh"))
        pidfile = tmp_path / "atsd" / "out" / f"{job}.pid"
        pid = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(),
                           what="the job to run"))
        # a reply comes after the commit of its group: RUNNING is in the database now
        wait_for(lambda: c.get_job_status(job)["state"] == "RUNNING", what="RUNNING saved")
        pg_cluster.stop()
        try:
            wait_for(lambda: not alive(pid), what="the job to be stopped")
            assert d.role() == "standby"
        finally:
            pg_cluster.start()
        wait_for(lambda: d.role() == "leader", 15, what="the lead to be taken again")
        status = c.get_job_status(job)
        assert status["state"] == "FAILED" and "lost" in status["reason"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

def test_database_gone_refuses_changes_with_unavailable_and_serves_again_when_back(
        pg_cluster, pg_url, daemon_factory):
    d = daemon_factory(pg_config(pg_url))
    with d.client() as c:
        pre = book(c, 0, time.time())
        pg_cluster.stop()
        try:
            def refused():
                try:
                    book(c, 1, time.time())
                except ResourceUnavailable as exc:
                    return exc.reply
            reply = wait_for(refused, what="a change to be refused")
            assert reply["error"]["code"] == "unavailable"
            # nothing is served from memory meanwhile, not even a read
            assert refusal(d, "list_reservations")["error"]["code"] == "unavailable"
            assert d.role() == "standby"
        finally:
            pg_cluster.start()
        wait_for(lambda: d.role() == "leader", 15, what="the lead to be taken again")
        assert reservation_ids(c) == {pre}
        assert len(reservation_ids(c) | {book(c, 2, time.time())}) == 2


def test_leader_whose_session_is_terminated_stops_serving_from_memory(pg_url,
                                                                      daemon_factory):
    leader = daemon_factory(pg_config(pg_url), name="a")
    standby = daemon_factory(pg_config(pg_url), name="b", role="standby")
    t0 = time.time()
    with leader.client() as c, standby.client() as s:
        first = book(c, 0, t0)
        with psycopg.connect(pg_url) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (leader_backend(pg_url),))
        # its next session check (at most atsd.leader.CHECK_S later) finds it gone
        wait_for(lambda: '"lead_lost"' in leader.log(), what="the leader to notice")

        def one_leads():
            roles = {leader.role(), standby.role()}
            return roles == {"leader", "standby"} and roles
        wait_for(one_leads, TAKEOVER_S, what="one atsd to lead again")
        (new, old) = (s, leader) if standby.role() == "leader" else (c, standby)
        second = book(new, 1, t0)
        assert reservation_ids(new) == {first, second}
        # the other one answers nothing from what it had in memory
        wait_for(lambda: refusal(old, "list_reservations")["error"]["code"] == "standby",
                 what="the other to see the database again")
        assert refusal(old, "release_reservation",
                       reservation_id=first)["error"]["code"] == "standby"
        assert reservation_ids(new) == {first, second}
