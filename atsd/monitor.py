"""What the daemon knows about itself, for ``get_stats`` (and the metrics page): counted where
it happens (a commit, a connection), read only when someone asks.

Connections and subscribers come from libzmq's socket monitor (accepted and disconnected
peers), which sees a connection whether or not it ever sends a request.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from typing import Callable

import zmq
from zmq.utils.monitor import parse_monitor_message

from .engine.states import ACTIVE, GRANTED

COMMIT_SAMPLES = 1024      # the newest commit latencies the percentiles are taken over
PEER_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED


class Monitor:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.commit_s: deque[float] = deque(maxlen=COMMIT_SAMPLES)
        self.commits = 0
        self.last_commit_error: dict | None = None
        self.peers: Counter[str] = Counter()     # attached socket's name -> peers open now
        self._watched: list[tuple] = []          # (socket, its monitor socket, name)
        # clients connected now: the server counts them (its ROUTER has its own monitor)
        self.connections: Callable[[], int] = lambda: 0

    def committed(self, seconds: float) -> None:
        self.commits += 1
        self.commit_s.append(seconds)

    def commit_failed(self, exc: Exception, now: float) -> None:
        self.last_commit_error = {"error": f"{type(exc).__name__}: {exc}"[:500], "ts": now}

    def commit_percentiles_ms(self) -> dict[str, float]:
        """p50, p90, p99 and max of the newest commits, in milliseconds."""
        ordered = sorted(self.commit_s)
        if not ordered:
            return {}
        last = len(ordered) - 1
        return {name: round(ordered[min(last, int(q * len(ordered)))] * 1e3, 3)
                for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))}

    def uptime_s(self) -> float:
        return time.monotonic() - self.started

    def attach(self, sock: zmq.asyncio.Socket, name: str) -> None:
        """Count ``sock``'s peers as ``peers[name]``; before it binds, so none is missed."""
        self._watched.append((sock, sock.get_monitor_socket(PEER_EVENTS), name))

    async def count_peers(self) -> None:
        """Keep the counts of the attached sockets; runs until cancelled."""
        try:
            await asyncio.gather(*(self._count(m, name) for _, m, name in self._watched))
        finally:
            self.detach()

    def detach(self) -> None:
        for sock, monitor, _ in self._watched:
            sock.disable_monitor()
            monitor.close(linger=0)
        self._watched = []

    async def _count(self, monitor: zmq.asyncio.Socket, name: str) -> None:
        while True:
            event = parse_monitor_message(await monitor.recv_multipart())["event"]
            self.peers[name] += 1 if event == zmq.EVENT_ACCEPTED else -1


class ClockWatch:
    """Notices the wall clock jumping (an admin's ``date``, an NTP step, a VM resumed): the
    gap between wall and monotonic time changes by the jump. Slow drift (NTP slewing) is
    absorbed at each look, so only a step shows."""

    THRESHOLD_S = 60.0

    def __init__(self) -> None:
        self._gap = time.time() - time.monotonic()

    def jump(self, wall: float) -> float:
        """Seconds the wall clock (``wall``, read just now) jumped since the last look; 0.0
        when less than THRESHOLD_S."""
        gap = wall - time.monotonic()
        jumped, self._gap = gap - self._gap, gap
        return jumped if abs(jumped) > self.THRESHOLD_S else 0.0


def stats(app, store, m: Monitor, in_flight: int) -> dict:
    """``get_stats``'s reply: the daemon as an operator checks it."""
    events = app.events
    return {
        "uptime_s": round(m.uptime_s(), 3),
        "connections": m.connections(),
        "subscribers": m.peers["subscribers"],
        "requests_in_flight": in_flight,
        "waiting": waiting_by_type(app.pool.waiters),
        "reservations": reservation_states(app.lab.reservations.values()),
        "events": {"last_seq": events.last_seq, "first_seq": events.first_seq(),
                   "in_log": len(events)},
        "store": {**store.size(), "commits": m.commits,
                  "commit_ms": m.commit_percentiles_ms(), "last_error": m.last_commit_error},
    }


def summary(app, m: Monitor) -> str:
    """One line for ``systemctl status``."""
    states = reservation_states(app.lab.reservations.values())
    return (f"{len(app.lab.resources)} resources; {states.get(ACTIVE, 0)} reservations "
            f"active, {states.get(GRANTED, 0)} granted; {m.connections()} "
            f"connections; {len(app.pool.waiters)} checkouts waiting")


def reservation_states(reservations) -> dict[str, int]:
    return dict(Counter(r.state for r in reservations))


def waiting_by_type(waiters) -> dict[str, int]:
    """Pool checkouts queued, per slot type they wait for."""
    return dict(Counter(t for w in waiters for t in w.types))
