"""Where batch jobs run. ``JobRunner`` turns committed changes into backend actions: a batch
reservation that became ACTIVE starts its pending jobs, one that ENDED stops its running
ones (TIMEOUT when its time ran out, CANCELLED when it ended early), a job submitted into
an ACTIVE reservation starts at once. It acts only on committed events, so nothing runs for
a change that did not reach the disk.

Backends report job changes back through ``report``, which updates the engine and wakes the
server so the change is committed and published like any other.

What it needs from the server is handed in, nothing more: the batch engine of the moment (a
config reload replaces it), the clock, and ``wake``.
"""

from __future__ import annotations

from typing import Callable

from ..engine import states
from .local import LocalBackend
from ..engine.batch import CANCELLED, PENDING, RUNNING, TIMEOUT, Batch
from ..engine.events import JOB_STATUS, RESERVATION_STATUS


class JobRunner:
    def __init__(self, config, batch: Callable[[], Batch], clock: Callable[[], float],
                 wake: Callable[[], None]) -> None:
        self.batch, self.clock, self.wake = batch, clock, wake
        self.backends = {}              # queue name -> backend; local queues share one
        local = LocalBackend(config.job_dirs, config.job_output_dir, config.base,
                             config.job_env_allow, config.job_user, self.report)
        for q in config.queues.values():
            if q.backend == "local":
                self.backends[q.name] = local
            else:
                from .slurm import SlurmBackend
                self.backends[q.name] = SlurmBackend(q.partition, config.job_dirs,
                                                    config.job_output_dir, config.base,
                                                    self.report)

    def report(self, job_id: str, state: str, exit_code: int | None = None, **fields) -> None:
        self.batch().job_changed(job_id, state, self.clock(), exit_code, **fields)
        self.wake()

    def backend_for(self, reservation):
        return self.backends.get(reservation.extra.get("queue"))

    def on_committed(self, events: list[dict]) -> None:
        batch = self.batch()
        for e in events:
            if e["topic"] == RESERVATION_STATUS and e.get("kind") == "batch":
                r = batch.lab.reservations.get(e["reservation_id"])
                if r is None:
                    continue
                for job in batch.jobs_of(r.id):
                    self._follow(job, r)
            elif e["topic"] == JOB_STATUS and e["state"] == PENDING and e["previous"] is None:
                job = batch.jobs.get(e["job_id"])
                r = batch.lab.reservations.get(e["reservation_id"])
                if job is not None and r is not None:
                    self._follow(job, r)

    def _follow(self, job, r) -> None:
        backend = self.backend_for(r)
        if backend is None or backend.external:
            return            # an external scheduler (Slurm) runs and ends its own jobs
        if r.state == states.ACTIVE and job.state == PENDING:
            backend.start(job, r)
        elif r.state == states.ENDED and job.state in (PENDING, RUNNING):
            if job.state == RUNNING:
                backend.stop(job.id, TIMEOUT if r.reason == "expired" else CANCELLED)
            else:
                self.report(job.id, CANCELLED)

    def recover(self) -> None:
        """After a restart: jobs that were running under a dead daemon are lost; pending
        jobs of active reservations start now."""
        batch = self.batch()
        for job in list(batch.jobs.values()):
            r = batch.lab.reservations.get(job.reservation_id)
            backend = self.backend_for(r) if r else None
            if backend is None:
                continue
            if backend.external:
                if job.state in (PENDING, RUNNING) and job.backend_ref:
                    backend.watch(job)
                continue
            if job.state == RUNNING:
                backend.forget_lost(job)
            elif r.state != states.ENDED or job.state == PENDING:
                self._follow(job, r)

    def stop_local(self) -> None:
        """This daemon no longer leads (atsd/leader.py): the jobs it runs stop, as its
        reservations are another daemon's now, which records them lost as after a restart.
        (An external scheduler's jobs are not ours to stop.)"""
        for backend in set(self.backends.values()):
            if not backend.external:
                backend.stop_all()

    async def close(self) -> None:
        for backend in set(self.backends.values()):
            await backend.close()

