"""The records the engine emits. The server numbers them (``seq``), stamps them (``ts``),
keeps them in the event log and publishes them; the engine only says what happened."""

from __future__ import annotations

from dataclasses import dataclass

# the topics are defined once, in atsclient.wire, with what each event carries
from atsclient.wire import (DELETE_COMPLETE, DELETE_PENDING, JOB_STATUS,  # noqa: F401
                            RESERVATION_DEGRADED, RESERVATION_EXPIRING, RESERVATION_REPLACED,
                            RESERVATION_STATUS, RESOURCE_STATE, RESOURCE_VALUES)
from atsclient.wire import TOPICS as _TOPICS

TOPICS = tuple(_TOPICS)


@dataclass(slots=True)
class Event:
    topic: str
    payload: dict
