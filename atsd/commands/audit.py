"""The audit trail, read back: who changed what, and who was refused (see atsd/audit.py)."""

from __future__ import annotations

from ..engine.errors import BadRequest, Forbidden, shown
from ..protocol import TEXT, TIME, count, optional
from . import Call, command


@command("get_audit", errors=("bad_request", "forbidden"),
         replies=("entries",), since=optional(TIME), until=optional(TIME),
         actor=optional(TEXT), resource=optional(TEXT), limit=optional(count(1, 10_000), 1000))
async def get_audit(call: Call, since: float | None, until: float | None, actor: str | None,
              resource: str | None, limit: int) -> dict:
    """Who changed what, and who was refused, oldest first.

    Audit entries in [since, until), oldest first, at most limit: every accepted change
    and every forbidden attempt, each {seq, time, user, key (with CURVE), command, ids,
    outcome}. ``actor`` keeps one user's, ``resource`` those touching an id (a resource,
    reservation, job ...). Admins see everyone's; a user only their own (another
    ``actor`` is forbidden)."""
    if since is not None and until is not None and until <= since:
        raise BadRequest("until must be after since")
    if not call.caller.admin:
        if actor is not None and actor != call.caller.user:
            raise Forbidden(f"only admins see the audit entries of others, such as "
                            f"{shown(actor)}; leave actor out for your own")
        actor = call.caller.user
    return {"entries": await call.io.audit.query(since, until, actor, resource, limit)}
