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

A transition is caused by a command of the holder (claim, release, cancel), by the clock
(start, lapse, expire) or by an admin (revoke). The table below is the whole state machine:
a (state, cause) pair that is not in it is refused with ``conflict``. Each ENDED entry names
the ``reason`` published with the change.
"""

from __future__ import annotations

from .errors import Conflict

GRANTED = "RESERVATION_GRANTED"
ACTIVE = "RESERVATION_ACTIVE"
ENDED = "RESERVATION_ENDED"

# (state, cause) -> (next state, reason published with it)
TRANSITIONS: dict[tuple[str, str], tuple[str, str]] = {
    (GRANTED, "claim"): (ACTIVE, "claimed"),
    (GRANTED, "start"): (ACTIVE, "started"),
    (GRANTED, "release"): (ENDED, "released"),
    (GRANTED, "lapse"): (ENDED, "lapsed"),
    (GRANTED, "cancel"): (ENDED, "cancelled"),
    (GRANTED, "revoke"): (ENDED, "revoked"),
    (ACTIVE, "release"): (ENDED, "released"),
    (ACTIVE, "expire"): (ENDED, "expired"),
    (ACTIVE, "revoke"): (ENDED, "revoked"),
}


def next_state(state: str, cause: str) -> tuple[str, str]:
    try:
        return TRANSITIONS[(state, cause)]
    except KeyError:
        raise Conflict(f"cannot {cause} a reservation that is {state}") from None
