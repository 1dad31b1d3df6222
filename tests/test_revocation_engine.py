"""Revocation, maintenance windows and values in the engine, at simulated times."""

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from atsd.engine import states
from atsd.engine.calendar import Calendar
from atsd.engine.errors import BadRequest, Conflict, EngineError, Forbidden, Unavailable
from atsd.engine.events import DELETE_COMPLETE, DELETE_PENDING, RESOURCE_VALUES
from atsd.engine.lab import Caller, Lab, ResourceDef
from atsd.engine.revocation import Revocations

ALICE, BOB, ADMIN = Caller("alice"), Caller("bob"), Caller("root", admin=True)
NODES = ["n1", "n2", "n3", "pool"]


def make_lab():
    lab = Lab([ResourceDef("n1", "node"), ResourceDef("n2", "node"), ResourceDef("n3", "node"),
               ResourceDef("pool", "host", slots=3)], claim_window_s=1000)
    return lab, Calendar(lab), Revocations(lab, countdown_interval_s=10)


def held(cal, caller, names, start, duration, now, **kw):
    """A claimed (in use) reservation, or a future pre-reservation when start > now."""
    r = cal.request(caller, names, start, duration, None, kw.pop("mode", "exclusive"), False,
                    kw.pop("slots", None), now)
    if start <= now:
        cal.claim(caller, r.id, now)
    return r


def events(lab, topic):
    return [e.payload for e in lab.take_events() if e.topic == topic]


def test_countdown_answers_and_deadline():
    lab, cal, rv = make_lab()
    a = held(cal, ALICE, ["n1"], 0, 1000, now=0)
    b = held(cal, ALICE, ["n2"], 0, 1000, now=0)
    c = held(cal, BOB, ["n3"], 0, 1000, now=0)
    later = cal.request(BOB, ["n3"], 5000, 10, None, "exclusive", False, None, now=0)
    lab.take_events()
    rev = rv.revoke(ADMIN, ["n1", "n2", "n3"], 25, "repairs", now=100)
    [notice] = events(lab, DELETE_PENDING)
    assert notice["max_wait_time"] == 25 and notice["deadline"] == 125
    assert notice["revocation_id"] == rev.id and notice["reason"] == "repairs"
    assert [(e["node_id"], e["owner"], e["client_id"], e["max_wait_time"])
            for e in notice["nodelist"]] == [("n1", "alice", a.id, 25), ("n2", "alice", b.id, 25),
                                             ("n3", "bob", c.id, 25), ("n3", "bob", later.id, 25)]
    with pytest.raises(Unavailable):            # no new bookings while it counts down
        cal.request(BOB, ["n1"], 100, 10, None, "exclusive", True, None, now=100)
    with pytest.raises(Forbidden):
        rv.ack(BOB, ["n1"], now=101)
    assert rv.ack(ALICE, ["n1"], now=102) == ["n1"]
    assert a.state == states.ENDED and a.reason == "revoked" and b.state == states.ACTIVE
    [done] = events(lab, DELETE_COMPLETE)
    assert done["final"] is False
    assert done["nodelist"] == [{"node_id": "n1", "client_id": a.id, "owner": "alice",
                                 "max_wait_time": 0}]
    lab.advance(110)
    [notice] = events(lab, DELETE_PENDING)
    assert notice["max_wait_time"] == 15 and notice["deadline"] == 125
    assert [(e["node_id"], e["client_id"]) for e in notice["nodelist"]][0] == ("n1", None)
    assert {e["max_wait_time"] for e in notice["nodelist"]} == {15}      # each counts down
    lab.advance(124.9)
    assert b.state == c.state == states.ACTIVE and later.state == states.GRANTED
    lab.advance(125)
    assert all(r.state == states.ENDED and r.reason == "revoked" for r in (b, c, later))
    [done] = events(lab, DELETE_COMPLETE)
    assert done["final"] is True
    assert sorted(e["node_id"] for e in done["nodelist"]) == ["n1", "n2", "n3", "n3"]
    assert all(not lab.resources[n].in_service for n in ("n1", "n2", "n3"))
    assert all(len(lab.resources[n].timeline) == 0 for n in ("n1", "n2", "n3"))
    assert rv.revocations == {}
    assert rv.restore(ADMIN, ["n1", "pool"], now=130) == ["n1"]
    assert held(cal, BOB, ["n1"], 130, 10, now=130).state == states.ACTIVE


