"""Taking resources back from their holders with warning (elasticslice's delete_pending and
delete_complete), maintenance windows built on that, and what each node is worth (values).

Theory of operation
-------------------
A *revocation* names nodes (resources) and a deadline. Its *holders* are the live
reservations it will take: for an admin ``revoke``, every live booking on those nodes (those
further out than the deadline too: the nodes leave service and nobody can say when an admin
will ``restore`` them, so no booking may outlive the revocation); for a maintenance window,
the reservations that overlapped the window when it was booked.

- ``revoke`` takes the nodes out of service at once, so nothing new is booked on them while
  the countdown runs (requests get ``unavailable``), and publishes ``resource.delete_pending``
  now and every ``countdown_interval_s``, each with the time left and the absolute deadline,
  so a late or repeated notice is never misread.
- A holder answers with ``ack`` for the nodes that may go now: the reservations it holds
  there end at once (reason ``revoked``) and ``resource.delete_complete`` says which went.
  A reservation is taken whole, also when it holds other resources besides the revoked
  node: one id has one state, and half a co-reservation is of no use to its holder.
- At the deadline, or as soon as no holder is left (all answered, released or expired),
  the rest end the same way and a final ``resource.delete_complete`` (``final: true``)
  names every node. Nodes of an admin revocation stay out of service until ``restore``.

A revocation is a stored record with an absolute deadline: after a restart the countdown
resumes with the time that is left (a notice is published at once), and a deadline that
passed while the daemon was down is acted on when it starts.

Maintenance windows: the timeline must never hold two overlapping exclusive bookings, so
the maintenance booking is placed at once and room is made for it at once: a conflicting
reservation that can be used before the window keeps that part (its end moves to the
window's start, where the countdown takes it); one with nothing before the window is taken
now. The holders of both are warned by the revocation, whose deadline is the window's start.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import states
from .errors import BadRequest, Conflict, Forbidden
from .events import DeleteComplete, DeletePending, ResourceValues
from .lab import RESOURCE, REVOCATION, Caller, Lab, Reservation, new_id, settles
from .timeline import Booking


@dataclass(slots=True, eq=False)
class Revocation:
    id: str
    nodes: list[str]
    deadline: float
    reason: str | None
    maintenance: str | None = None      # the maintenance reservation this makes room for
    targets: dict[str, list[str]] = field(default_factory=dict)   # maintenance: node -> ids
    next_notice: float | None = None

    def to_record(self) -> dict:
        return {"id": self.id, "nodes": self.nodes, "deadline": self.deadline,
                "reason": self.reason, "maintenance": self.maintenance,
                "targets": self.targets}

    @classmethod
    def from_record(cls, rec: dict) -> Revocation:
        return cls(**rec)


def _entry(node: str, r: Reservation | None, max_wait_time: float) -> dict:
    """elasticslice's nodelist entry: ``client_id`` is the holder's reservation id (a string,
    null for a node nobody holds), the holder's user in ``owner``, and the entry's own
    ``max_wait_time`` left (0 in delete_complete)."""
    return {"node_id": node, "client_id": None if r is None else r.id,
            "owner": None if r is None else r.owner, "max_wait_time": max_wait_time}


def _nodelist(rev: Revocation, pairs: list[tuple[str, Reservation]], every_node: bool,
              max_wait_time: float) -> list[dict]:
    """Entries in the revocation's node order; with ``every_node``, a node with nobody in
    ``pairs`` still gets one entry (``client_id`` null), so the event names all of them."""
    by_node: dict[str, list[dict]] = {}
    for n, r in pairs:
        by_node.setdefault(n, []).append(_entry(n, r, max_wait_time))
    out = []
    for n in rev.nodes:
        out += by_node.get(n) or ([_entry(n, None, max_wait_time)] if every_node else [])
    return out


class Revocations:
    def __init__(self, lab: Lab, countdown_interval_s: float) -> None:
        self.lab = lab
        self.interval = countdown_interval_s
        self.revocations: dict[str, Revocation] = {}
        lab.revocations = self

    # --- commands ---

    @settles
    def revoke(self, caller: Caller, nodes: list[str], max_wait_time: float,
               reason: str | None, now: float) -> Revocation:
        self._admin(caller, "revoke")
        self._check_nodes(nodes)
        for node in nodes:
            pending = self._pending_revoke(node)
            if pending is not None:
                raise Conflict(f"{node} is already being revoked ({pending.id})")
        for node in nodes:
            self.lab.resources[node].in_service = False
            self.lab.touch(RESOURCE, node)
        self.lab.went_down(list(nodes), reason or "revoked", now)
        self.lab.settle()       # a selector reservation moved off them is no holder
        rev = self._start(Revocation(new_id(), list(nodes), now + max_wait_time, reason))
        self._notice(rev, now)
        return rev

    @settles
    def ack(self, caller: Caller, nodes: list[str], now: float,
            only: dict[str, str] | None = None) -> list[str]:
        """End now what ``caller`` holds on ``nodes`` under pending revocations (an admin
        answers for anyone); returns the nodes that went. ``only`` maps a node to the one
        reservation of it that may go. Nodes with nothing pending are passed over: a notice
        may cross the deadline on its way."""
        self._check_nodes(nodes)
        only = only or {}
        named = set(nodes)
        if not caller.admin:
            for node in nodes:
                owners = {r.owner for rev in self.revocations.values()
                          for n, r in self._holders(rev) if n == node}
                if owners and caller.user not in owners:
                    raise Forbidden(f"{node} is held by {', '.join(sorted(owners))}, "
                                    f"not {caller.user}")
        gone: list[str] = []
        for rev in list(self.revocations.values()):
            holders = self._holders(rev)
            mine = {r.id for n, r in holders
                    if n in named and (caller.admin or r.owner == caller.user)
                    and only.get(n, r.id) == r.id}
            if mine:
                pairs = [(n, r) for n, r in holders if r.id in mine]
                self._take(rev, pairs, now)
                gone += [n for n, _ in pairs if n not in gone]
        return gone

    @settles
    def restore(self, caller: Caller, nodes: list[str], now: float) -> list[str]:
        """Put nodes back in service; returns those that were out of it."""
        self._admin(caller, "restore")
        self._check_nodes(nodes)
        for node in nodes:
            pending = self._pending_revoke(node)
            if pending is not None:
                raise Conflict(f"{node} is being revoked ({pending.id}); restore it after "
                               "its delete_complete")
        restored = [n for n in nodes if not self.lab.resources[n].in_service]
        for node in restored:
            self.lab.resources[node].in_service = True
            self.lab.touch(RESOURCE, node)
        if restored:
            self.lab.came_up(now)
        return restored

    def set_values(self, caller: Caller, values: list[tuple[str, float]],
                   now: float) -> list[str]:
        self._admin(caller, "set_resource_values")
        self._check_nodes([n for n, _ in values])
        for node, value in values:
            if not 0 <= value <= 1:
                raise BadRequest(f"value of {node} must be in [0, 1], not {value}")
        for node, value in values:
            self.lab.resources[node].value = value
            self.lab.touch(RESOURCE, node)
        self.lab.emit(ResourceValues([{"node_id": n, "value": v} for n, v in values]))
        return [n for n, _ in values]

    def values(self) -> list[dict]:
        return [{"node_id": r.name, "value": r.value} for r in self.lab.resources.values()]

    @settles
    def maintenance(self, caller: Caller, nodes: list[str], start: float, duration: float,
                    now: float) -> Reservation:
        """Book an exclusive maintenance window on ``nodes`` even where others hold them,
        making room for it as the module docstring says."""
        self._admin(caller, "maintenance")
        self._check_nodes(nodes)
        start = max(start, now)
        end = start + duration
        self.lab.went_down(list(nodes), "maintenance", now, start, end)
        self.lab.settle()       # a selector reservation moved off the window is no target
        targets: dict[str, list[str]] = {}
        for node in nodes:
            for b in self.lab.resources[node].timeline.overlapping(start, end):
                if b.reservation_id not in targets.setdefault(node, []):
                    targets[node].append(b.reservation_id)
        rid = new_id()
        m = Reservation(
            id=rid, kind="maintenance", owner=caller.user,
            state=states.GRANTED if start > now else states.ACTIVE, start=start, end=end,
            mode="exclusive", slots=self.lab.resources[nodes[0]].slots, config=None,
            bookings=[Booking(rid, n, start, end, self.lab.resources[n].slots, True)
                      for n in nodes])
        if not targets:
            return self.lab.add(m, now)
        rev = self._start(Revocation(new_id(), list(nodes), start, "maintenance", rid, targets))
        holders = self._holders(rev)
        keep = {r.id for _, r in holders if _usable_before(r, start)}
        for r in {r.id: r for _, r in holders if r.id in keep}.values():
            self.lab.transition(r, "shorten", now, end=start, expire_time=None
                                if r.expire_time is None else min(r.expire_time, start))
        # the window is booked before anything is taken, so nobody waiting for slots (a
        # pool checkout served when a holder ends) can be given a piece of it
        self.lab.add(m, now)
        self._notice(rev, now)      # when the window starts now, this takes them all
        drop = [(n, r) for n, r in holders if r.id not in keep and r.state != states.ENDED]
        if drop and rev.id in self.revocations:
            self._take(rev, drop, now)
        return m

    # --- the countdown ---

    def _start(self, rev: Revocation) -> Revocation:
        """Keep the revocation and set its deadline; scheduled before anything it holds
        is shortened to end at the deadline, so at that instant it ends as ``revoked``."""
        self.revocations[rev.id] = rev
        self.lab.touch(REVOCATION, rev.id)
        self.lab.schedule(rev.deadline, self._on_deadline, rev.id)
        return rev

    def _holders(self, rev: Revocation) -> list[tuple[str, Reservation]]:
        """(node, live reservation) pairs the revocation still has to take."""
        out = []
        for node in rev.nodes:
            if rev.maintenance is None:
                ids = [b.reservation_id for b in self.lab.resources[node].timeline]
            else:
                ids = rev.targets.get(node, [])
            for rid in dict.fromkeys(ids):
                r = self.lab.reservations.get(rid)
                if r is not None and r.state != states.ENDED:
                    out.append((node, r))
        return out

    def _notice(self, rev: Revocation, now: float) -> None:
        holders = self._holders(rev)
        remaining = max(0.0, rev.deadline - now)
        self.lab.emit(DeletePending(rev.id, rev.reason, remaining, rev.deadline,
                                    _nodelist(rev, holders, True, remaining)))
        if not holders or remaining == 0:
            self._take(rev, holders, now)
            return
        rev.next_notice = now + self.interval
        if rev.next_notice < rev.deadline:
            self.lab.schedule(rev.next_notice, self._on_notice, rev.id)

    def move_notices(self, seconds: float) -> None:
        """The wall clock jumped by ``seconds``: the interval between notices is a duration,
        so the next notice moves with it. The deadline is a time on the calendar (holders
        are told it as one) and stays: a forward jump past it takes the rest at once."""
        for rev in self.revocations.values():
            if rev.next_notice is not None:
                rev.next_notice += seconds
                if rev.next_notice < rev.deadline:
                    self.lab.schedule(rev.next_notice, self._on_notice, rev.id)

    def _take(self, rev: Revocation, pairs: list[tuple[str, Reservation]], now: float) -> None:
        """End the reservations in ``pairs`` and publish which nodes went; when that leaves
        the revocation with no holder (or it is due), it is complete. Another revocation
        these ends leave with no holder completes when they are settled (``holder_ended``)."""
        for r in {r.id: r for _, r in pairs}.values():
            if r.state != states.ENDED:
                self.lab.transition(r, "revoke", now)
        final = now >= rev.deadline or not self._holders(rev)
        if final:
            del self.revocations[rev.id]
            self.lab.touch(REVOCATION, rev.id)
        self.lab.emit(DeleteComplete(rev.id, rev.reason, final,
                                     _nodelist(rev, pairs, final, 0.0)))

    def _on_notice(self, key: str, due: float, now: float) -> None:
        rev = self.revocations.get(key)
        if rev is not None and rev.next_notice == due:
            self._notice(rev, now)

    def _on_deadline(self, key: str, due: float, now: float) -> None:
        rev = self.revocations.get(key)
        if rev is not None and rev.deadline == due:
            self._take(rev, self._holders(rev), now)

    def holder_ended(self, r: Reservation, now: float) -> None:
        """A holder that released (or whose reservation expired or was revoked by another
        revocation) has answered too."""
        for rev in list(self.revocations.values()):
            if set(r.resources) & set(rev.nodes) and not self._holders(rev):
                self._take(rev, [], now)

    # --- checks ---

    def _admin(self, caller: Caller, what: str) -> None:
        if not caller.admin:
            raise Forbidden(f"{what} is for admins; {caller.user} is not one")

    def _check_nodes(self, nodes: list[str]) -> None:
        if not nodes:
            raise BadRequest("nodelist must name at least one node")
        if len(set(nodes)) != len(nodes):
            raise BadRequest("a node is named twice in nodelist")
        for node in nodes:
            self.lab.resource(node)

    def _pending_revoke(self, node: str) -> Revocation | None:
        """The admin revocation (not a maintenance one) counting down on ``node``."""
        return next((rev for rev in self.revocations.values()
                     if rev.maintenance is None and node in rev.nodes), None)

    # --- persistence ---

    def snapshot(self, key: str) -> dict | None:
        rev = self.revocations.get(key)
        return rev.to_record() if rev is not None else None

    def unload(self, key: str) -> None:
        self.revocations.pop(key, None)

    def restore_records(self, records: list[dict], now: float) -> None:
        """Resume each countdown with a notice at once; one whose nodes left the inventory
        is dropped (and deleted from the store)."""
        for rec in records:
            rev = Revocation.from_record(rec)
            rev.nodes = [n for n in rev.nodes if n in self.lab.resources]
            if not rev.nodes:
                self.lab.touch(REVOCATION, rev.id)
                continue
            self.revocations[rev.id] = rev
            self.lab.schedule(rev.deadline, self._on_deadline, rev.id)
            rev.next_notice = now
            self.lab.schedule(now, self._on_notice, rev.id)


def _usable_before(r: Reservation, start: float) -> bool:
    """Whether ``r`` has time of its own before ``start`` (after any reconfiguration)."""
    return r.start < start and all(b.start < start for b in r.bookings)
