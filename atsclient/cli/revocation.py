"""Revocation subcommands: take nodes back with a countdown, put them back, node values; and
the body of ``watch``, which follows events gap-free and counts revocations down live."""

from __future__ import annotations

import asyncio
import json
import sys
import time

from ..client import AsyncATSClient
from ..events import Subscriber
from ..wire import (DELETE_COMPLETE, DELETE_PENDING, JOB_STATUS, RESERVATION_DEGRADED,
                    RESERVATION_EXPIRING, RESERVATION_REPLACED, RESERVATION_STATUS,
                    RESOURCE_STATE, RESOURCE_VALUES, TOPICS)
from . import (UsageError, add_command, client_from, curve_from, events_endpoint, fmt_duration,
               fmt_time, for_json, output, parse_duration, positive, print_table, retries_said)


WIRE = {"revoke": "revoke NODE", "ack_delete_pending": "ack NODE",
        "restore": "restore NODE", "set_resource_values": "values NODE=VALUE",
        "get_resource_values": "values", "get_events": "watch"}


def register(sub, common) -> None:
    p = add_command(sub, common, "revoke", "revoke")
    p.add_argument("nodes", nargs="+", metavar="NODE", help="resources to take back")
    p.add_argument("--max-wait", required=True,
                   help="how long holders have to let go (0: at once), e.g. 5m")
    p.add_argument("--reason", help="told to the holders")
    p.set_defaults(func=revoke)

    p = add_command(sub, common, "ack", "ack_delete_pending")
    p.add_argument("nodes", nargs="+", metavar="NODE", help="nodes under a countdown")
    p.set_defaults(func=ack)

    p = add_command(sub, common, "restore", "restore")
    p.add_argument("nodes", nargs="+", metavar="NODE", help="revoked resources")
    p.set_defaults(func=restore)

    p = add_command(sub, common, "values", "get_resource_values",
                    "A node's value says how much the lab wants it kept: elastic holders "
                    "(elasticslice) give back the lowest-valued nodes first when asked to "
                    "shrink. Without arguments, every node's value (- where none is set); "
                    "with NODE=VALUE pairs, set them (admin), published on the "
                    "resource.values topic.")
    p.add_argument("pairs", nargs="*", metavar="NODE=VALUE",
                   help="a node and its value from 0 (give it back first) to 1")
    p.set_defaults(func=values)

    p = add_command(sub, common, "watch", "get_events",
                    "Printed as they arrive, none lost; revocations count down.")
    p.add_argument("topics", nargs="*", metavar="TOPIC",
                   help="only these topics ('atsclient topics'; default all)")
    p.add_argument("--count", type=positive(int), help="stop after this many events")
    p.add_argument("--since", type=int, metavar="SEQ",
                   help="start after this event seq (what the daemon's log still holds)")
    p.set_defaults(func=watch)

    p = sub.add_parser("topics", parents=[common],
                       help="The event topics and what each event carries")
    p.set_defaults(func=topics)


def topics(args) -> None:
    """From atsclient.wire: no daemon needed."""
    data = {name: {k: v for k, v in keys.items() if k != "_"} for name, keys in TOPICS.items()}

    def human(_):
        for name, keys in TOPICS.items():
            print(f"{name}: {keys['_']}")
            for key, what in keys.items():
                if key != "_":
                    print(f"  {key:18} {what}")
        print("every event also carries topic, seq (numbered without gaps) and ts (when)")
    output(args, data, human)


def revoke(args) -> None:
    with client_from(args) as c:
        reply = c.call("revoke", nodelist=[{"node_id": n} for n in args.nodes],
                       max_wait_time=parse_duration(args.max_wait),
                       **({"reason": args.reason} if args.reason else {}))
    output(args, {"revocation_id": reply["revocation_id"], "deadline": reply["deadline"]},
           lambda r: print(f"revocation {r['revocation_id']}: {' '.join(args.nodes)} go at "
                           f"{fmt_time(r['deadline'])}"))


