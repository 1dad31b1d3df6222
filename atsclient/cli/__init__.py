"""``atsclient``: the command line of atsd.

Every feature registers its subcommands from its own module (``FEATURES``); this module
holds what they share: the connection options, times and durations as people write them,
and output as a table for people or JSON (``--json``) for scripts. Any error is one line on
stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import re
import signal
import sys
import time

import zmq

from ..client import DEFAULT_SERVER, ATSClient
from ..errors import ATSError
from ..events import default_events_endpoint
from ..security import curve_keys, from_environment

FEATURES = ("calendar", "batch", "keygen", "pool", "revocation", "service", "audit")

DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit status 2."""


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``10m``, ``2h``, ``1h30m``, ``1d``."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise UsageError(f"not a duration: {text!r} (try 90s, 10m, 2h, 1h30m)") from None
        value = sum(float(n) * DURATION_UNITS[u] for n, u in parts)
    if value < 0:
        raise UsageError(f"duration must not be negative: {text!r}")
    return value


def parse_time(text: str, now: float | None = None) -> float:
    """Epoch seconds from ``now``, ``now+10m``, ``now-1h``, ``+10m``, an ISO date/time
    (``2026-12-01T09:00``, local time unless it names a zone), the next weekday at a local
    time (``mon09:00``) or epoch seconds."""
    now = time.time() if now is None else now
    text = text.strip()
    m = re.fullmatch(r"(now)?\s*([+-])\s*(\S+)", text)
    if text == "now":
        return now
    if m:
        delta = parse_duration(m.group(3))
        return now + delta if m.group(2) == "+" else now - delta
    try:
        return float(text)
    except ValueError:
        pass
    day = _WEEKDAY_TIME.fullmatch(text.lower())
    if day:
        return _local_time(_next_weekday(WEEKDAYS.index(day.group(1)), int(day.group(2)),
                                         int(day.group(3)), now), text)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"not a time: {text!r} (try now+10m, 2026-12-01T09:00, "
                         "mon09:00)") from None
    if when.tzinfo is None:
        return _local_time(when, text)
    return when.timestamp()


def _local_time(when: dt.datetime, text: str) -> float:
    """A wall-clock time in the local zone, refused when a clock change skips it (spring
    forward) or repeats it (fall back): guessing would book an hour off."""
    first, second = when.replace(fold=0).timestamp(), when.replace(fold=1).timestamp()
    if first == second:
        return first
    as_utc = when.replace(tzinfo=dt.timezone.utc).timestamp()
    offsets = " or ".join(f"{text}{_offset(as_utc - t)}" for t in sorted({first, second}))
    if dt.datetime.fromtimestamp(first) != when:
        raise UsageError(f"{text} does not exist in local time (the clocks skip it); "
                         f"give an explicit offset: {offsets}")
    raise UsageError(f"{text} happens twice in local time (the clocks go back); "
                     f"give an explicit offset: {offsets}")


def _offset(seconds: float) -> str:
    sign = "+" if seconds >= 0 else "-"
    minutes = int(abs(seconds)) // 60
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEKDAY_TIME = re.compile(r"(mon|tue|wed|thu|fri|sat|sun)\s*([01]?\d|2[0-3]):([0-5]\d)")


def _next_weekday(weekday: int, hour: int, minute: int, now: float) -> dt.datetime:
    """The next local ``weekday`` at hour:minute from ``now`` (today, if still ahead)."""
    today = dt.datetime.fromtimestamp(now)
    day = today.date() + dt.timedelta(days=(weekday - today.weekday()) % 7)
    when = dt.datetime.combine(day, dt.time(hour, minute))
    return when if when.timestamp() > now else when + dt.timedelta(days=7)


