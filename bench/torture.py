"""Crash torture: client processes doing random calendar and pool work against a real atsd
that is SIGKILLed at random moments and restarted on the same ports, then an independent
check of everything the clients were told against what the daemon holds.

    python bench/torture.py --hours 2 [--clients 6] [--run-s 60] [--seed N]

Each *run* is a fresh daemon and state file, used for ``--run-s`` seconds; runs repeat until
the time is up. One line per run (kills, operations, retries across a restart), totals at
the end; the exit status is 1 if any run found a violation (its directory is kept).
tests/test_crash_torture.py runs one short run in CI.

Clients (``python bench/torture.py client ...``) send every request with a request_id of
their own and, when a call fails with Unreachable, send the same request again with the
same request_id until it is answered: a request is never given up, so every one ends
acknowledged. Each client appends every acknowledged operation (request, reply, when it was
first sent and when answered, how often it found the daemon unreachable) to its own JSON
lines log. Now and then a client repeats an answered request (same request_id) and logs
the answer, which must be the first one again.

The checker uses none of atsd's code: it replays the logs into what each client was told
(which bookings it holds, over which times, which it released) and compares that with the
daemon's answers over the wire (``list_reservations``, ``get_events``) before and after a
final SIGKILL and restart. A violation is anything a correct daemon could not have said.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (str(ROOT), str(ROOT / "tests")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from atsclient import ATSClient, Unreachable  # noqa: E402
from daemon import Daemon  # noqa: E402  (the tests' real-daemon helper)

EXCLUSIVE = ("dut-1", "dut-2", "scope-1")
SHARED = "build-1"
SPEC = {"version": {"major": 1, "minor": 0},
        "local": [{"gpus": [{"id": "0", "slots": 2}, {"id": "1", "slots": 3}]}]}
CAPACITY = {"dut-1": 1, "dut-2": 1, "scope-1": 1, SHARED: 4, "gpus/0": 2, "gpus/1": 3}
CONFIG = {
    "resources": [{"name": n, "type": n.split("-")[0]} for n in EXCLUSIVE]
    + [{"name": SHARED, "type": "buildhost", "slots": CAPACITY[SHARED]}],
    "resource_spec": "spec.json",
    "claim_window_s": 1,          # pre-reservations lapse within a run
    "default_lease_s": 5,
    "event_log_size": 500_000,    # the checker reads a run's whole history
}
EPS = 1e-6          # float noise in times the daemon computed
LATE_S = 1.0        # how long after its end a booking may still be listed (a timer's lag)
# A request is answered at a reading of the daemon's clock taken after it came in, so
# between its send and its answer; but a wake-up answers its requests before it fires the
# timers that fell due by that reading, so a release or an extend may still find a
# reservation live a little after its end. Those two comparisons allow this much.
TIMER_LAG_S = 0.25


# --- the client process ---

@dataclass
class Held:
    """What a client believes of one of its reservations, to pick its next move."""

    kind: str
    start: float
    end: float
    expire: float | None
    late: bool = False          # left unclaimed until it lapsed, to claim it late
    done: bool = False


def _pick(rng: random.Random, held: dict[str, Held], history: list[dict], now: float):
    """The next request (without request_id), or None to roll again."""
    live = {rid: h for rid, h in held.items() if not h.done}
    op = rng.choices(["request", "claim", "release", "extend", "checkout", "checkin", "dup"],
                     [25, 25, 10, 12, 15, 10, 3])[0]
    releasable = [rid for rid, h in live.items() if h.kind != "allocation" and not h.late]
    allocs = [rid for rid, h in live.items() if h.kind == "allocation"]
    if len(live) >= 4:          # keep the calendar near now: give something back instead
        if op == "request" and releasable:
            op = "release"
        elif op == "checkout" and allocs:
            op = "checkin"
    if op == "request":
        req = {"command": "request_reservation",
               "time_needed": now + rng.choice([0, 0, 0, rng.uniform(0, 3)]),
               "reservation_duration": round(rng.uniform(0.5, 6), 3),
               "next_available": rng.random() < 0.4}
        shape = rng.random()
        if shape < 0.45:
            req["resource"] = rng.choice(EXCLUSIVE)
        elif shape < 0.6:
            req["resources"] = [rng.choice(EXCLUSIVE[:2]), "scope-1"]
        elif shape < 0.95:
            req.update(resource=SHARED, reservation_mode="shared", slots=rng.randint(1, 3))
        else:
            req["resource"] = SHARED
        return req
    if op == "claim":
        pres = [rid for rid, h in live.items() if h.kind == "pre" and h.start <= now
                and (h.expire < now or not h.late)]
        return pres and {"command": "claim_reservation", "pre_reservation_id": rng.choice(pres)}
    if op == "release":
        return releasable and {"command": "release_reservation",
                               "reservation_id": rng.choice(releasable)}
    if op == "extend":
        held_now = [rid for rid, h in live.items() if h.kind != "pre"]
        return held_now and {"command": "extend_reservation",
                             "reservation_id": rng.choice(held_now),
                             "extra_s": round(rng.uniform(0.2, 3), 3)}
    if op == "checkout":
        return {"command": "checkout", "lease_s": round(rng.uniform(0.5, 6), 3),
                "request": [{"type": "gpus", "slots": rng.randint(1, 2)}
                            for _ in range(rng.randint(1, 2))]}
    if op == "checkin":
        return allocs and {"command": "checkin", "allocation_id": rng.choice(allocs)}
    return history and dict(rng.choice(history)["request"])


def _learn(rng: random.Random, held: dict[str, Held], req: dict, reply: dict) -> None:
    """Update the client's picture of its reservations from one answer."""
    cmd = req["command"]
    if cmd == "request_reservation" and reply["ok"]:
        held[reply["pre_reservation_id"]] = Held(
            "pre", reply["time_available"], reply["end_time"], reply["expire_time"],
            late=reply["time_available"] < time.time() + 1 and rng.random() < 0.25)
    elif cmd == "claim_reservation":
        h = held[req["pre_reservation_id"]]
        if reply["ok"]:
            h.kind = "claimed"
        else:
            h.done = True
            if reply.get("pre_reservation_id"):
                held[reply["pre_reservation_id"]] = Held(
                    "pre", reply["new_avail"], reply["new_avail"] + h.end - h.start,
                    reply["new_expire"])
    elif cmd == "extend_reservation" and reply["ok"]:
        held[req["reservation_id"]].end = reply["expire_time"]
    elif cmd in ("release_reservation", "checkin"):
        held[req.get("reservation_id") or req.get("allocation_id")].done = True
    elif cmd == "checkout" and reply["ok"]:
        held[reply["allocation_id"]] = Held("allocation", 0.0, reply["expire_time"], None)
    for rid, h in list(held.items()):        # keep the picks among recent ones
        if h.done or h.end < time.time() - 5:
            held.pop(rid)


