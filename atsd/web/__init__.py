"""The read-only web calendar: static pages, JSON from the list commands, and the event log
as Server-Sent Events, served by aiohttp on the daemon's own event loop.

Read-only by construction: only GET and HEAD reach a handler (anything else is 405), and the
handlers call read-only command functions. Where the page is reachable from elsewhere (a
non-loopback listen) or CURVE is on, every request must carry ``web.token`` (the config
refuses those setups without one): ``?token=`` once, which sets an HttpOnly cookie for the
rest, or ``Authorization: Bearer``. TLS belongs in a reverse proxy in front (docs/web.md).
"""

from __future__ import annotations

import inspect
import hmac
import socket
import time
from pathlib import Path

from aiohttp import web

from ..commands import COMMANDS, Call
from ..engine.errors import BadRequest, EngineError, NotFound
from ..engine.lab import Caller
from ..protocol import validate_args
from .feed import Feed

STATIC = Path(__file__).parent / "static"
COOKIE = "atsd_token"
READER = Caller("web", admin=False)
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self'; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class WebServer:
    def __init__(self, server) -> None:
        self.server = server                  # atsd.server.Server: its ``app`` may be rebuilt
        self.token = server.config.web_token
        self.feed = Feed(lambda: self.server.app.events)
        self._sock: socket.socket | None = None
        self._runner: web.AppRunner | None = None

    def bind(self) -> str:
        """Bind now, before the loop runs, so a taken port stops startup like the ZeroMQ
        endpoints do; returns the page's address."""
        host, port = self.server.config.web_listen
        try:
            info_ = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
            sock = socket.socket(info_[0], socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(info_[4])
            sock.listen(128)
        except OSError as exc:
            raise OSError(f"cannot bind web {host}:{port}: {exc.strerror or exc}") from None
        sock.setblocking(False)
        self._sock = sock
        bound = sock.getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        return f"http://{shown}:{bound[1]}/"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self._index)
        app.router.add_get("/events", self._events)
        app.router.add_get("/api/resources", self._api(_resources))
        app.router.add_get("/api/reservations", self._api(_reservations))
        app.router.add_get("/api/pool", self._api(_pool))
        app.router.add_get("/api/queues", self._api(_queues))
        app.router.add_get("/api/revocations", self._api(_revocations))
        app.router.add_get("/api/history", self._api(_history))
        app.router.add_static("/static/", STATIC)
        app.router.add_get("/metrics", self.server.metrics.handle)     # Prometheus
        # no access log: a first request carries the token in its query string
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()

    async def stop(self) -> None:
        self.feed.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def publish(self, numbered: list[dict]) -> None:
        self.feed.publish(numbered)

    # --- every request ---

    @web.middleware
    async def _guard(self, request: web.Request, handler):
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"],
                                           text="read-only: only GET and HEAD", headers=HEADERS)
        set_cookie = False
        if self.token is not None:
            given = _token(request)
            if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
                raise web.HTTPUnauthorized(text="this page needs the token: ?token=...",
                                           headers=HEADERS)
            set_cookie = COOKIE not in request.cookies
        resp = await handler(request)
        if not resp.prepared:
            resp.headers.update(HEADERS)
            if set_cookie:
                resp.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict", path="/")
        return resp

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def _events(self, request: web.Request) -> web.StreamResponse:
        if request.method == "HEAD":
            return web.Response(content_type="text/event-stream")
        raw = request.headers.get("Last-Event-ID") or request.query.get("since")
        since = None
        if raw is not None:
            if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
                raise web.HTTPBadRequest(text="Last-Event-ID (or since) must be a seq number")
            since = int(raw)
        return await self.feed.stream(request, since)

    def _api(self, rows):
        """A JSON endpoint: ``rows(call, query)`` with the log's seq at that moment, so the
        page can open /events?since=seq and miss nothing that happened after."""
        async def handler(request: web.Request) -> web.Response:
            if self.server.role != "leader":    # its lab is empty (atsd/leader.py)
                raise web.HTTPServiceUnavailable(text="this atsd is a standby: see the leader's "
                                                      "page")
            app = self.server.app
            query = {k: v for k, v in request.query.items() if k != "token"}
            try:
                body = rows(Call(app, READER, time.time(), self.server.io), query)
                if inspect.iscoroutine(body):
                    body = await body
            except EngineError as exc:
                cls = web.HTTPNotFound if isinstance(exc, NotFound) else web.HTTPBadRequest
                raise cls(text=exc.message) from None
            body.update(seq=app.events.last_seq, now=time.time())
            return web.json_response(body, headers={"Cache-Control": "no-store"})
        return handler


