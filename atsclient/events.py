"""Following atsd's events without losing any: ``Subscriber``, and ``ElasticEndpoint`` on it.

PUB/SUB alone loses events: a slow subscriber's queue overflows (the high-water mark) and
PUB drops, a subscriber misses what was published before it connected, and a daemon
restart cuts the connection. atsd numbers every event (``seq``: one more than the previous,
also across restarts) and keeps a log that ``get_events`` serves, so a subscriber can tell
what it missed and fetch it.

The Subscriber keeps a cursor: every event of its topics with ``seq`` up to the cursor has
been queued for the caller (or came before the point it started from). A live event one
past the cursor is next. A live event further on means some may have been missed: it asks
``get_events(since_seq=cursor, topics)`` for everything after the cursor (paging) and moves
the cursor to the log's ``last_seq``; live events at or below the cursor are then the ones
already fetched and are dropped. So nothing is yielded twice or out of order.

Subscribing to some topics only: seq counts every topic, so jumps are then normal and
cannot by themselves tell a loss from other topics' events. Each jump is treated as a
possible loss and checked with ``get_events(topics=...)``, which answers with the
subscriber's topics only and says (``last_seq``) how far it looked. That is one request per
jump, but one request covers every event up to the log's end, so under a burst the requests
are bounded by their round trips, not by the event rate.

A loss with no later event to reveal it (the last events before a quiet spell, or those a
restarted daemon published before the subscriber reconnected) is caught two ways: the SUB
socket's monitor reports each (re)connection, and after ``idle_check_s`` without an event
the Subscriber asks the log anyway. A daemon whose log restarted from zero (a new state
file) answers with a ``last_seq`` below the cursor; the Subscriber then follows it from its
first event. Events the log no longer holds when asked for are counted in ``lost`` as
``(first, last)`` seq ranges.
"""

from __future__ import annotations

import asyncio
import collections
import getpass
import logging
import re

import msgpack
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from . import endpoints
from .client import DEFAULT_SERVER, AsyncATSClient
from .errors import Unreachable

from .wire import DELETE_COMPLETE, DELETE_PENDING, RESOURCE_VALUES  # noqa: F401 (re-exported)

log = logging.getLogger("atsclient.events")


class _Stoppable:
    """``stop()`` for a loop run by ``asyncio.run``: from the loop's own callbacks (no further
    callback follows) or from another thread (interrupts a wait)."""

    _task: asyncio.Task | None = None
    _stopping = False

    def _started(self) -> None:
        self._task = asyncio.current_task()
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True
        task = self._task
        if task is not None:
            task.get_loop().call_soon_threadsafe(self._interrupt)

    def _interrupt(self) -> None:
        if self._task is not None:      # None once the loop wound down by itself
            self._task.cancel()


