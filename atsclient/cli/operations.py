"""Operator subcommands: the daemon's health (``stats``), a config reload (``reload``)."""

from __future__ import annotations

from . import add_command, client_from, fmt_duration, fmt_time, output


WIRE = {"get_stats": "stats", "reload": "reload"}


def register(sub, common) -> None:
    p = add_command(sub, common, "stats", "get_stats")
    p.set_defaults(func=stats)
    p = add_command(sub, common, "reload", "reload")
    p.set_defaults(func=reload)


def _counts(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def stats(args) -> None:
    with client_from(args) as c:
        reply = c.get_stats()
    reply.pop("ok", None)
    output(args, reply, _print_stats)


def _print_stats(s: dict) -> None:
    store, events = s["store"], s["events"]
    commit = store["commit_ms"]
    error = store["last_error"]
    print(f"up {fmt_duration(s['uptime_s'])}; {s['connections']} connections, "
          f"{s['subscribers']} subscribers, {s['requests_in_flight']} requests in flight")
    print(f"waiting checkouts: {_counts(s['waiting'])}")
    print(f"reservations: {_counts(s['reservations'])}")
    print(f"events: seq {events['first_seq']}..{events['last_seq']} "
          f"({events['in_log']} in the log)")
    print(f"state file: {store['bytes']} bytes ({store['free_bytes']} free), WAL "
          f"{store['wal_bytes']} bytes; {store['commits']} commits, latency ms "
          + (" ".join(f"{k} {v}" for k, v in commit.items()) or "-"))
    print("last commit error: " + (f"{error['error']} at {fmt_time(error['ts'])}"
                                   if error else "none"))


def reload(args) -> None:
    with client_from(args) as c:
        found = c.reload()
    output(args, found, _print_changes)


def _print_changes(found: dict) -> None:
    parts = [f"{what} {', '.join(found[what])}" for what in ("added", "removed", "changed")
             if found[what]]
    parts += [f"resized {name} {old}->{new}" for name, (old, new) in found["resized"].items()]
    parts += [f"settings {', '.join(found['settings'])}"] if found["settings"] else []
    print("reloaded: " + ("; ".join(parts) or "nothing changed"))
