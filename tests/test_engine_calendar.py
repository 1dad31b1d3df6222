"""The engine at simulated times: no I/O, no clock, so hypothesis can drive it anywhere."""

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from atsd.engine import states
from atsd.engine.calendar import Calendar
from atsd.engine.errors import (BadRequest, ClaimLate, Conflict, EngineError, Forbidden,
                               TooEarly, Unavailable)
from atsd.engine.lab import Caller, Lab, ResourceDef
from atsd.engine.timeline import Booking, Timeline

ALICE, BOB, ADMIN = Caller("alice"), Caller("bob"), Caller("root", admin=True)


def make_lab(**kw):
    lab = Lab([ResourceDef("r1", "board", config={"fw": "v1"}),
               ResourceDef("r2", "board", config={"fw": "v1"}),
               ResourceDef("shared", "host", slots=3),
               ResourceDef("dut", "board", config={"fw": "v1"}, reconfigure_s=10)], **kw)
    return lab, Calendar(lab)


def test_earliest_fit_skips_to_the_end_of_blockers():
    tl = Timeline(2)
    tl.add(Booking("a", "x", 10, 20, 2, True))
    tl.add(Booking("b", "x", 20, 30, 1, False))
    tl.add(Booking("c", "x", 25, 40, 1, False))
    assert tl.earliest_fit(0, 10, 2, True) == 0
    assert tl.earliest_fit(5, 10, 2, True) == 40
    assert tl.earliest_fit(5, 10, 1, False) == 30      # b and c overlap 25-30: full
    assert tl.earliest_fit(5, 10, 2, False) == 40
    assert tl.earliest_fit(12, 5, 1, False) == 20      # [20, 25) has room beside b
    assert tl.earliest_fit(0, 1, 3, False) is None     # more than capacity: never


def test_request_claim_release_and_events():
    lab, cal = make_lab(claim_window_s=5)
    r = cal.request(ALICE, ["r1"], 100, 50, None, "exclusive", True, None, now=100)
    assert (r.state, r.start, r.end, r.expire_time) == (states.GRANTED, 100, 150, 105)
    cal.claim(ALICE, r.id, now=101)
    assert r.state == states.ACTIVE and r.kind == "claimed"
    cal.release(ALICE, r.id, now=102)
    statuses = [(e.payload["reservation_status"], e.payload["reason"]) for e in lab.take_events()]
    assert statuses == [(states.GRANTED, "granted"), (states.ACTIVE, "claimed"),
                        (states.ENDED, "released")]
    with pytest.raises(Conflict):
        cal.release(ALICE, r.id, now=103)


def test_a_step_the_state_table_lacks_changes_nothing():
    lab, cal = make_lab()
    r = cal.request(ALICE, ["r1"], 100, 50, None, "exclusive", True, None, now=100)
    cal.release(ALICE, r.id, now=110)
    lab.take_events()
    for cause in ("extend", "shorten", "claim"):
        with pytest.raises(Conflict):
            lab.transition(r, cause, 120, end=500, kind="claimed")
    assert (r.state, r.kind, r.end, lab.take_events()) == (states.ENDED, "pre", 150, [])


def test_an_extension_moves_the_end_through_the_table_and_says_so():
    lab, cal = make_lab(expiring_notice_s=5)
    r = cal.request(ALICE, ["r1"], 100, 50, None, "exclusive", True, None, now=100,
                    claim=True)
    lab.take_events()
    cal.extend(ALICE, r.id, 30, now=110)
    [event] = lab.take_events()
    assert (event.reservation_status, event.previous, event.reason, event.end_time) == (
        states.ACTIVE, states.ACTIVE, "extended", 180)
    assert [b.end for b in lab.resources["r1"].timeline] == [180]
    lab.advance(150)                                        # the old end passes: still held
    assert r.state == states.ACTIVE
    lab.advance(180)
    assert r.state == states.ENDED and r.reason == "expired"


