"""The slot pool at simulated times: placement, leases, the wait queue, and never a slot
handed out twice, whatever mix of checkouts, checkins and calendar bookings."""

from collections import Counter

import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from atsd.engine import states
from atsd.engine.calendar import Calendar
from atsd.engine.errors import Conflict, EngineError, Forbidden, Unavailable
from atsd.engine.lab import Caller, Lab, ResourceDef
from atsd.engine.pool import MAX_BYPASS, Pool, Waiter
from atsd.engine.revocation import Revocations
from atsd.engine.service import ADMIN as BY_ADMIN, Service
from test_placement import brute_force_fits

ALICE, BOB, ADMIN = Caller("alice"), Caller("bob"), Caller("root", admin=True)


def make_pool(gpus=(4, 4, 4, 4), cpus=(8,)):
    defs = ([ResourceDef(f"gpus/{i}", "gpus", n) for i, n in enumerate(gpus)]
            + [ResourceDef(f"cpus/{i}", "cpus", n) for i, n in enumerate(cpus)]
            + [ResourceDef("dut-1", "dut")])          # not TYPE/ID: not in the pool
    lab = Lab(defs)
    return lab, Pool(lab), Calendar(lab)


def over_allocated(lab):
    """Every place where bookings hold more slots than exist, or an exclusive booking
    overlaps another; [] when the lab is consistent."""
    bad = []
    for res in lab.resources.values():
        bookings = list(res.timeline)
        for b in bookings:
            others = [o for o in bookings if o is not b and o.start < b.end and o.end > b.start]
            if b.exclusive and others:
                bad.append((res.name, "exclusive overlaps", b.reservation_id))
            used = sum(o.slots for o in bookings if o.start <= b.start < o.end)
            if used > res.slots:
                bad.append((res.name, b.start, used, res.slots))
    return bad


def test_checkout_shape_and_placement_follow_ctest():
    lab, pool, _ = make_pool()
    r = pool.checkout(ALICE, [("gpus", 2)] * 4, 60, now=0)
    assert r.kind == "allocation" and r.state == states.ACTIVE and (r.start, r.end) == (0, 60)
    assert r.extra["resources"] == {"gpus": [{"id": str(i), "slots": 2} for i in range(4)]}
    # two requirements on one instance are one booking with their slots summed
    r2 = pool.checkout(ALICE, [("gpus", 1), ("cpus", 3), ("gpus", 1)], 60, now=0)
    assert r2.extra["resources"] == {"gpus": [{"id": "0", "slots": 1}, {"id": "1", "slots": 1}],
                                     "cpus": [{"id": "0", "slots": 3}]}
    assert sorted((b.resource, b.slots, b.exclusive) for b in r2.bookings) == [
        ("cpus/0", 3, False), ("gpus/0", 1, False), ("gpus/1", 1, False)]
    assert pool.get_pool(1) == {"additional_properties": {}, "resources": {
        "gpus": [{"id": "0", "slots": 1, "total": 4}, {"id": "1", "slots": 1, "total": 4},
                 {"id": "2", "slots": 2, "total": 4}, {"id": "3", "slots": 2, "total": 4}],
        "cpus": [{"id": "0", "slots": 5, "total": 8}]}}


def test_ctest_refuses_what_totals_would_allow():
    lab = Lab([ResourceDef(f"gpus/{i}", "gpus", n) for i, n in enumerate((24, 57, 61, 51))])
    pool = Pool(lab)
    ok, reason = pool.accommodates([("gpus", n) for n in (66, 11, 34, 21)], 60, now=0)
    assert not ok and "never fit" in reason
    with pytest.raises(Unavailable, match="never fit"):
        pool.checkout(ALICE, [("gpus", n) for n in (66, 11, 34, 21)], 60, 0, wait_s=100)
    assert pool.waiters == []                       # never fits: not queued


