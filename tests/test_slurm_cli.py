"""atsd.backends.slurm_cli against a real private Slurm cluster (slurmctld +
4 slurmd on localhost, see tests/slurm_cluster.py).

Skipped when the Slurm/munge binaries are missing (or not root), unless
ATSD_REQUIRE_SLURM=1, in which case that is a failure.  The pure parsing
tests at the top run everywhere.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid

import pytest

try:  # tests/ on sys.path (rootdir-relative "prepend" import, no __init__.py)
    from slurm_cluster import SlurmCluster, slurm_binaries_missing
except ImportError:  # tests is a package
    from tests.slurm_cluster import SlurmCluster, slurm_binaries_missing

from atsd.backends import slurm_cli as sc

REQUIRE_SLURM = os.environ.get("ATSD_REQUIRE_SLURM") == "1"


# --------------------------------------------------------------- helpers


def _name(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


async def _poll(fn, pred, *, timeout: float = 30.0, interval: float = 0.1, what: str = ""):
    """Call ``await fn()`` until ``pred(value)``; fail with the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await fn()
        if pred(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}: {value!r}")
        await asyncio.sleep(interval)


# ----------------------------------------------------- pure unit tests

JOB_LINE = (
    "JobId=7 JobName=my job.sh UserId=root(0) GroupId=root(0) MCS_label=N/A "
    "JobState=COMPLETED Reason=None Dependency=(null) ExitCode=3:0 "
    "StartTime=2026-01-02T03:04:05 EndTime=Unknown AllocNode:Sid=localhost:2519 "
    "NodeList=n[1-2] CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,node=1,billing=1 "
    "Reservation=r1 Command=/tmp/dir with space/run.sh WorkDir=/tmp/a b "
    "StdOut=/tmp/o=1.txt Power="
)


def test_parse_oneliner_job_line():
    d = sc.parse_oneliner(JOB_LINE)
    assert d["JobId"] == "7"
    assert d["JobName"] == "my job.sh"
    assert d["MCS_label"] == "N/A"
    assert d["ExitCode"] == "3:0"
    assert d["AllocNode:Sid"] == "localhost:2519"
    assert d["CPUs/Task"] == "1"
    assert d["ReqB:S:C:T"] == "0:0:*:*"
    assert d["TRES"] == "cpu=1,node=1,billing=1"
    assert d["Command"] == "/tmp/dir with space/run.sh"
    assert d["WorkDir"] == "/tmp/a b"
    assert d["StdOut"] == "/tmp/o=1.txt"
    assert d["Power"] == ""
    job = sc._normalize_job(d)
    assert (job["state"], job["exit_code"], job["signal"]) == ("COMPLETED", 3, 0)
    assert job["nodes"] == ["n1", "n2"]
    assert job["start"] == 1767323045 and job["end"] is None


def test_parse_oneliner_free_text_and_records():
    node = ("NodeName=n1 Arch=x86_64 OS=Linux 6.1.0-18-amd64 #1 SMP PREEMPT_DYNAMIC "
            "Debian 6.1.76-1 (2024-02-01)  RealMemory=1 State=IDLE+RESERVED "
            "Reason=Not responding [root@2026-01-01T00:00:00] Partitions=debug")
    d = sc.parse_oneliner(node)
    assert d["OS"] == "Linux 6.1.0-18-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)"
    assert d["Reason"] == "Not responding [root@2026-01-01T00:00:00]"
    assert d["State"] == "IDLE+RESERVED" and d["Partitions"] == "debug"
    recs = sc.parse_records("ReservationName=a Flags= Nodes=n1\n\nReservationName=b Nodes=(null)\n")
    assert [r["ReservationName"] for r in recs] == ["a", "b"]
    assert recs[0]["Flags"] == ""


def test_expand_hostlist():
    assert sc.expand_hostlist("n[1-3,5]") == ["n1", "n2", "n3", "n5"]
    assert sc.expand_hostlist("gpu[08-10],login") == ["gpu08", "gpu09", "gpu10", "login"]
    assert sc.expand_hostlist("r[1-2]c[1-2]") == ["r1c1", "r1c2", "r2c1", "r2c2"]
    assert sc.expand_hostlist("n4") == ["n4"]
    assert sc.expand_hostlist("(null)") == [] and sc.expand_hostlist("") == []
    with pytest.raises(ValueError):
        sc.expand_hostlist("n[3-1]")
    with pytest.raises(ValueError):
        sc.expand_hostlist("n[1-2")


def test_time_conversion_is_utc():
    assert sc.to_slurm_time(0) == "1970-01-01T00:00:00"
    assert sc.to_slurm_time(1767323045) == "2026-01-02T03:04:05"
    assert sc.from_slurm_time("2026-01-02T03:04:05") == 1767323045
    for junk in ("Unknown", "None", "N/A", "", None):
        assert sc.from_slurm_time(junk) is None


