"""Batch queue reservations (Compute Queue Reservation): the same scenarios against both
backends, a ``local`` queue (atsd runs the jobs itself) and a ``slurm`` queue on a real
private Slurm cluster (tests/slurm_cluster.py: munged, slurmctld and four slurmd, one per
module, reset between tests).

The Slurm cases are skipped when the Slurm/munge binaries are missing or we are not root,
unless ATSD_REQUIRE_SLURM=1 (CI), which turns that into a failure.
"""

from __future__ import annotations

import os
import subprocess
import time

import msgpack
import pytest
import zmq

from atsclient.errors import BackendError, BadRequest, Conflict, ResourceUnavailable
from daemon import JOB_USER, wait_for
from slurm_cluster import SlurmCluster, slurm_binaries_missing

REQUIRE_SLURM = os.environ.get("ATSD_REQUIRE_SLURM") == "1"
QUEUE = {"local": {"backend": "local", "hosts": ["h1", "h2", "h3", "h4"]},
         "slurm": {"backend": "slurm", "partition": "debug"}}
SCRIPTS = {
    "ok.sh": "#!/bin/sh\necho \"rid=$ATS_RESERVATION_ID job=$ATS_JOB_ID hosts=$ATS_HOSTS\"\n",
    "fail.sh": "#!/bin/sh\necho failing\nexit 3\n",
    "slow.sh": "#!/bin/sh\nsleep 2\necho done\n",
    "sleep.sh": "#!/bin/sh\nexec sleep 60\n",
    "env.sh": "#!/bin/sh\nexec env\n",
}


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    missing = slurm_binaries_missing()
    why = (f"Slurm/munge binaries missing: {', '.join(missing)}" if missing
           else "the private Slurm cluster needs root" if os.geteuid() != 0 else None)
    if why:
        if REQUIRE_SLURM:
            pytest.fail(f"ATSD_REQUIRE_SLURM=1 but {why}")
        pytest.skip(why)
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


class Queue:
    """One daemon with queue ``q`` on the backend under test, a client and the job scripts."""

    def __init__(self, backend, daemon, cluster):
        self.backend, self.daemon, self.cluster = backend, daemon, cluster
        self.client = daemon.client("alice", timeout=15.0, retries=1)
        self.jobs = daemon.dir / "jobs"

    def create(self, hosts, wall, start):
        return self.client.call("create_reservation", queue_id="q", host_count=hosts,
                                wall_time=wall, start_time=start)

    def create_by(self, hosts, wall, deadline):
        return self.client.call("create_deadline_reservation", queue_id="q", host_count=hosts,
                                wall_time=wall, deadline_time=deadline)

    def status(self, rid):
        return self.client.call("get_reservation_status", reservation_id=rid)

    def submit(self, rid, script, args=()):
        return self.client.call("submit_job_to_reservation", reservation_id=rid,
                                job_script=str(script),
                                submit_args=args if isinstance(args, dict) else list(args)
                                )["job_id"]

    def job(self, job_id):
        return self.client.call("get_job_status", job_id=job_id)

    def cancel(self, rid):
        return self.client.call("cancel_reservation", reservation_id=rid)

    def wait_status(self, rid, status, timeout=10.0):
        return wait_for(lambda: (s := self.status(rid))["reservation_status"] == status and s,
                        timeout, interval=0.05, what=f"{rid} {status}")

    def wait_job(self, job_id, state, timeout=10.0):
        return wait_for(lambda: (j := self.job(job_id))["state"] == state and j, timeout,
                        interval=0.05, what=f"job {job_id} {state}")

    def slurm_reservations(self):
        out = subprocess.run(["scontrol", "show", "reservation", "--oneliner"],
                             env=self.cluster.env, capture_output=True, text=True,
                             timeout=30).stdout
        return [w.split("=", 1)[1] for w in out.split() if w.startswith("ReservationName=")]


@pytest.fixture(params=["local", "slurm"])
def queue(request, tmp_path, daemon_factory):
    backend = request.param
    cluster = request.getfixturevalue("slurm_cluster") if backend == "slurm" else None
    jobs = tmp_path / "atsd" / "jobs"
    jobs.mkdir(parents=True)
    for name, text in SCRIPTS.items():
        (jobs / name).write_text(text)
        (jobs / name).chmod(0o755)
    config = {"resources": [{"name": "scope-1", "type": "scope"}],
              "queues": {"q": QUEUE[backend]},
              "jobs": {"allowed_dirs": ["jobs"], "output_dir": "out", "run_as": JOB_USER}}
    d = daemon_factory(config, env=cluster.env if cluster else None)
    queue = Queue(backend, d, cluster)
    yield queue
    queue.client.close()
    d.kill()
    if cluster is not None:
        _reset(cluster)


