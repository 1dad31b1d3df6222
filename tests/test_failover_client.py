"""Clients given several endpoints (a leader and its standbys) against real daemons.

A second daemon takes over the way a standby does: it starts on the state the first one
committed (here the same SQLite file, once the first is dead), on endpoints the clients
were given before it listened. The ``standby`` reply itself needs a real standby (PostgreSQL
store): tests/test_pg*.py; here the moves a standby's reply makes are driven directly."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from atsclient import AsyncATSClient, ATSClient, Standby, Unreachable
from atsclient.endpoints import BadAddress, Failover, Tries, parse
from atsclient.events import Subscriber
from daemon import BASE_CONFIG, Daemon, cli_env, wait_for
from test_revocation_daemon import FAST, HOLDER, hold
from test_subscriber import LOSSY, TINY, burst, collect

# a live daemon answers well within this even on a loaded machine (else a test sees an
# extra move, which it tolerates: it checks the first move and where the client ends up)
TIMEOUT = 1.0


def released_endpoint() -> str:
    """A TCP endpoint that was bound and let go: nothing listens there."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def pair(tmp_path):
    """A running daemon, and a second one set up to take over its state file on endpoints
    fixed now (``second.start()`` once the first is dead)."""
    def make(config=BASE_CONFIG):
        first = Daemon(tmp_path / "first", config)
        second = Daemon(tmp_path / "second", {**config, "state": str(first.state)})
        second.listen, second.events = released_endpoint(), released_endpoint()
        made.extend([first, second])
        return first.start(), second
    made = []
    yield make
    for d in made:
        d.kill()


def messages(client) -> list[str]:
    said = []
    client.on_retry = said.append
    return said


@pytest.mark.parametrize("address, problem", [
    ("", "no endpoint given"),
    ("tcp://a:5555,,tcp://b:5555", "endpoint 2 of 'tcp://a:5555,,tcp://b:5555' is empty"),
    ("tcp://a:5555,", "endpoint 2 of 'tcp://a:5555,' is empty"),
    ("tcp://a:5555, tcp://b:5555", "' tcp://b:5555' is not a ZeroMQ endpoint: it has spaces"),
    ("http://a:5555", "'http://a:5555' is not a ZeroMQ endpoint: write tcp://HOST:PORT"),
    ("tcp://a", "'tcp://a' is not a ZeroMQ endpoint: write tcp://HOST:PORT"),
    ("tcp://a:70000", "the port must be 1 to 65535"),
    ("tcp://a:5555,tcp://a:5555", "lists an endpoint twice"),
])
def test_bad_address_lists_are_refused_naming_the_part(address, problem):
    with pytest.raises(BadAddress, match=problem.replace("?", r"\?")):
        parse(address)
    with pytest.raises(BadAddress):
        ATSClient(address)
    with pytest.raises(BadAddress):
        Subscriber(address)


def test_an_endpoint_list_is_kept_in_order():
    assert parse("tcp://b:1,ipc:///run/atsd.sock") == ("tcp://b:1", "ipc:///run/atsd.sock")
    assert parse(["tcp://a:1", "tcp://b:1"]) == ("tcp://a:1", "tcp://b:1")
    assert ATSClient(["tcp://a:1", "tcp://b:1"]).server == "tcp://a:1,tcp://b:1"


STANDBY = {"ok": False, "error": {"code": "standby", "message": "this atsd is a standby"}}


def walk(endpoints, outcomes, retries=2):
    """Drive one request's Tries over ``endpoints``: each try fails as ``outcomes`` says
    (None: no reply; a dict: a standby's reply). (endpoints tried, pauses, messages)."""
    said = []
    tries = Tries(Failover(endpoints), retries, wait=0.5, pause=2.0, on_retry=said.append)
    tried, pauses = [], []
    for outcome, endpoint in zip(outcomes, tries, strict=False):   # as many as outcomes
        tried.append(endpoint)
        pauses.append(tries.failed(endpoint, outcome))
    return tries, tried, pauses, said