def test_claim_window_too_early_late_and_lapse():
    lab, cal = make_lab(claim_window_s=5)
    r = cal.request(ALICE, ["r1"], 200, 50, None, "exclusive", True, None, now=100)
    with pytest.raises(TooEarly):
        cal.claim(ALICE, r.id, now=150)
    with pytest.raises(Forbidden):
        cal.claim(BOB, r.id, now=201)
    lab.advance(206)                                      # lapses at 205
    assert r.state == states.ENDED and r.reason == "lapsed"
    with pytest.raises(ClaimLate) as late:
        cal.claim(ALICE, r.id, now=207)
    assert late.value.extra["new_avail"] == 207
    assert late.value.extra["pre_reservation_id"] != r.id


def test_reservation_ends_at_its_end_with_expiring_notice_first():
    lab, cal = make_lab(expiring_notice_s=10)
    r = cal.request(ALICE, ["r1"], 0, 100, None, "exclusive", True, None, now=0)
    cal.claim(ALICE, r.id, now=0)
    lab.take_events()
    lab.advance(95)
    assert [e.topic for e in lab.take_events()] == ["reservation.expiring"]
    assert lab.next_deadline() == 100
    lab.advance(100)
    assert r.state == states.ENDED and r.reason == "expired"


def test_reconfigure_lead_and_config_after_claim():
    lab, cal = make_lab()
    r = cal.request(ALICE, ["dut"], 0, 100, {"fw": "v2"}, "exclusive", True, None, now=0)
    assert (r.bookings[0].start, r.start, r.end) == (0, 10, 110)
    cal.claim(ALICE, r.id, now=10)
    assert lab.resources["dut"].config == {"fw": "v2"}
    r2 = cal.request(ALICE, ["dut"], 200, 10, {"fw": "v2"}, "exclusive", True, None, now=10)
    assert r2.start == 200                               # already v2 then: no lead


def test_co_reservation_finds_the_common_window():
    lab, cal = make_lab()
    cal.request(ALICE, ["r1"], 0, 100, None, "exclusive", True, None, now=0)
    cal.request(ALICE, ["r2"], 100, 100, None, "exclusive", True, None, now=0)
    both = cal.request(BOB, ["r1", "r2"], 0, 50, None, "exclusive", True, None, now=0)
    assert both.start == 200 and both.resources == ["r1", "r2"]
    with pytest.raises(Unavailable):
        cal.request(BOB, ["r1", "r2"], 0, 50, None, "exclusive", False, None, now=0)


def test_restore_rebuilds_timelines_and_timers():
    lab, cal = make_lab(claim_window_s=5)
    r = cal.request(ALICE, ["r1"], 0, 100, None, "exclusive", True, None, now=0)
    records = {"reservation": [rec for k, _, rec in lab.take_dirty() if k == "reservation"]}
    lab2, cal2 = make_lab(claim_window_s=5)
    lab2.restore(records, now=50)
    lab2.advance(50)                                      # lapsed while "down"
    assert lab2.reservations[r.id].state == states.ENDED
    assert lab2.resources["r1"].timeline.fits(0, 100, 1, True)


def naive_fits(lab, wants, start, end, ignore=None):
    """Whether ``wants`` ([(resource, slots, exclusive, config)]) fit over [start, end) by
    the plain rule, checked against every live booking: nothing overlaps, or everything
    that overlaps is shared with an agreeing config and the slots of all of it together
    (more than its peak) leave room. Stricter than the engine, never looser: what fits
    here must be granted."""
    for name, slots, exclusive, config in wants:
        res = lab.resources[name]
        if slots > res.slots:
            return False
        others = [b for r in lab.reservations.values() if r.state != states.ENDED
                  and r.id != ignore for b in r.bookings
                  if b.resource == name and b.start < end and b.end > start]
        if others and (exclusive or any(b.exclusive for b in others)
                       or any(None not in (b.config, config) and b.config != config
                              for b in others)
                       or sum(b.slots for b in others) + slots > res.slots):
            return False
    return True


MAX_LEAD = 10       # the longest reconfigure_s in make_lab


