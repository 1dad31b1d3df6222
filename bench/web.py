"""The web calendar under load, in a real headless Chromium.

1. Render: a page with 500 resources and 10,000 reservations in view, loaded afresh 5
   times: milliseconds from navigation to the calendar drawn (data fetched, rows built,
   the bars of the rows in sight made) and to the next painted frame (target: < 1 s).
   Rows further down get their bars as they scroll into sight; each run checks that the
   last row gets all of its own.
2. Daemon latency with pages open: a client books and releases (each request publishes an
   event) at a steady rate, one request at a time, and its round trips are measured with
   no page open, with 20 raw /events streams, and with 20 Chromium pages of the calendar
   open, side by side in one run (target: <= 10% rise).

    python bench/web.py [--seconds 10] [--rate 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import msgpack
import zmq

from common import save, table

from atsd.engine.calendar import Calendar
from atsd.engine.lab import Caller, Lab, ResourceDef
from atsd.store import Store
from browser import Browser
from daemon import Daemon

RESOURCES = 500
RESERVATIONS = 10_000
PAGES = 20
PER_BROWSER = 5


def build_state(path: Path, now: float) -> None:
    """RESERVATIONS bookings over RESOURCES resources, all in the default view (now - 2 h
    to now + 24 h), written as the daemon writes them (engine, then store)."""
    lab = Lab([ResourceDef(f"board-{i:03d}", "board") for i in range(RESOURCES)],
              claim_window_s=86400.0)
    cal = Calendar(lab)
    per = RESERVATIONS // RESOURCES
    for i in range(RESOURCES):
        for k in range(per):
            cal.request(Caller(f"user{(i + k) % 50}"), [f"board-{i:03d}"],
                        now + 120 + k * 4300, 3600.0, None, "exclusive", False, None, now)
    store = Store(path)
    store.commit(lab.take_dirty(), [], [], 1000)
    store.close()


def big_lab() -> Daemon:
    home = Path(tempfile.mkdtemp(prefix="atsd-bench-web-"))
    build_state(home / "atsd.db", time.time())
    return Daemon(home, {"resources": [{"name": f"board-{i:03d}", "type": "board"}
                                       for i in range(RESOURCES)],
                         "claim_window_s": 86400.0, "web": {"listen": "127.0.0.1:0"}}).start()


async def render(d: Daemon, runs: int = 5) -> list[dict]:
    b = await Browser(1600, 1000).start()
    out = []
    try:
        await b.send("Network.enable")
        await b.send("Network.setCacheDisabled", cacheDisabled=True)
        for _ in range(runs):
            await b.send("Page.navigate", url="about:blank")
            await b.send("Page.navigate", url=d.web)
            await b.wait_for("performance.getEntriesByName('atsd-drawn').length > 0", timeout=60)
            drawn = await b.eval("performance.getEntriesByName('atsd-drawn')[0].startTime")
            painted = await b.eval("new Promise(r => requestAnimationFrame(() => "
                                   "setTimeout(() => r(performance.now()))))")
            rows = await b.eval("document.querySelectorAll('.row').length")
            bars = await b.eval("document.querySelectorAll('.bar').length")
            assert rows == RESOURCES, rows
            # the rows further down get their bars as they come into sight: all of them
            last = "[...document.querySelectorAll('.row')].pop()"
            await b.eval(f"{last}.scrollIntoView()")
            await b.wait_for(f"{last}.querySelectorAll('.bar').length === "
                             f"{RESERVATIONS // RESOURCES}")
            out.append({"drawn_ms": drawn, "painted_ms": painted, "bars_at_first": bars})
    finally:
        await b.close()
    return out


# --- latency ---

def _booker(endpoint: str, seconds: float, rate: float, out: mp.Queue) -> None:
    """request_reservation then release_reservation, paced at ``rate`` requests a second;
    round trips of successful replies only, in ms."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)

    def call(request: dict) -> tuple[float, dict]:
        t = time.perf_counter()
        sock.send(msgpack.packb(request))
        reply = msgpack.unpackb(sock.recv())
        return (time.perf_counter() - t) * 1000, reply
    times, failed = [], 0
    end = time.perf_counter() + seconds
    next_at = time.perf_counter()
    while time.perf_counter() < end:
        ms, reply = call({"command": "request_reservation", "user": "bench",
                          "resource": "probe", "reservation_duration": 60.0})
        if reply.get("ok"):
            times.append(ms)
            ms, reply = call({"command": "release_reservation", "user": "bench",
                              "reservation_id": reply["pre_reservation_id"]})
            if reply.get("ok"):
                times.append(ms)
            else:
                failed += 1
        else:
            failed += 1
        next_at += 2 / rate
        time.sleep(max(0.0, next_at - time.perf_counter()))
    out.put((times, failed))
    sock.close()
    ctx.term()


