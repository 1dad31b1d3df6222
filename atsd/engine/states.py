"""Reservation states and every transition between them, in one table.

Theory of operation
-------------------
Every reservation, whatever made it (a calendar request, a pool checkout, a batch
reservation, a maintenance window), lives in one of three states:

    GRANTED  its bookings are on the timelines but nobody uses them yet: an unclaimed
             pre-reservation, or a booking confirmed ahead (requested with ``claim``) or
             a batch reservation waiting for its start time;
    ACTIVE   the holder has it: a claimed reservation, a checked-out allocation, a batch
             reservation past its start;
    ENDED    its bookings are gone from the timelines; the record stays for queries
             until the history retention drops it.

A transition is caused by a command of the holder (claim, release, cancel, extend), by the
clock (start, lapse, expire; move: a lease moved by a jump of the wall clock), by an
admin (revoke, a maintenance window that shortens it) or by the repair of a selector
booking (replace). The table below is the whole state
machine: a (state, cause) pair that is not in it is refused with ``conflict``. Each entry
names the ``reason`` published with the change; the steps that keep the state (extend,
shorten, replace, move) change what the reservation is instead: its end, a resource, or
when it is (a lease moved whole by a jump of the wall clock).

Every change to a live reservation goes through ``Lab.transition``, the only code that
changes its state, kind, end, expire_time or bookings. What follows from one, in order:

    1. what the step carries: a new kind (a claimed pre-reservation), expire_time, end or
       start (its bookings move on their timelines), or one booking replaced by another
       (published on ``reservation.replaced``);
    2. the new state; into ENDED its bookings leave the timelines, it stops counting
       against its owner's quota and is forgotten after the history retention;
    3. the timers its new state needs (start, lapse, expire, the expiring notice);
    4. its record is marked changed, and ``reservation.status`` is published (not for
       replace, which has its own event);
    5. an effect is queued (effects.py), done by ``Lab.settle`` once the change that made
       it is complete: into ACTIVE, the holder gets the config it booked; into ENDED, its
       slots serve waiting checkouts, a revocation that waited for it may be complete,
       and degraded selector bookings may find a match (``Lab._react`` says so in one
       place).

A new reservation (``Lab.add``) enters GRANTED or ACTIVE with the same steps 2-5.
"""

from __future__ import annotations

from .errors import Conflict

GRANTED = "RESERVATION_GRANTED"
ACTIVE = "RESERVATION_ACTIVE"
ENDED = "RESERVATION_ENDED"

# (state, cause) -> (next state, reason published with it; None: no reservation.status)
TRANSITIONS: dict[tuple[str, str], tuple[str, str | None]] = {
    (GRANTED, "claim"): (ACTIVE, "claimed"),
    (GRANTED, "start"): (ACTIVE, "started"),
    (GRANTED, "release"): (ENDED, "released"),
    (GRANTED, "lapse"): (ENDED, "lapsed"),
    (GRANTED, "cancel"): (ENDED, "cancelled"),
    (GRANTED, "revoke"): (ENDED, "revoked"),
    (ACTIVE, "release"): (ENDED, "released"),
    (ACTIVE, "expire"): (ENDED, "expired"),
    (ACTIVE, "revoke"): (ENDED, "revoked"),
    (GRANTED, "extend"): (GRANTED, "extended"),
    (ACTIVE, "extend"): (ACTIVE, "extended"),
    (GRANTED, "shorten"): (GRANTED, "shortened"),
    (ACTIVE, "shorten"): (ACTIVE, "shortened"),
    (GRANTED, "replace"): (GRANTED, None),
    (ACTIVE, "replace"): (ACTIVE, None),
    (ACTIVE, "move"): (ACTIVE, "moved"),       # a lease, by a jump of the wall clock
}


def next_state(state: str, cause: str) -> tuple[str, str | None]:
    try:
        return TRANSITIONS[(state, cause)]
    except KeyError:
        raise Conflict(f"cannot {cause} a reservation that is {state}") from None
