"""The config file's checks, one by one: each bad value stops the load with the key path
and the reason, in one line (``ConfigError``: ``FILE: KEY: REASON``), and a good file gives
the values it says, resolved where they are paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import zmq.auth

from atsd import config as configmod
from atsd.engine.lab import ResourceDef

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("text, error", [
    ('listen: 5', 'listen: must be a non-empty string, not 5'),
    ("listen: ''", "listen: must be a non-empty string, not ''"),
    ('events: udp://x', "events: 'udp://x' is not a ZeroMQ endpoint like tcp://127.0.0.1:5555"),
    ("state: ''", "state: must be a non-empty string, not ''"),
    ('fsync: 1', 'fsync: must be true or false, not 1'),
    ('claim_window_s: 0', 'claim_window_s: must be more than 0, not 0'),
    ('expiring_notice_s: .nan', 'expiring_notice_s: must be a number, not nan'),
    ('history_s: true', 'history_s: must be a number, not True'),
    ("default_lease_s: '5'", "default_lease_s: must be a number, not '5'"),
    ('countdown_interval_s: -1', 'countdown_interval_s: must be more than 0, not -1'),
    ('audit_retention_s: .inf', 'audit_retention_s: must be a number, not inf'),
    ('event_log_size: 0', 'event_log_size: must be an integer of at least 1, not 0'),
    ('event_hwm: 1.5', 'event_hwm: must be an integer of at least 1, not 1.5'),
    ('max_frame_bytes: true', 'max_frame_bytes: must be an integer of at least 1, not True'),
    ('max_in_flight: -3', 'max_in_flight: must be an integer of at least 1, not -3'),
    ('reply_cache_bytes: x', "reply_cache_bytes: must be an integer of at least 1, not 'x'"),
    ('audit_max_entries: 0', 'audit_max_entries: must be an integer of at least 1, not 0'),
    ('metrics: 5', 'metrics: must be a mapping, not int'),
    ('metrics: {port: 1}', 'metrics.port: unknown key (known: listen)'),
    ('metrics: {listen: 9464}', 'metrics.listen: must be a non-empty string, not 9464'),
    ("metrics: {listen: 'x y:1'}", "metrics.listen: 'x y:1' is not host:port, like 127.0.0.1:9464"),
    ('limits: []', 'limits: must be a mapping, not list'),
    ('limits: {max_depth: 0}', 'limits.max_depth: must be an integer of at least 1, not 0'),
    ('limits: {max_booking_s: -1}', 'limits.max_booking_s: must be more than 0, not -1'),
    ('limits: {max_reservations_per_user: 1.5}',
     'limits.max_reservations_per_user: must be an integer of at least 1, not 1.5'),
    ('resources: {a: 1}', 'resources: must be a list'),
    ('resources: [5]', 'resources[0]: must be a mapping, not int'),
    ("resources: [{name: 'a b'}]",
     "resources[0].name: 'a b' is not a valid name (letters, digits, _ . : / -)"),
    ("resources: [{name: a, type: 'x y'}]",
     "resources[0].type: 'x y' is not a valid name (letters, digits, _ . : / -)"),
    ('resources: [{name: a, config: [1]}]', 'resources[0].config: must be a mapping, not list'),
    ('resources: [{name: a, config: {d: 2026-01-01}}]',
     'resources[0].config: holds a value a reply cannot carry (can not serialize '
     "'datetime.date' object); quote it as a string"),
    ('resources: [{name: a, tags: {n: 99999999999999999999999}}]',
     'resources[0].tags: holds a value a reply cannot carry (Integer value out of range); '
     'quote it as a string'),
    ('resources: [{name: a, reconfigure_s: -1}]',
     'resources[0].reconfigure_s: must be at least 0, not -1'),
    ('resources: [{name: a, retired: yes please}]',
     "resources[0].retired: must be true or false, not 'yes please'"),
    ('resources: [{name: a, health_check: 5}]',
     'resources[0].health_check: must be a mapping, not int'),
    ('resources: [{name: a, health_check: {command: []}}]',
     'resources[0].health_check.command: must be a non-empty list (the argv; no shell)'),
    ('resources: [{name: a, health_check: {command: probe}}]',
     'resources[0].health_check.command: must be a non-empty list (the argv; no shell)'),
    ("resources: [{name: a, health_check: {command: [probe, '']}}]",
     "resources[0].health_check.command[1]: must be a non-empty string, not ''"),
    ('resources: [{name: a, health_check: {command: [p], interval_s: 0}}]',
     'resources[0].health_check.interval_s: must be more than 0, not 0'),
    ('resources: [{name: a, health_check: {command: [p], timeout_s: -1}}]',
     'resources[0].health_check.timeout_s: must be more than 0, not -1'),
    ('resources: [{name: a, health_check: {command: [p], failures: 0}}]',
     'resources[0].health_check.failures: must be an integer of at least 1, not 0'),
    ('resources: [{name: a, health_check: {command: [p], every: 1}}]',
     'resources[0].health_check.every: unknown key (known: command, failures, interval_s, '
     'timeout_s)'),
    ('resources: [{name: a, slots: 0}, {name: b, slots: 0}]',
     'resources[0].slots: must be an integer of at least 1, not 0'),
    ('timezone: Mars/Olympus',
     "timezone: 'Mars/Olympus' is not a time zone name like Europe/Berlin or UTC"),
    ('timezone: 5', 'timezone: must be a non-empty string, not 5'),
    ('series_max_occurrences: 0',
     'series_max_occurrences: must be an integer of at least 1, not 0'),
    ('series_horizon_s: 0', 'series_horizon_s: must be more than 0, not 0'),
    ('resource_spec: 5', 'resource_spec: must be a non-empty string, not 5'),
    ('queues: []', 'queues: must be a mapping, not list'),
    ("queues: {'a b': {backend: local, hosts: [h]}}",
     "queues: 'a b' is not a valid name (letters, digits, _ . : / -)"),
    ('queues: {q: 5}', 'queues.q: must be a mapping, not int'),
    ('queues: {q: {backend: local}}', 'queues.q: missing key hosts'),
    ('queues: {q: {hosts: []}}', 'queues.q.hosts: a local queue needs at least one host'),
    ('queues: {q: {hosts: h1}}', 'queues.q.hosts: must be a list of names'),
    ("queues: {q: {hosts: ['a b']}}",
     "queues.q.hosts[0]: 'a b' is not a valid name (letters, digits, _ . : / -)"),
    ('queues: {q: {backend: local, hosts: [h], partition: p}}',
     'queues.q.partition: unknown key (known: backend, hosts)'),
    ('queues: {q: {backend: slurm}}', 'queues.q: missing key partition'),
    ('queues: {q: {backend: slurm, partition: p, hosts: [h]}}',
     'queues.q.hosts: unknown key (known: backend, partition)'),
    ('queues: {q: {backend: 5}}', 'queues.q.backend: must be local or slurm, not 5'),
    ('queues: {q: {backend: [local]}}',
     "queues.q.backend: must be local or slurm, not ['local']"),
    ('queues: {q: {hosts: [a]}}\nresources: [{name: a}, {name: a}]',
     "resources[1].name: 'a' is defined twice"),
    ('jobs: 5', 'jobs: must be a mapping, not int'),
    ('jobs: {dirs: []}',
     'jobs.dirs: unknown key (known: allowed_dirs, env_allow, output_dir, run_as)'),
    ('jobs: {allowed_dirs: x}', 'jobs.allowed_dirs: must be a list of directories'),
    ("jobs: {allowed_dirs: ['']}", "jobs.allowed_dirs[0]: must be a non-empty string, not ''"),
    ("jobs: {output_dir: ''}", "jobs.output_dir: must be a non-empty string, not ''"),
    ('jobs: {env_allow: JOB_*}', 'jobs.env_allow: must be a list of glob patterns such as JOB_*'),
    ("jobs: {env_allow: ['A=B']}",
     "jobs.env_allow[0]: 'A=B' is not a variable name pattern (letters, digits, _ and the "
     'globs * ? [ ])'),
    ('jobs: {env_allow: [5]}', 'jobs.env_allow[0]: must be a non-empty string, not 5'),
    ("jobs: {run_as: 'a b'}",
     "jobs.run_as: 'a b' is not a valid name (letters, digits, _ . : / -)"),
    ('jobs: {run_as: no-such-user-here}', "jobs.run_as: no Unix user named 'no-such-user-here'"),
    ('security: 5', 'security: must be a mapping, not int'),
    ('security: {admin: [a]}', 'security.admin: unknown key (known: admins, curve)'),
    ('security: {admins: a}', 'security.admins: must be a list of names'),
    ("security: {admins: ['a b']}",
     "security.admins[0]: 'a b' is not a valid name (letters, digits, _ . : / -)"),
    ('security: {curve: 5}', 'security.curve: must be a mapping, not int'),
    ('security: {curve: {secret_key: k}}', 'security.curve: missing key authorized_keys'),
    ('security: {curve: {authorized_keys: d}}', 'security.curve: missing key secret_key'),
    ('security: {curve: {secret_key: k, authorized_keys: d, x: 1}}',
     'security.curve.x: unknown key (known: authorized_keys, secret_key)'),
    ('web: 5', 'web: must be a mapping, not int'),
    ('resources: [{name: a, health_check: {interval_s: 1}}]',
     'resources[0].health_check: missing key command'),
    ('web: {}', 'web: missing key listen'),
    ("web: {listen: '127.0.0.1:8080', token: 5}", 'web.token: must be a non-empty string, not 5'),
    ("web: {listen: 'host'}",
     "web.listen: 'host' is not host:port like 127.0.0.1:8080 ([::1]:8080)"),
])
def test_each_bad_value_is_refused_with_its_key_and_reason(tmp_path, text, error):
    path = tmp_path / "atsd.yaml"
    path.write_text(text)
    with pytest.raises(configmod.ConfigError) as err:
        configmod.load(path)
    assert f"{err.value.key}: {err.value.reason}" == error
    assert str(err.value) == f"{path}: {error}"


def test_an_unknown_key_is_refused_naming_every_known_one(tmp_path):
    path = tmp_path / "atsd.yaml"
    path.write_text("colour: blue\n")
    with pytest.raises(configmod.ConfigError) as err:
        configmod.load(path)
    assert err.value.key == "colour"
    assert err.value.reason == (
        "unknown key (known: audit_max_entries, audit_retention_s, claim_window_s, "
        "countdown_interval_s, default_lease_s, event_hwm, event_log_size, events, "
        "expiring_notice_s, fsync, history_s, jobs, limits, listen, max_frame_bytes, "
        "max_in_flight, metrics, queues, reply_cache_bytes, resource_spec, resources, "
        "security, series_horizon_s, series_max_occurrences, state, timezone, web)")


@pytest.mark.parametrize("text, key, reason", [
    ("[1, 2]", "(top level)", "must be a mapping, not list"),
    ("a: [", "(file)", "not valid YAML at line 1, column 5: expected the node content, but "
     "found '<stream end>'"),
    ("resources: [{type: x}]", "resources[0]", "missing key name"),
    ("resource_spec: missing.json", "resource_spec", "{dir}/missing.json: file not found"),
    ("security: {curve: {secret_key: nope, authorized_keys: d}}", "security.curve.secret_key",
     "no such file {dir}/nope"),
])
def test_the_file_itself_and_what_it_names_are_checked(tmp_path, text, key, reason):
    path = tmp_path / "atsd.yaml"
    path.write_text(text)
    with pytest.raises(configmod.ConfigError) as err:
        configmod.load(path)
    assert (err.value.key, err.value.reason) == (key, reason.format(dir=tmp_path))
    with pytest.raises(configmod.ConfigError) as err:
        configmod.load(tmp_path / "none.yaml")
    assert (err.value.key, err.value.reason) == ("(file)", "No such file or directory")


def test_curve_keys_must_be_a_secret_key_file_and_a_directory(tmp_path):
    public, secret = zmq.auth.create_certificates(tmp_path, "server")
    path = tmp_path / "atsd.yaml"
    path.write_text("security: {curve: {secret_key: server.key_secret, authorized_keys: d}}")
    with pytest.raises(configmod.ConfigError) as err:
        configmod.load(path)
    assert (err.value.key, err.value.reason) == ("security.curve.authorized_keys",
                                                 f"no such directory {tmp_path / 'd'}")
    (tmp_path / "d").mkdir()
    cfg = configmod.load(path)
    assert (cfg.curve_secret_key, cfg.curve_authorized_keys) == (tmp_path / "server.key_secret",
                                                                 tmp_path / "d")


def test_a_good_file_gives_what_it_says(tmp_path, monkeypatch):
    (tmp_path / "jobs").mkdir()
    (tmp_path / "gpus.json").write_text((ROOT / "conf" / "gpus.json").read_text())
    path = tmp_path / "atsd.yaml"
    path.write_text("""
