"""State that is not ours, or not sound, is refused at the start, by name: a state file
another atsd holds, and records the daemon cannot read back (damaged in a real SQLite file)."""

from __future__ import annotations

import re
import sqlite3

import msgpack
import pytest

from daemon import BASE_CONFIG, Daemon


def test_second_daemon_on_the_same_state_file_refuses_to_start(tmp_path):
    first = Daemon(tmp_path / "first").start()
    try:
        c = first.client("alice")
        pre = c.call("request_reservation", resource="dut-1")["pre_reservation_id"]
        second = Daemon(tmp_path / "second", {**BASE_CONFIG, "state": str(first.state)})
        with pytest.raises(AssertionError, match=f"{first.state}: in use by another atsd "
                                                 rf"\(PID {first.proc.pid}, lock "):
            second.start(timeout=10)
        # the first one is untouched and still writes
        c.call("release_reservation", reservation_id=pre)
        assert c.call("request_reservation", resource="dut-1")["pre_reservation_id"]
        c.close()
        first.kill()                     # however it dies, the lock goes with it
        second.start()
        second.kill()
    finally:
        first.kill()


def _rows(state) -> list:
    con = sqlite3.connect(state)
    try:
        return con.execute("SELECT kind, key, data FROM records ORDER BY kind, key").fetchall()
    finally:
        con.close()


def _damage(state, kind: str, key: str, data) -> None:
    con = sqlite3.connect(state)
    with con:
        con.execute("UPDATE records SET data=? WHERE kind=? AND key=?", (data, kind, key))
    con.close()


def _without(field: str):
    def damage(record: bytes) -> bytes:
        rec = msgpack.unpackb(record, raw=False)
        del rec[field]
        return msgpack.packb(rec, use_bin_type=True)
    return damage


@pytest.mark.parametrize("damage, why", [
    (_without("bookings"), "missing field 'bookings'"),
    (_without("state"), "missing .*'state'"),
    (lambda record: b"\xc1" + record, "not valid msgpack"),
    (lambda record: record[:len(record) // 2], "not valid msgpack"),        # cut short
    (lambda record: msgpack.packb([1, 2, 3]), "TypeError"),     # not a record at all
])
def test_damaged_record_refuses_startup_naming_it(tmp_path, daemon_factory, damage, why):
    d = daemon_factory(name="d")
    c = d.client("alice")
    pre = c.call("request_reservation", resource="dut-1", reservation_duration=600)
    rid = pre["pre_reservation_id"]
    c.close()
    d.stop()
    [(_, _, record)] = [r for r in _rows(d.state) if r[:2] == ("reservation", rid)]
    _damage(d.state, "reservation", rid, damage(record))
    before = _rows(d.state)
    with pytest.raises(AssertionError) as err:
        d.start(timeout=10)
    message = str(err.value)
    assert (f"{d.state}: damaged record in table records, kind 'reservation', key '{rid}': "
            in message), message
    assert "left as it is" in message and "Traceback" not in message
    assert re.search(why, message), message
    assert _rows(d.state) == before


def test_damaged_event_refuses_startup_naming_it(tmp_path, daemon_factory):
    d = daemon_factory(name="d")
    c = d.client("alice")
    c.call("request_reservation", resource="dut-1")
    c.close()
    d.stop()
    con = sqlite3.connect(d.state)
    with con:
        seq = con.execute("SELECT max(seq) FROM events").fetchone()[0]
        con.execute("UPDATE events SET data=? WHERE seq=?", (b"\xc1", seq))
    con.close()
    with pytest.raises(AssertionError, match=f"{d.state}: damaged record in table events, "
                                             f"seq {seq}: "):
        d.start(timeout=10)
