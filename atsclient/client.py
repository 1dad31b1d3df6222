"""Clients for atsd: ``ATSClient`` (synchronous, with the methods and return shapes of
kissats' ``BaseATSClient``) and ``AsyncATSClient`` (the same methods as coroutines, many
requests in flight together).

Both follow ZeroMQ's Lazy Pirate pattern: wait ``timeout`` seconds for a reply, send again
(up to ``retries`` times per endpoint, moving along an address that lists several: see
atsclient.endpoints) and then raise ``Unreachable`` naming the address. Every request
carries a ``request_id`` that stays the same across its retries, so a retried mutating call
that did reach the daemon is answered with its first reply instead of acting twice.

The methods are written once, in ``_Methods``: each builds a request and says how to read
the reply; the two clients differ only in how ``_do`` sends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import time
import uuid

import msgpack
import zmq
import zmq.asyncio

from . import endpoints
from .endpoints import Failover, Tries, is_standby
from .errors import BY_CODE, ATSError, InternalError, ServerCommandMissing, from_reply
from .security import curve_keys

DEFAULT_SERVER = "tcp://127.0.0.1:5555"

log = logging.getLogger("atsclient.client")


def _pack(request: dict) -> bytes:
    return msgpack.packb(request, use_bin_type=True)


def _unpack(data: bytes) -> dict:
    return msgpack.unpackb(data, raw=False)


def _identity(x):
    return x


class _Methods:
    """The command methods both clients share. Each client's ``_do(request, read, accept)`` sends
    ``request`` and returns ``read(reply)``; an error reply raises, unless its code is in
    ``accept``, in which case ``read`` gets the error reply. ``timeout`` overrides the
    client's reply timeout for a command the daemon may take long to answer; a
    ``cancellable`` one that is interrupted while it waits is cancelled on the daemon."""

    def call(self, command: str, **args):
        """Send any command; returns the reply's result keys (``ok`` included)."""
        return self._do({"command": command, **args})

    # --- kissats BaseATSClient ---

    def get_all_resources(self):
        return self._do({"command": "get_all_resources"}, lambda r: r["resource_list"])

    def get_available_resources(self):
        return self._do({"command": "get_available_resources"}, lambda r: r["resource_list"])

    def get_resource_availability(self, resource: str, start_time: float | None = None,
                                  end_time: float | None = None):
        """dict with ``available``, ``avail_start``, ``avail_end`` (the soonest window of the
        same length when not available at the time asked)."""
        start = time.time() if start_time is None else start_time
        end = start + 3600 if end_time is None else end_time
        return self._do({"command": "check_available", "resource": resource,
                         "start_time": start, "end_time": end})

    get_resource_availablity = get_resource_availability   # kissats' spelling

    def get_resource_config(self, resource: str):
        """The resource's configuration now, itself (kissats documents it so; its own code
        returns the whole reply)."""
        return self._do({"command": "get_config", "resource": resource}, lambda r: r["config"])

    def request_reservation(self, resource, res_config=None, time_needed=None,
                            reservation_duration=3600.0, next_available=True,
                            reservation_mode="exclusive", slots=None, claim=False):
        """``(pre_reservation_id, time_available, expire_time)``. ``resource`` may be a list
        of names, booked together in one window. With ``claim`` the booking is confirmed at
        once: the id is the reservation's (no claim_reservation needed; it becomes ACTIVE
        by itself at time_available) and expire_time is its end."""
        request = {"command": "request_reservation",
                   "time_needed": time.time() if time_needed is None else time_needed,
                   "reservation_duration": reservation_duration,
                   "resource_config": res_config, "reservation_mode": reservation_mode,
                   "next_available": next_available}
        if isinstance(resource, (list, tuple)):
            request["resources"] = list(resource)
        else:
            request["resource"] = str(resource)
        if slots is not None:
            request["slots"] = slots
        if claim:               # only when asked: kissats' requests stay as they were
            request["claim"] = True
        return self._do(request, lambda r: (r["pre_reservation_id"], r["time_available"],
                                             r["expire_time"]), cancellable=True)

    def get_future_reservation(self, resource, time_needed=None, duration=3600.0, config=None,
                               next_available=True):
        """What kissats' ResourceReservation calls: a pre-reservation of ``resource``."""
        return self.request_reservation(resource, config, time_needed, duration,
                                        next_available)

    def claim_reservation(self, pre_reservation_id: str):
        """dict with ``reservation_id``, ``expire_time``, ``resource_config``; when the
        claim came late, the fresh offer: ``pre_reservation_id``, ``new_avail``,
        ``new_expire``. Raises ClaimLate (a ResourceUnavailable) when there is neither."""
        def read(reply):
            if reply.get("ok") or reply.get("pre_reservation_id"):
                return reply
            raise from_reply(reply)
        return self._do({"command": "claim_reservation",
                         "pre_reservation_id": pre_reservation_id}, read, accept=("claim_late",))

    def release_resource(self, reservation_id: str):
        """True when released; False when it had already ended or is unknown."""
        return self._do({"command": "release_reservation", "reservation_id": reservation_id},
                        lambda r: bool(r.get("release_status", False)),
                        accept=("conflict", "not_found"))

    def server_communicate(self, server_request: dict):
        """Send a request as kissats does (a dict with ``command``) and return the reply as
        it is, errors included. Without a ``command``: ServerCommandMissing, as kissats."""
        if "command" not in server_request:
            raise ServerCommandMissing("server_request has no 'command'")
        return self._do(dict(server_request), accept=tuple(BY_CODE))

    # --- atsd's own ---

    def release_reservation(self, reservation_id: str):
        return self._do({"command": "release_reservation", "reservation_id": reservation_id},
                        lambda r: r["release_status"])

    def extend_reservation(self, reservation_id: str, extra_s: float):
        """The new end time."""
        return self._do({"command": "extend_reservation", "reservation_id": reservation_id,
                         "extra_s": extra_s}, lambda r: r["expire_time"])

    def list_reservations(self, resource=None, owner=None, start_time=None, end_time=None):
        request = {"command": "list_reservations", "resource": resource, "owner": owner,
                   "start_time": start_time, "end_time": end_time}
        return self._do(_without_none(request), lambda r: r["reservations"])

    def list_resources(self, type=None, tags=None):
        return self._do(_without_none({"command": "list_resources", "type": type,
                                       "tags": tags}), lambda r: r["resources"])

    def get_events(self, since_seq: int, topics=None, limit=None):
        return self._do(_without_none({"command": "get_events", "since_seq": since_seq,
                                       "topics": topics, "limit": limit}))

    def get_version(self):
        return self._do({"command": "get_version"})

    def get_audit(self, since=None, until=None, actor=None, resource=None, limit=None):
        """Audit entries in [since, until), oldest first: changes and forbidden attempts,
        each {seq, time, user, key, command, ids, outcome}. Users see their own; admins
        everyone's (``actor`` picks one)."""
        request = {"command": "get_audit", "since": since, "until": until, "actor": actor,
                   "resource": resource, "limit": limit}
        return self._do(_without_none(request), lambda r: r["entries"])

    def whoami(self):
        """``{user, admin}``: who the daemon takes this client for."""
        return self._do({"command": "whoami"}, lambda r: {"user": r["user"],
                                                         "admin": r["admin"]})

    def list_queues(self):
        """``{queues, job_dirs, output_dir}``: the batch queues, where job scripts must lie
        and where job output goes."""
        return self._do({"command": "list_queues"}, lambda r: {
            k: r[k] for k in ("queues", "job_dirs", "output_dir")})

    # --- slot pools (canary ResourcePool / CTest) ---

    def accommodates(self, request):
        """``(ok, reason)``: whether a checkout of ``request`` ([{type, slots}]) would be
        granted now, and why not."""
        return self._do({"command": "accommodates", "request": list(request)},
                        lambda r: (r["accommodates"], r["reason"]))

    def checkout(self, request, lease_s=None, wait_s=None, priority=None, request_id=None):
        """dict with ``allocation_id``, ``resources`` ({type: [{id, slots}]}) and
        ``expire_time``. With ``wait_s`` the reply may take that long, so it is waited for
        that much longer than the usual timeout; ``request_id`` (default: a fresh one) finds
        it in ``pool_waiting`` meanwhile."""
        return self._do(_without_none({"command": "checkout", "request": list(request),
                                       "lease_s": lease_s, "wait_s": wait_s,
                                       "priority": priority, "request_id": request_id}),
                        lambda r: {k: r[k] for k in ("allocation_id", "resources",
                                                     "expire_time")},
                        timeout=self.timeout + (wait_s or 0), cancellable=True)

    def cancel_request(self, request_id: str):
        """Stop request ``request_id`` (a checkout waiting with wait_s) and release what it
        booked (granted meanwhile, or a request_reservation's booking). True when something
        was waiting or held. A checkout or request_reservation interrupted
        (KeyboardInterrupt, task cancelled) sends this itself."""
        return self._do({"command": "cancel_request", "request_id": request_id},
                        lambda r: r["cancelled"])

    def checkin(self, allocation_id: str):
        return self._do({"command": "checkin", "allocation_id": allocation_id},
                        lambda r: r["released"])

    def get_pool(self):
        """canary's pool shape: {additional_properties, resources: {type: [{id, slots,
        total}]}}, ``slots`` free now."""
        return self._do({"command": "get_pool"}, lambda r: r["resource_pool"])

    def pool_waiting(self):
        """The checkout queue in service order: [{owner, request, priority, since,
        wait_until, request_id}], ``request_id`` set on the caller's own requests only."""
        return self._do({"command": "get_pool"}, lambda r: r["waiting"])


    # --- batch queue reservations (Compute Queue Reservation) ---

    def create_reservation(self, queue_id: str, host_count: int, wall_time: float,
                           start_time: float | None = None):
        """dict with ``reservation_id``, ``hosts``, ``start_time``, ``end_time``."""
        return self._do({"command": "create_reservation", "queue_id": queue_id,
                         "host_count": host_count, "wall_time": wall_time,
                         "start_time": time.time() if start_time is None else start_time})

    def create_deadline_reservation(self, queue_id: str, host_count: int, wall_time: float,
                                    deadline_time: float):
        return self._do({"command": "create_deadline_reservation", "queue_id": queue_id,
                         "host_count": host_count, "wall_time": wall_time,
                         "deadline_time": deadline_time})

    def get_reservation_status(self, reservation_id: str):
        return self._do({"command": "get_reservation_status", "reservation_id": reservation_id})

    def submit_job_to_reservation(self, reservation_id: str, job_script: str,
                                  submit_args=()):
        """The job id. ``submit_args``: a {key: value} map or [key, value] pairs (sbatch
        options on Slurm), as the CQR capability allows both."""
        args = (dict(submit_args) if isinstance(submit_args, dict)
                else [list(p) for p in submit_args])
        return self._do({"command": "submit_job_to_reservation",
                         "reservation_id": reservation_id, "job_script": job_script,
                         "submit_args": args},
                        lambda r: r["job_id"])

    def get_job_status(self, job_id: str):
        return self._do({"command": "get_job_status", "job_id": job_id})

    def cancel_reservation(self, reservation_id: str):
        return self._do({"command": "cancel_reservation", "reservation_id": reservation_id},
                        lambda r: r["cancelled"])

    # --- revocation and node values (elasticslice) ---

    def revoke(self, nodes, max_wait_time: float, reason: str | None = None):
        """Take ``nodes`` back (admin): holders get delete_pending notices counting
        ``max_wait_time`` down. Returns the revocation id."""
        return self._do(_without_none({"command": "revoke", "nodelist": _nodelist(nodes),
                                       "max_wait_time": max_wait_time, "reason": reason}),
                        lambda r: r["revocation_id"])

    def ack_delete_pending(self, nodes):
        """Answer delete_pending: these nodes may go now (names, or delete_pending's own
        entries: those with max_wait_time above 0 stay). Returns the nodes that went."""
        return self._do({"command": "ack_delete_pending", "nodelist": _nodelist(nodes)},
                        lambda r: r["acknowledged"])

    def restore(self, nodes):
        """Put revoked nodes back in service (admin). Returns those that were out of it."""
        return self._do({"command": "restore", "nodelist": _nodelist(nodes)},
                        lambda r: r["restored"])

    def set_resource_values(self, values: dict):
        """``{node: value in [0, 1]}`` (admin); published on resource.values."""
        return self._do({"command": "set_resource_values",
                         "nodelist": [{"node_id": n, "value": v} for n, v in values.items()]},
                        lambda r: r["updated"])

    def set_resource_state(self, resource: str, state: str, reason: str | None = None):
        """Take a resource down (``reason`` required) or bring it ``up`` (admin):
        ``{resource, service, reason, changed}``."""
        return self._do(_without_none({"command": "set_resource_state", "resource": resource,
                                       "state": state, "reason": reason}),
                        lambda r: {k: r[k] for k in ("resource", "service", "reason",
                                                     "changed")})

    def get_resource_values(self):
        """``{node: value}``, None where no value was set."""
        return self._do({"command": "get_resource_values"},
                        lambda r: {n["node_id"]: n["value"] for n in r["nodelist"]})

    # --- operations ---

    def get_stats(self):
        """The daemon's health (admin): see atsd/commands/stats.py for the keys."""
        return self._do({"command": "get_stats"})

    def reload(self):
        """Have the daemon apply its config file again (admin), as SIGHUP does. Returns
        what changed; a change live reservations forbid raises ``Conflict`` naming them."""
        return self._do({"command": "reload"}, lambda r: r["changes"])




