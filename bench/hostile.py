"""What hostile requests cost everyone else (issue 11): another client's latency while a
storm of many-frame messages arrives, beside the same client's without the storm; and what
300 retryable requests with a 960 KB bad value leave behind (reply size, daemon RSS, state
file).

    python bench/hostile.py [--messages 200] [--frames 5000] [--before DIR]

``--before DIR`` runs the same against a daemon from another checkout (e.g. main before
the change), in the same run, side by side.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path

import zmq

from common import Daemon, pack, rss_mb, save, table

PING = pack({"command": "get_version", "user": "bob"})


def _latencies(endpoint: str, seconds: float) -> list[float]:
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.linger = 0
    sock.connect(endpoint)
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        sock.send(PING)
        sock.recv()
        times.append((time.perf_counter() - t) * 1000)
    sock.close()
    return sorted(times)


def _storm(endpoint: str, messages: int, frames: int, out: mp.Queue) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.sndhwm = 0
    sock.linger = -1
    sock.connect(endpoint)
    out.put("ready")
    t = time.perf_counter()
    for _ in range(messages):
        sock.send_multipart([b""] * frames + [PING])
    out.put(time.perf_counter() - t)
    sock.close()
    ctx.term()


def _row(case: str, times: list[float]) -> dict:
    return {"case": case, "replies": len(times), "p50_ms": times[len(times) // 2],
            "p99_ms": times[int(len(times) * 0.99)], "max_ms": times[-1]}


def storm(d, messages: int, frames: int) -> list[dict]:
    rows = [_row("no storm", _latencies(d.listen, 3.0))]
    q: mp.Queue = mp.Queue()
    p = mp.Process(target=_storm, args=(d.listen, messages, frames, q))
    p.start()
    q.get(timeout=30)
    rows.append(_row(f"{messages} x {frames} frames", _latencies(d.listen, 3.0)))
    rows[-1]["storm_send_s"] = q.get(timeout=120)
    p.join()
    return rows


def bad_values(d, n: int = 300) -> dict:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(d.listen)
    bad = {"command": "request_reservation", "resource": "dut-1", "user": "mallory",
           "reservation_mode": ["Z" * 64_000] * 15}
    state = [d.state] + [d.state.with_name(d.state.name + "-wal")]
    size = lambda: sum(f.stat().st_size for f in state if f.exists())  # noqa: E731
    before_rss, before_file = rss_mb(d.proc.pid), size()
    reply_bytes = 0
    for i in range(n):
        sock.send_multipart([b"", pack({**bad, "request_id": f"bad-{i}"})])
        reply_bytes = max(reply_bytes, len(sock.recv_multipart()[-1]))
    sock.close()
    return {"requests": n, "request_bytes": len(pack(bad)), "largest_reply_bytes": reply_bytes,
            "rss_growth_mb": rss_mb(d.proc.pid) - before_rss,
            "state_file_growth_mb": (size() - before_file) / 1e6}


def run(messages: int = 200, frames: int = 5000, before: Path | None = None) -> dict:
    codes = {"this": None} | ({"before": before} if before else {})
    latency, bad = [], []
    for code, path in codes.items():
        env = {"PYTHONPATH": str(path.resolve())} if path else None
        d = Daemon(Path(tempfile.mkdtemp(prefix="atsd-bench-hostile-")),
                   {"resources": [{"name": "dut-1"}]}, env=env).start()
        try:
            latency += [{"code": code, **row} for row in storm(d, messages, frames)]
            bad.append({"code": code, **bad_values(d)})
        finally:
            d.kill()
    table("another client's get_version while a frame storm arrives", latency,
          ["code", "case", "replies", "p50_ms", "p99_ms", "max_ms", "storm_send_s"])
    table("300 requests with a 960 KB bad reservation_mode, each with a request_id", bad,
          list(bad[0]))
    return {"latency": latency, "bad_values": bad}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--messages", type=int, default=200)
    p.add_argument("--frames", type=int, default=5000)
    p.add_argument("--before", type=Path, help="another checkout to compare with")
    args = p.parse_args()
    print(save("hostile", run(args.messages, args.frames, args.before)))
    os._exit(0)
