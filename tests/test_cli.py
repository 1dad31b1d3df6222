"""The command line as a person and a script use it: real ``atsclient`` processes against a
real daemon, every subcommand, human output and ``--json``.

The CLI runs in TZ=Europe/Berlin, so local times carry CET/CEST."""

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon import BASE_CONFIG, JOB_USER, cli_env, wait_for

TZ = "Europe/Berlin"
EPOCH = re.compile(r"\b1[6-9]\d{8}(\.\d+)?\b")              # an epoch time in seconds
REPR = re.compile(r"\['|\{'|\bNone\b|\bTrue\b|\bFalse\b")  # Python reprs
LOCAL = r"20\d\d-\d\d-\d\d \d\d:\d\d(:\d\d)? CES?T"          # a local time with its zone
ISO = re.compile(r"^20\d\d-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d$")
TIME_KEYS = {"start_time", "end_time", "expire_time", "time_available", "deadline", "ts",
             "avail_start", "avail_end", "new_avail", "new_expire", "time", "booked_until"}
ROOT = Path(__file__).resolve().parents[1]
SPEC = {"version": {"major": 1, "minor": 0},
        "local": [{"gpus": [{"id": "0", "slots": 2}, {"id": "1", "slots": 4}]}]}


def env(**extra):
    return {**cli_env(), "TZ": TZ, **extra}


def run(d, *args, user="alice", cwd=None):
    return subprocess.run(d.cli_argv(*args, user=user), capture_output=True, text=True,
                          timeout=60, env=env(), cwd=cwd)


def human(d, *args, user="alice", cwd=None):
    """Human output: succeeds, and carries no epoch number or Python repr."""
    out = run(d, *args, user=user, cwd=cwd)
    assert out.returncode == 0, (args, out.stderr)
    assert not EPOCH.search(out.stdout) and not REPR.search(out.stdout), (args, out.stdout)
    return out.stdout


def documented_shapes() -> dict[str, list[tuple[bool, set]]]:
    """docs/cli.md: command -> [(a list of?, its keys)] from its "JSON:" lines."""
    shapes, command = {}, None
    for line in (ROOT / "docs" / "cli.md").read_text().splitlines():
        if line.startswith("### `atsclient "):
            command = line[len("### `atsclient "):-1]
        elif line.startswith("JSON") and command and "`" in line:
            keys = set(re.findall(r"`([a-z_]+)`", line.partition(":")[2]))
            shapes.setdefault(command, []).append(("a list of" in line, keys))
    return shapes


SHAPES = documented_shapes()
OPTIONAL = {"error", "booked_until", "key"}     # keys docs/cli.md says appear only at times


def as_json(d, *args, user="alice", cwd=None):
    """--json output: succeeds, parses, holds to the schema (docs/cli.md#json) and has the
    keys docs/cli.md lists for the command."""
    out = run(d, "--json", *args, user=user, cwd=cwd)
    assert out.returncode == 0, (args, out.stderr)
    data = json.loads(out.stdout)
    check_schema(data)
    command = " ".join(args[:2]) if args[0] == "batch" else args[0]
    if command in SHAPES:
        listed = isinstance(data, list)
        for obj in data if listed else [data]:
            assert any(listed == many and set(obj) <= keys and
                       keys - set(obj) <= OPTIONAL
                       for many, keys in SHAPES[command]), \
                (command, sorted(obj), SHAPES[command])
    return data


def check_schema(data):
    if isinstance(data, list):
        for v in data:
            check_schema(v)
    elif isinstance(data, dict):
        assert not {"ok", "request_id"} & set(data), data            # no wire envelope
        assert not ("id" in data and "reservation_status" in data), data
        for key, value in data.items():
            if key in TIME_KEYS and value is not None:
                assert isinstance(value, str) and ISO.match(value), (key, value)
            check_schema(value)


def parse_iso(text):
    return dt.datetime.fromisoformat(text).timestamp()


@pytest.fixture
def lab(daemon_factory, tmp_path):
    """The base lab plus a CTest pool, a local batch queue and a job directory."""
    (tmp_path / "atsd").mkdir()
    (tmp_path / "atsd" / "spec.json").write_text(json.dumps(SPEC))
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    script = jobs / "hello.sh"
    script.write_text("#!/bin/sh\necho \"hello $1 from $ATS_HOSTS\"\n")
    script.chmod(0o755)
    config = {**BASE_CONFIG, "resource_spec": "spec.json",
              "queues": {"q": {"backend": "local", "hosts": ["h1", "h2"]}},
              "jobs": {"allowed_dirs": [str(jobs)], "output_dir": str(tmp_path / "out"),
                       "run_as": JOB_USER}}
    return daemon_factory(config)


