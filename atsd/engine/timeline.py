"""One resource's bookings, and the questions asked of them: does this fit, and when first.

Every kind of reservation (calendar, allocation, batch, maintenance) is bookings on these
timelines, so this module is the single place where double booking is prevented.

Three indexes, each for one question, so that none depends on how crowded the calendar is:

- bookings by length class (lengths in ``[4**(c-1), 4**c)``), each sorted by start: an overlap
  query for ``[start, end)`` looks, in each class present, at the bookings starting in
  ``[start - 2 * 4**c, end)`` (twice the class bound, so that rounding can hide none); so a
  query costs O(log n + k) for k nearby bookings, and one long booking costs only while it
  is held (a single ``longest`` bound would slow every later query until a restart);
- the load profile (profile.py): where the next window of free slots is, in O(log n);
- the bookings that asked for a config, sorted by start: the config in force at a time.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass
from operator import attrgetter

from sortedcontainers import SortedKeyList

from .profile import Profile


@dataclass(slots=True, eq=False)
class Booking:
    """Some slots of one resource over ``[start, end)``, held for one reservation."""

    reservation_id: str
    resource: str
    start: float
    end: float
    slots: int
    exclusive: bool
    config: dict | None = None


def configs_agree(a: dict | None, b: dict | None) -> bool:
    """Shared bookings may overlap only when their configs agree; no config agrees with any."""
    return a is None or b is None or a == b


def _length_class(b: Booking) -> int:
    return (math.frexp(b.end - b.start)[1] + 1) // 2      # length < 4 ** class


def _by_start() -> SortedKeyList:
    return SortedKeyList(key=attrgetter("start"))


class Timeline:
    """The bookings of one resource with ``capacity`` slots."""

    __slots__ = ("capacity", "_classes", "_configured", "_load")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._classes: dict[int, SortedKeyList] = {}     # length class -> bookings
        self._configured = _by_start()                   # bookings that asked for a config
        self._load = Profile()

    def __len__(self) -> int:
        return sum(len(c) for c in self._classes.values())

    def __iter__(self):
        """The bookings in start order."""
        return heapq.merge(*self._classes.values(), key=attrgetter("start"))

    def _weight(self, b: Booking) -> int:
        """A booking's share of the load: its slots, or more than all for an exclusive one,
        so that a window with load ``capacity - k`` or less has room for k shared slots."""
        return self.capacity + 1 if b.exclusive else b.slots

    def add(self, booking: Booking) -> None:
        self._classes.setdefault(_length_class(booking), _by_start()).add(booking)
        if booking.config is not None:
            self._configured.add(booking)
        w = self._weight(booking)
        self._load.add([(booking.start, w), (booking.end, -w)])

    def add_many(self, bookings: list[Booking]) -> None:
        """Add many at once (a restart): sorted once, not inserted one by one."""
        if len(self):
            for b in bookings:
                self.add(b)
            return
        for c, group in itertools.groupby(sorted(bookings, key=_length_class), _length_class):
            self._classes[c] = SortedKeyList(group, key=attrgetter("start"))
        self._configured.update(b for b in bookings if b.config is not None)
        deltas: dict[float, int] = {}
        for b in bookings:
            w = self._weight(b)
            deltas[b.start] = deltas.get(b.start, 0) + w
            deltas[b.end] = deltas.get(b.end, 0) - w
        self._load.build(deltas)

    def remove(self, booking: Booking) -> None:
        c = _length_class(booking)
        group = self._classes[c]
        group.remove(booking)              # Booking compares by identity (eq=False)
        if not group:
            del self._classes[c]
        if booking.config is not None:
            self._configured.remove(booking)
        w = self._weight(booking)
        self._load.add([(booking.start, -w), (booking.end, w)])

    def _near(self, start: float, end: float):
        """Bookings that may share time with ``[start, end)``: those starting in it and those
        starting so shortly before that their class allows them to reach it."""
        for c, group in self._classes.items():
            yield from group.irange_key(start - 2.0 * 4.0 ** c, end, inclusive=(True, False))

    def overlapping(self, start: float, end: float, ignore: str | None = None) -> list[Booking]:
        """Bookings that share some time with ``[start, end)``, except reservation ``ignore``,
        in start order."""
        found = [b for b in self._near(start, end)
                 if b.end > start and b.reservation_id != ignore]
        found.sort(key=attrgetter("start"))
        return found

    def blocks(self, others: list[Booking], start: float, end: float, slots: int,
               exclusive: bool, config: dict | None) -> bool:
        """Whether ``others`` (the overlapping bookings) leave no room for the request."""
        if not others:
            return slots > self.capacity
        if exclusive:
            return True
        if any(b.exclusive or not configs_agree(b.config, config) for b in others):
            return True
        return peak_slots(others, start, end) + slots > self.capacity

    def fits(self, start: float, end: float, slots: int, exclusive: bool,
             config: dict | None = None, ignore: str | None = None) -> bool:
        if ignore is None and (exclusive or config is None):     # the load says it all
            return (slots <= self.capacity and self._load.low_throughout(
                start, end - start, self._limit(slots, exclusive)))
        return not self.blocks(self.overlapping(start, end, ignore), start, end, slots,
                               exclusive, config)

    def _limit(self, slots: int, exclusive: bool) -> int:
        """The highest load at which the request still fits."""
        return 0 if exclusive else self.capacity - slots

    def earliest_fit(self, after: float, duration: float, slots: int, exclusive: bool,
                     config: dict | None = None) -> float | None:
        """The earliest start at or after ``after`` where the request fits, or None if never.

        The load profile finds the first window with the slots free in O(log n). A shared
        request with a config must also avoid shared bookings with another config, which
        the load does not show: every window starting before such a booking in its way
        ends holds it too, so the search goes on from the earliest end among them.
        """
        if slots > self.capacity:
            return None
        t = after
        while True:
            t = self._load.next_fit(t, duration, self._limit(slots, exclusive))
            if t is None or exclusive or config is None:
                return t
            clash = [b.end for b in self.overlapping(t, t + duration)
                     if not configs_agree(b.config, config)]
            if not clash:
                return t
            t = min(clash)

    def used_slots(self, t: float) -> int:
        """Slots in use at the instant ``t`` (a booking starting at ``t`` counts)."""
        return sum(self.capacity if b.exclusive else b.slots
                   for c, group in self._classes.items()
                   for b in group.irange_key(t - 2.0 * 4.0 ** c, t)
                   if b.end > t)

    def free_slots(self, start: float, end: float) -> int:
        """Slots free throughout ``[start, end)`` for a shared booking with no config."""
        others = self.overlapping(start, end)
        if any(b.exclusive for b in others):
            return 0
        return self.capacity - peak_slots(others, start, end)

    def config_at(self, t: float, current: dict) -> dict:
        """The config the resource will have at ``t``: that of the last booking started by
        then which asked for one, else what it has now."""
        for b in self._configured.irange_key(max_key=t, reverse=True):
            return b.config
        return current


def peak_slots(bookings: list[Booking], start: float, end: float) -> int:
    """The most slots the shared ``bookings`` hold at once within ``[start, end)``."""
    if len(bookings) == 1:
        return bookings[0].slots
    changes = []
    for b in bookings:
        changes.append((max(b.start, start), b.slots))
        changes.append((min(b.end, end), -b.slots))
    changes.sort(key=lambda c: (c[0], c[1]))  # ends before starts at the same instant
    peak = used = 0
    for _, delta in changes:
        used += delta
        peak = max(peak, used)
    return peak
