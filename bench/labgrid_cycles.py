#!/usr/bin/env python3
"""Benchmark: acquire+release cycles through labgrid's coordinator.

Measures how many "acquire place / release place" cycles labgrid's
coordinator sustains when driven through labgrid's own client code
(``labgrid.remote.client.ClientSession``), so the number can be compared with
atsd in the same run.

What it does:

1. Creates (or reuses, if present and working) a virtualenv at
   ``bench/.venv-labgrid`` (override with ``ATSD_LABGRID_VENV``) and
   ``pip install labgrid`` into it (override the requirement with
   ``ATSD_LABGRID_SPEC``, e.g. ``labgrid==26.0.1``).
2. Starts ``labgrid-coordinator -l 127.0.0.1:PORT`` in a temporary directory
   (it writes places.yaml/resources.yaml to its cwd) on a free port and waits
   until it accepts connections.
3. Creates one place per client (``ClientSession.add_place``, what
   ``labgrid-client -p NAME create`` runs).
4. For each requested client count, starts that many worker processes (venv
   python, each with its own ClientSession and its own place). After a
   common start instant, each loops ``await session.acquire()`` /
   ``await session.release()`` -- the very coroutines ``labgrid-client acquire``
   and ``labgrid-client release`` run, including their ``AcquirePlace`` /
   ``ReleasePlace`` gRPC calls and the ``sync_with_coordinator`` round trip
   that follows each -- for a fixed duration (``ATSD_LABGRID_DURATION``,
   default 5 s).
5. Stops the coordinator (by PID) and all workers, also on errors/Ctrl-C.

Usage::

    python bench/labgrid_cycles.py [--duration 5] [--clients 1,8]

Writes ``bench/results/labgrid_cycles.json``. Other bench scripts can call
``run(duration_s, clients)``; it returns the same dict (it does not write the
file). Any python >= 3.8 can run this outer script; the measuring code runs
with the venv's python.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
THIS_FILE = os.path.abspath(__file__)
DEFAULT_VENV = os.path.join(HERE, ".venv-labgrid")
RESULTS_JSON = os.path.join(HERE, "results", "labgrid_cycles.json")
PLACE_PREFIX = "atsd-bench-"

PIP_TIMEOUT_S = 900.0
VENV_TIMEOUT_S = 300.0
COORD_READY_TIMEOUT_S = 30.0
WORKER_READY_TIMEOUT_S = 90.0
SETUP_TIMEOUT_S = 90.0
PORT_ATTEMPTS = 5


class BenchError(Exception):
    """A failure with a one-line, human-readable reason."""


def _log(msg: str) -> None:
    print(f"[labgrid-bench] {msg}", file=sys.stderr, flush=True)


def _tail(text: str, n: int = 400) -> str:
    text = " ".join(text.split())
    return text[-n:]


# --------------------------------------------------------------------------
# virtualenv
# --------------------------------------------------------------------------

def _venv_dir() -> str:
    return os.path.abspath(os.environ.get("ATSD_LABGRID_VENV") or DEFAULT_VENV)


def _venv_bin(venv: str, name: str) -> str:
    if os.name == "nt":
        return os.path.join(venv, "Scripts", name + ".exe")
    return os.path.join(venv, "bin", name)


_PROBE = (
    "import importlib.metadata as m, labgrid.remote.client, "
    "labgrid.remote.generated.labgrid_coordinator_pb2; print(m.version('labgrid'))"
)


def _probe_venv(venv: str) -> str | None:
    """Return the installed labgrid version if the venv works, else None."""
    py = _venv_bin(venv, "python")
    if not (os.path.exists(py) and os.path.exists(_venv_bin(venv, "labgrid-coordinator"))):
        return None
    try:
        out = subprocess.run([py, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    lines = out.stdout.strip().splitlines()
    return lines[-1].strip() if lines else None


def ensure_venv() -> tuple[str, str]:
    """Create/reuse the venv with labgrid. Returns (venv python, labgrid version)."""
    venv = _venv_dir()
    version = _probe_venv(venv)
    if version:
        _log(f"reusing venv {venv} (labgrid {version})")
        return _venv_bin(venv, "python"), version

    base_py = os.environ.get("ATSD_LABGRID_PYTHON") or sys.executable
    cmd = [base_py, "-m", "venv"]
    if os.path.exists(venv):
        if os.path.exists(os.path.join(venv, "pyvenv.cfg")):
            cmd.append("--clear")  # a broken venv of ours: rebuild it
        elif os.listdir(venv):
            raise BenchError(f"{venv} exists, is not empty and is not a virtualenv; "
                             "remove it or set ATSD_LABGRID_VENV")
    cmd.append(venv)
    _log(f"creating venv {venv} with {base_py}")
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=VENV_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as e:
        raise BenchError(f"cannot create venv {venv}: {e}") from e
    if out.returncode != 0:
        raise BenchError(f"cannot create venv {venv}: {_tail(out.stderr or out.stdout)}")

    spec = os.environ.get("ATSD_LABGRID_SPEC") or "labgrid"
    py = _venv_bin(venv, "python")
    _log(f"pip install {spec} into {venv}")
    try:
        out = subprocess.run(
            [py, "-m", "pip", "install", "--disable-pip-version-check", "-q", spec],
            capture_output=True, text=True, timeout=PIP_TIMEOUT_S,
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise BenchError(f"cannot install {spec}: {e}") from e
    if out.returncode != 0:
        errs = [ln for ln in (out.stderr or "").splitlines() if ln.startswith("ERROR")]
        why = _tail(" ".join(errs) or out.stderr or out.stdout)
        raise BenchError(f"cannot install {spec}: {why}")
    version = _probe_venv(venv)
    if not version:
        raise BenchError(f"labgrid installed into {venv} but does not import / "
                         "has no labgrid-coordinator")
    _log(f"installed labgrid {version}")
    return py, version


# --------------------------------------------------------------------------
# coordinator
# --------------------------------------------------------------------------

def _free_port() -> int:
    last: OSError | None = None
    for _ in range(10):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
        except OSError as e:
            last = e
        finally:
            s.close()
    raise BenchError(f"cannot find a free port on 127.0.0.1: {last}")


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _stop_process(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=timeout)


def _start_coordinator(venv: str, workdir: str) -> tuple[subprocess.Popen, int, str]:
    exe = _venv_bin(venv, "labgrid-coordinator")
    logpath = os.path.join(workdir, "coordinator.log")
    last_reason = ""
    for attempt in range(1, PORT_ATTEMPTS + 1):
        port = _free_port()
        logf = open(logpath, "ab")
        try:
            proc = subprocess.Popen(
                [exe, "-l", f"127.0.0.1:{port}"],
                cwd=workdir, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            )
        except OSError as e:
            raise BenchError(f"cannot start {exe}: {e}") from e
        finally:
            logf.close()
        deadline = time.monotonic() + COORD_READY_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                if _accepts(port):
                    return proc, port, logpath
                time.sleep(0.05)
        except BaseException:
            _stop_process(proc)
            raise
        _stop_process(proc)
        with open(logpath, "r", errors="replace") as f:
            last_reason = _tail(f.read())
        _log(f"coordinator on port {port} did not come up (attempt {attempt}): "
             f"{last_reason[-200:]}")
    raise BenchError(f"labgrid-coordinator did not accept connections after {PORT_ATTEMPTS} "
                     f"attempts: {last_reason[-300:]}")


# --------------------------------------------------------------------------
# worker processes (run with the venv python)
# --------------------------------------------------------------------------

class _LineReader:
    """Reads a child's stdout lines in a thread so we can wait with deadlines."""

    def __init__(self, proc: subprocess.Popen):
        self.q: queue.Queue = queue.Queue()
        self.t = threading.Thread(target=self._run, args=(proc.stdout,), daemon=True)
        self.t.start()

    def _run(self, stream) -> None:
        for line in stream:
            self.q.put(line.rstrip("\n"))
        self.q.put(None)

    def get(self, deadline: float) -> str | None:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError("timed out waiting for a labgrid worker")
            try:
                line = self.q.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None or line.strip():
                return line


