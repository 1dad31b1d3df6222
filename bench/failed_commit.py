"""A full disk under a daemon holding 20,000 reservations: how long each refused request
takes (answered ``internal``; nothing changed), side by side with BASELINE, which rebuilt
the whole engine from the state file after each failed commit. Then the disk has room
again and the next request succeeds. Needs root: the state lives on a small tmpfs that is
filled up for real.

    python bench/failed_commit.py [--reservations 20000] [--requests 20]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from common import save, start_daemon, start_old_daemon, table
from restart import RESOURCES, build_state
from test_faults import fill

BASELINE = "9c1bbce"        # the last commit that rebuilt the engine after a failed commit
CONFIG = {"resources": [{"name": f"r{i}", "type": "board"} for i in range(RESOURCES)],
          "claim_window_s": 86400 * 365}


def measure(d, disk: Path, requests: int) -> dict:
    c = d.client("bench", timeout=120)
    c.get_version()
    filler = fill(disk)
    ms = []
    for i in range(requests):
        t = time.perf_counter()
        reply = c.server_communicate({"command": "request_reservation", "resource": f"r{i}",
                                      "reservation_duration": 60, "request_id": f"full{i}"})
        ms.append((time.perf_counter() - t) * 1000)
        assert reply["error"]["code"] == "internal", reply
    filler.unlink()
    reply = c.server_communicate({"command": "request_reservation", "resource": "r0",
                                  "reservation_duration": 60, "request_id": "room"})
    c.close()
    ms.sort()
    return {"refused": len(ms), "p50_ms": ms[len(ms) // 2], "max_ms": ms[-1],
            "ok_once_room": reply["ok"]}


def run(count: int = 20_000, requests: int = 20) -> dict:
    work = Path(tempfile.mkdtemp(prefix="atsd-bench-failed-commit-"))
    state = work / "atsd.db"
    build_state(state, count)
    rows = []
    for label in ("baseline", "this tree"):
        disk = work / f"disk-{label.replace(' ', '-')}"
        disk.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)],
                       check=True)
        try:
            shutil.copy(state, disk / "atsd.db")
            config = {**CONFIG, "state": str(disk / "atsd.db")}
            d = (start_old_daemon(BASELINE, config, "failed-commit") if label == "baseline"
                 else start_daemon(config, "failed-commit"))
            try:
                rows.append({"atsd": label, "reservations": count, **measure(d, disk, requests)})
            finally:
                d.kill()
        finally:
            subprocess.run(["umount", "-l", str(disk)], check=True)
    table(f"Each request while the disk is full, {count:,} reservations held", rows,
          list(rows[0]))
    return {"baseline": BASELINE, "results": rows}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--reservations", type=int, default=20_000)
    p.add_argument("--requests", type=int, default=20)
    args = p.parse_args()
    save("failed_commit", run(args.reservations, args.requests))


if __name__ == "__main__":
    main()