@pytest.mark.parametrize("jump", [-3600.0, 3600.0])
def test_a_clock_jump_moves_the_next_notice_not_the_deadline(jump):
    """Notices come every countdown_interval_s of real time, whichever way the wall clock
    was set; the deadline is a time on the calendar, told to holders as one."""
    lab, cal, rv = make_lab()
    held(cal, ALICE, ["n1"], 0, 10_000, now=0)
    rev = rv.revoke(ADMIN, ["n1"], 5000, "repairs", now=100)
    lab.take_events()
    now = 104 + jump                    # 4 s later, by a clock set an hour forward or back
    rv.move_notices(jump)
    lab.advance(now)
    assert events(lab, DELETE_PENDING) == [] and rev.deadline == 5100
    lab.advance(110 + jump)             # 10 s after the first notice
    [notice] = events(lab, DELETE_PENDING)
    assert notice["max_wait_time"] == 4990 - jump and notice["deadline"] == 5100


def test_no_grace_and_idle_nodes_are_taken_at_once():
    lab, cal, rv = make_lab()
    a = held(cal, ALICE, ["n1", "n2"], 0, 1000, now=0)    # one id on two nodes: taken whole
    lab.take_events()
    rv.revoke(ADMIN, ["n1"], 0, None, now=10)
    assert a.state == states.ENDED and len(lab.resources["n2"].timeline) == 0
    lab.take_events()
    rv.revoke(ADMIN, ["n3"], 60, None, now=11)              # nobody holds it: nothing to wait for
    out = lab.take_events()
    assert [e.topic for e in out] == [DELETE_PENDING, DELETE_COMPLETE]
    assert out[1].payload["final"] is True and rv.revocations == {}


def test_announced_once_with_no_grace():
    lab, cal, rv = make_lab()
    held(cal, ALICE, ["n1"], 0, 1000, now=0)
    lab.take_events()
    rv.revoke(ADMIN, ["n1"], 0, None, now=10)
    topics = [e.topic for e in lab.take_events()]
    assert topics.count(DELETE_PENDING) == 1 and topics[-1] == DELETE_COMPLETE


def test_refusals():
    lab, cal, rv = make_lab()
    with pytest.raises(Forbidden):
        rv.revoke(ALICE, ["n1"], 10, None, now=0)
    with pytest.raises(BadRequest):
        rv.revoke(ADMIN, ["n1", "n1"], 10, None, now=0)
    with pytest.raises(EngineError):
        rv.revoke(ADMIN, ["nope"], 10, None, now=0)
    held(cal, ALICE, ["n1"], 0, 100, now=0)
    rv.revoke(ADMIN, ["n1"], 10, None, now=0)
    with pytest.raises(Conflict):
        rv.revoke(ADMIN, ["n1"], 10, None, now=1)
    with pytest.raises(Conflict):
        rv.restore(ADMIN, ["n1"], now=1)
    with pytest.raises(Forbidden):
        rv.set_values(BOB, [("n1", 0.5)], now=1)
    with pytest.raises(BadRequest):
        rv.set_values(ADMIN, [("n1", 1.5)], now=1)
    assert rv.ack(BOB, ["n2"], now=1) == []                # nothing pending there


def test_release_counts_as_an_answer():
    lab, cal, rv = make_lab()
    a = held(cal, ALICE, ["n1"], 0, 1000, now=0)
    rv.revoke(ADMIN, ["n1"], 60, None, now=0)
    lab.take_events()
    cal.release(ALICE, a.id, now=5)
    [done] = events(lab, DELETE_COMPLETE)
    assert done["final"] is True and rv.revocations == {}


def test_values_kept_and_published():
    lab, cal, rv = make_lab()
    assert rv.set_values(ADMIN, [("n1", 0.25), ("pool", 1.0)], now=0) == ["n1", "pool"]
    [ev] = events(lab, RESOURCE_VALUES)
    assert ev["nodelist"] == [{"node_id": "n1", "value": 0.25}, {"node_id": "pool", "value": 1.0}]
    assert {v["node_id"]: v["value"] for v in rv.values()} == {
        "n1": 0.25, "n2": None, "n3": None, "pool": 1.0}


def saved(lab, store):
    for kind, key, rec in lab.take_dirty():
        if rec is None:
            store.pop((kind, key), None)
        else:
            store[(kind, key)] = rec
    records = {}
    for (kind, _), rec in store.items():
        records.setdefault(kind, []).append(rec)
    return records


def test_countdown_resumes_after_restore_with_the_time_left():
    lab, cal, rv = make_lab()
    store = {}
    a = held(cal, ALICE, ["n1"], 0, 1000, now=0)
    rv.set_values(ADMIN, [("n2", 0.5)], now=0)
    rv.revoke(ADMIN, ["n1"], 60, "move", now=10)
    records = saved(lab, store)
    lab2, cal2, rv2 = make_lab()
    lab2.restore(records, now=40)
    lab2.advance(40)
    [notice] = events(lab2, DELETE_PENDING)
    assert notice["max_wait_time"] == 30 and notice["deadline"] == 70
    assert notice["nodelist"][0]["client_id"] == a.id
    assert not lab2.resources["n1"].in_service and lab2.resources["n2"].value == 0.5
    lab2.advance(70)
    assert lab2.reservations[a.id].state == states.ENDED
    records = saved(lab2, store)
    assert "revocation" not in records
    lab3, _, _ = make_lab()                               # deadline passed while down
    lab3.restore(records, now=100)
    assert not lab3.resources["n1"].in_service


