"""Calendar subcommands: what is there, when is it free, reserve, claim, release, extend,
and who holds what (as a list and as a text Gantt chart)."""

from __future__ import annotations

import contextlib
import datetime as dt
import string
import sys
import time

from ..errors import ATSError, ResourceUnavailable, TooEarly
from . import (Failed, UsageError, add_command, client_from, each_id, fmt_duration, fmt_time,
               output, parse_duration, parse_time, positive, print_table)


# wire command -> the subcommand that sends it (see cli_paths)
WIRE = {"list_resources": "resources", "get_config": "show NAME",
        "check_available": "when NAME", "request_reservation": "reserve NAME",
        "claim_reservation": "claim ID", "release_reservation": "release ID",
        "extend_reservation": "extend ID", "list_reservations": "reservations",
        "get_version": "version", "whoami": "whoami", "get_all_resources": "resources",
        "get_available_resources": "resources"}


def register(sub, common) -> None:
    p = add_command(sub, common, "resources", "list_resources")
    p.add_argument("--type", help="only this type")
    p.add_argument("--tag", action="append", default=[], metavar="K=V", help="only with tag")
    p.add_argument("--select", metavar="SELECTOR",
                   help="only those matching, like 'board=imx8 and usb'")
    p.set_defaults(func=resources)

    p = add_command(sub, common, "show", "get_config",
                    "With its type, state, free slots and tags, and its bookings.")
    p.add_argument("name", help="the resource")
    p.set_defaults(func=show)

    p = add_command(sub, common, "when", "check_available")
    p.add_argument("name", nargs="?", help="the resource")
    p.add_argument("--select", metavar="SELECTOR",
                   help="when are --count resources whose tags match free together (not NAME)")
    p.add_argument("--count", type=positive(int), help="how many to --select (default 1)")
    p.add_argument("--for", dest="duration", default="1h", help="how long (default 1h)")
    p.add_argument("--at", default="now", help="from when (default now)")
    p.add_argument("--shared", action="store_true", help="free for a shared holder")
    p.set_defaults(func=when)

    p = add_command(sub, common, "reserve", "request_reservation",
                    "Book exactly --at (default now) for --for, confirmed at once (it starts "
                    "by itself); when that is taken, fail naming the next free window, or "
                    "take it with --next. --wait waits for a later window to start (and so "
                    "accepts one); Ctrl-C or SIGTERM then releases it. --two-step only "
                    "pre-reserves, to be claimed in time (the kissats flow).")
    p.add_argument("names", nargs="*", metavar="NAME", help="resources, booked together")
    p.add_argument("--select", metavar="SELECTOR",
                   help="any resources whose tags match, like 'board=imx8 and usb' (not NAMEs)")
    p.add_argument("--count", type=positive(int), help="how many to --select (default 1)")
    p.add_argument("--repeat", metavar="RRULE",
                   help="book every occurrence of an RFC 5545 rule, like "
                        "'FREQ=WEEKLY;BYDAY=MO;COUNT=4' (confirmed, they start by themselves)")
    p.add_argument("--partial", action="store_true",
                   help="with --repeat: book the occurrences that fit, list the others")
    p.add_argument("--at", help="when needed (default now; never in the past)")
    p.add_argument("--for", dest="duration", default="1h", help="how long (default 1h)")
    p.add_argument("--shared", action="store_true", help="share with other shared holders")
    p.add_argument("--slots", type=positive(int),
                   help="slots to take when shared (at most what the resource has)")
    p.add_argument("--config", action="append", default=[], metavar="K=V",
                   help="config the resource must have (adds its reconfigure time)")
    p.add_argument("--next", action="store_true",
                   help="take the next free window when --at is taken")
    p.add_argument("--wait", action="store_true",
                   help="take the next free window and wait (showing progress) until it "
                        "starts; Ctrl-C releases it")
    p.add_argument("--two-step", action="store_true",
                   help="only pre-reserve, to be claimed between its start and expire time "
                        "(the kissats flow)")
    p.set_defaults(func=reserve)

    p = add_command(sub, common, "claim", "claim_reservation")
    p.add_argument("id", help="the pre-reservation id 'reserve' printed")
    p.set_defaults(func=claim)

    p = add_command(sub, common, "release", "release_reservation")
    p.add_argument("ids", nargs="+", metavar="ID", help="reservation ids; each is reported")
    p.set_defaults(func=release)

    p = add_command(sub, common, "extend", "extend_reservation")
    p.add_argument("id", help="the reservation or allocation id")
    p.add_argument("--by", default="30m", help="how much longer (default 30m)")
    p.set_defaults(func=extend)

    p = add_command(sub, common, "reservations", "list_reservations")
    p.add_argument("--resource", help="only on this resource")
    p.add_argument("--owner", help="only this user's")
    p.add_argument("--mine", action="store_true", help="only mine")
    p.set_defaults(func=reservations)

    p = sub.add_parser("calendar", parents=[common],
                       help="Text Gantt chart of bookings, with hour ticks and a legend")
    p.add_argument("--from", dest="start", default="now", help="start (default now)")
    p.add_argument("--to", dest="end", default="now+8h", help="end (default now+8h)")
    p.add_argument("--width", type=positive(int), default=64, help="columns (default 64)")
    p.set_defaults(func=calendar)

    p = add_command(sub, common, "version", "get_version")
    p.set_defaults(func=version)

    p = add_command(sub, common, "whoami", "whoami")
    p.set_defaults(func=whoami)


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
        [{"name": r["name"], "type": r["type"], "state": r["state"],
          "service": r["service"] + (f" ({r['service_reason']})" if r["service_reason"] else ""),
          "slots": f"{r['free_slots']}/{r['slots']} free",
          "held by": ", ".join(f"{h['owner']} until {fmt_time(h['end_time'])}"
                               for h in r["holders"]) or None,
          "config": _words(r["config"])} for r in rows],
        ["name", "type", "state", "service", "slots", "held by", "config"]))


