"""The Slurm backend: a queue is a Slurm partition; Slurm grants the reservations and runs
the jobs, atsd keeps the records, the states and the events (atsd/engine/batch.py).

A batch reservation is a Slurm reservation named ``atsd-<reservation id>`` (``scontrol
create reservation``; a Slurm refusal for lack of nodes is ``unavailable``, any other Slurm
failure ``backend_error`` with Slurm's message). Slurm has no deadline reservation, so
``create_by_deadline`` probes the candidate starts (slurm_cli.earliest_start).

Identity: atsd's users are not Unix users. Every Slurm reservation is made for, and every
job is submitted by and runs as, the daemon's own OS user; who may use a reservation is
decided by atsd (its owner, admins), not by Slurm.

Jobs: ``sbatch --parsable --reservation=atsd-<id>``, each ``submit_args`` pair ``[key,
value]`` becoming ``--key=value``. Only the options in ``SBATCH_OPTIONS`` pass: a job never
gets more than its submitter could ask for, so what would run code or read files of the
submitter's choice as atsd's user (``export``, ``input``, ``uid``, ``gid``, ``chdir``,
``wrap``, ...) or is unknown is refused, and ``output``/``error`` must name a file inside
``jobs.output_dir``. Nothing of the daemon's environment reaches the job: sbatch exports
only a fixed ``PATH``, ``HOME``, ``ATS_RESERVATION_ID``, ``ATS_JOB_ID`` and ``ATS_HOSTS``
(``--export`` of those names), on top of what Slurm sets itself (its SLURM_* and, for an
export by name, the job user's login environment). Its working directory is
``jobs.output_dir``, its output ``<job id>.out`` there unless it asked for another (on a
real cluster that directory must be shared with the compute nodes). Scripts come only
from ``jobs.allowed_dirs``, as on the local backend. Without a ``time`` option a job's time
limit is what is left of the reservation (whole minutes, at least one): Slurm starts a job
only when its time limit does not run into a later reservation on its nodes, so the
partition's default (often unlimited) would keep it pending whenever reservations follow
each other. (Time limits are whole minutes: in a reservation shorter than a minute that
another follows at once on the same nodes, no job can start.)

Following a job: one task per job polls ``scontrol show job`` every ``POLL_S`` and reports
each change; while slurmctld is unreachable it backs off (up to ``MAX_BACKOFF_S``) and
carries on when it is back. When the reservation's time is up, atsd cancels (scancel) the
jobs still in it, so they end as on the local backend, running ones TIMEOUT and pending ones
CANCELLED: Slurm itself would stop running ones only at its next periodic time-limit check
(up to half a minute late) and hold pending ones (RESV_DEL_HOLD, which atsd also cancels
whenever it sees it). A job Slurm forgot (``MinJobAge`` passed while atsd was down) before
atsd saw it end is recorded FAILED with that reason: without slurmdbd there is no ``sacct``
to ask how it ended.

A reservation deleted in Slurm behind atsd's back (Slurm refuses while jobs ask for it) keeps
its record and times in atsd; later submissions fail with Slurm's message.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import time
from pathlib import Path
from typing import Callable

from ..engine.batch import CANCELLED, COMPLETED, FAILED, FINAL, PENDING, RUNNING, TIMEOUT, Job
from ..engine.errors import BackendError, BadRequest, Unavailable
from ..engine.lab import Reservation, new_id
from .local import PATH
from .scripts import allowed_script
from .. import log as logmod
from . import slurm_cli as sc

POLL_S = 0.5
MAX_BACKOFF_S = 5.0
SBATCH_OPTIONS = {"job-name", "time", "ntasks", "cpus-per-task", "mem", "gres", "output",
                  "error"}
PATH_OPTIONS = {"output", "error"}

# Slurm job states (22.05) -> atsd's; RESV_DEL_HOLD (its reservation is gone) is not here:
# such a job is cancelled.
STATES = {
    "PENDING": PENDING, "CONFIGURING": PENDING, "REQUEUED": PENDING,
    "REQUEUE_HOLD": PENDING, "REQUEUE_FED": PENDING,
    "RUNNING": RUNNING, "COMPLETING": RUNNING, "SUSPENDED": RUNNING, "STOPPED": RUNNING,
    "SIGNALING": RUNNING, "STAGE_OUT": RUNNING, "RESIZING": RUNNING,
    "COMPLETED": COMPLETED,
    "FAILED": FAILED, "TIMEOUT": TIMEOUT, "NODE_FAIL": FAILED, "OUT_OF_MEMORY": FAILED,
    "BOOT_FAIL": FAILED, "DEADLINE": FAILED, "PREEMPTED": FAILED, "SPECIAL_EXIT": FAILED,
    "CANCELLED": CANCELLED, "REVOKED": CANCELLED,
}

log = logmod.get("atsd.backends.slurm")


def reservation_name(rid: str) -> str:
    """Slurm's name for atsd reservation ``rid`` (ids are [A-Za-z0-9_-], which Slurm takes)."""
    return f"atsd-{rid}"