def _token(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[7:]
    return request.query.get("token") or request.cookies.get(COOKIE)


def _run(name: str, call: Call, query: dict, numbers: tuple[str, ...] = ()) -> dict:
    """Run the read-only command ``name`` with the query string as its arguments, checked by
    the command's own schema (so a bad filter gets the same message as on the wire)."""
    cmd = COMMANDS[name]
    args = dict(query)
    for key in numbers:
        try:
            args[key] = float(args[key])
        except (KeyError, ValueError):
            pass                # absent, or the schema says what is wrong with it
    return cmd.func(call, **validate_args(args, cmd.args))


def _resources(call: Call, query: dict) -> dict:
    return _run("list_resources", call, query)


def _reservations(call: Call, query: dict) -> dict:
    return _run("list_reservations", call, query, ("start_time", "end_time"))


def _pool(call: Call, query: dict) -> dict:
    return _run("get_pool", call, query)


def _queues(call: Call, query: dict) -> dict:
    """Each queue with its live reservations as get_reservation_status gives them (jobs
    included); which reservations are live comes from list_reservations."""
    _run("get_version", call, query)          # takes no arguments: refuses any
    rows = _run("list_reservations", call, {})["reservations"]
    by_queue: dict[str, list] = {name: [] for name in call.app.config.queues}
    for rid in dict.fromkeys(row["id"] for row in rows if row["kind"] == "batch"):
        status = _run("get_reservation_status", call, {"reservation_id": rid})
        by_queue.setdefault(status["queue_id"], []).append({"reservation_id": rid, **status})
    return {"queues": [{"queue_id": name, "backend": q.backend, "hosts": q.hosts,
                        "partition": q.partition, "reservations": by_queue[name]}
                       for name, q in call.app.config.queues.items()]}


def _revocations(call: Call, query: dict) -> dict:
    """Countdowns running now (the page keeps them current from resource.delete_pending);
    no command lists them, so this reads the engine's table."""
    _run("get_version", call, query)          # takes no arguments: refuses any
    return {"revocations": [{"revocation_id": r.id, "nodes": r.nodes, "deadline": r.deadline,
                             "reason": r.reason, "maintenance": r.maintenance}
                            for r in call.app.revocations.revocations.values()]}


HISTORY_S = 7 * 86400       # how far back a resource page looks in the audit trail
HISTORY_ROWS = 100          # and how many of the newest entries it shows


async def _history(call: Call, query: dict) -> dict:
    """What happened to one resource lately, from the audit trail: who booked, released or
    took it back, and who was refused. Only what the page shows anyway (users, commands,
    times); no keys."""
    name = query.get("resource")
    if set(query) != {"resource"} or not name:
        raise BadRequest("give resource=NAME and nothing else")
    call.app.lab.resource(name)                 # NotFound for a name that is not a resource
    entries = await call.io.audit.query(call.now - HISTORY_S, None, None, name, 10_000)
    return {"resource": name, "entries": [
        {"time": e["time"], "user": e["user"], "command": e["command"],
         "outcome": e["outcome"], "ids": e["ids"]} for e in reversed(entries[-HISTORY_ROWS:])]}
