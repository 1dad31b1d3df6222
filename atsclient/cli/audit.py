"""``atsclient audit``: the daemon's audit trail (yours; everyone's for an admin)."""

from __future__ import annotations

from . import add_command, client_from, fmt_time, output, parse_time, positive, print_table


WIRE = {"get_audit": "audit"}


def register(sub, common) -> None:
    p = add_command(sub, common, "audit", "get_audit")
    p.add_argument("--since", default="now-1d", help="from this time (default now-1d)")
    p.add_argument("--until", help="to this time (default: now)")
    p.add_argument("--actor", help="one user's entries (admins; yours without it)")
    p.add_argument("--resource", help="entries touching this resource, reservation or job id")
    p.add_argument("--limit", type=positive(int), default=1000,
                   help="at most this many entries (default 1000)")
    p.set_defaults(func=audit)


def audit(args) -> None:
    since = parse_time(args.since)
    until = None if args.until is None else parse_time(args.until)
    with client_from(args) as c:
        entries = c.get_audit(since=since, until=until, actor=args.actor,
                              resource=args.resource, limit=args.limit)
    output(args, entries, _print)


def _print(entries: list[dict]) -> None:
    print_table([{**e, "time": fmt_time(e["time"]), "ids": " ".join(e["ids"])}
                 for e in entries], ["time", "user", "command", "outcome", "ids"])