def client_main(server: str, user: str, log_path: Path, seed: int, until: float,
                give_up: float) -> int:
    """Random work until ``until``; every request is repeated (same request_id) until it is
    answered, or ``give_up`` passes (then the exit status is 3)."""
    rng = random.Random(seed)
    client = ATSClient(server, user=user, timeout=0.5, retries=2)
    held: dict[str, Held] = {}
    history: list[dict] = []
    with open(log_path, "w") as log:
        while time.time() < until:
            now = time.time()
            req = _pick(rng, held, history, now)
            if not req:
                continue
            dup = "request_id" in req
            req.setdefault("request_id", uuid.uuid4().hex)
            unreachable = 0
            while True:
                try:
                    reply = client.server_communicate(req)
                    break
                except Unreachable:
                    unreachable += 1
                    if time.time() > give_up:
                        return 3
            entry = {"request": req, "reply": reply, "sent": now, "acked": time.time(),
                     "unreachable": unreachable, "dup": dup}
            log.write(json.dumps(entry) + "\n")
            log.flush()
            if not dup:
                _learn(rng, held, req, reply)
                history.append(entry)
    client.close()
    return 0


# --- the checker ---

@dataclass
class Booked:
    """One acknowledged reservation as its client was told it."""

    id: str
    owner: str
    kind: str                                  # pre, claimed, allocation
    slots: dict[str, tuple[int, bool]]         # resource -> (slots, exclusive)
    start: float                               # held from here for sure
    end: float
    expire: float | None = None                # a pre-reservation lapses then
    released: tuple[float, float] | None = None   # its release was sent, answered (ok)
    release_requested: bool = False
    late: tuple[float, float] | None = None   # a claim after time_available that no longer
                                              # fit was sent, answered claim_late: it lapsed

    def natural_end(self) -> float:
        """When it ends by itself: lapse while unclaimed, else its (extended) end."""
        return self.expire if self.kind == "pre" else self.end

    def held_until(self) -> float:
        return min(self.natural_end(),
                   self.released[0] if self.released else float("inf"),
                   self.late[0] if self.late else float("inf"))


