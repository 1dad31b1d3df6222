"""Durable cycles: request + claim + release on distinct resources, every change committed
before its reply, with 1 and 8 client processes; and labgrid's coordinator doing
acquire + release of places through its own client session, in the same run.

    python bench/cycles.py [--duration 5] [--no-labgrid]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

from common import in_processes, save, start_daemon, table

CLIENTS = (1, 8)


def _cycle_worker(endpoint: str, resource: str, duration: float, start_at: float,
                  out: mp.Queue) -> None:
    from atsclient import ATSClient
    c = ATSClient(endpoint, user=f"bench-{resource}", timeout=30)
    for _ in range(3):                       # warm-up
        pre, _, _ = c.request_reservation(resource, reservation_duration=60)
        c.claim_reservation(pre)
        c.release_resource(pre)
    while time.time() < start_at:
        time.sleep(0.001)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < duration:
        pre, _, _ = c.request_reservation(resource, reservation_duration=60)
        c.claim_reservation(pre)
        c.release_resource(pre)
        n += 1
    out.put((n, time.perf_counter() - t0))
    c.close()


def atsd_cycles(endpoint: str, clients: int, duration: float) -> float:
    start_at = time.time() + 1.0 + 0.1 * clients
    results = in_processes(_cycle_worker, [(endpoint, f"r{i}", duration, start_at)
                                           for i in range(clients)], duration + 60)
    return sum(n for n, _ in results) / max(t for _, t in results)


def run(duration: float = 5.0, labgrid: bool = True) -> dict:
    d = start_daemon({"resources": [{"name": f"r{i}", "type": "board"} for i in range(16)]},
                     "cycles")
    rows = []
    try:
        for n in CLIENTS:
            rows.append({"system": "atsd", "clients": n,
                         "cycles_per_s": atsd_cycles(d.listen, n, duration)})
    finally:
        d.stop()
    if labgrid:
        import labgrid_cycles
        lg = labgrid_cycles.run(duration, list(CLIENTS))
        if "error" in lg:
            print(f"labgrid: {lg['error']}")
        for r in lg.get("results", []):
            rows.append({"system": f"labgrid {lg.get('version', '')}", "clients": r["clients"],
                         "cycles_per_s": r["cycles_per_s"]})
    ratios = {}
    for n in CLIENTS:
        a = [r["cycles_per_s"] for r in rows if r["system"] == "atsd" and r["clients"] == n]
        b = [r["cycles_per_s"] for r in rows if r["system"] != "atsd" and r["clients"] == n]
        if a and b:
            ratios[n] = a[0] / b[0]
    table("Durable request+claim+release cycles (each change committed before its reply)",
          rows, ["system", "clients", "cycles_per_s"])
    for n, ratio in ratios.items():
        print(f"atsd / labgrid with {n} client(s) = {ratio:.1f}x  (target >= 20x)")
    return {"results": rows, "ratios": {str(k): v for k, v in ratios.items()}, "target": 20}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--no-labgrid", action="store_true")
    a = p.parse_args()
    save("cycles", run(a.duration, not a.no_labgrid))
