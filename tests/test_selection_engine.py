"""Selectors, service state, standing reservations and repair, in the pure engine."""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from atsd.engine import states
from atsd.engine.calendar import Calendar
from atsd.engine.errors import BadRequest, EngineError, Forbidden, NotFound, Unavailable
from atsd.engine.lab import Caller, Lab, ResourceDef
from atsd.engine.revocation import Revocations
from atsd.engine.selection import Selection
from atsd.engine.selector import parse
from atsd.engine.series import Series
from atsd.engine.service import ADMIN, HEALTH, Service

ALICE, BOB, ROOT = Caller("alice"), Caller("bob"), Caller("root", admin=True)
BERLIN = ZoneInfo("Europe/Berlin")

BOARDS = [
    ResourceDef("imx-1", "board", tags={"board": "imx8", "usb": True}),
    ResourceDef("imx-2", "board", tags={"board": "imx8", "usb": True}),
    ResourceDef("imx-3", "board", tags={"board": "imx8"}),
    ResourceDef("rpi-1", "board", tags={"board": "rpi4", "usb": True, "lab": "b"}),
    ResourceDef("host", "host", slots=4, tags={"kind": "host"}),
]


class Engine:
    def __init__(self, resources=BOARDS, **kw):
        self.lab = Lab(resources, claim_window_s=60, **kw)
        self.cal = Calendar(self.lab)
        self.rev = Revocations(self.lab, 10)
        self.sel = Selection(self.lab, self.cal)
        self.svc = Service(self.lab, self.rev)
        self.series = Series(self.lab, self.cal, self.sel, BERLIN, 50, 400 * 86400)

    def topics(self, topic):
        return [e.payload for e in self.lab.take_events() if e.topic == topic]


# --- the selector language ---

TAGS = {"board": "imx8", "usb": True, "rev": 3, "name with": "x"}


@pytest.mark.parametrize("text, expected", [
    ("board=imx8", True), ("board = imx8", True), ("board==imx8", True),
    ("board=rpi4", False), ("board!=rpi4", True), ("missing!=x", True),
    ("usb", True), ("wifi", False), ("usb=true", True), ("rev=3", True),
    ("board=imx8 and usb", True), ("board=imx8 && wifi", False),
    ("wifi or usb", True), ("wifi || board=rpi4", False),
    ("not wifi", True), ("!usb", False), ("! ! usb", True),
    ("(wifi or usb) and not board=rpi4", True), ("wifi or usb and board=rpi4", False),
    ("'name with'=x", True), ("board='imx8'", True), ('board="imx 8"', False),
])
def test_selector_matches(text, expected):
    assert parse(text)(TAGS) is expected


@pytest.mark.parametrize("text, position", [
    ("board=", 6), ("and usb", 0), ("usb and", 7), ("(usb", 4), ("usb)", 3),
    ("usb or or wifi", 7), ("board=imx8 $", 11), ("usb wifi", 4), ("", 0), ("   ", 0),
    ("'unclosed", 0), ("a=b=c", 3),
])
def test_broken_selector_names_the_position(text, position):
    with pytest.raises(BadRequest) as err:
        parse(text)
    assert err.value.extra["position"] == position
    assert f"at position {position}" in err.value.message


def test_selector_depth_and_length_are_bounded():
    with pytest.raises(BadRequest, match="nested more than"):
        parse("(" * 100 + "usb" + ")" * 100)
    with pytest.raises(BadRequest, match="nested more than"):
        parse("!" * 100 + "usb")
    with pytest.raises(BadRequest, match="longer than"):
        parse("usb or " * 200 + "usb")


@given(st.text(max_size=40))
def test_any_text_parses_or_is_refused_with_a_position(text):
    try:
        parse(text)(TAGS)
    except BadRequest as err:
        assert 0 <= err.extra["position"] <= len(text)


# --- booking by selector ---

