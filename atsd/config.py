"""The daemon's configuration file: read it, check every key, refuse it whole if anything is
wrong. A lab daemon that starts half-configured (a typo'd key ignored, a resource silently
dropped) is worse than one that does not start, so each error names the file, the key and
the reason, and unknown keys are errors too.

Every key is declared once, on the field it fills (``setting``: where it lives in the file,
the kind that checks it, whether its section needs it); the keys each error lists as known,
and the order values are checked in, follow from those declarations. What one value cannot
say alone (paths relative to a directory, a resource spec's resources, a web page that needs
a token) is checked after all of them (``load``).
"""

from __future__ import annotations

import ipaddress
import math
import os
import pwd
import re
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import msgpack
import yaml

from .engine.lab import Quotas, ResourceDef
from .protocol import Arg, Limits, required


# libyaml's loader where PyYAML has it: a 1,000-resource inventory parses in 20 ms, not 100
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ConfigError(Exception):
    def __init__(self, path: Path | str, key: str, reason: str) -> None:
        super().__init__(f"{path}: {key}: {reason}")
        self.path, self.key, self.reason = str(path), key, reason


class Invalid(Exception):
    """A value of the file is wrong: its key path and the reason (``load`` adds the file)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(key, reason)
        self.key, self.reason = key, reason


Kind = Callable[[Any, str], Any]

# --- kinds: each checks one value at its key path and returns it as the config keeps it ---


def MAPPING(value: Any, key: str) -> dict:
    if not isinstance(value, dict):
        raise Invalid(key, f"must be a mapping, not {type(value).__name__}")
    return value


def WIRE_MAP(value: Any, key: str) -> dict:
    """A mapping that goes out in replies as it is: only what msgpack carries (YAML also
    makes dates and unbounded integers, which would fail every reply with them)."""
    value = MAPPING(value, key)
    try:
        msgpack.packb(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise Invalid(key, f"holds a value a reply cannot carry ({exc}); quote it as a "
                      "string") from None
    return value


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Invalid(key, f"must be a number, not {value!r}")
    return float(value)


def POSITIVE(value: Any, key: str) -> float:
    if _number(value, key) <= 0:
        raise Invalid(key, f"must be more than 0, not {value}")
    return float(value)


def AT_LEAST_0(value: Any, key: str) -> float:
    if _number(value, key) < 0:
        raise Invalid(key, f"must be at least 0, not {value}")
    return float(value)


def INTEGER(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise Invalid(key, f"must be an integer of at least 1, not {value!r}")
    return value


def BOOLEAN(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise Invalid(key, f"must be true or false, not {value!r}")
    return value


def TEXT(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise Invalid(key, f"must be a non-empty string, not {value!r}")
    return value


NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,127}$")


def NAME(value: Any, key: str) -> str:
    value = TEXT(value, key)
    if not NAME_PATTERN.match(value):
        raise Invalid(key, f"{value!r} is not a valid name (letters, digits, _ . : / -)")
    return value


def PATH(value: Any, key: str) -> Path:
    """A path as the file gives it; ``load`` places a relative one (``_place``)."""
    return Path(TEXT(value, key))


PG_SCHEMES = ("postgresql://", "postgres://")


def STATE(value: Any, key: str) -> Path | str:
    """The state file (a number is a file name too), or a PostgreSQL URL (a str:
    atsd/store_pg.py)."""
    text = TEXT(str(value), key)
    if text.startswith(PG_SCHEMES):
        return text
    if "://" in text:
        raise Invalid(key, f"{text.split('://')[0][:20]!r} URLs are not a state atsd can "
                           "use: give a SQLite file or a postgresql:// URL")
    return Path(text)


def ENDPOINT(value: Any, key: str) -> str:
    value = TEXT(value, key)
    if not re.match(r"^(tcp|ipc|inproc)://.+", value):
        raise Invalid(key, f"{value!r} is not a ZeroMQ endpoint like tcp://127.0.0.1:5555")
    return value


def HOST_PORT(value: Any, key: str) -> str:
    value = TEXT(value, key)
    if not re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}", value):
        raise Invalid(key, f"{value!r} is not host:port, like 127.0.0.1:9464")
    return value


def WEB_LISTEN(value: Any, key: str) -> tuple[str, int]:
    value = TEXT(value, key)
    m = re.match(r"^(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]]+)):(\d{1,5})$", value)
    if not m or int(m[3]) > 65535:
        raise Invalid(key, f"{value!r} is not host:port like 127.0.0.1:8080 ([::1]:8080)")
    return (m[1] or m[2], int(m[3]))


def WEB_TOKEN(value: Any, key: str) -> str:
    if len(TEXT(value, key)) < 16:
        raise Invalid(key, "must be at least 16 characters")
    return value


def TIMEZONE(value: Any, key: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
    value = TEXT(value, key)
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise Invalid(key, f"{value!r} is not a time zone name like Europe/Berlin or "
                      "UTC") from None
    return value


def RUN_AS(value: Any, key: str) -> str:
    value = NAME(value, key)
    try:
        pwd.getpwnam(value)
    except KeyError:
        raise Invalid(key, f"no Unix user named {value!r}") from None
    return value


ENV_PATTERN_RE = re.compile(r"^[A-Za-z0-9_*?\[\]!]{1,128}$")


def ENV_PATTERN(value: Any, key: str) -> str:
    if not ENV_PATTERN_RE.match(TEXT(value, key)):
        raise Invalid(key, f"{value!r} is not a variable name pattern (letters, digits, _ "
                      "and the globs * ? [ ])")
    return value


def ARGV(value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise Invalid(key, "must be a non-empty list (the argv; no shell)")
    return [TEXT(a, f"{key}[{i}]") for i, a in enumerate(value)]


def list_of(item: Kind, what: str) -> Kind:
    def check(value: Any, key: str) -> list:
        if not isinstance(value, list):
            raise Invalid(key, f"must be a list of {what}")
        return [item(v, f"{key}[{i}]") for i, v in enumerate(value)]
    return check


NAMES = list_of(NAME, "names")


def check_keys(value: dict, key: str, known: set[str], needed: list[str]) -> None:
    """No key ``value`` (the mapping at ``key``) does not know, none it needs missing."""
    for k in value:
        if k not in known:
            raise Invalid(f"{key}.{k}" if key else str(k),
                          f"unknown key (known: {', '.join(sorted(known))})")
    for k in needed:
        if k not in value:
            raise Invalid(key, f"missing key {k}")


def section(**args: Arg) -> Kind:
    """A mapping with declared keys, as the protocol's ``map_of``: the checked values of the
    keys it has (a missing key is left to the caller's default)."""
    known, needed = set(args), [k for k, a in args.items() if a.required]

    def check(value: Any, key: str) -> dict:
        check_keys(MAPPING(value, key), key, known, needed)
        return {k: a.kind(value[k], f"{key}.{k}") for k, a in args.items() if k in value}
    return check


def setting(kind: Kind, default: Any = MISSING, *, key: str | None = None,
            needed: bool = False, default_factory: Any = MISSING):
    """A field read from the file: at ``key`` (dotted; the field's name when None), checked
    by ``kind``; ``needed``: its section, when the file has it, must have this key. A kind
    with ``section_keys`` reads a whole section (``key``), which other groups may share."""
    return field(default=default, default_factory=default_factory,
                 metadata={"arg": Arg(kind, required=needed), "key": key})


def section_of(cls) -> Kind:
    """The ``section`` of a dataclass whose fields are ``setting``s: a field without a
    default is needed."""
    read = section(**{f.name: Arg(f.metadata["arg"].kind, required=f.default is MISSING
                                  and f.default_factory is MISSING) for f in fields(cls)})
    return lambda value, key: cls(**read(value, key))


def numbers(cls) -> Kind:
    """A group (``setting``) filling the dataclass ``cls`` of limits (Limits, Quotas) from
    the keys named as its fields: a float field takes a positive number, an int one an
    integer of at least 1."""
    kinds = {f.name: POSITIVE if isinstance(f.default, float) else INTEGER
             for f in fields(cls)}

    def read(value: dict, key: str):
        return cls(**{k: kinds[k](v, f"{key}.{k}") for k, v in value.items() if k in kinds})
    read.section_keys = set(kinds)
    return read


# --- what the file describes ---


@dataclass
class QueueDef:
    name: str
    backend: str                 # local or slurm
    hosts: list[str] = field(default_factory=list)   # local
    partition: str | None = None                      # slurm


def HOSTS(value: Any, key: str) -> list[str]:
    hosts = NAMES(value, key)
    if not hosts:
        raise Invalid(key, "a local queue needs at least one host")
    return hosts


def BACKEND(value: Any, key: str) -> str:
    if not isinstance(value, str) or value not in QUEUE_BACKENDS:
        raise Invalid(key, f"must be {' or '.join(QUEUE_BACKENDS)}, not {value!r}")
    return value


QUEUE_BACKENDS = {"local": section(backend=Arg(BACKEND), hosts=required(HOSTS)),
                  "slurm": section(backend=Arg(BACKEND), partition=required(NAME))}


def QUEUES(value: Any, key: str) -> dict[str, QueueDef]:
    """Queues by name; each backend has keys of its own (``QUEUE_BACKENDS``)."""
    queues = {}
    for name, queue in MAPPING(value, key).items():
        where = f"{key}.{name}"
        backend = BACKEND(MAPPING(queue, where).get("backend", "local"), f"{where}.backend")
        queue = QUEUE_BACKENDS[backend](queue, where)
        queue["backend"] = backend
        queues[NAME(name, key)] = QueueDef(name, **queue)
    return queues


@dataclass
class HealthCheckDef:
    """A resource's health check: ``command`` (argv, no shell) exits 0 when it is healthy."""

    command: list[str] = setting(ARGV)
    interval_s: float = setting(POSITIVE, 60.0)
    timeout_s: float = setting(POSITIVE, 30.0)
    failures: int = setting(INTEGER, 3)     # consecutive failures that take it down


HEALTH_CHECK = section_of(HealthCheckDef)
RESOURCE = section(name=required(NAME), type=Arg(NAME), slots=Arg(INTEGER),
                   config=Arg(WIRE_MAP), reconfigure_s=Arg(AT_LEAST_0), tags=Arg(WIRE_MAP),
                   health_check=Arg(MAPPING), retired=Arg(BOOLEAN))


def RESOURCES(value: Any, key: str) -> list[ResourceDef]:
    """Resources; a type defaults to the name up to its first ``-`` (dut-1: dut). Their
    health checks are HEALTH_CHECKS'."""
    if not isinstance(value, list):
        raise Invalid(key, "must be a list")
    found = []
    for i, item in enumerate(value):
        given = RESOURCE(item, f"{key}[{i}]")
        given.pop("health_check", None)
        found.append(ResourceDef(**{"type": given["name"].split("-")[0], **given}))
    return found


def HEALTH_CHECKS(value: list, key: str) -> dict[str, HealthCheckDef]:
    """Each resource's health check by its name (RESOURCES has checked the list)."""
    return {r["name"]: HEALTH_CHECK(r["health_check"], f"{key}[{i}].health_check")
            for i, r in enumerate(value) if "health_check" in r}


@dataclass
class Config:
    path: Path | None = None
    listen: str = setting(ENDPOINT, "tcp://127.0.0.1:5555")
    events: str = setting(ENDPOINT, "tcp://127.0.0.1:5556")
    state: Path | str = setting(STATE, Path("atsd.db"))   # str: a PostgreSQL URL
    fsync: bool = setting(BOOLEAN, False)   # also survive power loss, at one fsync per commit
    claim_window_s: float = setting(POSITIVE, 300.0)
    expiring_notice_s: float = setting(POSITIVE, 300.0)
    history_s: float = setting(POSITIVE, 7 * 86400.0)
    default_lease_s: float = setting(POSITIVE, 3600.0)
    countdown_interval_s: float = setting(POSITIVE, 60.0)
    audit_retention_s: float = setting(POSITIVE, 90 * 86400.0)
    # events get_events can still return (~1 KB each in memory)
    event_log_size: int = setting(INTEGER, 50_000)
    # events queued per subscriber before PUB drops (they are fetched from the log, so a
    # small queue loses none)
    event_hwm: int = setting(INTEGER, 10_000)
    max_frame_bytes: int = setting(INTEGER, 1024 * 1024)
    max_in_flight: int = setting(INTEGER, 64)   # requests one identity may have waiting
    reply_cache_bytes: int = setting(INTEGER, 64 * 1024 * 1024)   # replies kept for retries
    audit_max_entries: int = setting(INTEGER, 1_000_000)
    # host:port of the Prometheus /metrics page
    metrics_listen: str | None = setting(HOST_PORT, None, key="metrics.listen")
    # msgpack decoding limits, and what one user may hold: both limits.*
    limits: Limits = setting(numbers(Limits), key="limits", default_factory=Limits)
    quotas: Quotas = setting(numbers(Quotas), key="limits", default_factory=Quotas)
    resources: list[ResourceDef] = setting(RESOURCES, default_factory=list)
    health_checks: dict[str, HealthCheckDef] = setting(HEALTH_CHECKS, key="resources",
                                                       default_factory=dict)   # by resource
    # IANA name recurrences follow; None: the machine's zone
    timezone: str | None = setting(TIMEZONE, None)
    series_max_occurrences: int = setting(INTEGER, 500)
    series_horizon_s: float = setting(POSITIVE, 2 * 366 * 86400.0)
    resource_spec: Path | None = setting(PATH, None)
    pool_properties: dict = field(default_factory=dict)   # canary's additional_properties
    queues: dict[str, QueueDef] = setting(QUEUES, default_factory=dict)
    job_dirs: list[Path] = setting(list_of(PATH, "directories"), key="jobs.allowed_dirs",
                                   default_factory=list)
    job_output_dir: Path = setting(PATH, Path("jobs/out"), key="jobs.output_dir")
    job_env_allow: list[str] = setting(list_of(ENV_PATTERN, "glob patterns such as JOB_*"),
                                       key="jobs.env_allow",
                                       default_factory=lambda: ["JOB_*", "USER_*"])
    job_run_as: str | None = setting(RUN_AS, None, key="jobs.run_as")
    job_user: str = ""               # who jobs run as: resolve_job_user() at startup
    admins: list[str] = setting(NAMES, key="security.admins", default_factory=list)
    curve_secret_key: Path | None = setting(PATH, None, key="security.curve.secret_key",
                                            needed=True)
    curve_authorized_keys: Path | None = setting(PATH, None, needed=True,
                                                 key="security.curve.authorized_keys")
    # the read-only web page; off when None
    web_listen: tuple[str, int] | None = setting(WEB_LISTEN, None, key="web.listen",
                                                 needed=True)
    web_token: str | None = setting(WEB_TOKEN, None, key="web.token")

    @property
    def base(self) -> Path:
        return self.path.parent if self.path else Path.cwd()


SETTINGS = [f for f in fields(Config) if "arg" in f.metadata]


def _key(f) -> str:
    return f.metadata["key"] or f.name


def _layout() -> tuple[dict[str, set[str]], dict[str, list[str]]]:
    """The keys each section of the file knows and needs (its dotted path: its keys)."""
    known: dict[str, set[str]] = {}
    needed: dict[str, list[str]] = {}
    for f in SETTINGS:
        key, arg = _key(f), f.metadata["arg"]
        parts = key.split(".")
        for i, part in enumerate(parts):
            known.setdefault(".".join(parts[:i]), set()).add(part)
        if hasattr(arg.kind, "section_keys"):
            known.setdefault(key, set()).update(arg.kind.section_keys)
        if arg.required:
            needed.setdefault(key.rpartition(".")[0], []).append(parts[-1])
    return known, needed


KNOWN, NEEDED = _layout()


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
    data = _read(path)
    cfg = Config(path=path.resolve())
    try:
        data = {} if data is None else MAPPING(data, "(top level)")
        data.update({k: v for k, v in (overrides or {}).items() if v is not None})
        _fill(cfg, data)
        _place(cfg)
        for check in (_add_spec_resources, _add_queue_hosts, _check_unique_names,
                      _check_curve_keys, _check_web):
            check(cfg)
    except Invalid as exc:
        raise ConfigError(path, exc.key, exc.reason) from None
    return cfg


def _read(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(path, "(file)", exc.strerror or str(exc)) from None
    try:
        return yaml.load(text, Loader=SAFE_LOADER)
    except yaml.YAMLError:
        pass            # told by the pure-Python parser, whose messages say more
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(path, "(file)", f"not valid YAML{where}: {problem}") from None


def _fill(cfg: Config, data: dict) -> None:
    """Each setting from its place in ``data``, in the order Config declares them."""
    sections: dict[str, dict | None] = {}
    for f in SETTINGS:
        key, kind = _key(f), f.metadata["arg"].kind
        if hasattr(kind, "section_keys"):
            value = _section(data, key, sections)
            found = value is not None
        else:
            parent, _, name = key.rpartition(".")
            above = _section(data, parent, sections)
            found = above is not None and name in above
            value = above[name] if found else None
        if found:
            setattr(cfg, f.name, kind(value, key))


def _section(data: dict, path: str, seen: dict[str, dict | None]) -> dict | None:
    """The mapping at ``path`` of the file, None when it has none, checked when first
    asked for (``KNOWN``, ``NEEDED``)."""
    if path not in seen:
        parent, _, name = path.rpartition(".")
        above = _section(data, parent, seen) if path else {"": data}   # the top level
        found = MAPPING(above[name], path) if above is not None and name in above else None
        if found is not None:
            check_keys(found, path, KNOWN[path], NEEDED.get(path, []))
        seen[path] = found
    return seen[path]


def _place(cfg: Config) -> None:
    """Relative paths: what atsd reads, beside the config file; what it writes, under the
    unit's StateDirectory when systemd gives one, else beside the config too (which may be
    read-only, as /etc is under ProtectSystem=strict)."""
    base = cfg.path.parent
    state_base = Path(os.environ.get("STATE_DIRECTORY", "").split(":")[0] or base)
    if isinstance(cfg.state, Path):         # not a PostgreSQL URL
        cfg.state = state_base / cfg.state
    cfg.job_output_dir = state_base / cfg.job_output_dir
    cfg.job_dirs = [(base / d).resolve() for d in cfg.job_dirs]
    for name in ("resource_spec", "curve_secret_key", "curve_authorized_keys"):
        if getattr(cfg, name) is not None:
            setattr(cfg, name, base / getattr(cfg, name))


def _add_spec_resources(cfg: Config) -> None:
    """The resources of the CTest spec or canary pool file ``resource_spec`` names."""
    if cfg.resource_spec is None:
        return
    from .resource_spec import SpecError, load_spec
    try:
        spec = load_spec(cfg.resource_spec)
    except SpecError as exc:
        raise Invalid("resource_spec", str(exc)) from None
    cfg.pool_properties = spec.additional_properties
    cfg.resources += [ResourceDef(name=f"{i.type}/{i.id}", type=i.type, slots=i.slots)
                      for i in spec.instances]


def _add_queue_hosts(cfg: Config) -> None:
    """A local queue's hosts are resources like any other (revocable, listable)."""
    known = {d.name for d in cfg.resources}
    for q in cfg.queues.values():
        for host in q.hosts:
            if host not in known:
                cfg.resources.append(ResourceDef(name=host, type="host"))
                known.add(host)


def _check_unique_names(cfg: Config) -> None:
    seen: set[str] = set()
    for i, d in enumerate(cfg.resources):
        if d.name in seen:
            raise Invalid(f"resources[{i}].name", f"{d.name!r} is defined twice")
        seen.add(d.name)


def _check_curve_keys(cfg: Config) -> None:
    secret, authorized = cfg.curve_secret_key, cfg.curve_authorized_keys
    if secret is None:
        return
    if not secret.is_file():
        raise Invalid("security.curve.secret_key", f"no such file {secret}")
    import zmq.auth
    try:
        _, key = zmq.auth.load_certificate(secret)
    except (OSError, ValueError) as exc:
        raise Invalid("security.curve.secret_key", str(exc)) from None
    if key is None or len(key) != 40:
        raise Invalid("security.curve.secret_key", f"{secret} holds no secret key (give "
                      "the .key_secret file atsd keygen wrote)")
    if not authorized.is_dir():
        raise Invalid("security.curve.authorized_keys", f"no such directory {authorized}")


def _check_web(cfg: Config) -> None:
    """The web page is read-only but shows who holds what: anywhere but loopback, or with
    CURVE on (where the wire knows who asks), it needs a token."""
    if cfg.web_listen is None or cfg.web_token is not None:
        return
    host = cfg.web_listen[0]
    if not _loopback(host):
        raise Invalid("web.token", f"required when web.listen is not loopback ({host}); "
                      "and put TLS in front (docs/web.md)")
    if cfg.curve_secret_key is not None:
        raise Invalid("web.token", "required when security.curve is on")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
