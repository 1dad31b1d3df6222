"""What a change to the lab sets off in the other features, as values on a queue.

A change (a reservation ended, started, a resource went down or came back) does not call
the features that care about it. It queues one of these, and ``Lab.settle`` does what each
sets off once the change that queued it is complete: the entry point that made it returns
(``settles``), or the timer that fired it is done (a command settles midway only where
what it does next depends on it). What a reaction changes queues more effects, handled in
the same drain, in order. So a reservation ending never books or ends another
inside the call that ends it, and a feature never sees the lab half changed.
``Lab._react`` is the one place that says who reacts to what.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .lab import Reservation


@dataclass(frozen=True, slots=True)
class Ended:
    """A reservation ended: its bookings left the timelines."""

    reservation: Reservation
    now: float


@dataclass(frozen=True, slots=True)
class Started:
    """A reservation became ACTIVE: its holder has it."""

    reservation: Reservation
    now: float


@dataclass(frozen=True, slots=True)
class WentDown:
    """Resources will not serve over [start, end): down, revoked, or taken by a maintenance
    window."""

    names: tuple[str, ...]
    reason: str
    now: float
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class CameUp:
    """Resources can be booked again: brought up, or restored to service."""

    now: float


@dataclass(frozen=True, slots=True)
class Forgotten:
    """An ended reservation's history was dropped."""

    reservation_id: str


Effect = Ended | Started | WentDown | CameUp | Forgotten