times = st.floats(min_value=0, max_value=1000, allow_nan=False).map(lambda x: round(x, 1))
durations = st.floats(min_value=0.5, max_value=300, allow_nan=False).map(lambda x: round(x, 1))


class CalendarMachine(RuleBasedStateMachine):
    """Random requests, claims, releases, extensions and lapses at random times: nothing is
    double-booked (safety), and what has room by naive_fits is granted (progress; an
    engine refusing everything fails here)."""

    @initialize()
    def setup(self):
        self.lab, self.cal = make_lab(claim_window_s=20, expiring_notice_s=5)
        self.now = 0.0
        self.ids = []

    @rule(dt=st.floats(min_value=0, max_value=100, allow_nan=False))
    def tick(self, dt):
        self.now += dt
        self.lab.advance(self.now)

    @rule(names=st.sampled_from([["r1"], ["r2"], ["shared"], ["dut"], ["r1", "r2"],
                                 ["r1", "shared"]]),
          start=times, duration=durations, shared=st.booleans(),
          slots=st.integers(1, 4), nxt=st.booleans(),
          config=st.sampled_from([None, {"fw": "v1"}, {"fw": "v2"}]), claim=st.booleans())
    def request(self, names, start, duration, shared, slots, nxt, config, claim):
        t = self.now + start
        wants = [(n, slots if shared else self.lab.resources[n].slots, not shared, config)
                 for n in names]
        free = naive_fits(self.lab, wants, t, t + MAX_LEAD + duration)
        ever = all(n <= self.lab.resources[name].slots for name, n, _, _ in wants)
        try:
            r = self.cal.request(ALICE, names, t, duration, config,
                                 "shared" if shared else "exclusive", nxt, slots, self.now,
                                 claim)
        except BadRequest:                  # "shared" has no fw key
            assert config is not None and "shared" in names
            return
        except Unavailable:
            assert not free, "refused though nothing is in the way"
            assert not (nxt and ever), "next_available refused though it fits some time"
            return
        if free:
            assert min(b.start for b in r.bookings) == t
        self.ids.append(r.id)

    @precondition(lambda self: self.ids)
    @rule(data=st.data())
    def claim(self, data):
        rid = data.draw(st.sampled_from(self.ids))
        r = self.lab.reservations.get(rid)
        whole = None if r is None else r.end - r.start
        # in its claim window, with room for its whole duration from now: must be claimed
        claimable = (r is not None and r.kind == "pre" and r.state == states.GRANTED
                     and r.start <= self.now <= r.expire_time
                     and naive_fits(self.lab, [(b.resource, b.slots, b.exclusive, b.config)
                                               for b in r.bookings],
                                    r.end, self.now + whole, ignore=rid))
        try:
            self.cal.claim(ALICE, rid, self.now)
        except ClaimLate as late:
            assert not claimable, late
            if "pre_reservation_id" in late.extra:
                self.ids.append(late.extra["pre_reservation_id"])
                fresh = self.lab.reservations[late.extra["pre_reservation_id"]]
                lapsed = self.lab.reservations[rid]     # the offer is as long as it was
                assert fresh.end - fresh.start == pytest.approx(lapsed.end - lapsed.start)
        except EngineError as exc:
            assert not claimable, exc
        else:   # kissats: a claim, late or not, holds its whole reservation_duration
            assert r.end - self.now >= whole - 1e-6

    @precondition(lambda self: self.ids)
    @rule(data=st.data())
    def release(self, data):
        r = self.lab.reservations.get(data.draw(st.sampled_from(self.ids)))
        if r is not None and r.state != states.ENDED:
            self.cal.release(ALICE, r.id, self.now)       # its owner: always released
            assert r.state == states.ENDED

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), extra=durations)
    def extend(self, data, extra):
        rid = data.draw(st.sampled_from(self.ids))
        r = self.lab.reservations.get(rid)
        room = (r is not None and r.state != states.ENDED
                and naive_fits(self.lab, [(b.resource, b.slots, b.exclusive, b.config)
                                          for b in r.bookings], r.end, r.end + extra,
                               ignore=rid))
        try:
            self.cal.extend(ALICE, rid, extra, self.now)
        except EngineError as exc:
            assert not room, exc

    @invariant()
    def no_double_booking(self):
        for res in self.lab.resources.values():
            bookings = list(res.timeline)
            for i, a in enumerate(bookings):
                for b in bookings[i + 1:]:
                    if a.start < b.end and b.start < a.end:
                        assert not (a.exclusive or b.exclusive), (a, b)
                        assert a.config is None or b.config is None or a.config == b.config
            for b in bookings:   # at any booking's start, the slots in use fit
                used = sum(o.slots for o in bookings if o.start <= b.start < o.end)
                assert used <= res.slots

    @invariant()
    def timelines_hold_exactly_the_live_bookings(self):
        live = {id(b) for r in self.lab.reservations.values() if r.state != states.ENDED
                for b in r.bookings}
        held = {id(b) for res in self.lab.resources.values() for b in res.timeline}
        assert live == held

    @invariant()
    def nothing_outlives_its_end(self):
        self.lab.advance(self.now)
        for r in self.lab.reservations.values():
            if r.state == states.ACTIVE:
                assert r.end > self.now
            if r.state == states.GRANTED and r.expire_time is not None:
                assert r.expire_time > self.now

    @invariant()
    def confirmed_bookings_never_lapse(self):
        for r in self.lab.reservations.values():
            if r.kind == "claimed":
                assert r.reason != "lapsed"
                if r.state == states.GRANTED:     # confirmed ahead: starts by itself
                    assert r.expire_time is None and r.start > self.now

    @invariant()
    def an_ended_reservation_ends_when_it_ended(self):
        for r in self.lab.reservations.values():
            if r.state == states.ENDED:
                assert r.real_end <= r.end and r.real_end <= max(r.ended_at, r.start)
                if r.reason == "expired":
                    assert r.real_end == r.end


