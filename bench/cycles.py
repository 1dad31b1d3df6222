"""Durable cycles: request + claim + release on distinct resources, every change committed
before its reply, with 1 and 8 client processes each on its own persistent REQ socket
(atsclient's ATSClient); the same clients against the echo ceiling (a bare ROUTER that
answers each of the three at once, common.start_bare_router) and, in the same run, labgrid's
coordinator doing acquire + release of places through its own client session.

Only cycles whose three replies were all ``ok`` count; the others are reported by error code.

    python bench/cycles.py [--duration 5] [--no-labgrid]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

from common import in_processes, save, start_bare_router, start_daemon, table

CLIENTS = (1, 8)
TARGETS = {"echo_1": 0.8, "echo_8": 0.6, "labgrid_8": 20}
# the replies the echo ceiling gives: the shape the client reads, nothing done
ECHO = {
    "request_reservation": {"ok": True, "pre_reservation_id": "p", "time_available": 0.0,
                            "expire_time": 60.0},
    "claim_reservation": {"ok": True, "reservation_id": "p", "expire_time": 60.0,
                          "resource_config": None},
    "release_reservation": {"ok": True, "release_status": True},
}


def _cycle_worker(endpoint: str, resource: str, duration: float, start_at: float,
                  out: mp.Queue) -> None:
    from atsclient import ATSClient
    from atsclient.errors import ATSError
    c = ATSClient(endpoint, user=f"bench-{resource}", timeout=30)

    def cycle() -> str:
        try:
            pre, _, _ = c.request_reservation(resource, reservation_duration=60)
            c.claim_reservation(pre)
            return "ok" if c.release_resource(pre) else "not_released"
        except ATSError as exc:
            return exc.code
    for _ in range(3):                       # warm-up
        cycle()
    while time.time() < start_at:
        time.sleep(0.001)
    n = 0
    errors: dict[str, int] = {}
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < duration:
        outcome = cycle()
        if outcome == "ok":
            n += 1
        else:
            errors[outcome] = errors.get(outcome, 0) + 1
    out.put((n, time.perf_counter() - t0, errors))
    c.close()


def measure(endpoint: str, clients: int, duration: float) -> tuple[float, dict[str, int]]:
    """ok cycles per second over all clients, and the failed cycles by error code."""
    start_at = time.time() + 1.0 + 0.1 * clients
    results = in_processes(_cycle_worker, [(endpoint, f"r{i}", duration, start_at)
                                           for i in range(clients)], duration + 60)
    errors: dict[str, int] = {}
    for _, _, errs in results:
        for code, count in errs.items():
            errors[code] = errors.get(code, 0) + count
    return sum(n for n, _, _ in results) / max(t for _, t, _ in results), errors


def run(duration: float = 5.0, labgrid: bool = True) -> dict:
    rows = []
    bare, endpoint = start_bare_router(ECHO)
    try:
        for n in CLIENTS:
            rate, errors = measure(endpoint, n, duration)
            rows.append({"system": "echo ceiling", "clients": n, "cycles_per_s": rate,
                         "errors": errors})
    finally:
        bare.terminate()
        bare.join()
    d = start_daemon({"resources": [{"name": f"r{i}", "type": "board"} for i in range(16)]},
                     "cycles")
    try:
        for n in CLIENTS:
            rate, errors = measure(d.listen, n, duration)
            rows.append({"system": "atsd", "clients": n, "cycles_per_s": rate,
                         "errors": errors})
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
    rate = {(r["system"].split()[0], r["clients"]): r["cycles_per_s"] for r in rows}
    ratios = {}
    for n in CLIENTS:
        for other in ("echo", "labgrid"):
            if (other, n) in rate and ("atsd", n) in rate:
                ratios[f"{other}_{n}"] = rate["atsd", n] / rate[other, n]
    table("Durable request+claim+release cycles (each change committed before its reply; "
          "ok cycles/s)", rows, ["system", "clients", "cycles_per_s", "errors"])
    for key, ratio in ratios.items():
        other, n = key.split("_")
        target = TARGETS.get(key)
        print(f"atsd / {other} with {n} client(s) = {ratio:.2f}x"
              + (f"  (target >= {target}x)" if target else ""))
    return {"results": rows, "ratios": ratios, "targets": TARGETS}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--no-labgrid", action="store_true")
    a = p.parse_args()
    save("cycles", run(a.duration, not a.no_labgrid))