def test_calendar_commands_speak_human(lab):
    out = human(lab, "resources")
    assert out.splitlines()[0].split() == ["NAME", "TYPE", "STATE", "SERVICE", "SLOTS", "HELD",
                                           "BY", "CONFIG"]
    reserved = human(lab, "reserve", "dut-2", "--for", "30m")
    m = re.fullmatch(rf"reserved (\S+): dut-2 until ({LOCAL})\n", reserved)
    assert m, reserved
    rid = m.group(1)
    row = next(line for line in human(lab, "resources").splitlines() if line.startswith("dut-2"))
    assert re.search(rf"full\s+up\s+0/1 free\s+alice until {LOCAL}", row), row
    human(lab, "set-state", "dut-1", "down", "--reason", "usb broken", user="labadmin")
    row = next(line for line in human(lab, "resources").splitlines() if line.startswith("dut-1"))
    assert "down (usb broken)" in row, row
    human(lab, "set-state", "dut-1", "up", user="labadmin")

    table = human(lab, "reservations").splitlines()
    assert table[0].split() == ["RESERVATION", "RESOURCE", "KIND", "STATUS", "OWNER", "FROM",
                                "UNTIL", "SLOTS", "SERIES"]
    assert rid in table[1] and "active" in table[1]
    assert re.search(rf"{rid} now ends {LOCAL}", human(lab, "extend", rid, "--by", "30m"))

    shown = human(lab, "show", "dut-2")
    assert shown.startswith("dut-2: dut, full, 0 of 1 slots free\nconfig: firmware=v1\n")
    assert re.search(rf"dut-2 is free for 2h at the earliest from {LOCAL} to {LOCAL}",
                     human(lab, "when", "dut-2", "--for", "2h"))

    chart = human(lab, "calendar", "--to", "now+4h", "--width", "48").splitlines()
    assert re.match(rf"{LOCAL} to {LOCAL}, 5m per column", chart[0])
    assert chart[1].count("|") in (3, 4) and re.search(r"\|\d\d", chart[1])   # hour ticks
    assert re.match(r"dut-2\s+A{12}\.", next(line for line in chart if line.startswith("dut-2")))
    assert "legend: . free, * more than one booking:" in chart
    assert any(line.split()[:3] == ["A", rid, "alice"] for line in chart)

    assert human(lab, "version").startswith("atsd ")
    assert human(lab, "whoami") == f"alice at {lab.listen}\n"
    assert human(lab, "whoami", user="labadmin") == f"labadmin (admin) at {lab.listen}\n"
    assert "reservation.status: A reservation" in human(lab, "topics")
    assert human(lab, "release", rid) == f"released {rid}\n"
    audit = human(lab, "audit").splitlines()
    assert audit[0].split() == ["TIME", "USER", "COMMAND", "OUTCOME", "IDS"]
    assert any(rid in line and "release_reservation" in line for line in audit), audit
    assert rid in as_json(lab, "audit")[-1]["ids"]


def test_calendar_commands_in_json(lab):
    data = as_json(lab, "reserve", "dut-2", "--for", "10m")
    rid = data["reservation_id"]
    rows = as_json(lab, "reservations", "--mine")
    assert [(r["reservation_id"], r["resource"], r["reservation_status"]) for r in rows] == \
        [(rid, "dut-2", "RESERVATION_ACTIVE")]
    extended = as_json(lab, "extend", rid, "--by", "5m")
    assert extended["reservation_id"] == rid
    assert parse_iso(extended["expire_time"]) == pytest.approx(parse_iso(rows[0]["end_time"])
                                                              + 300, abs=1e-3)
    resources = {r["name"]: r for r in as_json(lab, "resources")}
    assert [h["owner"] for h in resources["dut-2"]["holders"]] == ["alice"]
    assert resources["dut-2"]["holders"][0]["reservation_id"] == rid
    assert as_json(lab, "show", "dut-2")["resource"]["name"] == "dut-2"
    assert as_json(lab, "when", "dut-2", "--for", "1h")["available"] is False
    assert as_json(lab, "calendar")[0]["reservation_id"] == rid
    assert as_json(lab, "whoami") == {"user": "alice", "admin": False}
    assert set(as_json(lab, "version")) == {"version", "protocol", "role"}
    topics = json.loads(run(lab, "--json", "topics").stdout)     # a reference, not data
    assert "remaining" in topics["reservation.expiring"]
    assert as_json(lab, "release", rid) == [{"reservation_id": rid, "released": True}]