# The longest a blocking wait for a reply lasts before Python looks at signals again.
SIGNAL_SLICE_S = 0.5


def _poll_in(sock, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for a reply, in slices: a signal (Ctrl-C) that lands
    just before a poll starts does not interrupt it, and a checkout may wait for an hour."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if sock.poll(min(left, SIGNAL_SLICE_S) * 1000, zmq.POLLIN):
            return True
    return False


def _nodelist(nodes) -> list[dict]:
    """elasticslice's nodelist from node names (one name alone is taken as one node);
    entries already in its shape (dicts with node_id, client_id ...) are sent as they are."""
    return [dict(n) if isinstance(n, dict) else {"node_id": n}
            for n in ([nodes] if isinstance(nodes, str) else nodes)]


def _without_none(request: dict) -> dict:
    return {k: v for k, v in request.items() if v is not None}


def _well_formed(reply: dict) -> bool:
    """``ok`` a bool, and a refusal's ``error`` a map: what ``_read_reply`` relies on."""
    ok = reply.get("ok")
    return isinstance(ok, bool) and (ok or isinstance(reply.get("error"), dict))


def _read_reply(reply: dict, read, accept):
    if not reply.get("ok") and reply.get("error", {}).get("code") not in accept:
        raise from_reply(reply)
    return read(reply)


class _Connection:
    """What both clients need to reach a daemon: address, identity, timeouts. ``server``
    is one endpoint or several (``tcp://a:5555,tcp://b:5555``, or a list): a leader and its
    standbys, tried in turn (atsclient.endpoints). With ``server_public_key`` the socket is
    a CURVE client (see atsclient.security): keys are Z85 text or certificate files, and
    ``public_key`` may be left out; every listed daemon must then have that key."""

    def __init__(self, server=DEFAULT_SERVER, timeout: float = 5.0, retries: int = 3,
                 user: str | None = None, server_public_key=None, public_key=None,
                 secret_key=None) -> None:
        self.server = endpoints.joined(server)
        self.failover = Failover(endpoints.parse(self.server))
        self.timeout = timeout
        self.retries = retries
        self.user = user or getpass.getuser()
        self.curve = curve_keys(server_public_key, public_key, secret_key)
        # called with a sentence before a try that follows a failed one (the CLI says at
        # once that a daemon is silent, not after every retry)
        self.on_retry = None

    @property
    def endpoint(self) -> str:
        """Where the next request goes first: the endpoint that answered last, or the one
        after an endpoint that failed."""
        return self.failover.current

    def _connect(self, sock, endpoint: str):
        if self.curve is not None:
            self.curve.apply(sock)
        sock.connect(endpoint)

    def _stamp(self, request: dict) -> dict:
        request.setdefault("request_id", uuid.uuid4().hex)
        request.setdefault("user", self.user)
        return request

    def _tries(self, wait: float) -> Tries:
        return Tries(self.failover, self.retries, wait, self.timeout, self.on_retry)


class ATSClient(_Connection, _Methods):
    """Synchronous client: one request at a time on a REQ socket (REQ_RELAXED and
    REQ_CORRELATE, so a lost reply cannot wedge it), connected to one endpoint at a time."""

    def __init__(self, server=DEFAULT_SERVER, timeout: float = 5.0, retries: int = 3,
                 user: str | None = None, context: zmq.Context | None = None,
                 server_public_key=None, public_key=None, secret_key=None) -> None:
        super().__init__(server, timeout, retries, user, server_public_key, public_key,
                         secret_key)
        self._ctx = context or zmq.Context.instance()
        self._sock = None
        self._sock_endpoint = None

    @property
    def ats_server(self) -> str:
        return self.server

    def _socket(self, endpoint: str) -> zmq.Socket:
        if self._sock is not None and self._sock_endpoint != endpoint:
            self.close()        # moving on: a late reply of the old endpoint is not waited for
        if self._sock is None:
            sock = self._ctx.socket(zmq.REQ)
            sock.setsockopt(zmq.REQ_RELAXED, 1)
            sock.setsockopt(zmq.REQ_CORRELATE, 1)
            sock.setsockopt(zmq.LINGER, 0)
            # a send blocks while no connection is up (a daemon that refused our key);
            # bounded, it counts as a try like a missing reply
            sock.setsockopt(zmq.SNDTIMEO, int(self.timeout * 1000))
            self._connect(sock, endpoint)
            self._sock, self._sock_endpoint = sock, endpoint
        return self._sock

    def _do(self, request, read=_identity, accept=(), timeout=None, cancellable=False):
        data = _pack(self._stamp(request))
        tries = self._tries(timeout or self.timeout)
        try:
            for endpoint in tries:
                sock = self._socket(endpoint)
                try:
                    sock.send(data)
                except zmq.Again:       # no connection up: a try with no reply
                    reply = None
                else:
                    reply = _unpack(sock.recv()) if _poll_in(sock, tries.wait) else None
                if reply is not None and not is_standby(reply):
                    return _read_reply(reply, read, accept)
                time.sleep(tries.failed(endpoint, reply))
        except KeyboardInterrupt:
            if cancellable:     # REQ_RELAXED: a new request may go before the reply came
                with contextlib.suppress(ATSError):
                    self.cancel_request(request["request_id"])
            raise
        self.close()          # a fresh socket next time, not one with a stale request
        raise tries.error()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
            self._sock = self._sock_endpoint = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class AsyncATSClient(_Connection, _Methods):
    """asyncio client: any number of requests in flight, replies matched to callers by
    request_id. One DEALER socket per endpoint, opened when first tried and kept, so the
    late reply of an endpoint the client moved away from still answers its request."""

    def __init__(self, server=DEFAULT_SERVER, timeout: float = 5.0, retries: int = 3,
                 user: str | None = None, context: zmq.asyncio.Context | None = None,
                 server_public_key=None, public_key=None, secret_key=None) -> None:
        super().__init__(server, timeout, retries, user, server_public_key, public_key,
                         secret_key)
        self._ctx = context or zmq.asyncio.Context.instance()
        self._socks: dict[str, zmq.asyncio.Socket] = {}
        # request_id -> the future of its (endpoint, reply)
        self._waiting: dict[str, asyncio.Future] = {}
        self._readers: list[asyncio.Task] = []

    def _socket(self, endpoint: str):
        if endpoint not in self._socks:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            self._connect(sock, endpoint)
            self._socks[endpoint] = sock
            self._readers.append(asyncio.get_running_loop().create_task(
                self._read_replies(sock, endpoint)))
        return self._socks[endpoint]

    async def _read_replies(self, sock, endpoint: str) -> None:
        """Hand each reply to the request waiting for it, with the endpoint it came from.
        One that cannot be read (not msgpack, not a map, no request_id) is logged and
        dropped, and the others are still served; one of a waiting request that is not a
        reply's shape fails that request."""
        while True:
            frames = await sock.recv_multipart()
            try:
                reply = _unpack(frames[-1])
            except Exception as exc:        # whatever the bytes: msgpack's errors vary
                log.warning("dropped a reply that is not msgpack: %s", exc)
                continue
            rid = reply.get("request_id") if isinstance(reply, dict) else None
            future = self._waiting.pop(rid, None) if isinstance(rid, str) else None
            if future is None or future.done():
                if not isinstance(rid, str):
                    log.warning("dropped a reply without a request_id: %.200r", reply)
                continue
            if _well_formed(reply):
                future.set_result((endpoint, reply))
            else:
                log.warning("malformed reply to %s: %.200r", rid, reply)
                future.set_exception(InternalError(f"atsd's reply is malformed: {reply!r:.200}",
                                                   reply))

    async def _do(self, request, read=_identity, accept=(), timeout=None, cancellable=False):
        request = self._stamp(request)
        data = _pack(request)
        rid = request["request_id"]
        tries = self._tries(timeout or self.timeout)
        try:
            for endpoint in tries:
                reply = await self._try(endpoint, rid, data, tries.wait)
                if reply is not None and not is_standby(reply):
                    return _read_reply(reply, read, accept)
                await asyncio.sleep(tries.failed(endpoint, reply))
        except asyncio.CancelledError:
            if cancellable:
                # the cancel's reply carries the same id, so the cancelled request's own
                # late reply may be read in its place: either answer will do
                self._waiting.pop(rid, None)
                with contextlib.suppress(ATSError):
                    await self._do({"command": "cancel_request", "request_id": rid},
                                   accept=tuple(BY_CODE))
            raise
        finally:
            self._waiting.pop(rid, None)
        raise tries.error()

    async def _try(self, endpoint: str, rid: str, data: bytes, timeout: float):
        """The reply to one send of ``data`` to ``endpoint``; None when none came within
        ``timeout``. A reply to an earlier try (from any endpoint) will do too, unless it is
        a standby's: this try waits on for its own."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        future = self._waiting.get(rid)
        if future is None:          # waiting before sending: the reply may come at once
            future = self._waiting[rid] = loop.create_future()
        sock = self._socket(endpoint)
        try:        # a send waits while no connection is up: bounded like a reply
            await asyncio.wait_for(sock.send_multipart([b"", data]), timeout)
        except asyncio.TimeoutError:
            return None
        while True:
            try:
                source, reply = await asyncio.wait_for(asyncio.shield(future),
                                                       deadline - loop.time())
            except asyncio.TimeoutError:
                return None
            if source == endpoint or not is_standby(reply):
                return reply
            future = self._waiting[rid] = loop.create_future()

    async def close(self) -> None:
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        self._readers = []
        for sock in self._socks.values():
            sock.close(0)
        self._socks = {}

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()