def _spawn(py: str, args: list[str], stderr_path: str) -> subprocess.Popen:
    errf = open(stderr_path, "ab")
    try:
        return subprocess.Popen(
            [py, THIS_FILE] + args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=errf, text=True, bufsize=1,
        )
    finally:
        errf.close()


def _expect(reader: _LineReader, word: str, deadline: float, what: str, errpath: str) -> str:
    line = reader.get(deadline)
    if line is None or not line.startswith(word):
        detail = line or ""
        if line is None:
            with contextlib.suppress(OSError), open(errpath, "r", errors="replace") as f:
                detail = f.read()
        raise BenchError(f"{what} failed: {_tail(detail, 300)}")
    return line[len(word):].strip()


def _measure(py: str, address: str, nclients: int, duration_s: float, workdir: str) -> dict:
    procs: list[subprocess.Popen] = []
    readers: list[_LineReader] = []
    errpath = os.path.join(workdir, f"workers-{nclients}.err")
    try:
        for i in range(nclients):
            p = _spawn(py, ["--_worker", address, f"{PLACE_PREFIX}{i}", str(duration_s)], errpath)
            procs.append(p)
            readers.append(_LineReader(p))
        deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
        for r in readers:
            _expect(r, "READY", deadline, f"worker start-up ({nclients} clients)", errpath)
        start_at = time.time() + 0.3  # common start instant for all workers
        for p in procs:
            p.stdin.write(f"GO {start_at!r}\n")
            p.stdin.flush()
        deadline = time.monotonic() + 0.3 + duration_s + 60.0
        per_worker = []
        for r in readers:
            per_worker.append(json.loads(_expect(r, "RESULT", deadline,
                                                 f"measurement ({nclients} clients)", errpath)))
        for p in procs:
            p.wait(timeout=30)
    finally:
        for p in procs:
            with contextlib.suppress(Exception):
                p.stdin.close()
            _stop_process(p, timeout=5)
    cycles = sum(w["cycles"] for w in per_worker)
    seconds = max(w["seconds"] for w in per_worker)
    return {
        "clients": nclients,
        "cycles": cycles,
        "seconds": round(seconds, 3),
        "cycles_per_s": round(cycles / seconds, 1) if seconds > 0 else 0.0,
        "per_client_cycles": [w["cycles"] for w in per_worker],
    }