def test_selector_books_count_distinct_matches_together():
    e = Engine()
    r = e.sel.request(ALICE, "board=imx8 and usb", 2, 100, 50, None, "exclusive", True, None, 100)
    assert r.resources == ["imx-1", "imx-2"] and r.start == 100
    assert r.extra["selector"] == "board=imx8 and usb"
    # the next one must wait until both are free again
    r2 = e.sel.request(BOB, "usb and board=imx8", 2, 100, 10, None, "exclusive", True, None, 100)
    assert r2.start == 150 and sorted(r2.resources) == ["imx-1", "imx-2"]
    with pytest.raises(Unavailable, match="fewer than 2"):
        e.sel.request(BOB, "usb and board=imx8", 2, 100, 10, None, "exclusive", False, None, 100)
    # one of three imx8 boards is still free at 100
    r3 = e.sel.request(BOB, "board=imx8", 1, 100, 10, None, "exclusive", False, None, 100)
    assert r3.resources == ["imx-3"]


def test_earliest_common_window_waits_for_the_count():
    e = Engine()
    e.cal.request(ALICE, ["imx-1"], 0, 100, None, "exclusive", False, None, 0)
    e.cal.request(ALICE, ["imx-2"], 0, 200, None, "exclusive", False, None, 0)
    got = e.sel.check_available("usb", 3, 0, 50, "exclusive", None)
    assert got == {"available": False, "avail_start": 200, "avail_end": 250,
                   "resources": ["imx-1", "imx-2", "rpi-1"]}
    assert e.sel.check_available("usb", 1, 0, 50, "exclusive", None)["resources"] == ["rpi-1"]
    assert e.sel.check_available("usb", 4, 0, 50, "exclusive", None)["avail_start"] is None


def test_selector_with_too_few_matches_is_unavailable():
    e = Engine()
    with pytest.raises(Unavailable, match="2 resources that are up match"):
        e.sel.request(ALICE, "board=imx8 and usb", 3, 0, 10, None, "exclusive", True, None, 0)
    with pytest.raises(BadRequest, match="position"):
        e.sel.request(ALICE, "board=", 1, 0, 10, None, "exclusive", True, None, 0)


# --- service state ---

def test_nothing_new_is_booked_on_a_resource_that_is_not_up():
    e = Engine()
    assert e.svc.set_state("imx-1", False, "flaky USB", ADMIN, 0)
    assert e.svc.state(e.lab.resources["imx-1"]) == ("down", "flaky USB")
    with pytest.raises(Unavailable):
        e.cal.request(ALICE, ["imx-1"], 0, 10, None, "exclusive", True, None, 0)
    r = e.sel.request(ALICE, "board=imx8", 2, 0, 10, None, "exclusive", True, None, 0)
    assert r.resources == ["imx-2", "imx-3"]
    assert e.topics("resource.state")[0] == {"resource": "imx-1", "service": "down",
                                             "reason": "flaky USB", "by": "admin"}


def test_health_raises_only_what_health_took_down():
    e = Engine()
    e.svc.set_state("imx-1", False, "bench", ADMIN, 0)
    assert not e.svc.set_state("imx-1", True, "check passed", HEALTH, 1)
    assert e.svc.state(e.lab.resources["imx-1"])[0] == "down"
    assert e.svc.set_state("imx-1", True, "fixed", ADMIN, 2)
    assert e.svc.set_state("imx-1", False, "check failed", HEALTH, 3)
    assert not e.svc.set_state("imx-1", False, "check failed", HEALTH, 4)
    assert e.svc.set_state("imx-1", True, "check passed", HEALTH, 5)
    assert e.svc.state(e.lab.resources["imx-1"]) == ("up", None)


def test_revoked_then_retired_until_restore():
    e = Engine()
    e.cal.request(BOB, ["imx-3"], 0, 100, None, "exclusive", True, None, 0)
    e.rev.revoke(ROOT, ["imx-3"], 30, "recabling", 0)
    assert e.svc.state(e.lab.resources["imx-3"]) == ("revoked", "recabling")
    e.lab.advance(30)
    assert e.svc.state(e.lab.resources["imx-3"]) == ("retired", None)
    e.rev.restore(ROOT, ["imx-3"], 31)
    assert e.svc.state(e.lab.resources["imx-3"]) == ("up", None)


# --- degraded and replaced ---

