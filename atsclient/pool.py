"""``ResourcePool``: canary's ResourcePool, in this process or served by atsd.

canary's ``ResourcePool(pool=None)`` keeps one machine's slots in one process. Constructed
the same way, this one does too, with no daemon: the same surface (``additional_properties``,
``resources``, ``slots_per_resource_type``, ``types``, ``empty``, ``count``, ``fill``,
``pop``, ``getstate``, ``clear``, ``populate``, ``dump``, ``accommodates``, ``checkout``,
``checkin``), but placing requests with atsd's packer (``atsd/engine/placement.py``, CTest's
own), so it hands out what ``ctest`` and an atsd daemon would. ``ResourcePool(client=...)``
asks a daemon instead, so every process in the lab (and the lab's calendar) shares one pool.

A request is canary's list of requirements, one per slot group; on CTest's documented
example spec (gpus 0: 2 slots, 1: 4, 2: 2, 3: 1; crypto_chips card0: 4)::

    pool.checkout([{"type": "gpus", "slots": 2}, {"type": "gpus", "slots": 1},
                   {"type": "crypto_chips", "slots": 1}])
    # -> {"gpus": [{"id": "1", "slots": 2}, {"id": "1", "slots": 1}],
    #     "crypto_chips": [{"id": "card0", "slots": 1}]}

Each requirement is served by one instance; the result lists, per type, one
``{id, slots}`` per requirement in request order; ``checkin`` takes that dict back.
``accommodates`` runs the same decision as ``checkout``, so it never says yes to what
``checkout`` refuses (canary's compares totals per type, and does).

Served, a checkout is an allocation with a lease: it ends by itself when the lease does
(``lease_s``, default the daemon's), so a crashed runner's slots come back; the inventory is
the daemon's config, so ``fill``, ``populate``, ``pop`` and ``clear`` are refused there.
"""

from __future__ import annotations

import copy
import os
from collections import Counter
from typing import IO, Any

import yaml

from atsd.engine.placement import explain, place

from .client import ATSClient
from .errors import Conflict, NotFound, ResourceUnavailable

__all__ = ["EmptyResourcePoolError", "Outcome", "ResourcePool", "ResourceUnavailable"]


