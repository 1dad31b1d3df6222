"""SIGHUP and ``atsclient reload``: the config file applied whole, or refused with the old
one kept and the conflicting resources and reservations named."""

from __future__ import annotations

import copy
import json
import shutil
import signal
import threading

import pytest
import yaml

from atsclient import ATSClient, Conflict, Forbidden
from atsclient.security import write_keypair
from daemon import wait_for
from test_security import CurveLab


def rewrite(d, change) -> dict:
    config = copy.deepcopy(d.config)
    change(config)
    d.config_path.write_text(yaml.safe_dump(config))
    return config


def resources(client) -> dict:
    return {r["name"]: r["slots"] for r in client.call("list_resources")["resources"]}


def log_events(d, name: str) -> list[dict]:
    return [e for e in map(json.loads, d.log_path.read_text().splitlines())
            if e["event"] == name]


def test_sighup_applies_resources_and_admins(daemon):
    d = daemon
    alice, bob = d.client("alice"), d.client("bob")
    held = alice.call("request_reservation", resource="build-1", reservation_mode="shared",
                      slots=2, reservation_duration=600)
    with pytest.raises(Forbidden):
        bob.get_stats()

    def change(config):
        config["resources"] = [r for r in config["resources"] if r["name"] != "scope-1"]
        config["resources"] += [{"name": "dut-3", "type": "dut"}]
        next(r for r in config["resources"] if r["name"] == "build-1")["slots"] = 2
        config["security"]["admins"] = ["labadmin", "bob"]
        config["claim_window_s"] = 120
    rewrite(d, change)
    d.proc.send_signal(signal.SIGHUP)
    [done] = wait_for(lambda: log_events(d, "config_reloaded"), what="the reload")
    assert done["added"] == ["dut-3"] and done["removed"] == ["scope-1"]
    assert done["resized"] == {"build-1": [4, 2]}
    assert done["settings"] == ["admins", "claim_window_s"]
    assert resources(alice) == {"dut-1": 1, "dut-2": 1, "build-1": 2, "dut-3": 1}
    assert bob.get_stats()["reservations"] == {"RESERVATION_GRANTED": 1}    # admin now
    assert alice.call("claim_reservation", pre_reservation_id=held["pre_reservation_id"])
    got = alice.call("request_reservation", resource="dut-3", reservation_duration=600)
    assert got["expire_time"] - got["time_available"] == pytest.approx(120, abs=1)
    assert d.proc.poll() is None
    alice.close(), bob.close()


def test_conflicting_change_is_refused_naming_resources_and_reservations(daemon):
    d = daemon
    alice, admin = d.client("alice"), d.client("labadmin")
    shared = alice.call("request_reservation", resource="build-1", reservation_mode="shared",
                        slots=3, reservation_duration=600)["pre_reservation_id"]
    on_dut = alice.call("request_reservation", resource="dut-1",
                        reservation_duration=600)["pre_reservation_id"]
    before = resources(alice)

    def change(config):
        config["resources"] = [r for r in config["resources"] if r["name"] != "dut-1"]
        next(r for r in config["resources"] if r["name"] == "build-1")["slots"] = 2
        config["resources"] += [{"name": "dut-3"}]
    rewrite(d, change)
    with pytest.raises(Conflict) as err:
        admin.reload()
    message = err.value.message
    assert f"resource dut-1 is removed but reservations {on_dut} hold it" in message
    assert f"resource build-1 would have 2 slots but reservations {shared} hold 3" in message
    assert resources(alice) == before               # none of it applied, not even dut-3

    d.proc.send_signal(signal.SIGHUP)               # the same by signal: logged, still up
    [refused] = wait_for(lambda: log_events(d, "config_reload_refused"), what="the refusal")
    assert on_dut in refused["reason"] and shared in refused["reason"]
    assert resources(alice) == before and d.proc.poll() is None

    out = d.cli("reload", user="labadmin")
    assert out.returncode == 1 and out.stderr.startswith("atsclient: conflict: config not "
                                                          "reloaded: ")
    with pytest.raises(Forbidden):
        alice.reload()
    # once the reservations are gone the same file applies
    alice.call("release_reservation", reservation_id=shared)
    alice.call("release_reservation", reservation_id=on_dut)
    out = d.cli("reload", user="labadmin")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "reloaded: added dut-3; removed dut-1; resized build-1 4->2\n"
    alice.close(), admin.close()