def test_selector_reservation_is_repaired_and_named_one_is_told():
    e = Engine()
    sel = e.sel.request(ALICE, "board=imx8", 2, 0, 100, None, "exclusive", True, None, 0)
    named = e.cal.request(BOB, ["imx-3"], 0, 100, None, "exclusive", True, None, 0)
    assert sel.resources == ["imx-1", "imx-2"]
    e.lab.take_events()
    e.svc.set_state("imx-1", False, "dead", ADMIN, 10)
    events = e.lab.take_events()
    degraded = [ev.payload for ev in events if ev.topic == "reservation.degraded"]
    assert degraded == [{"reservation_id": sel.id, "resource": "imx-1", "reason": "dead",
                         "owner": "alice"}]
    # imx-3 is the only other imx8 and bob has it: sel stays degraded
    assert sel.extra["degraded"] == ["imx-1"] and sel.resources == ["imx-1", "imx-2"]
    e.svc.set_state("imx-3", False, "also dead", ADMIN, 20)
    assert [ev.payload["reservation_id"] for ev in e.lab.take_events()
            if ev.topic == "reservation.degraded"] == [named.id]
    assert named.resources == ["imx-3"]           # named: told, kept
    e.svc.set_state("imx-3", True, "fixed", ADMIN, 30)
    e.cal.release(BOB, named.id, 40)              # imx-3 frees: the retry takes it
    replaced = e.topics("reservation.replaced")
    assert [(p["old"], p["new"], p["start_time"], p["end_time"]) for p in replaced] == [
        ("imx-1", "imx-3", 40, 100)]
    assert sel.resources == ["imx-3", "imx-2"] and "degraded" not in sel.extra
    assert not e.lab.resources["imx-1"].timeline.overlapping(0, 1000)


def test_revoke_moves_a_selector_reservation_instead_of_taking_it():
    e = Engine()
    sel = e.sel.request(ALICE, "usb", 1, 0, 100, None, "exclusive", True, None, 0)
    e.cal.claim(ALICE, sel.id, 1)
    e.rev.revoke(ROOT, [sel.resources[0]], 60, "recabling", 5)
    assert sel.state == states.ACTIVE and sel.resources == ["imx-2"]
    assert not e.rev.revocations        # nobody held the node any more: complete at once


def test_maintenance_window_repairs_selector_reservations():
    e = Engine()
    sel = e.sel.request(ALICE, "board=rpi4 or board=imx8", 1, 0, 100, None, "exclusive", True,
                        None, 0)
    assert sel.resources == ["imx-1"]
    m = e.rev.maintenance(ROOT, ["imx-1"], 50, 20, 10)
    assert sel.state != states.ENDED and sel.resources == ["imx-2"]
    assert e.lab.resources["imx-1"].timeline.overlapping(0, 1000)[0].reservation_id == m.id


# --- standing reservations ---

def ts(*args):
    return datetime(*args, tzinfo=BERLIN).timestamp()


def test_weekly_rule_keeps_local_time_across_dst():
    e = Engine()
    now = ts(2026, 3, 20, 8, 0)
    got = e.series.request(ALICE, ["imx-1"], None, 1, ts(2026, 3, 23, 9, 0), 7200, None,
                           "exclusive", None, "FREQ=WEEKLY;BYDAY=MO;COUNT=3", False, now)
    starts = [datetime.fromtimestamp(o["start_time"], BERLIN) for o in got["occurrences"]]
    assert [(d.month, d.day, d.hour) for d in starts] == [(3, 23, 9), (3, 30, 9), (4, 6, 9)]
    assert starts[1].utcoffset() != starts[0].utcoffset()      # DST began between them
    assert got["conflicts"] == []
    rs = [e.lab.reservations[o["reservation_id"]] for o in got["occurrences"]]
    assert {r.kind for r in rs} == {"claimed"} and {r.extra["series_id"] for r in rs} == {
        got["series_id"]}
    e.lab.advance(ts(2026, 3, 23, 9, 0))                      # starts by itself
    assert rs[0].state == states.ACTIVE and rs[1].state == states.GRANTED
    e.lab.advance(ts(2026, 3, 23, 11, 0))
    assert rs[0].state == states.ENDED and rs[0].reason == "expired"
    with pytest.raises(Forbidden):
        e.series.release(BOB, got["series_id"], ts(2026, 3, 24))
    released = e.series.release(ALICE, got["series_id"], ts(2026, 3, 24))
    assert released == [rs[1].id, rs[2].id]
    assert all(r.state == states.ENDED for r in rs)
    with pytest.raises(NotFound):
        e.series.release(ALICE, "nope", 0)


