"""Slot pools (canary ResourcePool / CTest resource allocation): accommodates, checkout,
checkin, get_pool. A lease is renewed with ``extend_reservation`` like any reservation."""

from __future__ import annotations

import asyncio

from ..engine.errors import BadRequest, EngineError, Unavailable
from ..engine.lab import Reservation
from ..engine.pool import Waiter
from ..protocol import (DURATION, POSITIVE_DURATION, TEXT, count, list_of, map_of, optional,
                        required)
from . import Call, command

REQUEST = list_of(map_of(type=required(TEXT), slots=required(count(1, 1_000_000))), 1000)
PRIORITY = count(-1_000_000, 1_000_000)

# How long past its wait_s a waiting checkout gives up on hearing from the engine. The
# engine answers at wait_s itself (and at once when a failed commit drops the waiters);
# this is only a guard against a waiter the engine never answers, so it must never come
# first: an answer from here leaves the waiter queued, to be granted slots nobody takes.
# A step of the wall clock too small to count as a jump (monitor.ClockWatch.THRESHOLD_S,
# 60 s) is not moved out of the engine's deadline, so the guard waits longer than such a
# step.
ANSWER_MARGIN_S = 65.0


def _pairs(request: list[dict]) -> list[tuple[str, int]]:
    if not request:
        raise BadRequest("request must hold at least one {type, slots}")
    return [(item["type"], item["slots"]) for item in request]


def _granted(r: Reservation) -> dict:
    return {"allocation_id": r.id, "resources": r.extra["resources"], "expire_time": r.end}


@command("accommodates", errors=("bad_request",),
         replies=("accommodates", "reason"), request=required(REQUEST))
def accommodates(call: Call, request: list[dict]) -> dict:
    """Whether a checkout would be granted now, and why not.

    Whether a checkout of ``request`` (a list of {type, slots}) with the default lease
    would be granted now; when not, ``reason`` says which types are missing or short
    (requested vs available) or that waiting requests go first. Always agrees with
    checkout: both run the same placement."""
    ok, reason = call.app.pool.accommodates(_pairs(request), call.app.config.default_lease_s,
                                            call.now)
    return {"accommodates": ok, "reason": reason}


@command("checkout", errors=("bad_request", "unavailable", "forbidden", "conflict"),
         replies=("allocation_id", "resources", "expire_time"),
         mutating=True, request=required(REQUEST),
         lease_s=optional(POSITIVE_DURATION), wait_s=optional(DURATION, 0.0),
         priority=optional(PRIORITY, 0))
def checkout(call: Call, request: list[dict], lease_s: float | None, wait_s: float,
             priority: int):
    """Check out slots of several types now, all or nothing, for a lease.

    Book slots of several types now, all or nothing, placed as CTest places them, until
    the lease ends (``lease_s``, default from the config; renew with extend_reservation).
    Returns ``allocation_id``, ``resources`` ({type: [{id, slots}]}, one entry per
    requirement in request order) and ``expire_time``. With ``wait_s``, a request that does
    not fit waits up to that long, served by ``priority`` (higher first) then arrival; it
    stops waiting when its client closes the connection, or sends cancel_request."""
    lease = call.app.config.default_lease_s if lease_s is None else lease_s
    got = call.app.pool.checkout(call.caller, _pairs(request), lease, call.now, wait_s,
                                 priority, call.request_id, before_waiting=call.check_may_wait)
    if isinstance(got, Waiter):
        # set up now, not when the task first runs: the waiter may be served before that
        future = asyncio.get_running_loop().create_future()

        def notify(w: Waiter) -> None:
            if not future.done():
                future.set_result(w.result)
        got.notify = notify
        return _answer(future, wait_s)
    return _granted(got)


async def _answer(future: asyncio.Future, wait_s: float) -> dict:
    try:
        result = await asyncio.wait_for(future, wait_s + ANSWER_MARGIN_S)
    except asyncio.TimeoutError:
        raise Unavailable(f"no slots within {wait_s:g}s") from None
    if isinstance(result, EngineError):
        raise result
    return _granted(result)


@command("checkin", errors=("bad_request", "not_found", "forbidden", "conflict"),
         replies=("released",), mutating=True, allocation_id=required(TEXT))
def checkin(call: Call, allocation_id: str) -> dict:
    """Give an allocation's slots back now.

    Its owner or an admin may."""
    call.app.pool.checkin(call.caller, allocation_id, call.now)
    return {"released": True}


@command("cancel_request", errors=("bad_request",),
         replies=("cancelled",), mutating=True, cached=False,
         request_id=required(TEXT))
def cancel_request(call: Call, request_id: str) -> dict:
    """Stop a request that still waits, and give back what it booked.

    Stop the caller's request ``request_id``: a checkout waiting with wait_s leaves the
    queue, and what it booked (an allocation granted meanwhile, a request_reservation's
    booking) is released, for a client that gave up on the reply. ``cancelled`` is false
    when nothing of it waits or is held. The request_id is the cancelled request's, so this
    reply is not kept for retries; repeating it does no harm."""
    return {"cancelled": call.app.pool.cancel(call.caller.user, request_id,
                                              "cancel_request", call.now)}


@command("get_pool", errors=("bad_request",), replies=("resource_pool", "waiting"))
def get_pool(call: Call) -> dict:
    """Free and total slots per instance, and the checkouts waiting.

    The pool in canary's shape: ``{additional_properties, resources: {type: [{id, slots,
    total}]}}``, ``slots`` free now; ``waiting`` is the checkout queue in service order
    ([{owner, request, priority, since, wait_until, request_id}]; ``request_id`` is the
    checkout's own for the caller's requests, null for others')."""
    return {"resource_pool": call.app.pool.get_pool(call.now),
            "waiting": call.app.pool.waiting(call.caller.user)}
