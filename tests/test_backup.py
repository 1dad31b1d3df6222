"""Backups of a running daemon, restores that never let event seq go back, upgrades that say
first what they will do, and a state file that shrinks again (atsd/maintenance.py)."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import threading

import msgpack

from daemon import BASE_CONFIG, Daemon, cli_env, wait_for
from atsd.store import Store


def atsd(d: Daemon, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "atsd", *args, "--config", str(d.config_path)],
                          capture_output=True, text=True, timeout=60, env=cli_env())


def _read(path, sql: str) -> list:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _granted_events(path) -> int:
    """Pre-reservations the file's event log announced (each record's creation commits
    with its event, so a consistent copy has as many of one as of the other)."""
    return sum(msgpack.unpackb(data).get("reservation_status") == "RESERVATION_GRANTED"
               for (data,) in _read(path, "SELECT data FROM events"))


RECORDS = "SELECT kind, key, data FROM records ORDER BY kind, key"


def test_backup_under_load_is_consistent_and_matches_the_live_state(tmp_path, daemon_factory):
    # one user books for as long as the backups take: more than the default quota of 1,000
    # on a slow machine
    d = daemon_factory({**BASE_CONFIG, "limits": {"max_reservations_per_user": 1_000_000}},
                       name="d")
    stop = threading.Event()
    made = []

    def load():
        c = d.client("alice")
        while not stop.is_set():
            made.append(c.call("request_reservation", resource="dut-2",
                               reservation_duration=60)["pre_reservation_id"])
        c.close()
    worker = threading.Thread(target=load)
    worker.start()
    try:
        wait_for(lambda: len(made) > 50, what="load to get going")
        backups = []
        for i in range(3):        # each taken while requests commit
            out = atsd(d, "backup", str(tmp_path / f"b{i}.db"))
            assert out.returncode == 0, out.stderr
            backups.append(tmp_path / f"b{i}.db")
        written_during = len(made)
    finally:
        stop.set()
        worker.join()
    assert len(made) > written_during    # the load did run on after the backups began
    for b in backups:
        assert _read(b, "PRAGMA quick_check") == [("ok",)]
        n = len(_read(b, "SELECT key FROM records WHERE kind='reservation'"))
        assert n == _granted_events(b) > 0
    # quiet now: a backup holds exactly what the live file holds
    out = atsd(d, "backup", str(tmp_path / "quiet.db"))
    assert out.returncode == 0, out.stderr
    assert f"{len(made)} records" in out.stdout
    assert _read(tmp_path / "quiet.db", RECORDS) == _read(d.state, RECORDS)
    d.stop()


def test_restore_refuses_while_running_drops_the_wal_and_keeps_seq_going_up(tmp_path,
                                                                           daemon_factory):
    d = daemon_factory(name="d")
    c = d.client("alice")
    kept = c.call("request_reservation", resource="dut-1", reservation_duration=600)
    assert atsd(d, "backup", str(tmp_path / "b.db")).returncode == 0
    for _ in range(5):        # after the backup: gone once restored
        c.call("request_reservation", resource="dut-2", reservation_duration=600)
    seq_before = c.call("get_events", since_seq=0)["last_seq"]

    out = atsd(d, "restore", str(tmp_path / "b.db"))
    assert out.returncode == 2
    assert f"in use by another atsd (PID {d.proc.pid}" in out.stderr

    d.kill()         # killed: its newest commits are in the WAL beside the file
    assert d.state.with_name(d.state.name + "-wal").stat().st_size > 0
    out = atsd(d, "restore", str(tmp_path / "b.db"))
    assert out.returncode == 0, out.stderr
    assert f"next event seq {seq_before + 1}" in out.stdout
    assert not d.state.with_name(d.state.name + "-wal").exists()

    d.start()
    c = d.client("alice")
    ids = [r["id"] for r in c.call("list_reservations")["reservations"]]
    assert ids == [kept["pre_reservation_id"]]
    c.call("request_reservation", resource="dut-2", reservation_duration=600)
    events = c.call("get_events", since_seq=seq_before)["events"]
    assert events and events[0]["seq"] == seq_before + 1
    c.close()
    d.stop()


def test_restore_refuses_what_is_not_a_backup(tmp_path, daemon_factory):
    d = daemon_factory(name="d")
    d.stop()
    before = d.state.read_bytes()
    (tmp_path / "junk.db").write_bytes(b"not sqlite" * 1000)
    out = atsd(d, "restore", str(tmp_path / "junk.db"))
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert d.state.read_bytes() == before


def test_migrate_dry_run_says_what_would_change_and_changes_nothing(tmp_path):
    d = Daemon(tmp_path / "d")
    con = sqlite3.connect(d.state)      # a version 1 file, from before incremental vacuum
    con.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;"
                      "CREATE TABLE records (kind TEXT, key TEXT, data BLOB,"
                      " PRIMARY KEY (kind, key)) WITHOUT ROWID;"
                      "CREATE TABLE events (seq INTEGER PRIMARY KEY, data BLOB);"
                      "INSERT INTO meta VALUES ('schema_version', 1);")
    con.close()
    before = d.state.read_bytes()
    out = atsd(d, "migrate", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "would do: schema 1 -> 2" in out.stdout
    assert "would do: auto_vacuum -> incremental" in out.stdout
    assert d.state.read_bytes() == before
    assert atsd(d, "migrate").returncode == 0
    assert _read(d.state, "PRAGMA auto_vacuum") == [(2,)]
    assert "up to date" in atsd(d, "migrate", "--dry-run").stdout
    d.start()
    try:
        assert d.client().call("get_version")["ok"]
    finally:
        d.stop()


def test_incremental_vacuum_gives_pages_back(tmp_path):
    store = Store(tmp_path / "s.db")
    big = {"blob": "x" * 2000}
    store.commit([("reservation", str(i), big) for i in range(3000)], [], [], 100)
    full = store.size()["bytes"]
    store.commit([("reservation", str(i), None) for i in range(3000)], [], [], 100)
    assert store.size()["free_bytes"] > full // 2
    store.vacuum_some()
    assert store.size()["bytes"] < full // 2
    store.close()
    shutil.rmtree(tmp_path)
