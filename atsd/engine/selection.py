"""Booking by selector: any ``count`` resources whose tags match, and keeping such a
booking whole when one of its resources goes down.

Theory of operation
-------------------
A selector request books ``count`` distinct matching resources that are up, together, in the
earliest window where that many fit at once (the calendar's all-or-nothing, over a choice
of resources instead of named ones). The search steps forward in time: at a candidate start
``t`` each matching resource has its own earliest fit at or after ``t``; when ``count`` of
them fit at ``t`` those are taken (in inventory order), else no window can start before the
``count``-th smallest of those fits, which becomes the next ``t``.

The reservation keeps its selector (``extra["selector"]``). When one of its resources goes
down (an admin, a health check, a revoke, a maintenance window over it) every live
reservation booked there is told (``reservation.degraded``); one made by selector is then
repaired: a matching resource that is up and free for the rest of the booking's window
takes the booking's place under the same id (``reservation.replaced``). When none is free,
the reservation stays degraded (``extra["degraded"]`` lists what it waits to replace) and the
repair is tried again whenever any reservation ends or a resource comes up, until the
reservation ends. A replacement is placed only where ``Timeline.fits`` says so, so repair
never double-books; the old booking leaves its timeline first.
"""

from __future__ import annotations

from . import states
from .calendar import MAX_SEARCH_STEPS, Calendar
from .errors import Unavailable
from .events import ReservationDegraded
from .lab import RESERVATION, Caller, Lab, Reservation, Resource, settles
from .selector import parse
from .timeline import Booking


