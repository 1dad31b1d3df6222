"""A failed commit puts the engine back as the store has it (``App.revert``), at simulated
times: whatever a group did (calendar, selectors, series, pool, revocation, maintenance,
service state, batch, the clock), the state after the revert is exactly the state at the
last commit, and its timers are back too: long after, it is where an engine rebuilt from the
store would be."""

from collections import Counter

import msgpack
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from atsd.app import App
from atsd.config import Config, QueueDef
from atsd.engine.errors import EngineError
from atsd.engine.lab import Caller, Quotas, Reservation, ResourceDef
from atsd.engine.pool import Waiter
from atsd.engine.service import ADMIN as ADMIN_BY, HEALTH
from atsd.eventlog import EventLog

ALICE, BOB, ADMIN = Caller("alice"), Caller("bob"), Caller("root", admin=True)
NODES = ["n1", "n2", "gpus/0", "gpus/1", "h1", "h2"]
DAY = 86400.0


def make_app() -> App:
    """The daemon's engines, wired as the daemon wires them, over a small lab."""
    tags = {"usb": "yes"}
    config = Config(
        resources=[ResourceDef("n1", "node", config={"fw": 1}, tags=tags),
                   ResourceDef("n2", "node", tags=tags), ResourceDef("gpus/0", "gpus", 2),
                   ResourceDef("gpus/1", "gpus", 1), ResourceDef("h1", "host"),
                   ResourceDef("h2", "host")],
        queues={"q": QueueDef("q", "local", hosts=["h1", "h2"])},
        claim_window_s=3, expiring_notice_s=2, history_s=15, countdown_interval_s=2,
        quotas=Quotas(max_reservations_per_user=6, max_booking_s=40), timezone="UTC")
    return App(config, EventLog(10, 0, []))


def state(app: App) -> tuple:
    lab = app.lab
    keys = {"reservation": list(lab.reservations), "resource": list(lab.resources),
            "revocation": list(app.revocations.revocations), "job": list(app.batch.jobs)}
    records = {kind: {key: lab.tables[kind][0](key) for key in sorted(keys[kind])}
               for kind in keys}
    timelines = {name: sorted((b.reservation_id, b.start, b.end, b.slots, b.exclusive)
                              for b in res.timeline) for name, res in lab.resources.items()}
    waiting = Counter(w.owner for w in app.pool.waiters)     # not state: not stored
    return records, timelines, dict(Counter(lab.held) - waiting)


class RevertMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.app = make_app()
        self.now = 0.0
        self.store: dict[tuple[str, str], dict] = {}
        self.ids: list[str] = []
        self.waiters: list[Waiter] = []
        self.commit()

    def _try(self, fn, *args):
        try:
            r = fn(*args)
        except EngineError:
            return None
        if isinstance(r, Reservation):
            self.ids.append(r.id)
        return r

    def _pick(self, i: int) -> str:
        return self.ids[i % len(self.ids)]

    # --- what a group may do ---

    @rule(node=st.sampled_from(NODES[:4]), start=st.sampled_from([0.0, 2.0, 10.0]),
          duration=st.sampled_from([1.0, 5.0, 30.0]), who=st.sampled_from([ALICE, BOB]),
          config=st.sampled_from([None, {"fw": 2}]))
    def request(self, node, start, duration, who, config):
        self._try(self.app.calendar.request, who, [node], self.now + start, duration,
                  config, "exclusive", True, None, self.now)

    @precondition(lambda self: self.ids)
    @rule(i=st.integers(0, 50), what=st.sampled_from(["claim", "release", "extend"]))
    def act(self, i, what):
        cal, rid = self.app.calendar, self._pick(i)
        if what == "extend":
            self._try(cal.extend, ADMIN, rid, 3.0, self.now)
        else:
            self._try(getattr(cal, what), ADMIN, rid, self.now)

    @rule(slots=st.integers(1, 3), lease=st.sampled_from([2.0, 8.0]),
          wait=st.sampled_from([0.0, 4.0]), who=st.sampled_from([ALICE, BOB]))
    def checkout(self, slots, lease, wait, who):
        got = self._try(self.app.pool.checkout, who, [("gpus", slots)], lease, self.now,
                        wait)
        if isinstance(got, Waiter):
            self.waiters.append(got)

    @rule(nodes=st.sampled_from([["n1"], ["gpus/0"], ["n2", "gpus/1"]]),
          wait=st.sampled_from([0.0, 3.0]))
    def revoke(self, nodes, wait):
        self._try(self.app.revocations.revoke, ADMIN, nodes, wait, "test", self.now)

    @rule(nodes=st.sampled_from([["n1"], ["gpus/0"], ["n2", "gpus/1"]]))
    def restore(self, nodes):
        self._try(self.app.revocations.restore, ADMIN, nodes, self.now)

    @rule(node=st.sampled_from(NODES), value=st.sampled_from([0.0, 0.5]))
    def set_value(self, node, value):
        self._try(self.app.revocations.set_values, ADMIN, [(node, value)], self.now)

    @rule(node=st.sampled_from(NODES[:4]), start=st.sampled_from([0.0, 4.0]))
    def maintenance(self, node, start):
        self._try(self.app.revocations.maintenance, ADMIN, [node], self.now + start, 5.0,
                  self.now)

    @rule(start=st.sampled_from([0.0, 3.0]), hosts=st.integers(1, 2))
    def batch(self, start, hosts):
        b = self.app.batch
        placed = self._try(b.place, "q", hosts, self.now + start, 6.0)
        if placed:
            r = self._try(b.grant, ALICE, "q", placed, self.now + start, self.now + start + 6,
                          self.now)
            if r is not None:
                self._try(b.submit, ALICE, r.id, "job.sh", [], self.now)

    @rule(node=st.sampled_from(NODES), up=st.booleans(), by=st.sampled_from([ADMIN_BY, HEALTH]))
    def service(self, node, up, by):
        self._try(self.app.service.set_state, node, up, "test", by, self.now)

    @rule(count=st.integers(1, 2), start=st.sampled_from([0.0, 2.0]))
    def select(self, count, start):
        self._try(self.app.selection.request, BOB, "usb", count, self.now + start, 4.0, None,
                  "exclusive", True, None, self.now)

    @rule(selector=st.sampled_from([None, "usb"]))
    def series(self, selector):
        self._try(self.app.series.request, ALICE, None if selector else ["n2"], selector, 1,
                  self.now + 1, 2.0, None, "exclusive", None, "FREQ=DAILY;COUNT=2",
                  True, self.now)

    @rule(dt=st.sampled_from([0.5, 1.0, 3.0, 8.0]))
    def tick(self, dt):
        self.now += dt
        self.app.lab.advance(self.now)

    @invariant()
    def no_checkout_waits_for_what_it_could_have(self):
        """Whatever gave slots back (an end, a restore, a resource brought up) was followed
        through before the call that made it returned: no waiting checkout that the pool
        would grant now is left waiting."""
        pool = self.app.pool
        for w in pool.waiters:
            placed, _ = pool._offer(w.request, w.order, w.lease_s, self.now)
            assert placed is None, w

    # --- the end of a group ---

    @rule()
    def commit(self):
        lab = self.app.lab
        for kind, key, rec in lab.take_dirty():
            if rec is None:
                self.store.pop((kind, key), None)
            else:
                self.store[(kind, key)] = rec
        lab.take_events()
        self.committed = state(self.app)

    @rule()
    def commit_fails(self):
        lab = self.app.lab
        changed = lab.take_dirty()
        lab.take_events()
        generation = self.app.generation
        self.app.revert([(kind, key, _copy(self.store.get((kind, key))))
                         for kind, key, _ in changed], self.now)
        assert self.app.generation == generation + 1
        assert state(self.app) == self.committed
        assert all(w.result is not None for w in self.waiters)
        assert self.app.pool.waiters == []
        # every record put back has its timers again: long after, nothing is left over
        # that an engine rebuilt from the store would have ended, completed and forgotten
        # (how each ended may differ: a rebuilt engine sends a revocation notice at once,
        # and a notice that comes after the deadline takes the holders)
        rebuilt = make_app()
        by_kind: dict[str, list] = {}
        for (kind, _), rec in sorted(self.store.items()):
            by_kind.setdefault(kind, []).append(_copy(rec))
        rebuilt.lab.restore(by_kind, self.now)
        for jump in (2 * DAY, 100):     # everything has ended, then is forgotten
            self.now += jump
            for app in (self.app, rebuilt):
                app.lab.advance(self.now)
        assert state(self.app) == state(rebuilt)
        assert self.app.lab.reservations == {} and self.app.batch.jobs == {}
        self.commit()


def _copy(rec: dict | None) -> dict | None:
    """A record as the store would hand it out: a fresh object each time."""
    return None if rec is None else msgpack.unpackb(msgpack.packb(rec), strict_map_key=False)


RevertMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40,
                                           deadline=None)
test_revert_machine = RevertMachine.TestCase
