"""Calendar subcommands: what is there, when is it free, reserve, claim, release, extend,
and who holds what (as a list and as a text Gantt chart)."""

from __future__ import annotations

import contextlib
import string
import sys
import time

from ..errors import ATSError, ResourceUnavailable, TooEarly
from . import (UsageError, client_from, fmt_duration, positive, fmt_time, output,
               parse_duration, parse_time, print_table)


def register(sub, common) -> None:
    p = sub.add_parser("resources", parents=[common], help="list resources and their state")
    p.add_argument("--type", help="only this type")
    p.add_argument("--tag", action="append", default=[], metavar="K=V", help="only with tag")
    p.add_argument("--select", metavar="SELECTOR", help="only those matching, like 'board=imx8 and usb'")
    p.set_defaults(func=resources)

    p = sub.add_parser("show", parents=[common], help="one resource and its bookings")
    p.add_argument("name")
    p.set_defaults(func=show)

    p = sub.add_parser("when", parents=[common], help="when is a resource free")
    p.add_argument("name")
    p.add_argument("--for", dest="duration", default="1h", help="how long (default 1h)")
    p.add_argument("--at", default="now", help="from when (default now)")
    p.add_argument("--shared", action="store_true")
    p.set_defaults(func=when)

    p = sub.add_parser("reserve", parents=[common],
                       help="reserve one or more resources (together), confirmed at once")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--select", metavar="SELECTOR",
                   help="any resources whose tags match, like 'board=imx8 and usb' (not NAMEs)")
    p.add_argument("--count", type=positive(int), help="how many to --select (default 1)")
    p.add_argument("--repeat", metavar="RRULE",
                   help="book every occurrence of an RFC 5545 rule, like "
                        "'FREQ=WEEKLY;BYDAY=MO;COUNT=4' (confirmed, they start by themselves)")
    p.add_argument("--partial", action="store_true",
                   help="with --repeat: book the occurrences that fit, list the others")
    p.add_argument("--at", default="now", help="when needed (default now)")
    p.add_argument("--for", dest="duration", default="1h", help="how long (default 1h)")
    p.add_argument("--shared", action="store_true", help="share with other shared holders")
    p.add_argument("--slots", type=int, help="slots to take when shared")
    p.add_argument("--config", action="append", default=[], metavar="K=V",
                   help="config the resource must have (adds its reconfigure time)")
    p.add_argument("--exact", action="store_true", help="only at --at, not the next free window")
    p.add_argument("--wait", action="store_true",
                   help="wait (with a countdown) until the window starts; Ctrl-C releases it")
    p.add_argument("--two-step", action="store_true",
                   help="only pre-reserve, to be claimed between its start and expire time "
                        "(the kissats flow)")
    p.set_defaults(func=reserve)

    p = sub.add_parser("claim", parents=[common], help="claim a pre-reservation")
    p.add_argument("id")
    p.set_defaults(func=claim)

    p = sub.add_parser("release", parents=[common], help="release a (pre-)reservation")
    p.add_argument("ids", nargs="+", metavar="ID")
    p.set_defaults(func=release)

    p = sub.add_parser("extend", parents=[common], help="extend a reservation or lease")
    p.add_argument("id")
    p.add_argument("--by", default="30m", help="how much longer (default 30m)")
    p.set_defaults(func=extend)

    p = sub.add_parser("reservations", parents=[common], help="live reservations")
    p.add_argument("--resource")
    p.add_argument("--owner")
    p.add_argument("--mine", action="store_true", help="only mine")
    p.set_defaults(func=reservations)

    p = sub.add_parser("calendar", parents=[common], help="text Gantt chart of bookings")
    p.add_argument("--from", dest="start", default="now")
    p.add_argument("--to", dest="end", default="now+8h")
    p.add_argument("--width", type=positive(int), default=64, help="columns (default 64)")
    p.set_defaults(func=calendar)

    p = sub.add_parser("version", parents=[common], help="daemon and protocol version")
    p.set_defaults(func=version)


def _pairs(items: list[str], what: str) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} must be KEY=VALUE, not {item!r}")
        out[key] = value
    return out


def resources(args) -> None:
    with client_from(args) as c:
        rows = c.call("list_resources", **_given(type=args.type, selector=args.select,
                                                 tags=_pairs(args.tag, "--tag") or None)
                      )["resources"]
    output(args, rows, lambda rows: print_table(
        [{**r, "slots": f"{r['free_slots']}/{r['slots']}",
          "config": ",".join(f"{k}={v}" for k, v in r["config"].items())} for r in rows],
        ["name", "type", "state", "service", "slots", "config"]))


def _given(**args) -> dict:
    return {k: v for k, v in args.items() if v is not None}


def show(args) -> None:
    with client_from(args) as c:
        row = next((r for r in c.list_resources() if r["name"] == args.name), None)
        if row is None:
            raise UsageError(f"no resource named {args.name!r}")
        bookings = c.list_reservations(resource=args.name)

    def human(data):
        r = data["resource"]
        print(f"{r['name']}  type {r['type']}  {r['state']}  {r['free_slots']}/{r['slots']} "
              f"slots free")
        print(f"config {r['config']}  tags {r['tags']}")
        _print_reservations(data["reservations"])
    output(args, {"resource": row, "reservations": bookings}, human)


