"""The Compute Queue Reservation capability's status-change events, against a real daemon.

CQR: a reservation is RESERVATION_GRANTED, then RESERVATION_ACTIVE, then RESERVATION_ENDED,
and a client learns of each change from status-change events. atsd publishes them on
``reservation.status`` with every other kind of reservation; ``kind == "batch"`` is the
documented filter (docs/cqr.md) that follows batch reservations alone.
"""

import asyncio
import time

from atsclient import AsyncATSClient
from atsclient.events import Subscriber
from daemon import JOB_USER

CONFIG = {"resources": [{"name": "scope-1", "type": "scope"}],
          "queues": {"q": {"backend": "local", "hosts": ["h1", "h2"]}},
          "jobs": {"run_as": JOB_USER}}


async def batch_events(sub, rids, until):
    """Status events of batch reservations, filtered as docs/cqr.md says, until every one
    of ``rids`` reached ``until``."""
    seen = []
    async for event in sub:
        if event["kind"] != "batch":
            continue
        seen.append(event)
        done = {e["reservation_id"] for e in seen if e["reservation_status"] == until}
        if done >= rids:
            return seen


async def test_a_batch_reservation_starting_at_once_is_granted_first(daemon_factory):
    daemon = daemon_factory(CONFIG)
    async with AsyncATSClient(daemon.listen, user="alice") as alice, \
            Subscriber(daemon.listen, daemon.events, ["reservation.status"],
                       client=alice) as sub:
        pre, _, _ = await alice.request_reservation("scope-1", reservation_duration=60)
        await alice.claim_reservation(pre)                     # not batch: filtered out
        now = await alice.create_reservation("q", 1, 0.5, start_time=time.time())
        later = await alice.create_reservation("q", 1, 0.5, start_time=time.time() + 0.3)
        rids = {now["reservation_id"], later["reservation_id"]}
        seen = await asyncio.wait_for(batch_events(sub, rids, "RESERVATION_ENDED"), 20)
        status = await alice.get_reservation_status(now["reservation_id"])
    assert status["reservation_status"] == "RESERVATION_ENDED"
    assert {e["reservation_id"] for e in seen} == rids
    for rid in rids:
        life = [(e["previous"], e["reservation_status"]) for e in seen
                if e["reservation_id"] == rid]
        assert life == [(None, "RESERVATION_GRANTED"),
                        ("RESERVATION_GRANTED", "RESERVATION_ACTIVE"),
                        ("RESERVATION_ACTIVE", "RESERVATION_ENDED")]
