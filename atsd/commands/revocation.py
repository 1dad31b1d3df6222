"""Revocation (elasticslice): take nodes back with a countdown, let holders answer, put nodes
back in service; and what each node is worth (values in [0, 1])."""

from __future__ import annotations

from ..engine.errors import BadRequest
from ..protocol import DURATION, FRACTION, TEXT, list_of, map_of, optional, required
from . import Call, command

# elasticslice's nodelist entries carry client_id (the holder's reservation id),
# component_urn (GENI's name of the node) and max_wait_time besides node_id: accepted
# everywhere a nodelist is, and used as each command's docstring says.
ENTRY = {"node_id": required(TEXT), "client_id": optional(TEXT),
         "component_urn": optional(TEXT), "max_wait_time": optional(DURATION)}
NODES = list_of(map_of(**ENTRY), 1000)
NODE_VALUES = list_of(map_of(**ENTRY, value=required(FRACTION)), 1000)


def _names(nodelist: list[dict]) -> list[str]:
    return [n["node_id"] for n in nodelist]


@command("revoke", errors=("bad_request", "forbidden", "conflict"),
         replies=("revocation_id", "deadline"),
         mutating=True, admin=True, nodelist=required(NODES),
         max_wait_time=optional(DURATION), reason=optional(TEXT))
def revoke(call: Call, nodelist: list[dict], max_wait_time: float | None,
           reason: str | None) -> dict:
    """Take nodes back: their holders get a countdown.

    They stop taking new bookings now; their holders get resource.delete_pending notices
    counting max_wait_time down and may answer with ack_delete_pending; at zero the rest end
    (reason revoked), resource.delete_complete is published and the nodes stay out of
    service until restore. 0 takes them at once. max_wait_time may instead be given in the
    entries (the same in each: one revocation has one deadline); an entry's client_id and
    component_urn change nothing (a revoked node is taken from every holder)."""
    waits = {n["max_wait_time"] for n in nodelist if n["max_wait_time"] is not None}
    if max_wait_time is not None:
        waits.add(max_wait_time)
    if len(waits) != 1:
        raise BadRequest("give max_wait_time once (or the same in every nodelist entry), "
                         f"not {'none' if not waits else sorted(waits)}")
    rev = call.app.revocations.revoke(call.caller, _names(nodelist), waits.pop(), reason,
                                      call.now)
    return {"revocation_id": rev.id, "deadline": rev.deadline}


@command("ack_delete_pending", errors=("bad_request", "forbidden", "not_found"),
         replies=("acknowledged",), mutating=True, nodelist=required(NODES))
def ack_delete_pending(call: Call, nodelist: list[dict]) -> dict:
    """Let nodes you hold that are being revoked go now.

    A holder's answer to delete_pending: the nodes listed may go now. Whole reservations
    end at once (reason revoked); ``acknowledged`` lists the nodes that went. As in
    elasticslice's answer, an entry whose max_wait_time is above 0 stays to its deadline, and
    an entry with a client_id lets only that reservation go."""
    go = [n for n in nodelist if not n["max_wait_time"]]
    acked = call.app.revocations.ack(call.caller, _names(go), call.now,
                                     {n["node_id"]: n["client_id"] for n in go
                                      if n["client_id"] is not None}) if go else []
    return {"acknowledged": acked}


@command("restore", errors=("bad_request", "forbidden", "conflict"),
         replies=("restored",), mutating=True, admin=True, nodelist=required(NODES))
def restore(call: Call, nodelist: list[dict]) -> dict:
    """Put revoked nodes back in service.

    ``restored`` lists those that were out of it."""
    restored = call.app.revocations.restore(call.caller, _names(nodelist), call.now)
    return {"restored": restored}


@command("set_resource_values", errors=("bad_request", "forbidden"), replies=("updated",),
         mutating=True, admin=True, nodelist=required(NODE_VALUES))
def set_resource_values(call: Call, nodelist: list[dict]) -> dict:
    """Say what each node is worth, from 0 to 1.

    Kept, and published on resource.values. An entry's client_id, component_urn and
    max_wait_time change nothing (a value is the node's, whoever holds it)."""
    values = [(n["node_id"], n["value"]) for n in nodelist]
    return {"updated": call.app.revocations.set_values(call.caller, values, call.now)}


@command("get_resource_values", errors=("bad_request",), replies=("nodelist",))
def get_resource_values(call: Call) -> dict:
    """What each node is worth, from 0 to 1.

    Every node, with null where no value was set."""
    return {"nodelist": call.app.revocations.values()}
