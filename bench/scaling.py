"""Engine-level scaling: an availability search and a request on one resource holding 100,
10k and 100k bookings, both uniform (one-minute bookings with gaps) and dense (mixed
lengths from 1 s to 7 days, gaps under a minute, so a 5-minute window is only free after
the last one); list_resources and checkout over 10k resources. The engine is pure, so this
measures the algorithms without sockets (target: 100k bookings <= 2x the time of 100). The
dense calendars are restored as the daemon restores its state file: the collector paused,
then the restored objects frozen out of its full collections (atsd/heap.py).

    python bench/scaling.py
"""

from __future__ import annotations

import gc
import itertools
import math
import random
import time
from typing import Callable

from common import save, table

from atsd import heap
from atsd.engine import states
from atsd.engine.calendar import Calendar
from atsd.engine.lab import RESERVATION, Caller, Lab, Quotas, Reservation, ResourceDef
from atsd.engine.timeline import Booking

ALICE = Caller("alice")
SIZES = (100, 10_000, 100_000)


def _lab_with_bookings(n: int) -> tuple[Lab, Calendar]:
    """One resource with ``n`` one-minute bookings, one every 100 s from t=0."""
    lab = Lab([ResourceDef("r", "board")], claim_window_s=1e9,
              quotas=Quotas(max_reservations_per_user=n + 1))      # all of them alice's
    cal = Calendar(lab)
    for i in range(n):
        cal.request(ALICE, ["r"], i * 100.0, 60.0, None, "exclusive", False, None, now=0.0)
    return lab, cal


def _per_call(fn, rounds: int) -> float:
    """CPU microseconds per call: the engine is single-threaded and does no I/O, so its CPU
    time is its time, and time other processes take from it on a shared machine is not."""
    t = time.process_time()
    for _ in range(rounds):
        fn()
    return (time.process_time() - t) / rounds * 1e6