def test_future_reservation_and_claim(lab):
    out = human(lab, "reserve", "--two-step", "scope-1", "--at", "now+1h", "--for", "30m")
    m = re.fullmatch(rf"pre-reserved (\S+) from {LOCAL}: claim it with 'atsclient claim "
                     rf"(\S+)' by {LOCAL}\n", out)
    assert m and m.group(1) == m.group(3), out
    early = run(lab, "claim", m.group(1))
    assert early.returncode == 1 and "too_early" in early.stderr
    pre = as_json(lab, "reserve", "--two-step", "dut-1", "--at", "now+2h", "--for", "10m")
    assert set(pre) == {"pre_reservation_id", "time_available", "expire_time"}


def test_reserve_at_is_exact_or_names_the_next_window(lab):
    with lab.client("bob") as bob:
        pre, _, _ = bob.request_reservation("scope-1", reservation_duration=3600)
        bob.claim_reservation(pre)
    out = run(lab, "reserve", "scope-1", "--for", "10m")
    assert out.returncode == 1 and len(out.stderr.splitlines()) == 1, out.stderr
    assert re.fullmatch(rf"atsclient: unavailable: scope-1 not free for 10m at {LOCAL}: scope-1 "
                        rf"next from {LOCAL} \(add --next to take the next free window\)\n",
                        out.stderr), out.stderr
    assert as_json(lab, "reservations", "--mine") == []        # nothing booked meanwhile
    later = as_json(lab, "reserve", "scope-1", "--for", "10m", "--next")
    assert parse_iso(later["time_available"]) >= time.time() + 3000

    past = run(lab, "reserve", "dut-1", "--at", "now-1h")
    assert past.returncode == 2 and "is in the past" in past.stderr
    slots = run(lab, "reserve", "build-1", "--shared", "--slots", "5")
    assert slots.returncode == 2
    assert slots.stderr == "atsclient: build-1 has 4 slots; --slots 5 is more\n"


@pytest.mark.parametrize("given, message", [
    ("-5m", "a duration must not be negative: '-5m'"),
    ("2x", "not a duration: '2x' (try 90s, 10m, 2h, 1h30m)"),
    ("", "not a duration: '' (try 90s, 10m, 2h, 1h30m)")])
def test_bad_durations_get_a_real_message(lab, given, message):
    out = run(lab, "reserve", "dut-1", "--for", given)
    assert (out.returncode, out.stderr) == (2, f"atsclient: {message}\n")


def test_release_reports_each_and_dash_ids_are_ids(lab):
    rid = as_json(lab, "reserve", "dut-1", "--for", "10m")["reservation_id"]
    out = run(lab, "release", rid, "-nope")
    assert out.returncode == 1
    assert out.stdout == f"released {rid}\n"
    assert out.stderr.startswith("not released -nope: not_found: ")
    out = run(lab, "--json", "release", "-x3f", "nope2")
    assert out.returncode == 1
    assert [(r["reservation_id"], r["released"], r["error"]["code"])
            for r in json.loads(out.stdout)] == [("-x3f", False, "not_found"),
                                                 ("nope2", False, "not_found")]


def test_errors_are_one_line_in_the_users_terms_and_json_with_json(lab):
    rid = as_json(lab, "reserve", "dut-1", "--for", "10m")["reservation_id"]
    out = run(lab, "release", rid, user="bob")
    assert out.returncode == 1 and out.stderr.startswith("not released")
    out = run(lab, "extend", rid, "--by", "0")
    assert (out.returncode, out.stderr) == (2, "atsclient: bad_request: --by must be more "
                                               "than 0 s\n")
    out = run(lab, "values", "dut-1=0.5")
    assert out.stderr == ("atsclient: forbidden: 'atsclient values NODE=VALUE' is for admins; "
                          "alice is not one\n")
    out = run(lab, "--json", "show", "nope")
    assert out.returncode == 2 and out.stdout == ""
    assert json.loads(out.stderr) == {"error": {"code": "usage", "message":
                                      "no resource named 'nope' (see 'atsclient resources')"}}
    out = run(lab, "--json", "claim", "nope")
    assert out.returncode == 1 and json.loads(out.stderr)["error"]["code"] == "not_found"
    out = run(lab, "--json", "reserve")
    assert out.returncode == 2 and json.loads(out.stderr)["error"]["code"] == "usage"
    out = run(lab, "reserve", "dut-1", "--frobnicate")
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1
    assert "unrecognized arguments: --frobnicate" in out.stderr


