"""Whether a resource can serve: up, down (an admin or its health check said so), revoked
(a revocation counts down on it) or retired (revoked, and out of service until restored; or
``retired: true`` in the config, kept only for the reservations it has).

Nothing new is booked on a resource that is not up (``Resource.bookable``). Taking one down
tells the reservations booked on it (``Lab.went_down``: degraded, and repaired when made by
selector); every change is published on ``resource.state``. A health check only brings up
what a health check took down: an admin's ``down`` stays until an admin says ``up``.
"""

from __future__ import annotations

from .errors import Conflict
from .events import ResourceState
from .lab import RESOURCE, Lab, Resource, settles
from .revocation import Revocations

ADMIN = "admin"
HEALTH = "health"


class Service:
    def __init__(self, lab: Lab, revocations: Revocations) -> None:
        self.lab = lab
        self.revocations = revocations

    def state(self, res: Resource) -> tuple[str, str | None]:
        """(service, reason) as list_resources shows them."""
        if res.retired:
            return "retired", "retired in the config: serves its reservations, takes no more"
        if not res.in_service:
            pending = self.revocations._pending_revoke(res.name)
            if pending is not None:
                return "revoked", pending.reason
            return "retired", None
        if res.down is not None:
            return "down", res.down
        return "up", None

    @settles
    def set_state(self, name: str, up: bool, reason: str, by: str, now: float) -> bool:
        """Take ``name`` down or bring it up; returns whether anything changed. ``by`` is
        ADMIN or HEALTH (see the module docstring)."""
        res = self.lab.resource(name)
        if not res.in_service and up:
            raise Conflict(f"{name} is revoked: restore puts it back in service")
        was_up = res.down is None
        if up:
            if was_up or (by == HEALTH and res.down_by == ADMIN):
                return False
            res.down = res.down_by = None
        else:
            if not was_up and (by == HEALTH or res.down_by == ADMIN):
                return False
            res.down, res.down_by = reason, by
        self.lab.touch(RESOURCE, name)
        service, why = self.state(res)
        self.lab.emit(ResourceState(name, service, why or reason, by))
        if up:
            self.lab.came_up(now)
        elif was_up and res.in_service:
            self.lab.went_down([name], reason, now)
        return True