def when(args) -> None:
    start = parse_time(args.at)
    duration = parse_duration(args.duration)
    with client_from(args) as c:
        reply = c.call("check_available", resource=args.name, start_time=start,
                       end_time=start + duration,
                       reservation_mode="shared" if args.shared else "exclusive")
    output(args, reply, lambda r: print(
        f"{args.name} is free {'then' if r['available'] else 'from'}: "
        f"{fmt_time(r['avail_start'])} to {fmt_time(r['avail_end'])}"
        if r["avail_start"] is not None else f"{args.name} is not available"))


def reserve(args) -> None:
    config = _pairs(args.config, "--config") or None
    if bool(args.names) == bool(args.select):
        raise UsageError("name the resources or --select them (one of the two)")
    if args.count is not None and not args.select:
        raise UsageError("--count goes with --select")
    if args.partial and not args.repeat:
        raise UsageError("--partial goes with --repeat")
    if args.repeat or args.select:
        return _reserve_chosen(args, config)
    with client_from(args) as c:
        rid = None                  # interrupted before it is known: the client cancels it
        try:
            rid, available, expire = c.request_reservation(
                args.names if len(args.names) > 1 else args.names[0], config,
                parse_time(args.at), parse_duration(args.duration), not args.exact,
                "shared" if args.shared else "exclusive", args.slots, claim=not args.two_step)
            reply = _wait_and_claim(c, args, rid, available, expire)
        except KeyboardInterrupt:               # Ctrl-C or SIGTERM while waiting
            if rid is not None:
                with contextlib.suppress(ATSError):
                    c.release_reservation(rid)
            raise
    if reply is not None:
        output(args, reply, lambda r: print(
            f"reserved {r['reservation_id']} until {fmt_time(r['expire_time'])}"))


def _wait_and_claim(c, args, rid: str, available: float, expire: float) -> dict | None:
    """The reservation once usable (after the countdown, with --wait), or None when only
    booked ahead (reported here)."""
    if available > time.time() and not args.wait:
        if args.two_step:
            output(args, {"pre_reservation_id": rid, "time_available": available,
                          "expire_time": expire},
                   lambda _: print(f"pre-reserved {rid}: claim it with 'atsclient claim {rid}' "
                                   f"between {fmt_time(available)} and {fmt_time(expire)}"))
        else:
            output(args, {"reservation_id": rid, "time_available": available,
                          "expire_time": expire},
                   lambda _: print(f"reserved {rid} from {fmt_time(available)} until "
                                   f"{fmt_time(expire)}"))
        return None
    _countdown(available, " ".join(args.names))
    if not args.two_step:
        return {"reservation_id": rid, "time_available": available, "expire_time": expire}
    return _claim_when_due(c, rid)


def _reserve_chosen(args, config: dict | None) -> None:
    """reserve --select and/or --repeat."""
    request = _given(
        selector=args.select, count=args.count, recurrence=args.repeat,
        resource=args.names[0] if len(args.names) == 1 else None,
        resources=args.names if len(args.names) > 1 else None, resource_config=config,
        time_needed=parse_time(args.at), reservation_duration=parse_duration(args.duration),
        reservation_mode="shared" if args.shared else "exclusive", slots=args.slots)
    if args.repeat:
        request["partial"] = args.partial
    else:
        request["next_available"] = not args.exact
    with client_from(args) as c:
        reply = c.call("request_reservation", **request)
        if args.repeat:
            output(args, reply, _print_series)
            return
        pre, available = reply["pre_reservation_id"], reply["time_available"]
        what = " ".join(reply["resources"])
        if available > time.time() and not args.wait:
            output(args, reply, lambda r: print(
                f"pre-reserved {pre} ({what}): claim it with 'atsclient claim {pre}' between "
                f"{fmt_time(available)} and {fmt_time(r['expire_time'])}"))
            return
        try:
            _countdown(available, what)
            claimed = _claim_when_due(c, pre)
        except KeyboardInterrupt:               # Ctrl-C or SIGTERM while waiting
            with contextlib.suppress(ATSError):
                c.release_reservation(pre)
            raise
    output(args, {**claimed, "resources": reply["resources"]}, lambda r: print(
        f"reserved {r['reservation_id']} ({what}) until {fmt_time(r['expire_time'])}"))


def _print_series(reply: dict) -> None:
    until = reply.get("booked_until")
    print(f"series {reply['series_id']}: {len(reply['occurrences'])} occurrences booked"
          + (f" (an open rule: booked up to {fmt_time(until)})" if until else ""))
    print_table([{**o, "start": fmt_time(o["start_time"]), "end": fmt_time(o["end_time"]),
                  "resources": " ".join(o["resources"])} for o in reply["occurrences"]],
                ["reservation_id", "resources", "start", "end"])
    for c in reply["conflicts"]:
        print(f"not booked (busy): {fmt_time(c['start_time'])} - {fmt_time(c['end_time'])}")


