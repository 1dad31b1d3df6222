"""The audit trail: who changed what, and who tried what they may not.

Every accepted change (a mutating command answered ok) and every refused attempt on what
the caller does not own or on an admin command (``forbidden``) becomes an entry: time,
user (and with CURVE the public key the request came with), command, the ids it touched,
outcome. Entries join the group commit of the change they record, so the trail and the
state never disagree after a crash; once committed each is also logged at info level, for
a journal. The store keeps ``audit_retention_s`` of them, at most ``audit_max_entries``.
"""

from __future__ import annotations

from . import log as logmod
from .engine.lab import Caller, Lab
from .store import Store

MAX_IDS = 64            # ids kept per entry (a nodelist may name a thousand)
MAX_ID_LEN = 256        # longer is no id (an admin command is refused before its checks)
PRUNE_EVERY_S = 600.0

# request arguments and reply keys that name what a command touched
ID_KEYS = {"resource", "resources", "reservation_id", "pre_reservation_id", "allocation_id",
           "job_id", "revocation_id", "queue_id", "hosts", "acknowledged", "restored",
           "updated", "series_id", "released"}

log = logmod.get("atsd.audit")


def touched(lab: Lab, args: dict, result: dict) -> list[str]:
    """The ids named in the arguments and the reply, and the resources of the reservations
    among them (so an entry for ``release_reservation`` is found by its resource too)."""
    ids: dict[str, None] = {}
    for source in (args, result):
        for key, value in source.items():
            if key not in ID_KEYS or value is None:
                continue
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, str) and len(v) <= MAX_ID_LEN:
                    ids[v] = None
        nodes = source.get("nodelist")
        for item in nodes if isinstance(nodes, list) else []:
            node = item.get("node_id") if isinstance(item, dict) else None
            if isinstance(node, str) and len(node) <= MAX_ID_LEN:
                ids[node] = None
    for rid in list(ids):
        r = lab.reservations.get(rid)
        if r is not None:
            ids.update(dict.fromkeys(r.resources))
    return list(ids)


class AuditTrail:
    def __init__(self, store: Store, retention_s: float, max_entries: int) -> None:
        self.store = store
        self.last_seq = store.last_audit_seq()
        self.retention_s = retention_s
        self.max_entries = max_entries
        self._pending: list[dict] = []
        self._last_prune: float | None = None     # trims at the first commit, at start
        self._pruned_seq = self.last_seq

    def record(self, now: float, caller: Caller, key: str | None, command: str, ids: list[str],
               outcome: str) -> None:
        self.last_seq += 1
        entry = {"seq": self.last_seq, "time": now, "user": caller.user, "command": command,
                 "ids": ids[:MAX_IDS], "outcome": outcome}
        if len(ids) > MAX_IDS:
            entry["ids_omitted"] = len(ids) - MAX_IDS
        if key is not None:
            entry["key"] = key
        self._pending.append(entry)

    def take(self) -> list[dict]:
        pending, self._pending = self._pending, []
        return pending

    def trim(self, now: float) -> tuple[float, int] | None:
        """What the store should keep, (oldest time, most entries): at start, every
        PRUNE_EVERY_S, and whenever 1% of max_entries came since the last trim (a flood of
        refused attempts is trimmed as it comes, in small deletes)."""
        if (self._last_prune is not None and now - self._last_prune <= PRUNE_EVERY_S
                and self.last_seq - self._pruned_seq <= self.max_entries // 100):
            return None
        self._last_prune, self._pruned_seq = now, self.last_seq
        return now - self.retention_s, self.max_entries

    async def query(self, since: float | None, until: float | None, actor: str | None,
                    resource: str | None, limit: int) -> list[dict]:
        """Committed entries only: one still in the open group may yet be undone."""
        return await self.store.read_audit(since, until, actor, resource, limit)

    @staticmethod
    def committed(entries: list[dict]) -> None:
        for e in entries:
            log.info("audit", user=e["user"], command=e["command"], ids=e["ids"],
                     outcome=e["outcome"], **({"key": e["key"]} if "key" in e else {}))