def fmt_time(t: float | None) -> str:
    if t is None:
        return "-"
    return dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def fmt_duration(s: float) -> str:
    s = int(round(s))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def print_table(rows: list[dict], columns: list[str]) -> None:
    """Aligned columns for people; nothing printed but a header when there are no rows."""
    cells = [[str(r.get(c, "")) if r.get(c) is not None else "-" for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def output(args, data, human) -> None:
    """``--json`` prints ``data`` as JSON; otherwise ``human(data)`` prints for people."""
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        human(data)


def curve_from(args) -> dict:
    """The CURVE keys to use (``--server-key``/``--key``, else the environment, else
    ~/.config/atsclient/; see atsclient.security.from_environment) as ATSClient keyword
    arguments; empty when CURVE is off. ``curve_keys(**curve_from(args))`` gives them for
    another socket (a SUB)."""
    keys = from_environment(args.server_key, args.key)
    try:
        curve_keys(**keys)
    except (OSError, ValueError) as exc:
        raise UsageError(f"CURVE keys: {exc}") from None
    return keys


def client_from(args) -> ATSClient:
    return ATSClient(args.server, timeout=args.timeout, retries=args.retries, user=args.user,
                     **curve_from(args))


def _common(defaults: bool) -> argparse.ArgumentParser:
    """The options every subcommand takes. They may stand before or after the subcommand;
    the subcommand's copy has no defaults, so it never hides a value given before it."""
    def default(value):
        return value if defaults else argparse.SUPPRESS
    common = _Parser(add_help=False)
    common.add_argument("--server", "-s",
                        default=default(os.environ.get("ATSD_SERVER", DEFAULT_SERVER)),
                        help="atsd command endpoint (env ATSD_SERVER; default "
                             f"{DEFAULT_SERVER})")
    common.add_argument("--events", default=default(os.environ.get("ATSD_EVENTS")),
                        help="atsd event endpoint (env ATSD_EVENTS; default: the command "
                             "endpoint's port + 1)")
    common.add_argument("--user", default=default(os.environ.get("ATSD_USER")),
                        help="user name to act as when the daemon runs without CURVE "
                             "(default: your login name)")
    common.add_argument("--server-key", default=default(None),
                        help="the daemon's public key (file or Z85) when it runs CURVE "
                             "(env ATSCLIENT_SERVER_KEY; default ~/.config/atsclient/server.key)")
    common.add_argument("--key", default=default(None),
                        help="your CURVE secret key file, NAME.key_secret (env ATSCLIENT_KEY; "
                             "default ~/.config/atsclient/<login>.key_secret)")
    common.add_argument("--timeout", type=positive(float), default=default(5.0),
                        help="seconds to wait for each reply (default 5)")
    common.add_argument("--retries", type=positive(int), default=default(3),
                        help="tries before giving up (default 3)")
    common.add_argument("--json", action="store_true", default=default(False),
                        help="print JSON for scripts")
    return common


class _Parser(argparse.ArgumentParser):
    """No abbreviated options: ``batch submit ID job.sh --time=5`` is sbatch's --time, not
    a prefix of our --timeout."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def positive(kind):
    def check(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
        return value
    check.__name__ = kind.__name__
    return check


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="atsclient", parents=[_common(defaults=True)],
        description="Reserve lab resources from atsd. Times: now, now+10m, "
                    "2026-12-01T09:00. Durations: 90s, 10m, 2h, 1h30m.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=_Parser)
    common = _common(defaults=False)
    for name in FEATURES:
        importlib.import_module(f"{__name__}.{name}").register(sub, common)
    return parser


def events_endpoint(args) -> str:
    """The PUB endpoint: given, or the command endpoint's port + 1 (atsd's default pair)."""
    try:
        return args.events or default_events_endpoint(args.server)
    except ValueError as exc:
        raise UsageError(f"{exc} with --events") from None


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # SIGTERM ends a wait as Ctrl-C does: what the daemon holds for it is given back
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return args.func(args) or 0
    except UsageError as exc:
        print(f"atsclient: {exc}", file=sys.stderr)
        return 2
    except ATSError as exc:
        print(f"atsclient: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except zmq.ZMQError as exc:           # e.g. an endpoint that is not one
        print(f"atsclient: cannot use {args.server}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:               # the reader went away (| head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