def test_extend_refused_says_how_much_would_fit(lab):
    rid = as_json(lab, "reserve", "dut-1", "--for", "10m")["reservation_id"]
    with lab.client("bob") as bob:
        bob.request_reservation("dut-1", time_needed=time.time() + 1200,
                                reservation_duration=600, next_available=False)
    out = run(lab, "extend", rid, "--by", "1h")
    assert out.returncode == 1
    assert re.fullmatch(rf"atsclient: unavailable: cannot extend {rid} by 1h: at most --by "
                        r"(9m\d+s|10m) is free\n", out.stderr), out.stderr


def test_batch_and_queues(lab, tmp_path):
    queues = human(lab, "queues").splitlines()
    assert queues[0].split() == ["QUEUE", "BACKEND", "HOSTS"]
    assert queues[1].split() == ["q", "local", "h1", "h2"]
    assert queues[-2] == f"job scripts from: {tmp_path / 'jobs'}"
    assert as_json(lab, "queues")["output_dir"] == str(tmp_path / "out")

    created = as_json(lab, "batch", "create", "-q", "q", "-n", "2", "-t", "30s")
    rid = created["reservation_id"]
    job = human(lab, "batch", "submit", rid, "hello.sh", "world", cwd=tmp_path / "jobs").strip()
    outside = run(lab, "batch", "submit", rid, "hello.sh", cwd=tmp_path)
    assert outside.returncode == 2 and outside.stderr == (
        f"atsclient: hello.sh ({tmp_path / 'hello.sh'}) is not in a job directory; put it in "
        f"{tmp_path / 'jobs'}\n")
    wait_for(lambda: "completed" in human(lab, "batch", "jobs", rid), what="the job")
    table = human(lab, "batch", "jobs", rid).splitlines()
    assert table[0].split() == ["JOB_ID", "STATE", "EXIT_CODE", "OUTPUT"]
    assert table[1].split() == [job, "completed", "0", str(tmp_path / "out" / f"{job}.out")]
    assert (tmp_path / "out" / f"{job}.out").read_text() == "hello world from h1,h2\n"
    assert re.fullmatch(rf"{rid}: active on h1, h2, {LOCAL} to {LOCAL}, 1 job\n",
                        human(lab, "batch", "status", rid))
    assert as_json(lab, "batch", "status", rid)["reservation_status"] == "RESERVATION_ACTIVE"
    assert as_json(lab, "batch", "jobs", rid)[0]["job_id"] == job

    later = as_json(lab, "batch", "create", "-q", "q", "-t", "10m", "--start", "now+1h")
    assert human(lab, "batch", "cancel", later["reservation_id"]) == \
        f"cancelled {later['reservation_id']}\n"
    busy = run(lab, "batch", "create", "-q", "q", "-n", "1", "-t", "10s")
    assert busy.returncode == 1 and "unavailable" in busy.stderr


def test_pool_checkout_checkin_run(lab):
    table = human(lab, "pool").splitlines()
    assert table[0].split() == ["TYPE", "ID", "FREE", "TOTAL"]
    assert human(lab, "checkout", "gpus:2", "--check") == "gpus:2 would be granted now\n"
    out = human(lab, "checkout", "gpus:2")
    m = re.match(rf"checked out (\S+) until {LOCAL}\n  gpus: \d \(2 slots\)\n$", out)
    assert m, out
    assert human(lab, "checkin", m.group(1)) == f"checked in {m.group(1)}\n"
    data = as_json(lab, "checkout", "gpus:1")
    assert as_json(lab, "checkin", data["allocation_id"]) == \
        [{"allocation_id": data["allocation_id"], "checked_in": True}]
    ran = run(lab, "run", "--resources", "gpus:1", "--", sys.executable, "-c",
              "import os; print(os.environ['CTEST_RESOURCE_GROUP_COUNT'])")
    assert (ran.returncode, ran.stdout) == (0, "1\n")


