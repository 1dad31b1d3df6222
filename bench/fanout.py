"""Fan-out: 1, 10 and 50 subscribers while events are published at a steady rate. Each is an
``atsclient.Subscriber``; it counts events that arrived live, those it recovered through
``get_events`` after a gap, and any lost for good (target: none lost).

    python bench/fanout.py [--rate 1000] [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import time

from common import save, start_daemon, table

SUBSCRIBERS = (1, 10, 50)


def _subscribers(endpoint: str, events: str, n: int, first: int, last_q: mp.Queue,
                 out: mp.Queue) -> None:
    from atsclient.events import Subscriber

    class Counting(Subscriber):
        live = 0

        async def _live(self, event):
            self.live += 1
            await super()._live(event)

    async def follow(sub, seqs):
        async for event in sub:
            seqs.append(event["seq"])

    async def main():
        subs = [Counting(endpoint, events, since_seq=first, idle_check_s=0.5)
                for _ in range(n)]
        for s in subs:
            await s._open()
        out.put("ready")
        seqs = [[] for _ in subs]
        tasks = [asyncio.create_task(follow(s, q)) for s, q in zip(subs, seqs, strict=True)]
        last = await asyncio.get_running_loop().run_in_executor(None, last_q.get)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(not q or q[-1] < last for q in seqs):
            await asyncio.sleep(0.05)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        out.put([(q, s.live, s.lost) for q, s in zip(seqs, subs, strict=True)])
        for s in subs:
            await s.aclose()
    asyncio.run(main())


def _publish(endpoint: str, rate: float, seconds: float) -> int:
    """request+release pairs (two events each) at ``rate`` events/s; the last seq."""
    from atsclient import ATSClient
    c = ATSClient(endpoint, user="publisher")
    t0 = time.perf_counter()
    n = 0
    while (elapsed := time.perf_counter() - t0) < seconds:
        if n < elapsed * rate:
            pre, _, _ = c.request_reservation("pool", reservation_mode="shared",
                                              reservation_duration=60)
            c.release_resource(pre)
            n += 2
        else:
            time.sleep(0.0005)
    last = c.get_events(0, limit=1)["last_seq"]
    c.close()
    return last


def run(rate: float = 1000.0, seconds: float = 3.0) -> dict:
    d = start_daemon({"resources": [{"name": "pool", "type": "pool", "slots": 1000}]}, "fanout")
    rows = []
    try:
        from atsclient import ATSClient
        with ATSClient(d.listen) as c:
            first = c.get_events(0, limit=1)["last_seq"]
        for n in SUBSCRIBERS:
            last_q, out = mp.Queue(), mp.Queue()
            proc = mp.Process(target=_subscribers, args=(d.listen, d.events, n, first, last_q, out))
            proc.start()
            assert out.get(timeout=60) == "ready"
            last = _publish(d.listen, rate, seconds)
            last_q.put(last)
            results = out.get(timeout=120)
            proc.join()
            expected = list(range(first + 1, last + 1))
            exact = sum(seqs == expected for seqs, _, _ in results)
            delivered = sum(len(seqs) for seqs, _, _ in results)
            live = sum(lv for _, lv, _ in results)
            lost = sum(len(expected) - len(set(seqs)) for seqs, _, _ in results)
            rows.append({"subscribers": n, "events_each": len(expected),
                         "delivered": delivered, "live": live,
                         "recovered": delivered - min(live, delivered), "lost": lost,
                         "exactly_once_in_order": f"{exact}/{n}"})
            first = last
    finally:
        d.stop()
    table(f"Fan-out at {rate:g} events/s for {seconds:g} s", rows,
          ["subscribers", "events_each", "delivered", "live", "recovered", "lost",
           "exactly_once_in_order"])
    return {"results": rows, "rate": rate, "seconds": seconds, "target_lost": 0}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--seconds", type=float, default=3.0)
    a = p.parse_args()
    save("fanout", run(a.rate, a.seconds))
