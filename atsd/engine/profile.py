"""A resource's load over time, searchable for the first window where it stays low enough.

The load is a step function kept as its steps: at time ``x`` it changes by ``delta`` (a
booking ``[s, e)`` of weight ``w`` is ``+w`` at ``s`` and ``-w`` at ``e``). The question asked
of it is ``next_fit(after, length, limit)``: the earliest ``t >= after`` with the load at most
``limit`` all through ``[t, t + length)``. Walking the steps one by one is what made a dense
calendar slow; instead every subtree of a balanced tree knows, for every limit, where its
first too-high step is, where its last low run starts and how long its longest low run is,
so whole subtrees are stepped over and a search costs O(log n) whatever the calendar holds.

Those facts are kept relative to the load the subtree starts from, so a change updates only
the subtrees on one path (no lazy range updates): each is a staircase over the distinct
relative load levels inside the subtree, a handful for a board or a small slot count.

The tree is a treap of chunks of up to ``2 * CHUNK`` consecutive steps: a chunk is scanned
linearly, which in Python is cheaper than one tree level per step and keeps the memory of
100k bookings small.
"""

from __future__ import annotations

import random
from bisect import bisect_left, bisect_right

CHUNK = 32
_INF = float("inf")
# A window fits when the next high step is at or after ``start + length``, computed as the
# bookings compute their ends; a low run whose stored length is this close to enough is
# looked into, so that rounding in the stored length never hides a window that fits.
ROUNDING = 1e-3
_RNG = random.Random(0)     # treap priorities; seeded so that runs repeat


class Steps:
    """What a run of consecutive steps looks like at each limit ``th`` (relative to the load
    before its first step). For ``lv[j] <= th < lv[j+1]``, ``rows[j]`` is ``(pre, suf,
    best)``: ``pre`` the first step after which the load exceeds ``th`` (None: never);
    ``suf`` the start of the low run that lasts to the last step (None: the load after the
    last step exceeds ``th``); ``best`` the longest low run that starts and ends at steps
    inside with a high step before it. A level whose row is the one below it is left out,
    so a staircase stays as short as what differs in it."""

    __slots__ = ("first", "total", "lv", "rows")

    def __init__(self, first: float, total: int, lv: list, rows: list) -> None:
        self.first, self.total, self.lv, self.rows = first, total, lv, rows

    def at(self, th: int) -> tuple:
        j = bisect_right(self.lv, th) - 1
        return self.rows[j] if j >= 0 else (self.first, None, 0.0)


def _scan(xs: list, ds: list) -> Steps:
    """The staircase of one chunk, one linear pass per level."""
    levels = []
    level = 0
    for d in ds:
        level += d
        levels.append(level)
    lv, rows = [], []
    last = None
    for th in sorted(set(levels)):
        pre = run = None
        best = 0.0
        blocked = False
        for x, level in zip(xs, levels, strict=True):
            if level <= th:
                if run is None:
                    run = x
            else:
                if pre is None:
                    pre = x
                if run is not None:
                    if blocked and x - run > best:
                        best = x - run
                    run = None
                blocked = True
        row = (pre, run, best)
        if row != last:
            lv.append(th)
            rows.append(row)
            last = row
    return Steps(xs[0], level, lv, rows)


def _join(a: Steps | None, b: Steps | None) -> Steps | None:
    """The staircase of ``a``'s steps followed by ``b``'s: one walk over both staircases'
    levels (``b``'s shifted by where ``a`` leaves the load)."""
    if a is None:
        return b
    if b is None:
        return a
    shift = a.total
    alv, arows, na = a.lv, a.rows, len(a.lv)
    blv, brows, nb = b.lv, b.rows, len(b.lv)
    first_b = b.first
    lv, rows = [], []
    last = None
    row_a = (a.first, None, 0.0)      # below every level: all too high
    row_b = (first_b, None, 0.0)
    i = j = 0
    while i < na or j < nb:
        next_a = alv[i] if i < na else _INF
        next_b = blv[j] + shift if j < nb else _INF
        if next_a <= next_b:
            th = next_a
            row_a = arows[i]
            i += 1
        else:
            th = next_b
        if next_b == th:
            row_b = brows[j]
            j += 1
        pre_a, suf_a, best_a = row_a
        pre_b, suf_b, best_b = row_b
        best = best_a if best_a > best_b else best_b
        if pre_a is not None and pre_b is not None:
            across = pre_b - (suf_a if suf_a is not None else first_b)
            if across > best:
                best = across
        if pre_b is None:
            row = (pre_a if pre_a is not None else pre_b,
                   suf_a if suf_a is not None else first_b, best)
        else:
            row = (pre_a if pre_a is not None else pre_b, suf_b, best)
        if row != last:
            lv.append(th)
            rows.append(row)
            last = row
    return Steps(a.first, shift + b.total, lv, rows)


