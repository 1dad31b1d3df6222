"""Prometheus metrics at ``/metrics`` on ``metrics.listen`` and on the web page's listener
(prometheus_client's text format, served by aiohttp on the daemon's own loop; on the web
listener behind its token like every page there).

Per request: a count by command and outcome (``ok`` or the error code) and a latency
histogram by command, kept by wrapping each command function, so nothing is decoded twice
and a daemon with neither listener pays nothing. Requests the server refuses before their
command runs (undecodable, unknown command, overloaded, forbidden, a request_id reused for
another request, bad arguments) are counted by the server through ``refused``, under their
command's name, or ``unknown`` when they name no command in the table and ``invalid`` when
they do not decode: no request can add a label value. A retry answered from the retry cache
is not counted again. Everything else is read from the
live state when scraped: reservations by state, waiting checkouts, connections and
subscribers, the event log, the state file, commit latency (the newest commits' quantiles,
as get_stats has them).
"""

from __future__ import annotations

import dataclasses
import inspect
import socket
import time

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .engine.errors import EngineError

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 10.0,
                   60.0, 600.0)


class Metrics:
    def __init__(self, server) -> None:
        self.server = server
        self.registry = CollectorRegistry()
        self.requests = Counter("atsd_requests", "Requests answered, by command and outcome "
                                "(ok or the error code)", ["command", "outcome"],
                                registry=self.registry)
        self.latency = Histogram("atsd_request_seconds", "Time from a request's command "
                                 "starting to its result, by command", ["command"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(_Live(server))
        self._runner: web.AppRunner | None = None

    def instrument(self, commands: dict) -> dict:
        """The command table with each function counted and timed."""
        return {name: dataclasses.replace(cmd, func=self._counted(cmd.name, cmd.func))
                for name, cmd in commands.items()}

    def _counted(self, name: str, func):
        requests, latency = self.requests, self.latency.labels(name)

        def done(started: float, exc: BaseException | None = None) -> None:
            outcome = ("ok" if exc is None else exc.code if isinstance(exc, EngineError)
                       else "internal")
            requests.labels(name, outcome).inc()
            latency.observe(time.perf_counter() - started)

        async def finish(coro, started: float):
            try:
                result = await coro
            except Exception as exc:
                done(started, exc)
                raise
            done(started)
            return result

        def run(call, **args):
            started = time.perf_counter()
            try:
                result = func(call, **args)
            except Exception as exc:
                done(started, exc)
                raise
            if inspect.iscoroutine(result):
                return finish(result, started)
            done(started)
            return result
        run.__doc__ = func.__doc__
        return run

    def refused(self, command: str, code: str) -> None:
        """A request refused before its command ran; ``command`` a name from the table,
        ``unknown`` or ``invalid``."""
        self.requests.labels(command, code).inc()

    def listen(self, address: str) -> str:
        """Bind ``host:port`` now (port 0: any free one), so the address is known before
        the loop runs; returns it as http://host:port/metrics."""
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, int(port)))
        self._socket.listen(128)
        self._socket.setblocking(False)
        bound = self._socket.getsockname()
        return f"http://{address.rpartition(':')[0]}:{bound[1]}/metrics"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, self._socket).start()

    async def handle(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class _Live:
    """What is read from the daemon's state at each scrape."""

    def __init__(self, server) -> None:
        self.server = server

    def collect(self):
        from .monitor import reservation_states, waiting_by_type
        server = self.server
        app, monitor = server.app, server.vitals
        gauge = GaugeMetricFamily("atsd_reservations", "Reservations by state", labels=["state"])
        for state, n in reservation_states(app.lab.reservations.values()).items():
            gauge.add_metric([state], n)
        yield gauge
        gauge = GaugeMetricFamily("atsd_waiting_checkouts", "Pool checkouts waiting, by slot "
                                  "type", labels=["type"])
        for rtype, n in waiting_by_type(app.pool.waiters).items():
            gauge.add_metric([rtype], n)
        yield gauge
        yield GaugeMetricFamily("atsd_connections", "Connections open now",
                                value=monitor.connections())
        yield GaugeMetricFamily("atsd_subscribers", "Subscribers open now",
                                value=monitor.peers["subscribers"])
        yield GaugeMetricFamily("atsd_requests_in_flight", "Commands still running "
                                "(waiting checkouts, Slurm calls)", value=len(server._tasks))
        yield GaugeMetricFamily("atsd_event_seq", "The newest event's seq",
                                value=app.events.last_seq)
        yield GaugeMetricFamily("atsd_uptime_seconds", "Seconds since start",
                                value=monitor.uptime_s())
        size = server.store.size()
        gauge = GaugeMetricFamily("atsd_state_bytes", "The state file: its size, free pages "
                                  "in it, and its WAL", labels=["part"])
        for part, key in (("file", "bytes"), ("free", "free_bytes"), ("wal", "wal_bytes")):
            gauge.add_metric([part], size[key])
        yield gauge
        yield CounterMetricFamily("atsd_commits", "Commits to the state file",
                                  value=monitor.commits)
        gauge = GaugeMetricFamily("atsd_commit_latency_seconds", "Commit latency over the "
                                  "newest commits", labels=["quantile"])
        for q, ms in monitor.commit_percentiles_ms().items():
            gauge.add_metric([{"p50": "0.5", "p90": "0.9", "p99": "0.99", "max": "1"}[q]],
                             ms / 1e3)
        yield gauge
        error = monitor.last_commit_error
        yield GaugeMetricFamily("atsd_last_commit_error_timestamp_seconds", "When a commit "
                                "last failed (0: never)", value=error["ts"] if error else 0)