# ---- code below this line, down to the next marker, runs inside the venv ----

def _quiet_logging() -> None:
    import logging
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)


def _session_args(place: str) -> argparse.Namespace:
    # The attributes ClientSession.acquire/release/add_place read from the
    # parsed labgrid-client command line, with labgrid-client's defaults.
    return argparse.Namespace(place=place, allow_unmatched=False, kick=False)


def _worker_setup(address: str, n: int) -> int:
    """Create places PLACE_PREFIX0..n-1 (like `labgrid-client -p NAME create`)."""
    _quiet_logging()
    from labgrid.remote.client import start_session

    session = start_session(address)
    loop = session.loop
    try:
        with contextlib.redirect_stdout(open(os.devnull, "w")):
            for i in range(n):
                name = f"{PLACE_PREFIX}{i}"
                if name in session.places:
                    continue
                session.args = _session_args(name)
                loop.run_until_complete(session.add_place())
        names = [f"{PLACE_PREFIX}{i}" for i in range(n)]
        missing = [name for name in names if name not in session.places]
        if missing:
            print(f"ERROR places not visible after create: {missing}", flush=True)
            return 1
        print(f"OK {n}", flush=True)
        return 0
    finally:
        loop.run_until_complete(session.stop())
        loop.run_until_complete(session.close())


def _worker(address: str, place: str, duration_s: float) -> int:
    """One client: its own ClientSession, acquire+release `place` in a loop."""
    _quiet_logging()
    from labgrid.remote.client import start_session

    proto = sys.stdout
    devnull = open(os.devnull, "w")
    session = start_session(address)  # ClientStream + startup "host/user" + subscribe
    loop = session.loop
    try:
        if place not in session.places:
            print(f"ERROR place {place} does not exist", file=proto, flush=True)
            return 1
        session.args = _session_args(place)

        async def cycle_loop(deadline_from_now: float | None,
                             max_cycles: int | None) -> tuple[int, float]:
            n = 0
            t0 = time.monotonic()
            while True:
                await session.acquire()   # -> _acquire_place -> stub.AcquirePlace + sync
                await session.release()   # -> _release_place -> stub.ReleasePlace + sync
                n += 1
                if max_cycles is not None and n >= max_cycles:
                    break
                if deadline_from_now is not None and time.monotonic() - t0 >= deadline_from_now:
                    break
            return n, time.monotonic() - t0

        with contextlib.redirect_stdout(devnull):  # "acquired place X" lines
            loop.run_until_complete(cycle_loop(None, 3))  # warm-up / sanity check
        print("READY", file=proto, flush=True)

        line = sys.stdin.readline()
        if not line.startswith("GO "):
            return 1
        delay = float(line.split()[1]) - time.time()
        if delay > 0:
            time.sleep(delay)
        with contextlib.redirect_stdout(devnull):
            cycles, seconds = loop.run_until_complete(cycle_loop(duration_s, None))
        print("RESULT " + json.dumps({"cycles": cycles, "seconds": seconds}), file=proto,
              flush=True)
        return 0
    except Exception as e:  # reported to the parent as one line
        print(f"ERROR {type(e).__name__}: {e}", file=proto, flush=True)
        return 1
    finally:
        with contextlib.suppress(Exception):
            loop.run_until_complete(session.stop())
            loop.run_until_complete(session.close())


