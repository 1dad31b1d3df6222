"""The lab: its resources, their timelines, every reservation, and the clock's to-do list.

This is the state the feature modules (calendar, pool, batch, revocation ...) share. It does
no I/O and reads no clock: every entry point takes ``now``, and what changed comes back out
as events (``take_events``) and as the keys of changed records (``take_dirty``) that the
server publishes and stores. ``next_deadline`` tells the server when to call ``advance``
again.

Every change to a reservation goes through ``transition`` (states.py says what follows
from one); what a change sets off in the other features is queued (effects.py) and done by
``settle``, whose ``_react`` is the one list of who reacts to what.
"""

from __future__ import annotations

import functools
import heapq
import secrets
from collections import Counter, deque
from dataclasses import dataclass, field
from sys import intern
from typing import TYPE_CHECKING, Callable, Iterable

from . import states
from .effects import CameUp, Effect, Ended, Forgotten, Started, WentDown
from .errors import Forbidden, NotFound, shown
from .events import Event, ReservationExpiring, ReservationReplaced, ReservationStatus
from .timeline import Booking, Timeline

if TYPE_CHECKING:
    from .batch import Batch
    from .calendar import Calendar
    from .pool import Pool
    from .revocation import Revocations
    from .selection import Selection


@dataclass(slots=True)
class Caller:
    """Who is asking: the user name and whether they hold the admin role."""

    user: str
    admin: bool = False


@dataclass(frozen=True, slots=True)
class Quotas:
    """What one user may hold, so that no user can fill the daemon's memory, its state file
    or a resource's calendar for decades. Config ``limits.*``; maintenance windows (an
    admin's) are neither counted nor limited."""

    max_reservations_per_user: int = 1000    # live ones, waiting checkouts included
    max_booking_s: float = 30 * 86400.0      # from a reservation's start to its end
    max_waiting_per_user: int = 100          # requests waiting for their answer


UNLIMITED_KINDS = ("maintenance",)


@dataclass(slots=True)
class ResourceDef:
    """A resource as the inventory (config file or resource spec) describes it."""

    name: str
    type: str
    slots: int = 1
    config: dict = field(default_factory=dict)
    reconfigure_s: float = 0.0
    tags: dict = field(default_factory=dict)
    retired: bool = False       # kept for the reservations it has, booked no more


@dataclass(slots=True, eq=False)
class Resource:
    name: str
    type: str
    slots: int
    config: dict
    reconfigure_s: float
    tags: dict
    timeline: Timeline
    retired: bool = False       # kept for its reservations, booked no more (config)
    in_service: bool = True     # false from a revoke until its restore
    value: float | None = None
    down: str | None = None     # why an admin or a health check took it down
    down_by: str | None = None  # admin or health: a health check raises only what it took

    @property
    def bookable(self) -> bool:
        """Whether anything new may be booked on it: in service, not down, not retired
        (the reservations it has are served either way)."""
        return self.in_service and self.down is None and not self.retired


@dataclass(slots=True, eq=False)
class Reservation:
    """Bookings held together under one id, with one owner and one state."""

    id: str
    kind: str                   # pre, claimed, allocation, batch, maintenance
    owner: str
    state: str
    start: float                # when the holder may use it (time_available)
    end: float
    mode: str                   # exclusive or shared
    slots: int
    config: dict | None
    bookings: list[Booking]
    expire_time: float | None = None   # a pre-reservation lapses then unless claimed
    reason: str | None = None
    ended_at: float | None = None
    extra: dict = field(default_factory=dict)   # what one kind keeps (queue, hosts, ...)

    @property
    def resources(self) -> list[str]:
        return [b.resource for b in self.bookings]

    @property
    def real_end(self) -> float:
        """When it ends, or ended: what is told of it. ``end`` stays the end it was booked
        with (a late claim's fresh offer is as long); one that ended early ended at
        ``ended_at`` (never shown before its start)."""
        if self.ended_at is None:
            return self.end
        return min(self.end, max(self.ended_at, self.start))

    def to_record(self) -> dict:
        return {
            "id": self.id, "kind": self.kind, "owner": self.owner, "state": self.state,
            "start": self.start, "end": self.end, "mode": self.mode, "slots": self.slots,
            "config": self.config, "expire_time": self.expire_time, "reason": self.reason,
            "ended_at": self.ended_at, "extra": self.extra,
            "bookings": [[b.resource, b.start, b.end, b.slots, b.exclusive, b.config]
                         for b in self.bookings],
        }

    @classmethod
    def from_record(cls, rec: dict) -> Reservation:
        """The few distinct kinds, states, modes, owners and resource names are shared
        (interned), not a copy in each of 100k restored reservations (~27 MB)."""
        rid = rec["id"]
        for key in ("kind", "owner", "state", "mode"):
            rec[key] = intern(rec[key])
        rec["bookings"] = [Booking(rid, intern(b[0]), *b[1:]) for b in rec["bookings"]]
        return cls(**rec)


