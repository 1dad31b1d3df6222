"""The gap-free Subscriber against a real daemon whose PUB drops: bursts, restarts, topics."""

import asyncio
import threading

import zmq

from atsclient import AsyncATSClient
from atsclient.events import Subscriber
from daemon import BASE_CONFIG, wait_for

# the daemon queues few events per subscriber and the subscriber takes in one at a time,
# so a subscriber that does not keep up loses events on the way and must fetch them
LOSSY = dict(BASE_CONFIG, event_hwm=50)
TINY = {zmq.RCVHWM: 1, zmq.RCVBUF: 1024}


async def burst(daemon, n, clients=4, in_flight=50):
    """``n`` events, one per set_resource_values, from several clients with many requests
    in flight each."""
    conns = [AsyncATSClient(daemon.listen, user="labadmin") for _ in range(clients)]
    gates = [asyncio.Semaphore(in_flight) for _ in conns]

    async def one(i):
        async with gates[i % clients]:
            await conns[i % clients].set_resource_values({"dut-1": (i % 101) / 100})
    try:
        await asyncio.gather(*[one(i) for i in range(n)])
    finally:
        for c in conns:
            await c.close()


async def collect(sub, until_seq):
    seqs = []
    async for event in sub:
        seqs.append(event["seq"])
        if event["seq"] >= until_seq:
            return seqs


async def last_seq(daemon):
    async with AsyncATSClient(daemon.listen, user="x") as c:
        return (await c.get_events(0, limit=1))["last_seq"]


async def test_burst_is_yielded_once_in_order_despite_drops(daemon_factory):
    daemon = daemon_factory(LOSSY)
    start = await last_seq(daemon)
    async with Subscriber(daemon.listen, daemon.events, sockopts=TINY, user="x") as sub:
        await burst(daemon, 5000)               # subscribed but not reading: PUB drops
        reader = asyncio.create_task(collect(sub, start + 10_000))
        await burst(daemon, 5000)               # reading while it comes
        seqs = await asyncio.wait_for(reader, 30)
    assert seqs == list(range(start + 1, start + 10_001))
    assert sub.fetched > 0 and sub.lost == []


async def test_subscriber_follows_a_restart_and_seq_continues(daemon_factory):
    daemon = daemon_factory(LOSSY)
    async with Subscriber(daemon.listen, daemon.events, sockopts=TINY, user="x",
                          idle_check_s=0.2) as sub:
        start = sub.last_seq
        await burst(daemon, 300)
        before = await collect(sub, start + 300)
        await burst(daemon, 200)                # published, not yet read, when it dies
        daemon.restart(kill=True)
        await burst(daemon, 300)
        end = await last_seq(daemon)
        assert end == start + 800               # numbering went on where it was
        after = await asyncio.wait_for(collect(sub, end), 20)
    assert before + after == list(range(start + 1, end + 1))


async def test_topic_subset_is_gap_free_among_other_topics(daemon_factory):
    daemon = daemon_factory(LOSSY)
    async with AsyncATSClient(daemon.listen, user="alice") as alice:
        async with Subscriber(daemon.listen, daemon.events, ["resource.values"],
                              sockopts=TINY, user="x", idle_check_s=0.2) as sub:
            start = sub.last_seq

            gate = asyncio.Semaphore(30)

            async def noise(i):                 # reservation.status events between
                async with gate:
                    pre, _, _ = await alice.request_reservation("build-1", slots=1,
                                                                reservation_mode="shared")
                    await alice.release_reservation(pre)
            await asyncio.gather(burst(daemon, 1000), *[noise(i) for i in range(100)])
            wanted = []
            since = start
            while True:
                page = await alice.get_events(since, ["resource.values"], 10_000)
                wanted += [e["seq"] for e in page["events"]]
                if len(page["events"]) < 10_000:
                    break
                since = wanted[-1]
            assert len(wanted) == 1000
            got = await asyncio.wait_for(collect(sub, wanted[-1]), 20)
    assert got == wanted


def test_run_calls_back_until_stopped(daemon_factory):
    daemon = daemon_factory()
    sub = Subscriber(daemon.listen, daemon.events, ["resource.values"], user="x",
                     since_seq=0, idle_check_s=0.2)
    seen = []

    def callback(event):
        seen.append(event["nodelist"][0]["value"])
        if len(seen) == 3:
            sub.stop()
    with daemon.client("labadmin") as admin:
        for v in (0.1, 0.2, 0.3, 0.4):
            admin.set_resource_values({"dut-2": v})
    thread = threading.Thread(target=sub.run, args=(callback,), daemon=True)
    thread.start()
    wait_for(lambda: not thread.is_alive(), 10, what="run to return after stop")
    assert seen == [0.1, 0.2, 0.3]
