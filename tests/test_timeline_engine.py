"""The timeline's indexes (length classes, load profile, configs by start) against a naive
reference that scans every booking, on random adds, removes, restarts and queries."""

from hypothesis import given, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from atsd.engine import profile
from atsd.engine.batch import Batch
from atsd.engine.errors import Unavailable
from atsd.engine.lab import Lab, ResourceDef
from atsd.engine.timeline import Booking, Timeline

CONFIGS = st.sampled_from([None, None, {"fw": "a"}, {"fw": "b"}])
# a coarse grid gives many bookings that meet or share ends; fractions, long ones, and
# epoch-sized times (where t + length rounds) too
TIMES = st.one_of(st.integers(0, 300).map(float), st.floats(0, 300, allow_nan=False),
                  st.floats(0, 300).map(lambda t: 1795700000.123 + t))
LENGTHS = st.one_of(st.integers(1, 40).map(float), st.floats(0.001, 5),
                    st.sampled_from([500.0, 10_000.0]))


def naive_overlapping(bookings, start, end, ignore=None):
    return [b for b in bookings
            if b.start < end and b.end > start and b.reservation_id != ignore]


def naive_load(bookings, capacity, t):
    return sum(capacity if b.exclusive else b.slots
               for b in bookings if b.start <= t < b.end)


def naive_fits(bookings, capacity, start, end, slots, exclusive, config):
    others = naive_overlapping(bookings, start, end)
    if slots > capacity:
        return False
    if not others:
        return True
    if exclusive or any(b.exclusive for b in others):
        return False
    if any(b.config is not None and config is not None and b.config != config
           for b in others):
        return False
    instants = [start] + [b.start for b in others if b.start > start]
    return all(naive_load(others, capacity, t) + slots <= capacity for t in instants)


def naive_earliest(bookings, capacity, after, duration, slots, exclusive, config):
    """Room can only appear at ``after`` or where a booking ends."""
    for t in sorted({after} | {b.end for b in bookings if b.end > after}):
        if naive_fits(bookings, capacity, t, t + duration, slots, exclusive, config):
            return t
    return None


def scan_next_fit(steps: dict, after, length, limit):
    """The first of ``after`` and the later steps where the load stays low long enough."""
    def load(t):
        return sum(d for x, d in steps.items() if x <= t)
    for t in [after] + sorted(x for x in steps if x > after):
        if all(load(x) <= limit for x in [t] + [x for x in steps if t < x < t + length]):
            return t
    return None


@settings(max_examples=300, deadline=None)
@given(chunk=st.sampled_from([1, 2, 3, 8]),
       spans=st.lists(st.tuples(st.integers(0, 400), st.integers(1, 40), st.integers(1, 3)),
                      max_size=150),
       dropped=st.sets(st.integers(0, 149)), rebuild=st.booleans(),
       queries=st.lists(st.tuples(st.floats(-5, 450), st.sampled_from([0.5, 1, 3, 10, 30]),
                                  st.integers(0, 4)), min_size=1, max_size=20))
def test_profile_next_fit_matches_a_scan(chunk, spans, dropped, rebuild, queries):
    """Enough steps for many chunks and tree levels; removals leave chunks to merge away."""
    profile.CHUNK = chunk
    try:
        p = profile.Profile()
        steps: dict = {}
        for s, length, w in spans:
            for x, d in ((s, w), (s + length, -w)):
                p.add([(x, d)])
                steps[x] = steps.get(x, 0) + d
        for i in dropped:
            if i < len(spans):
                s, length, w = spans[i]
                for x, d in ((s, -w), (s + length, w)):
                    p.add([(x, d)])
                    steps[x] = steps.get(x, 0) + d
        steps = {x: d for x, d in steps.items() if d}
        if rebuild:
            p.build(steps)
        assert p.steps() == sorted(steps.items())
        for after, length, limit in queries:
            expect = scan_next_fit(steps, after, length, limit)
            assert p.next_fit(after, length, limit) == expect
            assert p.low_throughout(after, length, limit) == (expect == after)
    finally:
        profile.CHUNK = 32


@settings(max_examples=200, deadline=None)
@given(chunk=st.sampled_from([1, 2, 8]),
       spans=st.lists(st.tuples(st.integers(0, 3), st.integers(1, 40)), min_size=1,
                      max_size=120),
       changes=st.lists(st.tuples(st.integers(0, 2500), st.integers(1, 40), st.booleans(),
                                  st.floats(-5, 2500), st.sampled_from([2, 4, 6, 50])),
                        max_size=15))
def test_profile_crowded_next_fit_matches_a_scan(chunk, spans, changes):
    """A crowded calendar (gaps shorter than the window asked), answered from the whole
    profile's staircase, stays right as bookings come and go anywhere in it (each change
    rebuilds the staircases on its path only)."""
    profile.CHUNK = chunk
    try:
        steps: dict = {}
        t = 0
        for gap, length in spans:
            for x, d in ((t + gap, 2), (t + gap + length, -2)):
                steps[x] = steps.get(x, 0) + d
            t += gap + length
        steps = {x: d for x, d in steps.items() if d}
        p = profile.Profile()
        p.build(steps)
        made = []
        for s, length, remove, after, window in changes:
            if remove and made:
                s, length = made.pop()
                pair = [(s, -2), (s + length, 2)]
            else:
                made.append((s, length))
                pair = [(s, 2), (s + length, -2)]
            p.add(pair)
            for x, d in pair:
                steps[x] = steps.get(x, 0) + d
            steps = {x: d for x, d in steps.items() if d}
            assert p.next_fit(after, window, 0) == scan_next_fit(steps, after, window, 0)
            assert p.next_fit(after, window, 2) == scan_next_fit(steps, after, window, 2)
    finally:
        profile.CHUNK = 32