def _given(**args) -> dict:
    return {k: v for k, v in args.items() if v is not None}


def _words(pairs: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in pairs.items()) or "-"


def show(args) -> None:
    with client_from(args) as c:
        row = next((r for r in c.list_resources() if r["name"] == args.name), None)
        if row is None:
            raise UsageError(f"no resource named {args.name!r} (see 'atsclient resources')")
        bookings = c.list_reservations(resource=args.name)

    def human(data):
        r = data["resource"]
        print(f"{r['name']}: {r['type']}, {r['state']}, "
              f"{r['free_slots']} of {r['slots']} slots free")
        print(f"config: {_words(r['config'])}")
        print(f"tags:   {_words(r['tags'])}")
        _print_reservations(data["reservations"])
    output(args, {"resource": row, "reservations": bookings}, human)


def when(args) -> None:
    if bool(args.name) == bool(args.select):
        raise UsageError("name the resource or --select resources (one of the two)")
    if args.count is not None and not args.select:
        raise UsageError("--count goes with --select")
    start = parse_time(args.at)
    duration = parse_duration(args.duration)
    what = ({"resource": args.name} if args.name else
            {"selector": args.select, "count": args.count or 1})
    with client_from(args) as c:
        reply = c.call("check_available", **what, start_time=start, end_time=start + duration,
                       reservation_mode="shared" if args.shared else "exclusive")
    name = args.name or " ".join(reply.get("resources") or [repr(args.select)])
    shown = ({"resource": args.name} if args.name else
             {"selector": args.select, "resources": reply.get("resources")})
    output(args, {**shown, "available": reply["available"],
                  "avail_start": reply["avail_start"], "avail_end": reply["avail_end"]},
           lambda r: print(
               f"{name} is free for {fmt_duration(duration)} "
               f"{'from' if r['available'] else 'at the earliest from'} "
               f"{fmt_time(r['avail_start'])} to {fmt_time(r['avail_end'])}"
               if r["avail_start"] is not None else f"{name} is not available"))


def _check_reserve_options(args) -> None:
    """Options that only make sense together are refused apart, not ignored."""
    if bool(args.names) == bool(args.select):
        raise UsageError("name the resources or --select them (one of the two)")
    if args.count is not None and not args.select:
        raise UsageError("--count goes with --select")
    if args.partial and not args.repeat:
        raise UsageError("--partial goes with --repeat")


