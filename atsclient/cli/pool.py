"""Slot pool subcommands: ``pool`` (free/total per instance), ``checkout``, ``checkin``, and
``run``, which holds CTest resource groups for as long as a command runs.

``run`` is what ``ctest --resource-spec-file`` does for one test, with atsd as the pool:
it checks out every group at once (one allocation), starts the command with exactly the
``CTEST_RESOURCE_GROUP_*`` variables CTest would set, renews the lease every third of it
while the command runs, checks in when the command ends (however it ends: a signal sent to
atsclient is passed on to the command first) and exits with the command's status. If
atsclient itself is killed, nothing checks in, and the slots come back when the lease
ends: keep ``--lease`` short for that.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid

from ..errors import ATSError, Conflict
from ..resource_groups import (allocation_by_group, ctest_environment, flatten_groups,
                               parse_resource_groups)
from . import (UsageError, add_command, client_from, each_id, fmt_time, output, parse_duration,
               print_table, waiting)


WIRE = {"get_pool": "pool", "accommodates": "checkout --check", "checkout": "checkout",
        "checkin": "checkin", "cancel_request": "checkout --wait"}   # on Ctrl-C or SIGTERM


def register(sub, common) -> None:
    p = add_command(sub, common, "pool", "get_pool")
    p.set_defaults(func=pool)

    p = add_command(sub, common, "checkout", "checkout",
                    "GROUPS as CTest's RESOURCE_GROUPS write them, e.g. gpus:2,cpus:4.")
    p.add_argument("spec", metavar="GROUPS", help="what to check out, e.g. gpus:2,cpus:4 or "
                   "2,gpus:1 (two requirements of one gpu slot each)")
    _holding_options(p)
    p.add_argument("--check", action="store_true",
                   help="only say whether it would be granted now (nothing is booked)")
    p.set_defaults(func=checkout)

    p = add_command(sub, common, "checkin", "checkin")
    p.add_argument("ids", nargs="+", metavar="ID", help="allocation ids; each is reported")
    p.set_defaults(func=checkin)

    p = sub.add_parser("run", parents=[common],
                       help="Run a command holding CTest resource groups, with CTest's "
                            "environment")
    p.add_argument("--resources", required=True, metavar="GROUPS",
                   help="CTest RESOURCE_GROUPS, e.g. '2,gpus:2;gpus:4,crypto_chips:2'")
    _holding_options(p)
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS",
                   help="the command to run holding the slots")
    p.set_defaults(func=run)


def _holding_options(p) -> None:
    p.add_argument("--wait", default="0", help="wait this long for the slots (e.g. 10m; "
                   "default: do not wait)")
    p.add_argument("--lease", help="hold them this long unless renewed (default: the "
                   "daemon's default lease)")
    p.add_argument("--priority", type=int, help="place in the wait queue: higher first")


def _request(text: str) -> tuple[list[list[tuple[str, int]]], list[dict]]:
    try:
        groups = parse_resource_groups(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return groups, [{"type": t, "slots": n} for t, n in flatten_groups(groups)]


def _checkout(c, request: list[dict], args) -> dict:
    wait = parse_duration(args.wait)
    request_id = uuid.uuid4().hex
    with waiting(f"waiting for {args.spec if hasattr(args, 'spec') else args.resources}",
                 wait if wait else None, args.json, lambda: _place(args, request_id)):
        return c.checkout(request, lease_s=parse_duration(args.lease) if args.lease else None,
                          wait_s=wait or None, priority=args.priority, request_id=request_id)


def _place(args, request_id: str) -> str | None:
    """``3rd in line for gpus:2``: where checkout ``request_id`` waits (None when it does
    not wait, or the daemon does not say in time). Its own client: the checkout's socket
    is busy, and sockets are not shared between threads."""
    try:
        with client_from(args) as c:
            c.retries = 1
            queue = c.pool_waiting()
    except ATSError:
        return None
    for n, w in enumerate(queue, 1):
        if w.get("request_id") == request_id:
            asked = ",".join(f"{r['type']}:{r['slots']}" for r in w["request"])
            return f"{ordinal(n)} in line for {asked}"
    return None


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 < 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def pool(args) -> None:
    with client_from(args) as c:
        data = c.get_pool()
    output(args, data, lambda d: print_table(
        [{"type": t, "id": i["id"], "free": i["slots"], "total": i["total"]}
         for t, insts in d["resources"].items() for i in insts],
        ["type", "id", "free", "total"]))


def checkout(args) -> None:
    _, request = _request(args.spec)
    if not request:
        raise UsageError(f"{args.spec!r} asks for no slots")
    if args.check:
        with client_from(args) as c:
            ok, reason = c.accommodates(request)
        output(args, {"accommodates": ok, "reason": reason}, lambda r: print(
            f"{args.spec} would be granted now" if ok else f"{args.spec} would not: {reason}"))
        return
    with client_from(args) as c:
        reply = _checkout(c, request, args)

    def human(r):
        print(f"checked out {r['allocation_id']} until {fmt_time(r['expire_time'])}")
        for t, entries in r["resources"].items():
            print(f"  {t}: " + ", ".join(f"{e['id']} ({e['slots']} slot"
                                         f"{'s' if e['slots'] != 1 else ''})" for e in entries))
    output(args, reply, human)


def checkin(args) -> None:
    each_id(args, lambda c, aid: c.checkin(aid), "allocation_id", "checked_in", "checked in")


def run(args) -> int:
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise UsageError("give the command to run after --")
    groups, request = _request(args.resources)
    with client_from(args) as c:
        reply = _checkout(c, request, args) if request else None
        try:
            ids = {t: [e["id"] for e in entries]
                   for t, entries in (reply["resources"] if reply else {}).items()}
            env = ctest_environment(groups, allocation_by_group(groups, ids))
            lease = parse_duration(args.lease) if args.lease else None
            return _run_holding(c, reply, lease, cmd, env)
        finally:
            if reply is not None:
                _checkin(c, reply["allocation_id"])


def _checkin(c, allocation_id: str) -> None:
    """Check in after the command; a failure is reported but never hides its status."""
    try:
        c.checkin(allocation_id)
    except Conflict:
        pass                                # the lease had already ended
    except ATSError as exc:
        print(f"atsclient: could not check in {allocation_id} (its lease will end it): "
              f"{exc.code}: {exc.message}", file=sys.stderr)


def _run_holding(c, reply: dict | None, lease: float | None, cmd: list[str],
                 env: dict[str, str]) -> int:
    """Run ``cmd`` to its end, renewing the allocation's lease meanwhile; its exit status
    (128 + N when a signal N ended it, as shells report it)."""
    try:
        child = subprocess.Popen(cmd, env={**os.environ, **env})
    except OSError as exc:
        raise UsageError(f"cannot run {cmd[0]}: {exc.strerror or exc}") from None

    def forward(signum, frame):
        child.send_signal(signum)
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if reply is None:
            status = child.wait()
        else:
            status = _renewing(c, reply, lease, child)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 128 - status if status < 0 else status


def _renewing(c, reply: dict, lease: float | None, child: subprocess.Popen) -> int:
    """Wait for ``child``, keeping the lease as long as it was at checkout (``lease``, or
    the daemon's default as its expire_time tells)."""
    expire = reply["expire_time"]
    if lease is None:
        lease = max(expire - time.time(), 0.1)
    while True:
        try:
            return child.wait(timeout=lease / 3)
        except subprocess.TimeoutExpired:
            pass
        extra = time.time() + lease - expire
        if extra <= 0:
            continue
        try:
            expire = c.extend_reservation(reply["allocation_id"], extra)
        except ATSError as exc:
            print(f"atsclient: could not renew {reply['allocation_id']}: {exc.code}: "
                  f"{exc.message}", file=sys.stderr)