@dataclass
class Verdict:
    violations: list[str] = field(default_factory=list)
    booked: dict[str, Booked] = field(default_factory=dict)
    ops: int = 0
    across: int = 0          # sent before a SIGKILL, answered by the restarted daemon
    retried: int = 0         # answered only after a call found the daemon unreachable
    dups: int = 0
    by_command: dict[str, int] = field(default_factory=dict)

    def fail(self, msg: str) -> None:
        if len(self.violations) < 200:
            self.violations.append(msg)


OK_ERRORS = {"request_reservation": {"unavailable"}, "extend_reservation": {"unavailable"},
             "checkout": {"unavailable"}}


def replay(logs: dict[str, list[dict]], kills: list[float]) -> Verdict:
    """What every client was told, and any answer that contradicts an earlier one."""
    v = Verdict()
    for owner, entries in logs.items():
        first: dict[str, dict] = {}
        for e in entries:
            req, reply = e["request"], e["reply"]
            v.ops += 1
            v.across += any(e["sent"] < k < e["acked"] for k in kills)
            v.retried += e["unreachable"] > 0
            if e["dup"]:
                v.dups += 1
                if reply != first[req["request_id"]]:
                    v.fail(f"{owner}: request_id {req['request_id']} repeated got "
                           f"{reply}, first {first[req['request_id']]}")
                continue
            first[req["request_id"]] = reply
            cmd = req["command"]
            v.by_command[cmd] = v.by_command.get(cmd, 0) + 1
            _replay_one(v, owner, req, reply, e["sent"], e["acked"])
    return v


