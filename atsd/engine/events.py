"""The records the engine emits. The server numbers them (``seq``), stamps them (``ts``),
keeps them in the event log and publishes them; the engine only says what happened."""

from __future__ import annotations

from dataclasses import dataclass

RESERVATION_STATUS = "reservation.status"
RESERVATION_EXPIRING = "reservation.expiring"
DELETE_PENDING = "resource.delete_pending"
DELETE_COMPLETE = "resource.delete_complete"
RESOURCE_VALUES = "resource.values"
JOB_STATUS = "job.status"
RESOURCE_STATE = "resource.state"
RESERVATION_DEGRADED = "reservation.degraded"
RESERVATION_REPLACED = "reservation.replaced"

TOPICS = (RESERVATION_STATUS, RESERVATION_EXPIRING, DELETE_PENDING, DELETE_COMPLETE,
          RESOURCE_VALUES, JOB_STATUS, RESOURCE_STATE, RESERVATION_DEGRADED,
          RESERVATION_REPLACED)


@dataclass(slots=True)
class Event:
    topic: str
    payload: dict