class _Node:
    """A chunk of steps and the treap subtree it heads. The subtree's first step and total
    change are kept up to date; the staircases are worked out when a search needs them (so
    a booking made and released before the next search costs one recomputation, not two)."""

    __slots__ = ("xs", "ds", "prio", "left", "right", "chunk_total", "first", "total",
                 "_own", "_all", "_head", "_head_of")

    def __init__(self, xs: list, ds: list, prio: float) -> None:
        self.xs, self.ds, self.prio = xs, ds, prio
        self.left = self.right = None
        self._own = self._all = self._head = None
        self._head_of = (None, None)
        self.chunk_total = sum(ds)
        if xs:
            self.pull()

    def pull(self) -> None:
        """After a change to this chunk or below it."""
        left, right = self.left, self.right
        total = self.chunk_total
        if left is not None:
            self.first = left.first
            total += left.total
        else:
            self.first = self.xs[0]
        if right is not None:
            total += right.total
        self.total = total
        self._all = None

    @property
    def own(self) -> Steps:
        if self._own is None:
            self._own = _scan(self.xs, self.ds)
        return self._own

    @property
    def all(self) -> Steps:
        """The subtree's staircase. The left subtree joined with this chunk (``_head``) is
        kept apart, for the staircases it was made from: a change on the right (where new
        bookings go) then costs one join here, not two."""
        if self._all is None:
            left, right = self.left, self.right
            of = (left.all if left is not None else None, self.own)
            head_of = self._head_of
            if head_of[0] is not of[0] or head_of[1] is not of[1]:
                self._head, self._head_of = _join(*of), of
            self._all = _join(self._head, right.all if right is not None else None)
        return self._all


def _merge(a: _Node | None, b: _Node | None) -> _Node | None:
    if a is None:
        return b
    if b is None:
        return a
    if a.prio > b.prio:
        a.right = _merge(a.right, b)
        a.pull()
        return a
    b.left = _merge(a, b.left)
    b.pull()
    return b


def _rotate_right(n: _Node) -> _Node:
    top = n.left
    n.left = top.right
    n.pull()
    top.right = n
    top.pull()
    return top


def _rotate_left(n: _Node) -> _Node:
    top = n.right
    n.right = top.left
    n.pull()
    top.left = n
    top.pull()
    return top


def _settle(n: _Node) -> _Node:
    """``n`` after a change below it: a chunk split off below may belong above it, so it
    is rotated up (treap order); the subtree's new head."""
    if n.left is not None and n.left.prio > n.prio:
        return _rotate_right(n)
    if n.right is not None and n.right.prio > n.prio:
        return _rotate_left(n)
    n.pull()
    return n


def _put_first(t: _Node | None, n: _Node) -> _Node:
    """Insert ``n``, whose steps come before all of ``t``'s."""
    if t is None:
        return n
    if n.prio > t.prio:
        n.right = t
        n.pull()
        return n
    t.left = _put_first(t.left, n)
    t.pull()
    return t


def _build(chunks: list, lo: int, hi: int) -> _Node | None:
    if lo >= hi:
        return None
    mid = (lo + hi) // 2
    n = _Node(*chunks[mid], 0.0)
    n.left = _build(chunks, lo, mid)
    n.right = _build(chunks, mid + 1, hi)
    n.pull()
    return n


def _apply(n: _Node, changes: list) -> None:
    """Add ``(time, change)`` pairs that fall in ``n``'s own chunk: a step at a time already
    there changes (and goes when it comes to 0), a new time is inserted in order."""
    xs, ds = n.xs, n.ds
    for x, delta in changes:
        n.chunk_total += delta
        i = bisect_left(xs, x)
        if i < len(xs) and xs[i] == x:
            ds[i] += delta
            if ds[i] == 0:
                del xs[i], ds[i]
        else:
            xs.insert(i, x)
            ds.insert(i, delta)


