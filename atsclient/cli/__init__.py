# PYTHON_ARGCOMPLETE_OK
"""``atsclient``: the command line of atsd.

Every feature registers its subcommands from its own module (``FEATURES``); this module
holds what they share: the connection options, times and durations as people write them,
and output as a table for people or JSON (``--json``) for scripts. Any error is one line on
stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import json
import os
import re
import signal
import sys
import threading
import time

import argcomplete
import zmq

from .. import endpoints
from ..client import DEFAULT_SERVER, ATSClient
from ..errors import ATSError
from ..events import default_events_endpoint
from ..security import curve_keys, from_environment
from .summaries import HELP

FEATURES = ("calendar", "batch", "keygen", "pool", "revocation", "service", "audit",
            "operations")

DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit status 2."""


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``10m``, ``2h``, ``1h30m``, ``1d``."""
    text = text.strip()
    if text.startswith("-"):
        raise UsageError(f"a duration must not be negative: {text!r}")
    try:
        value = float(text)
    except ValueError:
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise UsageError(f"not a duration: {text!r} (try 90s, 10m, 2h, 1h30m)") from None
        value = sum(float(n) * DURATION_UNITS[u] for n, u in parts)
    if value < 0:
        raise UsageError(f"a duration must not be negative: {text!r}")
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
    """Local time with its zone, to the minute unless the seconds matter:
    ``2026-12-02 09:00 CET``, ``2026-12-02 09:00:30 CET``."""
    if t is None:
        return "-"
    when = dt.datetime.fromtimestamp(round(t)).astimezone()
    return when.strftime("%Y-%m-%d %H:%M:%S %Z" if when.second else "%Y-%m-%d %H:%M %Z")


def fmt_duration(s: float) -> str:
    """A duration as people write it (and ``parse_duration`` reads it back): ``30m``,
    ``1h30m``, ``2d4h``, ``45s``; under a second ``0.25s``."""
    if 0 < abs(s) < 1:
        return f"{s:.2g}s"
    s = round(s)
    if s < 0:
        return "-" + fmt_duration(-s)
    parts = []
    for unit in ("d", "h", "m", "s"):
        n, s = divmod(s, DURATION_UNITS[unit])
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts) or "0s"


def print_table(rows: list[dict], columns: list[str]) -> None:
    """Aligned columns under a header for people; a header alone when there are no rows."""
    cells = [[str(r.get(c, "")) if r.get(c) is not None else "-" for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


@contextlib.contextmanager
def waiting(what: str, limit: float | None, quiet: bool, where=None):
    """Progress while a call blocks for long (a checkout that queues): after a second, a
    live line on a terminal, else a line every 5 s, with the time waited and, when
    ``where`` is given, what it returns then (the place in the queue, asked in this thread);
    nothing when ``quiet`` (--json)."""
    done = threading.Event()
    live = sys.stderr.isatty()
    if quiet:
        yield
        return

    def tick():
        start = time.monotonic()
        last = start
        while not done.wait(1.0):
            now = time.monotonic()
            if not live and now - last < 5:
                continue
            upto = f" of at most {fmt_duration(limit)}" if limit else ""
            line = f"{where() or what if where else what}: {fmt_duration(now - start)}{upto}"
            if live:
                print(f"\r\x1b[K{line}", end="", file=sys.stderr, flush=True)
            else:
                print(f"atsclient: {line}", file=sys.stderr, flush=True)
                last = now
    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()
        if live:
            print("\r\x1b[K", end="", file=sys.stderr, flush=True)


# --- JSON for scripts (docs/cli.md#json) ---

# Keys that hold a point in time: ISO 8601 with the local offset in --json output.
TIME_KEYS = frozenset({"start_time", "end_time", "expire_time", "time_available", "deadline",
                       "ts", "new_avail", "new_expire", "avail_start", "avail_end", "time",
                       "booked_until"})
# Reply keys of the wire that scripts never need: the envelope.
ENVELOPE = frozenset({"ok", "request_id"})


def iso_time(t: float | None) -> str | None:
    if t is None:
        return None
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).astimezone().isoformat()


def for_json(data):
    """The one conversion from wire values to the CLI's JSON schema: times as ISO 8601 with
    offset (``TIME_KEYS``), a reservation's id as ``reservation_id`` (the wire's list rows
    say ``id``), durations stay seconds, no envelope."""
    if isinstance(data, list):
        return [for_json(v) for v in data]
    if not isinstance(data, dict):
        return data
    out = {}
    for key, value in data.items():
        if key in ENVELOPE:
            continue
        if key == "id" and "reservation_status" in data:
            key = "reservation_id"
        out[key] = iso_time(value) if key in TIME_KEYS and isinstance(value, (int, float)) \
            else for_json(value)
    return out


def output(args, data, human) -> None:
    """``--json`` prints ``data`` in the CLI's JSON schema (``for_json``); otherwise
    ``human(data)`` prints for people."""
    if args.json:
        print(json.dumps(for_json(data), indent=2, sort_keys=True))
    else:
        human(data)


def each_id(args, act, id_key: str, done_key: str, verb: str) -> None:
    """``act(client, id)`` for every id of ``args.ids``: each is tried and reported (in
    ``--json``, ``{id_key, done_key, error?}`` per id); any failure makes the exit status
    1, not only the last one's."""
    results = []
    with client_from(args) as c:
        for one in args.ids:
            try:
                act(c, one)
                results.append({id_key: one, done_key: True})
            except ATSError as exc:
                results.append({id_key: one, done_key: False,
                                "error": {"code": exc.code, "message": exc.message}})
    output(args, results, lambda rows: [print(
        f"{verb} {r[id_key]}" if r[done_key] else
        f"not {verb} {r[id_key]}: {r['error']['code']}: {r['error']['message']}",
        file=sys.stdout if r[done_key] else sys.stderr) for r in rows])
    if not all(r[done_key] for r in results):
        raise Failed


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
    client = ATSClient(args.server, timeout=args.timeout, retries=args.retries,
                       user=args.user, **curve_from(args))
    return retries_said(args, client)


