"""The daemon's own health and configuration, for its operator."""

from __future__ import annotations

from ..engine.errors import Conflict
from ..reload import ReloadRefused
from . import Call, command


@command("get_stats", errors=("bad_request", "forbidden"),
         admin=True, replies=("uptime_s", "connections", "subscribers",
                                               "requests_in_flight", "waiting", "reservations",
                                               "events", "store"))
def get_stats(call: Call) -> dict:
    """The daemon's health: connections, requests, reservations, state file.

    Uptime; connections and event subscribers open now; requests in flight (commands
    still running, such as waiting checkouts); pool checkouts waiting per slot type;
    reservations by state; the event log (last_seq, first_seq, events in it); the state
    file (bytes, free_bytes, wal_bytes, commits, commit latency percentiles in ms over the
    newest commits, and the last commit error with its time)."""
    return call.io.stats()


@command("reload", errors=("bad_request", "forbidden", "conflict"),
         admin=True, replies=("reloaded", "changes"))
async def reload(call: Call) -> dict:
    """Apply the config file again, whole or not at all.

    Read the config file again and apply it whole, as SIGHUP does: ``changes`` lists
    resources ``added``, ``removed``, ``resized`` ({name: [old, new] slots}) and ``changed``,
    and the ``settings`` that changed. A change that conflicts with live reservations (fewer
    slots than they hold, a resource they hold removed) or that needs a restart is refused
    with ``conflict`` naming them, and the old config stays. Runs between two wake-ups,
    so no request sees half of it."""
    try:
        return {"reloaded": True, "changes": await call.io.reload()}
    except ReloadRefused as exc:
        raise Conflict(f"config not reloaded: {exc}") from None
