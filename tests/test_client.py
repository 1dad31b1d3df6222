"""The client library as scripts use it: ResourceReservation, the async client, retries."""

import asyncio
import logging
import time

import msgpack
import pytest
import zmq
import zmq.asyncio

from atsclient import (AsyncATSClient, ATSClient, InternalError, ResourceReservation,
                       ResourceUnavailable, Unreachable)


def test_resource_reservation_holds_and_releases(daemon, client):
    with ResourceReservation("dut-2", client, max_wait=30, duration=60) as res:
        assert res.reservation_id
        rows = client.list_reservations(resource="dut-2")
        assert [r["kind"] for r in rows] == ["claimed"]
    assert client.list_reservations(resource="dut-2") == []


def test_resource_reservation_releases_on_exception(client):
    with pytest.raises(RuntimeError):
        with ResourceReservation("dut-2", client, duration=60):
            raise RuntimeError("test failed")
    assert client.list_reservations(resource="dut-2") == []


def test_resource_reservation_waits_for_the_window(daemon, client):
    with daemon.client("bob") as bob:
        held, _, bob_end = bob.request_reservation("scope-1", reservation_duration=0.5)
        bob.claim_reservation(held)
    with ResourceReservation("scope-1", client, max_wait=10, duration=5) as res:
        assert time.time() >= bob_end             # it waited for bob's to end
        assert res.reservation_id and res.start_time >= bob_end


def test_resource_reservation_gives_up_after_max_wait(daemon, client):
    with daemon.client("bob") as bob:
        bob.request_reservation("scope-1", reservation_duration=3600)
    with pytest.raises(ResourceUnavailable):
        with ResourceReservation("scope-1", client, max_wait=1, duration=5):
            pass
    assert [r["owner"] for r in client.list_reservations(resource="scope-1")] == ["bob"]


async def test_async_client_many_in_flight(daemon):
    async with AsyncATSClient(daemon.listen, user="carol") as c:
        replies = await asyncio.gather(*[
            c.request_reservation("build-1", reservation_mode="shared",
                                  time_needed=time.time() + i * 10, reservation_duration=5)
            for i in range(50)])
        assert len({r[0] for r in replies}) == 50
        rows = await c.list_reservations(owner="carol")
        assert len(rows) == 50


async def test_async_client_unreachable(tmp_path):
    nobody = f"ipc://{tmp_path}/nobody-listens-here"
    async with AsyncATSClient(nobody, timeout=0.1, retries=2) as c:
        with pytest.raises(Unreachable, match="nobody-listens-here after 2 tries"):
            await c.get_version()


async def test_async_client_outlives_malformed_replies(tmp_path, caplog):
    """A ROUTER of the test's answers two requests in flight after sending junk: bytes that
    are not msgpack, a list, a map whose request_id is a list. The client drops each (and
    logs it), still gets the good reply, and the waiting request whose reply is not a
    reply's shape fails at once instead of timing out."""
    ctx = zmq.asyncio.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    router.bind(f"ipc://{tmp_path}/router")
    caplog.set_level(logging.WARNING, logger="atsclient.client")
    async with AsyncATSClient(f"ipc://{tmp_path}/router", timeout=30, retries=1) as c:
        first = asyncio.ensure_future(c.get_version())
        second = asyncio.ensure_future(c.call("list_queues"))
        requests = [await router.recv_multipart() for _ in range(2)]
        ids = {msgpack.unpackb(r[-1])["command"]: msgpack.unpackb(r[-1])["request_id"]
               for r in requests}
        peer = requests[0][0]
        for junk in (b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"request_id": [1]})):
            await router.send_multipart([peer, b"", junk])
        await router.send_multipart([peer, b"", msgpack.packb(
            {"ok": True, "request_id": ids["list_queues"], "queues": []})])
        await router.send_multipart([peer, b"", msgpack.packb(
            {"ok": "yes", "request_id": ids["get_version"]})])
        assert (await asyncio.wait_for(second, 5))["queues"] == []
        with pytest.raises(InternalError, match="malformed"):
            await asyncio.wait_for(first, 5)
    router.close()
    assert len(caplog.records) == 4


def test_sync_client_unreachable_with_every_retry(tmp_path):
    """A send with no connection up must not block: each try is bounded by the timeout."""
    nobody = f"ipc://{tmp_path}/nobody-listens-here"
    c = ATSClient(nobody, timeout=0.1, retries=3)
    with pytest.raises(Unreachable, match="after 3 tries of 0.1s"):
        c.get_version()
    c.close()


def test_retry_survives_a_daemon_restart_mid_call(daemon):
    """Lazy Pirate: the daemon dies before answering; the retry reaches the new one."""
    c = daemon.client(timeout=1.0, retries=10)
    assert c.get_version()["protocol"] == 1
    daemon.kill()

    import threading
    restarted = threading.Thread(target=daemon.start)
    restarted.start()
    pre, _, _ = c.request_reservation("dut-2", reservation_duration=60)
    restarted.join()
    assert [r["id"] for r in c.list_reservations(resource="dut-2")] == [pre]
    c.close()
