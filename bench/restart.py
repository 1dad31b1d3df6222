"""Restart with a full calendar: time from start to the first answer with 100k live
reservations in the state file, and the daemon's RSS holding them (targets: <= 1 s, <= 150 MB).

    python bench/restart.py [--reservations 100000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from common import ROOT, cpu_s, rss_mb, save, table

from atsclient import ATSClient
from atsd.engine.calendar import Calendar
from atsd.engine.lab import Caller, Lab, Quotas, ResourceDef
from atsd.store import Store

RESOURCES = 1000


def build_state(path: Path, count: int) -> None:
    """``count`` future pre-reservations spread over RESOURCES resources, written as the
    daemon writes them (the engine makes them, the store commits them)."""
    defs = [ResourceDef(f"r{i}", "board") for i in range(RESOURCES)]
    lab = Lab(defs, claim_window_s=86400 * 365, quotas=Quotas(max_reservations_per_user=count))
    cal = Calendar(lab)
    now = time.time()
    per = count // RESOURCES
    for i in range(RESOURCES):
        for k in range(per):
            cal.request(Caller(f"user{k % 50}"), [f"r{i}"], now + 3600 + k * 3600, 1800.0,
                        None, "exclusive", False, None, now)
    store = Store(path)
    store.commit(lab.take_dirty(), [], [], 1000)
    store.close()


def run(count: int = 100_000) -> dict:
    d = Path(tempfile.mkdtemp(prefix="atsd-bench-restart-"))
    state = d / "atsd.db"
    t = time.perf_counter()
    build_state(state, count)
    build_s = time.perf_counter() - t
    config = {"resources": [{"name": f"r{i}", "type": "board"} for i in range(RESOURCES)],
              "state": str(state), "claim_window_s": 86400 * 365,
              "listen": "tcp://127.0.0.1:*", "events": "tcp://127.0.0.1:*"}
    (d / "atsd.yaml").write_text(yaml.safe_dump(config))
    endpoints = d / "endpoints.json"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "atsd", "--config", str(d / "atsd.yaml"),
                             "--endpoints-file", str(endpoints), "--log-format", "json"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not endpoints.exists():
            if proc.poll() is not None:
                raise RuntimeError("atsd exited during start")
            time.sleep(0.005)
        import json
        listen = json.loads(endpoints.read_text())["listen"]
        c = ATSClient(listen, timeout=30)
        c.get_version()
        first_answer = time.perf_counter() - t0
        cpu = cpu_s(proc.pid)
        live = len(c.list_reservations(resource="r0"))
        rss = rss_mb(proc.pid)
        c.close()
    finally:
        proc.terminate()
        proc.wait()
    row = {"reservations": count, "first_answer_s": first_answer, "cpu_s": cpu, "rss_mb": rss,
           "per_resource_listed": live, "state_mb": state.stat().st_size / 2**20,
           "build_s": build_s}
    table("Restart with a full calendar", [row],
          ["reservations", "first_answer_s", "cpu_s", "rss_mb", "state_mb"])
    print("targets: first answer <= 1 s, RSS <= 150 MB (cpu_s: the daemon's CPU time until "
          "then, what a busy machine does not stretch)")
    return {"results": [row], "targets": {"first_answer_s": 1, "rss_mb": 150}}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--reservations", type=int, default=100_000)
    save("restart", run(p.parse_args().reservations))