class Subscriber(_Stoppable):
    """Every event of ``topics`` (all when None), once each and in seq order, as an async
    iterator (``async for event in sub``) or through ``run(callback)``.

    ``server`` and ``events_endpoint`` may each list several endpoints (a leader and its
    standbys, see atsclient.endpoints): the SUB socket connects to every events endpoint,
    and only the leader publishes, so after a failover the new leader's events come in by
    themselves, and what passed meanwhile is fetched from its log as any gap is.

    ``since_seq`` starts after that seq (e.g. a ``last_seq`` kept from a previous run);
    None starts from now. ``client`` (an AsyncATSClient) is used for ``get_events`` when
    given (pass one made with CURVE keys when the daemon uses CURVE: the SUB socket takes
    them from it), else one is made for ``server``. ``sockopts`` are set on the SUB socket
    before it connects (``{zmq.RCVHWM: ...}``). ``async with`` subscribes at once.
    """

    def __init__(self, server=DEFAULT_SERVER, events_endpoint=None,
                 topics=None, *, since_seq: int | None = None,
                 client: AsyncATSClient | None = None, user: str | None = None,
                 idle_check_s: float = 1.0, page: int = 1000, sockopts: dict | None = None,
                 context: zmq.asyncio.Context | None = None) -> None:
        self.events_endpoint = endpoints.joined(events_endpoint or
                                                default_events_endpoint(server))
        self.topics = list(topics) if topics else None
        self.last_seq = since_seq          # seq of the last event yielded
        self.lost: list[tuple[int, int]] = []
        self.fetched = 0                   # events that came from the log, not live
        self.idle_check_s = idle_check_s
        self.page = page
        self.sockopts = dict(sockopts or {})
        self._client = client
        self._own_client = client is None
        self._server = endpoints.joined(server)
        self._user = user
        self._ctx = context or zmq.asyncio.Context.instance()
        self._cursor = since_seq
        self._ready: collections.deque[dict] = collections.deque()
        self._sub = None
        self._monitor = None
        self._poller = None

    # --- async iteration ---

    def __aiter__(self):
        return self

    async def __anext__(self) -> dict:
        await self._open()
        while not self._ready:
            await self._receive()
        event = self._ready.popleft()
        self.last_seq = event["seq"]
        return event

    async def _open(self) -> None:
        if self._sub is not None:
            return
        if self._client is None:
            self._client = AsyncATSClient(self._server, user=self._user)
        sub = self._ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        for opt, value in self.sockopts.items():
            sub.setsockopt(opt, value)
        for topic in self.topics or [""]:
            sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
        if self._client.curve is not None:
            self._client.curve.apply(sub)
        self._monitor = sub.get_monitor_socket(zmq.EVENT_CONNECTED)
        for endpoint in endpoints.parse(self.events_endpoint):   # only the leader publishes
            sub.connect(endpoint)
        self._poller = zmq.asyncio.Poller()
        self._poller.register(sub, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)
        try:
            if self._cursor is None:
                self._cursor = (await self._client.get_events(0, limit=1))["last_seq"]
                self.last_seq = self._cursor
            else:
                await self._catch_up()
        except BaseException:       # not open: the next try starts over
            sub.close(0)
            self._monitor.close(0)
            self._monitor = None
            raise
        self._sub = sub

    async def _receive(self) -> None:
        ready = dict(await self._poller.poll(self.idle_check_s * 1000))
        if not ready:
            await self._catch_up()          # quiet: did something pass us by?
            return
        if self._monitor in ready:
            if any(parse_monitor_message(m)["event"] == zmq.EVENT_CONNECTED
                   for m in _drain(self._monitor)):
                await self._catch_up()      # (re)connected: what came meanwhile is in the log
        if self._sub in ready:
            for frames in _drain(self._sub):
                await self._live(msgpack.unpackb(frames[-1], raw=False))

    async def _live(self, event: dict) -> None:
        seq = event["seq"]
        if self.topics is not None and event["topic"] not in self.topics:
            return
        if seq > self._cursor + 1 and not await self._catch_up():
            return                          # the gap stays open; the event comes again with it
        if seq > self._cursor:
            self._ready.append(event)
            self._cursor = seq

    async def _catch_up(self) -> bool:
        """Queue every event of our topics after the cursor that the log holds. False when
        the daemon does not answer: it is asked again on the next gap, (re)connection or
        quiet spell, so an outage delays events but loses none."""
        while True:
            try:
                reply = await self._client.get_events(self._cursor, self.topics, self.page)
            except Unreachable as exc:
                log.warning("cannot fetch missed events: %s", exc)
                return False
            if reply["last_seq"] < self._cursor:
                log.warning("atsd's event log restarted at %s (we were at %s); following it",
                            reply["last_seq"], self._cursor)
                self._cursor = 0
                continue
            if not reply["complete"]:
                self.lost.append((self._cursor + 1, reply["first_seq"] - 1))
                log.warning("events %s to %s are no longer in atsd's log", self._cursor + 1,
                            reply["first_seq"] - 1)
            for event in reply["events"]:
                if event["seq"] > self._cursor:
                    self._ready.append(event)
                    self._cursor = event["seq"]
                    self.fetched += 1
            if len(reply["events"]) < self.page:
                self._cursor = max(self._cursor, reply["last_seq"])
                return True

    async def aclose(self) -> None:
        for sock in (self._sub, self._monitor):
            if sock is not None:
                sock.close(0)
        self._sub = self._monitor = None
        if self._own_client and self._client is not None:
            await self._client.close()
            self._client = None

    async def __aenter__(self):
        """Subscribes at once, so every event from here on is yielded, read or not."""
        await self._open()
        return self

    async def __aexit__(self, *exc):
        await self.aclose()

    # --- a plain loop ---

    def run(self, callback) -> None:
        """Call ``callback(event)`` for every event until ``stop()`` (from the callback or
        another thread). Not for use inside a running event loop: iterate there instead."""
        asyncio.run(self._run(callback))

    async def _run(self, callback) -> None:
        self._started()
        try:
            async for event in self:
                callback(event)
                if self._stopping:
                    break
        except asyncio.CancelledError:
            pass
        finally:
            self._task = None
            await self.aclose()