def test_series_is_all_or_nothing_unless_partial():
    e = Engine()
    now = ts(2026, 6, 1, 0, 0)
    busy = e.cal.request(BOB, ["imx-1"], ts(2026, 6, 2, 9, 30), 600, None, "exclusive", False,
                         None, now)
    rule = "FREQ=DAILY;COUNT=3"
    with pytest.raises(Unavailable) as err:
        e.series.request(ALICE, ["imx-1"], None, 1, ts(2026, 6, 1, 9), 3600, None,
                         "exclusive", None, rule, False, now)
    assert err.value.extra["conflicts"] == [{"start_time": ts(2026, 6, 2, 9),
                                             "end_time": ts(2026, 6, 2, 10)}]
    assert list(e.lab.reservations) == [busy.id]
    got = e.series.request(ALICE, ["imx-1"], None, 1, ts(2026, 6, 1, 9), 3600, None,
                           "exclusive", None, rule, True, now)
    assert len(got["occurrences"]) == 2 and len(got["conflicts"]) == 1
    # by selector, the busy day takes another board
    got = e.series.request(ALICE, None, "board=imx8", 2, ts(2026, 6, 1, 9), 3600, None,
                           "exclusive", None, rule, False, now)
    assert [o["resources"] for o in got["occurrences"]] == [
        ["imx-2", "imx-3"], ["imx-2", "imx-3"], ["imx-2", "imx-3"]]


@pytest.mark.parametrize("rule, message", [
    ("FREQ=DAILY", "more than 50 occurrences within the horizon"),
    ("FREQ=HOURLY;COUNT=3", "FREQ must be one of"),
    ("FREQ=DAILY;COUNT=51", "more than 50 occurrences"),
    ("FREQ=YEARLY;COUNT=3", "past the horizon"),
    ("FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30;COUNT=2", "no month in BYMONTH"),
    ("FREQ=DAILY;BYSETPOS=1;COUNT=2", "not one of the rule parts"),
    ("FREQ=DAILY;UNTIL=20270101;COUNT=2", "UNTIL"),
    ("FREQ=DAILY;COUNT=x", "recurrence"),
    ("FREQ=DAILY;COUNT=3\nDTSTART:20200101T000000", "one RRULE line"),
    ("FREQ=DAILY;INTERVAL=1;COUNT=3;BYHOUR=9,10", "overlap"),
    ("FREQ=DAILY;INTERVAL=7;BYDAY=TU;COUNT=2", "INTERVAL with BYDAY on FREQ=DAILY"),
    ("FREQ=MONTHLY;BYMONTH=13;COUNT=2", "BYMONTH values must be from 1 to 12"),
    ("FREQ=MONTHLY;BYDAY=6MO;COUNT=2", "ordinal must be from -5 to 5"),
    ("FREQ=WEEKLY;BYDAY=2MO;COUNT=2", "goes with FREQ=MONTHLY or YEARLY"),
    ("FREQ=DAILY;FREQ=WEEKLY;COUNT=2", "given twice"),
])
def test_bad_rules_are_refused(rule, message):
    e = Engine()
    with pytest.raises(BadRequest, match=message):
        e.series.request(ALICE, ["imx-1"], None, 1, ts(2026, 6, 1, 9), 7200, None,
                         "exclusive", None, rule, False, ts(2026, 6, 1))


# --- properties ---

SELECTORS = ["board=imx8", "usb", "board=imx8 and usb", "not lab=b", "usb or kind=host",
             "board!=imx8"]


