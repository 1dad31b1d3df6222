"""Batch reservations (the Compute Queue Reservation capability) and the jobs run in them.

A batch reservation is ``host_count`` hosts of a queue over ``[start, start + wall_time)``,
GRANTED until its start, ACTIVE until its end, then ENDED; it may be cancelled only while
GRANTED. Each is published GRANTED first, one that starts at once too. The lab's clock
drives those transitions as it does for every reservation.

A queue is either *local* (its hosts are resources in the inventory: each host is booked
exclusively on its timeline, so a host in a batch reservation is a host nobody else holds)
or *external* (a Slurm partition: Slurm owns the nodes and grants the reservation; the
engine keeps the record, the states and the jobs, with no bookings of its own).

Jobs: PENDING → RUNNING → COMPLETED | FAILED, → TIMEOUT when its reservation's time ran out
while it ran, or → CANCELLED from PENDING or RUNNING (a backend that only sees a job after it
ended may report PENDING → COMPLETED | FAILED). The engine keeps the records (Slurm forgets
finished jobs after MinJobAge); running them is the backend's business (atsd/backends),
which reports each change through ``job_changed``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from . import states
from .calendar import MAX_SEARCH_STEPS
from .errors import BadRequest, at, Conflict, NotFound, Unavailable, shown
from .events import JobStatus
from .lab import JOB, Caller, Lab, Reservation, new_id, settles
from .timeline import Booking

PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT = (
    "PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")
FINAL = (COMPLETED, FAILED, CANCELLED, TIMEOUT)
JOB_TRANSITIONS = {PENDING: {RUNNING, CANCELLED, COMPLETED, FAILED},
                   RUNNING: {COMPLETED, FAILED, CANCELLED, TIMEOUT}}


@dataclass(slots=True)
class Job:
    id: str
    reservation_id: str
    owner: str
    script: str
    submit_args: list
    state: str = PENDING
    exit_code: int | None = None
    backend_ref: str | None = None      # the backend's own id (a Slurm job id)
    output: str | None = None
    submitted_at: float = 0.0
    ended_at: float | None = None
    extra: dict = field(default_factory=dict)


class Batch:
    def __init__(self, lab: Lab, local_queues: dict[str, list[str]],
                 external_queues: set[str]) -> None:
        self.lab = lab
        self.local_queues = local_queues
        self.external_queues = external_queues
        self.jobs: dict[str, Job] = {}
        lab.batch = self

    # --- reservations ---

    def queue_hosts(self, queue: str) -> list[str]:
        if queue in self.local_queues:
            return self.local_queues[queue]
        if queue in self.external_queues:
            raise BadRequest(f"queue {queue} is not a local queue")
        raise NotFound(f"no queue named {shown(queue)}")

    def check_queue(self, queue: str, host_count: int) -> None:
        if queue not in self.local_queues and queue not in self.external_queues:
            raise NotFound(f"no queue named {shown(queue)}")
        hosts = self.local_queues.get(queue)
        if hosts is not None and host_count > len(hosts):
            raise Unavailable(f"queue {queue} has {len(hosts)} hosts, {host_count} asked")

    def free_hosts(self, queue: str, start: float, end: float) -> list[str]:
        return [h for h in self.queue_hosts(queue)
                if self.lab.resources[h].bookable
                and self.lab.resources[h].timeline.fits(start, end, 1, True)]

    def place(self, queue: str, host_count: int, start: float, wall_time: float) -> list[str]:
        """``host_count`` hosts free over the whole window, or Unavailable saying why."""
        self.check_queue(queue, host_count)
        free = self.free_hosts(queue, start, start + wall_time)
        if len(free) < host_count:
            raise Unavailable(f"queue {queue}: {len(free)} of {len(self.queue_hosts(queue))} "
                              f"hosts free over the window, {host_count} asked")
        return free[:host_count]

    def earliest(self, queue: str, host_count: int, wall_time: float, now: float,
                 deadline: float) -> tuple[float, list[str]]:
        """The earliest window that ends by ``deadline`` with enough free hosts. Each host's
        timeline finds its own next free window in O(log n); when fewer than ``host_count``
        are free at ``t``, no window starts before the ``host_count``-th earliest of those,
        which becomes the next ``t`` (the selector search, without reconfiguration)."""
        self.check_queue(queue, host_count)
        latest = deadline - wall_time
        timelines = [(h, self.lab.resources[h].timeline) for h in self.queue_hosts(queue)
                     if self.lab.resources[h].bookable]
        t = now
        for _ in range(MAX_SEARCH_STEPS):
            if t > latest:
                break
            starts = [(s, h) for h, timeline in timelines
                      if (s := timeline.earliest_fit(t, wall_time, 1, True)) is not None]
            here = [h for s, h in starts if s == t]
            if len(here) >= host_count:
                return t, here[:host_count]
            if len(starts) < host_count:
                break
            t = sorted(s for s, _ in starts)[host_count - 1]
        raise Unavailable(f"queue {queue}: no {host_count} hosts free for {wall_time:g}s "
                          f"ending by {at(deadline)}")

    @settles
    def grant(self, caller: Caller, queue: str, hosts: list[str], start: float, end: float,
              now: float, rid: str | None = None, backend_ref: str | None = None) -> Reservation:
        """Record a granted reservation; on a local queue its hosts are booked (the caller
        chose them with ``place`` or ``earliest`` in the same step)."""
        rid = rid or new_id()
        local = queue in self.local_queues
        bookings = [Booking(rid, h, start, end, 1, True) for h in hosts] if local else []
        r = Reservation(id=rid, kind="batch", owner=caller.user, state=states.GRANTED,
                        start=start, end=end, mode="exclusive", slots=1, config=None,
                        bookings=bookings,
                        extra={"queue": queue, "hosts": list(hosts), "backend_ref": backend_ref})
        # published RESERVATION_GRANTED first, also when it starts at once, so a listener to
        # status changes sees every batch reservation's whole life (CQR)
        self.lab.add(r, now)
        if start <= now:
            self.lab.transition(r, "start", now)
        return r

    def batch_reservation(self, rid: str, caller: Caller | None = None) -> Reservation:
        r = self.lab.owned(rid, caller) if caller else self.lab.reservation(rid)
        if r.kind != "batch":
            raise NotFound(f"{rid} is not a batch reservation")
        return r

    @settles
    def cancel(self, caller: Caller, rid: str, now: float) -> Reservation:
        r = self.batch_reservation(rid, caller)
        if r.state != states.GRANTED:
            raise Conflict(f"{rid} is {r.state}; only a granted reservation can be cancelled")
        self.lab.transition(r, "cancel", now)
        return r

    def status(self, rid: str) -> dict:
        r = self.batch_reservation(rid)
        return {"reservation_status": r.state, "start_time": r.start, "end_time": r.real_end,
                "hosts": r.extra["hosts"], "queue_id": r.extra["queue"], "reason": r.reason,
                "owner": r.owner}

    # --- jobs ---

    def submit(self, caller: Caller, rid: str, script: str, submit_args: list,
               now: float) -> Job:
        r = self.batch_reservation(rid, caller)
        if r.state == states.ENDED:
            raise Conflict(f"{rid} has ended ({r.reason}); no more jobs")
        job = Job(new_id(), rid, caller.user, script, submit_args, submitted_at=now)
        self.jobs[job.id] = job
        self._changed(job, None)
        return job

    def job(self, job_id: str) -> Job:
        try:
            return self.jobs[job_id]
        except KeyError:
            raise NotFound(f"no job {shown(job_id)}") from None

    def jobs_of(self, rid: str) -> list[Job]:
        return [j for j in self.jobs.values() if j.reservation_id == rid]

    def attach(self, job_id: str, backend_ref: str) -> None:
        """Remember the backend's id for a job (Slurm's job id), to follow it there."""
        self.jobs[job_id].backend_ref = backend_ref
        self.lab.touch(JOB, job_id)

    def job_changed(self, job_id: str, state: str, now: float, exit_code: int | None = None,
                    **extra) -> None:
        """A backend's report. Reports that would go backwards (a late poll after the end)
        are ignored, so the record only ever moves forward."""
        job = self.jobs.get(job_id)
        if job is None or state == job.state or state not in JOB_TRANSITIONS.get(job.state, ()):
            return
        previous = job.state
        job.state = state
        job.exit_code = exit_code if exit_code is not None else job.exit_code
        for key, value in extra.items():
            setattr(job, key, value)
        if state in FINAL:
            job.ended_at = now
        self._changed(job, previous)

    def _changed(self, job: Job, previous: str | None) -> None:
        self.lab.touch(JOB, job.id)
        self.lab.emit(JobStatus(job.id, job.reservation_id, job.state, previous,
                                job.exit_code, job.owner))

    def forget_jobs(self, rid: str) -> None:
        """A reservation's jobs are kept as long as the reservation itself."""
        for job in self.jobs_of(rid):
            del self.jobs[job.id]
            self.lab.touch(JOB, job.id)

    def snapshot_job(self, key: str) -> dict | None:
        job = self.jobs.get(key)
        return asdict(job) if job is not None else None

    def unload_job(self, key: str) -> None:
        self.jobs.pop(key, None)

    def restore_jobs(self, records: list[dict], now: float) -> None:
        for rec in records:
            job = Job(**rec)
            self.jobs[job.id] = job