def reserve(args) -> None:
    config = _pairs(args.config, "--config") or None
    _check_reserve_options(args)
    duration = parse_duration(args.duration)
    now = time.time()
    at = now if args.at is None else parse_time(args.at, now)
    if at < now - 1:
        raise UsageError(f"--at {args.at} is in the past ({fmt_time(at)}; it is now "
                         f"{fmt_time(now)}): give now or a later time")
    later_ok = args.next or args.wait
    if args.repeat or args.select:
        return _reserve_chosen(args, config, at, duration, later_ok)
    with client_from(args) as c:
        if args.slots is not None:
            _check_slots(c, args.names, args.slots)
        rid = None                  # interrupted before it is known: the client cancels it
        try:
            try:
                rid, available, expire = c.request_reservation(
                    args.names if len(args.names) > 1 else args.names[0], config, at,
                    duration, later_ok, "shared" if args.shared else "exclusive", args.slots,
                    claim=not args.two_step)
            except ResourceUnavailable as exc:
                if later_ok or exc.code != "unavailable":
                    raise
                raise ResourceUnavailable(_taken(c, args, at, duration)) from None
            reply = _wait_and_claim(c, args, rid, available, expire)
        except KeyboardInterrupt:               # Ctrl-C or SIGTERM while waiting
            if rid is not None:
                with contextlib.suppress(ATSError):
                    c.release_reservation(rid)
            raise
    if reply is not None:
        output(args, reply, lambda r: print(
            f"reserved {r['reservation_id']}: {' '.join(args.names)} until "
            f"{fmt_time(r['expire_time'])}"))


def _wait_and_claim(c, args, rid: str, available: float, expire: float) -> dict | None:
    """The reservation once usable (after the wait, with --wait), or None when only booked
    ahead (reported here)."""
    what = " ".join(args.names)
    if available > time.time() and not args.wait:
        if args.two_step:
            output(args, {"pre_reservation_id": rid, "time_available": available,
                          "expire_time": expire},
                   lambda _: print(f"pre-reserved {rid} from {fmt_time(available)}: claim it "
                                   f"with 'atsclient claim {rid}' by {fmt_time(expire)}"))
        else:
            output(args, {"reservation_id": rid, "time_available": available,
                          "expire_time": expire},
                   lambda _: print(f"reserved {rid}: {what} from {fmt_time(available)} until "
                                   f"{fmt_time(expire)}"))
        return None
    wait_until(available, f"{what} free", args.json)
    if not args.two_step:           # it started by itself; its config is the resource's now
        return {"reservation_id": rid, "expire_time": expire,
                "resource_config": c.get_resource_config(args.names[0])}
    reply = _claim_when_due(c, rid, args.json)
    return {"reservation_id": reply["reservation_id"], "expire_time": reply["expire_time"],
            "resource_config": reply["resource_config"]}


def _reserve_chosen(args, config: dict | None, at: float, duration: float,
                    later_ok: bool) -> None:
    """reserve --select and/or --repeat."""
    request = _given(
        selector=args.select, count=args.count, recurrence=args.repeat,
        resource=args.names[0] if len(args.names) == 1 else None,
        resources=args.names if len(args.names) > 1 else None, resource_config=config,
        time_needed=at, reservation_duration=duration,
        reservation_mode="shared" if args.shared else "exclusive", slots=args.slots)
    if args.repeat:
        request["partial"] = args.partial
    else:
        request["next_available"] = later_ok
    with client_from(args) as c:
        reply = c.call("request_reservation", **request)
        if args.repeat:
            output(args, reply, _print_series)
            return
        pre, available = reply["pre_reservation_id"], reply["time_available"]
        what = " ".join(reply["resources"])
        if available > time.time() and not args.wait:
            output(args, {k: reply[k] for k in ("pre_reservation_id", "time_available",
                                                "expire_time", "resources")},
                   lambda r: print(f"pre-reserved {pre} ({what}) from {fmt_time(available)}: "
                                   f"claim it with 'atsclient claim {pre}' by "
                                   f"{fmt_time(r['expire_time'])}"))
            return
        try:
            wait_until(available, f"{what} free", args.json)
            claimed = _claim_when_due(c, pre, args.json)
        except KeyboardInterrupt:               # Ctrl-C or SIGTERM while waiting
            with contextlib.suppress(ATSError):
                c.release_reservation(pre)
            raise
    output(args, {"reservation_id": claimed["reservation_id"],
                  "expire_time": claimed["expire_time"], "resources": reply["resources"]},
           lambda r: print(f"reserved {r['reservation_id']}: {what} until "
                           f"{fmt_time(r['expire_time'])}"))


