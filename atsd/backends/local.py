"""The embedded backend: atsd runs a batch job's script itself, as a subprocess.

The script must lie in one of the config's ``jobs.allowed_dirs`` (scripts.py). It runs in
its own process group with ``ATS_RESERVATION_ID``, ``ATS_JOB_ID`` and ``ATS_HOSTS`` in its
environment, its output in ``jobs.output_dir/<job id>.out``. When its reservation ends it is stopped (SIGTERM, then
SIGKILL after ``STOP_GRACE_S``) and recorded CANCELLED.

``submit_args`` for a local job: ``["arg", VALUE]`` appends a command-line argument,
``["env", "NAME=VALUE"]`` sets an environment variable.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path
from typing import Callable

from ..engine.batch import CANCELLED, COMPLETED, FAILED, RUNNING, Job
from ..engine.errors import BadRequest
from ..engine.lab import Reservation
from .. import log as logmod
from .scripts import allowed_script

STOP_GRACE_S = 5.0
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

log = logmod.get("atsd.backends.local")


class LocalBackend:
    external = False        # atsd picks the hosts and runs the jobs itself

    def __init__(self, allowed_dirs: list[Path], output_dir: Path, base: Path,
                 report: Callable[..., None]) -> None:
        self.allowed_dirs = allowed_dirs
        self.output_dir = output_dir
        self.base = base
        self.report = report        # report(job_id, state, exit_code=None, **fields)
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._stopping: set[str] = set()
        self._started: set[str] = set()
        self._tasks: set[asyncio.Task] = set()

    def check_submission(self, script: str, submit_args: list) -> str:
        """The script's resolved path, or bad_request saying why it may not run."""
        path = allowed_script(script, self.base, self.allowed_dirs, os.X_OK)
        for i, pair in enumerate(submit_args):
            key, value = pair
            if key == "env" and not ENV_NAME.match(str(value).partition("=")[0]):
                raise BadRequest(f"submit_args[{i}]: env must be NAME=VALUE")
            if key not in ("arg", "env"):
                raise BadRequest(f"submit_args[{i}]: a local job takes arg or env, not {key!r}")
        return path

    def start(self, job: Job, reservation: Reservation) -> None:
        """Run the job, once: a start and a recovery may both ask for the same job."""
        if job.id in self._started:
            return
        self._started.add(job.id)
        task = asyncio.get_running_loop().create_task(self._run(job, reservation))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, job: Job, r: Reservation) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        out_path = self.output_dir / f"{job.id}.out"
        env = {**os.environ, "ATS_RESERVATION_ID": r.id, "ATS_JOB_ID": job.id,
               "ATS_HOSTS": ",".join(r.extra["hosts"])}
        env.update(v.partition("=")[::2] for k, v in job.submit_args if k == "env")
        args = [v for k, v in job.submit_args if k == "arg"]
        try:
            with open(out_path, "ab") as out:
                proc = await asyncio.create_subprocess_exec(
                    job.script, *args, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT,
                    stdin=asyncio.subprocess.DEVNULL, start_new_session=True, cwd=self.output_dir)
        except OSError as exc:
            log.warning("job_start_failed", job_id=job.id, error=str(exc))
            self.report(job.id, FAILED, extra={"error": str(exc)})
            return
        self._procs[job.id] = proc
        self.report(job.id, RUNNING, output=str(out_path), extra={"pid": proc.pid})
        code = await proc.wait()
        del self._procs[job.id]
        stopped = job.id in self._stopping
        self._stopping.discard(job.id)
        self._started.discard(job.id)      # the record now says it ended: never again
        self.report(job.id, CANCELLED if stopped else COMPLETED if code == 0 else FAILED,
                    exit_code=code)

    def stop(self, job_id: str) -> None:
        proc = self._procs.get(job_id)
        if proc is None:
            return
        self._stopping.add(job_id)
        _signal_group(proc.pid, signal.SIGTERM)
        asyncio.get_running_loop().call_later(STOP_GRACE_S, _signal_group, proc.pid,
                                              signal.SIGKILL)

    def forget_lost(self, job: Job) -> None:
        """A job that was RUNNING when the daemon died: its process is not ours any more.
        Make sure it is gone, and record it as failed."""
        pid = job.extra.get("pid")
        if pid:
            _signal_group(pid, signal.SIGKILL)
        self.report(job.id, FAILED, extra={**job.extra, "error": "lost in a daemon restart"})

    async def close(self) -> None:
        for job_id in list(self._procs):
            self.stop(job_id)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=STOP_GRACE_S + 1)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
