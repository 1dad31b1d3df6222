"""Waiter storm: N checkouts wait for a GPU that never comes free, their deadlines spread
over one second (clients that started together, give or take), while another client asks
``check_available`` in a loop and measures each round trip. Target: its p99 stays under
50 ms while 10,000 waits end. The waiters are USERS users on a connection each, every one
at its default limit of 100 waiting requests.

Side by side in one run: the same storm against this tree and against the pool as it was
before waits ended in O(log n) (BASELINE, smaller N: it needs seconds per thousand).
Latencies count successful replies only; each waiter's answer must be ``unavailable``.

    python bench/waiters.py [--waiters 10000] [--baseline-waiters 1000]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import msgpack
import zmq

from common import pack, save, start_daemon, start_old_daemon, table

BASELINE = "6929606"        # the last commit whose pool searched the queue on each expiry
WAIT_S = 4.0                # from the first checkout sent to the first deadline
SPREAD_S = 1.0              # from the first deadline to the last
USERS = 100
CONFIG = {
    "resources": [{"name": "gpus/0", "type": "gpus", "slots": 1},
                  {"name": "dut-1", "type": "dut"}],
    "max_in_flight": 200,           # each connection holds its user's 100 waiting requests
}


def _measure(endpoint: str, stop, out: mp.Queue) -> None:
    """Round trips of a REQ client until ``stop`` is set: (sent at, ms) of each ok reply."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    request = pack({"command": "check_available", "resource": "dut-1"})
    samples = []
    while not stop.is_set():
        t = time.time()
        sock.send(request)
        reply = msgpack.unpackb(sock.recv())
        if reply["ok"]:
            samples.append((t, (time.time() - t) * 1000))
    out.put(samples)
    sock.close()
    ctx.term()


def _percentiles(ms: list[float]) -> dict:
    ms = sorted(ms)
    if not ms:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {"n": len(ms), "p50_ms": ms[len(ms) // 2], "p99_ms": ms[int(len(ms) * 0.99)],
            "max_ms": ms[-1]}


def storm(endpoint: str, n: int) -> dict:
    holder = zmq.Context.instance().socket(zmq.REQ)
    holder.connect(endpoint)
    holder.send(pack({"command": "checkout", "request": [{"type": "gpus", "slots": 1}],
                      "lease_s": 3600, "user": "holder"}))
    assert msgpack.unpackb(holder.recv())["ok"]
    holder.close(0)

    stop = mp.Event()
    out: mp.Queue = mp.Queue()
    measurer = mp.Process(target=_measure, args=(endpoint, stop, out))
    measurer.start()
    time.sleep(1.0)                      # quiet: latencies with nobody waiting
    socks = []
    poller = zmq.Poller()
    for _ in range(USERS):
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        poller.register(sock, zmq.POLLIN)
        socks.append(sock)
    t0 = time.time()
    for i in range(n):                   # the waits end in [t0 + WAIT_S, + SPREAD_S)
        deadline = t0 + WAIT_S + SPREAD_S * i / n
        socks[i % USERS].send_multipart([b"", pack({
            "command": "checkout", "request": [{"type": "gpus", "slots": 1}],
            "wait_s": max(0.5, deadline - time.time()), "user": f"storm{i % USERS}",
            "request_id": f"w{i}"})])
    sent = time.time()
    codes: dict[str, int] = {}
    first = last = None
    while sum(codes.values()) < n:
        ready = dict(poller.poll(120_000))
        if not ready:
            break
        for sock in ready:
            reply = msgpack.unpackb(sock.recv_multipart()[-1])
            last = time.time()
            first = first or last
            code = "ok" if reply["ok"] else reply["error"]["code"]
            codes[code] = codes.get(code, 0) + 1
    time.sleep(0.5)                      # and after it
    stop.set()
    samples = out.get(timeout=60)
    measurer.join()
    for sock in socks:
        sock.close()
    quiet = [ms for t, ms in samples if t < t0]
    queueing = [ms for t, ms in samples if t0 <= t and t + ms / 1000 < t0 + WAIT_S]
    # the storm: every round trip that overlaps [first deadline, last answer]
    expiry = [ms for t, ms in samples
              if last is not None and t0 + WAIT_S <= t + ms / 1000 and t <= last]
    return {"waiters": n, "answers": codes, "send_s": sent - t0,
            "expiry_spread_s": None if first is None else last - first,
            # how late the last answer came after the last deadline
            "last_late_s": None if last is None else last - (t0 + WAIT_S + SPREAD_S),
            "quiet": _percentiles(quiet), "queueing": _percentiles(queueing),
            "expiry": _percentiles(expiry)}


def run(n: int = 10_000, baseline_n: int = 1000) -> dict:
    rows = []
    for label, count in [("baseline", baseline_n), ("this tree", baseline_n),
                         ("this tree", n)]:
        if count <= 0:
            continue
        d = (start_old_daemon(BASELINE, CONFIG, "waiters") if label == "baseline"
             else start_daemon(CONFIG, "waiters"))
        try:
            rows.append({"atsd": label, **storm(d.listen, count)})
        finally:
            d.kill()
    flat = [{"atsd": r["atsd"], "waiters": r["waiters"], "answers": r["answers"],
             "spread_s": r["expiry_spread_s"], "last_late_s": r["last_late_s"],
             "quiet_p99": r["quiet"]["p99_ms"],
             "expiry_n": r["expiry"]["n"], "expiry_p50": r["expiry"]["p50_ms"],
             "expiry_p99": r["expiry"]["p99_ms"], "expiry_max": r["expiry"]["max_ms"]}
            for r in rows]
    table("waits ending within a second; another client's check_available round trips (ms)",
          flat, list(flat[0]))
    return {"target_p99_ms": 50, "wait_s": WAIT_S, "spread_s": SPREAD_S, "baseline": BASELINE,
            "results": rows}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--waiters", type=int, default=10_000)
    p.add_argument("--baseline-waiters", type=int, default=1000)
    args = p.parse_args()
    save("waiters", run(args.waiters, args.baseline_waiters))


if __name__ == "__main__":
    main()
