"""Calendar reservations (KISS ATS): request, claim, release, extend, look up."""

from __future__ import annotations

from ..engine.errors import BadRequest, Forbidden
from ..protocol import (BOOL, CONFIG, POSITIVE_DURATION, TEXT, TIME, count,
                        list_of, one_of, optional, required)
from . import Call, command
from .selection import SELECTOR, by_selector_or_rule, release_series

MODE = one_of("exclusive", "shared")
SLOTS = count(1, 1_000_000)
COUNT = count(1, 64)


@command("check_available", errors=("bad_request", "not_found", "unavailable"),
         replies=("available", "avail_start", "avail_end", "resources"),
         resource=optional(TEXT), start_time=optional(TIME),
         end_time=optional(TIME), reservation_mode=optional(MODE, "exclusive"),
         slots=optional(SLOTS), selector=optional(SELECTOR), count=optional(COUNT, 1))
def check_available(call: Call, resource: str | None, start_time: float | None,
                    end_time: float | None, reservation_mode: str, slots: int | None,
                    selector: str | None, count: int) -> dict:
    """When a resource, or a number of matching ones, is free.

    Whether the resource is free over [start_time, end_time) (default: now, for an hour);
    when not, avail_start/avail_end give the soonest window as long. With ``selector``
    (instead of resource): whether ``count`` matching resources are free together; the reply
    lists the ``resources`` that would be taken."""
    start = call.now if start_time is None else start_time
    end = start + 3600 if end_time is None else end_time
    if end <= start:
        raise BadRequest("end_time must be after start_time")
    if resource is not None and selector is not None:
        raise BadRequest("give resource or selector, not both")
    if resource is None and selector is None:
        raise BadRequest("missing key resource (or selector)")
    if selector is not None:
        return call.app.selection.check_available(selector, count, start, end,
                                                  reservation_mode, slots)
    return call.app.calendar.check_available(resource, start, end, reservation_mode, slots)


@command("request_reservation", errors=("bad_request", "not_found", "unavailable", "forbidden"),
         replies=("pre_reservation_id", "time_available", "expire_time", "end_time", "resources",
                  "series_id", "occurrences", "conflicts", "booked_until", "reservation_id"),
         mutating=True,
         resource=optional(TEXT), resources=optional(list_of(TEXT, 64)),
         time_needed=optional(TIME), reservation_duration=optional(POSITIVE_DURATION, 3600.0),
         resource_config=optional(CONFIG), configuration=optional(CONFIG),
         reservation_mode=optional(MODE, "exclusive"), next_available=optional(BOOL, True),
         slots=optional(SLOTS), maintenance=optional(BOOL, False),
         selector=optional(SELECTOR), count=optional(COUNT), recurrence=optional(TEXT),
         partial=optional(BOOL, False), claim=optional(BOOL, False))
def request_reservation(call: Call, resource: str | None, resources: list[str] | None,
                        time_needed: float | None, reservation_duration: float,
                        resource_config: dict | None, configuration: dict | None,
                        reservation_mode: str, next_available: bool, slots: int | None,
                        maintenance: bool, selector: str | None, count: int | None,
                        recurrence: str | None, partial: bool, claim: bool) -> dict:
    """Reserve one or more resources together, for a window.

    Book [time_needed, +reservation_duration) as a pre-reservation, or the earliest window
    after it that fits when next_available. ``resources`` (a list) books several together in
    one window under one id. Claim it between time_available and expire_time. With
    ``claim``, it is confirmed at once instead: the reply has ``reservation_id``, it becomes
    ACTIVE by itself at time_available (reason ``started``) and never lapses; expire_time
    is then its end. A config (only keys the resource has) that differs from what the
    resource will have adds its reconfigure_s before time_available. ``maintenance``
    (admin) takes the window at once and warns its holders (revocation).
    ``selector`` + ``count`` (instead of names) books that many matching resources together
    (the reply lists ``resources``). ``recurrence`` (an RFC 5545 RRULE) books every occurrence
    as a confirmed reservation that starts by itself: the reply has ``series_id``,
    ``occurrences`` and ``conflicts``; all or nothing unless ``partial``."""
    if claim and (selector is not None or count is not None or recurrence is not None):
        raise BadRequest("claim is for named resources; a recurrence's occurrences are "
                         "confirmed already")
    if (resource_config is not None and configuration is not None
            and resource_config != configuration):
        raise BadRequest("resource_config and configuration differ")
    config = resource_config if resource_config is not None else configuration
    start = call.now if time_needed is None else time_needed
    if selector is not None or count is not None or recurrence is not None or partial:
        return by_selector_or_rule(call, resource, resources, selector, count, recurrence,
                                   partial, start, reservation_duration, config,
                                   reservation_mode, next_available, slots, maintenance)
    if (resource is None) == (resources is None):
        raise BadRequest("give resource or resources, not both and not neither")
    names = [resource] if resource is not None else resources
    if not names:
        raise BadRequest("resources must name at least one resource")
    if maintenance:
        if not call.caller.admin:
            raise Forbidden("maintenance reservations are for admins")
        r = call.app.revocations.maintenance(call.caller, names, start, reservation_duration,
                                             call.now)
    else:
        r = call.app.calendar.request(call.caller, names, start, reservation_duration, config,
                                      reservation_mode, next_available, slots, call.now, claim,
                                      call.request_id)
    reply = {"pre_reservation_id": r.id, "time_available": r.start,
             "expire_time": r.expire_time, "end_time": r.end}
    if claim:
        reply.update(reservation_id=r.id, expire_time=r.end)
    return reply


