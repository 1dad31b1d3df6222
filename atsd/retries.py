"""The retry cache: the first reply of each mutating request, by (user, request_id).

A client that timed out sends the same request again with the same request_id; it must get
the first reply, not a second booking. So each reply is kept (and committed with the change
it acknowledges) for ``ttl_s``, with a digest of the request it answered: a different
request under a used id is refused, not answered with another request's reply.

Every user may fill it, so it is bounded in entries and in bytes; past either bound the
oldest go first. The key is a (user, request_id) pair, never a joined string, so no choice
of user name and id can reach another user's reply.
"""

from __future__ import annotations

from dataclasses import dataclass

Key = tuple[str, str]           # (user, request_id)
OVERHEAD = 100                  # bytes an entry costs beyond its data (dict slot, tuple, ...)
PRUNE_EVERY_S = 600.0           # expired replies leave the state file this often


@dataclass(slots=True)
class Entry:
    ts: float
    digest: bytes | None        # None: kept by an atsd that stored no digest
    data: bytes                 # the encoded reply

    def size(self, key: Key) -> int:
        return len(self.data) + len(key[0]) + len(key[1]) + OVERHEAD


class ReplyCache:
    def __init__(self, ttl_s: float, max_entries: int, max_bytes: int, now: float,
                 stored: list[tuple[str, str, float, bytes | None, bytes]]) -> None:
        """``stored``: rows from the state file, oldest first."""
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: dict[Key, Entry] = {}     # insertion order: oldest first
        self._new: list[tuple[str, str, float, bytes | None, bytes]] = []
        self._gone: dict[Key, None] = {}     # to delete from the file (an ordered set)
        self._last_prune = now
        for user, rid, ts, digest, data in stored:
            self._add((user, rid), Entry(ts, digest, data))

    def get(self, key: Key) -> Entry | None:
        return self._entries.get(key)

    def put(self, key: Key, ts: float, digest: bytes, data: bytes) -> None:
        """The reply of a request not cached now (a retry of a cached one gets that)."""
        self._gone.pop(key, None)       # let go of before: its deletion must not hit this
        self._add(key, Entry(ts, digest, data))
        self._new.append((key[0], key[1], ts, digest, data))

    def _add(self, key: Key, entry: Entry) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old.size(key)
        self._entries[key] = entry
        self.bytes += entry.size(key)
        # the oldest go first; the entry just added can go too, if it alone is too big
        while self._entries and (self.bytes > self.max_bytes
                                 or len(self._entries) > self.max_entries):
            oldest = next(iter(self._entries))
            self.bytes -= self._entries.pop(oldest).size(oldest)
            self._gone[oldest] = None

    def expire(self, now: float) -> float | None:
        """Drop replies older than the TTL from memory; every PRUNE_EVERY_S, return the
        cut-off for the state file too."""
        cutoff = now - self.ttl_s
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.ts >= cutoff:
                break
            self.bytes -= self._entries.pop(key).size(key)
        if now - self._last_prune > PRUNE_EVERY_S:
            self._last_prune = now
            return cutoff
        return None

    def move(self, seconds: float, now: float) -> None:
        """The wall clock jumped by ``seconds``: a reply's age is a duration, so each kept
        reply's time moves with it. The state file keeps the times it was given (it is read
        only at a start, where the wall clock is all there is), so after a forward jump its
        pruning by time, which would drop replies still kept here, waits a TTL: by then
        every reply kept before the jump has expired here too."""
        for entry in self._entries.values():
            entry.ts += seconds
        self._last_prune = (now + self.ttl_s - PRUNE_EVERY_S if seconds > 0
                            else self._last_prune + seconds)

    def take(self) -> tuple[list, list[Key]]:
        """The replies to write and the keys to delete since the last commit."""
        new, gone = self._new, list(self._gone)
        self._new, self._gone = [], {}
        return new, gone

    def not_written(self, new: list, gone: list[Key]) -> None:
        """A commit failed: its replies acknowledged nothing, and its deletions are due
        again with the next one."""
        for user, rid, *_ in new:
            entry = self._entries.pop((user, rid), None)
            if entry is not None:
                self.bytes -= entry.size((user, rid))
        self._gone.update(dict.fromkeys(gone))
