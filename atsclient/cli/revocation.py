"""Revocation subcommands: take nodes back with a countdown, put them back, node values; and
the body of ``watch``, which follows events gap-free and counts revocations down live."""

from __future__ import annotations

import asyncio
import json
import sys
import time

from ..client import AsyncATSClient
from ..events import DELETE_COMPLETE, DELETE_PENDING, RESOURCE_VALUES, Subscriber
from . import (UsageError, client_from, curve_from, events_endpoint, fmt_duration, fmt_time,
               output, parse_duration, print_table)


def register(sub, common) -> None:
    p = sub.add_parser("revoke", parents=[common],
                       help="take nodes back (admin): holders get a countdown")
    p.add_argument("nodes", nargs="+", metavar="NODE")
    p.add_argument("--max-wait", required=True,
                   help="how long holders have to let go (0: at once), e.g. 5m")
    p.add_argument("--reason", help="told to the holders")
    p.set_defaults(func=revoke)

    p = sub.add_parser("restore", parents=[common], help="put revoked nodes back (admin)")
    p.add_argument("nodes", nargs="+", metavar="NODE")
    p.set_defaults(func=restore)

    p = sub.add_parser("values", parents=[common],
                       help="show node values, or set them (admin): NODE=VALUE, 0 to 1")
    p.add_argument("pairs", nargs="*", metavar="NODE=VALUE")
    p.set_defaults(func=values)

    p = sub.add_parser("watch", parents=[common],
                       help="print events as they arrive, none lost; revocations count down")
    p.add_argument("topics", nargs="*", metavar="TOPIC")
    p.add_argument("--count", type=int, help="stop after this many events")
    p.add_argument("--since", type=int, metavar="SEQ",
                   help="start after this event seq (what the daemon's log still holds)")
    p.set_defaults(func=watch)


def revoke(args) -> None:
    with client_from(args) as c:
        reply = c.call("revoke", nodelist=[{"node_id": n} for n in args.nodes],
                       max_wait_time=parse_duration(args.max_wait),
                       **({"reason": args.reason} if args.reason else {}))
    output(args, {"revocation_id": reply["revocation_id"], "deadline": reply["deadline"]},
           lambda r: print(f"revocation {r['revocation_id']}: {' '.join(args.nodes)} go at "
                           f"{fmt_time(r['deadline'])}"))


def restore(args) -> None:
    with client_from(args) as c:
        restored = c.restore(args.nodes)
    output(args, {"restored": restored}, lambda r: print(
        f"back in service: {' '.join(restored)}" if restored else "none was out of service"))


def values(args) -> None:
    with client_from(args) as c:
        if not args.pairs:
            current = c.get_resource_values()
            output(args, current, lambda v: print_table(
                [{"node": n, "value": x} for n, x in v.items()], ["node", "value"]))
            return
        updated = c.set_resource_values(_values(args.pairs))
    output(args, {"updated": updated}, lambda r: print(f"updated {' '.join(updated)}"))


def _values(pairs: list[str]) -> dict[str, float]:
    out = {}
    for pair in pairs:
        node, sep, text = pair.partition("=")
        try:
            value = float(text)
        except ValueError:
            value = None
        if not sep or not node or value is None or not 0 <= value <= 1:
            raise UsageError(f"values are NODE=VALUE with VALUE from 0 to 1, not {pair!r}")
        out[node] = value
    return out


# --- watch ---

def watch(args) -> None:
    asyncio.run(_watch(args))


async def _watch(args) -> None:
    """Every event once, in order, as a line (or JSON); on a terminal, a status line below
    counts each pending revocation down to its deadline, second by second."""
    pending: dict[str, tuple[float, list[str]]] = {}     # revocation id -> deadline, nodes
    live = sys.stdout.isatty() and not args.json
    client = AsyncATSClient(args.server, timeout=args.timeout, retries=args.retries,
                            user=args.user, **curve_from(args))
    ticker = asyncio.get_running_loop().create_task(_tick(pending)) if live else None
    n = 0
    try:
        async with Subscriber(args.server, events_endpoint(args), args.topics or None,
                              since_seq=args.since, client=client) as sub:
            async for event in sub:
                _track(pending, event)
                if args.json:
                    print(json.dumps(event, default=str), flush=True)
                else:
                    print(("\r\x1b[K" if live else "") + _line(event), flush=True)
                    if live:
                        _status(pending)
                n += 1
                if args.count is not None and n >= args.count:
                    break
    finally:
        if ticker is not None:
            ticker.cancel()
        await client.close()


def _track(pending: dict, event: dict) -> None:
    if event["topic"] == DELETE_PENDING:
        pending[event["revocation_id"]] = (
            event["deadline"], list(dict.fromkeys(n["node_id"] for n in event["nodelist"])))
    elif event["topic"] == DELETE_COMPLETE and event["final"]:
        pending.pop(event["revocation_id"], None)


def _holder(entry: dict) -> str:
    client = entry.get("client_id")
    return entry["node_id"] + (f" ({entry['owner']} {client})" if client else "")


def _line(event: dict) -> str:
    topic = event["topic"]
    if topic == DELETE_PENDING:
        detail = (f"revocation {event['revocation_id']} ({event['reason'] or 'no reason'}): "
                  f"{', '.join(_holder(e) for e in event['nodelist'])} go in "
                  f"{fmt_duration(event['max_wait_time'])}, at {fmt_time(event['deadline'])}")
    elif topic == DELETE_COMPLETE:
        detail = (f"revocation {event['revocation_id']}"
                  f"{' complete' if event['final'] else ''}: gone "
                  f"{', '.join(_holder(e) for e in event['nodelist'])}")
    elif topic == RESOURCE_VALUES:
        detail = " ".join(f"{e['node_id']}={e['value']}" for e in event["nodelist"])
    else:
        detail = " ".join(f"{k}={v}" for k, v in event.items()
                          if k not in ("topic", "seq", "ts"))
    return f"{fmt_time(event['ts'])} #{event['seq']} {topic} {detail}"


def _status(pending: dict) -> None:
    now = time.time()
    shown = [f"{', '.join(nodes)} go in {fmt_duration(deadline - now)}"
             for deadline, nodes in pending.values() if deadline > now]
    print("\r\x1b[K" + ("revoking: " + " | ".join(shown) if shown else ""), end="", flush=True)


async def _tick(pending: dict) -> None:
    while True:
        _status(pending)
        await asyncio.sleep(1.0)
