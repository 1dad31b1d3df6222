"""atsd against the ceiling: a bare asyncio pyzmq ROUTER that decodes a msgpack request and
replies, draining every ready message per wake-up (the fastest plain Python does here),
and atsd answering ``check_available``, with the same clients in the same run.

    python bench/ceiling.py [--duration 3]
"""

from __future__ import annotations

import argparse

from common import (IN_FLIGHT, latency, pack, save, start_bare_router, start_daemon, table,
                    throughput)


def run(duration: float = 3.0) -> dict:
    bare, bare_endpoint = start_bare_router({"check_available": {"ok": True,
                                                                 "available": True}})
    config = {"resources": [{"name": f"r{i}", "type": "board"} for i in range(16)]}
    d = start_daemon(config, "ceiling")
    try:
        request = pack({"command": "check_available", "resource": "r3", "start_time": 2e9,
                        "end_time": 2e9 + 3600})
        results = []
        for name, endpoint in (("bare ROUTER", bare_endpoint), ("atsd", d.listen)):
            rps, errors = throughput(endpoint, [request], duration=duration)
            p50, p99, latency_errors = latency(endpoint, request)
            results.append({"server": name, "req_per_s": rps, "p50_ms": p50, "p99_ms": p99,
                            "errors": sum(errors.values()) + latency_errors,
                            "errors_by_code": errors})
    finally:
        d.stop()
        bare.terminate()
        bare.join()
    ratio = results[1]["req_per_s"] / results[0]["req_per_s"]
    table(f"Ceiling: check_available, {IN_FLIGHT} in flight (ok replies/s); latency of one "
          "REQ client", results, ["server", "req_per_s", "p50_ms", "p99_ms", "errors"])
    print(f"atsd / ceiling = {ratio:.2f}  (target >= 0.5)")
    return {"results": results, "ratio": ratio, "target": 0.5, "in_flight": IN_FLIGHT}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--duration", type=float, default=3.0)
    save("ceiling", run(p.parse_args().duration))
