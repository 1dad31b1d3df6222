"""The events the engine emits, one type per topic. The server numbers them (``seq``),
stamps them (``ts``), keeps them in the event log and publishes them; the engine only says
what happened.

Each type's fields are the keys its event carries on the wire, in the order they are sent
(``payload``); atsclient.wire lists them per topic with what each means, and
tests/test_engine_events.py holds the two the same. The published kissats client reads
these keys: a field is never renamed or dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from functools import cache
from types import MappingProxyType
from typing import ClassVar, Mapping

# the topics are defined once, in atsclient.wire, with what each event carries
from atsclient.wire import (DELETE_COMPLETE, DELETE_PENDING, JOB_STATUS,
                            RESERVATION_DEGRADED, RESERVATION_EXPIRING, RESERVATION_REPLACED,
                            RESERVATION_STATUS, RESOURCE_STATE, RESOURCE_VALUES)
from atsclient.wire import TOPICS as _TOPICS

TOPICS = tuple(_TOPICS)


@dataclass(slots=True)
class Event:
    topic: ClassVar[str]
    # set by the server on what a jump of the wall clock brought due, sent after the rest
    clock_jump_s: float | None = field(default=None, kw_only=True)

    @property
    def payload(self) -> Mapping:
        """The keys the event carries on the wire, in order; read-only (a change goes to
        the event's fields)."""
        out = {name: getattr(self, name) for name in _wire_fields(type(self))}
        if self.clock_jump_s is not None:
            out["clock_jump_s"] = self.clock_jump_s
        return MappingProxyType(out)


@cache
def _wire_fields(event_type: type) -> tuple[str, ...]:
    """An event type's wire keys but the optional last one, worked out once per type."""
    return tuple(f.name for f in fields(event_type) if f.name != "clock_jump_s")


@dataclass(slots=True)
class ReservationStatus(Event):
    topic: ClassVar[str] = RESERVATION_STATUS
    reservation_id: str
    reservation_status: str
    previous: str | None
    reason: str
    owner: str
    resources: list[str]
    kind: str
    start_time: float
    end_time: float


@dataclass(slots=True)
class ReservationExpiring(Event):
    topic: ClassVar[str] = RESERVATION_EXPIRING
    reservation_id: str
    owner: str
    resources: list[str]
    end_time: float
    remaining: float


@dataclass(slots=True)
class DeletePending(Event):
    topic: ClassVar[str] = DELETE_PENDING
    revocation_id: str
    reason: str | None
    max_wait_time: float
    deadline: float
    nodelist: list[dict]


@dataclass(slots=True)
class DeleteComplete(Event):
    topic: ClassVar[str] = DELETE_COMPLETE
    revocation_id: str
    reason: str | None
    final: bool
    nodelist: list[dict]


@dataclass(slots=True)
class ResourceValues(Event):
    topic: ClassVar[str] = RESOURCE_VALUES
    nodelist: list[dict]


@dataclass(slots=True)
class JobStatus(Event):
    topic: ClassVar[str] = JOB_STATUS
    job_id: str
    reservation_id: str
    state: str
    previous: str | None
    exit_code: int | None
    owner: str


@dataclass(slots=True)
class ResourceState(Event):
    topic: ClassVar[str] = RESOURCE_STATE
    resource: str
    service: str
    reason: str
    by: str


@dataclass(slots=True)
class ReservationDegraded(Event):
    topic: ClassVar[str] = RESERVATION_DEGRADED
    reservation_id: str
    resource: str
    reason: str
    owner: str


@dataclass(slots=True)
class ReservationReplaced(Event):
    topic: ClassVar[str] = RESERVATION_REPLACED
    reservation_id: str
    old: str
    new: str
    owner: str
    start_time: float
    end_time: float