def retries_said(args, client):
    """``client``, saying on stderr after a try with no reply where it tries next (a wrong
    address shows in seconds, not after every retry)."""
    if not args.json:
        client.on_retry = lambda message: print(f"atsclient: {message}", file=sys.stderr,
                                                flush=True)
    return client


class _FromEnvironment(str):
    """An option's default taken from the environment variable ``variable``, so that an
    error in it names the variable rather than the option."""

    def __new__(cls, variable: str, fallback: str | None = None):
        value = os.environ.get(variable, fallback)
        if value is None:
            return None
        text = super().__new__(cls, value)
        text.variable = variable if variable in os.environ else None
        return text


def address(text: str) -> str:
    """``--server``/``--events``: one endpoint or several separated by commas."""
    try:
        return endpoints.joined(text)
    except endpoints.BadAddress as exc:
        variable = getattr(text, "variable", None)
        raise argparse.ArgumentTypeError(f"${variable}: {exc}" if variable else str(exc)) \
            from None


def _common(defaults: bool) -> argparse.ArgumentParser:
    """The options every subcommand takes. They may stand before or after the subcommand;
    the subcommand's copy has no defaults, so it never hides a value given before it."""
    def default(value):
        return value if defaults else argparse.SUPPRESS
    common = _Parser(add_help=False)
    if not defaults:                      # documented once, in ``atsclient --help``
        plain_add = common.add_argument
        common.add_argument = lambda *a, **kw: plain_add(*a, **{**kw, "help": argparse.SUPPRESS})
    common.add_argument("--server", "-s", type=address,
                        default=default(_FromEnvironment("ATSD_SERVER", DEFAULT_SERVER)),
                        help="atsd command endpoint, or several separated by commas (a "
                             "leader and its standbys, tried in turn) (env ATSD_SERVER; "
                             f"default {DEFAULT_SERVER})")
    common.add_argument("--events", type=address,
                        default=default(_FromEnvironment("ATSD_EVENTS")),
                        help="atsd event endpoint, or several separated by commas (env "
                             "ATSD_EVENTS; default: each command endpoint's port + 1)")
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

    def _parse_optional(self, arg_string):
        """A word with one leading dash that names no option is a value: an id such as
        ``-x3f`` or a duration such as ``-5m`` (refused with its reason, not argparse's
        "expected one argument"). ``--anything`` unknown stays an error."""
        found = super()._parse_optional(arg_string)
        first = found[0] if isinstance(found, list) and found else found
        if first and first[0] is None and not arg_string.startswith("--"):
            return None
        return found

    def error(self, message):
        """One line, in the form of every other error (JSON with --json), exit status 2."""
        argv = sys.argv[1:]
        raise SystemExit(report(argparse.Namespace(json="--json" in argv), "usage",
                                f"{message} (see '{self.prog} --help')"))