def _side_by_side(calls: dict[int, Callable[[], None]], rounds: int,
                  batches: int = 10) -> dict[int, float]:
    """Microseconds per call of each size's ``calls[n]``, measured in turns (a batch of each
    size, then the next batch of each), taking each size's best batch: the sizes share
    whatever else the machine is doing, and a batch that was interrupted does not count."""
    per = max(1, rounds // batches)
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(batches):
        for n, fn in calls.items():
            best[n] = min(best[n], _per_call(fn, per))
    return best


def _cycle(items: list):
    """Calls each return the next item, round and round."""
    it = itertools.cycle(items)
    return lambda: next(it)


def bookings(rounds: int = 20_000) -> list[dict]:
    """Uniform: one-minute bookings every 100 s; a 30 s search and a request + release at
    random times."""
    rng = random.Random(1)
    searches, requests = {}, {}
    for n in SIZES:
        lab, cal = _lab_with_bookings(n)
        start = _cycle([rng.uniform(0, n * 100.0) for _ in range(rounds)])
        searches[n] = lambda cal=cal, start=start: cal.check_available(
            "r", (s := start()), s + 30, "exclusive", None)

        def request(lab=lab, cal=cal, start=start):
            r = cal.request(ALICE, ["r"], start(), 30.0, None, "exclusive", True, None, 0.0)
            cal.release(ALICE, r.id, 0.0)
            lab.take_events()
        requests[n] = request
    search, req = _side_by_side(searches, rounds), _side_by_side(requests, rounds)
    return [{"bookings": n, "search_us": search[n], "request_release_us": req[n]}
            for n in SIZES]


WEEK = 7 * 86400.0
CONFIGS = ({"fw": "a"}, {"fw": "b"}, None)


def _dense_lab(n: int, rng: random.Random) -> tuple[Lab, Calendar, float]:
    """One board with ``n`` back-to-back exclusive bookings, lengths log-uniform in
    [1 s, 7 days], gaps uniform in [0, 60) s, a third each with firmware a, b or none;
    loaded as a restart loads them. Returns the lab, its calendar and the last end."""
    lab = Lab([ResourceDef("r", "board", config={"fw": "a"}, reconfigure_s=60.0)],
              claim_window_s=1e12)
    records = []
    t = 0.0
    for i in range(n):
        start = t + rng.uniform(0, 60)
        t = start + math.exp(rng.uniform(0, math.log(WEEK)))
        config = CONFIGS[i % 3]
        rid = f"d{i}"
        records.append(Reservation(
            id=rid, kind="claimed", owner="bob", state=states.GRANTED, start=start, end=t,
            mode="exclusive", slots=1, config=config,
            bookings=[Booking(rid, "r", start, t, 1, True, config)]).to_record())
    with heap.collector_paused():
        lab.restore({RESERVATION: records}, now=0.0)
    return lab, Calendar(lab), t


def dense(rounds: int = 5000) -> list[dict]:
    """``check_available`` of a 5-minute window at a random time (busy there: it needs the
    next free window), and a request with a config (firmware c: the window also covers a
    reconfiguration) for the next free 5 minutes, then its release."""
    rng = random.Random(2)
    checks, requests, first_ms = {}, {}, {}
    gc.collect()                 # what the sections before left, not charged to this one
    for n in SIZES:
        lab, cal, last = _dense_lab(n, rng)
        t = time.process_time()
        cal.check_available("r", 0.0, 300.0, "exclusive", None)
        first_ms[n] = (time.process_time() - t) * 1000      # works out the restored tree
        start = _cycle([rng.uniform(0, last) for _ in range(rounds)])

        def check(cal=cal, start=start, last=last):
            s = start()
            found = cal.check_available("r", s, s + 300, "exclusive", None)["avail_start"]
            assert found >= last, "a 5-minute gap in a dense calendar"
        checks[n] = check

        def request(lab=lab, cal=cal, start=start):
            r = cal.request(ALICE, ["r"], start(), 300.0, {"fw": "c"}, "exclusive", True,
                            None, 0.0)
            cal.release(ALICE, r.id, 0.0)
            lab.take_events()
        requests[n] = request
    heap.freeze_state()          # as the daemon does after a restart
    try:
        check, req = _side_by_side(checks, rounds), _side_by_side(requests, rounds)
    finally:
        gc.unfreeze()
    return [{"bookings": n, "check_available_us": check[n],
             "configured_request_release_us": req[n], "first_search_ms": first_ms[n]}
            for n in SIZES]


def many_resources(n: int = 10_000, rounds: int = 200) -> list[dict]:
    from atsd.commands import Call, DaemonIO, load_all
    from atsd.config import Config
    from atsd.app import App
    from atsd.eventlog import EventLog
    commands = load_all()
    cfg = Config(resources=[ResourceDef(f"gpus/{i}", "gpus", slots=4) for i in range(n)])
    app = App(cfg, EventLog(10, 0, []))
    call = Call(app, ALICE, 0.0, DaemonIO(lambda: 0.0, {}, None, dict, dict))
    listing = _per_call(lambda: commands["list_resources"].func(call, None, None, None), 20)

    def checkout():
        reply = commands["checkout"].func(call, request=[{"type": "gpus", "slots": 2}],
                                          lease_s=60.0, wait_s=0.0, priority=0)
        commands["checkin"].func(call, allocation_id=reply["allocation_id"])
        app.lab.take_events()
    out = _per_call(checkout, rounds)
    return [{"resources": n, "list_resources_ms": listing / 1000,
             "checkout_checkin_ms": out / 1000}]


def run() -> dict:
    rows = bookings()
    table("One resource with N bookings (microseconds per call)", rows,
          ["bookings", "search_us", "request_release_us"])
    ratio_search = rows[-1]["search_us"] / rows[0]["search_us"]
    ratio_request = rows[-1]["request_release_us"] / rows[0]["request_release_us"]
    print(f"100k / 100 bookings: search {ratio_search:.2f}x, request {ratio_request:.2f}x "
          f"(target <= 2x)")
    packed = dense()
    table("One board with N dense mixed bookings (microseconds per call)", packed,
          ["bookings", "check_available_us", "configured_request_release_us",
           "first_search_ms"])
    dense_search = packed[-1]["check_available_us"] / packed[0]["check_available_us"]
    dense_request = (packed[-1]["configured_request_release_us"]
                     / packed[0]["configured_request_release_us"])
    print(f"dense, 100k / 100 bookings: check_available {dense_search:.2f}x, configured "
          f"request {dense_request:.2f}x (target <= 2x)")
    wide = many_resources()
    table("10k resources", wide, ["resources", "list_resources_ms", "checkout_checkin_ms"])
    return {"bookings": rows, "ratio_search": ratio_search, "ratio_request": ratio_request,
            "dense": packed, "dense_ratio_check_available": dense_search,
            "dense_ratio_request": dense_request, "many_resources": wide, "target": 2}


if __name__ == "__main__":
    save("scaling", run())