@pytest.mark.asyncio
@pytest.mark.parametrize("args", [
    [["Time", "1"]], [["time limit", "1"]], [["--time", "1"]], [["1time", "1"]],
    [["reservation", "x"]], [["reserv", "x"]], [["output", "/tmp/x"]],
    [["chdir", "/"]], [["parsable", "1"]], [["time"]], ["time=1"], [["export", "ALL"]],
    [["exp", "ALL"]],
])
async def test_submit_rejects_bad_args_before_running_sbatch(args, tmp_path):
    # slurm_conf points nowhere: validation must happen before any command.
    with pytest.raises(ValueError):
        await sc.submit("r1", tmp_path / "job.sh", args, {}, tmp_path, tmp_path / "o",
                        slurm_conf=tmp_path / "missing.conf")


# ------------------------------------------------- real cluster tests


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = slurm_binaries_missing()
    why = None
    if missing:
        why = f"Slurm/munge binaries missing: {', '.join(missing)} (run .ci/slurm-deps)"
    elif os.geteuid() != 0:
        why = "the private Slurm cluster needs root"
    if why:
        if REQUIRE_SLURM:
            pytest.fail(f"ATSD_REQUIRE_SLURM=1 but {why}")
        pytest.skip(why)
    c = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    t0 = time.monotonic()
    c.start()
    c.startup_seconds = time.monotonic() - t0
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def conf(cluster):
    """SLURM_CONF of the cluster; deletes leftover reservations afterwards."""
    if not cluster.controller_running:
        cluster.start_controller()
    yield str(cluster.conf_path)
    if not cluster.controller_running:
        cluster.start_controller()
    out = subprocess.run(["scontrol", "show", "reservation", "--oneliner"],
                         env=cluster.env, capture_output=True, text=True, timeout=30)
    for rec in sc.parse_records(out.stdout):
        if "ReservationName" in rec:
            subprocess.run(["scontrol", "delete", f"ReservationName={rec['ReservationName']}"],
                           env=cluster.env, capture_output=True, timeout=30)