def _reset(cluster):
    """Leave the cluster as the next test expects it: no jobs, no reservations."""
    if not cluster.controller_running:
        cluster.start_controller()

    def run(*argv):
        return subprocess.run(argv, env=cluster.env, capture_output=True, text=True,
                              timeout=30).stdout

    def clean():
        run("scancel", "--partition=debug")
        out = run("scontrol", "show", "reservation", "--oneliner")
        for word in out.split():
            if word.startswith("ReservationName="):
                run("scontrol", "delete", word)
        return (not run("squeue", "-h", "-o", "%i").strip()
                and "ReservationName=" not in run("scontrol", "show", "reservation"))
    wait_for(clean, 30, interval=0.2, what="Slurm cluster without jobs and reservations")


class Events:
    """Everything the daemon publishes, from a SUB socket connected before the scenario."""

    def __init__(self, queue):
        self.sock = zmq.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(queue.daemon.events)
        self.seen = []

        def joined():      # a slow joiner misses early events: publish until one arrives
            pre = queue.client.call("request_reservation", resource="scope-1")
            queue.client.call("release_reservation", reservation_id=pre["pre_reservation_id"])
            return self.sock.poll(100)
        wait_for(joined, what="the event subscription")

    def all(self):
        while self.sock.poll(0):
            topic, payload = self.sock.recv_multipart()
            self.seen.append(msgpack.unpackb(payload))
            assert self.seen[-1]["topic"] == topic.decode()
        return self.seen

    def of(self, topic, key, value):
        return [e for e in self.all() if e["topic"] == topic and e.get(key) == value]

    def close(self):
        self.sock.close(0)


def _chain(events, key):
    """The states events went through; each names the one before as ``previous``."""
    states = [e[key] for e in events]
    assert [e["previous"] for e in events] == [None, *states[:-1]], events
    return states


# --- the scenarios ---


def test_lifecycle_jobs_and_events(queue):
    """Granted, active at its start, jobs run (one completes, one fails, one is stopped at the
    end of its time: TIMEOUT), ended at its end; every transition is published in order and
    the status agrees."""
    events = Events(queue)
    t0 = time.time()
    r = queue.create(2, 5, t0 + 4)         # room for three sbatch calls before the start
    rid = r["reservation_id"]
    assert len(set(r["hosts"])) == 2 and r["start_time"] == pytest.approx(t0 + 4)
    assert r["end_time"] == pytest.approx(t0 + 9)
    status = queue.status(rid)
    assert status["reservation_status"] == "RESERVATION_GRANTED"
    assert status["hosts"] == r["hosts"] and status["end_time"] == r["end_time"]

    jobs = {name: queue.submit(rid, queue.jobs / name)
            for name in ("ok.sh", "fail.sh", "sleep.sh")}
    assert {queue.job(j)["state"] for j in jobs.values()} == {"PENDING"}
    queue.wait_status(rid, "RESERVATION_ACTIVE", timeout=8)

    ok = queue.wait_job(jobs["ok.sh"], "COMPLETED")
    assert ok["exit_code"] == 0
    with open(ok["output"]) as f:
        assert f.read() == f"rid={rid} job={jobs['ok.sh']} hosts={','.join(r['hosts'])}\n"
    assert queue.wait_job(jobs["fail.sh"], "FAILED")["exit_code"] == 3
    queue.wait_job(jobs["sleep.sh"], "RUNNING")

    ended = queue.wait_status(rid, "RESERVATION_ENDED")
    assert time.time() >= r["end_time"]
    assert queue.wait_job(jobs["sleep.sh"], "TIMEOUT", timeout=5)["exit_code"] == -15
    with pytest.raises(Conflict):
        queue.submit(rid, queue.jobs / "ok.sh")
    with pytest.raises(Conflict):
        queue.cancel(rid)

    mine = lambda: events.of("reservation.status", "reservation_id", rid)   # noqa: E731
    assert _chain(mine(), "reservation_status") == [
        "RESERVATION_GRANTED", "RESERVATION_ACTIVE", "RESERVATION_ENDED"]
    final = {name: queue.job(j)["state"] for name, j in jobs.items()}
    assert final == {"ok.sh": "COMPLETED", "fail.sh": "FAILED", "sleep.sh": "TIMEOUT"}
    assert {j["job_id"]: j["state"] for j in queue.status(rid)["jobs"]} == {
        j: final[name] for name, j in jobs.items()}
    wait_for(lambda: all(events.of("job.status", "job_id", j)[-1]["state"] == final[name]
                         for name, j in jobs.items()), what="the last job events")
    for name, j in jobs.items():
        states = _chain(events.of("job.status", "job_id", j), "state")
        assert states[0] == "PENDING" and states[-1] == final[name]
    seqs = [e["seq"] for e in events.all()]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert mine()[-1]["reservation_status"] == ended["reservation_status"]
    events.close()