def ack(args) -> None:
    with client_from(args) as c:
        gone = c.ack_delete_pending(args.nodes)
    output(args, {"acknowledged": gone}, lambda r: print(
        f"gone now: {' '.join(gone)}" if gone else "none of them was being revoked"))


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
            if not args.json:
                print("value: 0 = give it back first, 1 = keep it longest", file=sys.stderr)
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
    client = retries_said(args, AsyncATSClient(args.server, timeout=args.timeout,
                                               retries=args.retries, user=args.user,
                                               **curve_from(args)))
    ticker = asyncio.get_running_loop().create_task(_tick(pending)) if live else None
    n = 0
    try:
        async with Subscriber(args.server, events_endpoint(args), args.topics or None,
                              since_seq=args.since, client=client) as sub:
            async for event in sub:
                _track(pending, event)
                if args.json:
                    print(json.dumps(for_json(event)), flush=True)
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


def _state(state: str | None) -> str:
    return "new" if state is None else state.removeprefix("RESERVATION_").lower()


def _line(event: dict) -> str:
    """One line a person reads: when, seq, what happened in words, times local."""
    topic = event["topic"]
    if topic == RESERVATION_STATUS:
        kind = {"pre": "reservation", "claimed": "reservation"}.get(event["kind"], event["kind"])
        now = _state(event["reservation_status"])
        detail = (f"{kind} {event['reservation_id']} of {event['owner']} on "
                  f"{', '.join(event['resources'])}: {_state(event['previous'])} -> {now}"
                  f"{'' if event['reason'] == now else ' (' + event['reason'] + ')'}, "
                  f"{fmt_time(event['start_time'])} to {fmt_time(event['end_time'])}")
    elif topic == RESERVATION_EXPIRING:
        detail = (f"{event['reservation_id']} of {event['owner']} on "
                  f"{', '.join(event['resources'])} ends in {fmt_duration(event['remaining'])},"
                  f" at {fmt_time(event['end_time'])}")
    elif topic == JOB_STATUS:
        detail = (f"job {event['job_id']} of {event['owner']} in {event['reservation_id']}: "
                  f"{_state(event['previous'])} -> {event['state'].lower()}"
                  + (f", exit code {event['exit_code']}" if event["exit_code"] is not None
                     else ""))
    elif topic == DELETE_PENDING:
        detail = (f"revocation {event['revocation_id']} ({event['reason'] or 'no reason'}): "
                  f"{', '.join(_holder(e) for e in event['nodelist'])} go in "
                  f"{fmt_duration(event['max_wait_time'])}, at {fmt_time(event['deadline'])}")
    elif topic == DELETE_COMPLETE:
        detail = (f"revocation {event['revocation_id']}"
                  f"{' complete' if event['final'] else ''}: gone "
                  f"{', '.join(_holder(e) for e in event['nodelist'])}")
    elif topic == RESOURCE_VALUES:
        detail = " ".join(f"{e['node_id']}={e['value']}" for e in event["nodelist"])
    elif topic == RESOURCE_STATE:
        detail = (f"{event['resource']} is {event['service']}"
                  + (f" ({event['reason']})" if event["reason"] else "") + f", by {event['by']}")
    elif topic == RESERVATION_DEGRADED:
        detail = (f"{event['reservation_id']} of {event['owner']}: {event['resource']} is "
                  f"down ({event['reason']})")
    elif topic == RESERVATION_REPLACED:
        detail = (f"{event['reservation_id']} of {event['owner']}: {event['new']} instead of "
                  f"{event['old']}, {fmt_time(event['start_time'])} to "
                  f"{fmt_time(event['end_time'])}")
    else:                                   # a topic newer than this client
        detail = json.dumps(for_json({k: v for k, v in event.items()
                                      if k not in ("topic", "seq", "ts")}))
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
