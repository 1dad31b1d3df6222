"""atsclient: the client library and command line of atsd.

Names are imported on first use (PEP 562), so that ``atsclient.wire`` — the topics and error
codes atsd's pure engine shares with its clients — loads without zmq or anything else."""

from __future__ import annotations

import importlib

_HOMES = {
    "ATSClient": "client", "AsyncATSClient": "client",
    "ElasticEndpoint": "events", "Subscriber": "events",
    "ResourcePool": "pool", "ResourceReservation": "resource",
    **dict.fromkeys(
        ["ATSError", "BackendError", "BadRequest", "ClaimLate", "Conflict", "Forbidden",
         "InternalError", "NotFound", "Overloaded", "ResourceRetryExceeded",
         "ResourceUnavailable", "ServerCommandMissing", "Standby", "TooEarly", "Unauthenticated",
         "Unreachable"], "errors"),
}

__all__ = list(_HOMES)


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'atsclient' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
