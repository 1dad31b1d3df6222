"""Exceptions named after the wire error codes, so callers catch what they mean
(``ResourceUnavailable``, ``Forbidden``) instead of comparing strings."""

from __future__ import annotations


class ATSError(Exception):
    """The daemon refused a request; ``code`` is the wire error code, ``reply`` the reply."""

    code = "internal"

    def __init__(self, message: str, reply: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reply = reply or {}


class BadRequest(ATSError):
    code = "bad_request"


class ResourceUnavailable(ATSError):
    """kissats raises this name where a resource cannot be had. Its documents say
    ``Raises: ResourceUnavailable`` for request and claim, so every refusal of a reservation
    (an unknown id, someone else's, the wrong state, too early, too late) is one: code that
    catches it, as kissats' own ResourceReservation does, never crashes on them."""

    code = "unavailable"


class NotFound(ResourceUnavailable):
    code = "not_found"


class Conflict(ResourceUnavailable):
    code = "conflict"


class TooEarly(ResourceUnavailable):
    code = "too_early"


class ClaimLate(ResourceUnavailable):
    code = "claim_late"


class Forbidden(ResourceUnavailable):
    code = "forbidden"


class Unauthenticated(ATSError):
    code = "unauthenticated"


class Overloaded(ATSError):
    code = "overloaded"


class BackendError(ATSError):
    code = "backend_error"


class InternalError(ATSError):
    code = "internal"


class Unreachable(ATSError):
    """No reply from the daemon within the timeout, after every retry."""

    code = "unreachable"


class Standby(Unreachable):
    """Every endpoint of the address answered that it is a standby: no atsd leads now (or
    the leader is not among them; the message names it when a standby said)."""

    code = "standby"


class ServerCommandMissing(BadRequest):
    """kissats' name: ``server_communicate`` got a request without a ``command``."""

    code = "bad_request"


class ResourceRetryExceeded(ATSError):
    """kissats' name: a ResourceReservation tried more often than max_retry."""

    code = "retry_exceeded"


# one class per wire error code (atsclient.wire.ERROR_CODES; tests/test_protocol_doc.py
# holds the two to each other)
BY_CODE = {cls.code: cls for cls in (BadRequest, NotFound, ResourceUnavailable, Conflict,
                                     TooEarly, ClaimLate, Forbidden, Unauthenticated,
                                     Overloaded, BackendError, InternalError, Standby)}


def from_reply(reply: dict) -> ATSError:
    error = reply.get("error") or {}
    cls = BY_CODE.get(error.get("code"), InternalError)
    return cls(error.get("message", "unknown error"), reply)