def test_revoke_ack_restore_values_watch(lab):
    rid = as_json(lab, "reserve", "--two-step", "dut-1", "--for", "10m")["reservation_id"]
    out = human(lab, "revoke", "dut-1", "--max-wait", "5m", "--reason", "recall",
                user="labadmin")
    assert re.fullmatch(rf"revocation \S+: dut-1 go at {LOCAL}\n", out)
    assert human(lab, "ack", "dut-1") == "gone now: dut-1\n"
    assert human(lab, "restore", "dut-1", user="labadmin") == "back in service: dut-1\n"
    assert human(lab, "values", "dut-2=0.25", user="labadmin") == "updated dut-2\n"
    values = human(lab, "values").splitlines()
    assert values[0].split() == ["NODE", "VALUE"] and ["dut-2", "0.25"] in \
        [line.split() for line in values]
    assert json.loads(run(lab, "--json", "values").stdout)["dut-2"] == 0.25  # node -> value

    lines = human(lab, "watch", "--since", "0", "--count", "5").splitlines()
    topics = [line.split()[4] for line in lines]
    assert topics == ["reservation.status", "reservation.status", "reservation.degraded",
                      "resource.delete_pending", "reservation.status"], lines
    assert not any(EPOCH.search(line) or REPR.search(line) for line in lines), lines
    assert re.fullmatch(rf"{LOCAL} #1 reservation.status reservation {rid} of alice on dut-1: "
                        rf"new -> granted, {LOCAL} to {LOCAL}", lines[0]), lines[0]
    assert re.search(rf"#2 reservation.status reservation {rid} .*: granted -> active \(claimed\)",
                     lines[1]), lines[1]
    assert re.match(rf"{LOCAL} #\d+ resource.delete_pending revocation \S+ \(recall\): "
                    rf"dut-1 \(alice {rid}\) go in 5m, at {LOCAL}", lines[3]), lines
    assert lines[2].endswith(f"reservation.degraded {rid} of alice: dut-1 is down (recall)")
    assert "active -> ended (revoked)" in lines[4]
    out = run(lab, "--json", "watch", "--since", "0", "--count", "4")
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(events) == 4
    for event in events:
        check_schema(event)
    assert events[0]["reservation_id"] == rid and events[0]["topic"] == "reservation.status"


def test_keygen(tmp_path):
    out = subprocess.run([sys.executable, "-m", "atsclient", "keygen", str(tmp_path),
                          "--name", "carol"], capture_output=True, text=True, env=env())
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "carol.key").exists() and (tmp_path / "carol.key_secret").exists()