def _replay_one(v: Verdict, owner: str, req: dict, reply: dict, sent: float,
                acked: float) -> None:
    cmd = req["command"]
    code = None if reply["ok"] else reply["error"]["code"]
    where = f"{owner} {cmd} {req['request_id']}"
    target = v.booked.get(req.get("pre_reservation_id") or req.get("reservation_id")
                          or req.get("allocation_id") or "")
    if cmd == "request_reservation":
        if reply["ok"]:
            names = req.get("resources") or [req["resource"]]
            shared = req.get("reservation_mode") == "shared"
            slots = {n: (req.get("slots", 1) if shared else CAPACITY[n], not shared)
                     for n in names}
            b = Booked(reply["pre_reservation_id"], owner, "pre", slots,
                       reply["time_available"], reply["end_time"], reply["expire_time"])
            if abs(b.end - b.start - req["reservation_duration"]) > EPS:
                v.fail(f"{where}: window {b.start}..{b.end} is not "
                       f"{req['reservation_duration']}s long")
            v.booked[b.id] = b
        elif code not in OK_ERRORS[cmd]:
            v.fail(f"{where}: {reply['error']}")
        return
    if cmd == "checkout":
        if reply["ok"]:
            per: dict[str, int] = {}
            for rtype, items in reply["resources"].items():
                for item in items:
                    name = f"{rtype}/{item['id']}"
                    per[name] = per.get(name, 0) + item["slots"]
            if sum(per.values()) != sum(r["slots"] for r in req["request"]):
                v.fail(f"{where}: granted {reply['resources']} for {req['request']}")
            b = Booked(reply["allocation_id"], owner, "allocation",
                       {n: (s, False) for n, s in per.items()}, acked, reply["expire_time"])
            v.booked[b.id] = b
        elif code not in OK_ERRORS[cmd]:
            v.fail(f"{where}: {reply['error']}")
        return
    if target is None:
        v.fail(f"{where}: the client acted on a reservation it was never given")
        return
    ended = min(target.natural_end(), target.late[1] if target.late else float("inf"))
    if code == "not_found":
        v.fail(f"{where}: acknowledged reservation {target.id} is gone (not_found)")
    elif code == "conflict" and cmd != "claim_reservation":
        # it had ended by itself; the daemon's clock was at most ``acked`` then
        if ended > acked + EPS:
            v.fail(f"{where}: {target.id} ended before its time {ended} (answered at {acked})")
    elif cmd == "claim_reservation":
        if reply["ok"]:
            if sent > target.expire:
                v.fail(f"{where}: claimed {target.id} after it lapsed at {target.expire}")
            # the whole duration from the claim: the end moves when claimed after the start
            whole = target.end - target.start
            lo = max(target.end, sent + whole) - EPS
            if not lo <= reply["expire_time"] <= max(target.end, acked + whole) + EPS:
                v.fail(f"{where}: claim says end {reply['expire_time']}, booked "
                       f"{target.start}..{target.end}")
            target.kind = "claimed"
            target.end = reply["expire_time"]
        elif code == "too_early":
            if sent > target.start:
                v.fail(f"{where}: too_early, but {target.id} starts at {target.start}")
        elif code == "claim_late":
            if acked < target.expire - EPS and acked <= target.start + EPS:
                v.fail(f"{where}: claim_late for {target.id} neither late nor lapsed")
            if sent < target.expire:         # it may have lapsed at the claim, not later
                target.late = (sent, acked)
            if reply.get("pre_reservation_id"):
                b = Booked(reply["pre_reservation_id"], owner, "pre", dict(target.slots),
                           reply["new_avail"], reply["new_avail"] + target.end - target.start,
                           reply["new_expire"])
                v.booked[b.id] = b
        else:
            v.fail(f"{where}: {reply['error']}")
    elif cmd in ("release_reservation", "checkin"):
        target.release_requested = True
        if reply["ok"]:
            if ended < sent - TIMER_LAG_S:
                v.fail(f"{where}: released {target.id}, which should have ended at {ended}")
            target.released = (sent, acked)
        else:
            v.fail(f"{where}: {reply['error']}")
    elif cmd == "extend_reservation":
        if reply["ok"]:
            if ended < sent - TIMER_LAG_S:
                v.fail(f"{where}: extended {target.id}, which should have ended at {ended}")
            if abs(reply["expire_time"] - (target.end + req["extra_s"])) > EPS:
                v.fail(f"{where}: extended to {reply['expire_time']}, not "
                       f"{target.end} + {req['extra_s']}")
            target.end = reply["expire_time"]
        elif code not in OK_ERRORS[cmd]:
            v.fail(f"{where}: {reply['error']}")


def check_capacity(intervals: dict[str, list[tuple[float, float, int]]], what: str,
                   v: Verdict) -> None:
    """At no moment do the intervals of a resource hold more slots than it has."""
    for name, spans in intervals.items():
        points = sorted([(s, 1, n) for s, e, n in spans if e > s]
                        + [(e, 0, -n) for s, e, n in spans if e > s])   # ends first
        used = 0
        for t, _, n in points:
            used += n
            if used > CAPACITY[name]:
                v.fail(f"{what}: {name} holds {used} of {CAPACITY[name]} slots at {t}")
                break


def check_history(v: Verdict) -> None:
    """What the clients were told they held, over the times they were sure to hold it,
    never overbooks a resource (an exclusive booking counts all its slots)."""
    spans: dict[str, list[tuple[float, float, int]]] = {}
    for b in v.booked.values():
        for name, (n, _) in b.slots.items():
            spans.setdefault(name, []).append((b.start, b.held_until(), n))
    check_capacity(spans, "acknowledged bookings", v)


def check_listing(v: Verdict, rows: list[dict], t0: float, t1: float, what: str) -> None:
    """``rows`` (list_reservations, asked between t0 and t1) against what was acknowledged."""
    spans: dict[str, list[tuple[float, float, int]]] = {}
    listed: dict[str, dict[str, dict]] = {}
    for row in rows:
        spans.setdefault(row["resource"], []).append(
            (row["start_time"], row["end_time"], row["slots"]))
        listed.setdefault(row["id"], {})[row["resource"]] = row
    check_capacity(spans, what, v)
    for rid in listed.keys() - v.booked.keys():
        v.fail(f"{what}: {rid} ({listed[rid]}) was never acknowledged to anyone")
    for b in v.booked.values():
        got = listed.get(b.id)
        if b.released is not None or b.late is not None:
            if got:
                v.fail(f"{what}: released or lapsed {b.id} is back: {got}")
            continue
        if b.natural_end() > t1 + EPS and not b.release_requested:
            if got is None:
                v.fail(f"{what}: acknowledged {b.kind} {b.id} of {b.owner} "
                       f"(until {b.natural_end()}) is missing")
            elif set(got) != set(b.slots) or any(
                    abs(r["end_time"] - b.end) > EPS or r["kind"] != b.kind
                    or r["slots"] != b.slots[n][0] for n, r in got.items()):
                v.fail(f"{what}: {b.id} is listed as {got}, acknowledged as {b}")
        elif got and b.natural_end() < t0 - LATE_S:
            v.fail(f"{what}: {b.id} should have ended at {b.natural_end()}: {got}")