def test_accommodates_reasons():
    _, pool, _ = make_pool()
    ok, reason = pool.accommodates([("fpga", 1), ("gpus", 1)], 60, 0)
    assert (ok, reason) == (False, "missing types: fpga")
    pool.checkout(ALICE, [("gpus", 4)] * 3, 60, 0)
    ok, reason = pool.accommodates([("gpus", 4), ("gpus", 2)], 60, 0)
    assert not ok and reason == "gpus: requested 6 slots, 4 available"
    assert pool.accommodates([("gpus", 4)], 60, 0) == (True, "")


def test_lease_expires_checkin_rights_and_extend():
    lab, pool, cal = make_pool()
    r = pool.checkout(ALICE, [("cpus", 8)], 10, now=0)
    with pytest.raises(Forbidden):
        pool.checkin(BOB, r.id, 1)
    cal.extend(ALICE, r.id, 5, now=1)                # extend_reservation renews a lease
    lab.advance(14)
    assert r.state == states.ACTIVE
    lab.advance(15)
    assert (r.state, r.reason) == (states.ENDED, "expired")
    with pytest.raises(Conflict):
        pool.checkin(ALICE, r.id, 16)
    r2 = pool.checkout(ALICE, [("cpus", 1)], 10, now=16)
    pool.checkin(ADMIN, r2.id, 17)
    assert r2.reason == "released"
    statuses = [(e.payload["reservation_id"], e.payload["reason"]) for e in lab.take_events()
                if e.payload["reservation_status"] == states.ENDED]
    assert statuses == [(r.id, "expired"), (r2.id, "released")]
    pre = cal.request(ALICE, ["dut-1"], 0, 10, None, "exclusive", True, None, now=20)
    with pytest.raises(Conflict):
        pool.checkin(ALICE, pre.id, 21)              # not an allocation


def test_calendar_and_checkout_never_collide():
    lab, pool, cal = make_pool(gpus=(1, 1))
    pre = cal.request(ALICE, ["gpus/0"], 50, 100, None, "exclusive", True, None, now=0)
    # a lease that reaches the calendar booking cannot use gpus/0
    r = pool.checkout(BOB, [("gpus", 1)], 60, now=0)
    assert r.extra["resources"] == {"gpus": [{"id": "1", "slots": 1}]}
    with pytest.raises(Unavailable):
        pool.checkout(BOB, [("gpus", 1)], 60, now=0)
    short = pool.checkout(BOB, [("gpus", 1)], 40, now=0)   # ends before it: fits
    assert short.extra["resources"] == {"gpus": [{"id": "0", "slots": 1}]}
    # and the calendar cannot book over a checkout: the next window is after the lease
    later = cal.request(ALICE, ["gpus/1"], 0, 10, None, "exclusive", True, None, now=0)
    assert later.start == 60
    assert over_allocated(lab) == []
    assert pre.state == states.GRANTED


def test_waiters_by_priority_then_arrival_and_deadline():
    lab, pool, _ = make_pool(gpus=(1,), cpus=())
    holder = pool.checkout(ALICE, [("gpus", 1)], 100, now=0)
    w1 = pool.checkout(ALICE, [("gpus", 1)], 10, 1, wait_s=50)
    w2 = pool.checkout(BOB, [("gpus", 1)], 10, 2, wait_s=50, priority=5)
    w3 = pool.checkout(BOB, [("gpus", 1)], 10, 3, wait_s=50, priority=5)
    w4 = pool.checkout(BOB, [("gpus", 1)], 10, 4, wait_s=5)
    assert [w.id for w in pool.waiters] == [w2.id, w3.id, w1.id, w4.id]
    lab.advance(9)
    assert "waited 5s" in w4.result.message and isinstance(w4.result, Unavailable)
    pool.checkin(ALICE, holder.id, 10)              # frees the one gpu: w2 first
    assert w2.result.state == states.ACTIVE and w3.result is None
    lab.advance(20)                                 # w2's lease ends: w3
    assert w3.result.state == states.ACTIVE and w3.result.start == 20
    lab.advance(30)
    assert w1.result.start == 30 and w1.result.owner == "alice"
    assert pool.waiters == []