def test_progress_off_a_terminal_every_5s(lab):
    """reserve --wait for a window an hour away: a line at once and the next within 5 s
    (read as they come; the waiting client is then stopped)."""
    with lab.client("bob") as bob:
        pre, _, _ = bob.request_reservation("scope-1", reservation_duration=3600)
        bob.claim_reservation(pre)
    proc = subprocess.Popen(lab.cli_argv("reserve", "scope-1", "--for", "1m", "--wait"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    try:
        first = proc.stderr.readline()
        start = time.monotonic()
        second = proc.stderr.readline()
        between = time.monotonic() - start
    finally:
        proc.kill()
        proc.communicate()
    for line in (first, second):
        assert re.fullmatch(rf"atsclient: waiting for scope-1 free in (59m\d+s|1h), at "
                            rf"{LOCAL}\n", line), line
    assert 4 <= between < 8           # every 5 s, read by a process that may be scheduled late


def test_unreachable_daemon_is_named_after_the_first_timeout(tmp_path):
    nobody = f"ipc://{tmp_path}/nobody-listens-here"
    argv = [sys.executable, "-m", "atsclient", "--server", nobody, "--timeout", "0.2",
            "--retries", "2", "resources"]
    out = subprocess.run(argv, capture_output=True, text=True, env=env(), timeout=30)
    assert out.returncode == 3
    assert out.stderr.splitlines() == [
        f"atsclient: no reply from atsd at {nobody} within 0.2s; trying again (2 of 2)",
        f"atsclient: unreachable: no reply from atsd at {nobody} after 2 tries of 0.2s"]
    out = subprocess.run(argv[:3] + ["--json"] + argv[3:], capture_output=True, text=True,
                         env=env(), timeout=30)
    assert out.returncode == 3 and json.loads(out.stderr)["error"]["code"] == "unreachable"


def test_global_options_once_in_help_and_accepted_after_the_subcommand(lab):
    top = subprocess.run([sys.executable, "-m", "atsclient", "--help"], capture_output=True,
                         text=True, env=env()).stdout
    assert top.count("--server SERVER, -s SERVER") == 1 and "Exit status:" in top
    for sub in ("reserve", "resources", "batch"):
        text = subprocess.run([sys.executable, "-m", "atsclient", sub, "--help"],
                              capture_output=True, text=True, env=env()).stdout
        assert "--server" not in text and "--timeout" not in text, sub
    out = subprocess.run([sys.executable, "-m", "atsclient", "whoami", "--server", lab.listen,
                          "--user", "dave"], capture_output=True, text=True, env=env())
    assert out.stdout == f"dave at {lab.listen}\n"


def test_shell_completion(tmp_path):
    """argcomplete answers the shell: subcommands, then a subcommand's options."""
    def complete(line):
        target = tmp_path / "out"
        subprocess.run([sys.executable, "-m", "atsclient"], env=env(
            _ARGCOMPLETE="1", COMP_LINE=line, COMP_POINT=str(len(line)), COMP_TYPE="9",
            _ARGCOMPLETE_STDOUT_FILENAME=str(target), _ARGCOMPLETE_IFS="\n"),
            capture_output=True, timeout=30)
        return target.read_text().split()
    assert {"reserve", "release", "reservations", "resources"} <= set(complete("atsclient re"))
    assert "--next" in complete("atsclient reserve dut-1 --n")


def test_local_times_a_clock_change_skips_or_repeats_are_refused(lab):
    """In Europe/Berlin 02:30 does not exist on 2027-03-28 and happens twice on 2027-10-31:
    refused with the two offsets that would work, never booked an hour off; the same times
    with an offset are booked as written."""
    for at, what in [("2027-03-28T02:30", "does not exist in local time"),
                     ("2027-10-31T02:30", "happens twice in local time")]:
        out = run(lab, "reserve", "dut-1", "--at", at, "--for", "10m")
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert what in out.stderr and f"{at}+01:00" in out.stderr and f"{at}+02:00" in out.stderr
    assert as_json(lab, "reservations") == []
    pre = as_json(lab, "reserve", "dut-1", "--at", "2027-10-31T02:30+01:00", "--for", "10m")
    assert parse_iso(pre["time_available"]) == 1824946200      # 01:30 UTC
    assert pre["time_available"] == "2027-10-31T02:30:00+01:00"


def test_human_output_never_leaks_epoch_or_repr_in_errors(lab):
    """Also on stderr: a too-late claim's new offer is in local time."""
    assert os.environ.get("TZ") != "bogus"
    out = run(lab, "claim", "nope")
    assert out.returncode == 1 and not EPOCH.search(out.stderr) and not REPR.search(out.stderr)


def test_readme_session_is_what_the_commands_print(daemon):
    """README's console session, run against the same lab: each command's output equals
    the README's once times and reservation ids are named (bob holds scope-1 for 90 min)."""
    readme = (ROOT / "README.md").read_text()
    session = readme.split("```console\n", 1)[1].split("```", 1)[0].splitlines()
    with daemon.client("bob") as bob:
        pre, _, _ = bob.request_reservation("scope-1", reservation_duration=5400)
        bob.claim_reservation(pre)
    ids: dict[str, str] = {}          # README's id -> this run's
    steps = []
    for line in session:
        if line.startswith("$ atsclient "):
            steps.append((line[len("$ atsclient "):].split(), []))
        else:
            steps[-1][1].append(line)

    def normal(text: str) -> list[list[str]]:
        text = re.sub(LOCAL, "TIME", text)
        text = re.sub(r"\btcp://\S+", "ADDRESS", text)
        return [line.split() for line in text.splitlines()]
    for argv, expected in steps:
        argv = [ids.get(a, a) for a in argv]
        out = run(daemon, *argv)
        printed = normal(out.stdout + out.stderr)
        want = normal("\n".join(expected))
        assert len(printed) == len(want), (argv, out.stdout, out.stderr)
        for got_line, want_line in zip(printed, want, strict=True):
            for got, word in zip(got_line, want_line, strict=False):
                if re.fullmatch(r"'?[A-Za-z0-9_-]{16}:?'?", word) and word not in got:
                    ids.setdefault(word.strip("':"), got.strip("':"))
            assert [ids.get(w.strip("':"), w.strip("':")) for w in want_line] == \
                [w.strip("':") for w in got_line], (argv, got_line, want_line)


def test_json_waits_quietly_then_claims(lab):
    """With --json, stderr holds only a JSON error: no progress lines while waiting."""
    with lab.client("bob") as bob:
        pre, _, _ = bob.request_reservation("scope-1", reservation_duration=2.0)
        bob.claim_reservation(pre)
    out = run(lab, "--json", "reserve", "scope-1", "--for", "1m", "--wait")
    assert (out.returncode, out.stderr) == (0, "")
    assert json.loads(out.stdout)["reservation_id"] != pre
