"""PostgreSQL state (issue 19), in one run: durable request+claim+release cycles on
PostgreSQL against SQLite with ``fsync: true`` (both commit every group to the disk before
replying; goal: PostgreSQL >= 0.5x SQLite), and the failover time of two atsd on one
database over repeated kill -9 of the leader: from the kill until the standby has booked
(a successful reply), median and worst.

PostgreSQL is a private cluster on a Unix socket (tests/pg_cluster.py), on the same host.

    python bench/pg.py [--duration 5] [--kills 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import save, start_daemon, table
from cycles import CLIENTS, measure

from daemon import Daemon  # noqa: E402  (tests/, on the path through common)
from pg_cluster import PgCluster  # noqa: E402

LAB = {"resources": [{"name": f"r{i}", "type": "board"} for i in range(16)]}
GOAL = 0.5


def cycles(url: str, duration: float) -> list[dict]:
    rows = []
    for store, config in (("sqlite (fsync)", {**LAB, "fsync": True}),
                          ("postgresql", {**LAB, "state": url})):
        d = start_daemon(config, "pg-cycles")
        try:
            for n in CLIENTS:
                rate, errors = measure(d.listen, n, duration)     # ok cycles only
                rows.append({"store": store, "clients": n, "cycles_per_s": rate,
                             "errors": errors})
        finally:
            d.stop()
    return rows


def _booked(daemon) -> bool:
    """One successful booking on ``daemon`` (an hour ahead, in the next free second: it
    needs no release); False for any refusal or no reply."""
    from atsclient import ATSError
    with daemon.client("bench", timeout=0.2, retries=1) as c:
        try:
            c.request_reservation("r0", time_needed=time.time() + 3600, reservation_duration=1)
        except ATSError:
            return False
        return True


def failover(url: str, kills: int) -> list[float]:
    """Seconds from each kill -9 of the leader until the standby booked."""
    pair = [start_daemon({**LAB, "state": url}, "pg-a")]
    times = []
    try:
        pair.append(Daemon(Path(tempfile.mkdtemp(prefix="atsd-bench-pg-b-")),
                           {**LAB, "state": url}).start(role="standby"))
        for _ in range(kills):
            leader, standby = pair
            assert _booked(leader)
            leader.kill()
            killed = time.monotonic()
            while not _booked(standby):
                if time.monotonic() - killed > 30:
                    raise RuntimeError("no takeover within 30 s")
            times.append(time.monotonic() - killed)
            leader.start(role="standby")
            pair.reverse()
    finally:
        for d in pair:
            d.kill()
    return times


def run(duration: float = 5.0, kills: int = 20) -> dict:
    base = Path(tempfile.mkdtemp(prefix="atsd-bench-pg-"))
    cluster = PgCluster(base).init().start()
    try:
        rows = cycles(cluster.create_database("cycles"), duration)
        times = failover(cluster.create_database("failover"), kills)
    finally:
        cluster.stop()
    table("Durable request+claim+release cycles: PostgreSQL vs SQLite (fsync)", rows,
          ["store", "clients", "cycles_per_s"])
    ratios = {}
    for n in CLIENTS:
        by = {r["store"]: r["cycles_per_s"] for r in rows if r["clients"] == n}
        ratios[str(n)] = by["postgresql"] / by["sqlite (fsync)"]
        print(f"postgresql / sqlite with {n} client(s) = {ratios[str(n)]:.2f}x "
              f"(goal >= {GOAL}x)")
    summary = {"kills": len(times), "median_s": statistics.median(times), "worst_s": max(times)}
    print(f"failover over {summary['kills']} kill -9: median {summary['median_s']:.2f} s, "
          f"worst {summary['worst_s']:.2f} s (kill until the standby booked)")
    return {"cycles": rows, "ratios": ratios, "goal": GOAL, "failover": summary,
            "failover_s": times}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--kills", type=int, default=20)
    a = p.parse_args()
    save("pg", run(a.duration, a.kills))
