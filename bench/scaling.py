"""Engine-level scaling: an availability search and a request on one resource holding 100,
10k and 100k bookings; list_resources and checkout over 10k resources. The engine is pure,
so this measures the algorithms without sockets (target: 100k bookings <= 2x the time of 100).

    python bench/scaling.py
"""

from __future__ import annotations

import random
import time

from common import save, table

from atsd.engine.calendar import Calendar
from atsd.engine.lab import Caller, Lab, ResourceDef

ALICE = Caller("alice")
SIZES = (100, 10_000, 100_000)


def _lab_with_bookings(n: int) -> tuple[Lab, Calendar]:
    """One resource with ``n`` one-minute bookings, one every 100 s from t=0."""
    lab = Lab([ResourceDef("r", "board")], claim_window_s=1e9)
    cal = Calendar(lab)
    for i in range(n):
        cal.request(ALICE, ["r"], i * 100.0, 60.0, None, "exclusive", False, None, now=0.0)
    return lab, cal


def _per_call(fn, rounds: int) -> float:
    t = time.perf_counter()
    for _ in range(rounds):
        fn()
    return (time.perf_counter() - t) / rounds * 1e6


def bookings(rounds: int = 20_000) -> list[dict]:
    rows = []
    rng = random.Random(1)
    for n in SIZES:
        lab, cal = _lab_with_bookings(n)
        span = n * 100.0
        starts = [rng.uniform(0, span) for _ in range(rounds)]
        it = iter(starts)
        search = _per_call(lambda: cal.check_available("r", (s := next(it)), s + 30,
                                                       "exclusive", None), rounds)
        it = iter(starts)

        def request():
            r = cal.request(ALICE, ["r"], next(it), 30.0, None, "exclusive", True, None, 0.0)
            cal.release(ALICE, r.id, 0.0)
            lab.take_events()
        req = _per_call(request, rounds)
        rows.append({"bookings": n, "search_us": search, "request_release_us": req})
    return rows


def many_resources(n: int = 10_000, rounds: int = 200) -> list[dict]:
    from atsd.commands import Call, load_all
    from atsd.config import Config
    from atsd.app import App
    from atsd.eventlog import EventLog
    commands = load_all()
    cfg = Config(resources=[ResourceDef(f"gpus/{i}", "gpus", slots=4) for i in range(n)])
    app = App(cfg, EventLog(10, 0, []))
    call = Call(app, ALICE, 0.0)
    listing = _per_call(lambda: commands["list_resources"].func(call, None, None), 20)

    def checkout():
        reply = commands["checkout"].func(call, request=[{"type": "gpus", "slots": 2}],
                                          lease_s=60.0, wait_s=None, priority=None)
        commands["checkin"].func(call, allocation_id=reply["allocation_id"])
        app.lab.take_events()
    out = _per_call(checkout, rounds)
    return [{"resources": n, "list_resources_ms": listing / 1000, "checkout_checkin_ms": out / 1000}]


def run() -> dict:
    rows = bookings()
    table("One resource with N bookings (microseconds per call)", rows,
          ["bookings", "search_us", "request_release_us"])
    ratio_search = rows[-1]["search_us"] / rows[0]["search_us"]
    ratio_request = rows[-1]["request_release_us"] / rows[0]["request_release_us"]
    print(f"100k / 100 bookings: search {ratio_search:.2f}x, request {ratio_request:.2f}x "
          f"(target <= 2x)")
    wide = many_resources()
    table("10k resources", wide, ["resources", "list_resources_ms", "checkout_checkin_ms"])
    return {"bookings": rows, "ratio_search": ratio_search, "ratio_request": ratio_request,
            "many_resources": wide, "target": 2}


if __name__ == "__main__":
    save("scaling", run())