def test_deadline_that_passed_while_down_is_acted_on_at_start():
    lab, cal, rv = make_lab()
    a = held(cal, ALICE, ["n1"], 0, 1000, now=0)
    rv.revoke(ADMIN, ["n1"], 60, None, now=10)
    lab2, _, rv2 = make_lab()
    lab2.restore(saved(lab, {}), now=500)
    lab2.advance(500)
    assert lab2.reservations[a.id].reason == "revoked" and rv2.revocations == {}
    assert [e.topic for e in lab2.take_events()][-1] == DELETE_COMPLETE


def test_maintenance_warns_holders_and_takes_the_window():
    lab, cal, rv = make_lab()
    using = held(cal, ALICE, ["n1"], 0, 250, now=0)           # in use into the window
    inside = cal.request(BOB, ["n1"], 300, 50, None, "exclusive", False, None, now=0)
    after = cal.request(BOB, ["n1"], 600, 50, None, "exclusive", False, None, now=0)
    lab.take_events()
    m = rv.maintenance(ADMIN, ["n1"], 200, 300, now=50)
    assert (m.kind, m.start, m.end, m.state) == ("maintenance", 200, 500, states.GRANTED)
    assert using.end == 200 and using.state == states.ACTIVE     # keeps what lies before
    assert inside.state == states.ENDED and inside.reason == "revoked"
    assert after.state == states.GRANTED                          # outside the window
    out = lab.take_events()
    notice = next(e.payload for e in out if e.topic == DELETE_PENDING)
    assert notice["deadline"] == 200 and notice["max_wait_time"] == 150
    assert {e["client_id"] for e in notice["nodelist"]} == {using.id,
                                                                             inside.id}
    lab.advance(200)
    assert using.state == states.ENDED and using.reason == "revoked"
    assert m.state == states.ACTIVE and lab.resources["n1"].in_service
    with pytest.raises(Unavailable):
        cal.request(BOB, ["n1"], 250, 10, None, "exclusive", False, None, now=200)


def test_maintenance_now_and_on_a_free_window():
    lab, cal, rv = make_lab()
    using = held(cal, ALICE, ["pool"], 0, 1000, now=0, mode="shared", slots=2)
    m = rv.maintenance(ADMIN, ["pool"], 0, 100, now=10)        # starts now: no grace
    assert using.reason == "revoked" and m.state == states.ACTIVE
    lab.take_events()
    rv.maintenance(ADMIN, ["n2"], 500, 100, now=10)
    assert [e.topic for e in lab.take_events()] == ["reservation.status"]   # no revocation


# --- properties ---