class TimelineMachine(RuleBasedStateMachine):
    @initialize(capacity=st.sampled_from([1, 3]), chunk=st.sampled_from([1, 2, 32]))
    def setup(self, capacity, chunk):
        profile.CHUNK = chunk                 # small chunks: many tree nodes, splits, merges
        self.capacity = capacity
        self.tl = Timeline(capacity)
        self.bookings = []                   # in the order added
        self.count = 0

    def teardown(self):
        profile.CHUNK = 32

    def _booking(self, start, length, slots, exclusive, config):
        self.count += 1
        return Booking(f"r{self.count}", "x", start, start + length,
                       self.capacity if exclusive else min(slots, self.capacity),
                       exclusive, config)

    @rule(start=TIMES, length=LENGTHS, slots=st.integers(1, 3), exclusive=st.booleans(),
          config=CONFIGS)
    def add_fitting(self, start, length, slots, exclusive, config):
        """What the engine does: book only where it fits."""
        b = self._booking(start, length, slots, exclusive, config)
        if naive_fits(self.bookings, self.capacity, b.start, b.end, b.slots, exclusive, config):
            self.tl.add(b)
            self.bookings.append(b)

    @rule(start=TIMES, length=LENGTHS, slots=st.integers(1, 3), exclusive=st.booleans(),
          config=CONFIGS)
    def add_over(self, start, length, slots, exclusive, config):
        """Maintenance books over others, and a restart may bring back overlaps."""
        b = self._booking(start, length, slots, exclusive, config)
        self.tl.add(b)
        self.bookings.append(b)

    @precondition(lambda self: self.bookings)
    @rule(i=st.integers(0, 10_000))
    def remove(self, i):
        b = self.bookings.pop(i % len(self.bookings))
        self.tl.remove(b)

    @precondition(lambda self: self.bookings)
    @rule(i=st.integers(0, 10_000), more=st.floats(0.5, 50))
    def extend(self, i, more):
        b = self.bookings.pop(i % len(self.bookings))
        self.tl.remove(b)
        b.end += more
        self.tl.add(b)
        self.bookings.append(b)

    @rule()
    def restart(self):
        self.tl = Timeline(self.capacity)
        self.tl.add_many(list(self.bookings))

    @rule(after=TIMES, duration=LENGTHS, slots=st.integers(1, 4), exclusive=st.booleans(),
          config=CONFIGS)
    def earliest_fit(self, after, duration, slots, exclusive, config):
        assert (self.tl.earliest_fit(after, duration, slots, exclusive, config)
                == naive_earliest(self.bookings, self.capacity, after, duration, slots,
                                  exclusive, config))

    @rule(start=TIMES, length=LENGTHS, slots=st.integers(1, 4), exclusive=st.booleans(),
          config=CONFIGS)
    def fits_and_free(self, start, length, slots, exclusive, config):
        end = start + length
        assert (self.tl.fits(start, end, slots, exclusive, config)
                == naive_fits(self.bookings, self.capacity, start, end, slots, exclusive,
                              config))
        assert ({id(b) for b in self.tl.overlapping(start, end)}
                == {id(b) for b in naive_overlapping(self.bookings, start, end)})
        # check_available asks only for the earliest window: at ``start`` exactly when free
        assert ((self.tl.earliest_fit(start, end - start, slots, exclusive) == start)
                == self.tl.fits(start, end, slots, exclusive))

    @rule(t=TIMES)
    def at_an_instant(self, t):
        assert self.tl.used_slots(t) == naive_load(self.bookings, self.capacity, t)
        configured = [b for b in self.bookings if b.config is not None and b.start <= t]
        latest = max((b.start for b in configured), default=None)
        # equal starts: the one added last (an extension re-adds)
        expect = next((b.config for b in reversed(configured) if b.start == latest), "now")
        assert self.tl.config_at(t, "now") == expect

    @invariant()
    def same_bookings(self):
        assert len(self.tl) == len(self.bookings)
        starts = [b.start for b in self.tl]
        assert starts == sorted(starts)


TestTimelineMachine = TimelineMachine.TestCase
TestTimelineMachine.settings = settings(max_examples=200, stateful_step_count=40,
                                        deadline=None)


@settings(max_examples=200, deadline=None)
@given(hosts=st.integers(1, 4), count=st.integers(1, 4),
       spans=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 200), st.integers(1, 60)),
                      max_size=40),
       now=st.integers(0, 150), wall=st.sampled_from([1.0, 10.0, 30.0, 100.0]),
       deadline=st.integers(0, 400))
def test_batch_earliest_matches_a_scan_of_booking_ends(hosts, count, spans, now, wall,
                                                       deadline):
    """The batch search by each host's next fit finds what trying every booking end does."""
    names = [f"h{i}" for i in range(hosts)]
    lab = Lab([ResourceDef(n, "host") for n in names])
    batch = Batch(lab, {"q": names}, set())
    booked = {n: [] for n in names}
    for i, (h, s, length) in enumerate(spans):
        name = names[h % hosts]
        b = Booking(f"b{i}", name, float(s), float(s + length), 1, True)
        if naive_fits(booked[name], 1, b.start, b.end, 1, True, None):
            lab.resources[name].timeline.add(b)
            booked[name].append(b)
    expect = None
    latest = deadline - wall
    for t in sorted({float(now)} | {b.end for bs in booked.values() for b in bs}):
        free = [n for n in names if naive_fits(booked[n], 1, t, t + wall, 1, True, None)]
        if t >= now and t <= latest and len(free) >= count:
            expect = (t, free[:count])
            break
    if count > hosts:
        return
    try:
        found = batch.earliest("q", count, wall, float(now), float(deadline))
    except Unavailable:
        found = None
    assert found == expect
