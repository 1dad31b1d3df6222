"""What the benchmarks share: a real atsd (the tests' Daemon helper), load generators that
run in their own processes, and printing/saving results. A benchmark prints figures and
ratios; it never passes or fails."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import zmq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"

from daemon import Daemon  # noqa: E402  (the tests' real-daemon helper)


def start_daemon(config: dict, name: str = "atsd", **kw) -> Daemon:
    directory = Path(tempfile.mkdtemp(prefix=f"atsd-bench-{name}-"))
    return Daemon(directory, config, **kw).start()


def start_old_daemon(commit: str, config: dict, name: str = "atsd") -> Daemon:
    """An atsd as of ``commit`` (unpacked from git with the atsclient it imports), for a
    side-by-side comparison."""
    tree = Path(tempfile.mkdtemp(prefix="atsd-old-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "atsd", "atsclient"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    here = os.getcwd()
    os.chdir(tree)              # ``python -m atsd`` looks in its working directory first
    try:
        return start_daemon(config, name, env={"PYTHONPATH": str(tree)})
    finally:
        os.chdir(here)


def _bare_router(replies: dict[str, bytes], endpoint_out: mp.Queue) -> None:
    """The echo ceiling: a bare asyncio pyzmq ROUTER that decodes each msgpack request and
    answers at once with ``replies[command]``, draining every ready message per wake-up (the
    fastest plain Python does here)."""
    import asyncio

    import zmq.asyncio

    async def serve():
        ctx = zmq.asyncio.Context()
        router = ctx.socket(zmq.ROUTER)
        router.bind("tcp://127.0.0.1:*")
        endpoint_out.put(router.getsockopt_string(zmq.LAST_ENDPOINT))
        plain = zmq.Socket.shadow(router.underlying)
        while True:
            await router.poll()
            while True:
                try:
                    frames = plain.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                command = msgpack.unpackb(frames[-1]).get("command")
                plain.send_multipart(frames[:-1] + [replies[command]])
    asyncio.run(serve())


def start_bare_router(replies: dict[str, dict]) -> tuple[mp.Process, str]:
    """The echo ceiling in its own process, and its endpoint; terminate the process after."""
    q: mp.Queue = mp.Queue()
    proc = mp.Process(target=_bare_router, args=({c: pack(r) for c, r in replies.items()}, q),
                      daemon=True)
    proc.start()
    return proc, q.get(timeout=10)


# requests kept in flight per client: below the daemon's default max_in_flight (64), so that
# none is refused as overloaded and counted as work done
IN_FLIGHT = 48


def _outcome(reply: bytes) -> str:
    """``ok`` or the error code of one reply."""
    body = msgpack.unpackb(reply)
    return "ok" if body.get("ok") else str(body.get("error", {}).get("code", "malformed"))


def _pipelined(endpoint: str, payloads: list[bytes], inflight: int, duration: float,
               out: mp.Queue) -> None:
    """DEALER client keeping ``inflight`` requests outstanding for ``duration`` seconds;
    puts (ok replies per second, {error code: count})."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    n = len(payloads)
    sent = 0
    for _ in range(inflight):
        sock.send_multipart([b"", payloads[sent % n]])
        sent += 1
    for _ in range(inflight):          # warm-up: let the first round trip happen
        sock.recv_multipart()
        sock.send_multipart([b"", payloads[sent % n]])
        sent += 1
    ok = 0
    errors: dict[str, int] = {}
    start = time.perf_counter()
    end = start + duration
    while True:
        outcome = _outcome(sock.recv_multipart()[-1])
        if outcome == "ok":
            ok += 1
        else:
            errors[outcome] = errors.get(outcome, 0) + 1
        if time.perf_counter() >= end:
            break
        sock.send_multipart([b"", payloads[sent % n]])
        sent += 1
    out.put((ok / (time.perf_counter() - start), errors))
    sock.close()
    ctx.term()


def throughput(endpoint: str, payloads: list[bytes], inflight: int = IN_FLIGHT,
               duration: float = 3.0, clients: int = 1) -> tuple[float, dict[str, int]]:
    """Successful replies per second with ``clients`` processes each keeping ``inflight``
    requests outstanding, and the error replies by code (not counted as throughput)."""
    results = in_processes(_pipelined, [(endpoint, payloads, inflight, duration)] * clients,
                           duration + 60)
    errors: dict[str, int] = {}
    for _, errs in results:
        for code, count in errs.items():
            errors[code] = errors.get(code, 0) + count
    return sum(rate for rate, _ in results), errors


def in_processes(target, arg_tuples: list[tuple], timeout: float) -> list:
    """Run ``target(*args, out)`` in one process per args tuple; what each put on ``out``."""
    q: mp.Queue = mp.Queue()
    procs = [mp.Process(target=target, args=(*args, q)) for args in arg_tuples]
    for p in procs:
        p.start()
    results = [q.get(timeout=timeout) for _ in procs]
    for p in procs:
        p.join()
    return results


def latency(endpoint: str, payload: bytes, n: int = 2000) -> tuple[float, float, int]:
    """p50 and p99 round-trip milliseconds of one synchronous REQ client over its ok
    replies, and how many replies were errors."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    for _ in range(100):
        sock.send(payload)
        sock.recv()
    times = []
    errors = 0
    for _ in range(n):
        t = time.perf_counter()
        sock.send(payload)
        reply = sock.recv()
        if _outcome(reply) == "ok":
            times.append((time.perf_counter() - t) * 1000)
        else:
            errors += 1
    sock.close()
    if not times:
        return float("nan"), float("nan"), errors
    times.sort()
    return times[len(times) // 2], times[int(len(times) * 0.99)], errors


def pack(request: dict) -> bytes:
    return msgpack.packb(request, use_bin_type=True)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def table(title: str, rows: list[dict], columns: list[str]) -> None:
    print(f"\n{title}")
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
    return "-" if v is None else str(v)


def versions() -> dict:
    import platform

    import atsd
    return {"atsd": atsd.__version__, "git": _git_head(), "python": platform.python_version(),
            "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(),
            "msgpack": ".".join(map(str, msgpack.version))}


def _git_head() -> str | None:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def save(name: str, data: dict) -> Path:
    """Write ``bench/results/<name>.json``: the figures with when, where and what ran."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {"benchmark": name, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "cpus": os.cpu_count(), "load_average": os.getloadavg(), "versions": versions(),
            **data}
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {path}")
    return path
