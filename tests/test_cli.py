"""The command line as a person uses it: real processes against a real daemon."""

import json
import subprocess
import time

from daemon import JOB_USER, cli_env, wait_for


def test_resources_reserve_list_extend_release(daemon):
    out = daemon.cli("resources")
    assert out.returncode == 0 and "dut-1" in out.stdout and "free" in out.stdout

    out = daemon.cli("--json", "reserve", "dut-2", "--for", "10m")
    assert out.returncode == 0, out.stderr
    rid = json.loads(out.stdout)["reservation_id"]

    rows = json.loads(daemon.cli("--json", "reservations", "--mine").stdout)
    assert [(r["id"], r["resource"], r["reservation_status"]) for r in rows] == \
        [(rid, "dut-2", "RESERVATION_ACTIVE")]
    assert daemon.cli("reservations", user="bob").stdout.count(rid) == 1   # everyone sees it
    assert daemon.cli("reservations", "--mine", user="bob").stdout.count(rid) == 0

    before = rows[0]["end_time"]
    out = daemon.cli("--json", "extend", rid, "--by", "5m")
    assert json.loads(out.stdout)["expire_time"] == before + 300

    out = daemon.cli("release", rid, user="bob")
    assert out.returncode == 1 and out.stderr.startswith("atsclient: forbidden:")
    assert len(out.stderr.strip().splitlines()) == 1
    assert daemon.cli("release", rid).returncode == 0
    assert json.loads(daemon.cli("--json", "reservations").stdout) == []


def test_future_reservation_and_claim(daemon):
    out = daemon.cli("reserve", "--two-step", "scope-1", "--at", "now+1h", "--for", "30m")
    assert out.returncode == 0 and "pre-reserved" in out.stdout
    pre = out.stdout.split()[1].rstrip(":")
    out = daemon.cli("claim", pre)
    assert out.returncode == 1 and "too_early" in out.stderr
    when = daemon.cli("when", "scope-1", "--at", "now+50m", "--for", "30m")
    assert when.returncode == 0 and "is free from" in when.stdout


def test_reserve_wait_counts_down_then_claims(daemon):
    with daemon.client("bob") as bob:
        pre, _, _ = bob.request_reservation("scope-1", reservation_duration=1.0)
        bob.claim_reservation(pre)
    start = time.time()
    out = daemon.cli("--json", "reserve", "scope-1", "--for", "1m", "--wait")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["reservation_id"] != pre
    assert time.time() - start >= 0.5                     # it waited for bob's to end


def test_calendar_shows_who_holds_what(daemon, client):
    now = time.time()
    a, _, _ = client.request_reservation("dut-1", time_needed=now + 60,
                                         reservation_duration=3000)
    b, _, _ = client.request_reservation(["scope-1", "dut-2"], time_needed=now + 7300,
                                         reservation_duration=3000)
    out = daemon.cli("calendar", "--from", str(now), "--to", str(now + 4 * 3600), "--width", "8")
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line.split()[1] for line in out.stdout.splitlines()[1:5]}
    assert lines["dut-1"] == "AA......"
    assert lines["scope-1"] == lines["dut-2"] == "....BB.."
    assert lines["build-1"] == "........"
    assert f"A {a} alice" in out.stdout and f"B {b} alice" in out.stdout


def test_batch_from_the_command_line(daemon_factory, tmp_path):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    script = jobs / "hello.sh"
    script.write_text("#!/bin/sh\necho \"hello $1 from $ATS_HOSTS\"\n")
    script.chmod(0o755)
    d = daemon_factory({"queues": {"q": {"backend": "local", "hosts": ["h1", "h2"]}},
                        "jobs": {"allowed_dirs": [str(jobs)], "output_dir": str(tmp_path / "out"),
                                 "run_as": JOB_USER}})
    out = d.cli("--json", "batch", "create", "-q", "q", "-n", "2", "-t", "30s")
    assert out.returncode == 0, out.stderr
    rid = json.loads(out.stdout)["reservation_id"]
    job = d.cli("batch", "submit", rid, str(script), "world").stdout.strip()
    wait_for(lambda: "COMPLETED" in d.cli("batch", "jobs", rid).stdout, what="the job")
    assert (tmp_path / "out" / f"{job}.out").read_text() == "hello world from h1,h2\n"
    out = d.cli("batch", "create", "-q", "q", "-n", "1", "-t", "10s")
    assert out.returncode == 1 and "unavailable" in out.stderr
    assert d.cli("batch", "cancel", rid).returncode == 1          # active: conflict
    out = d.cli("--json", "batch", "status", rid)
    assert json.loads(out.stdout)["reservation_status"] == "RESERVATION_ACTIVE"


def test_bad_input_is_one_line_and_nonzero(daemon):
    for args in (["reserve", "dut-1", "--at", "tomorrow"], ["reserve", "dut-1", "--for", "2x"]):
        out = daemon.cli(*args)
        assert out.returncode == 2
        assert out.stderr.startswith("atsclient: not a") and len(out.stderr.splitlines()) == 1
    out = daemon.cli("show", "nope")
    assert out.returncode == 2 and "no resource named 'nope'" in out.stderr


def test_unreachable_daemon_is_named(tmp_path):
    import subprocess
    import sys
    from daemon import cli_env
    nobody = f"ipc://{tmp_path}/nobody-listens-here"
    out = subprocess.run([sys.executable, "-m", "atsclient", "--server", nobody,
                          "--timeout", "0.2", "--retries", "2", "resources"],
                         capture_output=True, text=True, env=cli_env(), timeout=30)
    assert out.returncode == 1
    assert out.stderr.strip() == (f"atsclient: unreachable: no reply from atsd at "
                                  f"{nobody} after 2 tries of 0.2s")


def test_local_times_a_clock_change_skips_or_repeats_are_refused(daemon):
    """In Europe/Berlin 02:30 does not exist on 2027-03-28 and happens twice on 2027-10-31:
    refused with the two offsets that would work, never booked an hour off; the same times
    with an offset are booked as written."""
    env = {**cli_env(), "TZ": "Europe/Berlin"}

    def reserve(at):
        return subprocess.run(daemon.cli_argv("--json", "reserve", "dut-1", "--at", at,
                                              "--for", "10m"),
                              capture_output=True, text=True, timeout=60, env=env)
    for at, what in [("2027-03-28T02:30", "does not exist in local time"),
                     ("2027-10-31T02:30", "happens twice in local time")]:
        out = reserve(at)
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert what in out.stderr and f"{at}+01:00" in out.stderr and f"{at}+02:00" in out.stderr
    assert json.loads(daemon.cli("--json", "reservations").stdout) == []
    out = reserve("2027-10-31T02:30+01:00")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["time_available"] == 1824946200      # 01:30 UTC