RESERVATION = "reservation"    # record kinds in the store
RESOURCE = "resource"          # what the lab learned about a resource: service, value, config
REVOCATION = "revocation"      # a revocation counting down (revocation.py)
JOB = "job"                    # a batch job (batch.py)


class InventoryMismatch(Exception):
    """The stored state holds live reservations on resources the inventory no longer has."""


def settles(method):
    """Mark a feature's entry point (what a command or a backend calls): what its changes
    set off is done before it returns, also when it refuses after a change (a claim that
    lapsed), so the next request sees every consequence."""
    @functools.wraps(method)
    def entry(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        finally:
            self.lab.settle()
    return entry


def new_id() -> str:
    """Unguessable ids: holding an id must not be a way to guess another's. Never starting
    with ``-``, so that a command line does not take one for an option."""
    while True:
        rid = secrets.token_urlsafe(12)
        if rid[0] != "-":
            return rid


class Lab:
    def __init__(self, resources: list[ResourceDef], *, claim_window_s: float = 300.0,
                 expiring_notice_s: float = 300.0, history_s: float = 7 * 86400.0,
                 quotas: Quotas = Quotas()) -> None:
        self.claim_window_s = claim_window_s
        self.expiring_notice_s = expiring_notice_s
        self.history_s = history_s
        self.quotas = quotas
        self.inventory = {d.name: d for d in resources}
        self.resources: dict[str, Resource] = {
            d.name: Resource(d.name, d.type, d.slots, dict(d.config), d.reconfigure_s,
                             dict(d.tags), Timeline(d.slots), d.retired)
            for d in resources}
        self.reservations: dict[str, Reservation] = {}
        # owner -> live reservations (not maintenance) + checkouts waiting to become one
        self.held: Counter[str] = Counter()
        # (owner, request_id) -> id of the live reservation that request booked
        self._requested: dict[tuple[str, str], str] = {}
        # (due, order, what to call with (key, due, now), key)
        self._timers: list[tuple[float, int, Callable[[str, float, float], None], str]] = []
        self._timer_count = 0
        self._events: list[Event] = []
        self._dirty: set[tuple[str, str]] = set()
        # what changes set off, done by settle (effects.py)
        self._effects: deque[Effect] = deque()
        self._settling = False
        # the features over this lab that react to effects, each set by its own
        # constructor; None in a lab built without it (engine tests build what they test)
        self.calendar: Calendar | None = None
        self.pool: Pool | None = None
        self.revocations: Revocations | None = None
        self.selection: Selection | None = None
        self.batch: Batch | None = None

    # --- lookups and rights ---

    def resource(self, name: str) -> Resource:
        try:
            return self.resources[name]
        except KeyError:
            raise NotFound(f"no resource named {shown(name)}") from None

    def reservation(self, rid: str) -> Reservation:
        try:
            return self.reservations[rid]
        except KeyError:
            raise NotFound(f"no reservation {shown(rid)}") from None

    def booked_by(self, owner: str, request_id: str) -> Reservation | None:
        """The live reservation ``owner``'s request ``request_id`` booked (one made with a
        request_id in its ``extra``), so that a client that gave up on the reply can
        release it."""
        rid = self._requested.get((owner, request_id))
        return None if rid is None else self.reservations[rid]

    def owned(self, rid: str, caller: Caller) -> Reservation:
        """The reservation, if ``caller`` may act on it: its owner or an admin."""
        r = self.reservation(rid)
        if r.owner != caller.user and not caller.admin:
            raise Forbidden(f"reservation {rid} belongs to {r.owner}")
        return r

    # --- quotas ---

    def check_quota(self, owner: str, length: float, adding: int = 1) -> None:
        """Refuse (forbidden) ``adding`` more reservations of ``length`` seconds for ``owner``
        when that would pass a limit; the message names the limit and its config key."""
        q = self.quotas
        if length > q.max_booking_s:
            raise Forbidden(f"a booking may be at most {q.max_booking_s:g}s long, "
                            f"{length:g}s asked (limits.max_booking_s)")
        if self.held[owner] + adding > q.max_reservations_per_user:
            more = f"; this would add {adding}" if adding > 1 else ""
            raise Forbidden(f"{owner} holds {self.held[owner]} reservations (waiting checkouts "
                            f"included){more}, the most one user may hold is "
                            f"{q.max_reservations_per_user} (limits.max_reservations_per_user)")

    def check_length(self, r: Reservation, end: float) -> None:
        """Refuse to move a reservation's end past the longest booking allowed."""
        if r.kind not in UNLIMITED_KINDS and end - r.start > self.quotas.max_booking_s:
            raise Forbidden(f"a booking may be at most {self.quotas.max_booking_s:g}s long; "
                            f"{r.id} would be {end - r.start:g}s (limits.max_booking_s)")

    def hold(self, owner: str, delta: int) -> None:
        """Count ``delta`` more (or fewer) reservations against ``owner``'s quota."""
        self.held[owner] += delta
        if self.held[owner] <= 0:
            del self.held[owner]

    def _count(self, r: Reservation, delta: int) -> None:
        if r.kind not in UNLIMITED_KINDS:
            self.hold(r.owner, delta)

    # --- changes ---

    def add(self, r: Reservation, now: float) -> Reservation:
        """Put a new reservation's bookings on the timelines (the caller checked they fit)."""
        for b in r.bookings:
            self.resources[b.resource].timeline.add(b)
        self.reservations[r.id] = r
        self._count(r, 1)
        self._index_request(r)
        self.touch(RESERVATION, r.id)
        self._publish_status(r, None, "granted" if r.state == states.GRANTED else "started", now)
        self._schedule_for(r)
        if r.state == states.ACTIVE:
            self._effects.append(Started(r, now))
        return r

    def transition(self, r: Reservation, cause: str, now: float, *, end: float | None = None,
                   kind: str | None = None, expire_time: float | None = None,
                   replace: tuple[Booking, Booking] | None = None,
                   start: float | None = None) -> None:
        """Make the change ``cause`` names (states.py's table), with what it carries: a new
        ``end``, ``start``, ``kind`` or ``expire_time``, or a booking ``replace``d by
        another (the caller checked that it fits), and everything that follows from it.
        Refused with ``conflict`` before anything changes when the table has no such step."""
        new, reason = states.next_state(r.state, cause)
        previous = r.state
        if kind is not None:
            r.kind = kind
        if expire_time is not None:
            r.expire_time = expire_time
        if end is not None or start is not None:
            moved = 0.0 if start is None else start - r.start
            r.start += moved
            r.end = r.end if end is None else end
            for b in r.bookings:
                tl = self.resources[b.resource].timeline
                tl.remove(b)
                b.start += moved
                b.end = r.end
                tl.add(b)
        if replace is not None:
            old, booking = replace
            self.resources[old.resource].timeline.remove(old)
            self.resources[booking.resource].timeline.add(booking)
            r.bookings[r.bookings.index(old)] = booking
            self.emit(ReservationReplaced(r.id, old.resource, booking.resource, r.owner,
                                          booking.start, booking.end))
        r.state = new
        if new == states.ENDED:
            r.reason = reason
            r.ended_at = now
            if r.extra.get("request_id") is not None:
                self._requested.pop((r.owner, r.extra["request_id"]), None)
            for b in r.bookings:
                self.resources[b.resource].timeline.remove(b)
            self._count(r, -1)
            self.schedule(now + self.history_s, self._on_forget, r.id)
        elif new != previous or end is not None or start is not None or expire_time is not None:
            self._schedule_for(r)
        self.touch(RESERVATION, r.id)
        if reason is not None:
            self._publish_status(r, previous, reason, now)
        if new == states.ENDED:
            self._effects.append(Ended(r, now))
        elif new != previous:
            self._effects.append(Started(r, now))

    def went_down(self, names: list[str], reason: str, now: float, start: float | None = None,
                  end: float = float("inf")) -> None:
        """Tell the reservations booked on ``names`` over [start, end) (default: from now
        on) that those resources will not serve them."""
        self._effects.append(WentDown(tuple(names), reason, now,
                                      now if start is None else start, end))

    def came_up(self, now: float) -> None:
        """Resources can be booked again: whoever waits for one may get it."""
        self._effects.append(CameUp(now))

    # --- what changes set off ---

    def settle(self) -> None:
        """Do what the changes so far set off (effects.py), and what that sets off in
        turn, until nothing is left. A command ends through here (``settles``); the
        clock settles after each timer. Called while settling, it returns: the drain
        under way goes on."""
        if self._settling:
            return
        self._settling = True
        try:
            while self._effects:
                self._react(self._effects.popleft())
        finally:
            self._settling = False

    def _react(self, effect: Effect) -> None:
        """Every consequence of a change, in one place and in this order."""
        match effect:
            case Ended(r, now):
                # slots came back: waiting checkouts first, in their queue's order; then
                # a revocation that waited for this holder may be complete; then
                # degraded selector reservations may find a free match
                if self.pool is not None:
                    self.pool.freed(r, now)
                if self.revocations is not None:
                    self.revocations.holder_ended(r, now)
                if self.selection is not None:
                    self.selection.retry(now)
            case Started(r, now):
                if self.calendar is not None:       # the holder gets the config it booked
                    self.calendar.apply_config(r)
            case WentDown(names, reason, now, start, end):
                if self.selection is not None:      # degraded; repaired if by selector
                    self.selection.went_down(list(names), reason, now, start, end)
            case CameUp(now):
                if self.selection is not None:
                    self.selection.retry(now)
                if self.pool is not None:
                    self.pool.serve(now)
            case Forgotten(rid):
                if self.batch is not None:          # its jobs are kept as long as it is
                    self.batch.forget_jobs(rid)

    def _index_request(self, r: Reservation) -> None:
        if r.extra.get("request_id") is not None:
            self._requested[(r.owner, r.extra["request_id"])] = r.id

    def touch(self, kind: str, key: str) -> None:
        self._dirty.add((kind, key))

    def emit(self, event: Event) -> None:
        self._events.append(event)

    def _publish_status(self, r: Reservation, previous: str | None, reason: str,
                        now: float) -> None:
        self.emit(ReservationStatus(r.id, r.state, previous, reason, r.owner, r.resources,
                                    r.kind, r.start, r.real_end))

    # --- the clock ---

    def schedule(self, due: float, fire: Callable[[str, float, float], None], key: str) -> None:
        """Call ``fire(key, due, now)`` from the first ``advance`` at or after ``due``. A timer
        is never taken back: ``fire`` checks that its reason still holds."""
        self._timer_count += 1
        heapq.heappush(self._timers, (due, self._timer_count, fire, key))

    def _schedule_for(self, r: Reservation) -> None:
        """The timers a live reservation needs in its current state. Old ones are not
        removed: each handler checks that its reason still holds when it fires."""
        if r.state == states.GRANTED and r.expire_time is not None:
            self.schedule(r.expire_time, self._on_lapse, r.id)
        elif r.state == states.GRANTED:
            self.schedule(r.start, self._on_start, r.id)
        if r.state == states.ACTIVE:
            self.schedule(r.end, self._on_expire, r.id)
            if r.end - self.expiring_notice_s > r.start:
                self.schedule(r.end - self.expiring_notice_s, self._on_expiring, r.id)

    def next_deadline(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def advance(self, now: float, limit: int | None = None) -> None:
        """Do what fell due by ``now``, in due order: all of it, or only the first ``limit``
        timers (the rest stays due, and ``next_deadline`` says so). Each timer's effects
        are settled before the next fires."""
        self.settle()
        done = 0
        while self._timers and self._timers[0][0] <= now and (limit is None or done < limit):
            due, _, fire, key = heapq.heappop(self._timers)
            fire(key, due, now)
            self.settle()
            done += 1

    def _live(self, key: str) -> Reservation | None:
        r = self.reservations.get(key)
        return r if r is not None and r.state != states.ENDED else None

    def _on_start(self, key: str, due: float, now: float) -> None:
        r = self._live(key)
        if r is not None and r.state == states.GRANTED and r.expire_time is None and r.start <= now:
            self.transition(r, "start", now)

    def _on_lapse(self, key: str, due: float, now: float) -> None:
        r = self._live(key)
        if r is not None and r.state == states.GRANTED and r.expire_time == due:
            self.transition(r, "lapse", now)

    def _on_expire(self, key: str, due: float, now: float) -> None:
        r = self._live(key)
        if r is not None and r.state == states.ACTIVE and r.end <= now:
            self.transition(r, "expire", now)

    def _on_expiring(self, key: str, due: float, now: float) -> None:
        r = self._live(key)
        if (r is not None and r.state == states.ACTIVE and r.end - self.expiring_notice_s == due
                and r.extra.get("warned_end") != r.end):    # once, also across a restart
            r.extra["warned_end"] = r.end
            self.touch(RESERVATION, r.id)
            self.emit(ReservationExpiring(r.id, r.owner, r.resources, r.end, r.end - now))

    def _on_forget(self, key: str, due: float, now: float) -> None:
        r = self.reservations.get(key)
        if r is not None and r.state == states.ENDED and r.ended_at + self.history_s <= now:
            del self.reservations[key]
            self.touch(RESERVATION, key)
            self._effects.append(Forgotten(key))

    # --- what the server takes out ---

    def take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def take_dirty(self) -> list[tuple[str, str, dict | None]]:
        """Changed records as (kind, key, record or None when deleted), for the store."""
        dirty, self._dirty = self._dirty, set()
        tables = self.tables
        return [(kind, key, tables[kind][0](key)) for kind, key in sorted(dirty)]

    # --- persistence ---

    @property
    def tables(self) -> dict[str, tuple[Callable, Callable, Callable]]:
        """Record kind -> (snapshot(key) -> record | None, restore(records, now),
        unload(key): forget it in memory, as if it had never been stored): the lab's own
        kinds, then those of the features over it that keep records, restored in this
        order."""
        tables = {
            RESERVATION: (self._snapshot_reservation, self._restore_reservations,
                          self._unload_reservation),
            RESOURCE: (self._snapshot_resource, self._restore_resources,
                       self._unload_resource)}
        if self.revocations is not None:
            rv = self.revocations
            tables[REVOCATION] = (rv.snapshot, rv.restore_records, rv.unload)
        if self.batch is not None:
            tables[JOB] = (self.batch.snapshot_job, self.batch.restore_jobs,
                           self.batch.unload_job)
        return tables

    def _snapshot_reservation(self, key: str) -> dict | None:
        r = self.reservations.get(key)
        return r.to_record() if r is not None else None

    def _snapshot_resource(self, name: str) -> dict | None:
        res = self.resources.get(name)
        if res is None:
            return None
        return {"name": name, "in_service": res.in_service, "value": res.value,
                "config": res.config, "down": res.down, "down_by": res.down_by}

    def _restore_resources(self, records, now: float) -> None:
        """A resource's state as the lab left it wins over the config file's starting
        point (the board still has the firmware its last holder asked for)."""
        for rec in records:
            res = self.resources.get(rec["name"])
            if res is not None:
                res.in_service = rec["in_service"]
                res.value = rec["value"]
                res.config = rec.get("config", res.config)
                res.down = rec.get("down")
                res.down_by = rec.get("down_by")

    def _restore_reservations(self, records, now: float) -> None:
        """A resource removed from the inventory while reservations hold it stops the start:
        dropping them would break a promise silently. ``retired: true`` keeps such a resource
        for them."""
        by_resource: dict[str, list[Booking]] = {}
        orphans: dict[str, list[str]] = {}
        for rec in records:
            r = Reservation.from_record(rec)
            self.reservations[r.id] = r
            if r.state == states.ENDED:
                self.schedule(r.ended_at + self.history_s, self._on_forget, r.id)
                continue
            self._count(r, 1)
            for b in r.bookings:
                if b.resource in self.resources:
                    by_resource.setdefault(b.resource, []).append(b)
                else:
                    orphans.setdefault(b.resource, []).append(r.id)
            self._index_request(r)
            self._schedule_for(r)
        if orphans:
            raise InventoryMismatch("; ".join(
                f"resource {name} is not in the config but reservations {', '.join(ids)} "
                "hold it (put it back with retired: true until they end)"
                for name, ids in sorted(orphans.items())))
        for name, bookings in by_resource.items():
            self.resources[name].timeline.add_many(bookings)

    def _unload_reservation(self, key: str) -> None:
        r = self.reservations.pop(key, None)
        if r is not None and r.state != states.ENDED:
            for b in r.bookings:
                self.resources[b.resource].timeline.remove(b)
            self._count(r, -1)
            if r.extra.get("request_id") is not None:
                self._requested.pop((r.owner, r.extra["request_id"]), None)

    def _unload_resource(self, name: str) -> None:
        """Back to the inventory's starting point (what the lab learned is restored next)."""
        res, d = self.resources.get(name), self.inventory.get(name)
        if res is not None:
            res.in_service, res.value, res.config = True, None, dict(d.config)
            res.down = res.down_by = None

    def restore(self, records: dict[str, Iterable[dict]], now: float) -> None:
        """Rebuild from stored records; the caller then calls ``advance(now)`` so that what
        fell due while the daemon was down happens now, with its events."""
        for kind, (_, restore, _) in self.tables.items():
            restore(records.get(kind, []), now)

    def revert(self, stored: list[tuple[str, str, dict | None]], now: float) -> None:
        """Put records back as the store has them (``None``: it has none), after a commit of
        changes to them failed. Costs what those records cost, whatever the lab's size. Their
        timers are set again, so what fell due since happens at the next ``advance``."""
        tables = self.tables
        for kind, key, _ in stored:
            tables[kind][2](key)
        for kind, _, rec in stored:
            if rec is not None:
                tables[kind][1]([rec], now)
