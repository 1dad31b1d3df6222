"""Commands that describe the lab and its history without changing anything."""

from __future__ import annotations

import math

from .. import __version__
from ..engine.events import TOPICS
from ..protocol import PROTOCOL_VERSION, TEXT, count, list_of, one_of, optional, required, CONFIG
from . import Call, command
from .selection import SELECTOR


@command("get_version", errors=("bad_request",), replies=("version", "protocol", "role"))
def get_version(call: Call) -> dict:
    """The daemon's version, the wire protocol version it speaks, and its role.

    ``role`` is ``leader``, or ``standby`` for one of several atsd on one PostgreSQL
    database that does not serve now (every other command answers ``standby`` there, see
    docs/ha.md)."""
    return {"version": __version__, "protocol": PROTOCOL_VERSION, "role": call.io.role}


@command("whoami", errors=("bad_request",), replies=("user", "admin"))
def whoami(call: Call) -> dict:
    """Who the daemon sees you as, and whether you are an admin.

    The key's name under CURVE, else the name the request gives."""
    return {"user": call.caller.user, "admin": call.caller.admin}


@command("get_all_resources", errors=("bad_request",), replies=("resource_list",))
def get_all_resources(call: Call) -> dict:
    """Names of every resource in the inventory."""
    return {"resource_list": list(call.app.lab.resources)}


@command("get_available_resources", errors=("bad_request",), replies=("resource_list",))
def get_available_resources(call: Call) -> dict:
    """Names of the resources in service that nobody holds right now."""
    return {"resource_list": [r.name for r in call.app.lab.resources.values()
                              if r.bookable and r.timeline.used_slots(call.now) == 0]}


def resource_row(lab, res, now: float, service: tuple[str, str | None]) -> dict:
    used = res.timeline.used_slots(now)
    state = ("out_of_service" if not res.bookable else
             "free" if used == 0 else "full" if used >= res.slots else "partly_used")
    held = res.timeline.overlapping(now, math.nextafter(now, math.inf))
    holders = [{"owner": lab.reservations[b.reservation_id].owner,
                "reservation_id": b.reservation_id, "end_time": b.end} for b in held]
    return {"name": res.name, "type": res.type, "slots": res.slots, "free_slots": res.slots - used,
            "config": res.config, "tags": res.tags, "state": state, "value": res.value,
            "service": service[0], "service_reason": service[1], "holders": holders}


@command("list_resources", errors=("bad_request",),
         replies=("resources",), type=optional(TEXT), tags=optional(CONFIG),
         selector=optional(SELECTOR))
def list_resources(call: Call, type: str | None, tags: dict | None,
                   selector: str | None) -> dict:
    """Every resource, its state, and who holds it until when.

    Every resource with its type, slots, config, tags and state now (free, partly_used,
    full, out_of_service), its ``service`` (up, down, revoked, retired) with
    ``service_reason``, and its ``holders`` now: [{owner, reservation_id, end_time}];
    filtered by type, by tags (all given tags must match) and by a selector."""
    chosen = (call.app.lab.resources.values() if selector is None
              else call.app.selection.matching(selector))
    rows = [resource_row(call.app.lab, r, call.now, call.app.service.state(r)) for r in chosen
            if (type is None or r.type == type)
            and all(r.tags.get(k) == v for k, v in (tags or {}).items())]
    return {"resources": rows}


@command("get_config", errors=("bad_request", "not_found"),
         replies=("resource", "config"), resource=required(TEXT))
def get_config(call: Call, resource: str) -> dict:
    """The resource's current config."""
    return {"resource": resource, "config": call.app.lab.resource(resource).config}


@command("get_events", errors=("bad_request",),
         replies=("events", "last_seq", "first_seq", "complete"),
         since_seq=required(count(0, 2**62)),
         topics=optional(list_of(one_of(*TOPICS), 16)), limit=optional(count(1, 10_000), 1000))
def get_events(call: Call, since_seq: int, topics: list[str] | None, limit: int) -> dict:
    """The events since a sequence number, so that a follower misses none.

    Events with seq greater than since_seq, oldest first, at most limit. ``complete`` is
    false when the log no longer reaches back to since_seq + 1 (events were dropped from it);
    ``first_seq`` says where it starts."""
    return call.app.events.since(since_seq, topics, limit)