def positive(kind):
    def check(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
        return value
    check.__name__ = kind.__name__
    return check


def add_command(sub, common, name: str, wire: str, more: str | None = None):
    """The parser of the subcommand ``name``, which sends the wire command ``wire``: its help
    is that command's (``HELP``: the first line of its doc in atsd's command table), and its
    description (``atsclient NAME --help``) that help and ``more``, what the command line
    adds to the wire command."""
    summary = HELP[wire]
    return sub.add_parser(name, parents=[common], help=summary,
                          description=f"{summary}. {more}" if more else f"{summary}.")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="atsclient", parents=[_common(defaults=True)],
        description="Reserve lab resources from atsd. Times: now, now+10m, "
                    "2026-12-01T09:00 (local time) or with an offset, "
                    "2026-12-01T09:00+01:00. Durations: 90s, 10m, 2h, 1h30m.",
        epilog="The options above may also follow the subcommand. Exit status: 0 done, 1 "
               "refused by atsd (or some of several failed), 2 bad command line, 3 atsd "
               "unreachable. Reference: docs/cli.md.")
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


# --- errors (docs/cli.md#errors) ---

# Exit status per error code; a code not named here exits 1 (the daemon refused).
EXIT_STATUS = {"usage": 2, "bad_request": 2, "unreachable": 3, "standby": 3}

# Wire argument names as the command line spells them, for the daemon's messages.
WIRE_TERMS = {"extra_s": "--by", "reservation_duration": "--for", "time_needed": "--at",
              "max_wait_time": "--max-wait", "wall_time": "--walltime",
              "host_count": "--hosts", "queue_id": "--queue", "lease_s": "--lease",
              "wait_s": "--wait", "job_script": "the job script", "res_config": "--config"}


class Failed(Exception):
    """Some of several things failed; each was reported already: exit status 1."""


def in_user_terms(message: str) -> str:
    """A daemon's message with wire names (``extra_s``, ``submit_args[0]``,
    ``set_resource_values``) replaced by what the user typed."""
    message = re.sub(r"\bsubmit_args\[(\d+)\]",
                     lambda m: f"option {int(m.group(1)) + 1} after the script", message)
    words = {**WIRE_TERMS, **{w: f"'atsclient {c}'" for w, c in cli_paths().items()
                              if "_" in w}}     # not plain words such as revoke
    return re.sub(r"\b(" + "|".join(map(re.escape, words)) + r")\b",
                  lambda m: words[m.group(1)], message)


def report(args, code: str, message: str) -> int:
    """One line on stderr (JSON with ``--json``); the exit status for ``code``."""
    if getattr(args, "json", False):
        print(json.dumps({"error": {"code": code, "message": message}}), file=sys.stderr)
    else:
        print(f"atsclient: {message}" if code == "usage" else f"atsclient: {code}: {message}",
              file=sys.stderr)
    return EXIT_STATUS.get(code, 1)


def cli_paths() -> dict[str, str]:
    """Wire command -> the ``atsclient`` subcommand that sends it (each feature's ``WIRE``);
    tests/test_protocol_doc.py holds every command to having one."""
    paths = {}
    for name in FEATURES:
        paths.update(getattr(importlib.import_module(f"{__name__}.{name}"), "WIRE", {}))
    return paths


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    # SIGTERM ends a wait as Ctrl-C does: what the daemon holds for it is given back
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return args.func(args) or 0
    except UsageError as exc:
        return report(args, "usage", str(exc))
    except ATSError as exc:
        return report(args, exc.code, in_user_terms(exc.message))
    except zmq.ZMQError as exc:           # e.g. an endpoint that is not one
        return report(args, "usage", f"cannot use {args.server}: {exc}")
    except Failed:
        return 1
    except BrokenPipeError:               # the reader went away (| head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