class SelectionMachine(RuleBasedStateMachine):
    """Selector bookings, named bookings, resources going down and up, revokes, releases:
    a selector booking never holds a non-matching resource, never a down one while a
    repair could move it, and nothing is ever double-booked; and a request with
    next_available is refused only when too few resources it may have can be booked."""

    @initialize()
    def setup(self):
        self.e = Engine()
        self.now = 0.0
        self.ids = []
        self.series_ids = []

    @rule(dt=st.sampled_from([0.0, 5.0, 50.0, 86400.0]))
    def tick(self, dt):
        self.now += dt
        self.e.lab.advance(self.now)

    @rule(selector=st.sampled_from(SELECTORS), count=st.integers(1, 3),
          start=st.floats(0, 200).map(lambda x: round(x, 1)),
          duration=st.floats(1, 100).map(lambda x: round(x, 1)), claim=st.booleans())
    def request_by_selector(self, selector, count, start, duration, claim):
        match = parse(selector)
        usable = [res for res in self.e.lab.resources.values()
                  if res.bookable and match(res.tags)]
        try:
            r = self.e.sel.request(ALICE, selector, count, self.now + start, duration, None,
                                   "exclusive", True, None, self.now)
        except Unavailable:
            # next_available: refused only when too few matches can be booked at all
            assert len(usable) < count, (selector, count, [res.name for res in usable])
            return
        self.ids.append(r.id)
        assert len(set(r.resources)) == count
        if claim and r.start <= self.now:
            self.e.cal.claim(ALICE, r.id, self.now)

    @rule(selector=st.sampled_from(SELECTORS), count=st.integers(1, 2),
          start=st.floats(0, 200).map(lambda x: round(x, 1)),
          times=st.integers(1, 4), partial=st.booleans())
    def request_series(self, selector, count, start, times, partial):
        try:
            got = self.e.series.request(ALICE, None, selector, count, self.now + start, 60,
                                        None, "exclusive", None, f"FREQ=DAILY;COUNT={times}",
                                        partial, self.now)
        except Unavailable:
            return
        assert len(got["occurrences"]) + len(got["conflicts"]) == times
        self.ids += [o["reservation_id"] for o in got["occurrences"]]
        self.series_ids.append(got["series_id"])

    @precondition(lambda self: self.series_ids)
    @rule(data=st.data())
    def release_series(self, data):
        try:
            self.e.series.release(ALICE, data.draw(st.sampled_from(self.series_ids)), self.now)
        except EngineError:
            pass

    @rule(name=st.sampled_from([d.name for d in BOARDS]),
          start=st.floats(0, 200).map(lambda x: round(x, 1)))
    def request_named(self, name, start):
        try:
            self.ids.append(self.e.cal.request(BOB, [name], self.now + start, 30, None,
                                               "exclusive", True, None, self.now).id)
        except Unavailable:
            assert not self.e.lab.resources[name].bookable, name   # next_available

    @rule(name=st.sampled_from([d.name for d in BOARDS]), up=st.booleans(),
          by=st.sampled_from([ADMIN, HEALTH]))
    def set_state(self, name, up, by):
        try:
            self.e.svc.set_state(name, up, "test", by, self.now)
        except EngineError:
            pass

    @rule(name=st.sampled_from([d.name for d in BOARDS]), wait=st.sampled_from([0, 20]))
    def revoke(self, name, wait):
        try:
            self.e.rev.revoke(ROOT, [name], wait, "test", self.now)
        except EngineError:
            pass

    @rule(name=st.sampled_from([d.name for d in BOARDS]))
    def restore(self, name):
        try:
            self.e.rev.restore(ROOT, [name], self.now)
        except EngineError:
            pass

    @precondition(lambda self: self.ids)
    @rule(data=st.data())
    def release(self, data):
        try:
            self.e.cal.release(ROOT, data.draw(st.sampled_from(self.ids)), self.now)
        except EngineError:
            pass

    @invariant()
    def selector_bookings_hold_only_matches(self):
        for r in self.e.lab.reservations.values():
            if r.state == states.ENDED or "selector" not in r.extra:
                continue
            match = parse(r.extra["selector"])
            assert len(set(r.resources)) == len(r.resources)
            for name in r.resources:
                res = self.e.lab.resources[name]
                assert match(res.tags), (r.extra["selector"], name)
                if not res.bookable:
                    # held on a down resource only while waiting for a free match
                    assert name in r.extra.get("degraded", []), (name, r.extra)

    @invariant()
    def degraded_ones_have_no_free_match(self):
        for rid in self.e.sel.waiting():
            r = self.e.lab.reservations[rid]
            if r.state == states.ENDED:
                continue
            match = parse(r.extra["selector"])
            for old in r.extra["degraded"]:
                b = next(b for b in r.bookings if b.resource == old)
                start = max(b.start, self.now)
                for res in self.e.lab.resources.values():
                    if (res.name not in r.resources and res.bookable and match(res.tags)
                            and start < b.end):
                        assert not res.timeline.fits(start, b.end, res.slots, True)

    @invariant()
    def no_double_booking(self):
        for res in self.e.lab.resources.values():
            bookings = list(res.timeline)
            for i, a in enumerate(bookings):
                for b in bookings[i + 1:]:
                    assert not (a.start < b.end and b.start < a.end), (res.name, a, b)

    @invariant()
    def timelines_hold_exactly_the_live_bookings(self):
        live = {id(b) for r in self.e.lab.reservations.values() if r.state != states.ENDED
                for b in r.bookings}
        held = {id(b) for res in self.e.lab.resources.values() for b in res.timeline}
        assert live == held


