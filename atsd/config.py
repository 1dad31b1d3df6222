"""The daemon's configuration file: read it, check every key, refuse it whole if anything is
wrong. A lab daemon that starts half-configured (a typo'd key ignored, a resource silently
dropped) is worse than one that does not start, so each error names the file, the key and
the reason, and unknown keys are errors too.
"""

from __future__ import annotations

import ipaddress
import math
import os
import pwd
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import yaml

from .engine.lab import Quotas, ResourceDef
from .protocol import Limits


class ConfigError(Exception):
    def __init__(self, path: Path | str, key: str, reason: str) -> None:
        super().__init__(f"{path}: {key}: {reason}")
        self.path, self.key, self.reason = str(path), key, reason


@dataclass
class QueueDef:
    name: str
    backend: str                 # local or slurm
    hosts: list[str] = field(default_factory=list)   # local
    partition: str | None = None                      # slurm


@dataclass
class HealthCheckDef:
    """A resource's health check: ``command`` (argv, no shell) exits 0 when it is healthy."""

    command: list[str]
    interval_s: float = 60.0
    timeout_s: float = 30.0
    failures: int = 3            # consecutive failures that take it down


@dataclass
class Config:
    path: Path | None = None
    listen: str = "tcp://127.0.0.1:5555"
    events: str = "tcp://127.0.0.1:5556"
    state: Path = Path("atsd.db")
    fsync: bool = False              # also survive power loss, at one fsync per commit
    claim_window_s: float = 300.0
    expiring_notice_s: float = 300.0
    history_s: float = 7 * 86400.0
    default_lease_s: float = 3600.0
    countdown_interval_s: float = 60.0
    event_log_size: int = 50_000     # events get_events can still return (~1 KB each in memory)
    event_hwm: int = 10_000          # events queued per subscriber before PUB drops (they
                                     # are fetched from the log, so a small queue loses none)
    max_frame_bytes: int = 1024 * 1024
    max_in_flight: int = 64          # requests one identity may have waiting for a reply
    reply_cache_bytes: int = 64 * 1024 * 1024   # replies kept for retries, at most
    audit_retention_s: float = 90 * 86400.0
    audit_max_entries: int = 1_000_000
    metrics_listen: str | None = None    # host:port of the Prometheus /metrics page
    limits: Limits = field(default_factory=Limits)   # msgpack decoding limits
    quotas: Quotas = field(default_factory=Quotas)   # what one user may hold (limits.*)
    resources: list[ResourceDef] = field(default_factory=list)
    resource_spec: Path | None = None
    pool_properties: dict = field(default_factory=dict)   # canary's additional_properties
    queues: dict[str, QueueDef] = field(default_factory=dict)
    job_dirs: list[Path] = field(default_factory=list)
    job_output_dir: Path = Path("jobs/out")
    job_env_allow: list[str] = field(default_factory=lambda: ["JOB_*", "USER_*"])
    job_run_as: str | None = None
    job_user: str = ""               # who jobs run as: resolve_job_user() at startup
    admins: list[str] = field(default_factory=list)
    curve_secret_key: Path | None = None
    curve_authorized_keys: Path | None = None
    timezone: str | None = None      # IANA name recurrences follow; None: the machine's zone
    series_max_occurrences: int = 500
    series_horizon_s: float = 2 * 366 * 86400.0
    health_checks: dict[str, HealthCheckDef] = field(default_factory=dict)   # resource ->
    web_listen: tuple[str, int] | None = None   # the read-only web page; off when None
    web_token: str | None = None

    @property
    def base(self) -> Path:
        return self.path.parent if self.path else Path.cwd()


NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,127}$")


