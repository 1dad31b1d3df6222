"""The audit trail over the wire: every accepted change and every forbidden attempt is
recorded (with the CURVE key when CURVE is on), read back with get_audit (admins: all;
users: their own), kept across restarts, trimmed by age and count, logged, and shown by
``atsclient audit``."""

import json
import time

import pytest

from atsclient import Forbidden, NotFound
from daemon import BASE_CONFIG, wait_for
from test_security import lab  # noqa: F401  (the CURVE lab fixture)


def _story(d):
    """alice books, claims, extends and releases dut-1; bob tries to release it and to
    revoke; the admin revokes and restores scope-1. Returns alice's reservation id."""
    with d.client("alice") as alice, d.client("bob") as bob, d.client("labadmin") as admin:
        pre, _, _ = alice.request_reservation("dut-1", reservation_duration=600)
        rid = alice.claim_reservation(pre)["reservation_id"]
        alice.extend_reservation(rid, 60)
        with pytest.raises(Forbidden):
            bob.release_reservation(rid)
        with pytest.raises(Forbidden):
            bob.revoke(["scope-1"], 0)
        alice.get_version()                     # a read: not audited
        with pytest.raises(NotFound):
            alice.extend_reservation("nope", 60)    # refused, not forbidden: not audited
        alice.release_reservation(rid)
        admin.revoke(["scope-1"], 0)
        admin.restore(["scope-1"])
    return rid


def _rows(entries):
    return [(e["user"], e["command"], e["outcome"]) for e in entries]


STORY = [("alice", "request_reservation", "ok"), ("alice", "claim_reservation", "ok"),
         ("alice", "extend_reservation", "ok"), ("bob", "release_reservation", "forbidden"),
         ("bob", "revoke", "forbidden"), ("alice", "release_reservation", "ok"),
         ("labadmin", "revoke", "ok"), ("labadmin", "restore", "ok")]


def test_changes_and_forbidden_attempts_are_audited_and_survive_a_crash(daemon_factory,
                                                                        store_config):
    daemon = daemon_factory({**BASE_CONFIG, **store_config})
    t0 = time.time()
    rid = _story(daemon)
    with daemon.client("labadmin") as admin:
        everything = admin.get_audit()
        assert _rows(everything) == STORY
        assert all(t0 <= e["time"] <= time.time() for e in everything)
        assert [e["seq"] for e in everything] == list(range(1, 9))
        assert "key" not in everything[0]                       # no CURVE, no key
        release = everything[3]
        assert rid in release["ids"] and "dut-1" in release["ids"]
        assert everything[4]["ids"] == ["scope-1"]              # what bob tried to take
        assert _rows(admin.get_audit(actor="bob")) == STORY[3:5]
        assert _rows(admin.get_audit(resource="dut-1")) == STORY[:4] + STORY[5:6]
        assert _rows(admin.get_audit(resource=rid, limit=2)) == STORY[:2]
        middle = everything[2]["time"]
        assert _rows(admin.get_audit(since=middle, until=everything[5]["time"])) == STORY[2:5]
    with daemon.client("alice") as alice:
        mine = [r for r in STORY if r[0] == "alice"]
        assert _rows(alice.get_audit()) == mine
        assert _rows(alice.get_audit(actor="alice")) == mine
        with pytest.raises(Forbidden, match="admins"):
            alice.get_audit(actor="bob")
    log = [json.loads(line) for line in daemon.log_path.read_text().splitlines()
           if '"event": "audit"' in line]
    refused = [("alice", "get_audit", "forbidden")]      # a forbidden attempt too
    assert [(e["user"], e["command"], e["outcome"]) for e in log] == STORY + refused
    assert all(e["level"] == "info" for e in log)
    daemon.restart()                                            # SIGKILL, then start
    with daemon.client("labadmin") as admin:
        after = admin.get_audit()
        assert after[:8] == everything and _rows(after[8:]) == refused


def test_audit_is_trimmed_by_age_and_by_count(daemon_factory, store_config):
    d = daemon_factory({**BASE_CONFIG, **store_config, "audit_max_entries": 3})
    with d.client("alice") as alice:
        for _ in range(6):
            pre, _, _ = alice.request_reservation("build-1", reservation_duration=60)
            alice.release_reservation(pre)
        # trimmed at start, every 10 minutes and each time 1% of the bound came
        assert [e["seq"] for e in alice.get_audit()] == [10, 11, 12]
    d.restart()
    with d.client("alice") as alice:
        assert [e["seq"] for e in alice.get_audit()] == [10, 11, 12]
        newest = alice.get_audit()[-1]["time"]
    d.stop()
    d.config["audit_retention_s"] = 0.5
    d.config_path.write_text(json.dumps(d.config))
    wait_for(lambda: time.time() > newest + 0.5, what="the entries to age")
    d.start()
    with d.client("alice") as alice:
        assert alice.get_audit() == []


def test_audit_records_the_curve_key(lab):  # noqa: F811
    alice, bob, admin = lab.client("alice"), lab.client("bob"), lab.client("labadmin")
    pre, _, _ = alice.request_reservation("dut-1", reservation_duration=60)
    with pytest.raises(Forbidden):
        bob.release_reservation(pre)
    entries = admin.get_audit()
    public = {u: (lab.keys / f"{u}.key").read_text() for u in ("alice", "bob")}
    assert [(e["user"], e["outcome"]) for e in entries] == [("alice", "ok"),
                                                            ("bob", "forbidden")]
    for e in entries:
        assert len(e["key"]) == 40 and e["key"] in public[e["user"]]


def test_cli_audit(daemon):
    _story(daemon)
    out = daemon.cli("audit", "--json", user="labadmin")
    assert out.returncode == 0, out.stderr
    assert _rows(json.loads(out.stdout)) == STORY
    out = daemon.cli("audit", "--resource", "scope-1", user="labadmin")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["TIME", "USER", "COMMAND", "OUTCOME", "IDS"]
    assert [line.split()[3:6] for line in lines[1:]] == [
        ["bob", "revoke", "forbidden"], ["labadmin", "revoke", "ok"],
        ["labadmin", "restore", "ok"]]
    out = daemon.cli("audit", "--actor", "labadmin", user="bob")
    assert out.returncode == 1 and out.stderr.startswith("atsclient: forbidden:")
    assert len(out.stderr.splitlines()) == 1
