"""The daemon's loop: a ROUTER for commands, a PUB for events, and the engine's clock.

Each wake-up drains every request that is ready, answers them against the engine, lets the
engine do what fell due, then commits all of it to SQLite in one transaction, and only
then sends the replies and publishes the events. So a reply is never sent for a change that
is not on disk (group commit keeps that cheap), and the loop sleeps exactly until the
engine's next deadline when nobody asks anything.

Commands that must wait (a Slurm call, a checkout that queues) return a coroutine; it runs
as a task, and its reply joins the next wake-up's group like any other.

A client that goes away while its request waits (killed, or its socket closed) is noticed
at once through the ROUTER's socket monitor: a TCP or IPC connection that ends is a
``DISCONNECTED`` event naming its file descriptor, and each connection's first message
tells (``SRCFD``) which descriptor it came on. Its waiting requests are then cancelled as
``cancel_request`` would, so their slots go to the next waiter. (A peer cut off without
its connection closing, by a network failure, is not noticed: its wait ends at wait_s.)
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import zmq
import zmq.asyncio
import zmq.utils.monitor

from . import heap
from . import log as logmod
from . import protocol
from . import security
from .app import UNSAVED, App
from .backends import JobRunner
from .commands import Call, DaemonIO, load_all
from .config import Config, ConfigError
from .audit import AuditTrail, touched
from .engine.errors import BadRequest, EngineError, Forbidden, shown
from .eventlog import EventLog
from .health import HealthChecks
from .monitor import ClockWatch, Monitor, stats, summary
from .reload import ReloadRefused, check as check_reload
from .request import Request, Retries
from .retries import ReplyCache
from .systemd import Notifier
from .store import Store, unpack

REPLY_TTL_S = 3600.0         # how long a retried request_id gets its first reply again
MAX_CACHED_REPLIES = 200_000  # and how many such replies are kept at most (memory bound)
MAX_BATCH = 512              # requests answered per wake-up before committing
MAX_FRAMES = 16              # a message with more (envelope + body) is dropped unread
MAX_STEP_FRAMES = 4096       # frames read per wake-up before committing and replying
MAX_TIMERS = 256             # timers (waits ending, leases ending ...) per wake-up: a storm
                             # of them is spread over wake-ups, with requests answered between

log = logmod.get("atsd.server")


@dataclass(slots=True)
class Outgoing:
    envelope: list[bytes]
    data: bytes
    request_id: str | None
    mutating: bool = False


class Server:
    def __init__(self, config: Config, endpoints_file: Path | None = None,
                 load_config: Callable[[], Config] | None = None) -> None:
        self.config = config
        self.endpoints_file = endpoints_file
        self.load_config = load_config      # the config file read again (a reload)
        self.commands = load_all()
        self.metrics = None       # served on metrics.listen and on the web page's listener
        if config.metrics_listen or config.web_listen is not None:
            from .metrics import Metrics       # aiohttp: imported only when it is used
            self.metrics = Metrics(self)
            self.commands = self.metrics.instrument(self.commands)
        self.limits = config.limits
        self.leadership = None    # with PostgreSQL: which atsd on the database serves
        self.role = "leader"
        if isinstance(config.state, str):      # a postgresql:// URL
            from .leader import Leadership
            from .store_pg import PgStore
            self.store = PgStore(config.state, config.event_log_size)
            self.leadership, self.role = Leadership(self, self.store), "standby"
        else:
            self.store = Store(config.state, config.fsync)
        self.runner = JobRunner(config, lambda: self.app.batch, time.time, self.wake)
        self.health = HealthChecks(self, config)
        self.vitals = Monitor()
        self.clock = ClockWatch()
        self.notifier = Notifier(lambda: summary(self.app, self.vitals))
        self._load(time.time())
        self._finished: list[Outgoing] = []
        self._in_flight: Counter[bytes] = Counter()
        self._waiting: Counter[str] = Counter()        # per user, on every connection
        self._received: Counter[bytes] = Counter()    # per identity, in this wake-up
        self._tasks: set[asyncio.Task] = set()
        self._peer_fd: dict[bytes, int] = {}  # identity -> its connection's descriptor
        self._waits: dict[bytes, set[tuple[str, str]]] = {}  # identity -> (user, request_id)
        self.log_requests = logmod.debug_enabled()
        self.stopping = False
        self.failure: str | None = None     # why it stopped by itself (atsd/leader.py)
        self._wakeup: asyncio.Future | None = None
        self.endpoints: dict[str, str] = {}
        self.web = None
        if config.web_listen is not None:
            from .web import WebServer
            self.web = WebServer(self)

    def _load(self, now: float) -> None:
        """The state as the store has it: at the start, and when the lead changes."""
        self.audit = AuditTrail(self.store, self.config.audit_retention_s,
                                self.config.audit_max_entries)
        replaced = hasattr(self, "app")      # a standby taking the lead: the old state goes
        self.app = self._build_app(self.config)
        heap.freeze_state(replaced)
        self.io = DaemonIO(time.time, self.runner.backends, self.audit,
                           lambda: stats(self.app, self.store, self.vitals, len(self._tasks)),
                           self.reload, self.role)
        self.replies = ReplyCache(REPLY_TTL_S, MAX_CACHED_REPLIES, self.config.reply_cache_bytes,
                                  now, self.store.load_replies(now - REPLY_TTL_S))
        self.retries = Retries(self.replies)

    def take_lead(self) -> None:
        """The lock is ours and the store has read the state: serve it, as after a restart
        (what fell due while nobody led happens now, and is published with the next
        commit)."""
        self.role = "leader"
        self._load(time.time())
        self.store.built()
        log.info("leading", listen=self.endpoints["listen"], last_seq=self.app.events.last_seq)
        self.runner.recover()
        if not self.health.started:
            self.health.start()

    def lose_lead(self, exc: BaseException) -> None:
        """The database session is gone, and the lock with it: another atsd may lead by now,
        so nothing in memory is served again. Running requests are dropped unanswered
        (their clients retry elsewhere, with the same request_id); the lead comes back only
        with the lock and the state read anew."""
        log.error("lead_lost", error=f"{type(exc).__name__}: {exc}"[:500])
        for task in self._tasks:
            task.cancel()
        self.runner.stop_local()
        for pending in (self._in_flight, self._waiting, self._waits):
            pending.clear()
        self._finished = []
        self.role = "standby"
        self._load(time.time())     # the store holds nothing now: an empty lab

    def _build_app(self, cfg: Config) -> App:
        """Build the engine from the state file; what fell due while down happens at start
        (and at a reload)."""
        events = EventLog(cfg.event_log_size, self.store.last_seq(),
                          self.store.load_events(cfg.event_log_size))
        app = App(cfg, events)
        now = time.time()
        with self.store.records() as records, heap.collector_paused():
            app.lab.restore(records, now)
        app.lab.advance(now)
        return app

    # --- sockets ---

    def bind(self) -> None:
        self.ctx = zmq.asyncio.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.MAXMSGSIZE, self.config.max_frame_bytes)
        self.router.setsockopt(zmq.LINGER, 1000)
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.pub = self.ctx.socket(zmq.PUB)
        # a subscriber that falls further behind loses events and fetches them (get_events)
        self.pub.setsockopt(zmq.SNDHWM, self.config.event_hwm)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.security = security.Security(self.config, self.ctx)
        self.security.apply(self.router, self.pub)
        self.vitals.attach(self.pub, "subscribers")   # the ROUTER has its own monitor
        self.vitals.connections = lambda: len(self._peer_fd)
        for sock, endpoint in ((self.router, self.config.listen), (self.pub, self.config.events)):
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as exc:
                raise OSError(f"cannot bind {endpoint}: {exc}") from None
        # plain sockets over the same handles: draining and sending need no futures
        self.router_sync = zmq.Socket.shadow(self.router.underlying)
        self.monitor_socket = self.router.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self.monitor = zmq.Socket.shadow(self.monitor_socket.underlying)
        self.pub_sync = zmq.Socket.shadow(self.pub.underlying)
        self.endpoints = {
            "listen": self.router.getsockopt_string(zmq.LAST_ENDPOINT),
            "events": self.pub.getsockopt_string(zmq.LAST_ENDPOINT),
        }
        if self.web is not None:
            self.endpoints["web"] = self.web.bind()
        if self.config.metrics_listen:
            self.endpoints["metrics"] = self.metrics.listen(self.config.metrics_listen)
        if self.endpoints_file:
            tmp = self.endpoints_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({**self.endpoints, "pid": os.getpid()}))
            tmp.replace(self.endpoints_file)
        log.info("ready", **self.endpoints, role=self.role,
                 state=str(self.config.state) if self.leadership is None else self.store.name,
                 resources=len(self.app.lab.resources))

    def wake(self) -> None:
        """Run a step soon: a request may be ready, a task finished, a deadline came."""
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _sleep(self) -> None:
        """Until the ROUTER may have a request, a task calls ``wake``, or the engine's next
        deadline. The ROUTER's FD only says "look at ZMQ_EVENTS", and checking them resets
        it, so they are checked once more just before sleeping."""
        if (self._finished or self.router_sync.get(zmq.EVENTS) & zmq.POLLIN
                or self.monitor.get(zmq.EVENTS) & zmq.POLLIN):
            return
        loop = asyncio.get_running_loop()
        self._wakeup = loop.create_future()
        deadline = self.app.lab.next_deadline()
        timer = None if deadline is None else loop.call_later(
            max(0.0, deadline - time.time()), self.wake)
        try:
            await self._wakeup
        finally:
            self._wakeup = None
            if timer is not None:
                timer.cancel()

    # --- the loop ---

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload_on_signal)
        self.security.start()
        if self.web is not None:
            await self.web.start()
        if self.config.metrics_listen:
            await self.metrics.start()
        counting = loop.create_task(self.vitals.count_peers())
        fd = self.router_sync.get(zmq.FD)
        loop.add_reader(fd, self.wake)
        loop.add_reader(self.monitor.get(zmq.FD), self.wake)
        if self.leadership is None:
            await self.flush([], time.time())          # publish what recovery did
            self.runner.recover()
            self.health.start()
        else:
            await self.leadership.start()
        self.notifier.ready()
        while not self.stopping:
            await self._sleep()
            await self.step(time.time)
        loop.remove_reader(fd)
        loop.remove_reader(self.monitor.get(zmq.FD))
        counting.cancel()
        await asyncio.gather(counting, return_exceptions=True)
        await self.shutdown()

    def stop(self) -> None:
        if self.stopping:
            return
        log.info("stopping")
        self.notifier.stopping()
        self.stopping = True
        self.wake()

    async def step(self, clock: Callable[[], float]) -> None:
        """One wake-up: take what is ready, read the clock, answer, advance, commit, send.

        The clock is read once, after the requests are taken, so that no request is
        answered at a time before it was sent: a claim sent after its pre-reservation's
        expire_time must not be judged, and lapsed, at a time before it (read before the
        taking, the reading is older than every request that came in meanwhile)."""
        if self.leadership is not None:
            self.leadership.settle()
        out: list[Outgoing] = []
        self._received.clear()
        messages = self._take()
        now = clock()
        jumped = self.clock.jump(now)
        if jumped:          # before this wake-up's requests start durations on the new clock
            log.warning("clock_jump", seconds=round(jumped, 3))
            self._caused_by_jump(jumped, lambda: self._move_durations(jumped, now))
        self._peers_gone(now)
        for frames in messages:
            started = time.perf_counter()
            request = Request.read(frames, now)
            reply = self.handle(request)
            if self.log_requests:
                self._log_request(request, reply, started)
            if reply is not None:
                out.append(reply)
        out.extend(self._finished)
        self._finished = []
        if self.role != "leader":       # a standby has nothing to commit
            for o in out:
                self.router_sync.send_multipart(o.envelope + [o.data])
            return
        if jumped:
            self._caused_by_jump(jumped, lambda: self.app.lab.advance(now, MAX_TIMERS))
        else:
            self.app.lab.advance(now, MAX_TIMERS)
        await self.flush(out, now)

    def _take(self) -> list[list]:
        """The messages ready now (their frames), up to a wake-up's share."""
        messages = []
        frames_left = MAX_STEP_FRAMES
        while len(messages) < MAX_BATCH and frames_left > 0:   # replies to others wait no
            try:                                                # longer for a storm
                frames, count = self._receive()
            except zmq.Again:
                break
            frames_left -= count
            if frames is not None:
                messages.append(frames)
        return messages

    def _receive(self) -> tuple[list | None, int]:
        """One message's frames, or None for one of more than MAX_FRAMES: the rest of it is
        read only to be dropped, never decoded nor answered (a reply would repeat every
        frame); and how many frames were read. Frames are bytes, but zmq.Frames with CURVE
        (the last carries the User-Id) and in a connection's first message, whose
        descriptor is learnt (see the module docstring)."""
        sock = self.router_sync
        frames = [sock.recv(zmq.NOBLOCK)]
        learn = frames[0] not in self._peer_fd
        copy = not (self.security.curve or learn)
        while sock.get(zmq.RCVMORE):
            if len(frames) == MAX_FRAMES:
                count = len(frames)
                while sock.get(zmq.RCVMORE):
                    sock.recv(copy=False)
                    count += 1
                return None, count
            frames.append(sock.recv(copy=copy))
        if learn and len(frames) > 1:
            self._peer_fd[frames[0]] = frames[-1].get(zmq.SRCFD)
        return frames, len(frames)

    def _move_durations(self, jumped: float, now: float) -> None:
        """Calendar times follow the wall clock; durations (waits, leases, the countdown
        between revocation notices, the reply cache's ages) follow the monotonic one, so
        they move with the jump and last as long as they were asked to: a client waiting
        10 minutes is answered after 10 minutes, by the engine and its own timer alike."""
        self.app.pool.move_durations(jumped, now)
        self.app.revocations.move_notices(jumped)
        self.replies.move(jumped, now)

    def _caused_by_jump(self, jumped: float, act: Callable[[], None]) -> None:
        """Run ``act``; the events it causes say the jump caused them (``clock_jump_s``),
        those before it (of requests) stay as they were, in order."""
        lab = self.app.lab
        before = lab.take_events()
        act()
        caused = lab.take_events()
        for event in caused:
            event.clock_jump_s = round(jumped, 3)
        for event in before + caused:
            lab.emit(event)

    def _peers_gone(self, now: float) -> None:
        """Cancel what the connections that ended were waiting for."""
        gone = set()
        while self.monitor.get(zmq.EVENTS) & zmq.POLLIN:
            event = zmq.utils.monitor.parse_monitor_message(self.monitor.recv_multipart())
            gone.add(event["value"])
        if not gone:
            return
        for identity in [i for i, fd in self._peer_fd.items() if fd in gone]:
            del self._peer_fd[identity]
            for user, request_id in self._waits.pop(identity, ()):
                log.info("client_gone", user=user, request_id=request_id)
                self.app.pool.cancel(user, request_id, "its client went away", now)

    async def flush(self, out: list[Outgoing], now: float) -> None:
        lab = self.app.lab
        records = lab.take_dirty()
        numbered = self.app.events.number(lab.take_events(), now)
        forget = self.replies.expire(now)
        replies, dropped = self.replies.take()
        audit, trim_audit = self.audit.take(), self.audit.trim(now)
        if records or numbered or replies or dropped or forget or audit or trim_audit:
            started = time.perf_counter()
            try:
                await self.store.write(records, numbered, replies, self.config.event_log_size,
                                       forget, dropped_replies=dropped, audit=audit,
                                       trim_audit=trim_audit)
            except Exception as exc:
                self.vitals.commit_failed(exc, now)
                self.replies.not_written(replies, dropped)
                if self.leadership is None:
                    self._commit_failed(exc, out, records, now)
                else:
                    self._refuse_unsaved(out, "unavailable", exc)
                    self.leadership.lost(exc)
                numbered = []
            else:
                self.vitals.committed(time.perf_counter() - started)
                self.audit.committed(audit)
                if forget is not None:
                    self._vacuum()
        for o in out:
            self.router_sync.send_multipart(o.envelope + [o.data])
        self.app.events.append(numbered)
        self.runner.on_committed(numbered)
        for e in numbered:
            self.pub_sync.send_multipart([e["topic"].encode(), protocol.encode(e)])
        if self.web is not None:
            self.web.publish(numbered)

    def _vacuum(self) -> None:
        """Now and then (with the reply cache's pruning) give free pages back to the disk."""
        try:
            self.store.vacuum_some()
        except Exception as exc:      # the next try may do better; nothing depends on it
            log.warning("vacuum_failed", error=str(exc))

    def _commit_failed(self, exc: Exception, out: list[Outgoing],
                       records: list[tuple[str, str, dict | None]], now: float) -> None:
        """Nothing of this group reached the disk: its mutating requests, and the reads
        after the first of them (they may have seen its change), are answered ``internal``,
        and each record the group changed is put back as the disk has it (one indexed read
        each: the cost of the group, not of the lab), so memory and disk agree again.
        What fell due meanwhile (such as a lease that ended) happens again at once and
        stays pending, as at start-up, to be committed and published with the next group."""
        self._refuse_unsaved(out, "internal", exc)
        self.app.revert([(kind, key, self.store.load_record(kind, key))
                         for kind, key, _ in records], now)
        # what fell due is done again now and waits for the next group: left due, each
        # wake-up would try (and fail) to commit it at once, again and again
        self.app.lab.advance(now)

    @staticmethod
    def _refuse_unsaved(out: list[Outgoing], code: str, exc: Exception) -> None:
        """The group's mutating requests, and the reads after the first of them (they may
        have seen its change), are answered ``code``: their changes were not saved."""
        log.error("commit_failed", error=str(exc), exc_type=type(exc).__name__)
        changed = False
        for o in out:
            changed = changed or o.mutating
            if changed:
                o.data = protocol.encode(protocol.error_reply(
                    code, f"state could not be saved ({exc}); nothing was changed",
                    o.request_id))

    # --- reload ---

    def _reload_on_signal(self) -> None:
        async def reload():
            try:
                await self.reload()
            except ReloadRefused:
                pass                # logged; the old config stays
        task = asyncio.get_running_loop().create_task(reload())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self) -> dict:
        """Apply the config file as it is now, whole, or refuse and keep the old one
        (reload.py says what is refused). Between two wake-ups, so nothing is half done:
        what the old state had pending is committed first, and the new state is built from
        the state file, as at a restart. Waiting checkouts carry over."""
        now = time.time()
        self.notifier.reloading()
        try:
            new, found = self._check_reload(now)
            await self.flush([], now)     # SQLite only: it returns without yielding
            try:
                app = self._build_app(new)
            except Exception as exc:    # e.g. a stored record the new inventory cannot hold
                raise ReloadRefused(f"the state does not fit the new config: {exc}") from None
        except ReloadRefused as exc:
            log.error("config_reload_refused", reason=str(exc), config=str(self.config.path))
            raise
        finally:
            self.notifier.ready()
        app.pool.adopt(self.app.pool, now)
        app.generation = self.app.generation    # a reload undoes nothing
        old = self.config
        self.app, self.config, self.limits = app, new, new.limits
        heap.freeze_state(replaced=True)
        self.security.reload(new)
        if new.health_checks != old.health_checks:    # the checks of the new inventory
            retired, self.health = self.health, HealthChecks(self, new)
            self.health.start()
            self._retired_health = asyncio.get_running_loop().create_task(retired.close())
        log.info("config_reloaded", config=str(new.path), **found)
        self.wake()
        return found

    def _check_reload(self, now: float) -> tuple[Config, dict]:
        if self.load_config is None:
            raise ReloadRefused("this daemon was started without a config file to reload")
        if self.leadership is not None:
            raise ReloadRefused("a daemon on PostgreSQL reloads by a restart: restart the "
                                "standby, then the leader (the standby takes over)")
        try:
            new = self.load_config()
        except ConfigError as exc:
            raise ReloadRefused(str(exc)) from None
        found = check_reload(self.config, new, self.app.lab, now)
        others = [t for t in self._tasks if t is not asyncio.current_task()]
        if len(others) > len(self.app.pool.waiters):
            raise ReloadRefused(f"{len(others) - len(self.app.pool.waiters)} requests are "
                                "still running (batch or Slurm calls); try again when "
                                "they are answered")
        return new, found

    # --- one request ---

    def _log_request(self, req: Request, reply: Outgoing | None, started: float) -> None:
        """``--log-level debug``: a line per request (a command that waits gets a second one
        with its request_id when it is answered). It decodes the reply again, which is why
        it runs only then."""
        fields = req.fields or {}
        user = None if req.caller is None else req.caller.user     # None: not authenticated
        log.debug("request", command=str(fields.get("command"))[:64], user=str(user)[:64],
                  request_id=str(fields.get("request_id"))[:128],
                  latency_ms=round((time.perf_counter() - started) * 1e3, 3),
                  outcome="waiting" if reply is None else _outcome(reply.data))

    def handle(self, req: Request) -> Outgoing | None:
        """Answer one request, stage by stage: decode, authenticate, overload, retry,
        authorize, dispatch (docs/architecture.md follows it). A refusal at any stage is
        its reply; None when there is none now: a command that waits runs as a task, and
        a retry of a running request gets that one's reply."""
        try:
            self._decode(req)
            if self.role != "leader" and req.cmd.name != "get_version":
                raise self.leadership.refusal()     # atsd/leader.py: another atsd serves
            self._authenticate(req)
            if self._overloaded(req):
                return self._refuse(req, "overloaded",
                                    f"more than {self.config.max_in_flight} requests in flight")
            self._received[req.identity] += 1
            seen = self._retry(req)
            if seen is not None:
                return self._answer_retry(req, seen)
            self._authorize(req)
            result = self._dispatch(req)
            if inspect.iscoroutine(result):
                self._spawn(req, result)
                return None
            reply = protocol.ok_reply(result, req.request_id)
        except EngineError as exc:
            reply = protocol.reply_for(exc, req.request_id)
        except Exception as exc:
            log.exception("command_failed", request_id=req.request_id)
            reply = protocol.error_reply("internal", f"{type(exc).__name__}: {exc}",
                                         req.request_id)
        if not req.dispatched:
            self._count_refusal(req, reply["error"]["code"])
        self._audit(req, reply, req.now)
        return self._reply(req, reply, req.now, req.mutating)

    def _decode(self, req: Request) -> None:
        req.fields = protocol.decode(req.body, self.limits)
        req.request_id = protocol.request_id(req.fields)
        name, req.declared_user = protocol.envelope(req.fields)
        req.cmd = self.commands.get(name)
        if req.cmd is None:
            raise BadRequest(f"unknown command {shown(name)}")

    def _authenticate(self, req: Request) -> None:
        """Who asks: with CURVE the key's user, else the request's ``user``."""
        req.caller = self.app.caller(self.security.user(req.proof, req.declared_user))

    def _overloaded(self, req: Request) -> bool:
        """A request is in flight from when it is read until its reply is sent: one
        wake-up, or a task's life (retries of a running one too). Capping that per
        identity lets a client that pipelines thousands cost each wake-up at most
        max_in_flight real requests."""
        ident = req.identity
        return self._in_flight[ident] + self._received[ident] >= self.config.max_in_flight

    def _retry(self, req: Request) -> bytes | list | None:
        """The retry stage (request.Retries): for a cached command with a request_id, what
        its first send got, if it came before; else its reply will be kept."""
        if not (req.cmd.cached and req.request_id is not None):
            return None
        key, digest = (req.caller.user, req.request_id), protocol.digest(req.fields)
        seen = self.retries.seen(key, digest, req.request_id)
        if seen is None:
            req.cache_key, req.digest = key, digest
        return seen

    def _answer_retry(self, req: Request, seen: bytes | list) -> Outgoing | None:
        """The first send's reply again, or (it still runs) join it: None now, its reply
        when it has one."""
        if isinstance(seen, bytes):
            return Outgoing(req.envelope, seen, req.request_id)
        seen.append(req.envelope)
        self._in_flight[req.identity] += 1
        return None

    def _authorize(self, req: Request) -> None:
        if req.cmd.admin and not req.caller.admin:
            raise Forbidden(f"{req.cmd.name} is for admins; {req.caller.user} is not one")

    def _dispatch(self, req: Request):
        """The command's result, or a coroutine for one that waits."""
        req.args = protocol.validate_args(req.fields, req.cmd.args)
        req.dispatched = True
        return req.cmd.func(Call(self.app, req.caller, req.now, self.io,
                                 self._waiting[req.caller.user], req.request_id), **req.args)

    def _refuse(self, req: Request, code: str, message: str) -> Outgoing:
        """A refusal that changes nothing (before the retry stage: not kept for retries)."""
        self._count_refusal(req, code)
        return self._reply(req, protocol.error_reply(code, message, req.request_id), req.now,
                           mutating=False)

    def _count_refusal(self, req: Request, code: str) -> None:
        """Metrics for a request refused before its command ran (a command counts its own)."""
        if self.metrics is None:
            return
        if req.fields is None:
            self.metrics.refused("invalid", code)
            return
        name = req.fields.get("command")
        self.metrics.refused(name if isinstance(name, str) and name in self.commands
                             else "unknown", code)

    def _audit(self, req: Request, reply: dict, now: float) -> None:
        """Record an accepted change, or a refusal of what the caller may not do (with the
        request's own fields when it was refused before they were checked)."""
        if req.caller is None or req.cmd is None:
            return
        outcome = "ok" if reply["ok"] else reply["error"]["code"]
        if (outcome == "ok" and req.cmd.mutating) or outcome == "forbidden":
            args = req.fields if req.args is None else req.args
            ids = touched(self.app.lab, args or {}, reply)
            self.audit.record(now, req.caller, self.security.key(req.caller.user),
                              req.cmd.name, ids, outcome)

    def _reply(self, req: Request, reply: dict, now: float, mutating: bool) -> Outgoing:
        """The encoded reply, kept for retries when the retry stage marked it."""
        try:
            data = protocol.encode(reply)
        except (TypeError, ValueError, OverflowError) as exc:   # a value msgpack cannot carry
            log.error("reply_not_encodable", error=str(exc), request_id=req.request_id)
            data = protocol.encode(protocol.error_reply(
                "internal", f"the reply could not be encoded: {exc}", req.request_id))
        if req.cache_key is not None:
            self.replies.put(req.cache_key, now, req.digest, data)
        return Outgoing(req.envelope, data, req.request_id, mutating)

    def _spawn(self, req: Request, coro) -> None:
        """Run a command that waits as a task; it is in flight, and waiting for its user,
        until answered."""
        self._in_flight[req.identity] += 1
        self._waiting[req.caller.user] += 1
        if req.request_id is not None:      # cancelled if its client goes away meanwhile
            self._waits.setdefault(req.identity, set()).add((req.caller.user, req.request_id))
        if req.cache_key is not None:
            self.retries.running(req.cache_key, req.digest)
        task = asyncio.get_running_loop().create_task(
            self._answer_later(req, coro, self.app.generation))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_later(self, req: Request, coro, generation: int) -> None:
        """A task's reply joins the next wake-up's group, with its retries'."""
        started = time.perf_counter()
        try:
            result = await coro
            if self.app.generation != generation:   # a failed commit undid state since
                raise EngineError(UNSAVED)
            reply = protocol.ok_reply(result, req.request_id)
        except EngineError as exc:
            reply = protocol.reply_for(exc, req.request_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("command_failed", command=req.cmd.name, request_id=req.request_id)
            reply = protocol.error_reply("internal", f"{type(exc).__name__}: {exc}",
                                         req.request_id)
        now = time.time()
        self._audit(req, reply, now)
        first = self._reply(req, reply, now, req.cmd.mutating)
        if self.log_requests:
            log.debug("request_answered", command=req.cmd.name, request_id=req.request_id,
                      latency_ms=round((time.perf_counter() - started) * 1e3, 3),
                      outcome=_outcome(first.data))
        self._finished.append(first)
        retries = self.retries.answered(req.cache_key) if req.cache_key is not None else []
        self._finished += [Outgoing(retry, first.data, req.request_id) for retry in retries]
        self._answered(req, [retry[0] for retry in retries])
        self.wake()

    def _answered(self, req: Request, retried_by: list[bytes]) -> None:
        """A task's request (and its retries, from ``retried_by``) is no longer in flight
        nor waiting."""
        waits = self._waits.get(req.identity)
        if waits is not None:
            waits.discard((req.caller.user, req.request_id))
            if not waits:
                del self._waits[req.identity]
        for ident in [req.identity] + retried_by:
            self._in_flight[ident] -= 1
            if self._in_flight[ident] <= 0:
                del self._in_flight[ident]
        self._waiting[req.caller.user] -= 1
        if self._waiting[req.caller.user] <= 0:
            del self._waiting[req.caller.user]

    async def shutdown(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        if self.web is not None:
            await self.web.stop()
        await self.runner.close()
        if self.metrics is not None:
            await self.metrics.close()
        await self.health.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.step(time.time)
        self.router.disable_monitor()
        for sock in (self.monitor_socket, self.router, self.pub):
            sock.close()
        self.security.stop()
        self.ctx.term()
        if self.leadership is None:
            self.store.close()
        else:
            await self.leadership.close()
        log.info("stopped")


def _outcome(data: bytes) -> str:
    """"ok", or the error code of an encoded reply."""
    reply = unpack(data)
    return "ok" if reply.get("ok") else str(reply.get("error", {}).get("code"))
