"""CURVE identities, roles and ownership, through a real daemon with CURVE on."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest
import zmq
import zmq.auth

from atsclient import ATSClient, Forbidden, Unreachable
from atsclient.security import write_keypair
from atsd import config as configmod
from atsd.commands import load_all
from daemon import BASE_CONFIG, JOB_USER, wait_for

ROOT = Path(__file__).resolve().parents[1]
USERS = ("alice", "bob", "labadmin")


class CurveLab:
    """A daemon with CURVE on; alice, bob and labadmin (an admin) authorized, mallory not."""

    def __init__(self, daemon_factory, tmp_path: Path) -> None:
        self.home = tmp_path / "atsd"                 # the daemon's directory
        self.keys = tmp_path / "keys"                 # the clients' secret keys
        self.authorized = self.home / "clients.d"
        self.authorized.mkdir(parents=True)
        write_keypair(self.home, "server")
        for user in USERS + ("mallory", "carol"):
            write_keypair(self.keys, user)
        for user in USERS:
            shutil.copy(self.keys / f"{user}.key", self.authorized / f"{user}.key")
        self.server_key = self.home / "server.key"
        self.daemon = daemon_factory({
            **BASE_CONFIG,
            "resources": BASE_CONFIG["resources"] + [{"name": "gpus/0", "type": "gpus",
                                                      "slots": 4}],
            "queues": {"debug": {"backend": "local", "hosts": ["h1", "h2"]}},
            "jobs": {"run_as": JOB_USER},
            "security": {"admins": ["labadmin"],
                         "curve": {"secret_key": "server.key_secret",
                                   "authorized_keys": "clients.d"}}})
        self.clients: list[ATSClient] = []

    def client(self, user: str, **kw) -> ATSClient:
        c = ATSClient(self.daemon.listen, user=user, server_public_key=self.server_key,
                      secret_key=self.keys / f"{user}.key_secret", **kw)
        self.clients.append(c)
        return c

    def state(self, observer: ATSClient) -> tuple:
        return (observer.list_reservations(), observer.get_events(0, limit=1)["last_seq"])

    def close(self) -> None:
        for c in self.clients:
            c.close()


@pytest.fixture
def lab(daemon_factory, tmp_path):
    lab = CurveLab(daemon_factory, tmp_path)
    yield lab
    lab.close()


def test_unknown_key_gets_no_reply_and_changes_nothing(lab):
    alice = lab.client("alice")
    alice.request_reservation("dut-1", reservation_duration=60)
    before = lab.state(alice)
    mallory = lab.client("mallory", timeout=0.5, retries=1)
    with pytest.raises(Unreachable):
        mallory.request_reservation("dut-2", reservation_duration=60)
    # the handshake was refused by the authenticator, not merely slow
    wait_for(lambda: "unknown_key" in lab.daemon.log(), what="the key to be refused")
    plain = ATSClient(lab.daemon.listen, user="alice", timeout=0.5, retries=1)
    with pytest.raises(Unreachable):
        plain.release_reservation(before[0][0]["id"])
    plain.close()
    assert lab.state(alice) == before


def test_user_comes_from_the_key_not_the_request(lab):
    alice = lab.client("alice")
    pre = alice.call("request_reservation", resource="dut-1", user="bob")["pre_reservation_id"]
    assert [r["owner"] for r in alice.list_reservations()] == ["alice"]
    bob = lab.client("bob")
    with pytest.raises(Forbidden):
        bob.call("release_reservation", reservation_id=pre, user="alice")
    with pytest.raises(Forbidden):
        alice.call("revoke", nodelist=[{"node_id": "scope-1"}], max_wait_time=0,
                   user="labadmin")


def test_users_are_refused_every_admin_command(lab):
    alice = lab.client("alice")
    admin_only = sorted(name for name, cmd in load_all().items() if cmd.admin)
    assert {"revoke", "restore", "set_resource_values"} <= set(admin_only)
    for name in admin_only:
        with pytest.raises(Forbidden):
            alice.call(name)          # refused before its arguments are even looked at
    with pytest.raises(Forbidden):
        alice.call("request_reservation", resource="dut-1", maintenance=True)
    assert alice.list_reservations() == []


def test_admin_key_gets_admin_commands(lab):
    admin = lab.client("labadmin")
    alice = lab.client("alice")
    pre, _, _ = alice.request_reservation("dut-1", reservation_duration=600)
    assert admin.release_reservation(pre) is True          # anyone's booking
    admin.call("set_resource_values", nodelist=[{"node_id": "scope-1", "value": 0.5}])
    assert {"node_id": "scope-1", "value": 0.5} in admin.call("get_resource_values")["nodelist"]
    admin.call("revoke", nodelist=[{"node_id": "scope-1"}], max_wait_time=0)
    assert admin.call("restore", nodelist=[{"node_id": "scope-1"}])["restored"] == ["scope-1"]
    maint = admin.call("request_reservation", resource="dut-2", maintenance=True,
                       reservation_duration=60)
    assert [r["kind"] for r in admin.list_reservations(resource="dut-2")] == ["maintenance"]
    assert maint["pre_reservation_id"]


def test_one_user_cannot_touch_another_users_bookings(lab):
    alice, bob, admin = lab.client("alice"), lab.client("bob"), lab.client("labadmin")
    pre, _, _ = alice.request_reservation("dut-1", reservation_duration=600)
    claimed, _, _ = alice.request_reservation("dut-2", reservation_duration=600)
    alice.claim_reservation(claimed)
    alloc = alice.checkout([{"type": "gpus", "slots": 1}])["allocation_id"]
    batch = alice.call("create_reservation", queue_id="debug", host_count=1, wall_time=600,
                       start_time=time.time() + 600)["reservation_id"]
    admin.call("revoke", nodelist=[{"node_id": "dut-2"}], max_wait_time=3600)
    before = lab.state(alice)

    attempts = [
        ("claim_reservation", {"pre_reservation_id": pre}),
        ("release_reservation", {"reservation_id": pre}),
        ("release_reservation", {"reservation_id": claimed}),
        ("extend_reservation", {"reservation_id": claimed, "extra_s": 60}),
        ("extend_reservation", {"reservation_id": alloc, "extra_s": 60}),
        ("release_reservation", {"reservation_id": alloc}),
        ("checkin", {"allocation_id": alloc}),
        ("ack_delete_pending", {"nodelist": [{"node_id": "dut-2"}]}),
        ("cancel_reservation", {"reservation_id": batch}),
        ("submit_job_to_reservation", {"reservation_id": batch, "job_script": "/bin/true"}),
        ("release_reservation", {"reservation_id": batch}),
    ]
    for name, args in attempts:
        with pytest.raises(Forbidden):
            bob.call(name, **args)
    assert lab.state(alice) == before
    # and the owner may do each of them
    assert alice.extend_reservation(claimed, 60)
    assert alice.checkin(alloc) is True
    acked = alice.call("ack_delete_pending", nodelist=[{"node_id": "dut-2"}])
    assert acked["acknowledged"] == ["dut-2"]
    assert alice.release_reservation(pre) is True
    assert alice.call("cancel_reservation", reservation_id=batch)["cancelled"] is True


def test_events_reach_authorized_subscribers_only(lab):
    alice = lab.client("alice")
    ctx = zmq.Context.instance()

    def subscriber(user):
        sub = ctx.socket(zmq.SUB)
        sub.linger = 0
        sub.curve_serverkey = zmq.auth.load_certificate(lab.server_key)[0]
        sub.curve_publickey, sub.curve_secretkey = zmq.auth.load_certificate(
            lab.keys / f"{user}.key_secret")
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(lab.daemon.events)
        return sub

    bob, mallory = subscriber("bob"), subscriber("mallory")
    try:
        def event_seen():
            pre, _, _ = alice.request_reservation("scope-1", reservation_duration=60)
            alice.release_reservation(pre)
            return bob.poll(100)
        wait_for(event_seen, what="bob's subscription")   # slow joiner: PUB drops until then
        topic, payload = bob.recv_multipart()
        assert topic == b"reservation.status" and msgpack.unpackb(payload)["owner"] == "alice"
        assert mallory.poll(200) == 0
    finally:
        bob.close()
        mallory.close()


def test_keys_are_read_at_each_handshake(lab):
    carol = lab.client("carol", timeout=0.5, retries=1)
    with pytest.raises(Unreachable):
        carol.get_version()
    shutil.copy(lab.keys / "carol.key", lab.authorized / "carol.key")
    carol = lab.client("carol")
    pre, _, _ = carol.request_reservation("dut-1")
    assert [r["owner"] for r in carol.list_reservations()] == ["carol"]
    (lab.authorized / "carol.key").unlink()
    late = lab.client("carol", timeout=0.5, retries=1)
    with pytest.raises(Unreachable):
        late.get_version()


def test_replaced_key_is_refused_on_an_open_connection_from_the_next_handshake(lab, tmp_path):
    """bob's key file now holds a new key: once any client's handshake has read the
    directory again, the connection opened with the old key is refused."""
    bob = lab.client("bob")
    assert bob.get_version()["ok"]
    write_keypair(tmp_path / "new", "bob")
    shutil.copy(tmp_path / "new" / "bob.key", lab.authorized / "bob.key")
    renewed = ATSClient(lab.daemon.listen, user="bob", server_public_key=lab.server_key,
                        secret_key=tmp_path / "new" / "bob.key_secret")
    lab.clients.append(renewed)
    assert renewed.get_version()["ok"]
    with pytest.raises(Forbidden, match="no longer authorized: it was removed or replaced"):
        bob.get_version()


def _cli(*args, env):
    return subprocess.run([sys.executable, "-m", "atsclient", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT),
                                                      **env})


def test_cli_finds_keys_in_options_environment_and_config_dir(lab, tmp_path):
    home = tmp_path / "home"
    config_dir = home / ".config" / "atsclient"
    base = {"HOME": str(home), "USER": "alice", "LOGNAME": "alice",
            "ATSD_SERVER": lab.daemon.listen}
    no_keys = _cli("version", "--timeout", "0.5", "--retries", "1", env=base)
    assert no_keys.returncode == 3 and "no reply" in no_keys.stderr     # unreachable

    by_option = _cli("version", "--server-key", str(lab.server_key),
                     "--key", str(lab.keys / "bob.key_secret"), env=base)
    assert by_option.returncode == 0, by_option.stderr

    by_env = _cli("reserve", "scope-1", "--json", env={
        **base, "ATSCLIENT_SERVER_KEY": str(lab.server_key),
        "ATSCLIENT_KEY": str(lab.keys / "bob.key_secret")})
    assert by_env.returncode == 0, by_env.stderr

    config_dir.mkdir(parents=True)
    shutil.copy(lab.server_key, config_dir / "server.key")
    shutil.copy(lab.keys / "alice.key_secret", config_dir / "alice.key_secret")
    by_dir = _cli("reserve", "dut-1", "--json", env=base)
    assert by_dir.returncode == 0, by_dir.stderr
    owners = {r["resource"]: r["owner"] for r in lab.client("alice").list_reservations()}
    assert owners == {"scope-1": "bob", "dut-1": "alice"}


def test_keygen_writes_private_secret_files_and_never_overwrites(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for prog, name in (("atsd", "server"), ("atsclient", "alice")):
        cmd = [sys.executable, "-m", prog, "keygen", str(tmp_path / prog), "--name", name]
        assert subprocess.run(cmd, env=env, capture_output=True, timeout=60).returncode == 0
        public, secret = tmp_path / prog / f"{name}.key", tmp_path / prog / f"{name}.key_secret"
        assert secret.stat().st_mode & 0o777 == 0o600
        assert public.stat().st_mode & 0o777 == 0o644
        pub, sec = zmq.auth.load_certificate(secret)
        assert zmq.auth.load_certificate(public) == (pub, None)
        assert zmq.curve_public(sec) == pub
        again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        assert again.returncode != 0 and "not overwriting" in again.stderr
        assert zmq.auth.load_certificate(secret) == (pub, sec)


def test_config_refuses_a_public_key_as_the_secret_key(tmp_path):
    write_keypair(tmp_path, "server")
    (tmp_path / "clients.d").mkdir()
    path = tmp_path / "atsd.yaml"
    path.write_text("security:\n  curve: {secret_key: server.key, authorized_keys: clients.d}\n")
    with pytest.raises(configmod.ConfigError) as err:
        configmod.load(path)
    assert err.value.key == "security.curve.secret_key"
    assert "no secret key" in err.value.reason
