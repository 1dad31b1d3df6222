"""The README's picture: the shipped example lab (conf/atsd.yaml) with a few bookings, as
headless Chromium shows its web calendar. Writes docs/web-calendar.png.

    python bench/web_screenshot.py
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from browser import Browser  # noqa: E402
from daemon import JOB_USER, Daemon  # noqa: E402

OUT = ROOT / "docs" / "web-calendar.png"


def example_lab() -> Daemon:
    home = Path(tempfile.mkdtemp(prefix="atsd-screenshot-"))
    shutil.copy(ROOT / "conf" / "gpus.json", home)
    shutil.copytree(ROOT / "conf" / "jobs", home / "jobs")
    config = yaml.safe_load((ROOT / "conf" / "atsd.yaml").read_text())
    config["web"] = {"listen": "127.0.0.1:0"}
    config["jobs"]["run_as"] = JOB_USER        # required when this runs as root
    return Daemon(home, config).start()


def book(d: Daemon) -> None:
    now = time.time()
    with d.client("alice") as c:
        rid = c.request_reservation("dut-1", reservation_duration=3 * 3600)[0]
        c.claim_reservation(rid)
        c.request_reservation(["dut-2", "scope-1"], time_needed=now + 5 * 3600,
                              reservation_duration=4 * 3600)
    with d.client("bob") as c:
        rid = c.request_reservation("scope-1", reservation_duration=2 * 3600)[0]
        c.claim_reservation(rid)
        c.request_reservation("build-1", reservation_mode="shared", slots=2,
                              reservation_duration=8 * 3600)
        c.request_reservation("dut-1", time_needed=now + 6 * 3600, reservation_duration=3 * 3600)
    with d.client("ci-runner") as c:
        c.checkout([{"type": "gpus", "slots": 2}, {"type": "crypto_chips", "slots": 1}],
                   lease_s=4 * 3600)
        c.create_reservation("debug", 2, 3 * 3600, now + 2 * 3600)
        c.request_reservation("build-1", reservation_mode="shared", slots=1,
                              time_needed=now + 3600, reservation_duration=10 * 3600)
    with d.client("labadmin") as c:
        c.call("request_reservation", resource="psu-1", time_needed=now + 12 * 3600,
               reservation_duration=3 * 3600, maintenance=True)
        c.call("revoke", nodelist=[{"node_id": "dut-2"}], max_wait_time=45 * 60,
               reason="firmware recall")


async def main() -> None:
    d = example_lab()
    try:
        book(d)
        b = await Browser(1400, 620).start()
        try:
            await b.goto(d.web)
            await b.wait_for("document.querySelectorAll('.bar').length >= 10")
            await b.wait_for("document.querySelector('#live').textContent === 'live'")
            await b.screenshot(OUT)
        finally:
            await b.close()
    finally:
        d.stop()
    print(OUT)


if __name__ == "__main__":
    asyncio.run(main())
