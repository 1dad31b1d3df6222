"""One resource's bookings, and the questions asked of them: does this fit, and when first.

Every kind of reservation (calendar, allocation, batch, maintenance) is bookings on these
timelines, so this module is the single place where double booking is prevented.

Bookings are kept sorted by start in a ``SortedKeyList`` (sortedcontainers: a list of
sorted chunks, so adding or removing one of 100k bookings moves a chunk, not the whole
calendar). An overlap query for ``[start, end)`` only looks at bookings whose start lies in
``[start - longest, end)``, where ``longest`` is the longest booking this timeline has held,
so a query costs O(log n + k) for k nearby bookings instead of a scan of the whole calendar.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter

from sortedcontainers import SortedKeyList


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


class Timeline:
    """The bookings of one resource with ``capacity`` slots."""

    __slots__ = ("capacity", "_bookings", "_longest")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._bookings = SortedKeyList(key=attrgetter("start"))
        self._longest = 0.0

    def __len__(self) -> int:
        return len(self._bookings)

    def __iter__(self):
        return iter(self._bookings)

    def add(self, booking: Booking) -> None:
        self._bookings.add(booking)
        self._longest = max(self._longest, booking.end - booking.start)

    def add_many(self, bookings: list[Booking]) -> None:
        """Add many at once (a restart): one sort instead of one insertion each."""
        self._bookings.update(bookings)
        self._longest = max([self._longest, *(b.end - b.start for b in bookings)])

    def remove(self, booking: Booking) -> None:
        self._bookings.remove(booking)     # Booking compares by identity (eq=False)

    def overlapping(self, start: float, end: float, ignore: str | None = None) -> list[Booking]:
        """Bookings that share some time with ``[start, end)``, except reservation ``ignore``."""
        return [b for b in self._bookings.irange_key(start - self._longest, end,
                                                     inclusive=(True, False))
                if b.end > start and b.reservation_id != ignore]

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
        return not self.blocks(self.overlapping(start, end, ignore), start, end, slots,
                               exclusive, config)

    def earliest_fit(self, after: float, duration: float, slots: int, exclusive: bool,
                     config: dict | None = None, ignore: str | None = None) -> float | None:
        """The earliest start at or after ``after`` where the request fits, or None if never.

        A window that does not fit can only start to fit once one of the bookings in its way
        has ended, so the next candidate is the earliest end among them.
        """
        if slots > self.capacity:
            return None
        t = after
        while True:
            others = self.overlapping(t, t + duration, ignore)
            if not self.blocks(others, t, t + duration, slots, exclusive, config):
                return t
            t = min(b.end for b in others)

    def used_slots(self, t: float) -> int:
        """Slots in use at the instant ``t`` (a booking starting at ``t`` counts)."""
        return sum(self.capacity if b.exclusive else b.slots
                   for b in self._bookings.irange_key(t - self._longest, t)
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
        for b in self._bookings.irange_key(max_key=t, reverse=True):
            if b.config is not None:
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
