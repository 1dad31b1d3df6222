"""The engine's refusals. Each carries the wire error code it becomes (protocol.py maps them
in one place) and any extra reply keys the protocol defines for it."""

from __future__ import annotations

from datetime import datetime, timezone


def at(t: float) -> str:
    """A time in a message people read: a date in UTC, never an epoch number."""
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def clip(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was. A refusal may quote
    what a request sent, but only a short piece of it: a megabyte of bad value must not come
    back in the reply (nor sit in the retry cache)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def shown(value) -> str:
    """A request's value as a refusal quotes it: its repr, clipped."""
    return clip(repr(value))


class EngineError(Exception):
    code = "internal"

    def __init__(self, message: str, **extra) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class BadRequest(EngineError):
    code = "bad_request"


class NotFound(EngineError):
    code = "not_found"


class Unavailable(EngineError):
    code = "unavailable"


class Conflict(EngineError):
    code = "conflict"


class TooEarly(EngineError):
    code = "too_early"


class ClaimLate(EngineError):
    code = "claim_late"


class Forbidden(EngineError):
    code = "forbidden"


class BackendError(EngineError):
    """The batch backend (Slurm) refused or failed; the message is its own."""

    code = "backend_error"