def test_grant_and_cancel_rules(queue):
    """Cancel while GRANTED ends it (and its queued job); an ACTIVE one cannot be cancelled."""
    now = time.time()
    r = queue.create(2, 10, now + 60)
    rid = r["reservation_id"]
    assert queue.status(rid)["reservation_status"] == "RESERVATION_GRANTED"
    job = queue.submit(rid, queue.jobs / "ok.sh")
    assert queue.cancel(rid)["cancelled"] is True
    status = queue.status(rid)
    assert (status["reservation_status"], status["reason"]) == ("RESERVATION_ENDED", "cancelled")
    queue.wait_job(job, "CANCELLED")
    with pytest.raises(Conflict):
        queue.cancel(rid)

    active = queue.create(1, 10, now)["reservation_id"]
    assert queue.status(active)["reservation_status"] == "RESERVATION_ACTIVE"
    with pytest.raises(Conflict):
        queue.cancel(active)
    assert queue.status(active)["reservation_status"] == "RESERVATION_ACTIVE"
    if queue.cluster:
        assert queue.slurm_reservations() == [f"atsd-{active}"]


def test_deadline(queue):
    """The earliest window that ends by the deadline; unavailable when none does."""
    now = time.time()
    a = queue.create_by(4, 20, now + 100)
    assert a["start_time"] == pytest.approx(now, abs=1.5) and len(set(a["hosts"])) == 4
    b = queue.create_by(4, 20, now + 100)
    assert b["start_time"] == pytest.approx(a["end_time"], abs=1)
    assert b["end_time"] <= now + 100
    assert queue.status(b["reservation_id"])["reservation_status"] == "RESERVATION_GRANTED"
    with pytest.raises(ResourceUnavailable):
        queue.create_by(1, 20, now + 30)
    with pytest.raises(BadRequest):
        queue.create_by(1, 20, now + 10)


def test_over_subscription_refused_and_nothing_granted(queue):
    now = time.time()
    a = queue.create(3, 30, now + 60)
    with pytest.raises(ResourceUnavailable):
        queue.create(2, 10, now + 70)
    with pytest.raises(ResourceUnavailable):
        queue.create(5, 10, now + 200)
    b = queue.create(1, 10, now + 80)     # the refused ones held nothing
    assert not set(b["hosts"]) & set(a["hosts"])
    granted = [e for e in queue.client.call("get_events", since_seq=0)["events"]
               if e.get("kind") == "batch"]
    assert {e["reservation_id"] for e in granted} == {a["reservation_id"], b["reservation_id"]}
    if queue.cluster:
        assert sorted(queue.slurm_reservations()) == sorted(
            f"atsd-{x['reservation_id']}" for x in (a, b))


def test_bad_submissions(queue, tmp_path):
    rid = queue.create(1, 10, time.time() + 60)["reservation_id"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "ok.sh").write_text(SCRIPTS["ok.sh"])
    (elsewhere / "ok.sh").chmod(0o755)
    for script, why in [(queue.jobs / "nope.sh", "does not exist"),
                        (elsewhere / "ok.sh", "allowed directory"),
                        (queue.jobs / ".." / ".." / "elsewhere" / "ok.sh", "allowed directory")]:
        with pytest.raises(BadRequest, match=why):
            queue.submit(rid, script)
    with pytest.raises(BadRequest, match="submit_args"):
        queue.submit(rid, queue.jobs / "ok.sh", [["reservation", "other"]])
    assert queue.status(rid)["jobs"] == []


@pytest.mark.parametrize("queue", ["slurm"], indirect=True)
def test_sbatch_options_outside_the_allow_list_are_refused(queue):
    """What would run code or touch files of the submitter's choice as atsd's user, and
    anything unknown, is refused at submit time; the allowed options work, in both forms."""
    rid = queue.create(1, 30, time.time())["reservation_id"]
    ok = queue.jobs / "ok.sh"
    for key, value in [("export", "ALL,LD_PRELOAD=/tmp/evil.so"), ("input", "/etc/shadow"),
                       ("uid", "0"), ("gid", "0"), ("chdir", "/"), ("wrap", "id"),
                       ("reservation", "other"), ("partition", "other"), ("outp", "x"),
                       ("no-such-option", "1")]:
        for args in ([[key, value]], {key: value}):
            with pytest.raises(BadRequest, match=f"sbatch option '{key}' is not allowed"):
                queue.submit(rid, ok, args)
    for key, value in [("output", "/tmp/x.out"), ("error", "../x.err"),
                       ("output", "sub/../../x.out")]:
        with pytest.raises(BadRequest, match="must be inside jobs.output_dir"):
            queue.submit(rid, ok, [[key, value]])
    assert queue.status(rid)["jobs"] == []

    out = queue.daemon.dir / "out"
    job = queue.submit(rid, ok, {"job-name": "mine", "time": "1", "ntasks": "1",
                                 "cpus-per-task": "1", "output": "mine.out",
                                 "error": "mine.err"})
    done = queue.wait_job(job, "COMPLETED", timeout=30)
    assert done["output"] == str(out / "mine.out")
    assert (out / "mine.out").read_text().startswith(f"rid={rid} job={job}")

    job = queue.submit(rid, queue.jobs / "env.sh", [["time", "1"]])
    env = dict(line.split("=", 1) for line in
               open(queue.wait_job(job, "COMPLETED", timeout=30)["output"]).read().splitlines())
    assert (env["PATH"], env["ATS_JOB_ID"], env["ATS_RESERVATION_ID"]) == (
        "/usr/local/bin:/usr/bin:/bin", job, rid)
    assert "PYTHONPATH" not in env       # the daemon's own environment stays out


