"""atsclient: the client library and command line of atsd."""

from .client import AsyncATSClient, ATSClient
from .errors import (ATSError, BackendError, BadRequest, ClaimLate, Conflict, Forbidden,
                     InternalError, NotFound, Overloaded, ResourceRetryExceeded,
                     ResourceUnavailable, TooEarly, Unauthenticated, Unreachable)
from .resource import ResourceReservation

__all__ = ["ATSClient", "AsyncATSClient", "ResourceReservation", "ATSError", "BackendError",
           "BadRequest", "ClaimLate", "Conflict", "Forbidden", "InternalError", "NotFound",
           "Overloaded", "ResourceRetryExceeded", "ResourceUnavailable", "TooEarly",
           "Unauthenticated", "Unreachable"]
