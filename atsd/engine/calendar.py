"""Calendar reservations, as KISS ATS defines them: request a window (a pre-reservation that
lapses unless claimed in time), claim it, release it, extend it. A request with ``claim``
skips the second step: the booking is confirmed at once (kind ``claimed``) and becomes
ACTIVE by itself at its start, as people book a room for tomorrow.

A request for several resources books one window in which all of them are free, all or
nothing, under one id. A requested config that differs from the one a resource will have
then makes the window start ``reconfigure_s`` earlier than the holder gets it (the booking
covers the reconfiguration; ``time_available`` is after it).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import states
from .errors import BadRequest, at, ClaimLate, Conflict, Forbidden, TooEarly, Unavailable
from .lab import RESOURCE, Caller, Lab, Reservation, Resource, new_id, settles
from .timeline import Booking

# How many times the search for a common window may move forward before giving up; each
# step passes a window where some resource is busy, so this only bounds pathological
# calendars.
MAX_SEARCH_STEPS = 10_000


@dataclass(slots=True)
class Want:
    """What a request asks of each resource."""

    slots: int
    exclusive: bool
    config: dict | None
    duration: float


class Calendar:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        lab.calendar = self

    # --- queries ---

    def _want(self, res: Resource, mode: str, slots: int | None, config: dict | None,
              duration: float) -> Want:
        if mode not in ("exclusive", "shared"):
            raise BadRequest(f"reservation_mode must be exclusive or shared, not {mode!r}")
        if config is not None and set(config) - set(res.config):
            unknown = sorted(map(str, set(config) - set(res.config)))
            known = ", ".join(sorted(res.config)) or "none"
            raise BadRequest(f"{res.name} has no config key {', '.join(unknown)} "
                             f"(its keys: {known})")
        exclusive = mode == "exclusive"
        n = res.slots if exclusive else (slots or 1)
        if n > res.slots:
            raise Unavailable(f"{res.name} has {res.slots} slots, {n} asked")
        return Want(n, exclusive, config, duration)

    def _lead(self, res: Resource, want: Want, t: float) -> float:
        """Time needed to reconfigure ``res`` for ``want`` if it starts at ``t``."""
        if want.config is None or want.config == res.timeline.config_at(t, res.config):
            return 0.0
        return res.reconfigure_s

    def _window(self, picks: list[tuple[Resource, Want]], t: float) -> float:
        return max(self._lead(r, w, t) for r, w in picks)

    def _fits_at(self, picks, t: float, ignore: str | None = None) -> bool:
        lead = self._window(picks, t)
        return all(r.bookable and r.timeline.fits(t, t + lead + w.duration, w.slots,
                                                     w.exclusive, w.config, ignore)
                   for r, w in picks)

    def earliest(self, picks: list[tuple[Resource, Want]], after: float) -> float | None:
        """The earliest start at or after ``after`` when every pick fits at once.

        Each resource's timeline finds its own next window in O(log n); the common start
        moves to the latest of them until all agree. A pick already known to fit at the
        start with the same reconfiguration lead is not searched again.
        """
        if not all(r.bookable for r, _ in picks):
            return None
        known: dict[int, tuple[float, float]] = {}     # pick -> (start, lead) it fits at
        t = after
        for _ in range(MAX_SEARCH_STEPS):
            lead = self._window(picks, t)
            moved = t
            for i, (r, w) in enumerate(picks):
                if known.get(i) == (moved, lead):
                    continue
                s = r.timeline.earliest_fit(moved, lead + w.duration, w.slots, w.exclusive,
                                            w.config)
                if s is None:
                    return None
                known[i] = (s, lead)
                moved = max(moved, s)
            if moved == t:
                return t
            t = moved
        return None

    def check_available(self, resource: str, start: float, end: float, mode: str,
                        slots: int | None) -> dict:
        res = self.lab.resource(resource)
        want = self._want(res, mode, slots, None, end - start)
        # one search: the earliest window is at ``start`` exactly when it is free then
        t = self.earliest([(res, want)], start)
        if t == start:
            return {"available": True, "avail_start": start, "avail_end": end}
        return {"available": False, "avail_start": t,
                "avail_end": None if t is None else t + (end - start)}

    # --- requests ---

    @settles
    def request(self, caller: Caller, resources: list[str], time_needed: float,
                duration: float, config: dict | None, mode: str, next_available: bool,
                slots: int | None, now: float, claim: bool = False,
                request_id: str | None = None) -> Reservation:
        if len(set(resources)) != len(resources):
            raise BadRequest("a resource is named twice in resources")
        time_needed = max(time_needed, now)
        self.lab.check_quota(caller.user, duration)
        picks = []
        for name in resources:
            res = self.lab.resource(name)
            picks.append((res, self._want(res, mode, slots, config, duration)))
        if next_available:        # one search: it finds time_needed itself when that fits
            t = self.earliest(picks, time_needed)
            if t is None:
                raise Unavailable(f"{', '.join(resources)}: no window of {duration:g}s fits")
        elif self._fits_at(picks, time_needed):
            t = time_needed
        else:
            raise Unavailable(f"{', '.join(resources)}: busy at the time needed")
        return self._book(caller, picks, t, mode, config, now, claim, request_id)

    def _book(self, caller: Caller, picks, t: float, mode: str, config: dict | None,
              now: float, claim: bool = False, request_id: str | None = None) -> Reservation:
        """Book at ``t`` (the caller found that it fits): a pre-reservation, or with
        ``claim`` a confirmed one that starts by itself. ``request_id`` is kept for
        cancel_request."""
        lead = self._window(picks, t)
        duration = picks[0][1].duration
        available = t + lead
        end = available + duration
        rid = new_id()
        bookings = [Booking(rid, r.name, t, end, w.slots, w.exclusive, w.config)
                    for r, w in picks]
        r = Reservation(
            id=rid, kind="claimed" if claim else "pre",
            owner=caller.user,
            state=states.ACTIVE if claim and available <= now else states.GRANTED,
            start=available, end=end, mode=mode, slots=picks[0][1].slots, config=config,
            bookings=bookings,
            expire_time=None if claim else min(available + self.lab.claim_window_s, end),
            extra={} if request_id is None else {"request_id": request_id})
        return self.lab.add(r, now)

    @settles
    def claim(self, caller: Caller, rid: str, now: float) -> Reservation:
        r = self.lab.owned(rid, caller)
        if r.kind != "pre":
            raise Conflict(f"{rid} is a {r.kind} reservation, not a pre-reservation")
        if r.state == states.GRANTED and now < r.start:
            raise TooEarly(f"{rid} can be claimed from {at(r.start)}", time_available=r.start,
                           retry_after=r.start - now)
        if r.state == states.GRANTED and now > r.expire_time:
            self.lab.transition(r, "lapse", now)
        if r.state == states.ENDED and r.reason == "lapsed":
            raise self._late(caller, r, now, f"pre-reservation {rid} lapsed at {at(r.expire_time)}")
        states.next_state(r.state, "claim")   # refuses before anything changes
        # kissats: a claim after time_available still gets the whole reservation_duration
        # (the end moves), or, where that does not fit, a fresh offer instead
        end = max(r.end, now + (r.end - r.start))
        if end > r.end and not self._extends_to(r, end):
            self.lab.transition(r, "lapse", now)
            raise self._late(caller, r, now, f"{rid} claimed {now - r.start:.3f}s after "
                             f"time_available: its {r.end - r.start:g}s no longer fit")
        self.lab.transition(r, "claim", now, kind="claimed",
                            end=end if end > r.end else None)
        return r

    def apply_config(self, r: Reservation) -> None:
        """The holder gets the config it booked (its reconfiguration ran before its start)."""
        if r.kind == "claimed" and r.config is not None:
            for b in r.bookings:
                self.lab.resources[b.resource].config = dict(r.config)
                self.lab.touch(RESOURCE, b.resource)

    def _late(self, caller: Caller, lapsed: Reservation, now: float, msg: str) -> ClaimLate:
        """A late claim gets a fresh offer like the lapsed one, from now, when one exists."""
        if not all(name in self.lab.resources for name in lapsed.resources):
            return ClaimLate(msg)           # a resource left the inventory since
        picks = []
        for name in lapsed.resources:
            res = self.lab.resources[name]
            picks.append((res, self._want(res, lapsed.mode, lapsed.slots, lapsed.config,
                                          lapsed.end - lapsed.start)))
        t = self.earliest(picks, now)
        try:
            self.lab.check_quota(caller.user, lapsed.end - lapsed.start)
        except Forbidden:
            t = None
        if t is None:
            return ClaimLate(msg)
        fresh = self._book(caller, picks, t, lapsed.mode, lapsed.config, now)
        return ClaimLate(msg, pre_reservation_id=fresh.id, new_avail=fresh.start,
                         new_expire=fresh.expire_time)

    @settles
    def release(self, caller: Caller, rid: str, now: float) -> Reservation:
        """End it now. A batch reservation only once ACTIVE (its jobs are stopped): before
        its start it is cancel_reservation's to end, as the CQR capability has it."""
        r = self.lab.owned(rid, caller)
        if r.state == states.ENDED:
            raise Conflict(f"{rid} already ended ({r.reason})")
        if r.kind == "batch" and r.state != states.ACTIVE:
            raise Conflict(f"{rid} is a batch reservation that has not started: "
                           "cancel_reservation cancels it")
        self.lab.transition(r, "release", now)
        return r

    @settles
    def extend(self, caller: Caller, rid: str, extra_s: float, now: float) -> Reservation:
        r = self.lab.owned(rid, caller)
        if r.kind == "batch":       # its window is its queue's (a Slurm one is Slurm's)
            raise Conflict(f"{rid} is a batch reservation: it cannot be extended")
        if r.state == states.ENDED:
            raise Conflict(f"{rid} already ended ({r.reason})")
        new_end = r.end + extra_s
        self.lab.check_length(r, new_end)
        if not self._extends_to(r, new_end):
            longest = self._longest_extension(r, new_end)
            raise Unavailable(f"{rid} cannot be extended by {extra_s:g}s; at most {longest:g}s "
                              "fits", max_extension=longest)
        self.lab.transition(r, "extend", now, end=new_end)
        return r

    def _extends_to(self, r: Reservation, end: float) -> bool:
        return all(self.lab.resources[b.resource].timeline.fits(
            r.end, end, b.slots, b.exclusive, b.config, ignore=r.id) for b in r.bookings)

    def _longest_extension(self, r: Reservation, end: float) -> float:
        """Whether more time fits changes only where another booking starts."""
        starts = sorted({o.start for b in r.bookings
                         for o in self.lab.resources[b.resource].timeline.overlapping(
                             r.end, end, ignore=r.id)})
        best = 0.0
        for s in starts:
            if s > r.end and self._extends_to(r, s):
                best = s - r.end
            elif s > r.end:
                break
        return best

    def list(self, resource: str | None, owner: str | None, start: float | None,
             end: float | None) -> list[dict]:
        """One row per booking of each live reservation that matches, in start order."""
        lo = float("-inf") if start is None else start
        hi = float("inf") if end is None else end
        rows = []
        for r in self.lab.reservations.values():
            if r.state == states.ENDED or (owner is not None and r.owner != owner):
                continue
            for b in r.bookings:
                if (resource is None or b.resource == resource) and b.start < hi and b.end > lo:
                    rows.append({
                        "id": r.id, "kind": r.kind, "resource": b.resource,
                        "start_time": b.start, "end_time": b.end,
                        "reservation_mode": r.mode, "slots": b.slots, "owner": r.owner,
                        "reservation_status": r.state,
                        "expire_time": r.expire_time if r.kind == "pre" else r.end,
                        "series_id": r.extra.get("series_id")})
        rows.sort(key=lambda row: (row["start_time"], row["resource"]))
        return rows