def test_settings_that_need_a_restart_and_bad_files_are_refused(daemon):
    admin = daemon.client("labadmin")
    rewrite(daemon, lambda c: c.update(fsync=True))
    with pytest.raises(Conflict, match="fsync change only with a restart"):
        admin.reload()
    daemon.config_path.write_text("resources: [unclosed")
    with pytest.raises(Conflict, match="not valid YAML"):
        admin.reload()
    assert admin.get_stats()["uptime_s"] > 0
    admin.close()


def test_removed_key_is_refused_on_an_open_connection_after_reload(daemon_factory, tmp_path):
    lab = CurveLab(daemon_factory, tmp_path)
    try:
        bob, admin = lab.client("bob"), lab.client("labadmin")
        assert bob.get_version()["ok"]          # bob's connection is open
        (lab.authorized / "bob.key").unlink()
        assert admin.reload()["added"] == []
        with pytest.raises(Forbidden, match="no longer authorized: it was removed or replaced"):
            bob.get_version()
        assert admin.get_version()["ok"]
    finally:
        lab.close()


def test_replaced_key_is_refused_on_an_open_connection_after_reload(daemon_factory, tmp_path):
    """bob.key now holds a new key: the connection opened with the old one is refused,
    though the user name is still on file; the new key works."""
    lab = CurveLab(daemon_factory, tmp_path)
    try:
        bob, admin = lab.client("bob"), lab.client("labadmin")
        assert bob.get_version()["ok"]          # bob's connection is open, with the old key
        write_keypair(tmp_path / "new", "bob")
        shutil.copy(tmp_path / "new" / "bob.key", lab.authorized / "bob.key")
        assert admin.reload()["added"] == []
        with pytest.raises(Forbidden, match="no longer authorized: it was removed or replaced"):
            bob.call("request_reservation", resource="dut-1", reservation_duration=60)
        assert admin.list_reservations() == []
        renewed = ATSClient(lab.daemon.listen, user="bob", server_public_key=lab.server_key,
                            secret_key=tmp_path / "new" / "bob.key_secret")
        lab.clients.append(renewed)
        rid = renewed.request_reservation("dut-1", reservation_duration=60)[0]
        assert [(r["id"], r["owner"]) for r in admin.list_reservations()] == [(rid, "bob")]
    finally:
        lab.close()


def test_waiting_checkout_carries_over_and_gets_the_slots_a_reload_adds(daemon_factory):
    d = daemon_factory({"resources": [{"name": "gpus/0", "type": "gpus", "slots": 1}],
                        "security": {"admins": ["labadmin"]}})
    alice, admin = d.client("alice"), d.client("labadmin")
    alice.checkout([{"type": "gpus", "slots": 1}], lease_s=600)
    waited = {}

    def bob_waits():
        with d.client("bob", timeout=30) as bob:
            waited["reply"] = bob.checkout([{"type": "gpus", "slots": 1}], wait_s=30)
    waiter = threading.Thread(target=bob_waits)
    waiter.start()
    wait_for(lambda: admin.get_stats()["waiting"], what="bob to wait")
    rewrite(d, lambda c: c["resources"][0].update(slots=2))
    assert admin.reload()["resized"] == {"gpus/0": [1, 2]}
    waiter.join(10)
    assert waited["reply"]["resources"] == {"gpus": [{"id": "0", "slots": 1}]}
    alice.close(), admin.close()