def test_notify_is_called_once_with_the_waiter():
    lab, pool, _ = make_pool(gpus=(1,), cpus=())
    holder = pool.checkout(ALICE, [("gpus", 1)], 100, now=0)
    w = pool.checkout(BOB, [("gpus", 1)], 10, 1, wait_s=50)
    seen = []
    w.notify = seen.append
    pool.checkin(ALICE, holder.id, 2)
    lab.advance(60)
    assert seen == [w] and w.result.owner == "bob"


def test_big_request_is_not_starved_by_small_ones():
    lab, pool, _ = make_pool(gpus=(1, 1, 1, 1), cpus=(1,))
    pool.checkout(ALICE, [("gpus", 1)], 10, now=0)
    big = pool.checkout(BOB, [("gpus", 1)] * 4, 10, 0, wait_s=10_000)
    assert isinstance(big, Waiter)
    overtook = 0
    t = 0
    while big.result is None:
        t += 1
        lab.advance(t)
        try:                                        # a stream of small ones, all the time
            pool.checkout(ALICE, [("gpus", 1)], 10, now=t)
            overtook += 1
        except Unavailable as e:
            assert "passed over" in str(e) or "available" in str(e)
        pool.checkout(ALICE, [("cpus", 1)], 0.5, now=t)      # other types are not held back
        assert t < 100
    assert overtook == MAX_BYPASS
    assert big.result.extra["resources"]["gpus"] == [{"id": str(i), "slots": 1}
                                                     for i in range(4)]
    ok, reason = pool.accommodates([("gpus", 1)], 10, t)
    assert not ok


def test_higher_priority_still_goes_before_a_starving_waiter():
    lab, pool, _ = make_pool(gpus=(1, 1), cpus=())
    pool.checkout(ALICE, [("gpus", 1)], 10, now=0)
    big = pool.checkout(BOB, [("gpus", 1)] * 2, 10, 0, wait_s=1000)
    for t in range(MAX_BYPASS):                     # small ones pass it over until it starves
        pool.checkout(ALICE, [("gpus", 1)], 0.5, now=t)
        lab.advance(t + 0.5)
    assert big.bypassed == MAX_BYPASS and big.result is None
    with pytest.raises(Unavailable, match="passed over"):
        pool.checkout(ALICE, [("gpus", 1)], 1, now=MAX_BYPASS)
    assert pool.checkout(ALICE, [("gpus", 1)], 1, now=MAX_BYPASS, priority=1).state == states.ACTIVE


def test_many_waits_end_in_deadline_order_each_waiter_tried_once():
    """Thousands of waits ending in one advance: each waiter is answered in deadline order
    (then arrival) and costs one placement of its own, not a pass over the queue."""
    import random
    lab, pool, _ = make_pool(gpus=(1,), cpus=())
    pool.checkout(ALICE, [("gpus", 1)], 1000, now=0)
    rng = random.Random(7)
    answered = []
    waiters = []
    for i in range(3000):
        w = pool.checkout(Caller(f"u{i % 10}"), [("gpus", 1)], 10, now=0,
                          wait_s=rng.choice([5, 6, 7]),
                          priority=rng.randint(0, 3))
        w.notify = answered.append
        waiters.append(w)
    offers = []
    offer = pool._offer
    pool._offer = lambda *args: offers.append(args) or offer(*args)
    lab.advance(100)
    assert len(offers) == len(waiters)
    assert answered == sorted(waiters, key=lambda w: w.deadline)    # stable: arrival
    assert all(isinstance(w.result, Unavailable) and "gpus: requested 1" in w.result.message
               for w in waiters)
    assert list(pool.waiters) == [] and dict(lab.held) == {"alice": 1}


def test_advance_with_a_limit_leaves_the_rest_due_in_order():
    lab, pool, _ = make_pool(gpus=(1,), cpus=())
    pool.checkout(ALICE, [("gpus", 1)], 1000, now=0)
    waiters = [pool.checkout(BOB, [("gpus", 1)], 10, now=0, wait_s=5 + i) for i in range(5)]
    lab.advance(100, limit=2)
    assert [w.result is not None for w in waiters] == [True, True, False, False, False]
    assert lab.next_deadline() == 7
    lab.advance(100)
    assert all(isinstance(w.result, Unavailable) for w in waiters)


