"""The retry cache's bounds hold after any sequence of puts, expiries and failed commits:
its byte count is the sum of its entries, never over max_bytes nor max_entries, and the
state file is told to delete exactly what memory let go of by the bounds (and not a reply
put again under a key it let go of before). A wall-clock jump moves the replies' ages with
it, and never makes the file drop a reply memory still holds."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atsd.retries import ReplyCache

OPS = st.lists(st.one_of(
    st.tuples(st.just("put"), st.sampled_from(["a", "b", "c\0d"]), st.text(max_size=3),
              st.integers(0, 3000)),
    st.tuples(st.just("wait"), st.floats(0, 100)),
    st.tuples(st.just("jump"), st.floats(-500, 500)),
    st.tuples(st.just("commit"), st.booleans())), max_size=60)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_bounds_and_byte_count_hold(ops):
    cache = ReplyCache(ttl_s=50, max_entries=5, max_bytes=6000, now=0.0, stored=[])
    now, disk, jumped = 0.0, {}, False
    for op in ops:
        if op[0] == "put":
            _, user, rid, size = op
            if cache.get((user, rid)) is None:      # as the server: a new request only
                cache.put((user, rid), now, b"d", b"x" * size)
        elif op[0] in ("wait", "jump"):
            if op[0] == "jump":         # the wall clock set forward or back: ages stay
                ages = {k: now - e.ts for k, e in cache._entries.items()}
                cache.move(op[1], now + op[1])
                jumped = True
            now += op[1]
            if op[0] == "jump":
                assert {k: now - e.ts for k, e in cache._entries.items()} == \
                    pytest.approx(ages)
            cutoff = cache.expire(now)
            if cutoff is not None:
                disk = {k: v for k, v in disk.items() if v >= cutoff}
        else:
            new, gone = cache.take()
            if op[1]:                               # committed: the file follows
                disk.update({(u, r): ts for u, r, ts, _, _ in new})
                for key in gone:
                    disk.pop(key, None)
            else:
                cache.not_written(new, gone)
        entries = cache._entries
        assert cache.bytes == sum(e.size(k) for k, e in entries.items())
        assert cache.bytes <= cache.max_bytes and len(entries) <= cache.max_entries
        assert all(now - e.ts <= cache.ttl_s for e in entries.values()) or op[0] != "wait"
    new, gone = cache.take()
    disk.update({(u, r): ts for u, r, ts, _, _ in new})
    for key in gone:
        disk.pop(key, None)
    # what memory holds is on file; the file holds nothing over the bounds beyond what
    # expiry removes there at its next prune (after a jump, the file's times are the wall
    # clock's of their writing, so it may keep more, for longer)
    assert set(cache._entries) <= set(disk)
    assert jumped or not [k for k, ts in disk.items()
                          if k not in cache._entries and now - ts <= 50]


def test_a_forward_jump_delays_the_file_prune_until_kept_replies_expired():
    """A reply kept 590 s when the wall clock jumps an hour forward still has 3010 s to go;
    the file's copy (time 0) must not be pruned meanwhile, as a prune by the wall clock
    would (a restart then would lose it)."""
    cache = ReplyCache(ttl_s=3600, max_entries=5, max_bytes=6000, now=0.0, stored=[])
    cache.put(("alice", "r1"), 0.0, b"d", b"reply")
    cache.take()
    cache.move(3600, 4190)
    assert [cache.expire(t) for t in (4210, 7180)] == [None, None]
    assert cache.get(("alice", "r1")) is not None
    assert cache.expire(7200.5) is None and cache.get(("alice", "r1")) is None
    assert cache.expire(7791) == 7791 - 3600        # the file's prune, once none is kept