def check_events(v: Verdict, events: list[dict]) -> None:
    """The event log: seq without gaps; every reservation created once, only by an
    acknowledged request (so a retried request_id booked once); nothing comes back
    from RESERVATION_ENDED; each ended for the reason and not before the time the client
    was told (released after its release was sent, else lapsed or expired at its end)."""
    seqs = [e["seq"] for e in events]
    if seqs != list(range(1, len(seqs) + 1)):
        gaps = [(a, b) for a, b in itertools.pairwise(seqs) if b != a + 1][:5]
        v.fail(f"event seq not 1..{len(seqs)} without gaps: {gaps}")
    created: dict[str, int] = {}
    ended: dict[str, dict] = {}
    for e in events:
        if e["topic"] != "reservation.status":
            continue
        rid = e["reservation_id"]
        if e["previous"] is None:
            created[rid] = created.get(rid, 0) + 1
        if rid in ended:
            v.fail(f"{rid} changed after it ended ({ended[rid]['reason']}): {e}")
        if e["reservation_status"] == "RESERVATION_ENDED":
            ended[rid] = e
    for rid, n in created.items():
        if n > 1:
            v.fail(f"{rid} was created {n} times")
        if rid not in v.booked:
            v.fail(f"{rid} was created but never acknowledged: a request booked twice or "
                   "an unanswered one booked")
    for b in v.booked.values():
        if b.id not in created:
            v.fail(f"acknowledged {b.id} of {b.owner} was never created in the event log")
        e = ended.get(b.id)
        if e is None:
            continue
        if b.released is not None:
            reason, since, until = "released", b.released[0], b.released[1]
        elif b.late is not None:
            reason, since, until = "lapsed", b.late[0], b.late[1]
        else:
            reason, since, until = ("lapsed" if b.kind == "pre" else "expired",
                                    b.natural_end(), float("inf"))
        if e["reason"] != reason or not since - EPS <= e["ts"] <= until + EPS:
            v.fail(f"{b.id} ended {e['reason']} at {e['ts']}; expected {reason} from "
                   f"{since} to {until}")


def read_logs(paths: list[Path]) -> dict[str, list[dict]]:
    return {p.stem: [json.loads(line) for line in p.read_text().splitlines()] for p in paths}


def all_events(client: ATSClient) -> list[dict]:
    out: list[dict] = []
    while True:
        page = client.get_events(out[-1]["seq"] if out else 0, limit=10_000)["events"]
        if not page:
            return out
        out.extend(page)


def snapshot(daemon: Daemon) -> tuple[list[dict], float, float]:
    with daemon.client("checker", timeout=10) as c:
        t0 = time.time()
        rows = c.list_reservations()
        return rows, t0, time.time()


# --- one run ---

@dataclass
class RunResult:
    directory: Path
    seconds: float
    kills: list[float]        # when the daemon was SIGKILLed
    verdict: Verdict