TestCalendarMachine = CalendarMachine.TestCase
TestCalendarMachine.settings = settings(max_examples=150, stateful_step_count=40,
                                        deadline=None)


def test_used_slots_counts_a_booking_that_starts_at_that_instant():
    t = 1795700000.123                       # epoch-sized: t + 1e-9 == t
    tl = Timeline(4)
    tl.add(Booking("a", "x", t, t + 60, 3, False))
    assert tl.used_slots(t) == 3
    assert tl.used_slots(t + 60) == 0


def test_claimed_config_survives_a_restart():
    lab, cal = make_lab()
    r = cal.request(ALICE, ["dut"], 0, 100, {"fw": "v2"}, "exclusive", True, None, now=0)
    cal.claim(ALICE, r.id, now=10)
    records = {}
    for kind, _, rec in lab.take_dirty():
        records.setdefault(kind, []).append(rec)
    lab2, _ = make_lab()
    lab2.restore(records, now=20)
    assert lab2.resources["dut"].config == {"fw": "v2"}


def test_batch_reservations_are_released_once_active_and_never_extended():
    from atsd.engine.batch import Batch
    lab, cal = make_lab()
    batch = Batch(lab, {"q": ["r1", "r2"]}, set())
    later = batch.grant(ALICE, "q", ["r2"], 50, 100, now=0)
    with pytest.raises(Conflict, match="cancel_reservation"):
        cal.release(ALICE, later.id, now=1)
    r = batch.grant(ALICE, "q", ["r1"], 0, 100, now=0)
    with pytest.raises(Conflict, match="cannot be extended"):
        cal.extend(ALICE, r.id, 10, now=1)
    assert r.state == states.ACTIVE and r.end == 100
    with pytest.raises(Forbidden):
        cal.release(BOB, r.id, now=2)
    cal.release(ADMIN, r.id, now=2)
    assert (r.state, r.reason, r.real_end, r.end) == (states.ENDED, "released", 2, 100)
    with pytest.raises(Conflict, match="GRANTED|granted"):
        batch.cancel(ALICE, r.id, now=3)
    assert later.state == states.GRANTED