class Profile:
    """The load of one resource over time (0 before the first step and after the last)."""

    __slots__ = ("_root", "_crowded")

    def __init__(self) -> None:
        self._root: _Node | None = None
        self._crowded = True      # whether the last search was answered by the whole staircase

    def _nodes(self, n):
        if n is not None:
            yield from self._nodes(n.left)
            yield n
            yield from self._nodes(n.right)

    def steps(self) -> list[tuple[float, int]]:
        """``(time, change)`` in time order: what the tests hold against their own count."""
        return [(x, d) for n in self._nodes(self._root) for x, d in zip(n.xs, n.ds, strict=True)]

    def build(self, deltas: dict[float, int]) -> None:
        """Start over from ``{time: change}`` (a restart): O(n), not n insertions."""
        items = sorted((x, d) for x, d in deltas.items() if d)
        chunks = [([x for x, _ in items[i:i + CHUNK]], [d for _, d in items[i:i + CHUNK]])
                  for i in range(0, len(items), CHUNK)]
        self._root = _build(chunks, 0, len(chunks))
        # treap priorities in heap order: breadth first, each node below its parent
        level = [self._root] if self._root else []
        prios = sorted((_RNG.random() for _ in chunks), reverse=True)
        i = 0
        while level:
            for n in level:
                n.prio = prios[i]
                i += 1
            level = [c for n in level for c in (n.left, n.right) if c is not None]

    def add(self, changes: list[tuple[float, int]]) -> None:
        """The load changes by ``delta`` more at each ``(x, delta)`` of ``changes`` (sorted
        by x): one descent for all, so a booking's start and end share their common path."""
        changes = [c for c in changes if c[1]]
        if changes:
            self._root = self._add(self._root, changes)

    def _add(self, n: _Node | None, changes: list) -> _Node | None:
        """Apply ``changes`` in subtree ``n``; its new head. The way down to where the
        changes part (often a chunk holding them all) is a loop, not one call per level."""
        path = []
        while n is not None:
            if n.left is not None and changes[-1][0] < n.xs[0]:
                path.append((n, True))
                n = n.left
            elif n.right is not None and changes[0][0] >= n.right.first:
                path.append((n, False))
                n = n.right
            else:
                break
        n = self._add_here(n, changes)
        for parent, went_left in reversed(path):
            if went_left:
                parent.left = n
            else:
                parent.right = n
            n = _settle(parent)
        return n

    def _add_here(self, n: _Node | None, changes: list) -> _Node | None:
        if n is None:
            n = _Node([], [], _RNG.random())
        lo, hi = 0, len(changes)
        left, right = n.left, n.right
        if left is not None:
            x0 = n.xs[0]
            while lo < hi and changes[lo][0] < x0:
                lo += 1
            if lo:
                n.left = self._add(left, changes[:lo])
        if right is not None:
            first = right.first
            while hi > lo and changes[hi - 1][0] >= first:
                hi -= 1
            if hi < len(changes):
                n.right = self._add(right, changes[hi:])
        if lo < hi:
            xs, ds = n.xs, n.ds
            _apply(n, changes[lo:hi])
            if not xs:
                return _merge(n.left, n.right)
            while len(xs) > 2 * CHUNK:
                tail = _Node(xs[-CHUNK:], ds[-CHUNK:], _RNG.random())
                del xs[-CHUNK:], ds[-CHUNK:]
                n.chunk_total -= tail.chunk_total
                n.right = _put_first(n.right, tail)
            n._own = None
        return _settle(n)

    def next_fit(self, after: float, length: float, limit: int) -> float | None:
        """The earliest ``t >= after`` with the load at most ``limit`` throughout
        ``[t, t + length)``; None only if the load never comes down to ``limit``.

        When no low run between two too-high steps is long enough anywhere (a crowded
        calendar), the whole profile's staircase answers at once: the window is at
        ``after`` if the load stays low long enough from there, else after the last
        too-high step. That staircase costs a join per node a change passed since it was
        last worked out, so it is asked only while it is known or was of use last time."""
        root = self._root
        if root is not None and (self._crowded or root._all is not None):
            pre, suf, best = root.all.at(limit)
            self._crowded = best < length - ROUNDING and suf is not None
            if self._crowded:
                if pre is None or after >= suf or (after < pre and pre >= after + length):
                    return after
                return suf
        return self._sweep(_Search(length, limit, False), after)

    def low_throughout(self, start: float, length: float, limit: int) -> bool:
        """Whether the load stays at most ``limit`` throughout ``[start, start + length)``:
        the same sweep, given up at the first step too high."""
        try:
            return self._sweep(_Search(length, limit, True), start) == start
        except _Busy:
            return False

    def _sweep(self, search: _Search, after: float) -> float | None:
        found = search.after(self._root, after)
        return found if found is not None else search.run   # the load after the last step