class _Reader:
    """Checks values and raises ConfigError with the key path where they are wrong."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, reason: str):
        raise ConfigError(self.path, key, reason)

    def map(self, value: Any, key: str) -> dict:
        if not isinstance(value, dict):
            self.fail(key, f"must be a mapping, not {type(value).__name__}")
        return value

    def wire_map(self, value: Any, key: str) -> dict:
        """A mapping that goes out in replies as it is: only what msgpack carries (YAML
        also makes dates and unbounded integers, which would fail every reply with them)."""
        value = self.map(value, key)
        try:
            msgpack.packb(value)
        except (TypeError, ValueError, OverflowError) as exc:
            self.fail(key, f"holds a value a reply cannot carry ({exc}); quote it as a string")
        return value

    def keys(self, value: dict, key: str, allowed: set[str]) -> None:
        for k in value:
            if k not in allowed:
                where = f"{key}.{k}" if key else str(k)
                self.fail(where, f"unknown key (known: {', '.join(sorted(allowed))})")

    def number(self, value: Any, key: str, lo: float = 0.0, positive: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(key, f"must be a number, not {value!r}")
        if value < lo or (positive and value <= 0):
            self.fail(key, f"must be {'more than' if positive else 'at least'} {lo:g}, not {value}")
        return float(value)

    def integer(self, value: Any, key: str, lo: int = 1) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            self.fail(key, f"must be an integer of at least {lo}, not {value!r}")
        return value

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, not {value!r}")
        return value

    def text(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value:
            self.fail(key, f"must be a non-empty string, not {value!r}")
        return value

    def name(self, value: Any, key: str) -> str:
        value = self.text(value, key)
        if not NAME.match(value):
            self.fail(key, f"{value!r} is not a valid name (letters, digits, _ . : / -)")
        return value

    def endpoint(self, value: Any, key: str) -> str:
        value = self.text(value, key)
        if not re.match(r"^(tcp|ipc|inproc)://.+", value):
            self.fail(key, f"{value!r} is not a ZeroMQ endpoint like tcp://127.0.0.1:5555")
        return value

    def names(self, value: Any, key: str) -> list[str]:
        if not isinstance(value, list):
            self.fail(key, "must be a list of names")
        return [self.name(v, f"{key}[{i}]") for i, v in enumerate(value)]

    def env_patterns(self, value: Any, key: str) -> list[str]:
        if not isinstance(value, list):
            self.fail(key, "must be a list of glob patterns such as JOB_*")
        for i, v in enumerate(value):
            if not ENV_PATTERN.match(self.text(v, f"{key}[{i}]")):
                self.fail(f"{key}[{i}]", f"{v!r} is not a variable name pattern "
                          "(letters, digits, _ and the globs * ? [ ])")
        return value


ENV_PATTERN = re.compile(r"^[A-Za-z0-9_*?\[\]!]{1,128}$")
RESOURCE_KEYS = {"name", "type", "slots", "config", "reconfigure_s", "tags", "health_check",
                 "retired"}
HEALTH_KEYS = {"command", "interval_s", "timeout_s", "failures"}
TOP_KEYS = {"listen", "events", "state", "fsync", "claim_window_s", "expiring_notice_s", "history_s",
            "default_lease_s", "countdown_interval_s", "event_log_size", "event_hwm",
            "max_frame_bytes", "max_in_flight", "reply_cache_bytes", "audit_retention_s",
            "audit_max_entries", "limits", "resources", "resource_spec", "queues", "jobs",
            "security", "timezone", "series_max_occurrences", "series_horizon_s", "web",
            "metrics"}


def _resource(r: _Reader, value: Any, key: str) -> ResourceDef:
    value = r.map(value, key)
    r.keys(value, key, RESOURCE_KEYS)
    if "name" not in value:
        r.fail(key, "missing key name")
    name = r.name(value["name"], f"{key}.name")
    return ResourceDef(
        name=name,
        type=r.name(value.get("type", name.split("-")[0]), f"{key}.type"),
        slots=r.integer(value.get("slots", 1), f"{key}.slots"),
        config=r.wire_map(value.get("config", {}), f"{key}.config"),
        reconfigure_s=r.number(value.get("reconfigure_s", 0), f"{key}.reconfigure_s"),
        tags=r.wire_map(value.get("tags", {}), f"{key}.tags"),
        retired=r.boolean(value.get("retired", False), f"{key}.retired"))


def _health_check(r: _Reader, value: Any, key: str) -> HealthCheckDef:
    value = r.map(value, key)
    r.keys(value, key, HEALTH_KEYS)
    argv = value.get("command")
    if not isinstance(argv, list) or not argv:
        r.fail(f"{key}.command", "must be a non-empty list (the argv; no shell)")
    check = HealthCheckDef([r.text(a, f"{key}.command[{i}]") for i, a in enumerate(argv)])
    for k in ("interval_s", "timeout_s"):
        if k in value:
            setattr(check, k, r.number(value[k], f"{key}.{k}", positive=True))
    if "failures" in value:
        check.failures = r.integer(value["failures"], f"{key}.failures")
    return check


def _timezone(r: _Reader, value: Any) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
    value = r.text(value, "timezone")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        r.fail("timezone", f"{value!r} is not a time zone name like Europe/Berlin or UTC")
    return value


def _queue(r: _Reader, name: str, value: Any) -> QueueDef:
    key = f"queues.{name}"
    value = r.map(value, key)
    backend = value.get("backend", "local")
    if backend == "local":
        r.keys(value, key, {"backend", "hosts"})
        hosts = r.names(value.get("hosts"), f"{key}.hosts") if "hosts" in value else []
        if not hosts:
            r.fail(f"{key}.hosts", "a local queue needs at least one host")
        return QueueDef(name, "local", hosts=hosts)
    if backend == "slurm":
        r.keys(value, key, {"backend", "partition"})
        return QueueDef(name, "slurm", partition=r.name(value.get("partition"), f"{key}.partition"))
    r.fail(f"{key}.backend", f"must be local or slurm, not {backend!r}")


def resolve_job_user(cfg: Config) -> None:
    """Who batch jobs run as (``cfg.job_user``), for the daemon about to start: it depends
    on who runs it, so ``check-config`` leaves it out. A daemon running as root switches to
    ``jobs.run_as``, and never runs jobs as root unless the config says so in as many words;
    a daemon that is not root cannot switch at all. Slurm runs jobs as the user that
    submitted them, atsd's own, so a Slurm queue needs ``run_as`` to be that user."""
    me = pwd.getpwuid(os.geteuid()).pw_name
    run_as = cfg.job_run_as
    if run_as is None:
        if cfg.queues and os.geteuid() == 0:
            raise ConfigError(cfg.path, "jobs.run_as", "atsd runs as root, so its jobs would "
                              "too: name an unprivileged user to run them as (e.g. nobody), "
                              "or root to mean it")
        cfg.job_user = me
        return
    if run_as != me and os.geteuid() != 0:
        raise ConfigError(cfg.path, "jobs.run_as", f"atsd runs as {me}, not root, so it "
                          f"cannot run jobs as {run_as}; leave run_as out (jobs run as {me}) "
                          "or run atsd as root")
    slurm = [q.name for q in cfg.queues.values() if q.backend == "slurm"]
    if slurm and run_as != me:
        raise ConfigError(cfg.path, "jobs.run_as", f"Slurm queues ({', '.join(slurm)}) run "
                          f"jobs as atsd's own user, {me}, not {run_as}: run atsd as "
                          f"{run_as} instead")
    cfg.job_user = run_as


