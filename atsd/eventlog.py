"""The numbered event log: what ``get_events`` serves to a subscriber that missed some.

Events get ``seq`` (one more than the last, also across restarts) and ``ts`` here. At least the
newest ``size`` events are kept in memory for ``get_events`` and in the store for restarts.
"""

from __future__ import annotations

import bisect

from .engine.events import Event


class EventLog:
    def __init__(self, size: int, last_seq: int, recent: list[dict]) -> None:
        self.size = size
        self.last_seq = last_seq
        self._events = recent[-size:]
        self._seqs = [e["seq"] for e in self._events]

    def number(self, events: list[Event], ts: float) -> list[dict]:
        """Give each event its seq and ts; they become part of the log once committed."""
        out = []
        for i, e in enumerate(events, start=self.last_seq + 1):
            out.append({**e.payload, "topic": e.topic, "seq": i, "ts": ts})
        return out

    def append(self, numbered: list[dict]) -> None:
        if not numbered:
            return
        self._events.extend(numbered)
        self._seqs.extend(e["seq"] for e in numbered)
        self.last_seq = numbered[-1]["seq"]
        if len(self._events) > self.size + self.size // 4:   # trim now and then
            del self._events[:-self.size]
            del self._seqs[:-self.size]

    def __len__(self) -> int:
        return len(self._events)

    def first_seq(self) -> int:
        """The oldest seq still in the log (last_seq + 1 when it is empty)."""
        return self._seqs[0] if self._seqs else self.last_seq + 1

    def since(self, since_seq: int, topics: list[str] | None, limit: int) -> dict:
        first = self.first_seq()
        i = bisect.bisect_right(self._seqs, since_seq)
        out = []
        for j in range(i, len(self._events)):    # no copy of the log's tail per page
            e = self._events[j]
            if topics is None or e["topic"] in topics:
                out.append(e)
                if len(out) == limit:
                    break
        return {"events": out, "last_seq": self.last_seq, "first_seq": first,
                "complete": since_seq + 1 >= first}