class RevocationMachine(RuleBasedStateMachine):
    """Random requests, claims, releases, revocations, answers, restores and maintenance
    windows over a moving clock. The timelines never hold overlapping exclusive bookings
    (nor more shared slots than there are), and no booking on a revoked node survives the
    revocation's deadline; and against a naive model of which nodes are out of service,
    what may be done is done: requests on nodes in service, revokes and restores of nodes
    not counting down, maintenance windows."""

    def __init__(self):
        super().__init__()
        self.lab, self.cal, self.rv = make_lab()
        self.now = 0.0
        self.ids = []
        self.deadlines = {}      # revocation id -> (deadline, nodes, takes out of service)
        self.out = set()         # nodes revoked and not restored since: the naive model

    def attempt(self, fn, *args):
        try:
            return fn(*args)
        except EngineError:
            return None

    @rule(who=st.sampled_from([ALICE, BOB]), names=st.lists(st.sampled_from(NODES), min_size=1,
                                                           max_size=2, unique=True),
          at=st.floats(0, 300), duration=st.floats(1, 300), shared=st.booleans())
    def request(self, who, names, at, duration, shared):
        r = self.attempt(self.cal.request, who, names, self.now + at, duration, None,
                         "shared" if shared else "exclusive", True, None, self.now)
        # next_available: granted exactly when every node is in service
        assert (r is not None) == self.out.isdisjoint(names), (names, self.out)
        if r is not None:
            self.ids.append(r.id)

    @rule(data=st.data())
    def claim_or_release(self, data):
        if self.ids:
            r = self.lab.reservations.get(data.draw(st.sampled_from(self.ids)))
            if r is not None:
                who = Caller(r.owner)
                action = data.draw(st.sampled_from([self.cal.claim, self.cal.release]))
                self.attempt(action, who, r.id, self.now)

    @rule(names=st.lists(st.sampled_from(NODES), min_size=1, max_size=3, unique=True),
          wait=st.sampled_from([0.0, 5.0, 30.0, 200.0]))
    def revoke(self, names, wait):
        counting = self.counting_down()
        rev = self.attempt(self.rv.revoke, ADMIN, names, wait, None, self.now)
        # refused exactly when a node named is already counting down
        assert (rev is None) == (not counting.isdisjoint(names)), (names, counting)
        if rev is not None:
            self.deadlines[rev.id] = (rev.deadline, names)
            self.out.update(names)

    def counting_down(self) -> set:
        """Nodes of the admin revocations this machine started that have not completed."""
        return {n for rid, (_, nodes) in self.deadlines.items() if rid in self.rv.revocations
                for n in nodes}

    @rule(who=st.sampled_from([ALICE, BOB, ADMIN]), names=st.lists(
        st.sampled_from(NODES), min_size=1, max_size=2, unique=True))
    def ack(self, who, names):
        self.attempt(self.rv.ack, who, names, self.now)

    @rule(names=st.lists(st.sampled_from(NODES), min_size=1, max_size=2, unique=True))
    def restore(self, names):
        counting = self.counting_down()
        restored = self.attempt(self.rv.restore, ADMIN, names, self.now)
        assert (restored is None) == (not counting.isdisjoint(names)), (names, counting)
        if restored is not None:
            assert sorted(restored) == sorted(self.out & set(names))
            self.out.difference_update(names)

    @rule(names=st.lists(st.sampled_from(NODES), min_size=1, max_size=2, unique=True),
          at=st.floats(0, 200), duration=st.floats(1, 200))
    def maintenance(self, names, at, duration):
        m = self.attempt(self.rv.maintenance, ADMIN, names, self.now + at, duration, self.now)
        assert m is not None                # an admin's window is always booked
        self.ids.append(m.id)

    @rule(dt=st.floats(0, 120))
    def tick(self, dt):
        self.now += dt
        self.lab.advance(self.now)

    @invariant()
    def no_overlapping_exclusive_bookings(self):
        for res in self.lab.resources.values():
            bookings = list(res.timeline)
            for i, a in enumerate(bookings):
                assert self.lab.reservations[a.reservation_id].state != states.ENDED
                for b in bookings[i + 1:]:
                    if a.start < b.end and b.start < a.end:
                        assert not (a.exclusive or b.exclusive), (res.name, a, b)
            for t in {b.start for b in bookings}:
                assert sum(b.slots for b in bookings if b.start <= t < b.end) <= res.slots

    @invariant()
    def no_booking_survives_a_deadline(self):
        """Checked when each revocation completes (at its deadline or earlier, when nobody
        is left to wait for); what is booked on the node after that is new."""
        for rid, (deadline, nodes) in list(self.deadlines.items()):
            if self.now >= deadline:
                assert rid not in self.rv.revocations
            if rid not in self.rv.revocations:
                for n in nodes:
                    assert not self.lab.resources[n].in_service
                    assert len(self.lab.resources[n].timeline) == 0, n
                del self.deadlines[rid]


TestRevocationMachine = RevocationMachine.TestCase
TestRevocationMachine.settings = settings(max_examples=100, stateful_step_count=40,
                                          deadline=None)


def test_maintenance_window_is_booked_before_waiting_checkouts_are_served():
    from atsd.engine.pool import Pool, Waiter
    lab = Lab([ResourceDef("gpus/0", "gpus", slots=1)], claim_window_s=1000)
    pool, rv = Pool(lab), Revocations(lab, countdown_interval_s=10)
    bob = pool.checkout(BOB, [("gpus", 1)], 3600, now=0)
    waiting = pool.checkout(ALICE, [("gpus", 1)], 3600, now=0, wait_s=100)
    assert isinstance(waiting, Waiter)
    rv.maintenance(ADMIN, ["gpus/0"], 0, 1000, now=0)   # takes bob's slot at once
    assert lab.reservations[bob.id].state == states.ENDED
    assert waiting.result is None                        # not given a piece of the window
    kinds = [lab.reservations[b.reservation_id].kind for b in lab.resources["gpus/0"].timeline]
    assert kinds == ["maintenance"]


def test_a_reservation_on_two_revocations_completes_both():
    lab, cal, rv = make_lab()
    both = held(cal, ALICE, ["n1", "n2"], 0, 1000, now=0)
    first = rv.revoke(ADMIN, ["n1"], 100, None, now=0)
    second = rv.revoke(ADMIN, ["n2"], 500, None, now=0)
    lab.take_events()
    rv.ack(ALICE, ["n1"], now=10)
    assert lab.reservations[both.id].state == states.ENDED
    done = [e["revocation_id"] for e in events(lab, DELETE_COMPLETE) if e["final"]]
    assert sorted(done) == sorted([first.id, second.id])
    assert rv.revocations == {}