def test_a_standby_naming_a_listed_leader_sends_the_next_try_there():
    a, b, c = "tcp://a:1", "tcp://b:1", "tcp://c:1"
    _, tried, pauses, said = walk((a, b, c), [{**STANDBY, "leader": c}, None])
    assert tried == [a, c] and pauses == [0.0, 0.0]
    assert said == [f"no reply from atsd at {c} within 0.5s; trying {a} (3 of 6)"]


@pytest.mark.parametrize("leader", ["tcp://elsewhere:1", 5, "x" * 300, "tcp://a:1 "])
def test_a_leader_not_listed_or_malformed_is_not_followed(leader):
    a, b = "tcp://a:1", "tcp://b:1"
    tries, tried, _, _ = walk((a, b), [{**STANDBY, "leader": leader}] * 4)
    assert tried == [a, b, a, b]
    error = tries.error()
    assert isinstance(error, Standby) and str(error).startswith("no listed atsd leads: ")
    assert (f"leader {leader}, not listed" in str(error)) == (leader == "tcp://elsewhere:1")


def test_a_round_with_a_standby_and_no_leader_pauses_a_round_of_silence_does_not():
    a, b = "tcp://a:1", "tcp://b:1"
    _, _, pauses, said = walk((a, b), [None, None, None, {**STANDBY, "leader": a}])
    assert pauses == [0.0, 0.0, 0.0, 0.0]           # the last try: nothing follows
    _, _, pauses, said = walk((a, b), [None, {**STANDBY, "leader": a}, None, STANDBY],
                              retries=3)
    assert pauses == [0.0, 2.0, 0.0, 2.0]
    assert said[1] == f"no listed atsd leads now; trying {a} in 2s (3 of 6)"
    tries, _, _, _ = walk((a, b), [None, STANDBY] * 3, retries=3)
    assert isinstance(tries.error(), Unreachable) and not isinstance(tries.error(), Standby)
    assert str(tries.error()) == (f"no leading atsd at {a} (no reply), {b} (standby) after "
                                  "6 tries of 0.5s")


def test_silent_first_endpoint_is_passed_after_its_timeout(daemon):
    dead = released_endpoint()
    with ATSClient(f"{dead},{daemon.listen}", timeout=TIMEOUT, user="alice") as c:
        said = messages(c)
        assert c.get_version()["protocol"] == 1
        assert said[0] == (f"no reply from atsd at {dead} within {TIMEOUT:g}s; trying "
                           f"{daemon.listen} (2 of 6)")
        c.request_reservation("dut-2", reservation_duration=60)     # stays where it is
        assert c.endpoint == daemon.listen


async def test_async_client_passes_a_silent_endpoint_for_every_request_in_flight(daemon):
    dead = released_endpoint()
    async with AsyncATSClient([dead, daemon.listen], timeout=TIMEOUT, user="carol") as c:
        said = messages(c)
        replies = await asyncio.gather(*[c.request_reservation(
            "build-1", reservation_mode="shared", reservation_duration=60) for _ in range(20)])
        assert len({r[0] for r in replies}) == 20
        assert c.endpoint == daemon.listen
        # the first to time out moved everyone on: the rest went to the live one at once
        assert said[0] == (f"no reply from atsd at {dead} within {TIMEOUT:g}s; trying "
                           f"{daemon.listen} (2 of 6)")
        assert len(await c.list_reservations(owner="carol")) == 20


def test_every_endpoint_silent_names_them_all():
    a, b = released_endpoint(), released_endpoint()
    with ATSClient([a, b], timeout=0.1, retries=2) as c:
        with pytest.raises(Unreachable) as caught:
            c.get_version()
    assert str(caught.value) == f"no reply from atsd at {a}, {b} after 4 tries of 0.1s"


