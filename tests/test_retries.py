"""The retry cache's bounds hold after any sequence of puts, expiries and failed commits:
its byte count is the sum of its entries, never over max_bytes nor max_entries, and the
state file is told to delete exactly what memory let go of by the bounds (and not a reply
put again under a key it let go of before)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from atsd.retries import ReplyCache

OPS = st.lists(st.one_of(
    st.tuples(st.just("put"), st.sampled_from(["a", "b", "c\0d"]), st.text(max_size=3),
              st.integers(0, 3000)),
    st.tuples(st.just("wait"), st.floats(0, 100)),
    st.tuples(st.just("commit"), st.booleans())), max_size=60)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_bounds_and_byte_count_hold(ops):
    cache = ReplyCache(ttl_s=50, max_entries=5, max_bytes=6000, now=0.0, stored=[])
    now, disk = 0.0, {}
    for op in ops:
        if op[0] == "put":
            _, user, rid, size = op
            if cache.get((user, rid)) is None:      # as the server: a new request only
                cache.put((user, rid), now, b"d", b"x" * size)
        elif op[0] == "wait":
            now += op[1]
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
    # expiry removes there at its next prune
    assert set(cache._entries) <= set(disk)
    assert not [k for k, ts in disk.items() if k not in cache._entries and now - ts <= 50]