def _print_series(reply: dict) -> None:
    until = reply.get("booked_until")
    print(f"series {reply['series_id']}: {len(reply['occurrences'])} occurrences booked"
          + (f" (an open rule: booked up to {fmt_time(until)})" if until else ""))
    print_table([{**o, "from": fmt_time(o["start_time"]), "until": fmt_time(o["end_time"]),
                  "resources": " ".join(o["resources"])} for o in reply["occurrences"]],
                ["reservation_id", "resources", "from", "until"])
    for c in reply["conflicts"]:
        print(f"not booked (busy): {fmt_time(c['start_time'])} to {fmt_time(c['end_time'])}")


def _check_slots(c, names: list[str], slots: int) -> None:
    have = {r["name"]: r["slots"] for r in c.list_resources()}
    for name in names:
        if name in have and slots > have[name]:
            raise UsageError(f"{name} has {have[name]} slot{'s' if have[name] != 1 else ''}; "
                             f"--slots {slots} is more")


def _taken(c, args, at: float, duration: float) -> str:
    """The refusal of an exact --at, naming each resource's next free window."""
    mode = "shared" if args.shared else "exclusive"
    windows = []
    for name in args.names:
        r = c.call("check_available", resource=name, start_time=at, end_time=at + duration,
                   reservation_mode=mode, slots=args.slots)
        if not r["available"]:
            windows.append(f"{name} next from {fmt_time(r['avail_start'])}"
                           if r["avail_start"] is not None else f"{name} not at all")
    free = "; ".join(windows) or "not together then"
    return (f"{' '.join(args.names)} not free for {fmt_duration(duration)} at {fmt_time(at)}: "
            f"{free} (add --next to take the next free window)")


def wait_until(until: float, what: str, quiet: bool) -> None:
    """Count down to ``until``: a live line on a terminal, a line every 5 s otherwise (a
    log or a CI job shows the wait is alive); nothing when ``quiet`` (--json: stderr holds
    only the JSON error, if any)."""
    live = sys.stderr.isatty() and not quiet
    start, last = time.time(), None
    while (left := until - time.time()) > 0:
        now = time.time()
        if live:
            print(f"\r\x1b[K{what} in {fmt_duration(left)} (waited {fmt_duration(now - start)})",
                  end="", file=sys.stderr, flush=True)
        elif not quiet and (last is None or now - last >= 5):
            print(f"atsclient: waiting for {what} in {fmt_duration(left)}, at "
                  f"{fmt_time(until)}", file=sys.stderr, flush=True)
            last = now
        time.sleep(min(1.0, left))
    if live:
        print(file=sys.stderr)


def _claim_when_due(c, pre: str, quiet: bool) -> dict:
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
        wait_until(reply["new_avail"], f"new offer {pre}", quiet)


def claim(args) -> None:
    with client_from(args) as c:
        reply = c.claim_reservation(args.id)
    if not reply.get("reservation_id"):
        if args.json:
            output(args, {k: reply[k] for k in ("pre_reservation_id", "new_avail",
                                                "new_expire")}, None)
        else:
            print(f"atsclient: too late to claim {args.id}; new offer "
                  f"{reply['pre_reservation_id']} from {fmt_time(reply['new_avail'])}: claim "
                  f"it by {fmt_time(reply['new_expire'])}", file=sys.stderr)
        raise Failed
    output(args, {"reservation_id": reply["reservation_id"],
                  "expire_time": reply["expire_time"]}, lambda r: print(
        f"claimed {r['reservation_id']} until {fmt_time(r['expire_time'])}"))


def release(args) -> None:
    each_id(args, lambda c, rid: c.release_reservation(rid), "reservation_id", "released",
            "released")