def test_a_waiter_whose_slots_came_back_unannounced_is_granted_at_its_deadline():
    lab, pool, _ = make_pool(gpus=(1,), cpus=())
    lab.resources["gpus/0"].in_service = False
    w = pool.checkout(BOB, [("gpus", 1)], 10, now=1, wait_s=9)
    lab.resources["gpus/0"].in_service = True       # no change the lab was told of
    lab.advance(9.5)
    assert w.result is None
    lab.advance(10)
    assert w.result.state == states.ACTIVE and w.result.start == 10


def test_restored_nodes_serve_the_waiting_checkouts_at_once():
    lab, pool, _ = make_pool(gpus=(1,), cpus=())
    revocations = Revocations(lab, countdown_interval_s=60)
    revocations.revoke(ADMIN, ["gpus/0"], 0, None, now=0)
    w = pool.checkout(BOB, [("gpus", 1)], 10, now=1, wait_s=9)
    assert w.result is None
    revocations.restore(ADMIN, ["gpus/0"], now=5)
    assert w.result.state == states.ACTIVE and w.result.start == 5


def test_a_resource_brought_up_serves_the_waiting_checkouts_at_once():
    lab, pool, _ = make_pool(gpus=(1,), cpus=())
    service = Service(lab, Revocations(lab, countdown_interval_s=60))
    service.set_state("gpus/0", False, "broken", BY_ADMIN, now=0)
    w = pool.checkout(BOB, [("gpus", 1)], 10, now=1, wait_s=9)
    assert w.result is None
    service.set_state("gpus/0", True, "fixed", BY_ADMIN, now=4)
    assert w.result.state == states.ACTIVE and w.result.start == 4


def test_a_starving_waiter_that_gives_up_lets_those_it_held_back_go():
    lab, pool, _ = make_pool(gpus=(1, 1), cpus=())
    pool.checkout(ALICE, [("gpus", 1)], 100, now=0)
    big = pool.checkout(BOB, [("gpus", 1)] * 2, 10, 0, wait_s=MAX_BYPASS + 1)
    for t in range(MAX_BYPASS):
        pool.checkout(ALICE, [("gpus", 1)], 0.5, now=t)
        lab.advance(t + 0.5)
    small = pool.checkout(ALICE, [("gpus", 1)], 1, now=MAX_BYPASS, wait_s=50)
    assert isinstance(small, Waiter) and small.result is None     # held back by big
    lab.advance(MAX_BYPASS + 1)
    assert isinstance(big.result, Unavailable)
    assert small.result.state == states.ACTIVE and small.result.start == MAX_BYPASS + 1


@given(st.lists(st.tuples(st.sampled_from(["gpus", "cpus", "fpga"]), st.integers(1, 9)),
                min_size=1, max_size=5),
       st.lists(st.tuples(st.sampled_from(["gpus", "cpus"]), st.integers(1, 4)), max_size=6))
def test_accommodates_agrees_with_checkout(request, held):
    lab, pool, _ = make_pool()
    for h in held:
        try:
            pool.checkout(ALICE, [h], 30, now=0)
        except Unavailable:
            pass
    ok, reason = pool.accommodates(request, 30, now=1)
    try:
        pool.checkout(BOB, request, 30, now=1)
        granted = True
    except Unavailable as e:
        granted = False
        assert str(e) == reason
    assert granted == ok