def _drain(sock) -> list[list[bytes]]:
    """Every message waiting on ``sock`` now, taken off it before anything awaits, so the
    socket's queue is free again for what arrives during a catch-up."""
    plain = zmq.Socket.shadow(sock.underlying)
    out = []
    while True:
        try:
            out.append(plain.recv_multipart(zmq.NOBLOCK))
        except zmq.Again:
            return out


def default_events_endpoint(server) -> str:
    """atsd's default event endpoints: each command endpoint's port + 1."""
    found = []
    for endpoint in endpoints.parse(server):
        m = re.fullmatch(r"(tcp://.+:)(\d+)", endpoint)
        if not m:
            raise ValueError(f"cannot tell the event endpoint of {endpoint}; give it")
        found.append(f"{m.group(1)}{int(m.group(2)) + 1}")
    return endpoints.joined(found)     # a port + 1 past 65535 is refused here


class ElasticEndpoint(_Stoppable):
    """A holder's side of revocation, shaped like elasticslice's client endpoint: subclass
    it and override the hooks; ``run()`` follows the daemon's events and calls them.

    Two spellings of the hooks work. elasticslice's own: ``NotifyDeletePending(params)``,
    ``NotifyDeleteComplete(params)``, ``SetResourceValues(params)`` and ``GetVersion(params)``,
    with ``params = {"nodelist": [...]}``, answering plain success (None, True, a result
    map) or, for NotifyDeletePending, the input list with ``max_wait_time`` set to 0 on the
    nodes that may go now. Or the Pythonic ``on_delete_pending(nodelist)`` (returning the
    node ids that may go now), ``on_delete_complete`` and ``on_resource_values``, which the
    default elasticslice methods call. A hook that raises is logged and the endpoint goes on
    (the node is then held to its deadline).

    The hooks see only the entries about this client's user's reservations (``owner``); each
    entry has ``node_id``, ``client_id`` (the reservation id), ``owner``, its own
    ``max_wait_time`` left (0 in delete_complete), and its event's ``revocation_id``,
    ``reason`` and, for delete_pending, the absolute ``deadline`` (``final`` for
    delete_complete). Node values concern nodes, not holders: SetResourceValues sees every
    entry.
    """

    TOPICS = (DELETE_PENDING, DELETE_COMPLETE, RESOURCE_VALUES)
    CARRIED = ("revocation_id", "reason", "deadline", "final")
    VERSION = {"api": "elasticslice client endpoint", "implementation": "atsclient"}

    def __init__(self, server=DEFAULT_SERVER, events_endpoint=None,
                 user: str | None = None, *, since_seq: int | None = None,
                 timeout: float = 5.0, keys: dict | None = None,
                 **subscriber_options) -> None:
        """``keys``: CURVE keys for AsyncATSClient (``server_public_key``, ``secret_key``);
        ``user`` must then be the name the daemon has the key filed under."""
        self.server = endpoints.joined(server)
        self.keys = dict(keys or {})
        self.events_endpoint = events_endpoint
        self.user = user or getpass.getuser()
        self.since_seq = since_seq
        self.timeout = timeout
        self.subscriber_options = subscriber_options
        self.subscriber: Subscriber | None = None

    # --- elasticslice's hooks ---

    def GetVersion(self, params: dict) -> dict:  # noqa: N802 (elasticslice's name)
        """This endpoint's version; called once when ``run`` starts, and logged."""
        return dict(self.VERSION)

    def NotifyDeletePending(self, params: dict):  # noqa: N802
        """Answer: ``params["nodelist"]`` with max_wait_time 0 on the nodes that may go now."""
        go = set(self.on_delete_pending(params["nodelist"]) or [])
        return [{**e, "max_wait_time": 0} if e["node_id"] in go else e
                for e in params["nodelist"]]

    def NotifyDeleteComplete(self, params: dict):  # noqa: N802
        self.on_delete_complete(params["nodelist"])

    def SetResourceValues(self, params: dict):  # noqa: N802
        self.on_resource_values(params["nodelist"])

    # --- the Pythonic hooks ---

    def on_delete_pending(self, nodelist: list[dict]) -> list[str]:
        """These nodes of ours are being taken back; return the node ids that may go now
        (they are answered with ack_delete_pending). Called on every notice."""
        return []

    def on_delete_complete(self, nodelist: list[dict]) -> None:
        """These nodes of ours are gone."""

    def on_resource_values(self, nodelist: list[dict]) -> None:
        """What nodes are worth now (``node_id``, ``value`` in [0, 1])."""

    # --- driving ---

    def run(self) -> None:
        """Follow events and call the hooks until ``stop()``."""
        try:
            asyncio.run(self.arun())
        except asyncio.CancelledError:
            pass

    async def arun(self) -> None:
        self._started()
        async with AsyncATSClient(self.server, user=self.user, timeout=self.timeout,
                                  **self.keys) as client:
            self.subscriber = Subscriber(self.server, self.events_endpoint, self.TOPICS,
                                         since_seq=self.since_seq, client=client,
                                         **self.subscriber_options)
            try:
                version = self._call(self.GetVersion, {})
                log.info("elastic endpoint %s for %s", version, self.user)
                async for event in self.subscriber:
                    await self.handle(event, client)
                    if self._stopping:
                        break
            finally:
                self._task = None
                await self.subscriber.aclose()

    def _call(self, hook, params: dict):
        """A hook's answer; None (after logging it) when the hook raised."""
        try:
            return hook(params)
        except Exception:
            log.exception("%s raised; going on", hook.__name__)
            return None

    async def handle(self, event: dict, client: AsyncATSClient) -> None:
        if event["topic"] == RESOURCE_VALUES:
            self._call(self.SetResourceValues, {"nodelist": event["nodelist"]})
            return
        carried = {k: event[k] for k in self.CARRIED if k in event}
        mine = [{**entry, **carried} for entry in event["nodelist"]
                if entry.get("owner") == self.user]
        if not mine:
            return
        if event["topic"] == DELETE_COMPLETE:
            self._call(self.NotifyDeleteComplete, {"nodelist": mine})
            return
        go = _going(self._call(self.NotifyDeletePending, {"nodelist": mine}), mine)
        if go:
            try:
                await client.ack_delete_pending(go)
            except Exception:       # the daemon refused or is away: the deadline still holds
                log.exception("ack_delete_pending of %s failed", [e["node_id"] for e in go])


def _going(answer, mine: list[dict]) -> list[dict]:
    """ack_delete_pending's entries from a NotifyDeletePending answer: entries of ours that
    it set to max_wait_time 0. Plain success (anything but a list, or a map without a
    nodelist) lets nothing go early."""
    if isinstance(answer, dict):
        answer = answer.get("nodelist")
    if not isinstance(answer, list):
        return []
    ours = {(e["node_id"], e["client_id"]) for e in mine}
    go = []
    for entry in answer:
        if not isinstance(entry, dict) or entry.get("max_wait_time") != 0:
            continue
        key = (entry.get("node_id"), entry.get("client_id"))
        if key in ours:
            go.append({"node_id": key[0], "client_id": key[1]})
        else:
            log.warning("NotifyDeletePending answered an entry that is not ours: %r", entry)
    return list({(e["node_id"], e["client_id"]): e for e in go}.values())
