"""Which of several atsd on one PostgreSQL database serves: the one holding the lock.

Every atsd binds its sockets and starts as a standby: it answers ``get_version`` (with its
``role``) and refuses everything else with ``standby``, naming the leader's endpoint when
the database says who that is, so a client moves on at once. Twice a second a standby
tries to take the advisory lock (store_pg.py); once it has it, the server builds its state
from the database as a restart does (timers that fell due meanwhile happen then) and
serves.

The leader checks its session as often. When the session is gone (the database stopped,
the connection cut, the backend terminated), or a commit fails, the lock may be someone
else's already: the server drops everything it has in memory and answers as a standby
(``unavailable`` while the database cannot be reached) until it holds the lock again and
has read the state anew. This task only notes what happened and wakes the server; the
server acts on it between two wake-ups (``settle``), so no request sees half a change of
role.
"""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit

from . import log as logmod
from .engine.errors import EngineError, Unavailable
from .store import StoreError

CHECK_S = 0.5       # how often a standby tries the lock, and a leader checks its session

log = logmod.get("atsd.leader")


class Standby(EngineError):
    code = "standby"


def advertised(endpoint: str) -> str:
    """The endpoint clients are told to use: a wildcard address names this host instead."""
    parts = urlsplit(endpoint)
    if parts.hostname in ("0.0.0.0", "::", "*"):
        return f"{parts.scheme}://{socket.getfqdn()}:{parts.port}"
    return endpoint


class Leadership:
    def __init__(self, server, store) -> None:
        self.server = server
        self.store = store
        self.leader: str | None = None      # the leader's endpoint, as the database says
        self.endpoint = ""                  # ours, as clients are told it (set at start)
        self.reachable = True               # did the last attempt reach the database?
        self._taken = False                 # the lock is ours and the state read: lead
        self._lost: BaseException | None = None     # the session failed while leading
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Try the lock once before any request is read (a lone atsd never answers
        ``standby`` at its start), then keep at it in a task. Our endpoint is worked out
        once: naming a wildcard address may ask DNS, which must not stall the loop."""
        self.endpoint = advertised(self.server.endpoints["listen"])
        await self._try()
        self.settle()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def refusal(self) -> EngineError:
        """What a request that is not get_version gets while this atsd does not lead."""
        if not self.reachable:
            return Unavailable(f"the state database ({self.store.name}) cannot be reached; "
                               "nothing was changed, try again")
        if self.leader is None:
            return Standby("this atsd is a standby and no leader is known yet; try another "
                           "atsd, or again")
        return Standby(f"this atsd is a standby; the leader is {self.leader}",
                       leader=self.leader)

    def settle(self) -> None:
        """In the server's loop, before a wake-up's requests: take or give up the lead
        (a daemon that is stopping takes none)."""
        if self._lost is not None:
            lost, self._lost = self._lost, None
            self.server.lose_lead(lost)
        elif self._taken and not self.server.stopping:
            self._taken = False
            self.leader = self.endpoint
            self.server.take_lead()

    def lost(self, exc: BaseException) -> None:
        """A commit failed: the session is gone (store_pg ends it on any failure)."""
        self.reachable = False
        self._lost = None           # the session check may have seen it too: once is enough
        self.server.lose_lead(exc)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(CHECK_S)
            if self.server.role == "leader":
                await self._check()
            elif not self._taken:
                await self._try()

    async def _check(self) -> None:
        try:
            await self.store.check()
        except Exception as exc:
            if self.server.role == "leader" and self._lost is None:
                self.reachable = False
                self._lost = exc
                self.server.wake()

    async def _try(self) -> None:
        try:
            self._taken = await self.store.try_lead(self.endpoint)
            if not self._taken:
                named = await self.store.leader()
                # our own name there is stale (we led before): nobody is known to lead
                self.leader = None if named == self.endpoint else named
        except StoreError as exc:       # not our database, or a newer schema
            log.error("cannot_lead", error=str(exc))
            self.server.failure = str(exc)
            self.server.stop()
            return
        except Exception as exc:
            if self.reachable:
                log.warning("database_unreachable", error=f"{type(exc).__name__}: {exc}"[:500])
            self.reachable = False
            return
        if not self.reachable:
            log.info("database_reachable")
        self.reachable = True
        if self._taken:
            self.server.wake()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.store.close()
