"""A batch job never runs with more power than its submitter (docs/securing.md): attacks on
the local backend over the wire, and the daemon's refusals to start with jobs as root."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from atsclient.errors import BadRequest
from daemon import JOB_USER, Daemon, wait_for

ENV_SCRIPT = "#!/bin/sh\nexec env\n"
ID_SCRIPT = "#!/bin/sh\necho \"uid=$(id -u) gid=$(id -g) home=$HOME\"\n"


def _jobs_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, text in {"env.sh": ENV_SCRIPT, "id.sh": ID_SCRIPT}.items():
        (path / name).write_text(text)
        (path / name).chmod(0o755)
    return path


def _config(jobs: Path, **job_keys) -> dict:
    return {"resources": [], "queues": {"q": {"backend": "local", "hosts": ["h1", "h2"]}},
            "jobs": {"allowed_dirs": [str(jobs)], "output_dir": "out", "run_as": JOB_USER,
                     **job_keys}}


class Lab:
    def __init__(self, daemon: Daemon, jobs: Path) -> None:
        self.daemon, self.jobs = daemon, jobs
        self.client = daemon.client("alice")
        self.rid = self.client.call("create_reservation", queue_id="q", host_count=2,
                                    wall_time=60, start_time=time.time())["reservation_id"]

    def submit(self, script: str, submit_args) -> str:
        return self.client.call("submit_job_to_reservation", reservation_id=self.rid,
                                job_script=str(self.jobs / script),
                                submit_args=submit_args)["job_id"]

    def finished(self, job_id: str) -> dict:
        return wait_for(lambda: (j := self.client.call("get_job_status", job_id=job_id))
                        ["state"] not in ("PENDING", "RUNNING") and j, what=f"job {job_id}")

    def output(self, job_id: str) -> str:
        job = self.finished(job_id)
        assert job["state"] == "COMPLETED", job
        return Path(job["output"]).read_text()


@pytest.fixture
def lab(daemon_factory, tmp_path):
    jobs = _jobs_dir(tmp_path / "jobs")
    d = daemon_factory(_config(jobs), env={"ATSD_SECRET": "daemon-only",
                                           "LD_LIBRARY_PATH": "/daemon/lib"})
    lab = Lab(d, jobs)
    yield lab
    lab.client.close()


@pytest.mark.parametrize("env, why", [
    ("BASH_ENV=/tmp/evil.sh", "BASH_ENV is not allowed"),
    ("LD_PRELOAD=/tmp/evil.so", "LD_PRELOAD is not allowed"),
    ("PATH=/tmp/evil", "PATH is not allowed"),
    ("ATS_HOSTS=h1,h2,h3,h4", "ATS_HOSTS is set by atsd"),
    ("ATS_RESERVATION_ID=someone-elses", "ATS_RESERVATION_ID is set by atsd"),
    ("ATS_JOB_ID=x", "ATS_JOB_ID is set by atsd"),
    ("job_lower=1", "job_lower is not allowed"),
    ("NOT A NAME=1", "env must be NAME=VALUE"),
])
@pytest.mark.parametrize("form", ["pairs", "map"])
def test_environment_outside_the_allow_list_is_refused(lab, env, why, form):
    args = [["env", "JOB_OK=1"], ["env", env]] if form == "pairs" else {"env": env}
    with pytest.raises(BadRequest, match=why):
        lab.submit("env.sh", args)
    assert lab.client.call("get_reservation_status", reservation_id=lab.rid)["jobs"] == []


def test_job_environment_is_clean(lab):
    """Nothing of the daemon's environment reaches the job; what it gets is a fixed PATH,
    the job user's HOME, the allowed variables it asked for and atsd's ATS_*."""
    job = lab.submit("env.sh", [["env", "JOB_GREETING=hello world"], ["env", "USER_NAME=al"]])
    env = dict(line.split("=", 1) for line in lab.output(job).splitlines())
    assert env.pop("JOB_GREETING") == "hello world" and env.pop("USER_NAME") == "al"
    assert env.pop("PATH") == "/usr/local/bin:/usr/bin:/bin"
    assert env.pop("HOME") == pwd.getpwnam(JOB_USER).pw_dir
    assert env.pop("ATS_RESERVATION_ID") == lab.rid and env.pop("ATS_JOB_ID") == job
    assert env.pop("ATS_HOSTS") == "h1,h2"
    assert set(env) <= {"PWD", "OLDPWD", "SHLVL", "_"}, env     # what sh sets itself


def test_map_form_submit_args(lab):
    """CQR's {key: value} form, under the same allow-list."""
    job = lab.submit("env.sh", {"env": "JOB_FORM=map", "arg": "ignored-by-env"})
    assert "JOB_FORM=map" in lab.output(job).splitlines()
    job = lab.client.submit_job_to_reservation(lab.rid, str(lab.jobs / "env.sh"),
                                               {"env": "JOB_FORM=library"})
    assert "JOB_FORM=library" in lab.output(job).splitlines()
    for bad, why in [({"env": 1.5}, "NAME=VALUE"), ({"nice": "5"}, "takes arg or env"),
                     ({"env": ["JOB_A=1"]}, "strings or numbers"),
                     ({f"k{i}": "v" for i in range(65)}, "at most 64"),
                     ({"arg": "a\0b"}, "NUL"), ([["env", "JOB_A=\0"]], "NUL")]:
        with pytest.raises(BadRequest, match=why):
            lab.submit("env.sh", bad)