def extend(args) -> None:
    by = parse_duration(args.by)
    with client_from(args) as c:
        try:
            end = c.extend_reservation(args.id, by)
        except ResourceUnavailable as exc:
            most = exc.reply.get("max_extension")
            if most is None or exc.code != "unavailable":
                raise
            raise ResourceUnavailable(
                f"cannot extend {args.id} by {fmt_duration(by)}: "
                + (f"at most --by {fmt_duration(most)} is free" if most > 0 else
                   "the time after it is taken")) from None
    output(args, {"reservation_id": args.id, "expire_time": end},
           lambda _: print(f"{args.id} now ends {fmt_time(end)}"))


def reservations(args) -> None:
    with client_from(args) as c:
        owner = c.user if args.mine else args.owner
        rows = c.list_reservations(resource=args.resource, owner=owner)
    output(args, rows, _print_reservations)


def _print_reservations(rows: list[dict]) -> None:
    print_table([{"reservation": r["id"], "resource": r["resource"], "kind": r["kind"],
                  "status": r["reservation_status"].removeprefix("RESERVATION_").lower(),
                  "owner": r["owner"], "from": fmt_time(r["start_time"]),
                  "until": fmt_time(r["end_time"]), "slots": r.get("slots"),
                  "series": r.get("series_id")}
                 for r in rows],
                ["reservation", "resource", "kind", "status", "owner", "from", "until",
                 "slots", "series"])


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
    letter, '.' is free, '*' more than one. A tick line marks each hour ('|' and the local
    hour, fewer labels when they would crowd), and a legend says which letter is whose."""
    letters = {}
    for r in rows:
        if r["id"] not in letters:
            letters[r["id"]] = (string.ascii_uppercase + string.ascii_lowercase)[len(letters) % 52]
    step = (end - start) / width
    pad = max([len(n) for n in names] + [4])
    lines = [f"{fmt_time(start)} to {fmt_time(end)}, {fmt_duration(step)} per column",
             f"{'':{pad}}  {_ticks(start, step, width)}"]
    by_resource: dict[str, list[dict]] = {}
    for r in rows:
        by_resource.setdefault(r["resource"], []).append(r)
    for name in names:
        cells = []
        for i in range(width):
            t0, t1 = start + i * step, start + (i + 1) * step
            here = {r["id"] for r in by_resource.get(name, [])
                    if r["start_time"] < t1 and r["end_time"] > t0}
            cells.append(letters[here.pop()] if len(here) == 1 else "*" if here else ".")
        lines.append(f"{name:{pad}}  {''.join(cells)}")
    lines.append("legend: . free, * more than one booking" + (":" if letters else ""))
    seen = set()
    for r in rows:
        if r["id"] not in seen:
            seen.add(r["id"])
            lines.append(f"  {letters[r['id']]}  {r['id']}  {r['owner']}  {r['kind']}  "
                         f"{fmt_time(r['start_time'])} to {fmt_time(r['end_time'])}")
    return "\n".join(lines)


def _ticks(start: float, step: float, width: int) -> str:
    """'|' in the column where each local hour begins, its hour (``09``) after it when
    there is room before the next label."""
    line = [" "] * width
    first = dt.datetime.fromtimestamp(start).astimezone().replace(minute=0, second=0,
                                                                  microsecond=0)
    hour = first if first.timestamp() >= start else first + dt.timedelta(hours=1)
    free_from = 0
    while (col := int((hour.timestamp() - start) / step)) < width:
        label = hour.strftime("%H")
        if col >= free_from:
            line[col] = "|"
            free_from = col + 1
            if col + 1 + len(label) <= width:
                line[col + 1:col + 1 + len(label)] = label
                free_from = col + 2 + len(label)
        hour += dt.timedelta(hours=1)
    return "".join(line).rstrip()


def version(args) -> None:
    with client_from(args) as c:
        reply = c.get_version()
    role = f", {reply['role']}" if "role" in reply else ""
    output(args, reply, lambda r: print(f"atsd {r['version']} (protocol {r['protocol']}{role}) "
                                        f"at {c.endpoint}"))


def whoami(args) -> None:
    with client_from(args) as c:
        me = c.whoami()
    output(args, me, lambda r: print(f"{r['user']}{' (admin)' if r['admin'] else ''} at "
                                     f"{c.endpoint}"))