TestSelectionMachine = SelectionMachine.TestCase
TestSelectionMachine.settings = settings(max_examples=100, stateful_step_count=40,
                                         deadline=None)


RULE_PARTS = ["FREQ=DAILY", "FREQ=WEEKLY", "FREQ=MONTHLY", "FREQ=YEARLY", "FREQ=daily",
              "COUNT=3", "COUNT=0", "COUNT=-1", "INTERVAL=0", "INTERVAL=2", "BYMONTH=2",
              "BYMONTH=13", "BYMONTHDAY=30", "BYMONTHDAY=-1", "BYMONTHDAY=0", "BYDAY=MO",
              "BYDAY=1MO", "BYDAY=XX", "BYHOUR=25", "BYHOUR=9", "BYMINUTE=30",
              "UNTIL=20270101T000000Z", "UNTIL=2027", "WKST=SU", "", "=", "FREQ",
              "INTERVAL=7", "INTERVAL=12", "BYDAY=TU", "BYDAY=5MO", "BYDAY=-1SU", "BYDAY=53FR",
              "BYMONTHDAY=29", "BYMONTHDAY=31", "BYMONTH=4", "COUNT=2", "BYSETPOS=1"]


@settings(deadline=1000, max_examples=500)
@given(st.lists(st.sampled_from(RULE_PARTS), max_size=5))
def test_any_rule_is_expanded_or_refused_quickly(parts):
    e = Engine()
    try:
        starts = e.series.starts(";".join(parts), ts(2026, 6, 1, 9), ts(2026, 6, 1))
    except BadRequest:
        return
    assert 1 <= len(starts) <= e.series.max_occurrences
    assert starts == sorted(starts)


def test_an_open_rule_books_up_to_the_horizon_and_says_so():
    """"Every 1st of the month" with no COUNT or UNTIL: each one within the horizon, and the
    reply names where the booking stops, so nothing is cut off unseen."""
    e = Engine()
    now = ts(2026, 6, 1)
    got = e.series.request(ALICE, ["imx-1"], None, 1, ts(2026, 6, 1, 9), 3600, None,
                           "exclusive", None, "FREQ=MONTHLY;BYMONTHDAY=1", False, now)
    assert got["booked_until"] == now + 400 * 86400
    starts = [o["start_time"] for o in got["occurrences"]]
    assert len(starts) == 14 and starts[-1] <= got["booked_until"] < starts[-1] + 31 * 86400
    closed = e.series.request(ALICE, ["imx-2"], None, 1, ts(2026, 6, 1, 9), 3600, None,
                              "exclusive", None, "FREQ=WEEKLY;BYDAY=MO;COUNT=2", False, now)
    assert "booked_until" not in closed