def run(directory: Path, duration: float, clients: int = 4, seed: int = 0,
        kill_after: tuple[float, float] = (0.2, 1.5)) -> RunResult:
    """One daemon, ``clients`` client processes for ``duration`` seconds, SIGKILL and
    restart at random moments ``kill_after`` apart (the first time, and now and then, after
    an outage longer than a client call's retries); then the final checks."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "atsd").mkdir(exist_ok=True)
    (directory / "atsd" / "spec.json").write_text(json.dumps(SPEC))
    daemon = Daemon(directory / "atsd", CONFIG).start()
    begin = time.time()
    until = begin + duration
    logs = [directory / f"c{i}.jsonl" for i in range(clients)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen(
        [sys.executable, __file__, "client", "--server", daemon.listen, "--user", log.stem,
         "--log", str(log), "--seed", str(seed * 1000 + i), "--until", str(until),
         "--give-up", str(until + 120)], env=env)
        for i, log in enumerate(logs)]
    kills: list[float] = []
    try:
        while True:
            moment = time.time() + rng.uniform(*kill_after)
            if moment >= until:
                break
            time.sleep(moment - time.time())     # the random moment to kill at
            kills.append(time.time())
            daemon.kill()
            if len(kills) == 1 or rng.random() < 0.3:
                time.sleep(rng.uniform(1.2, 2.0))     # calls give up, and are sent again
            daemon.start()
        for p in procs:
            p.wait(timeout=max(0.0, until - time.time()) + 150)
        codes = [p.returncode for p in procs]
        if any(codes):
            raise AssertionError(f"client exit codes {codes}; atsd log:\n{daemon.log()}")
        verdict = replay(read_logs(logs), kills)
        check_history(verdict)
        rows, t0, t1 = snapshot(daemon)
        check_listing(verdict, rows, t0, t1, "listing")
        kills.append(time.time())     # and what the state file holds after one more crash
        daemon.kill()
        daemon.start()
        rows, t0, t1 = snapshot(daemon)
        check_listing(verdict, rows, t0, t1, "listing after restart")
        with daemon.client("checker", timeout=10) as c:
            check_events(verdict, all_events(c))
        for line in daemon.log_path.read_text(errors="replace").splitlines():
            if '"level": "error"' in line or "Traceback" in line:
                verdict.fail(f"atsd logged: {line}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        daemon.kill()
    return RunResult(directory, time.time() - begin, kills, verdict)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode")
    c = sub.add_parser("client")
    c.add_argument("--server", required=True)
    c.add_argument("--user", required=True)
    c.add_argument("--log", type=Path, required=True)
    c.add_argument("--seed", type=int, required=True)
    c.add_argument("--until", type=float, required=True)
    c.add_argument("--give-up", type=float, required=True)
    p.add_argument("--hours", type=float, default=0.1)
    p.add_argument("--clients", type=int, default=6)
    p.add_argument("--run-s", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args(argv)
    if args.mode == "client":
        return client_main(args.server, args.user, args.log, args.seed, args.until,
                           args.give_up)
    seed = random.randrange(1 << 30) if args.seed is None else args.seed
    print(f"seed {seed}; {args.clients} clients; runs of {args.run_s:g}s for {args.hours:g}h",
          flush=True)
    end = time.time() + args.hours * 3600
    totals = {"runs": 0, "kills": 0, "ops": 0, "across": 0, "retried": 0, "dups": 0,
              "seconds": 0.0}
    failed = 0
    # stopped early (also when started in the background, where SIGINT is ignored): the run
    # in progress cleans up its processes, and the totals so far are printed
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
    while time.time() < end:
        directory = Path(tempfile.mkdtemp(prefix="atsd-torture-"))
        try:
            result = run(directory, args.run_s, args.clients, seed + totals["runs"])
        except KeyboardInterrupt:
            print("stopped", flush=True)
            break
        v = result.verdict
        for key, value in (("runs", 1), ("kills", len(result.kills)), ("ops", v.ops),
                           ("across", v.across), ("retried", v.retried), ("dups", v.dups),
                           ("seconds", result.seconds)):
            totals[key] += value
        print(f"run {totals['runs']}: {len(result.kills)} kills, {v.ops} operations "
              f"({v.across} answered after a restart, {v.retried} of them resent after "
              f"Unreachable, {v.dups} repeated), "
              f"{len(v.booked)} reservations, {result.seconds:.0f}s: "
              f"{'ok' if not v.violations else 'VIOLATIONS in ' + str(directory)}", flush=True)
        for line in v.violations[:20]:
            print("   ", line, flush=True)
        if v.violations:
            failed += 1
        else:
            shutil.rmtree(directory)
    print(f"total: {totals['runs']} runs, {totals['kills']} kills, {totals['ops']} operations "
          f"({totals['across']} answered after a restart, {totals['retried']} of them resent "
          f"after Unreachable, {totals['dups']} repeated), "
          f"{totals['seconds'] / 3600:.2f}h, {failed} runs with violations", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