def _countdown(until: float, what: str) -> None:
    live = sys.stderr.isatty()
    while (left := until - time.time()) > 0:
        if live:
            print(f"\r{what}: available in {fmt_duration(left)} ", end="", file=sys.stderr)
        time.sleep(min(1.0, left))
    if live:
        print(file=sys.stderr)


def _claim_when_due(c, pre: str) -> dict:
    """Claim; the daemon's clock may be a hair behind ours, so too_early is retried."""
    while True:
        try:
            reply = c.claim_reservation(pre)
        except TooEarly as exc:
            time.sleep(max(0.05, exc.reply.get("retry_after", 0.1)))
            continue
        if reply.get("reservation_id"):
            return reply
        pre = reply["pre_reservation_id"]           # claimed late: take the fresh offer
        _countdown(reply["new_avail"], pre)


def claim(args) -> None:
    with client_from(args) as c:
        reply = c.claim_reservation(args.id)
    if not reply.get("reservation_id"):
        output(args, reply, lambda r: print(
            f"too late: new offer {r['pre_reservation_id']} from {fmt_time(r['new_avail'])} "
            f"until {fmt_time(r['new_expire'])}"))
        raise SystemExit(1)
    output(args, reply, lambda r: print(
        f"claimed {r['reservation_id']} until {fmt_time(r['expire_time'])}"))


def release(args) -> None:
    with client_from(args) as c:
        for rid in args.ids:
            c.release_reservation(rid)
    output(args, {"released": args.ids}, lambda _: print(f"released {' '.join(args.ids)}"))


def extend(args) -> None:
    with client_from(args) as c:
        try:
            end = c.extend_reservation(args.id, parse_duration(args.by))
        except ResourceUnavailable as exc:
            most = exc.reply.get("max_extension")
            if most is None:
                raise
            raise ResourceUnavailable(f"{args.id} cannot be extended by {args.by}; at most "
                                      f"{fmt_duration(most)} more fits", exc.reply) from None
    output(args, {"reservation_id": args.id, "expire_time": end},
           lambda _: print(f"{args.id} now ends {fmt_time(end)}"))


def reservations(args) -> None:
    with client_from(args) as c:
        owner = c.user if args.mine else args.owner
        rows = c.list_reservations(resource=args.resource, owner=owner)
    output(args, rows, _print_reservations)


def _print_reservations(rows: list[dict]) -> None:
    print_table([{**r, "start": fmt_time(r["start_time"]), "end": fmt_time(r["end_time"]),
                  "status": r["reservation_status"].removeprefix("RESERVATION_").lower()}
                 for r in rows],
                ["id", "resource", "kind", "status", "owner", "start", "end", "slots",
                 "series_id"])


def calendar(args) -> None:
    start, end = parse_time(args.start), parse_time(args.end)
    if end <= start:
        raise UsageError("--to must be after --from")
    with client_from(args) as c:
        names = [r["name"] for r in c.list_resources()]
        rows = c.list_reservations(start_time=start, end_time=end)
    output(args, rows, lambda rows: print(gantt(names, rows, start, end, args.width)))


def gantt(names: list[str], rows: list[dict], start: float, end: float, width: int) -> str:
    """One line per resource, one column per (end - start) / width; each reservation gets a
    letter, '.' is free. A legend says which letter is whose."""
    letters = {}
    for r in rows:
        if r["id"] not in letters:
            letters[r["id"]] = (string.ascii_uppercase + string.ascii_lowercase)[len(letters) % 52]
    step = (end - start) / width
    pad = max(len(n) for n in names) if names else 0
    lines = [f"{'':{pad}}  {fmt_time(start)} .. {fmt_time(end)}  ({fmt_duration(step)} per column)"]
    by_resource: dict[str, list[dict]] = {}
    for r in rows:
        by_resource.setdefault(r["resource"], []).append(r)
    for name in names:
        cells = []
        for i in range(width):
            t0, t1 = start + i * step, start + (i + 1) * step
            here = [r for r in by_resource.get(name, []) if r["start_time"] < t1 and r["end_time"] > t0]
            cells.append(letters[here[0]["id"]] if len(here) == 1 else
                         "*" if here else ".")
        lines.append(f"{name:{pad}}  {''.join(cells)}")
    seen = set()
    for r in rows:
        if r["id"] in seen:
            continue
        seen.add(r["id"])
        lines.append(f"  {letters[r['id']]} {r['id']} {r['owner']} {r['kind']} "
                     f"{fmt_time(r['start_time'])} - {fmt_time(r['end_time'])}")
    if len(letters) > 1:
        lines.append("  * more than one booking in that column")
    return "\n".join(lines)


def version(args) -> None:
    with client_from(args) as c:
        reply = c.get_version()
    output(args, reply, lambda r: print(f"atsd {r['version']} (protocol {r['protocol']}) at "
                                        f"{args.server}"))
