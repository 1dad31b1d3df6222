"""Typed slot pools (canary's ResourcePool, CTest's resource allocation) on the lab's timelines.

The pool is every resource named ``TYPE/ID`` whose type is TYPE (what a resource spec file
becomes). A ``checkout`` of ``[(type, slots), ...]`` is placed by CTest's bin packer
(placement.py) on the slots each instance has free over the whole lease, ``[now, now +
lease_s)``, and booked, all or nothing, as one ``allocation`` reservation: ACTIVE from now,
ending when the lease does unless renewed (``extend_reservation``), ended early by
``checkin``. Its bookings are shared bookings, so they sit beside other shared bookings
while slots remain and never beside an exclusive calendar booking: the timelines decide,
as for every other kind of reservation. Requirements placed on the same instance are one
booking with their slots summed (an extension checks each booking on its own, so two
bookings of one reservation on one instance could together be extended past capacity);
the per-requirement answer, in CTest's shape, is kept in the reservation's ``extra``.

``accommodates`` and ``checkout`` without waiting share one decision (``_offer``), so
``accommodates`` says yes exactly when such a checkout would be granted, and its reason is
the one the checkout would be refused with.

Waiting
-------
A checkout with ``wait_s`` that cannot be granted now becomes a ``Waiter``; a request that
can never fit (a missing type, more slots than exist, sizes no instance can hold) is
refused at once instead. Waiters are ordered by priority (higher first), then arrival.
Whenever slots of the pool are freed (a reservation on it ended, or resources came back:
``Lab._react``), the waiters are tried in that order and each one that fits now is
granted. A waiter whose ``wait_s`` runs out is tried once more, alone, and else answered
``unavailable`` with the reason it still does not fit.

Waits end in O(log n) each, however many wait: each deadline is a timer on the lab's heap,
the queue is a sorted list (removal by binary search), and a waiter that leaves it is
looked up by id, never searched for. A timer of a waiter that was granted meanwhile finds
no waiter and does nothing (lazy deletion). Only a *starving* waiter (below) holds others
back, so only its departure makes the queue worth trying again.

Anti-starvation rule (bounded bypass): granting a request *passes over* every waiter
ordered before it (same or higher priority, earlier arrival) that wants a type it also
takes. A waiter that has been passed over ``MAX_BYPASS`` times is *starving*: from then on
no request ordered after it that shares a type with it is granted, neither a new checkout
nor a later waiter, until the starving waiter is granted or its wait ends. Slots of its
types then only accumulate (leases end, holders check in), so a big request is served
after at most ``MAX_BYPASS`` smaller ones overtook it, instead of never. Requests for other
types are not held up (each type is packed on its own, so they cannot delay it), and a
higher priority still goes first. Calendar reservations are not part of the queue.

Waiters belong to a connection, not to the lab: they are not stored, and a daemon restart
forgets them (their clients time out and may ask again). A client that stops waiting names
its request (``cancel``, by the request_id it sent): the waiter leaves the queue, and if it
was granted meanwhile (the reply crossed the cancel), that allocation is released
(``Lab.booked_by``), so nothing is left held that nobody will use.

Pure: no I/O, no clock. The engine sets ``waiter.result`` (a Reservation or the
EngineError to answer with) and calls ``waiter.notify(waiter)`` if the caller set one; the
command layer uses that to wake the request that waits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import attrgetter
from typing import Callable

from sortedcontainers import SortedKeyList

from . import placement, states
from .errors import Conflict, EngineError, Unavailable
from .lab import Caller, Lab, Reservation, Resource, new_id, settles
from .timeline import Booking

# How often a waiter may be overtaken by later requests for a type it wants before it
# holds them back (see the module docstring).
MAX_BYPASS = 8

Request = list[tuple[str, int]]


@dataclass(slots=True, eq=False)
class Waiter:
    """A checkout waiting for slots."""

    id: str
    owner: str
    request: Request
    lease_s: float
    priority: int
    since: float
    deadline: float
    order: tuple[int, int]      # its place in the queue: (-priority, arrival)
    request_id: str | None = None   # the client's id for the request, to cancel it by
    bypassed: int = 0           # times a later request was granted slots of its types
    result: Reservation | EngineError | None = None
    notify: Callable[[Waiter], None] | None = field(default=None, repr=False)
    types: frozenset[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.types = frozenset(t for t, _ in self.request)


class Pool:
    def __init__(self, lab: Lab, additional_properties: dict | None = None) -> None:
        self.lab = lab
        self.additional_properties = dict(additional_properties or {})   # canary's, as given
        # type -> {id: resource}, in inventory order
        self.instances: dict[str, dict[str, Resource]] = {}
        for res in lab.resources.values():
            rtype, sep, ident = res.name.partition("/")
            if sep and rtype == res.type:
                self.instances.setdefault(rtype, {})[ident] = res
        self._pooled = {res.name for insts in self.instances.values() for res in insts.values()}
        # in service order: higher priority first, then arrival (a new one goes behind
        # every waiter of its priority or higher)
        self.waiters = SortedKeyList(key=attrgetter("order"))
        self._waiting: dict[str, Waiter] = {}                       # id -> queued waiter
        self._by_request: dict[tuple[str, str], Waiter] = {}  # (owner, request_id) -> it
        self._starving = SortedKeyList(key=attrgetter("order"))     # bypassed MAX_BYPASS
        self._arrivals = 0
        lab.pool = self

    # --- what is free ---

    def _free(self, rtype: str, start: float, end: float) -> dict[str, int]:
        """Slots each instance of ``rtype`` has free throughout ``[start, end)``; none when
        out of service. (Never below 0, even if the inventory shrank under old bookings.)"""
        return {ident: max(0, res.timeline.free_slots(start, end)) if res.bookable else 0
                for ident, res in self.instances[rtype].items()}

    def _totals(self) -> dict[str, dict[str, int]]:
        return {t: {ident: res.slots for ident, res in insts.items()}
                for t, insts in self.instances.items()}

    def waiting(self, viewer: str) -> list[dict]:
        """The queue, in service order: who waits for what, since when, until when, and the
        request_id of ``viewer``'s own requests (so a client finds its place; others' ids
        are theirs alone)."""
        return [{"owner": w.owner, "request": [{"type": t, "slots": n} for t, n in w.request],
                 "priority": w.priority, "since": w.since, "wait_until": w.deadline,
                 "request_id": w.request_id if w.owner == viewer else None}
                for w in self.waiters]

    def get_pool(self, now: float) -> dict:
        """canary's pool shape, with the slots free at ``now`` and each instance's total."""
        resources = {}
        for rtype, insts in self.instances.items():
            resources[rtype] = [
                {"id": ident,
                 "slots": max(0, res.slots - res.timeline.used_slots(now)) if res.bookable
                 else 0,
                 "total": res.slots}
                for ident, res in insts.items()]
        return {"additional_properties": self.additional_properties, "resources": resources}

    # --- deciding ---

    def _never(self, request: Request) -> str:
        """Why the request could not fit even in an empty lab; "" when it could."""
        totals = self._totals()
        return placement.explain(request, totals, totals)

    def _offer(self, request: Request, order: tuple[int, int], lease_s: float,
               now: float) -> tuple[dict[str, list[str]] | None, str]:
        """Where the request goes now, or None and why not. A starving waiter ordered
        before ``order`` that wants one of its types holds it back."""
        types = {t for t, _ in request}
        free = {t: self._free(t, now, now + lease_s) for t in types if t in self.instances}
        placed = placement.place(request, free)
        if placed is None:
            return None, placement.explain(request, free, self._totals())
        for w in self._starving.irange_key(max_key=order, inclusive=(True, False)):
            shared = w.types & types
            if shared:
                return None, (f"an earlier waiting request for {', '.join(sorted(shared))} "
                              f"has been passed over {w.bypassed} times and goes first")
        return placed, ""

    def _new_order(self, priority: int) -> tuple[int, int]:
        """The place a new request with ``priority`` takes: behind every waiter of its
        priority or higher."""
        return (-priority, self._arrivals)

    def accommodates(self, request: Request, lease_s: float, now: float,
                     priority: int = 0) -> tuple[bool, str]:
        """Whether a checkout of ``request`` for ``lease_s`` would be granted now, and if not,
        why (the reason that checkout would be refused with)."""
        never = self._never(request)
        if never:
            return False, never
        placed, reason = self._offer(request, self._new_order(priority), lease_s, now)
        return placed is not None, reason

    # --- changing ---

    @settles
    def checkout(self, caller: Caller, request: Request, lease_s: float, now: float,
                 wait_s: float = 0.0, priority: int = 0,
                 request_id: str | None = None,
                 before_waiting: Callable[[], None] | None = None) -> Reservation | Waiter:
        """Grant the request now (an allocation), or queue it as a Waiter when ``wait_s`` > 0;
        refuse with Unavailable otherwise. ``request_id`` is what ``cancel`` finds it by.
        ``before_waiting`` is called before a request is queued and may refuse it by raising
        (the caller's limit on waiting requests)."""
        never = self._never(request)
        if never:
            raise Unavailable(never)
        self.lab.check_quota(caller.user, lease_s)
        order = self._new_order(priority)
        placed, reason = self._offer(request, order, lease_s, now)
        if placed is not None:
            return self._grant(caller.user, request, placed, lease_s, now, order, request_id)
        if wait_s <= 0:
            raise Unavailable(reason)
        if before_waiting is not None:
            before_waiting()
        w = Waiter(new_id(), caller.user, list(request), lease_s, priority, now, now + wait_s,
                   order, request_id)
        self._arrivals += 1
        self._enqueue(w)
        return w

    def _enqueue(self, w: Waiter) -> None:
        self.waiters.add(w)
        self._waiting[w.id] = w
        if w.request_id is not None:
            self._by_request[w.owner, w.request_id] = w
        if w.bypassed >= MAX_BYPASS:
            self._starving.add(w)
        self.lab.hold(w.owner, 1)
        self.lab.schedule(w.deadline, self._on_wait_end, w.id)

    def _dequeue(self, w: Waiter) -> None:
        self.waiters.remove(w)
        del self._waiting[w.id]
        if w.request_id is not None:
            self._by_request.pop((w.owner, w.request_id), None)
        self.lab.hold(w.owner, -1)
        if w.bypassed >= MAX_BYPASS:
            self._starving.remove(w)

    def _grant(self, owner: str, request: Request, placed: dict[str, list[str]],
               lease_s: float, now: float, order: tuple[int, int],
               request_id: str | None) -> Reservation:
        rid = new_id()
        shape: dict[str, list[dict]] = {}
        per_instance: dict[str, int] = {}
        ids = {t: iter(v) for t, v in placed.items()}
        for rtype, slots in request:
            ident = next(ids[rtype])
            shape.setdefault(rtype, []).append({"id": ident, "slots": slots})
            name = self.instances[rtype][ident].name
            per_instance[name] = per_instance.get(name, 0) + slots
        end = now + lease_s
        r = Reservation(
            id=rid, kind="allocation", owner=owner, state=states.ACTIVE, start=now, end=end,
            mode="shared", slots=sum(n for _, n in request), config=None,
            bookings=[Booking(rid, name, now, end, n, False, None)
                      for name, n in per_instance.items()],
            extra={"resources": shape, "request_id": request_id} if request_id is not None
            else {"resources": shape})
        types = {t for t, _ in request}
        for w in self.waiters.irange_key(max_key=order, inclusive=(True, False)):
            if w.types & types:
                w.bypassed += 1
                if w.bypassed == MAX_BYPASS:
                    self._starving.add(w)
        return self.lab.add(r, now)

    @settles
    def cancel(self, owner: str, request_id: str, reason: str, now: float) -> bool:
        """Stop ``owner``'s request ``request_id``: take its waiter out of the queue, or
        release what it booked (an allocation, a calendar reservation). False when neither
        is left."""
        w = self._by_request.get((owner, request_id))
        if w is not None:
            starving = w.bypassed >= MAX_BYPASS
            self._dequeue(w)
            self._resolve(w, Conflict(f"the wait was cancelled: {reason}"))
            if starving:
                self.serve(now)     # it held back later requests for its types
            return True
        booked = self.lab.booked_by(owner, request_id)
        if booked is None:
            return False
        self.lab.transition(booked, "release", now)
        return True

    @settles
    def checkin(self, caller: Caller, allocation_id: str, now: float) -> Reservation:
        """End an allocation now (its owner or an admin) and give its slots back."""
        r = self.lab.owned(allocation_id, caller)
        if r.kind != "allocation":
            raise Conflict(f"{allocation_id} is a {r.kind} reservation, not an allocation")
        if r.state == states.ENDED:
            raise Conflict(f"{allocation_id} already ended ({r.reason})")
        self.lab.transition(r, "release", now)
        return r

    def serve(self, now: float) -> None:
        """Grant every waiter that fits now, in service order. Done whenever slots may
        have come back: a reservation of the pool ended, resources came back, a starving
        waiter left."""
        for w in list(self.waiters):
            # past its deadline (the clock jumped, or the daemon was down): its own timer,
            # due in this same advance, answers it
            if w.deadline < now:
                continue
            placed, _ = self._offer(w.request, w.order, w.lease_s, now)
            if placed is not None:
                self._dequeue(w)
                self._resolve(w, self._grant(w.owner, w.request, placed, w.lease_s, now,
                                             w.order, w.request_id))

    def freed(self, r: Reservation, now: float) -> None:
        """A reservation ended: if it held slots of the pool, serve the queue."""
        if any(b.resource in self._pooled for b in r.bookings):
            self.serve(now)

    @settles
    def move_durations(self, seconds: float, now: float) -> None:
        """The wall clock jumped by ``seconds``. Waits and leases are durations, so they
        move with it and last as long as they were asked to: each waiter's deadline, and
        each live allocation's booking, start and end (a lease is neither ended by a
        forward jump nor stretched by a backward one). The calendar keeps its times, so a
        lease keeps only as much of its moved time as no other booking was given; one left
        with nothing after ``now`` ends now. Waiters are then served: bookings that stayed
        where they were may leave room now."""
        for w in self.waiters:
            w.since += seconds
            w.deadline += seconds
            self.lab.schedule(w.deadline, self._on_wait_end, w.id)
        for r in [r for r in self.lab.reservations.values()
                  if r.kind == "allocation" and r.state == states.ACTIVE]:
            start = r.start + seconds
            end = _room(self.lab, r, start, r.end + seconds)
            if end <= now:
                self.lab.transition(r, "expire", now)
            else:
                self.lab.transition(r, "move", now, start=start, end=end)
        self.serve(now)         # the calendar's times stayed: a jump back may free slots now

    @settles
    def adopt(self, old: Pool, now: float) -> None:
        """Take over the waiters of the pool this one replaces (a config reload), in their
        order, with their deadlines; serve those the new inventory fits at once."""
        for w in old.waiters:
            self._enqueue(w)
        self._arrivals = old._arrivals
        self.serve(now)

    def _on_wait_end(self, key: str, due: float, now: float) -> None:
        w = self._waiting.get(key)
        if w is None or w.deadline != due:
            return                      # granted or answered before its wait ran out
        placed, reason = self._offer(w.request, w.order, w.lease_s, now)
        self._dequeue(w)
        if placed is not None and now <= w.deadline:    # slots came back at this instant
            self._resolve(w, self._grant(w.owner, w.request, placed, w.lease_s, now, w.order,
                                         w.request_id))
            return
        reason = reason or "slots came free only after the wait ended"
        self._resolve(w, Unavailable(f"waited {w.deadline - w.since:g}s: {reason}"))
        if w.bypassed >= MAX_BYPASS:
            self.serve(now)             # it held back later requests for its types

    def drop_waiters(self, error: EngineError) -> None:
        """Answer every waiting checkout with ``error``: what they waited on was put back
        (a failed commit), as a restart forgets them."""
        for w in list(self.waiters):
            self._dequeue(w)
            self._resolve(w, error)

    def _resolve(self, w: Waiter, result: Reservation | EngineError) -> None:
        w.result = result
        if w.notify is not None:
            w.notify(w)


def _room(lab: Lab, r: Reservation, start: float, end: float) -> float:
    """The latest end, up to ``end``, that ``r``'s bookings moved to ``start`` can have
    without taking time that other bookings hold: where the first booking they cannot
    share starts (``start`` when that is at once)."""
    def fits(until: float) -> bool:
        return all(lab.resources[b.resource].timeline.fits(
            start, until, b.slots, b.exclusive, b.config, ignore=r.id) for b in r.bookings)
    if fits(end):
        return end
    room = start
    for other in sorted({o.start for b in r.bookings for o in lab.resources[
            b.resource].timeline.overlapping(start, end, ignore=r.id) if o.start > start}):
        if not fits(other):
            break
        room = other
    return room
