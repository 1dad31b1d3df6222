"""Choosing by tags and standing reservations (the parts of request_reservation and
check_available that take ``selector``/``count`` or ``recurrence``), and service state."""

from __future__ import annotations

from typing import Any

from ..engine.errors import BadRequest
from ..engine.selector import MAX_LENGTH
from ..engine.service import ADMIN
from ..protocol import TEXT, one_of, optional, required
from . import Call, command


def SELECTOR(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string, not {type(value).__name__}")
    if not value or len(value) > MAX_LENGTH:
        raise BadRequest(f"{key} must be 1 to {MAX_LENGTH} characters")
    return value


def by_selector_or_rule(call: Call, resource: str | None, resources: list[str] | None,
                        selector: str | None, count: int | None, recurrence: str | None,
                        partial: bool, start: float, duration: float, config: dict | None,
                        mode: str, next_available: bool, slots: int | None,
                        maintenance: bool) -> dict:
    """request_reservation with a selector or a recurrence."""
    if maintenance:
        raise BadRequest("maintenance names its resources and takes one window: "
                         "no selector, count or recurrence")
    named = [resource] if resource is not None else resources
    if (named is None) == (selector is None):
        raise BadRequest("give resource, resources or selector (one of them)")
    if named == []:
        raise BadRequest("resources must name at least one resource")
    if count is not None and selector is None:
        raise BadRequest("count goes with selector")
    if partial and recurrence is None:
        raise BadRequest("partial goes with recurrence")
    count = 1 if count is None else count
    if recurrence is not None:
        return call.app.series.request(call.caller, named, selector, count, start, duration,
                                       config, mode, slots, recurrence, partial, call.now)
    r = call.app.selection.request(call.caller, selector, count, start, duration, config,
                                   mode, next_available, slots, call.now)
    return {"pre_reservation_id": r.id, "time_available": r.start,
            "expire_time": r.expire_time, "end_time": r.end, "resources": r.resources}


def release_series(call: Call, series_id: str) -> dict:
    """release_reservation given a series_id: every occurrence not yet ended."""
    return {"release_status": True,
            "released": call.app.series.release(call.caller, series_id, call.now)}


@command("set_resource_state", errors=("bad_request", "not_found", "forbidden", "conflict"),
         replies=("resource", "service", "reason", "changed"),
         mutating=True, admin=True, resource=required(TEXT),
         state=required(one_of("up", "down")), reason=optional(TEXT))
def set_resource_state(call: Call, resource: str, state: str, reason: str | None) -> dict:
    """Take a resource down or bring it back up.

    Take a resource down (nothing new is booked on it; the reservations booked on it get
    reservation.degraded, and those made by selector are given a replacement) or bring it
    back up. Published on resource.state. ``changed`` is false when it already was so."""
    if state == "down" and reason is None:
        raise BadRequest("say why it goes down: reason")
    changed = call.app.service.set_state(resource, state == "up", reason or "up", ADMIN,
                                         call.now)
    service, why = call.app.service.state(call.app.lab.resources[resource])
    return {"resource": resource, "service": service, "reason": why, "changed": changed}