class SlurmBackend:
    external = True         # Slurm grants the reservations and runs the jobs

    def __init__(self, partition: str, allowed_dirs: list[Path], output_dir: Path, base: Path,
                 report: Callable[..., None]) -> None:
        self.partition = partition
        self.allowed_dirs = allowed_dirs
        self.output_dir = output_dir
        self.base = base
        self.report = report        # report(job_id, state, exit_code=None, **fields)
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        self._ends: dict[str, float] = {}      # reservation name -> end, for its jobs' pollers
        self._watched: dict[str, tuple[asyncio.Task, Job]] = {}

    # --- reservations ---

    async def create(self, user: str, host_count: int, start: float,
                     end: float) -> tuple[str, list[str], str]:
        """The reservation's id, its nodes and its Slurm name. ``user`` (its owner in atsd)
        is not Slurm's business: Slurm sees the daemon's user (see above)."""
        rid = new_id()
        name = reservation_name(rid)
        got = await _slurm(sc.create_reservation(name, self.partition, host_count, start, end,
                                                 self.user))
        return rid, got["nodes"], name

    async def create_by_deadline(self, user: str, host_count: int, wall_time: float,
                                 not_before: float,
                                 deadline: float) -> tuple[str, float, list[str], str]:
        rid = new_id()
        name = reservation_name(rid)
        got = await _slurm(sc.earliest_start(self.partition, host_count, wall_time, not_before,
                                             deadline, name=name, user=self.user))
        if got is None:
            raise Unavailable(f"partition {self.partition}: no {host_count} nodes free for "
                              f"{wall_time:g}s ending by {deadline}")
        return rid, float(got["start"]), got["nodes"], name

    async def cancel(self, backend_ref: str) -> None:
        """Slurm refuses to delete a reservation that jobs still ask for: those are
        cancelled first (their pollers then report them CANCELLED)."""
        for _, job in list(self._watched.values()):
            if reservation_name(job.reservation_id) == backend_ref:
                await _slurm(sc.cancel_job(job.backend_ref))
        await _slurm(sc.delete_reservation(backend_ref))

    # --- jobs ---

    def check_submission(self, script: str, submit_args: list) -> str:
        """The script's resolved path, or bad_request saying why it may not be submitted."""
        path = allowed_script(script, self.base, self.allowed_dirs, os.R_OK)
        for i, (key, value) in enumerate(submit_args):
            if key not in SBATCH_OPTIONS:
                raise BadRequest(f"submit_args[{i}]: sbatch option {key[:64]!r} is not "
                                 f"allowed (allowed: {', '.join(sorted(SBATCH_OPTIONS))})")
            if key in PATH_OPTIONS:
                self._inside_output_dir(value, f"submit_args[{i}]")
        return path

    def _inside_output_dir(self, value: str, where: str) -> Path:
        try:
            path = (self.output_dir / value).resolve()
        except (ValueError, OSError) as exc:        # a NUL byte, a loop of links
            raise BadRequest(f"{where}: not a usable path ({exc})") from None
        if not path.is_relative_to(self.output_dir.resolve()):
            raise BadRequest(f"{where}: output and error files must be inside "
                             f"jobs.output_dir ({self.output_dir})")
        return path

    async def submit(self, job: Job, r: Reservation) -> str:
        """sbatch the job into the reservation; returns Slurm's job id."""
        name = reservation_name(r.id)
        self._ends[name] = r.end
        args = [[k, v] for k, v in job.submit_args if k != "output"]
        output = self._output(job)
        if not any(key == "time" for key, _ in args):
            minutes = int((r.end - max(r.start, time.time())) // 60)
            args.append(["time", str(max(1, minutes))])
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendError(f"cannot write job output in {self.output_dir}: "
                               f"{exc.strerror or exc}") from None
        env = {"PATH": PATH, "HOME": pwd.getpwnam(self.user).pw_dir,
               "ATS_RESERVATION_ID": r.id, "ATS_JOB_ID": job.id,
               "ATS_HOSTS": ",".join(r.extra["hosts"])}
        args = [[k, self._inside_output_dir(v, k) if k in PATH_OPTIONS else v]
                for k, v in args]
        return await _slurm(sc.submit(name, job.script, args, env, workdir=self.output_dir,
                                      output=output, export_only=True))

    def watch(self, job: Job) -> None:
        """Follow a submitted job in Slurm until it ends (once per job)."""
        if job.id in self._watched or job.backend_ref is None:
            return
        task = asyncio.get_running_loop().create_task(self._follow(job))
        self._watched[job.id] = (task, job)
        task.add_done_callback(lambda t: self._unwatch(job, t))

    def _unwatch(self, job: Job, task: asyncio.Task) -> None:
        del self._watched[job.id]
        name = reservation_name(job.reservation_id)
        if not any(j.reservation_id == job.reservation_id for _, j in self._watched.values()):
            self._ends.pop(name, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("slurm_watch_failed", job_id=job.id, slurm_job=job.backend_ref,
                      error=repr(task.exception()))

    async def _follow(self, job: Job) -> None:
        name = reservation_name(job.reservation_id)
        output = str(self._output(job))
        last = job.state
        stopped_as = None       # once atsd scancelled it: what Slurm's CANCELLED then means
        delay = POLL_S
        while True:
            try:
                info = await sc.show_job(job.backend_ref)
                if info is None:
                    if stopped_as:
                        self.report(job.id, stopped_as, output=output)
                    else:
                        self.report(job.id, FAILED, output=output, extra={
                            **job.extra, "error": "Slurm forgot the job (MinJobAge) before "
                                                  "atsd saw how it ended"})
                    return
                state = STATES.get(info["state"])
                if state == CANCELLED and stopped_as:
                    state = stopped_as
                if state is not None and state != last:
                    last = state
                    self.report(job.id, state, _exit_code(info) if state in FINAL else None,
                                output=output)
                if state in FINAL:
                    return
                if stopped_as is None and (info["state"] == "RESV_DEL_HOLD"
                                           or time.time() >= await self._end(name)):
                    await sc.cancel_job(job.backend_ref)
                    stopped_as = TIMEOUT if state == RUNNING else CANCELLED
                delay = POLL_S
            except sc.SlurmError as exc:
                log.warning("slurm_poll_failed", job_id=job.id, slurm_job=job.backend_ref,
                            error=exc.message)
                delay = min(delay * 2, MAX_BACKOFF_S)
            await asyncio.sleep(delay)

    async def _end(self, name: str) -> float:
        """When the reservation ends: as granted when the job was submitted by this daemon,
        else (after a restart) as Slurm has it; a reservation Slurm no longer has is over."""
        if name not in self._ends:
            r = await sc.show_reservation(name)
            self._ends[name] = r["end"] if r is not None and r["end"] is not None else 0.0
        return self._ends[name]

    def _output(self, job: Job) -> Path:
        """Where its output goes: the ``output`` it asked for, or ``<job id>.out``."""
        asked = [v for k, v in job.submit_args if k == "output"]
        if asked:
            return self._inside_output_dir(asked[-1], "output")
        return self.output_dir / f"{job.id}.out"

    async def close(self) -> None:
        tasks = [task for task, _ in self._watched.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _exit_code(info: dict) -> int | None:
    """As the local backend reports it: the script's exit status, or minus the signal that
    ended it; None for a job cancelled before it ran."""
    if info["signal"]:
        return -info["signal"]
    if info["state"] == "CANCELLED" and not info["exit_code"]:
        return None
    return info["exit_code"]


async def _slurm(call):
    """Slurm's refusals as the engine's errors, with Slurm's own message."""
    try:
        return await call
    except sc.SlurmInsufficientNodes as exc:
        raise Unavailable(exc.message) from None
    except sc.SlurmUnavailable as exc:
        raise BackendError(f"slurmctld unreachable: {exc.message}") from None
    except sc.SlurmError as exc:
        raise BackendError(exc.message) from None
    except ValueError as exc:       # what the wrappers refuse before calling Slurm
        raise BadRequest(str(exc)) from None
