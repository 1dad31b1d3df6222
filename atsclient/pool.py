"""``ResourcePool``: canary's ResourcePool interface, served by atsd.

canary's ``ResourcePool`` keeps a machine's slots in one process; this one asks atsd, so
every process in the lab (and the lab's calendar) shares one pool. The names and shapes
are canary's: ``accommodates(request)`` gives an ``Outcome`` (``ok``, ``reason``, true when
ok), ``checkout(request)`` gives ``{type: [{id, slots}]}``, ``checkin(resources)`` takes
that dict back, ``types`` and ``count(type)`` describe the inventory. A request is
canary's list of ``{"type": ..., "slots": ...}``.

Unlike canary's in-process pool, a checkout here is an allocation with a lease: it ends by
itself when the lease does (``lease_s``, default the daemon's), so a crashed runner's slots
come back. ``accommodates`` answers for now, exactly as ``checkout`` would (canary's
compares totals, and so says yes to requests its checkout refuses).
"""

from __future__ import annotations

from .client import ATSClient
from .errors import ResourceUnavailable


class Outcome:
    """canary's outcome of ``accommodates``: ``ok``, and ``reason`` when not ok."""

    __slots__ = ("ok", "reason")

    def __init__(self, ok: bool, reason: str | None = None) -> None:
        self.ok = ok
        self.reason = reason or None

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return f"<Outcome {'ok' if self.ok else 'fail'}{f': {self.reason}' if self.reason else ''}>"


class ResourcePool:
    """canary-style pool over an ``ATSClient``. ``lease_s``, ``wait_s`` and ``priority``
    apply to every checkout unless a checkout gives its own."""

    def __init__(self, client: ATSClient, lease_s: float | None = None,
                 wait_s: float | None = None, priority: int | None = None) -> None:
        self.client = client
        self.defaults = {"lease_s": lease_s, "wait_s": wait_s, "priority": priority}
        self._held: list[tuple[dict, str]] = []      # (resources handed out, allocation id)

    @property
    def resources(self) -> dict[str, list[dict]]:
        """``{type: [{id, slots}]}`` with the slots free now, as canary's pool holds them."""
        pool = self.client.get_pool()["resources"]
        return {t: [{"id": i["id"], "slots": i["slots"]} for i in insts]
                for t, insts in pool.items()}

    @property
    def types(self) -> list[str]:
        return sorted(self.client.get_pool()["resources"])

    def __contains__(self, type: str) -> bool:
        return type in self.client.get_pool()["resources"]

    def empty(self) -> bool:
        return not self.client.get_pool()["resources"]

    def count(self, type: str) -> int:
        """Number of instances of ``type`` (or of ``type + "s"``, as canary allows)."""
        pool = self.client.get_pool()["resources"]
        for name in (type, f"{type}s"):
            if name in pool:
                return len(pool[name])
        raise ResourceUnavailable(f"no resource type {type!r}")

    def accommodates(self, request: list[dict]) -> Outcome:
        ok, reason = self.client.accommodates(request)
        return Outcome(ok, reason)

    def checkout(self, request: list[dict], **kwds) -> dict[str, list[dict]]:
        """Slots for ``request`` now, ``{type: [{id, slots}]}``; raises ResourceUnavailable
        when they cannot be had (after waiting ``wait_s``, when given)."""
        args = {**self.defaults, **kwds}
        reply = self.client.checkout(request, **args)
        self._held.append((reply["resources"], reply["allocation_id"]))
        return reply["resources"]

    def allocation_id(self, resources: dict) -> str:
        """The allocation a checkout's result belongs to (to renew its lease with
        ``client.extend_reservation``)."""
        # the very dict handed out first, then an equal one (a copy, or one rebuilt by hand)
        for same in (lambda h: h is resources, lambda h: h == resources):
            for held, aid in self._held:
                if same(held):
                    return aid
        raise ValueError(f"these resources were not checked out from this pool: {resources!r}")

    def checkin(self, resources: dict) -> None:
        """Give back what ``checkout`` returned."""
        aid = self.allocation_id(resources)
        self._held = [(h, a) for h, a in self._held if a != aid]
        self.client.checkin(aid)
