"""Service state: take a resource down (nothing new is booked on it) or bring it up."""

from __future__ import annotations

from . import add_command, client_from, output


WIRE = {"set_resource_state": "set-state NAME"}


def register(sub, common) -> None:
    p = add_command(sub, common, "set-state", "set_resource_state")
    p.add_argument("name", help="the resource")
    p.add_argument("state", choices=("up", "down"), help="up or down")
    p.add_argument("--reason", help="why (required for down); told to its holders")
    p.set_defaults(func=set_state)


def set_state(args) -> None:
    request = {"resource": args.name, "state": args.state}
    if args.reason is not None:
        request["reason"] = args.reason
    with client_from(args) as c:
        reply = c.set_resource_state(**request)
    output(args, reply, lambda r: print(
        f"{r['resource']} is {r['service']}" + (f" ({r['reason']})" if r["reason"] else "")
        + ("" if r["changed"] else " already")))