class EmptyResourcePoolError(Exception):
    """canary's name: a question asked of a pool with no resources."""


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
    """canary's ResourcePool. ``pool``: canary's pool map (``resources``,
    ``additional_properties``, and ``TYPE: count`` shorthands), kept in this process.
    ``client``: an ATSClient whose daemon serves the pool; ``lease_s``, ``wait_s`` and
    ``priority`` then apply to every checkout unless a checkout gives its own."""

    def __init__(self, pool: dict[str, Any] | None = None, *, client: ATSClient | None = None,
                 lease_s: float | None = None, wait_s: float | None = None,
                 priority: int | None = None) -> None:
        if isinstance(pool, ATSClient):
            raise TypeError("pass the daemon's client as ResourcePool(client=...)")
        if client is not None and pool is not None:
            raise TypeError("a pool is either filled here (pool) or served (client), not both")
        if client is None and (lease_s, wait_s, priority) != (None, None, None):
            raise TypeError("lease_s, wait_s and priority apply to a served pool (client=)")
        self.client = client
        self.defaults = {"lease_s": lease_s, "wait_s": wait_s, "priority": priority}
        self._held: list[tuple[dict, str]] = []      # served: (resources handed out, id)
        self._additional: dict[str, Any] = {}        # in process: canary's attributes
        self._free: dict[str, list[dict]] = {}
        self._total: dict[str, dict[str, int]] = {}
        if pool:
            self.fill(pool)

    # --- what there is ---

    def _pool(self) -> tuple[dict, dict[str, list[dict]], dict[str, dict[str, int]]]:
        """(additional_properties, {type: [{id, slots free}]}, {type: {id: total slots}})."""
        if self.client is None:
            return self._additional, self._free, self._total
        served = self.client.get_pool()
        resources = served["resources"]
        return (served.get("additional_properties") or {},
                {t: [{"id": i["id"], "slots": i["slots"]} for i in insts]
                 for t, insts in resources.items()},
                {t: {i["id"]: i["total"] for i in insts} for t, insts in resources.items()})

    @property
    def additional_properties(self) -> dict[str, Any]:
        return self._pool()[0]

    @property
    def resources(self) -> dict[str, list[dict]]:
        """``{type: [{id, slots}]}`` with the slots free now, as canary's pool holds them."""
        return self._pool()[1]

    @property
    def slots_per_resource_type(self) -> Counter:
        """Free slots per type now."""
        return Counter({t: sum(i["slots"] for i in insts)
                        for t, insts in self._pool()[1].items()})

    @property
    def types(self) -> list[str]:
        return sorted(self._pool()[1])

    def __contains__(self, type: str) -> bool:
        return type in self._pool()[1]

    def empty(self) -> bool:
        return not self._pool()[1]

    def count(self, type: str) -> int:
        """Number of instances of ``type`` (or of ``type + "s"``, as canary allows);
        ``node``/``nodes``: ``additional_properties["nodes"]["count"]``, 1 by default."""
        additional, resources, _ = self._pool()
        if type in ("node", "nodes"):
            return (additional.get("nodes") or {}).get("count", 1)
        for name in (type, f"{type}s"):
            if name in resources:
                return len(resources[name])
        raise ResourceUnavailable(f"no resource type {type!r}")

    def getstate(self) -> dict[str, Any]:
        additional, resources, _ = self._pool()
        return {"additional_properties": copy.deepcopy(additional),
                "resources": copy.deepcopy(resources)}

    def dump(self, file: IO[Any]) -> None:
        """canary's YAML: ``resource_pool: {additional_properties, resources}``."""
        yaml.dump({"resource_pool": self.getstate()}, file, default_flow_style=False)

    def __repr__(self) -> str:
        return f"<ResourcePool {'served by ' + self.client.server if self.client else 'local'}>"

    # --- changing the inventory (in process only) ---

    def _local(self, what: str) -> None:
        if self.client is not None:
            raise ValueError(f"{what}: a served pool's inventory is the daemon's config "
                             "(resource_spec:); change it there")

    def fill(self, pool: dict[str, Any]) -> None:
        """Replace the inventory with canary's pool map, checked as canary checks it."""
        self._local("fill")
        additional, resources = _checked_pool(pool)
        self._additional = additional
        self._free = resources
        self._total = {t: {i["id"]: i["slots"] for i in insts} for t, insts in resources.items()}

    def populate(self, **kwds: int) -> None:
        """``TYPE=count`` instances of one slot each; cpus default to this machine's, gpus
        to none, as canary."""
        self._local("populate")
        kwds.setdefault("cpus", os.cpu_count() or 1)
        kwds.setdefault("gpus", 0)
        self.fill({"additional_properties": {}, **kwds})

    def pop(self, type: str) -> list[dict] | None:
        self._local("pop")
        self._total.pop(type, None)
        return self._free.pop(type, None)

    def clear(self) -> None:
        self._local("clear")
        self._additional = {}
        self._free, self._total = {}, {}

    # --- checkouts ---

    def accommodates(self, request: list[dict]) -> Outcome:
        """Whether ``checkout(request)`` would be granted now, and why not."""
        if self.empty():
            raise EmptyResourcePoolError("the resource pool is empty")
        if self.client is not None:
            return Outcome(*self.client.accommodates(request))
        reason = explain(_pairs(request), self._free_map(), self._total)
        return Outcome(not reason, reason)

    def checkout(self, request: list[dict], **kwds) -> dict[str, list[dict]]:
        """Slots for ``request`` now, ``{type: [{id, slots}]}``; ResourceUnavailable when
        they cannot be had (served: after waiting ``wait_s``, when given)."""
        if self.empty():
            raise EmptyResourcePoolError("the resource pool is empty")
        if self.client is not None:
            reply = self.client.checkout(request, **{**self.defaults, **kwds})
            self._held.append((reply["resources"], reply["allocation_id"]))
            return reply["resources"]
        if kwds:
            raise TypeError(f"{', '.join(kwds)}: only a served pool (client=) takes these")
        pairs = _pairs(request)
        placed = place(pairs, self._free_map())
        if placed is None:
            raise ResourceUnavailable(explain(pairs, self._free_map(), self._total))
        out: dict[str, list[dict]] = {}
        taken = {t: iter(ids) for t, ids in placed.items()}
        for rtype, slots in pairs:
            rid = next(taken[rtype])
            self._instance(rtype, rid)["slots"] -= slots
            out.setdefault(rtype, []).append({"id": rid, "slots": slots})
        return out

    def checkin(self, resources: dict[str, list[dict]]) -> None:
        """Give back what ``checkout`` returned (the dict itself or an equal copy)."""
        if self.client is not None:
            self._checkin_served(resources)
            return
        back: Counter = Counter()
        for rtype, items in resources.items():
            for item in items:
                back[(rtype, str(item["id"]))] += item["slots"]
        for (rtype, rid), slots in back.items():     # all checked before any change
            if rid not in self._total.get(rtype, {}):
                raise ValueError(f"checkin of an unknown resource: {rtype} {rid!r}")
            if self._instance(rtype, rid)["slots"] + slots > self._total[rtype][rid]:
                raise ValueError(f"checkin would give {rtype} {rid!r} more slots than it has")
        for (rtype, rid), slots in back.items():
            self._instance(rtype, rid)["slots"] += slots

    def allocation_id(self, resources: dict) -> str:
        """Served: the allocation a checkout's result belongs to (to renew its lease with
        ``client.extend_reservation``): the very dict handed out, else the newest equal one."""
        return self._candidates(resources)[0]

    def _candidates(self, resources: dict) -> list[str]:
        same = [aid for held, aid in self._held if held is resources]
        equal = [aid for held, aid in reversed(self._held) if held == resources]
        found = list(dict.fromkeys(same + equal))
        if not found:
            raise ValueError(f"these resources were not checked out from this pool: "
                             f"{resources!r}")
        return found

    def _checkin_served(self, resources: dict) -> None:
        """Check in the allocation ``resources`` came from. Equal copies of several
        checkouts are interchangeable, but one whose lease ended meanwhile is not: the
        daemon says so, it is dropped, and the next equal live one is checked in. When all
        had ended, the daemon's refusal is raised: the slots were not held to the end."""
        ended: Conflict | NotFound | None = None
        for aid in self._candidates(resources):
            try:
                self.client.checkin(aid)
            except (Conflict, NotFound) as exc:      # ended already (lease, revocation)
                ended = exc
            else:
                ended = None
            self._held = [(h, a) for h, a in self._held if a != aid]
            if ended is None:
                return
        raise ended

    def _free_map(self) -> dict[str, dict[str, int]]:
        return {t: {i["id"]: i["slots"] for i in insts} for t, insts in self._free.items()}

    def _instance(self, rtype: str, rid: str) -> dict:
        return next(i for i in self._free[rtype] if i["id"] == rid)


