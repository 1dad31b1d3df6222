"""The web side over plain HTTP: the JSON is the list commands' rows, /events resumes from
the log by Last-Event-ID (also across a restart), it is read-only, the token guards every
request, and stuck event streams never hold the daemon up."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

import aiohttp
import pytest

from atsclient.errors import Forbidden
from atsclient.security import write_keypair
from atsd import config as configmod
from daemon import BASE_CONFIG, JOB_USER, Daemon

TOKEN = "s3cret-token-for-tests"
LAB = {**BASE_CONFIG,
       "resources": BASE_CONFIG["resources"] + [{"name": "gpus/0", "type": "gpus", "slots": 4}],
       "queues": {"debug": {"backend": "local", "hosts": ["h1", "h2"]}},
       "jobs": {"run_as": JOB_USER}, "web": {"listen": "127.0.0.1:0"}}


async def get(url: str, **kw) -> tuple[int, object]:
    async with aiohttp.ClientSession() as s, s.get(url, **kw) as r:
        body = await r.text()
        return r.status, json.loads(body) if r.content_type == "application/json" else body


class Stream:
    """An /events reader: each event as (id, event type, data)."""

    def __init__(self, url: str, headers: dict | None = None) -> None:
        self.url, self.headers = url, headers or {}

    async def __aenter__(self) -> Stream:
        self.session = aiohttp.ClientSession()
        self.resp = await self.session.get(self.url, headers=self.headers)
        assert self.resp.status == 200, await self.resp.text()
        return self

    async def __aexit__(self, *exc) -> None:
        self.resp.close()
        await self.session.close()

    async def next(self, timeout: float = 10.0) -> tuple[int, str, dict]:
        fields: dict[str, str] = {}
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.resp.content.readline()).decode()
                assert line, "the stream ended"
                line = line.rstrip("\n")
                if not line:
                    if "data" in fields:
                        return int(fields["id"]), fields.get("event", "message"), \
                            json.loads(fields["data"])
                    fields = {}
                elif not line.startswith(":"):
                    key, _, value = line.partition(": ")
                    fields[key] = value

    async def take(self, n: int) -> list[dict]:
        return [(await self.next())[2] for _ in range(n)]


def book(daemon, resource="dut-1", user="alice", start=None) -> str:
    with daemon.client(user) as c:
        return c.request_reservation(resource, time_needed=start)[0]


async def test_json_has_the_list_commands_rows(daemon_factory):
    d = daemon_factory(LAB)
    book(d, "dut-1", "bob", start=time.time() + 600)
    with d.client("carol") as c:
        c.checkout([{"type": "gpus", "slots": 2}])
        batch = c.create_reservation("debug", 1, 600)["reservation_id"]
        wire = {"resources": c.call("list_resources")["resources"],
                "reservations": c.list_reservations(),
                "pool": c.call("get_pool")["resource_pool"],
                "batch": c.call("get_reservation_status", reservation_id=batch)}
    status, body = await get(d.web + "api/resources")
    assert status == 200 and body["resources"] == wire["resources"]
    status, body = await get(d.web + "api/reservations")
    assert body["reservations"] == wire["reservations"] and len(body["reservations"]) == 3
    status, body = await get(d.web + "api/pool")
    assert body["resource_pool"] == wire["pool"]
    status, body = await get(d.web + "api/queues")
    for key in ("ok", "request_id"):
        wire["batch"].pop(key, None)
    assert body["queues"] == [{"queue_id": "debug", "backend": "local", "hosts": ["h1", "h2"],
                               "partition": None,
                               "reservations": [{"reservation_id": batch, **wire["batch"]}]}]
    # filters are the command's: same names, same refusals
    status, body = await get(d.web + "api/reservations?owner=bob")
    assert [r["owner"] for r in body["reservations"]] == ["bob"]
    status, body = await get(d.web + f"api/reservations?start_time={time.time() + 3900}")
    assert [r["owner"] for r in body["reservations"]] == ["bob"]   # the others end before
    assert await get(d.web + "api/reservations?start_time=soon") == (
        400, "start_time must be a number, not str")
    status, text = await get(d.web + "api/resources?colour=red")
    assert status == 400 and "unknown key colour" in text
    status, text = await get(d.web + "api/reservations?resource=nope")
    assert status == 404 and "nope" in text
    status, text = await get(d.web + "api/queues?x=1")
    assert status == 400


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
async def test_read_only_anything_but_get_and_head_is_405(daemon_factory, method):
    d = daemon_factory(LAB)
    async with aiohttp.ClientSession() as s:
        for path in ("", "api/resources", "events", "static/app.js", "no/such/page"):
            async with s.request(method, d.web + path, data=b"{}") as r:
                assert r.status == 405, (method, path)
                assert set(r.headers["Allow"].split(",")) == {"GET", "HEAD"}
        async with s.head(d.web) as r:
            assert r.status == 200
        async with s.get(d.web) as r:
            csp = r.headers["Content-Security-Policy"]
            assert "atsd lab" in await r.text() and "default-src 'none'" in csp
        # nothing from other hosts: no absolute URL in what the page is made of
        for path in ("", "static/app.js", "static/style.css"):
            async with s.get(d.web + path) as r:
                assert r.status == 200
                assert not re.search(r"https?:|url\(|@import|src=\"//", await r.text()), path


async def test_the_token_guards_every_request(daemon_factory):
    d = daemon_factory({**LAB, "web": {"listen": "127.0.0.1:0", "token": TOKEN}})
    for path in ("", "api/resources", "api/pool", "events", "static/app.js", "static/style.css"):
        status, _ = await get(d.web + path)
        assert status == 401, path
        status, _ = await get(d.web + path, headers={"Authorization": "Bearer wrong-token-xxxxxxx"})
        assert status == 401, path
        status, _ = await get(d.web + path + "?token=" + TOKEN[:-1])
        assert status == 401, path
    status, body = await get(d.web + "api/resources",
                             headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and body["resources"]
    # a browser gives ?token= once; the HttpOnly cookie it gets carries it from then on
    # (unsafe: aiohttp's jar, unlike a browser's, keeps no cookies of an IP address)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        async with s.get(d.web + "?token=" + TOKEN) as r:
            assert r.status == 200
            assert "HttpOnly" in r.headers["Set-Cookie"]
        async with s.get(d.web + "static/app.js") as r:
            assert r.status == 200
        async with s.get(d.web + "events", timeout=aiohttp.ClientTimeout(sock_read=5)) as r:
            assert r.status == 200 and r.content_type == "text/event-stream"


@pytest.mark.parametrize("web, words", [
    ({"listen": "0.0.0.0:8080"}, "web.token: required when web.listen is not loopback"),
    ({"listen": "lab.example.org:8080"}, "web.token: required when web.listen is not loopback"),
    ({"listen": "8080"}, "web.listen: '8080' is not host:port"),
    ({"listen": "127.0.0.1:99999"}, "web.listen: '127.0.0.1:99999' is not host:port"),
    ({"listen": "127.0.0.1:8080", "token": "short"}, "web.token: must be at least 16"),
    ({"listen": "127.0.0.1:8080", "tls": True}, "web.tls: unknown key"),
])
def test_web_config_is_checked(tmp_path, web, words):
    path = tmp_path / "atsd.yaml"
    path.write_text(json.dumps({"web": web}))
    result = subprocess.run([sys.executable, "-m", "atsd", "check-config", str(path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and words in result.stderr, result.stderr


def test_curve_on_needs_the_web_token_too(tmp_path):
    write_keypair(tmp_path, "server")
    (tmp_path / "clients.d").mkdir()
    curve = {"curve": {"secret_key": "server.key_secret", "authorized_keys": "clients.d"}}
    path = tmp_path / "atsd.yaml"
    path.write_text(json.dumps({"security": curve, "web": {"listen": "127.0.0.1:0"}}))
    with pytest.raises(configmod.ConfigError) as err:
        configmod.load(path)
    assert err.value.key == "web.token" and "curve" in err.value.reason
    path.write_text(json.dumps({"security": curve,
                                "web": {"listen": "[::1]:0", "token": TOKEN}}))
    assert configmod.load(path).web_listen == ("::1", 0)


def test_a_taken_web_port_stops_startup(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    other = Daemon(tmp_path / "other", {**LAB, "web": {"listen": f"127.0.0.1:{port}"}})
    with pytest.raises(AssertionError, match=f"cannot bind web 127.0.0.1:{port}"):
        other.start()
    taken.close()


async def test_events_resume_by_last_event_id_across_a_restart(daemon_factory):
    d = daemon_factory(LAB)
    ids = [book(d, r) for r in ("dut-1", "dut-2", "scope-1")]
    async with Stream(d.web + "events?since=0") as s:
        got = [await s.next() for _ in range(3)]
    assert [seq for seq, _, _ in got] == [1, 2, 3]
    assert [e["reservation_id"] for _, _, e in got] == ids
    assert all(e["topic"] == "reservation.status" for _, _, e in got)

    # Last-Event-ID (what EventSource sends on reconnect) wins over ?since
    async with Stream(d.web + "events?since=0", {"Last-Event-ID": "2"}) as s:
        assert (await s.next())[0] == 3
        later = book(d, "build-1")                   # live, after the replay
        seq, _, e = await s.next()
        assert (seq, e["reservation_id"]) == (4, later)

    d.restart()
    after = book(d, "dut-1", start=time.time() + 7200)
    async with Stream(d.web + "events", {"Last-Event-ID": "4"}) as s:
        seq, _, e = await s.next()
    assert (seq, e["reservation_id"]) == (5, after)

    # an id this log never had (another daemon's): told to start over, then live
    async with Stream(d.web + "events", {"Last-Event-ID": "999999"}) as s:
        assert (await s.next())[:2] == (5, "reset")
        fresh = book(d, "dut-2", start=time.time() + 7200)
        seq, _, e = await s.next()
        assert (seq, e["reservation_id"]) == (6, fresh)
    status, text = await get(d.web + "events", headers={"Last-Event-ID": "-1"})
    assert status == 400


async def test_stuck_event_streams_are_dropped_and_never_hold_the_daemon_up(daemon_factory):
    nodes = [f"node-{i:03d}-" + "x" * 90 for i in range(300)]
    d = daemon_factory({**LAB, "resources": LAB["resources"] + [{"name": n} for n in nodes],
                        "limits": {"max_reservations_per_user": 2000}})   # 1100 below
    host, port = urlsplit(d.web).hostname, urlsplit(d.web).port
    stuck = []
    for _ in range(3):                      # ask for the stream, never read it
        sock = socket.create_connection((host, port))
        sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        stuck.append(sock)
    big = [{"node_id": n, "value": 0.5} for n in nodes]     # ~35 KB an event

    def flood():
        with d.client("labadmin", timeout=5.0) as c:
            for _ in range(200):            # more than the kernel buffers for a socket
                c.call("set_resource_values", nodelist=big)
            start = time.time() + 3600
            for i in range(1100):           # then more events than a client may have queued
                c.request_reservation("build-1", time_needed=start + i * 10,
                                      reservation_duration=5, reservation_mode="shared",
                                      slots=1)
    async with Stream(d.web + "events?since=0") as s:
        reader = asyncio.get_running_loop().create_task(s.take(200 + 1100))
        await asyncio.to_thread(flood)      # every request answered within its timeout
        got = await reader                  # and a reader that keeps up gets every event
    assert [e["seq"] for e in got] == list(range(1, 1301))
    for sock in stuck:      # the stuck ones were cut off: their stream ends (no keep-alive
        sock.settimeout(10)     # comments for ever), a time-out here fails the test
        try:
            while sock.recv(1 << 20):
                pass
        except ConnectionResetError:
            pass
        sock.close()


async def test_a_resource_page_has_its_history_from_the_audit_trail(daemon_factory):
    """Who booked and released it, and who was refused, newest first: users, commands and
    outcomes only."""
    d = daemon_factory(LAB)
    with d.client("bob") as bob, d.client("carol") as carol:
        pre = bob.request_reservation("dut-1", reservation_duration=600)[0]
        with pytest.raises(Forbidden):
            carol.release_resource(pre)                 # not hers: forbidden, recorded
        bob.release_resource(pre)
        bob.request_reservation("dut-2", reservation_duration=600)
    status, body = await get(d.web + "api/history?resource=dut-1")
    assert status == 200
    assert [(e["user"], e["command"], e["outcome"]) for e in body["entries"]] == [
        ("bob", "release_reservation", "ok"), ("carol", "release_reservation", "forbidden"),
        ("bob", "request_reservation", "ok")]
    assert all(set(e) == {"time", "user", "command", "outcome", "ids"} for e in body["entries"])
    assert (await get(d.web + "api/history?resource=nope"))[0] == 404
    assert (await get(d.web + "api/history"))[0] == 400
    assert (await get(d.web + "api/history?resource=dut-1&limit=5"))[0] == 400
