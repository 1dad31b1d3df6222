"""Crash torture, the short form (bench/torture.py runs it for hours): client processes do
random request/claim/release/extend/checkout/checkin, the daemon is SIGKILLed at random
moments and restarted on the same ports, and an independent checker compares what every
client was told with what the daemon holds and has published."""

import os
import random

import pytest

from bench.torture import run

DURATION_S = 12


@pytest.mark.timeout(180)
def test_nothing_acknowledged_is_lost_across_kills(tmp_path):
    seed = int(os.environ.get("ATSD_TORTURE_SEED", random.randrange(1 << 30)))
    result = run(tmp_path, DURATION_S, clients=4, seed=seed)
    v = result.verdict
    about = (f"seed {seed} (ATSD_TORTURE_SEED), {len(result.kills)} kills, {v.ops} operations, "
             f"logs in {tmp_path}")
    assert not v.violations, about + ":\n" + "\n".join(v.violations[:30])
    # the run did what it is for: kills under load, answers that crossed a restart, both
    # within one call (Lazy Pirate) and after a call gave up, and repeated request_ids
    assert len(result.kills) >= 5, about
    assert v.ops >= 1000 and len(v.booked) >= 300, about
    assert v.across >= 1 and v.retried >= 1 and v.dups >= 10, about
    for command in ("request_reservation", "claim_reservation", "release_reservation",
                    "extend_reservation", "checkout", "checkin"):
        assert v.by_command.get(command, 0) >= 5, (command, about)
