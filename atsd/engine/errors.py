"""The engine's refusals. Each carries the wire error code it becomes (protocol.py maps them
in one place) and any extra reply keys the protocol defines for it."""

from __future__ import annotations


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