def load(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read and check ``path``; ``overrides`` (from command-line flags) win over the file."""
    path = Path(path)
    r = _Reader(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(path, "(file)", exc.strerror or str(exc)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(path, "(file)", f"not valid YAML{where}: {problem}") from None
    data = {} if data is None else r.map(data, "(top level)")
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    r.keys(data, "", TOP_KEYS)
    base = path.resolve().parent
    # what atsd writes: under the unit's StateDirectory when systemd gives one, else beside
    # the config (which may be read-only, as /etc is under ProtectSystem=strict)
    state_base = Path(os.environ.get("STATE_DIRECTORY", "").split(":")[0] or base)
    cfg = Config(path=path.resolve())

    for key in ("listen", "events"):
        if key in data:
            setattr(cfg, key, r.endpoint(data[key], key))
    if "state" in data:
        cfg.state = state_base / r.text(str(data["state"]), "state")
    else:
        cfg.state = state_base / cfg.state
    if "fsync" in data:
        cfg.fsync = r.boolean(data["fsync"], "fsync")
    for key in ("claim_window_s", "expiring_notice_s", "history_s", "default_lease_s",
                "countdown_interval_s", "audit_retention_s"):
        if key in data:
            setattr(cfg, key, r.number(data[key], key, positive=True))
    for key in ("event_log_size", "event_hwm", "max_frame_bytes", "max_in_flight",
                "reply_cache_bytes", "audit_max_entries"):
        if key in data:
            setattr(cfg, key, r.integer(data[key], key))
    metrics = r.map(data.get("metrics", {}), "metrics")
    r.keys(metrics, "metrics", {"listen"})
    if "listen" in metrics:
        cfg.metrics_listen = r.text(metrics["listen"], "metrics.listen")
        if not re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}", cfg.metrics_listen):
            r.fail("metrics.listen", f"{cfg.metrics_listen!r} is not host:port, like "
                   "127.0.0.1:9464")
    limits = r.map(data.get("limits", {}), "limits")
    decoding, quotas = set(Limits.__dataclass_fields__), set(Quotas.__dataclass_fields__)
    r.keys(limits, "limits", decoding | quotas)
    cfg.limits = Limits(**{k: r.integer(v, f"limits.{k}") for k, v in limits.items()
                           if k in decoding})
    cfg.quotas = Quotas(**{k: r.number(v, f"limits.{k}", positive=True) if k.endswith("_s")
                           else r.integer(v, f"limits.{k}")
                           for k, v in limits.items() if k in quotas})

    resources = data.get("resources", [])
    if not isinstance(resources, list):
        r.fail("resources", "must be a list")
    cfg.resources = [_resource(r, v, f"resources[{i}]") for i, v in enumerate(resources)]
    for i, v in enumerate(resources):
        if isinstance(v, dict) and "health_check" in v:
            cfg.health_checks[v["name"]] = _health_check(r, v["health_check"],
                                                         f"resources[{i}].health_check")
    if "timezone" in data:
        cfg.timezone = _timezone(r, data["timezone"])
    if "series_max_occurrences" in data:
        cfg.series_max_occurrences = r.integer(data["series_max_occurrences"],
                                               "series_max_occurrences")
    if "series_horizon_s" in data:
        cfg.series_horizon_s = r.number(data["series_horizon_s"], "series_horizon_s",
                                        positive=True)

    if "resource_spec" in data:
        from .resource_spec import SpecError, load_spec
        spec_path = base / r.text(data["resource_spec"], "resource_spec")
        try:
            spec = load_spec(spec_path)
        except SpecError as exc:
            r.fail("resource_spec", str(exc))
        cfg.resource_spec = spec_path
        cfg.pool_properties = spec.additional_properties
        cfg.resources += [ResourceDef(name=f"{i.type}/{i.id}", type=i.type, slots=i.slots)
                          for i in spec.instances]

    queues = r.map(data.get("queues", {}), "queues")
    for qname, qvalue in queues.items():
        cfg.queues[r.name(qname, "queues")] = _queue(r, qname, qvalue)
    # a local queue's hosts are resources like any other (revocable, listable)
    known = {d.name for d in cfg.resources}
    for q in cfg.queues.values():
        for host in q.hosts:
            if host not in known:
                cfg.resources.append(ResourceDef(name=host, type="host"))
                known.add(host)

    seen: set[str] = set()
    for i, d in enumerate(cfg.resources):
        if d.name in seen:
            r.fail(f"resources[{i}].name", f"{d.name!r} is defined twice")
        seen.add(d.name)

    jobs = r.map(data.get("jobs", {}), "jobs")
    r.keys(jobs, "jobs", {"allowed_dirs", "output_dir", "env_allow", "run_as"})
    dirs = jobs.get("allowed_dirs", [])
    if not isinstance(dirs, list):
        r.fail("jobs.allowed_dirs", "must be a list of directories")
    cfg.job_dirs = [(base / r.text(d, f"jobs.allowed_dirs[{i}]")).resolve()
                    for i, d in enumerate(dirs)]
    cfg.job_output_dir = state_base / r.text(jobs.get("output_dir", "jobs/out"),
                                             "jobs.output_dir")
    if "env_allow" in jobs:
        cfg.job_env_allow = r.env_patterns(jobs["env_allow"], "jobs.env_allow")
    if "run_as" in jobs:
        cfg.job_run_as = r.name(jobs["run_as"], "jobs.run_as")
        try:
            pwd.getpwnam(cfg.job_run_as)
        except KeyError:
            r.fail("jobs.run_as", f"no Unix user named {cfg.job_run_as!r}")

    security = r.map(data.get("security", {}), "security")
    r.keys(security, "security", {"admins", "curve"})
    cfg.admins = r.names(security.get("admins", []), "security.admins")
    if "curve" in security:
        curve = r.map(security["curve"], "security.curve")
        r.keys(curve, "security.curve", {"secret_key", "authorized_keys"})
        for key in ("secret_key", "authorized_keys"):
            if key not in curve:
                r.fail(f"security.curve.{key}", "missing")
        cfg.curve_secret_key = base / r.text(curve["secret_key"], "security.curve.secret_key")
        cfg.curve_authorized_keys = base / r.text(curve["authorized_keys"],
                                                  "security.curve.authorized_keys")
        if not cfg.curve_secret_key.is_file():
            r.fail("security.curve.secret_key", f"no such file {cfg.curve_secret_key}")
        import zmq.auth
        try:
            _, secret = zmq.auth.load_certificate(cfg.curve_secret_key)
        except (OSError, ValueError) as exc:
            r.fail("security.curve.secret_key", str(exc))
        if secret is None or len(secret) != 40:
            r.fail("security.curve.secret_key", f"{cfg.curve_secret_key} holds no secret key "
                   "(give the .key_secret file atsd keygen wrote)")
        if not cfg.curve_authorized_keys.is_dir():
            r.fail("security.curve.authorized_keys",
                   f"no such directory {cfg.curve_authorized_keys}")
    if "web" in data:
        _web(r, data["web"], cfg)
    return cfg


def _web(r: _Reader, value: Any, cfg: Config) -> None:
    """The web page is read-only but shows who holds what: anywhere but loopback, or with
    CURVE on (where the wire knows who asks), it needs a token."""
    value = r.map(value, "web")
    r.keys(value, "web", {"listen", "token"})
    listen = r.text(value.get("listen"), "web.listen")
    m = re.match(r"^(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]]+)):(\d{1,5})$", listen)
    if not m or int(m[3]) > 65535:
        r.fail("web.listen", f"{listen!r} is not host:port like 127.0.0.1:8080 ([::1]:8080)")
    host = m[1] or m[2]
    cfg.web_listen = (host, int(m[3]))
    if "token" in value:
        token = r.text(value["token"], "web.token")
        if len(token) < 16:
            r.fail("web.token", "must be at least 16 characters")
        cfg.web_token = token
    if cfg.web_token is None and not _loopback(host):
        r.fail("web.token", f"required when web.listen is not loopback ({host}); "
               "and put TLS in front (docs/web.md)")
    if cfg.web_token is None and cfg.curve_secret_key is not None:
        r.fail("web.token", "required when security.curve is on")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
