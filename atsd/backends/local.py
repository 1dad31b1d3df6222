"""The embedded backend: atsd runs a batch job's script itself, as a subprocess.

A job never runs with more power than its submitter: the script must lie in one of the
config's ``jobs.allowed_dirs`` (scripts.py); it runs as ``jobs.run_as`` (config.py), in its
own process group, from a clean environment: a fixed ``PATH``, the job user's ``HOME``, the
variables the submitter set, and ``ATS_RESERVATION_ID``, ``ATS_JOB_ID`` and ``ATS_HOSTS``;
nothing of the daemon's own environment. Its output goes to ``jobs.output_dir/<job
id>.out``. When its reservation ends it is stopped (SIGTERM, then SIGKILL after
``STOP_GRACE_S``) and recorded TIMEOUT at the end of its time, CANCELLED when it ended early.

``submit_args`` for a local job: ``["arg", VALUE]`` appends a command-line argument,
``["env", "NAME=VALUE"]`` sets an environment variable whose name matches one of
``jobs.env_allow`` (glob patterns). ``ATS_*`` are atsd's, never the submitter's: a job must
not be told it holds hosts it never booked. Anything else (``BASH_ENV``, ``LD_PRELOAD``, a
``PATH`` of the submitter's) is refused, as it would run code of the submitter's choice.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import pwd
import re
import signal
import socket
from pathlib import Path
from typing import Callable

from ..engine.batch import CANCELLED, COMPLETED, FAILED, RUNNING, Job
from ..engine.errors import BadRequest
from ..engine.lab import Reservation
from .. import log as logmod
from .scripts import allowed_script

STOP_GRACE_S = 5.0
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
PATH = "/usr/local/bin:/usr/bin:/bin"

log = logmod.get("atsd.backends.local")
HOST = socket.gethostname()     # where a job's pid means something


class LocalBackend:
    external = False        # atsd picks the hosts and runs the jobs itself

    def __init__(self, allowed_dirs: list[Path], output_dir: Path, base: Path,
                 env_allow: list[str], user: str, report: Callable[..., None]) -> None:
        self.allowed_dirs = allowed_dirs
        self.output_dir = output_dir
        self.base = base
        self.env_allow = env_allow
        self.user = pwd.getpwnam(user)
        self.report = report        # report(job_id, state, exit_code=None, **fields)
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._stopping: dict[str, str] = {}   # job id -> the state it ends in
        self._started: set[str] = set()
        self._tasks: set[asyncio.Task] = set()

    def check_submission(self, script: str, submit_args: list) -> str:
        """The script's resolved path, or bad_request saying why it may not run."""
        path = allowed_script(script, self.base, self.allowed_dirs, os.X_OK)
        for i, (key, value) in enumerate(submit_args):
            if key == "env":
                self._check_env(value.partition("=")[0], f"submit_args[{i}]")
            elif key != "arg":
                raise BadRequest(f"submit_args[{i}]: a local job takes arg or env, "
                                 f"not {key[:64]!r}")
        return path

    def _check_env(self, name: str, where: str) -> None:
        if not ENV_NAME.match(name):
            raise BadRequest(f"{where}: env must be NAME=VALUE with a variable name "
                             f"(letters, digits, _; at most 128), not {name[:64]!r}")
        if name.startswith("ATS_"):
            raise BadRequest(f"{where}: {name} is set by atsd, not by the submitter")
        if not any(fnmatch.fnmatchcase(name, p) for p in self.env_allow):
            raise BadRequest(f"{where}: environment variable {name} is not allowed "
                             f"(jobs.env_allow: {', '.join(self.env_allow) or 'none'})")

    def _environment(self, job: Job, r: Reservation) -> dict[str, str]:
        env = {"PATH": PATH, "HOME": self.user.pw_dir}
        env.update(v.partition("=")[::2] for k, v in job.submit_args if k == "env")
        env.update(ATS_RESERVATION_ID=r.id, ATS_JOB_ID=job.id,
                   ATS_HOSTS=",".join(r.extra["hosts"]))
        return env

    def _identity(self) -> dict:
        """subprocess arguments that switch to the job user, when that is not us."""
        if self.user.pw_uid == os.geteuid():
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid,
                "extra_groups": os.getgrouplist(self.user.pw_name, self.user.pw_gid)}

    def start(self, job: Job, reservation: Reservation) -> None:
        """Run the job, once: a start and a recovery may both ask for the same job."""
        if job.id in self._started:
            return
        self._started.add(job.id)
        task = asyncio.get_running_loop().create_task(self._run(job, reservation))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, job: Job, r: Reservation) -> None:
        out_path = self.output_dir / f"{job.id}.out"
        args = [v for k, v in job.submit_args if k == "arg"]
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            out = open(out_path, "ab")
        except OSError as exc:
            self._failed_to_start(job, f"cannot write its output {out_path}: "
                                       f"{exc.strerror or exc}")
            return
        try:
            with out:
                proc = await asyncio.create_subprocess_exec(
                    job.script, *args, env=self._environment(job, r), stdout=out,
                    stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
                    start_new_session=True, cwd=self.output_dir, **self._identity())
        except OSError as exc:
            self._failed_to_start(job, f"cannot run {job.script} as {self.user.pw_name}: "
                                       f"{exc.strerror or exc}")
            return
        self._procs[job.id] = proc
        self.report(job.id, RUNNING, output=str(out_path), extra={"pid": proc.pid, "host": HOST})
        code = await proc.wait()
        del self._procs[job.id]
        stopped_as = self._stopping.pop(job.id, None)
        self._started.discard(job.id)      # the record now says it ended: never again
        self.report(job.id, stopped_as or (COMPLETED if code == 0 else FAILED), exit_code=code)

    def _failed_to_start(self, job: Job, reason: str) -> None:
        log.warning("job_start_failed", job_id=job.id, error=reason)
        self._started.discard(job.id)
        self.report(job.id, FAILED, extra={"error": reason})

    def stop(self, job_id: str, state: str = CANCELLED) -> None:
        """Stop a running job; it is recorded ``state`` (CANCELLED, or TIMEOUT at the end
        of its reservation's time)."""
        proc = self._procs.get(job_id)
        if proc is None:
            return
        self._stopping[job_id] = state
        _signal_group(proc.pid, signal.SIGTERM)
        asyncio.get_running_loop().call_later(STOP_GRACE_S, _signal_group, proc.pid,
                                              signal.SIGKILL)

    def forget_lost(self, job: Job) -> None:
        """A job that was RUNNING when the daemon died: its process is not ours any more.
        Make sure it is gone, and record it as failed. Only on the host that ran it: with
        a PostgreSQL state the daemon that ran it may have been on another (docs/ha.md)."""
        pid = job.extra.get("pid")
        if pid and job.extra.get("host", HOST) == HOST:
            _signal_group(pid, signal.SIGKILL)
        self.report(job.id, FAILED, extra={**job.extra, "error": "lost in a daemon restart"})

    def stop_all(self) -> None:
        for job_id in list(self._procs):
            self.stop(job_id)

    async def close(self) -> None:
        self.stop_all()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=STOP_GRACE_S + 1)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
