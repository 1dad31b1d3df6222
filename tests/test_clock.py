"""A wall-clock jump: logged with its size, and the expiries it brings due published as
such. The daemon reads the wall clock once per wake-up and hands it to ``step``; the test
hands it a reading an hour ahead, as a clock set forward would give."""

from __future__ import annotations

import asyncio
import time

import yaml

from atsd import config as configmod
from atsd.engine.lab import Caller
from atsd.server import Server


def test_jump_forward_expires_what_fell_due_and_says_so(tmp_path):
    path = tmp_path / "atsd.yaml"
    path.write_text(yaml.safe_dump({"resources": [{"name": "dut-1"}, {"name": "dut-2"},
                                                  {"name": "gpus/0", "type": "gpus"}],
                                    "listen": "tcp://127.0.0.1:*",
                                    "events": "tcp://127.0.0.1:*", "claim_window_s": 300}))
    cfg = configmod.load(path)
    configmod.resolve_job_user(cfg)
    server = Server(cfg)

    async def run():
        server.bind()
        now = time.time()
        lapsing = server.app.calendar.request(Caller("alice"), ["dut-1"], now, 600, None,
                                              "exclusive", False, None, now)
        later = server.app.calendar.request(Caller("alice"), ["dut-2"], now + 7200, 600,
                                            None, "exclusive", False, None, now)
        held = server.app.pool.checkout(Caller("alice"), [("gpus", 1)], 7200, now)
        waiter = server.app.pool.checkout(Caller("bob"), [("gpus", 1)], 60, now, wait_s=30)
        server.step(now)
        seq = server.app.events.last_seq
        server.step(time.time() + 3600)         # the wall clock, set an hour forward
        events = server.app.events.since(seq, None, 100)["events"]
        assert [(e["reservation_id"], e["reservation_status"]) for e in events] == \
            [(lapsing.id, "RESERVATION_ENDED")]
        assert events[0]["reason"] == "lapsed"
        assert abs(events[0]["clock_jump_s"] - 3600) < 5
        assert server.app.lab.reservations[later.id].state == "RESERVATION_GRANTED"
        # a wait is a duration: still waiting after the jump, to the same monotonic end
        assert server.app.pool.waiters == [waiter] and waiter.result is None
        assert waiter.deadline - time.time() > 3600 + 20
        assert held.state == "RESERVATION_ACTIVE"
        seq = server.app.events.last_seq
        server.step(time.time() + 3600)         # still an hour ahead: no new jump
        assert server.app.events.last_seq == seq
        server.vitals.detach()
        for sock in (server.monitor_socket, server.router, server.pub):
            sock.close(0)
        server.ctx.term()
        server.store.close()
    asyncio.run(run())
