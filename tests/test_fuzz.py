"""Hostile input over a real socket to a real daemon: random bytes, msgpack of the wrong
shape, nesting deep and deeper, huge values, unknown commands, and every command with
hostile argument values (NaN, inf, negative, 1e308, empty and 1 MB strings, wrong types),
plain and byte-mutated. The daemon must stay up, answer each request exactly once with a
well-formed reply that is never ``internal``, and change nothing when it refuses.

Exactly once: after each frame's reply, a sentinel request must be the very next reply, so
a second answer to the frame would show up in its place. bench/fuzz_long.py runs the same
kinds of frames 100k times.
"""

import time

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzzing import (BAD_WAITS, FUZZ_CONFIG, HOSTILE, MAX_FRAME, OBSERVER, check_reply, clean,
                     dealer, deep, fingerprint, oversize, plausible, recv, schemas)

SCHEMAS = schemas()
PLAUSIBLE = plausible(time.time())

scalars = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats()
           | st.text(max_size=20) | st.binary(max_size=20))
objects = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                       | st.dictionaries(st.text(max_size=10), inner, max_size=5),
                       max_leaves=20)
hostile = st.sampled_from(HOSTILE) | objects


def mostly(valid, bad=hostile):
    """Seven times in eight a value that passes, else a hostile one."""
    return st.integers(0, 7).flatmap(lambda i: bad if i == 3 else valid)


users = mostly(st.sampled_from(["alice", "bob"]) | st.text(min_size=1, max_size=64)).filter(
    lambda u: u != OBSERVER)
request_ids = mostly(st.text(min_size=1, max_size=128))


def command_maps(user=users):
    """A known command with its keys holding mostly plausible values and some hostile
    ones; now and then an unknown key, an unknown command, or a command that is no
    string."""
    def for_command(name):
        args = SCHEMAS[name]
        value = {k: (st.sampled_from(BAD_WAITS) if k == "wait_s" else
                     mostly(st.sampled_from(PLAUSIBLE[k])) if k in PLAUSIBLE else hostile)
                 for k in args}
        return st.fixed_dictionaries(
            {"command": st.just(name), "user": user, "request_id": request_ids,
             **{k: v for k, v in value.items() if args[k]}},
            optional={k: v for k, v in value.items() if not args[k]})
    known = st.sampled_from(sorted(SCHEMAS)).flatmap(for_command)
    return st.one_of(
        known, known, known, known, known, known,
        st.tuples(known, st.text(max_size=10), hostile).map(lambda t: {**t[0], t[1]: t[2]}),
        st.fixed_dictionaries({"command": st.text(max_size=30) | hostile},
                              optional={"user": user, "request_id": request_ids}))


@st.composite
def mutated(draw, maps):
    data = bytearray(msgpack.packb(draw(maps)))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if op == "flip" and i < len(data):
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 8))]
        else:
            del data[i:]
    return bytes(data)


def bodies(maps):
    packed = maps.map(msgpack.packb)
    return st.one_of(
        packed, packed, packed, packed,
        st.binary(max_size=300),
        objects.map(msgpack.packb),
        mutated(maps), mutated(maps),
        st.tuples(st.integers(1, 1100), st.sampled_from([b"\x91", b"\x81\xa1k"]))
        .map(lambda t: deep(*t)),
        st.sampled_from([msgpack.packb({"command": "list_resources", "tags": {
            str(i): i for i in range(n)}}) for n in (1000, 1001)]),
    )


# how the request is framed: REQ's empty delimiter, none, or extra envelope frames
envelopes = st.sampled_from([[b""], [], [b"", b"extra"]])


def run_fuzz(daemon, maps, check_state: bool, examples: int) -> None:
    sock = dealer(daemon.listen)
    observer = daemon.client(OBSERVER)
    state = {"before": fingerprint(observer), "n": 0}

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(envelope=envelopes, body=bodies(maps))
    def one(envelope, body):
        state["n"] += 1
        if len(body) > MAX_FRAME:          # two 1 MB strings: dropped, never answered
            oversize(daemon.listen, envelope + [body])
            assert daemon.proc.poll() is None
            return
        sock.send_multipart(envelope + [body])
        got = recv(sock)
        assert got is not None, "no reply"
        frames, reply = got
        assert frames[:-1] == envelope
        check_reply(reply)
        sent = _request_id(body)
        if "request_id" in reply:
            assert reply["request_id"] == sent
        sentinel = f"sentinel-{state['n']}"
        sock.send_multipart([b"", msgpack.packb({"command": "get_version",
                                                 "request_id": sentinel})])
        _, after = recv(sock)
        assert after.get("request_id") == sentinel, f"a second reply: {after}"
        assert daemon.proc.poll() is None
        if not check_state:
            return
        if reply["ok"]:
            clean(observer)
            state["before"] = fingerprint(observer)
        else:
            assert fingerprint(observer) == state["before"], reply

    try:
        one()
        assert observer.get_version()["protocol"] == 1
    finally:
        sock.close()
        observer.close()


def _request_id(body: bytes):
    try:
        obj = msgpack.unpackb(body, raw=False)
    except Exception:
        return None
    return obj.get("request_id") if isinstance(obj, dict) else None


def test_fuzz_as_a_user(daemon_factory):
    run_fuzz(daemon_factory(FUZZ_CONFIG), command_maps(), check_state=True, examples=1000)


def test_fuzz_as_an_admin(daemon_factory):
    """Admin commands get past the role check and meet the hostile values themselves;
    the state is not compared here (an admin's revocation counts down by itself)."""
    run_fuzz(daemon_factory(FUZZ_CONFIG), command_maps(user=st.just("fuzzadmin")),
             check_state=False, examples=400)