def naive_fits(lab, request, start, end):
    """Whether ``request`` ([(type, slots)]) fits over [start, end) by the plain rule: each
    instance's free slots are its slots less those of every live booking overlapping the
    window (more than their peak), none when it is down, and any assignment of requirements
    to instances that fits them will do. Stricter than the pool, never looser."""
    needs = {}
    for rtype, n in request:
        needs.setdefault(rtype, []).append(n)
    for rtype, wanted in needs.items():
        free = {}
        for res in lab.resources.values():
            if res.name.startswith(f"{rtype}/"):
                held = sum(b.slots for r in lab.reservations.values()
                           if r.state != states.ENDED for b in r.bookings
                           if b.resource == res.name and b.start < end and b.end > start)
                free[res.name] = res.slots - held if res.bookable else 0
        if not brute_force_fits(wanted, free):
            return False
    return True


class PoolMachine(RuleBasedStateMachine):
    """Checkouts (waiting or not, any priority), checkins, cancels, calendar bookings of the
    same instances, instances going down and up, and the clock, in any order: no slot is
    ever held twice, accommodates always agrees with checkout, every waiter is answered
    once, by its deadline, what fits by naive_fits is granted, at once or as soon as it fits
    while waiting, and a cancelled request neither waits nor holds anything."""

    def __init__(self):
        super().__init__()
        self.lab, self.pool, self.cal = make_pool(gpus=(2, 1, 3), cpus=(4, 4))
        self.service = Service(self.lab, Revocations(self.lab, countdown_interval_s=10))
        self.now = 0.0
        self.allocations = []
        self.bookings = []
        self.waiters = []
        self.answers = {}
        self.requests = 0
        self.cancelled = set()

    def _note(self, w):
        self.answers.setdefault(w.id, []).append(w.result)
        if not isinstance(w.result, EngineError):     # granted within its wait (a lease
            assert w.since <= w.result.start <= w.deadline    # moves after, with jumps)

    @rule(req=st.lists(st.tuples(st.sampled_from(["gpus", "cpus"]), st.integers(1, 4)),
                       min_size=1, max_size=3),
          lease=st.sampled_from([1.0, 5.0, 20.0]), wait=st.sampled_from([0.0, 0.0, 3.0, 30.0]),
          priority=st.integers(0, 2))
    def checkout(self, req, lease, wait, priority):
        ok, _ = self.pool.accommodates(req, lease, self.now, priority)
        fits = not self.pool.waiters and naive_fits(self.lab, req, self.now, self.now + lease)
        assert ok or not fits, "refused though it fits and nobody waits"
        self.requests += 1
        try:
            got = self.pool.checkout(ALICE, req, lease, self.now, wait, priority,
                                     f"req-{self.requests}")
        except Unavailable:
            assert not ok
            return
        if isinstance(got, Waiter):
            assert not ok
            got.notify = self._note
            self.waiters.append(got)
        else:
            assert ok
            self.allocations.append(got)

    @precondition(lambda self: self.allocations)
    @rule(i=st.integers(0, 100))
    def checkin(self, i):
        r = self.allocations[i % len(self.allocations)]
        if r.state == states.ENDED:
            with pytest.raises(Conflict):
                self.pool.checkin(ALICE, r.id, self.now)
        else:
            self.pool.checkin(ALICE, r.id, self.now)

    @rule(name=st.sampled_from(["gpus/0", "gpus/1", "gpus/2", "cpus/0"]),
          start=st.floats(0, 30), duration=st.floats(0.5, 20),
          mode=st.sampled_from(["exclusive", "shared"]), slots=st.integers(1, 2))
    def book(self, name, start, duration, mode, slots):
        try:
            r = self.cal.request(BOB, [name], self.now + start, duration, None, mode, False,
                                 slots, self.now)
        except Unavailable:
            return
        if r.start <= self.now:
            self.cal.claim(BOB, r.id, self.now)
        self.bookings.append(r)

    @precondition(lambda self: self.bookings)
    @rule(i=st.integers(0, 100))
    def release(self, i):
        r = self.bookings[i % len(self.bookings)]
        if r.state != states.ENDED:
            self.cal.release(BOB, r.id, self.now)

    @precondition(lambda self: self.requests)
    @rule(i=st.integers(1, 100))
    def cancel(self, i):
        request_id = f"req-{(i - 1) % self.requests + 1}"
        assert not self.pool.cancel(BOB.user, request_id, "test", self.now)   # not bob's
        self.pool.cancel(ALICE.user, request_id, "test", self.now)
        self.cancelled.add(request_id)
        assert request_id not in {w.request_id for w in self.pool.waiters}
        assert all(r.extra.get("request_id") != request_id for r in self.lab.reservations.values()
                   if r.kind == "allocation" and r.state != states.ENDED)

    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 4.0, 10.0]))
    def tick(self, dt):
        self.now += dt
        self.lab.advance(self.now)

    @rule(name=st.sampled_from(["gpus/0", "gpus/2", "cpus/1"]), up=st.booleans())
    def set_state(self, name, up):
        self.service.set_state(name, up, "test", BY_ADMIN, self.now)

    @rule(jump=st.sampled_from([-50.0, -8.0, 8.0, 50.0]))
    def clock_jumps(self, jump):
        """The wall clock is set forward or back: waits and leases move with it, keep their
        length, and a lease keeps all of it where nothing else is booked on its instances."""
        leases = {r.id: (r.start, r.end) for r in self.lab.reservations.values()
                  if r.kind == "allocation" and r.state == states.ACTIVE}
        waits = {w.id: w.deadline for w in self.pool.waiters}
        self.now += jump
        self.pool.move_durations(jump, self.now)
        self.lab.advance(self.now)
        for rid, (start, end) in leases.items():
            r = self.lab.reservations[rid]
            if r.state == states.ENDED:
                continue
            assert r.start == start + jump and self.now < r.end <= end + jump
            alone = all(b.reservation_id == rid for name in r.resources
                        for b in self.lab.resources[name].timeline)
            assert r.end == end + jump or not alone
        for w in self.pool.waiters:
            assert w.deadline == waits[w.id] + jump

    @invariant()
    def never_over_allocated(self):
        assert over_allocated(self.lab) == []

    @invariant()
    def no_waiter_is_left_waiting_for_slots_that_are_free(self):
        for i, w in enumerate(self.pool.waiters):
            held_back = any(a.bypassed >= MAX_BYPASS and a.types & w.types
                            for a in self.pool.waiters[:i])
            assert (w.deadline <= self.now or held_back
                    or not naive_fits(self.lab, w.request, self.now, self.now + w.lease_s)), w

    @invariant()
    def queue_in_service_order_and_counted_against_quotas(self):
        queue = list(self.pool.waiters)
        assert queue == sorted(queue, key=lambda w: (-w.priority, w.order[1]))
        live = Counter(r.owner for r in self.lab.reservations.values()
                       if r.state != states.ENDED)
        assert Counter(self.lab.held) == live + Counter(w.owner for w in queue)

    @invariant()
    def waiters_answered_once_by_their_deadline(self):
        for w in self.waiters:
            if w.result is None:
                assert w in self.pool.waiters and self.now < w.deadline
            else:
                assert w not in self.pool.waiters and len(self.answers[w.id]) == 1
                if isinstance(w.result, Conflict):
                    assert w.request_id in self.cancelled
        for r in self.allocations + [w.result for w in self.waiters]:
            if r is not None and not isinstance(r, EngineError) and r.state != states.ENDED:
                assert r.end > self.now


PoolMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40,
                                         deadline=None)
test_pool_machine = PoolMachine.TestCase


def test_an_end_books_nothing_until_its_effects_are_settled():
    """Ending a reservation queues what it sets off: the waiter is served by settle, after
    the change that freed its slots is complete, never inside it."""
    lab, pool, _ = make_pool(gpus=(1,), cpus=())
    held = pool.checkout(ALICE, [("gpus", 1)], 100, now=0)
    w = pool.checkout(BOB, [("gpus", 1)], 10, now=1, wait_s=50)
    lab.transition(held, "release", 2)
    assert w.result is None and len(lab.resources["gpus/0"].timeline) == 0
    lab.settle()
    assert w.result.state == states.ACTIVE and w.result.start == 2