def measure(d: Daemon, seconds: float, rate: float) -> dict:
    q: mp.Queue = mp.Queue()
    p = mp.Process(target=_booker, args=(d.listen, seconds, rate, q))
    p.start()
    times, failed = q.get(timeout=seconds + 60)
    p.join()
    times.sort()
    return {"requests": len(times), "failed": failed,
            "p50_ms": times[len(times) // 2], "p90_ms": times[int(len(times) * 0.9)],
            "p99_ms": times[int(len(times) * 0.99)], "mean_ms": statistics.fmean(times)}


def _streams(url: str, n: int, ready: mp.Event, stop: mp.Event, want, out: mp.Queue) -> None:
    """``n`` /events readers in one process; how many events each got (once ``stop`` is
    set, waiting up to 10 s for each to have ``want`` of them)."""
    async def main():
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as s:
            counts = [0] * n
            resps = [await s.get(url + "events") for _ in range(n)]

            async def read(i, resp):
                async for line in resp.content:
                    if line.startswith(b"id: "):
                        counts[i] += 1
            tasks = [asyncio.create_task(read(i, r)) for i, r in enumerate(resps)]
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)
            deadline = time.monotonic() + 10
            while min(counts) < want.value and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            for t in tasks:
                t.cancel()
            out.put(counts)
    asyncio.run(main())


async def open_pages(b: Browser, url: str, n: int) -> list[str]:
    port = int((b.profile / "DevToolsActivePort").read_text().split()[0])
    ids = []
    for _ in range(n):
        async with b.http.put(f"http://127.0.0.1:{port}/json/new?{url}") as r:
            target = await r.json()
        ids.append(target["id"])
        async with b.http.ws_connect(target["webSocketDebuggerUrl"]) as ws:
            deadline = time.monotonic() + 30
            while True:     # the page is up and its event stream open
                await ws.send_json({"id": 1, "method": "Runtime.evaluate", "params": {
                    "expression": "document.querySelector('#live')?.textContent",
                    "returnByValue": True}})
                reply = await ws.receive_json()
                if reply.get("result", {}).get("result", {}).get("value") == "live":
                    break
                assert time.monotonic() < deadline, "a page did not go live"
                await asyncio.sleep(0.1)
    return ids


async def latency(seconds: float, rate: float, rounds: int) -> list[dict]:
    """The three set-ups in turn, ``rounds`` times (so a change in the machine's load
    falls on all of them); each row is one measurement."""
    home = Path(tempfile.mkdtemp(prefix="atsd-bench-web-lat-"))
    d = Daemon(home, {"resources": [{"name": "probe"}] + [
        {"name": f"board-{i:02d}", "type": "board"} for i in range(40)],
        "web": {"listen": "127.0.0.1:0"}}).start()
    rows = []
    loop = asyncio.get_running_loop()
    try:
        for r in range(rounds):
            rows.append({"round": r, "pages": "none", **measure(d, seconds, rate)})
            ready, stop, want, q = mp.Event(), mp.Event(), mp.Value("i", 0), mp.Queue()
            p = mp.Process(target=_streams, args=(d.web, PAGES, ready, stop, want, q))
            p.start()
            ready.wait(30)
            rows.append({"round": r, "pages": f"{PAGES} /events streams",
                         **measure(d, seconds, rate)})
            want.value = rows[-1]["requests"]       # one event per successful request
            stop.set()
            rows[-1]["events_per_stream_min"] = min(q.get(timeout=30))
            p.join()
            # a browser opens at most 6 connections to one host over HTTP/1.1 and each
            # page holds one for its event stream, so the pages are spread over browsers
            browsers = [await Browser(1200, 800).start() for _ in range(PAGES // PER_BROWSER)]
            try:
                for b in browsers:
                    await open_pages(b, d.web, PER_BROWSER)
                rows.append({"round": r, "pages": f"{PAGES} Chromium pages",
                             **await loop.run_in_executor(None, measure, d, seconds, rate)})
            finally:
                for b in browsers:
                    await b.close()
    finally:
        d.stop()
    return rows


def summary(rows: list[dict]) -> list[dict]:
    """Per set-up: the median over rounds of each figure, and its p50 against no pages."""
    out = []
    for pages in dict.fromkeys(r["pages"] for r in rows):
        mine = [r for r in rows if r["pages"] == pages]
        out.append({"pages": pages, **{k: statistics.median(r[k] for r in mine) for k in
                                       ("requests", "failed", "p50_ms", "p90_ms", "p99_ms",
                                        "mean_ms")}})
    for r in out:
        r["p50_vs_none"] = r["p50_ms"] / out[0]["p50_ms"]
        r["mean_vs_none"] = r["mean_ms"] / out[0]["mean_ms"]
    return out


async def main(seconds: float, rate: float, rounds: int) -> None:
    d = big_lab()
    try:
        runs = await render(d)
    finally:
        d.stop()
    table(f"Render: {RESOURCES} resources, {RESERVATIONS} reservations in view (ms from "
          "navigation)", runs, ["drawn_ms", "painted_ms", "bars_at_first"])
    lat = await latency(seconds, rate, rounds)
    table(f"Daemon round trips, book + release at {rate:g}/s, each round (ms)", lat,
          ["round", "pages", "requests", "failed", "p50_ms", "p90_ms", "p99_ms", "mean_ms",
           "events_per_stream_min"])
    med = summary(lat)
    table(f"Median of {rounds} rounds", med, ["pages", "requests", "failed", "p50_ms",
                                              "p90_ms", "p99_ms", "mean_ms", "p50_vs_none",
                                              "mean_vs_none"])
    path = save("web", {"load_average_1m": os.getloadavg()[0],
                        "render": {"resources": RESOURCES, "reservations": RESERVATIONS,
                                   "runs": runs,
                                   "painted_ms_max": max(r["painted_ms"] for r in runs)},
                        "latency": {"rate_per_s": rate, "seconds": seconds, "rounds": lat,
                                    "median": med}})
    print(f"\n{path}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    asyncio.run(main(a.seconds, a.rate, a.rounds))