@command("claim_reservation",
         errors=("bad_request", "not_found", "forbidden", "conflict", "too_early", "claim_late"),
         replies=("reservation_id", "reservation_ID", "expire_time", "resource_config"),
         mutating=True, pre_reservation_id=required(TEXT))
def claim_reservation(call: Call, pre_reservation_id: str) -> dict:
    """Claim a pre-reservation: hold it until its end.

    Turn a pre-reservation into a reservation held until its end. Before time_available:
    too_early (with time_available). After expire_time: claim_late, with a fresh offer
    (pre_reservation_id, new_avail, new_expire) when one exists."""
    r = call.app.calendar.claim(call.caller, pre_reservation_id, call.now)
    config = r.config
    if config is None and r.resources:
        config = call.app.lab.resources[r.resources[0]].config
    return {"reservation_id": r.id, "reservation_ID": r.id, "expire_time": r.end,
            "resource_config": config}


@command("release_reservation", errors=("bad_request", "not_found", "forbidden", "conflict"),
         replies=("release_status", "released"),
         mutating=True, reservation_id=required(TEXT))
def release_reservation(call: Call, reservation_id: str):
    """End a (pre-)reservation now and free its slots.

    End a pre-reservation or a reservation now and free its slots (its owner or an
    admin). An ACTIVE batch reservation ends too (its jobs are stopped, reason
    ``released``); one not yet started is cancel_reservation's. Given a series_id: every
    occurrence of the series not yet ended (``released`` lists them)."""
    app = call.app
    if reservation_id not in app.lab.reservations:
        return release_series(call, reservation_id)
    r = app.lab.owned(reservation_id, call.caller)
    external = call.io.external_backend(r.extra["queue"]) if r.kind == "batch" else None
    if external is None or r.state != "RESERVATION_ACTIVE":
        app.calendar.release(call.caller, reservation_id, call.now)
        return {"release_status": True}

    async def released():
        await external.cancel(r.extra["backend_ref"])
        app.calendar.release(call.caller, reservation_id, call.io.clock())
        return {"release_status": True}
    return released()


@command("extend_reservation",
         errors=("bad_request", "not_found", "forbidden", "conflict", "unavailable"),
         replies=("expire_time",),
         mutating=True, reservation_id=required(TEXT),
         extra_s=required(POSITIVE_DURATION))
def extend_reservation(call: Call, reservation_id: str, extra_s: float) -> dict:
    """Extend a reservation, or an allocation's lease.

    Move the end of a reservation (or the lease of an allocation) later by extra_s, when
    that time is free; else unavailable with max_extension, the longest that fits."""
    r = call.app.calendar.extend(call.caller, reservation_id, extra_s, call.now)
    return {"expire_time": r.end}


@command("list_reservations", errors=("bad_request", "not_found"), replies=("reservations",),
         resource=optional(TEXT), owner=optional(TEXT),
         start_time=optional(TIME), end_time=optional(TIME))
def list_reservations(call: Call, resource: str | None, owner: str | None,
                      start_time: float | None, end_time: float | None) -> dict:
    """The live reservations.

    One row per resource booked, in start order; filtered by resource, owner and a time
    window."""
    if resource is not None:
        call.app.lab.resource(resource)
    if start_time is not None and end_time is not None and end_time <= start_time:
        raise BadRequest("end_time must be after start_time")
    return {"reservations": call.app.calendar.list(resource, owner, start_time, end_time)}