def test_next_request_after_the_leader_died_goes_to_the_second(pair):
    first, second = pair()
    with ATSClient([first.listen, second.listen], timeout=TIMEOUT, user="alice") as c:
        said = messages(c)
        pre, _, _ = c.request_reservation("dut-1", reservation_duration=60)
        first.kill()
        second.start()
        assert [r["id"] for r in c.list_reservations(resource="dut-1")] == [pre]
        assert c.endpoint == second.listen
        assert said[0] == (f"no reply from atsd at {first.listen} within {TIMEOUT:g}s; "
                           f"trying {second.listen} (2 of 6)")


def committed_by_the_first_then_taken_over(first, second, resource):
    """An on_retry hook: the first daemon, stopped while the request waited for it, goes
    on, commits the request, and dies before its reply is read; the second takes over."""
    def take_over(message):
        if second.proc is not None:         # taken over already; the second was slow
            return
        os.kill(first.proc.pid, signal.SIGCONT)
        with first.client() as look:
            wait_for(lambda: look.list_reservations(resource=resource), 10,
                     what="the first daemon to commit the request")
        first.kill()
        second.start()
    return take_over


def test_a_request_the_first_committed_is_answered_from_the_seconds_reply_cache(pair):
    first, second = pair()
    with ATSClient([first.listen, second.listen], timeout=TIMEOUT, user="alice") as c:
        c.get_version()                         # connected before it stops
        os.kill(first.proc.pid, signal.SIGSTOP)
        c.on_retry = committed_by_the_first_then_taken_over(first, second, "dut-1")
        pre, _, _ = c.request_reservation("dut-1", reservation_duration=60)
        assert c.endpoint == second.listen
        rows = c.list_reservations(resource="dut-1")
    assert [r["id"] for r in rows] == [pre]     # the same request id: booked once


async def test_async_request_the_first_committed_is_answered_once(pair):
    first, second = pair()
    async with AsyncATSClient([first.listen, second.listen], timeout=TIMEOUT,
                              user="alice") as c:
        await c.get_version()
        os.kill(first.proc.pid, signal.SIGSTOP)
        c.on_retry = committed_by_the_first_then_taken_over(first, second, "scope-1")
        pre, _, _ = await c.request_reservation("scope-1", reservation_duration=60)
        assert c.endpoint == second.listen
        rows = await c.list_reservations(resource="scope-1")
    assert [r["id"] for r in rows] == [pre]


async def test_subscriber_follows_the_second_daemon_none_lost_none_twice(pair):
    first, second = pair(LOSSY)
    client = AsyncATSClient([first.listen, second.listen], timeout=TIMEOUT, user="x")
    async with client, Subscriber(client.server, f"{first.events},{second.events}",
                                  client=client, sockopts=TINY, idle_check_s=0.2) as sub:
        start = sub.last_seq
        await burst(first, 300)
        before = await collect(sub, start + 300)
        await burst(first, 200)                 # published, not yet read, when it dies
        first.kill()
        second.start()
        await burst(second, 300)                # partly before the subscriber reconnects
        after = await asyncio.wait_for(collect(sub, start + 800), 30)
    assert before + after == list(range(start + 1, start + 801))
    assert sub.lost == [] and sub.fetched > 0