listen: tcp://127.0.0.1:7000
events: ipc:///tmp/ev
state: 17
fsync: true
claim_window_s: 10
expiring_notice_s: 20
history_s: 30
default_lease_s: 40
countdown_interval_s: 5
audit_retention_s: 50
event_log_size: 11
event_hwm: 12
max_frame_bytes: 13
max_in_flight: 14
reply_cache_bytes: 15
audit_max_entries: 16
metrics: {listen: "[::1]:9464"}
limits: {max_depth: 3, max_booking_s: 60, max_waiting_per_user: 2}
timezone: Europe/Berlin
series_max_occurrences: 9
series_horizon_s: 99
resources:
  - {name: dut-1, config: {fw: v1}, reconfigure_s: 1.5, tags: {board: x}, slots: 2,
     health_check: {command: [probe, dut-1], interval_s: 7, failures: 2}}
  - {name: scope, type: scope, retired: true}
resource_spec: gpus.json
queues:
  q: {hosts: [node1, dut-1]}
  s: {backend: slurm, partition: debug}
jobs: {allowed_dirs: [jobs/], output_dir: out, env_allow: [A_*], run_as: root}
security: {admins: [root, labadmin]}
web: {listen: "localhost:8080"}
""")
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path / 'var'}:{tmp_path / 'other'}")
    cfg = configmod.load(path, {"listen": None, "events": "tcp://127.0.0.1:7001"})
    var = tmp_path / "var"
    assert (cfg.path, cfg.listen, cfg.events, cfg.state, cfg.fsync) == (
        path, "tcp://127.0.0.1:7000", "tcp://127.0.0.1:7001", var / "17", True)
    assert (cfg.claim_window_s, cfg.expiring_notice_s, cfg.history_s, cfg.default_lease_s,
            cfg.countdown_interval_s, cfg.audit_retention_s) == (10, 20, 30, 40, 5, 50)
    assert (cfg.event_log_size, cfg.event_hwm, cfg.max_frame_bytes, cfg.max_in_flight,
            cfg.reply_cache_bytes, cfg.audit_max_entries) == (11, 12, 13, 14, 15, 16)
    assert cfg.metrics_listen == "[::1]:9464"
    assert cfg.limits == configmod.Limits(max_depth=3)
    assert cfg.quotas == configmod.Quotas(max_booking_s=60.0, max_waiting_per_user=2)
    assert (cfg.timezone, cfg.series_max_occurrences, cfg.series_horizon_s) == (
        "Europe/Berlin", 9, 99.0)
    assert cfg.resources[:2] == [
        ResourceDef("dut-1", "dut", 2, {"fw": "v1"}, 1.5, {"board": "x"}),
        ResourceDef("scope", "scope", retired=True)]
    assert [(d.name, d.type, d.slots) for d in cfg.resources[2:]] == [
        ("gpus/0", "gpus", 2), ("gpus/1", "gpus", 4), ("gpus/2", "gpus", 2), ("gpus/3", "gpus", 1),
        ("crypto_chips/card0", "crypto_chips", 4), ("node1", "host", 1)]
    assert cfg.health_checks == {"dut-1": configmod.HealthCheckDef(["probe", "dut-1"], 7.0,
                                                                   30.0, 2)}
    assert (cfg.resource_spec, cfg.pool_properties) == (tmp_path / "gpus.json", {})
    assert cfg.queues == {"q": configmod.QueueDef("q", "local", ["node1", "dut-1"]),
                          "s": configmod.QueueDef("s", "slurm", partition="debug")}
    assert (cfg.job_dirs, cfg.job_output_dir, cfg.job_env_allow, cfg.job_run_as) == (
        [tmp_path / "jobs"], var / "out", ["A_*"], "root")
    assert (cfg.admins, cfg.curve_secret_key, cfg.web_listen, cfg.web_token) == (
        ["root", "labadmin"], None, ("localhost", 8080), None)


def test_an_empty_file_gives_the_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    path = tmp_path / "atsd.yaml"
    path.write_text("# nothing\n")
    cfg = configmod.load(path)
    defaults = configmod.Config()
    assert (cfg.state, cfg.job_output_dir) == (tmp_path / "atsd.db", tmp_path / "jobs" / "out")
    assert cfg.path == path
    for name in configmod.Config.__dataclass_fields__:
        if name not in ("path", "state", "job_output_dir"):
            assert getattr(cfg, name) == getattr(defaults, name), name
