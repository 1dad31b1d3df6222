"""atsclient's kissats methods as kissats' docstrings state them, against a real daemon.

BaseATSClient's ``request_reservation`` and ``claim_reservation`` say ``Raises:
ResourceUnavailable``; ``server_communicate`` says ``Raises: ServerCommandMissing``;
``get_resource_config`` returns "the current configuration of the resource";
``claim_reservation``: "If the reservation is claimed late and will not be available for the
entire reservation_duration an exception will be raised. If claimed late and another slot
is available a new pre-reservation will be provided". ResourceReservation's ``start_time``
is now and ``end_time`` an hour later until a request sets them.
"""

import time

import pytest

from atsclient import (BadRequest, ResourceReservation, ResourceUnavailable,
                       ServerCommandMissing)
from daemon import wait_for


def test_every_refusal_of_request_and_claim_is_resource_unavailable(daemon):
    with daemon.client("alice") as alice, daemon.client("bob") as bob:
        with pytest.raises(ResourceUnavailable):
            alice.request_reservation("no-such-board")               # not_found
        with pytest.raises(ResourceUnavailable):
            alice.claim_reservation("no-such-id")                    # not_found
        later, _, _ = alice.request_reservation("dut-2", time_needed=time.time() + 600)
        with pytest.raises(ResourceUnavailable):
            alice.claim_reservation(later)                           # too_early
        with pytest.raises(ResourceUnavailable):
            bob.claim_reservation(later)                             # forbidden: alice's
        now, _, _ = alice.request_reservation("scope-1")
        alice.claim_reservation(now)
        with pytest.raises(ResourceUnavailable):
            alice.claim_reservation(now)                             # conflict: claimed
        with pytest.raises(ResourceUnavailable):
            alice.request_reservation("scope-1", next_available=False)   # unavailable


def test_server_communicate_without_command_raises_server_command_missing(daemon):
    with daemon.client("alice") as alice:
        with pytest.raises(ServerCommandMissing):
            alice.server_communicate({"resource": "dut-1"})
        assert issubclass(ServerCommandMissing, BadRequest)
        assert alice.server_communicate({"command": "get_version"})["protocol"] == 1


def test_get_resource_config_returns_the_configuration_itself(daemon):
    with daemon.client("alice") as alice:
        assert alice.get_resource_config("dut-1") == {"firmware": "v1"}


def claimable(t):
    wait_for(lambda: time.time() > t, 5, what="time_available to pass")


def test_a_claim_after_time_available_gets_the_whole_duration(daemon_factory):
    d = daemon_factory({"resources": [{"name": "r1"}], "claim_window_s": 60})
    with d.client("alice") as alice:
        pre, available, _ = alice.request_reservation("r1", time_needed=time.time() + 0.2,
                                                      reservation_duration=30)
        claimable(available + 0.3)
        claimed_at = time.time()
        reply = alice.claim_reservation(pre)
        # the end moved: 30 s from the claim, not from time_available
        assert reply["reservation_id"] == pre
        assert reply["expire_time"] >= claimed_at + 30 - 0.05
        assert reply["expire_time"] > available + 30 + 0.25
        [row] = alice.list_reservations()
        assert row["end_time"] == reply["expire_time"]


def test_a_late_claim_that_no_longer_fits_gets_a_new_offer(daemon_factory):
    d = daemon_factory({"resources": [{"name": "r1"}], "claim_window_s": 60})
    with d.client("alice") as alice, d.client("bob") as bob:
        pre, available, _ = alice.request_reservation("r1", time_needed=time.time() + 0.2,
                                                      reservation_duration=30)
        _, bobs_start, _ = bob.request_reservation("r1")                 # right after it
        assert bobs_start == pytest.approx(available + 30)
        claimable(available + 0.3)
        offer = alice.claim_reservation(pre)
        assert "reservation_id" not in offer
        assert offer["pre_reservation_id"] != pre
        assert offer["new_avail"] >= bobs_start + 3600 - 0.01         # after bob's hour
        assert {r["id"] for r in alice.list_reservations(owner="alice")} == {
            offer["pre_reservation_id"]}                               # the old one is gone


def test_resource_reservation_name_and_default_times(daemon):
    with daemon.client("alice") as alice:
        before = time.time()
        res = ResourceReservation("dut-2", alice)
        assert res.name == res.resource_name == "dut-2"
        assert before <= res.start_time <= time.time()
        assert res.start_time == res.start_time                     # fixed once read
        assert res.end_time == res.start_time + 3600
        avail = res.get_next_avail_time()
        assert avail["available"] is True
        assert (avail["avail_start"], avail["avail_end"]) == (res.start_time, res.end_time)