class Selection:
    def __init__(self, lab: Lab, calendar: Calendar) -> None:
        self.lab = lab
        self.calendar = calendar
        self._waiting: set[str] | None = None      # ids of degraded selector reservations
        lab.selection = self

    def matching(self, selector: str) -> list[Resource]:
        """Resources whose tags match, up or not, in inventory order."""
        match = parse(selector)
        return [res for res in self.lab.resources.values() if match(res.tags)]

    # --- booking ---

    def _candidates(self, selector: str, mode: str, slots: int | None, config: dict | None,
                    duration: float) -> list:
        picks = []
        for res in self.matching(selector):
            if res.bookable and (mode == "exclusive" or (slots or 1) <= res.slots):
                picks.append((res, self.calendar._want(res, mode, slots, config, duration)))
        return picks

    def earliest(self, candidates: list, count: int, after: float):
        """(start, the ``count`` picks) of the earliest window where ``count`` of the
        candidates fit together, or None when there is none."""
        if len(candidates) < count:
            return None
        t = after
        for _ in range(MAX_SEARCH_STEPS):
            lead = self.calendar._window(candidates, t)
            fits = []
            for res, want in candidates:
                s = res.timeline.earliest_fit(t, lead + want.duration, want.slots,
                                              want.exclusive, want.config)
                if s is not None:
                    fits.append((s, res, want))
            if len(fits) < count:
                return None
            here = [(res, want) for s, res, want in fits if s == t]
            if len(here) >= count:
                return t, here[:count]
            t = sorted(s for s, _, _ in fits)[count - 1]
        return None

    def fit_at(self, candidates: list, count: int, t: float) -> list | None:
        """The first ``count`` candidates that fit together at ``t``, or None."""
        lead = self.calendar._window(candidates, t) if candidates else 0.0
        here = [(res, want) for res, want in candidates
                if res.timeline.fits(t, t + lead + want.duration, want.slots, want.exclusive,
                                     want.config)]
        return here[:count] if len(here) >= count else None

    def check_available(self, selector: str, count: int, start: float, end: float,
                        mode: str, slots: int | None) -> dict:
        candidates = self._candidates(selector, mode, slots, None, end - start)
        found = self.earliest(candidates, count, start)
        if found is None:
            return {"available": False, "avail_start": None, "avail_end": None,
                    "resources": []}
        t, picks = found
        return {"available": t == start, "avail_start": t, "avail_end": t + (end - start),
                "resources": [res.name for res, _ in picks]}

    @settles
    def request(self, caller: Caller, selector: str, count: int, time_needed: float,
                duration: float, config: dict | None, mode: str, next_available: bool,
                slots: int | None, now: float) -> Reservation:
        time_needed = max(time_needed, now)
        self.lab.check_quota(caller.user, duration)
        candidates = self._candidates(selector, mode, slots, config, duration)
        if len(candidates) < count:
            raise Unavailable(f"{len(candidates)} resources that are up match {selector!r}, "
                              f"{count} asked")
        found = self.earliest(candidates, count, time_needed)
        if found is None:
            raise Unavailable(f"{selector!r}: no window of {duration:g}s fits {count} resources")
        t, picks = found
        if t != time_needed and not next_available:
            raise Unavailable(f"{selector!r}: fewer than {count} resources free at the time "
                              "needed")
        r = self.calendar._book(caller, picks, t, mode, config, now)
        r.extra["selector"] = selector
        return r

    # --- repair ---

    def went_down(self, names: list[str], reason: str, now: float, start: float,
                  end: float) -> None:
        """Tell the live reservations booked on ``names`` over [start, end), and repair
        those made by selector."""
        affected: dict[str, Reservation] = {}
        for name in names:
            for b in self.lab.resources[name].timeline.overlapping(max(start, now), end):
                r = self.lab.reservations.get(b.reservation_id)
                if r is not None and r.state != states.ENDED:
                    affected.setdefault(r.id, r)
                    self.lab.emit(ReservationDegraded(r.id, name, reason, r.owner))
        for r in affected.values():
            if "selector" not in r.extra:
                continue
            lost = [n for n in r.resources if n in names]
            r.extra["degraded"] = sorted(set(r.extra.get("degraded", [])) | set(lost))
            self.lab.touch(RESERVATION, r.id)
            self.waiting().add(r.id)
            self._repair(r, now, avoid=set(names))

    def waiting(self) -> set[str]:
        """Ids of degraded selector reservations; found once after a restart, then kept."""
        if self._waiting is None:
            self._waiting = {r.id for r in self.lab.reservations.values()
                             if r.state != states.ENDED and r.extra.get("degraded")}
        return self._waiting

    def forget_waiting(self) -> None:
        """Find the degraded reservations afresh when next asked: records were put back
        (a failed commit), and which are degraded may have changed with them."""
        self._waiting = None

    def retry(self, now: float) -> None:
        """Try again to repair every degraded selector reservation (a match may be free)."""
        for rid in list(self.waiting()):
            r = self.lab.reservations.get(rid)
            if r is None or r.state == states.ENDED:
                self._waiting.discard(rid)
                continue
            self._repair(r, now, avoid=set())

    def _repair(self, r: Reservation, now: float, avoid: set[str]) -> None:
        match = parse(r.extra["selector"])
        still = []
        for old in r.extra["degraded"]:
            booking = next((b for b in r.bookings if b.resource == old), None)
            if booking is None:
                continue
            if old not in avoid and self.lab.resources[old].bookable:
                continue        # it came back: nothing to replace
            if not self._replace(r, booking, match, now, avoid):
                still.append(old)
        r.extra["degraded"] = still
        self.lab.touch(RESERVATION, r.id)
        if not still:
            r.extra.pop("degraded")
            self.waiting().discard(r.id)

    def _replace(self, r: Reservation, old: Booking, match, now: float,
                 avoid: set[str]) -> bool:
        start = max(old.start, now)
        if start >= old.end:
            return True         # nothing of the window is left to serve
        held = set(r.resources)
        for res in self.lab.resources.values():
            if res.name in held or res.name in avoid or not res.bookable or not match(res.tags):
                continue
            slots = res.slots if old.exclusive else old.slots
            if slots > res.slots or not res.timeline.fits(start, old.end, slots, old.exclusive,
                                                          old.config):
                continue
            new = Booking(r.id, res.name, start, old.end, slots, old.exclusive, old.config)
            self.lab.transition(r, "replace", now, replace=(old, new))
            return True
        return False
