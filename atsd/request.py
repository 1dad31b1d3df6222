"""One request on its way through ``Server.handle``'s stages, and the retry stage's memory.

``Request`` is filled in stage by stage (decode, authenticate, overload, retry, authorize,
dispatch), each reading what the ones before it found, so no stage works anything out
again. ``Retries`` answers a request_id seen before: from the reply cache (retries.py) when
its first send was answered, by joining it while it still runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .engine.errors import Conflict, shown
from .engine.lab import Caller
from .retries import Key, ReplyCache


@dataclass(slots=True)
class Request:
    identity: bytes             # the ROUTER's routing id of the connection it came on
    envelope: list[bytes]       # the frames a reply goes back with
    body: bytes                 # the msgpack request
    proof: Any                  # its last frame as read: with CURVE, a zmq.Frame with User-Id
    now: float                  # the wake-up's time
    fields: dict | None = None          # the decoded map
    request_id: str | None = None       # echoed in every reply, refusals too
    declared_user: str | None = None    # the request's ``user`` (CURVE ignores it)
    cmd: Any = None                     # atsd.commands.Command
    caller: Caller | None = None
    cache_key: Key | None = None        # its reply is kept under it for retries
    digest: bytes | None = None         # what it asks, to tell a retry from a reuse of its id
    args: dict | None = None            # validated against the command's schema
    dispatched: bool = False            # its command ran (refusals before are the server's)

    @classmethod
    def read(cls, frames: list, now: float) -> Request:
        """From a message's frames: bytes, or zmq.Frames when CURVE is on."""
        last = frames[-1]
        if not isinstance(last, bytes):
            frames = [f if isinstance(f, bytes) else f.bytes for f in frames]
        return cls(frames[0], frames[:-1], frames[-1], last, now)

    @property
    def mutating(self) -> bool:
        return self.cmd is not None and self.cmd.mutating


class Retries:
    """A client that timed out sends its request again under the same request_id; while the
    first send runs (a waiting checkout, a Slurm call) the retry joins it and gets its reply,
    and once it was answered the reply cache has that reply. Nothing runs twice."""

    def __init__(self, replies: ReplyCache) -> None:
        self.replies = replies
        # a running request's key -> its digest, and the envelopes of its retries
        self._running: dict[Key, tuple[bytes, list]] = {}

    def seen(self, key: Key, digest: bytes, request_id: str) -> bytes | list | None:
        """For a request_id seen before, its first reply (encoded), or the list of retries
        waiting for it while it runs (a retry appends its envelope); None for a new one.
        The same id with other content is refused: it names one request."""
        cached = self.replies.get(key)
        running = self._running.get(key)
        first = cached.digest if cached is not None else running and running[0]
        if first is not None and first != digest:
            raise Conflict(f"request_id {shown(request_id)} was used for another "
                           "request; a new request needs a new request_id")
        if cached is not None:
            return cached.data
        return running[1] if running is not None else None

    def running(self, key: Key, digest: bytes) -> None:
        self._running[key] = (digest, [])

    def answered(self, key: Key) -> list:
        """A running request got its reply: the envelopes of its retries, to send it to."""
        return self._running.pop(key)[1]