def test_env_allow_is_configurable(daemon_factory, tmp_path):
    jobs = _jobs_dir(tmp_path / "jobs")
    d = daemon_factory(_config(jobs, env_allow=["OMP_NUM_THREADS", "CI_*"]))
    lab = Lab(d, jobs)
    job = lab.submit("env.sh", [["env", "OMP_NUM_THREADS=4"], ["env", "CI_RUN=7"]])
    assert {"OMP_NUM_THREADS=4", "CI_RUN=7"} <= set(lab.output(job).splitlines())
    with pytest.raises(BadRequest, match=r"JOB_X is not allowed \(jobs.env_allow: "
                                         r"OMP_NUM_THREADS, CI_\*\)"):
        lab.submit("env.sh", [["env", "JOB_X=1"]])
    with pytest.raises(BadRequest, match="ATS_HOSTS is set by atsd"):   # even if a glob fits
        lab.submit("env.sh", [["env", "CI_X=1"], ["env", "ATS_HOSTS=x"]])
    lab.client.close()


def test_a_job_whose_output_cannot_be_written_fails_with_the_reason(lab):
    """Not PENDING forever: FAILED, the reason in its status and in the log."""
    (lab.daemon.dir / "out").write_text("a file where the output directory should be")
    job = lab.submit("env.sh", [])
    status = lab.finished(job)
    assert status["state"] == "FAILED" and status["exit_code"] is None
    assert status["reason"].startswith(f"cannot write its output {lab.daemon.dir / 'out'}")
    wait_for(lambda: "job_start_failed" in lab.daemon.log() and job in lab.daemon.log(),
             what="the failure in the log")
    assert "Traceback" not in lab.daemon.log()


@pytest.mark.skipif(os.geteuid() != 0, reason="only a daemon running as root switches users")
def test_jobs_run_as_the_configured_user(daemon_factory, tmp_path):
    nobody = pwd.getpwnam("nobody")
    # the job user must be able to reach its script: not under pytest's root-only tmp
    jobs = Path(tempfile.mkdtemp(prefix="atsd-jobs-"))
    try:
        jobs.chmod(0o755)
        _jobs_dir(jobs)
        d = daemon_factory(_config(jobs, run_as="nobody"))
        lab = Lab(d, jobs)
        job = lab.submit("id.sh", [])
        assert lab.output(job) == (f"uid={nobody.pw_uid} gid={nobody.pw_gid} "
                                   f"home={nobody.pw_dir}\n")
        lab.client.close()
    finally:
        shutil.rmtree(jobs)


@pytest.mark.skipif(os.geteuid() != 0, reason="the refusal is for a daemon running as root")
def test_root_daemon_refuses_to_run_jobs_as_root_unless_told(tmp_path):
    config = _config(_jobs_dir(tmp_path / "jobs"))
    del config["jobs"]["run_as"]
    with pytest.raises(AssertionError, match="jobs.run_as: atsd runs as root, so its jobs "
                                             "would too"):
        Daemon(tmp_path / "implicit", config).start()
    Daemon(tmp_path / "without-queues", {"resources": []}).start().kill()
    config["jobs"]["run_as"] = "root"
    Daemon(tmp_path / "explicit", config).start().kill()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may switch to any user")
def test_daemon_not_root_refuses_another_job_user(tmp_path):
    with pytest.raises(AssertionError, match="not root, so it cannot run jobs as nobody"):
        Daemon(tmp_path / "d", _config(_jobs_dir(tmp_path / "jobs"), run_as="nobody")).start()


def test_unknown_job_user_is_a_config_error(tmp_path):
    with pytest.raises(AssertionError, match="jobs.run_as: no Unix user named 'no-such-user'"):
        Daemon(tmp_path / "d", _config(tmp_path, run_as="no-such-user")).start()
    with pytest.raises(AssertionError, match=r"jobs.env_allow\[0\]: 'A=B' is not"):
        Daemon(tmp_path / "e", _config(tmp_path, env_allow=["A=B"])).start()


@pytest.mark.skipif(os.geteuid() != 0, reason="the shipped run_as is for a daemon run as root")
def test_shipped_example_starts_as_root_and_runs_its_job():
    """README's quick start, ``atsd --config conf/atsd.yaml``, as CI runs it: as root."""
    import yaml
    lab = Path(tempfile.mkdtemp(prefix="atsd-example-"))  # nobody must reach jobs/hello.sh
    try:
        lab.chmod(0o755)
        shutil.copytree(Path(__file__).resolve().parents[1] / "conf", lab, dirs_exist_ok=True)
        config = yaml.safe_load((lab / "atsd.yaml").read_text())
        config["web"]["listen"] = "127.0.0.1:0"         # 8080 may be someone else's here
        d = Daemon(lab, config).start()
        try:
            made = d.cli("batch", "create", "--queue", "debug", "--hosts", "1",
                         "--walltime", "10m", "--start", "now")
            assert made.returncode == 0, made.stderr
            rid = made.stdout.split(":")[0]
            job = d.cli("batch", "submit", rid, str(lab / "jobs" / "hello.sh"))
            assert job.returncode == 0, job.stderr
            out = lab / "jobs" / "out" / f"{job.stdout.strip()}.out"
            wait_for(lambda: out.exists() and out.read_text(), what="the example job's output")
            assert f"reservation {rid} job {job.stdout.strip()} on node" in out.read_text()
        finally:
            d.kill()
    finally:
        shutil.rmtree(lab)
