"""``GET /events``: the event log as Server-Sent Events, each with ``id:`` = seq.

A browser's EventSource reconnects by itself and sends the last id it saw as Last-Event-ID;
the stream then resumes from the log, so nothing is missed across a reconnect or a daemon
restart (the log is on disk). The daemon never waits for a browser: ``publish`` only appends
to each client's bounded list, and a client that falls ``MAX_QUEUED`` events behind (or
whose socket stops taking data) is disconnected and left to resume from the log.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

MAX_QUEUED = 1000       # events waiting per client before it is dropped (it resumes)
MAX_CLIENTS = 200       # open streams; more get 503
REPLAY_PAGE = 500       # events read from the log per write while catching up
WRITE_TIMEOUT_S = 10.0  # a client that takes no data this long is dropped
KEEPALIVE_S = 15.0      # a comment line this often, so proxies keep the stream open
RETRY_MS = 1000         # how soon EventSource reconnects
GATHER_S = 0.1          # events are sent at most this often per client, several per write:
                        # a busy daemon wakes each stream 10 times a second, not per event


def frame(event: dict) -> bytes:
    return (f"id: {event['seq']}\ndata: {json.dumps(event, default=str)}\n\n").encode()


class _Client:
    __slots__ = ("pending", "wake", "dropped", "transport")

    def __init__(self, transport) -> None:
        self.pending: list[tuple[int, bytes]] = []
        self.wake = asyncio.Event()
        self.dropped = False
        self.transport = transport

    def drop(self) -> None:
        """Cut the connection now, also what is buffered for it: the browser reconnects
        and resumes from the log."""
        self.dropped, self.pending = True, []
        self.wake.set()
        if self.transport is not None:
            self.transport.abort()


class Feed:
    def __init__(self, events_of) -> None:
        self._events = events_of     # () -> the daemon's EventLog (replaced on a rebuild)
        self._clients: set[_Client] = set()

    def publish(self, numbered: list[dict]) -> None:
        """Called by the daemon after each commit; never blocks, never awaits."""
        if not numbered or not self._clients:
            return
        frames = [(e["seq"], frame(e)) for e in numbered]
        for c in self._clients:
            if c.dropped:
                continue
            if len(c.pending) + len(frames) > MAX_QUEUED:
                c.drop()
            else:
                c.pending.extend(frames)
                c.wake.set()

    def close(self) -> None:
        """End every stream (daemon shutdown); browsers reconnect to the next daemon."""
        for c in self._clients:
            c.drop()

    async def stream(self, request: web.Request, since: int | None) -> web.StreamResponse:
        if len(self._clients) >= MAX_CLIENTS:
            raise web.HTTPServiceUnavailable(text=f"more than {MAX_CLIENTS} event streams open")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store"})
        resp.force_close()          # no keep-alive: a dropped stream ends its connection
        await resp.prepare(request)
        client = _Client(request.transport)
        try:
            if not await _write(client, resp, f"retry: {RETRY_MS}\n\n".encode()):
                return resp
            last = await self._catch_up(resp, client, since)
            while last is not None:
                try:
                    await asyncio.wait_for(client.wake.wait(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    if not await _write(client, resp, b": keepalive\n\n"):
                        break
                    continue
                await asyncio.sleep(GATHER_S)
                client.wake.clear()
                if client.dropped:
                    break
                frames, client.pending = client.pending, []
                data = b"".join(f for seq, f in frames if seq > last)
                if frames:
                    last = max(last, frames[-1][0])
                if data and not await _write(client, resp, data):
                    break
        finally:
            self._clients.discard(client)
        return resp

    async def _catch_up(self, resp, client: _Client, since: int | None) -> int | None:
        """Send the log after ``since``, then join the live feed; the last seq sent, or None
        when the client went away. Joining happens in the same step as finding nothing more
        in the log (no await between), so no event falls between the two."""
        log = self._events()
        if since is None:
            since = log.last_seq
        elif since > log.last_seq or since + 1 < log.first_seq():
            # the log no longer reaches back there (or is another daemon's): start over
            since = log.last_seq
            reset = f"id: {since}\nevent: reset\ndata: {json.dumps({'last_seq': since})}\n\n"
            if not await _write(client, resp, reset.encode()):
                return None
        while True:
            page = self._events().since(since, None, REPLAY_PAGE)["events"]
            if not page:
                self._clients.add(client)
                return since
            if not await _write(client, resp, b"".join(frame(e) for e in page)):
                return None
            since = page[-1]["seq"]


async def _write(client: _Client, resp: web.StreamResponse, data: bytes) -> bool:
    """Whether ``data`` went out; a client that does not take it is dropped."""
    try:
        await asyncio.wait_for(resp.write(data), WRITE_TIMEOUT_S)
        return True
    except (asyncio.TimeoutError, ConnectionError, RuntimeError):
        client.drop()
        return False
