"""Revocation (elasticslice): take nodes back with a countdown, let holders answer, put nodes
back in service; and what each node is worth (values in [0, 1])."""

from __future__ import annotations

from ..protocol import DURATION, FRACTION, TEXT, list_of, map_of, optional, required
from . import Call, command

NODES = list_of(map_of(node_id=required(TEXT)), 1000)
NODE_VALUES = list_of(map_of(node_id=required(TEXT), value=required(FRACTION)), 1000)


def _names(nodelist: list[dict]) -> list[str]:
    return [n["node_id"] for n in nodelist]


@command("revoke", mutating=True, admin=True, nodelist=required(NODES),
         max_wait_time=required(DURATION), reason=optional(TEXT))
def revoke(call: Call, nodelist: list[dict], max_wait_time: float, reason: str | None) -> dict:
    """Take the nodes back: they stop taking new bookings now; their holders get
    resource.delete_pending notices counting max_wait_time down and may answer with
    ack_delete_pending; at zero the rest end (reason revoked), resource.delete_complete is
    published and the nodes stay out of service until restore. 0 takes them at once."""
    rev = call.app.revocations.revoke(call.caller, _names(nodelist), max_wait_time, reason,
                                      call.now)
    return {"revocation_id": rev.id, "deadline": rev.deadline}


@command("ack_delete_pending", mutating=True, nodelist=required(NODES))
def ack_delete_pending(call: Call, nodelist: list[dict]) -> dict:
    """A holder's answer to delete_pending: the nodes listed may go now. Whole reservations
    end at once (reason revoked); ``acknowledged`` lists the nodes that went."""
    return {"acknowledged": call.app.revocations.ack(call.caller, _names(nodelist), call.now)}


@command("restore", mutating=True, admin=True, nodelist=required(NODES))
def restore(call: Call, nodelist: list[dict]) -> dict:
    """Put revoked nodes back in service; ``restored`` lists those that were out of it."""
    restored = call.app.revocations.restore(call.caller, _names(nodelist), call.now)
    call.app.pool.serve(call.now)           # checkouts waiting for these nodes may fit now
    return {"restored": restored}


@command("set_resource_values", mutating=True, admin=True, nodelist=required(NODE_VALUES))
def set_resource_values(call: Call, nodelist: list[dict]) -> dict:
    """Say what each node is worth, from 0 to 1; kept, and published on resource.values."""
    values = [(n["node_id"], n["value"]) for n in nodelist]
    return {"updated": call.app.revocations.set_values(call.caller, values, call.now)}


@command("get_resource_values")
def get_resource_values(call: Call) -> dict:
    """Every node with its value (null where none was set)."""
    return {"nodelist": call.app.revocations.values()}