def _pairs(request: list[dict]) -> list[tuple[str, int]]:
    """canary's request as (type, slots) pairs; anything else is refused, saying why."""
    if not isinstance(request, list):
        raise TypeError("a request is a list of {type, slots} maps, not "
                        f"{type(request).__name__}")
    pairs = []
    for n, item in enumerate(request):
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise TypeError(f"request[{n}] must be a map with a type (str) and slots")
        slots = item.get("slots", 1)
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise TypeError(f"request[{n}].slots must be a positive integer, not {slots!r}")
        pairs.append((item["type"], slots))
    return pairs


def _checked_pool(pool: dict[str, Any]) -> tuple[dict, dict[str, list[dict]]]:
    """canary's pool map as (additional_properties, {type: [{id, slots}]}): ``resources``
    lists instances (``id`` made a string, ``slots`` a non-negative integer, default 1);
    any other key but ``additional_properties`` is ``TYPE: count`` (one-slot instances
    ``"0"``, ``"1"`` ...)."""
    if not isinstance(pool, dict):
        raise ValueError(f"a resource pool is a map, not {type(pool).__name__}")
    additional = pool.get("additional_properties") or {}
    if not isinstance(additional, dict):
        raise ValueError("additional_properties must be a map")
    resources: dict[str, list[dict]] = {}
    listed = pool.get("resources") or {}
    if not isinstance(listed, dict):
        raise ValueError("resources must map each type to a list of {id, slots}")
    for rtype, items in listed.items():
        resources[rtype] = _listed_instances(rtype, items)
    for key, count in pool.items():
        if key in ("resources", "additional_properties"):
            continue
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"{key} must be a count of instances, not {count!r}")
        if key in resources:
            raise ValueError(f"{key} is given both as a count and in resources")
        resources[key] = [{"id": str(j), "slots": 1} for j in range(count)]
    return dict(additional), resources


def _listed_instances(rtype: Any, items: Any) -> list[dict]:
    """One type's ``resources`` list as ``[{id, slots}]``, ids made strings, each once."""
    if not isinstance(rtype, str) or not isinstance(items, list):
        raise ValueError(f"resources.{rtype} must be a list of {{id, slots}}")
    instances = []
    for n, item in enumerate(items):
        if not isinstance(item, dict) or "id" not in item or set(item) - {"id", "slots"}:
            raise ValueError(f"resources.{rtype}[{n}] must be {{id, slots}}, not {item!r}")
        slots = item.get("slots", 1)
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 0:
            raise ValueError(f"resources.{rtype}[{n}].slots must be a non-negative "
                             f"integer, not {slots!r}")
        instances.append({"id": str(item["id"]), "slots": slots})
    ids = [i["id"] for i in instances]
    if len(set(ids)) != len(ids):
        raise ValueError(f"resources.{rtype} names an id twice")
    return instances