def test_cluster_is_private_and_up(cluster):
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T %P"], env=cluster.env,
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert sorted(out.split("\n")[:-1]) == [f"n{i} idle debug*" for i in range(1, 5)]
    cfg = subprocess.run(["scontrol", "show", "config"], env=cluster.env,
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert cluster.cluster_name in cfg and str(cluster.base_dir) in cfg
    assert set(cluster.pids) == {"munged", "slurmctld", *(f"slurmd-n{i}" for i in range(1, 5))}
    assert cluster.startup_seconds < 30


@pytest.mark.asyncio
async def test_create_show_delete(conf):
    name = _name()
    start = int(time.time()) + 3600
    end = start + 1800 + 7  # not a whole minute: EndTime keeps seconds
    r = await sc.create_reservation(name, "debug", 2, start, end, "root", slurm_conf=conf)
    assert r["name"] == r["ReservationName"] == name
    assert (r["start"], r["end"]) == (start, end)
    assert r["start_iso"] == sc.to_slurm_time(start)
    assert r["node_count"] == 2 and len(r["nodes"]) == 2
    assert set(r["nodes"]) <= {"n1", "n2", "n3", "n4"}
    assert r["nodes"] == await sc.show_hostnames(r["nodelist"], slurm_conf=conf)
    assert r["state"] == "INACTIVE" and r["partition"] == "debug" and r["users"] == ["root"]

    shown = await sc.show_reservation(name, slurm_conf=conf)
    assert shown is not None and shown["nodes"] == r["nodes"] and shown["end"] == end
    assert name in [x["name"] for x in await sc.list_reservations(slurm_conf=conf)]

    with pytest.raises(sc.SlurmError, match="Duplicate reservation name"):
        await sc.create_reservation(name, "debug", 1, start, end, "root", slurm_conf=conf)

    assert await sc.delete_reservation(name, slurm_conf=conf) is True
    assert await sc.show_reservation(name, slurm_conf=conf) is None
    assert await sc.delete_reservation(name, slurm_conf=conf) is False
    assert await sc.list_reservations(slurm_conf=conf) == []


@pytest.mark.asyncio
async def test_node_count_is_checked(conf):
    start = int(time.time()) + 3600
    # More nodes than exist: Slurm 22.05 silently grants 4; we must refuse.
    name = _name()
    with pytest.raises(sc.SlurmInsufficientNodes, match="granted only 4 of 5 nodes"):
        await sc.create_reservation(name, "debug", 5, start, start + 600, "root",
                                    slurm_conf=conf)
    assert await sc.show_reservation(name, slurm_conf=conf) is None

    # Partly busy: 3 of 4 nodes taken, asking for 2 grants 1 -> refused.
    blocker = _name("b")
    await sc.create_reservation(blocker, "debug", 3, start, start + 600, "root", slurm_conf=conf)
    name = _name()
    with pytest.raises(sc.SlurmInsufficientNodes, match="granted only 1 of 2 nodes"):
        await sc.create_reservation(name, "debug", 2, start + 60, start + 120, "root",
                                    slurm_conf=conf)
    assert [x["name"] for x in await sc.list_reservations(slurm_conf=conf)] == [blocker]

    # Fully busy: Slurm's own message.
    await sc.create_reservation(_name("b"), "debug", 1, start, start + 600, "root",
                                slurm_conf=conf)
    with pytest.raises(sc.SlurmInsufficientNodes, match="Requested nodes are busy"):
        await sc.create_reservation(_name(), "debug", 1, start, start + 60, "root",
                                    slurm_conf=conf)

    # Back to back (half-open intervals) is fine.
    r = await sc.create_reservation(_name(), "debug", 4, start + 600, start + 660, "root",
                                    slurm_conf=conf)
    assert r["node_count"] == 4 and r["start"] == start + 600

    with pytest.raises(sc.SlurmError) as ei:
        await sc.create_reservation(_name(), "nosuchpartition", 1, start, start + 60,
                                    "root", slurm_conf=conf)
    assert not isinstance(ei.value, sc.SlurmInsufficientNodes)
    assert "partition" in str(ei.value).lower()


@pytest.mark.asyncio
async def test_submit_job_into_active_reservation(conf, tmp_path):
    name = _name()
    now = int(time.time())
    r = await sc.create_reservation(name, "debug", 1, now, now + 600, "root", slurm_conf=conf)
    assert r["state"] == "ACTIVE" and len(r["nodes"]) == 1

    tmp_path.chmod(0o755)
    ok = tmp_path / "ok.sh"
    ok.write_text('#!/bin/sh\necho hi\necho "$ATSD_TEST_VAR"\n')
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/bin/sh\necho failing >&2\nexit 3\n")

    job = await sc.submit(name, ok, [["time", "1"]], {"ATSD_TEST_VAR": "hello world"},
                          tmp_path, tmp_path / "out-%j.txt", slurm_conf=conf)
    assert job.isdigit()
    bad_job = await sc.submit(name, bad, [["time", "1"], ["job-name", "bad one"]], {},
                              tmp_path, tmp_path / "bad-%j.txt", slurm_conf=conf)

    done = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
    info = await _poll(lambda: sc.show_job(job, slurm_conf=conf),
                       lambda j: j is not None and j["state"] in done, what=f"job {job}")
    assert info["state"] == "COMPLETED", info
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0"
    assert info["exit_code"] == 0 and info["signal"] == 0
    assert info["reservation"] == name and info["nodes"] == r["nodes"]
    assert info["TimeLimit"] == "00:01:00"
    assert (tmp_path / f"out-{job}.txt").read_text() == "hi\nhello world\n"

    info = await _poll(lambda: sc.show_job(bad_job, slurm_conf=conf),
                       lambda j: j is not None and j["state"] in done, what=f"job {bad_job}")
    assert info["state"] == "FAILED" and info["exit_code"] == 3, info
    assert info["JobName"] == "bad one"
    assert (tmp_path / f"bad-{bad_job}.txt").read_text() == "failing\n"

    assert await sc.show_job("999999", slurm_conf=conf) is None
    with pytest.raises(sc.SlurmError, match="Requested reservation is invalid"):
        await sc.submit(_name("none"), ok, [["time", "1"]], {}, tmp_path,
                        tmp_path / "x.txt", slurm_conf=conf)
    with pytest.raises(sc.SlurmError, match="unrecognized option"):
        await sc.submit(name, ok, [["no-such-option", "1"]], {}, tmp_path,
                        tmp_path / "x.txt", slurm_conf=conf)


@pytest.mark.asyncio
async def test_cancel_job(conf, tmp_path):
    name = _name()
    now = int(time.time())
    await sc.create_reservation(name, "debug", 1, now, now + 600, "root", slurm_conf=conf)
    tmp_path.chmod(0o755)
    script = tmp_path / "sleep.sh"
    script.write_text("#!/bin/sh\nexec sleep 120\n")
    job = await sc.submit(name, script, [["time", "5"]], {}, tmp_path, tmp_path / "o.txt",
                          slurm_conf=conf)
    await _poll(lambda: sc.show_job(job, slurm_conf=conf),
                lambda j: j is not None and j["state"] == "RUNNING", what="RUNNING")
    assert await sc.cancel_job(job, slurm_conf=conf) is True
    info = await _poll(lambda: sc.show_job(job, slurm_conf=conf),
                       lambda j: j is None or j["state"] == "CANCELLED", what="CANCELLED")
    assert info is None or info["state"] == "CANCELLED"
    assert await sc.cancel_job(job, slurm_conf=conf) is False
    assert await sc.cancel_job("999999", slurm_conf=conf) is False


@pytest.mark.asyncio
async def test_earliest_start_finds_slot_after_existing_reservations(conf):
    now = int(time.time())
    t0 = now + 60
    # 3 of 4 nodes busy in [t0, t0+120), all 4 busy in [t0+120, t0+200).
    b1 = await sc.create_reservation(_name("b"), "debug", 3, t0, t0 + 120, "root",
                                     slurm_conf=conf)
    b2 = await sc.create_reservation(_name("b"), "debug", 4, t0 + 120, t0 + 200, "root",
                                     slurm_conf=conf)
    existing = {b1["name"], b2["name"]}

    # One node fits right away, next to the 3-node reservation.
    r = await sc.earliest_start("debug", 1, 60, t0, t0 + 1000, name=_name("e"),
                                user="root", slurm_conf=conf)
    assert r is not None and (r["start"], r["end"], r["node_count"]) == (t0, t0 + 60, 1)
    existing.add(r["name"])

    # Two nodes: not before b1 ends, not during b2 -> at b2's end.
    t = time.monotonic()
    r = await sc.earliest_start("debug", 2, 60, t0, t0 + 1000, name=_name("e"),
                                user="root", slurm_conf=conf)
    probe_seconds = time.monotonic() - t
    assert r is not None, "no slot found"
    assert (r["start"], r["end"]) == (t0 + 200, t0 + 260)
    assert r["node_count"] == 2 and len(r["nodes"]) == 2
    assert probe_seconds < 5
    existing.add(r["name"])

    # A deadline that leaves no room: None, and no probe reservation left behind.
    none = await sc.earliest_start("debug", 4, 60, t0, t0 + 250, name=_name("e"),
                                   user="root", slurm_conf=conf)
    assert none is None
    assert {x["name"] for x in await sc.list_reservations(slurm_conf=conf)} == existing

    # not_before in the past means "now".
    r = await sc.earliest_start("debug", 1, 30, now - 3600, now + 3600, name=_name("e"),
                                user="root", slurm_conf=conf)
    assert r is not None and abs(r["start"] - time.time()) < 5 and r["state"] == "ACTIVE"


@pytest.mark.asyncio
async def test_controller_down_errors_and_recovery(cluster, conf, tmp_path):
    name = _name()
    start = int(time.time()) + 3600
    await sc.create_reservation(name, "debug", 2, start, start + 600, "root", slurm_conf=conf)
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\necho hi\n")

    cluster.stop_controller()
    try:
        assert not cluster.controller_running
        t = time.monotonic()
        with pytest.raises(sc.SlurmUnavailable, match="Unable to contact slurm controller"):
            await sc.show_reservation(name, slurm_conf=conf)
        # Slurm gives up after ~MessageTimeout-1 s (MessageTimeout=3 here).
        assert time.monotonic() - t < 10
        with pytest.raises(sc.SlurmUnavailable, match="slurmctld is DOWN"):
            await sc.create_reservation(_name(), "debug", 1, start, start + 60, "root",
                                        slurm_conf=conf)
        with pytest.raises(sc.SlurmUnavailable, match="Unable to contact slurm controller"):
            await sc.submit(name, script, [["time", "1"]], {}, tmp_path, tmp_path / "o",
                            slurm_conf=conf)
        with pytest.raises(sc.SlurmUnavailable, match="Unable to contact slurm controller"):
            await sc.cancel_job("1", slurm_conf=conf)
        # Our own per-call timeout also ends a call that Slurm keeps retrying.
        t = time.monotonic()
        with pytest.raises(sc.SlurmUnavailable, match="no answer within 0.5s"):
            await sc.list_reservations(slurm_conf=conf, timeout=0.5)
        assert time.monotonic() - t < 2
        assert await sc.ping(slurm_conf=conf) is False
    finally:
        cluster.start_controller()

    assert cluster.controller_running
    assert await sc.ping(slurm_conf=conf) is True
    shown = await sc.show_reservation(name, slurm_conf=conf)  # state was recovered
    assert shown is not None and shown["node_count"] == 2 and shown["start"] == start
    r = await sc.create_reservation(_name(), "debug", 2, start, start + 600, "root",
                                    slurm_conf=conf)
    assert set(r["nodes"]).isdisjoint(shown["nodes"])