def test_elastic_endpoint_follows_the_second_daemon_and_acknowledges_there(pair, tmp_path):
    """A holder process given both daemons: a countdown begun by the first ends on the
    second, and a revocation on the second is answered by the holder (its ack goes there)."""
    first, second = pair(FAST)
    with first.client("alice") as alice, first.client("labadmin") as admin:
        ids = {name: hold(alice, name) for name in ("dut-1", "dut-2")}
        since = admin.get_events(0, limit=1)["last_seq"]
        deadline = admin.call("revoke", nodelist=[{"node_id": "dut-1"}], max_wait_time=3.0)[
            "deadline"]
    out = tmp_path / "holder.jsonl"
    with open(out, "w") as f:
        holder = subprocess.Popen([sys.executable, str(HOLDER), f"{first.listen},{second.listen}",
                                   f"{first.events},{second.events}", "alice", str(since),
                                   "dut-2"], stdout=f, env=cli_env())
    try:
        wait_for(lambda: hooks(out, "delete_pending"), 10, what="a notice from the first")
        first.kill()
        second.start()
        final = wait_for(lambda: hooks(out, "delete_complete"), 15, what="dut-1 gone")[0]
        assert [n["node_id"] for n in final["nodelist"]] == ["dut-1"]
        assert final["t"] >= deadline and final["nodelist"][0]["final"]
        with second.client("labadmin") as admin:
            later = admin.call("revoke", nodelist=[{"node_id": "dut-2"}],
                               max_wait_time=60.0)["deadline"]
        let_go = wait_for(lambda: hooks(out, "delete_complete")[1:], 30, what="dut-2 let go")
        assert [n["node_id"] for n in let_go[0]["nodelist"]] == ["dut-2"]
        assert let_go[0]["t"] < later                   # acknowledged, not run out
    finally:
        holder.kill()
        holder.wait()
    seen = [n["client_id"] for e in hooks(out, "delete_complete") for n in e["nodelist"]]
    assert seen == [ids["dut-1"], ids["dut-2"]]          # each once


def hooks(path, name) -> list[dict]:
    return [e for e in map(json.loads, path.read_text().splitlines()) if e["hook"] == name]


def atsclient(*args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "atsclient", "--user", "alice", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env={**cli_env(), **(env or {})})


def test_cli_takes_a_list_in_server_and_in_atsd_server(daemon):
    dead = released_endpoint()
    both = f"{dead},{daemon.listen}"
    moved = (f"atsclient: no reply from atsd at {dead} within {TIMEOUT:g}s; trying "
             f"{daemon.listen} (2 of 6)")
    out = atsclient("--server", both, "--timeout", str(TIMEOUT), "version")
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines()[0] == moved
    assert out.stdout.rstrip().endswith(f"at {daemon.listen}")     # the one that answered
    out = atsclient("--timeout", str(TIMEOUT), "reserve", "dut-2", "--for", "1m",
                    env={"ATSD_SERVER": both})
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines()[0] == moved
    assert [r["owner"] for r in daemon.client().list_reservations(resource="dut-2")] == ["alice"]


def test_cli_watch_takes_lists_of_command_and_event_endpoints(daemon):
    with daemon.client("labadmin") as admin:
        since = admin.get_events(0, limit=1)["last_seq"]
        admin.set_resource_values({"dut-1": 0.5})
    dead, dead_events = released_endpoint(), released_endpoint()
    out = atsclient("--server", f"{dead},{daemon.listen}", "--events",
                    f"{dead_events},{daemon.events}", "--timeout", str(TIMEOUT), "--json",
                    "watch", "--since", str(since), "--count", "1")
    assert out.returncode == 0, out.stderr
    event = json.loads(out.stdout)
    assert event["seq"] == since + 1 and event["nodelist"] == [{"node_id": "dut-1",
                                                                "value": 0.5}]


def test_cli_with_every_endpoint_silent_prints_one_line_naming_all():
    a, b = released_endpoint(), released_endpoint()
    out = atsclient("--server", f"{a},{b}", "--timeout", "0.1", "--retries", "1", "--json",
                    "resources")
    assert out.returncode == 3
    assert out.stderr.count("\n") == 1 and f"at {a}, {b} after 2 tries" in out.stderr


@pytest.mark.parametrize("where", ["--server", "ATSD_SERVER"])
def test_cli_refuses_a_bad_list_in_one_line(where):
    bad = "tcp://127.0.0.1:5555,,tcp://127.0.0.1:5565"
    args, env = ((["--server", bad], None) if where == "--server" else
                 ([], {"ATSD_SERVER": bad}))
    out = atsclient(*args, "resources", env=env)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1
    assert f"endpoint 2 of '{bad}' is empty" in out.stderr
    assert ("$ATSD_SERVER" in out.stderr) == (where == "ATSD_SERVER")