class _Busy(Exception):
    """A sweep asked only about its first window found a step too high in it."""


class _Search:
    """A left-to-right sweep over the steps after ``after``, holding where the current low
    run started (None inside a high stretch) and the load so far. The way down to ``after``
    adds up the load there. ``first_only``: the sweep raises _Busy as soon as the window at
    ``after`` is known not to fit."""

    __slots__ = ("length", "limit", "first_only", "run", "level")

    def __init__(self, length: float, limit: int, first_only: bool) -> None:
        self.length, self.limit, self.first_only = length, limit, first_only
        self.run, self.level = None, 0

    def _begin(self, t: float) -> None:
        """The sweep starts at ``t``, with the load there summed up."""
        if self.level <= self.limit:
            self.run = t
        elif self.first_only:
            raise _Busy

    def after(self, n: _Node | None, t: float) -> float | None:
        """Sweep the steps of subtree ``n`` later than ``t`` (``level``: the load before
        the subtree). The way down to ``t`` is a loop; the chunks it passed on their left
        (they and their right subtrees come after ``t``) are swept on the way back."""
        passed = []
        level = self.level
        found = None
        while n is not None:
            left = n.left
            if n.xs[0] > t:
                passed.append(n)
                n = left
                continue
            right = n.right
            if right is not None and right.first <= t:
                # this chunk and all left of it are at or before t
                level += (left.total if left is not None else 0) + n.chunk_total
                n = right
                continue
            # t falls inside this chunk: its later steps, then right
            i = bisect_right(n.xs, t)
            self.level = level + (left.total if left is not None else 0) + sum(n.ds[:i])
            self._begin(t)
            found = self._steps(n.xs, n.ds, i)
            if found is None:
                found = self.whole(right)
            break
        else:
            self.level = level
            self._begin(t)
        for n in reversed(passed):
            if found is not None:
                return found
            found = self._chunk(n)
            if found is None:
                found = self.whole(n.right)
        return found

    def whole(self, n: _Node | None) -> float | None:
        """Sweep all of subtree ``n``, stepping over it when the answer is not in it."""
        if n is None:
            return None
        found = self._over(n.all)
        if found is not False:
            return found
        found = self.whole(n.left)
        if found is None:
            found = self._chunk(n)
        return found if found is not None else self.whole(n.right)

    def _chunk(self, n: _Node) -> float | None:
        found = self._over(n.own)
        return self._steps(n.xs, n.ds, 0) if found is False else found

    def _over(self, s: Steps) -> float | None | bool:
        """Step over ``s`` in O(1): the answer if it is where the current run ends, None if
        the answer is not in ``s`` (the sweep moves past it), False if it is deeper inside."""
        pre, suf, best = s.at(self.limit - self.level)
        start = self.run if self.run is not None else s.first
        if pre is not None and pre >= start + self.length:
            return start
        if pre is not None and self.first_only:
            raise _Busy
        if best >= self.length - ROUNDING:
            return False
        if pre is not None:
            self.run = suf
        elif self.run is None:
            self.run = s.first
        self.level += s.total
        return None

    def _steps(self, xs: list, ds: list, i: int) -> float | None:
        run, level, limit = self.run, self.level, self.limit
        for j in range(i, len(xs)):
            level += ds[j]
            if level <= limit:
                if run is None:
                    run = xs[j]
            elif run is not None:
                if xs[j] >= run + self.length:
                    return run
                if self.first_only:
                    raise _Busy
                run = None
        self.run, self.level = run, level
        return None