# ---- end of venv-side code ----

def run(duration_s: float, clients: list[int]) -> dict:
    """Run the labgrid benchmark; returns the result dict (or one with "error")."""
    clients = [int(c) for c in clients]
    if not clients or min(clients) < 1:
        return {"tool": "labgrid", "error": f"bad client counts: {clients}"}
    t_start = time.monotonic()
    coord = None
    workdir = None
    try:
        py, version = ensure_venv()
        venv = _venv_dir()
        workdir = tempfile.mkdtemp(prefix="labgrid-bench-")
        coord, port, coord_log = _start_coordinator(venv, workdir)
        address = f"127.0.0.1:{port}"
        _log(f"coordinator pid {coord.pid} listening on {address} (cwd {workdir})")

        nplaces = max(clients)
        errpath = os.path.join(workdir, "setup.err")
        setup = _spawn(py, ["--_setup", address, str(nplaces)], errpath)
        try:
            setup.stdin.close()
            _expect(_LineReader(setup), "OK", time.monotonic() + SETUP_TIMEOUT_S,
                    "creating places", errpath)
            setup.wait(timeout=30)
        finally:
            _stop_process(setup, timeout=5)
        _log(f"created {nplaces} places")

        results = []
        for n in clients:
            _log(f"measuring {n} client(s) for {duration_s:g} s")
            if coord.poll() is not None:
                raise BenchError(f"labgrid-coordinator exited with code {coord.returncode}")
            results.append(_measure(py, address, n, duration_s, workdir))
        return {
            "tool": "labgrid",
            "version": version,
            "duration_s": duration_s,
            "api": "labgrid.remote.client.start_session + ClientSession.acquire()/release() "
                   "(AcquirePlace/ReleasePlace + sync_with_coordinator)",
            "results": results,
            "total_wall_s": round(time.monotonic() - t_start, 1),
        }
    except BenchError as e:
        _log(f"error: {e}")
        return {"tool": "labgrid", "error": str(e)}
    finally:
        _stop_process(coord)
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def _print_table(res: dict) -> None:
    print(f"labgrid {res.get('version')} coordinator, acquire+release cycles")
    print(f"{'clients':>7}  {'cycles':>8}  {'seconds':>8}  {'cycles/s':>9}")
    for r in res["results"]:
        print(f"{r['clients']:>7}  {r['cycles']:>8}  {r['seconds']:>8.2f}  "
              f"{r['cycles_per_s']:>9.1f}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--_worker":
        return _worker(argv[1], argv[2], float(argv[3]))
    if argv and argv[0] == "--_setup":
        return _worker_setup(argv[1], int(argv[2]))

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float,
                    default=float(os.environ.get("ATSD_LABGRID_DURATION", "5")),
                    help="seconds per measurement (env ATSD_LABGRID_DURATION, default 5)")
    ap.add_argument("--clients", default=os.environ.get("ATSD_LABGRID_CLIENTS", "1,8"),
                    help="comma-separated client counts (default 1,8)")
    ap.add_argument("--json", default=RESULTS_JSON, help="output JSON path")
    a = ap.parse_args(argv)
    clients = [int(x) for x in a.clients.split(",") if x.strip()]

    res = run(a.duration, clients)
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(res, f, indent=2)
        f.write("\n")
    if "error" in res:
        print(f"labgrid benchmark skipped: {res['error']}")
        return 1
    _print_table(res)
    print(f"(total {res['total_wall_s']} s; JSON: {a.json})")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
