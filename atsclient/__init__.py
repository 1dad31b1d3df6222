"""atsclient: the client library and command line of atsd."""

from .client import AsyncATSClient, ATSClient
from .errors import (ATSError, BackendError, BadRequest, ClaimLate, Conflict, Forbidden,
                     InternalError, NotFound, Overloaded, ResourceRetryExceeded,
                     ResourceUnavailable, ServerCommandMissing, TooEarly, Unauthenticated,
                     Unreachable)
from .events import ElasticEndpoint, Subscriber
from .pool import ResourcePool
from .resource import ResourceReservation

__all__ = ["ATSClient", "AsyncATSClient", "ResourceReservation", "ResourcePool", "Subscriber",
           "ElasticEndpoint", "ATSError", "BackendError",
           "BadRequest", "ClaimLate", "Conflict", "Forbidden", "InternalError", "NotFound",
           "Overloaded", "ResourceRetryExceeded", "ResourceUnavailable", "ServerCommandMissing",
           "TooEarly",
           "Unauthenticated", "Unreachable"]