def test_restart_keeps_active_reservation_and_jobs(queue):
    """SIGKILL in the middle of an ACTIVE reservation: its record, its jobs' records and its
    end survive. A job running meanwhile is lost on the local backend (its runner died) and
    followed to its end on Slurm (Slurm ran it)."""
    r = queue.create(1, 6, time.time() + 1)
    rid = r["reservation_id"]
    ok = queue.submit(rid, queue.jobs / "ok.sh")
    slow = queue.submit(rid, queue.jobs / "slow.sh")
    queue.wait_job(ok, "COMPLETED")
    queue.wait_job(slow, "RUNNING")
    before = {k: v for k, v in queue.job(ok).items() if k != "request_id"}

    queue.client.close()
    queue.daemon.restart(kill=True)
    queue.client = queue.daemon.client("alice", timeout=15.0, retries=1)
    status = queue.status(rid)
    assert status["reservation_status"] == "RESERVATION_ACTIVE"
    assert (status["start_time"], status["end_time"], status["hosts"]) == (
        r["start_time"], r["end_time"], r["hosts"])
    assert {k: v for k, v in queue.job(ok).items() if k != "request_id"} == before
    lost = queue.wait_job(slow, {"local": "FAILED", "slurm": "COMPLETED"}[queue.backend])
    if queue.backend == "local":
        assert lost["reason"] == "lost in a daemon restart"
    queue.wait_status(rid, "RESERVATION_ENDED")
    assert {j["job_id"] for j in queue.status(rid)["jobs"]} == {ok, slow}


@pytest.mark.parametrize("queue", ["slurm"], indirect=True)
def test_slurmctld_down_is_backend_error_and_recovers(queue):
    rid = queue.create(1, 30, time.time())["reservation_id"]
    job = queue.submit(rid, queue.jobs / "slow.sh")
    queue.wait_job(job, "RUNNING")
    queue.cluster.stop_controller()
    with pytest.raises(BackendError, match="slurmctld unreachable"):
        queue.create(1, 10, time.time() + 60)
    queue.cluster.start_controller()
    queue.wait_job(job, "COMPLETED", timeout=15)      # its poller carried on
    r = queue.create(1, 10, time.time() + 60)
    assert queue.status(r["reservation_id"])["reservation_status"] == "RESERVATION_GRANTED"


@pytest.mark.parametrize("queue", ["slurm"], indirect=True)
def test_slurm_reservation_deleted_behind_atsds_back(queue):
    """atsd keeps its record; Slurm refuses jobs for it (backend_error with Slurm's message,
    the job recorded FAILED); cancelling it still works."""
    rid = queue.create(1, 30, time.time() + 60)["reservation_id"]
    subprocess.run(["scontrol", "delete", f"ReservationName=atsd-{rid}"], env=queue.cluster.env,
                   check=True, capture_output=True, timeout=30)
    with pytest.raises(BackendError, match="Requested reservation is invalid"):
        queue.submit(rid, queue.jobs / "ok.sh")
    status = queue.status(rid)
    assert status["reservation_status"] == "RESERVATION_GRANTED"
    assert [j["state"] for j in status["jobs"]] == ["FAILED"]
    assert queue.cancel(rid)["cancelled"] is True


@pytest.mark.parametrize("queue", ["local"], indirect=True)
def test_a_job_whose_reservation_started_while_down_runs_once(queue):
    """On restart the start happens (recovery) and the runner catches up: one run only."""
    r = queue.create(1, 30, time.time() + 1.0)
    job = queue.submit(r["reservation_id"], queue.jobs / "ok.sh")
    queue.client.close()
    queue.daemon.kill()
    wait_for(lambda: time.time() > r["start_time"], what="the start to pass while down")
    queue.daemon.start()
    queue.client = queue.daemon.client("alice", timeout=15.0, retries=1)
    queue.wait_job(job, "COMPLETED")
    assert (queue.daemon.dir / "out" / f"{job}.out").read_text().count("job=") == 1
