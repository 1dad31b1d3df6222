"""Batch queue reservations (Compute Queue Reservation): create one at a start time or by a
deadline, query it, submit jobs into it, cancel it while it is only granted.

On a local queue the engine picks the hosts itself, at once. On a Slurm queue, Slurm grants
the reservation: the command waits for ``scontrol`` (as a coroutine, so the daemon keeps
answering others meanwhile) and the engine then records what Slurm granted.
"""

from __future__ import annotations

from ..engine.batch import FAILED
from ..engine.errors import BackendError, BadRequest
from ..protocol import POSITIVE_DURATION, TEXT, TIME, count, list_of, optional, required
from . import Call, command


def _scalar(value) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _pair(value, key):
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and _scalar(value[1])):
        raise BadRequest(f"{key} must be a [key, value] pair")
    return [value[0], str(value[1])]


MAX_SUBMIT_ARGS = 64
_pairs = list_of(_pair, MAX_SUBMIT_ARGS)


def _submit_args(value, key):
    """``[[key, value], ...]`` or the map form ``{key: value}`` (CQR allows both), as
    pairs: the backends' allow-lists then see one shape. No NUL anywhere: no command line
    or environment can carry one."""
    if isinstance(value, dict):
        if len(value) > MAX_SUBMIT_ARGS:
            raise BadRequest(f"{key} may hold at most {MAX_SUBMIT_ARGS} items")
        if not all(isinstance(k, str) and _scalar(v) for k, v in value.items()):
            raise BadRequest(f"{key} must map option names to strings or numbers")
        pairs = [[k, str(v)] for k, v in value.items()]
    else:
        pairs = _pairs(value, key)
    if any("\0" in k or "\0" in v for k, v in pairs):
        raise BadRequest(f"{key} may not hold NUL characters")
    return pairs


_submit_args.described = f"[key, value] pairs or a {{key: value}} map, at most {MAX_SUBMIT_ARGS}"

HOSTS = count(1, 100_000)


@command("create_reservation",
         errors=("bad_request", "not_found", "unavailable", "forbidden", "backend_error"),
         replies=("reservation_id", "hosts", "start_time", "end_time"),
         mutating=True, queue_id=required(TEXT), host_count=required(HOSTS),
         wall_time=required(POSITIVE_DURATION), start_time=required(TIME))
def create_reservation(call: Call, queue_id: str, host_count: int, wall_time: float,
                       start_time: float):
    """Reserve hosts of a batch queue from a start time.

    host_count hosts of queue_id for [start_time, start_time + wall_time): all of them or
    unavailable with the reason. RESERVATION_GRANTED until the start, then ACTIVE."""
    app, now = call.app, call.now
    start = max(start_time, now)
    app.lab.check_quota(call.caller.user, wall_time)
    external = call.io.external_backend(queue_id)
    if external is None:
        hosts = app.batch.place(queue_id, host_count, start, wall_time)
        r = app.batch.grant(call.caller, queue_id, hosts, start, start + wall_time, now)
        return {"reservation_id": r.id, "hosts": r.extra["hosts"], "start_time": r.start,
                "end_time": r.end}
    app.batch.check_queue(queue_id, host_count)
    call.check_may_wait()

    async def granted():
        rid, hosts, ref = await external.create(call.caller.user, host_count, start,
                                                start + wall_time)
        call.check_current()
        r = app.batch.grant(call.caller, queue_id, hosts, start, start + wall_time,
                            call.io.clock(), rid=rid, backend_ref=ref)
        return {"reservation_id": r.id, "hosts": hosts, "start_time": r.start,
                "end_time": r.end}
    return granted()


@command("create_deadline_reservation",
         errors=("bad_request", "not_found", "unavailable", "forbidden", "backend_error"),
         replies=("reservation_id", "hosts", "start_time", "end_time"),
         mutating=True, queue_id=required(TEXT),
         host_count=required(HOSTS), wall_time=required(POSITIVE_DURATION),
         deadline_time=required(TIME))
def create_deadline_reservation(call: Call, queue_id: str, host_count: int, wall_time: float,
                                deadline_time: float):
    """Reserve hosts of a batch queue as early as possible, to end by a deadline.

    The earliest window of wall_time on host_count hosts that ends by deadline_time;
    unavailable when none does."""
    app, now = call.app, call.now
    if deadline_time - wall_time < now:
        raise BadRequest("deadline_time is less than wall_time from now")
    app.lab.check_quota(call.caller.user, wall_time)
    external = call.io.external_backend(queue_id)
    if external is None:
        start, hosts = app.batch.earliest(queue_id, host_count, wall_time, now, deadline_time)
        r = app.batch.grant(call.caller, queue_id, hosts, start, start + wall_time, now)
        return {"reservation_id": r.id, "start_time": r.start, "end_time": r.end,
                "hosts": hosts}
    app.batch.check_queue(queue_id, host_count)
    call.check_may_wait()

    async def granted():
        rid, start, hosts, ref = await external.create_by_deadline(
            call.caller.user, host_count, wall_time, now, deadline_time)
        call.check_current()
        r = app.batch.grant(call.caller, queue_id, hosts, start, start + wall_time, call.io.clock(),
                            rid=rid, backend_ref=ref)
        return {"reservation_id": r.id, "start_time": r.start, "end_time": r.end,
                "hosts": hosts}
    return granted()


@command("list_queues", errors=("bad_request",), replies=("queues", "job_dirs", "output_dir"))
def list_queues(call: Call) -> dict:
    """The batch queues, where job scripts must lie and where their output goes.

    Every batch queue (name, backend, its hosts or Slurm partition), the directories job
    scripts must lie in (``job_dirs``) and where job output goes (``output_dir``); clients
    check a script against job_dirs before submitting it."""
    config = call.app.config
    return {"queues": [{"name": q.name, "backend": q.backend, "hosts": list(q.hosts),
                        "partition": q.partition} for q in config.queues.values()],
            "job_dirs": [str(d) for d in config.job_dirs],
            "output_dir": str((config.base / config.job_output_dir).resolve())}


@command("get_reservation_status", errors=("bad_request", "not_found"),
         replies=("reservation_status", "start_time", "end_time", "hosts", "queue_id", "reason",
                  "owner", "jobs"),
         reservation_id=required(TEXT))
def get_reservation_status(call: Call, reservation_id: str) -> dict:
    """A batch reservation's state, window, hosts and jobs.

    State (RESERVATION_GRANTED, _ACTIVE or _ENDED, with the reason it ended), window,
    hosts, and the reservation's jobs."""
    status = call.app.batch.status(reservation_id)
    status["jobs"] = [{"job_id": j.id, "state": j.state, "exit_code": j.exit_code,
                       "output": j.output} for j in call.app.batch.jobs_of(reservation_id)]
    return status


@command("submit_job_to_reservation",
         errors=("bad_request", "not_found", "conflict", "forbidden", "unavailable",
                 "backend_error"),
         replies=("job_id",),
         mutating=True, reservation_id=required(TEXT),
         job_script=required(TEXT), submit_args=optional(_submit_args, []))
def submit_job_to_reservation(call: Call, reservation_id: str, job_script: str,
                              submit_args: list):
    """Submit a job script into a batch reservation.

    Run job_script in the reservation: queued (PENDING) until it is ACTIVE, stopped when
    it ends. submit_args are [key, value] pairs or a {key: value} map: sbatch options on
    Slurm; on a local queue ["arg", value] and ["env", "NAME=value"] (allow-lists in the
    backends)."""
    app = call.app
    r = app.batch.batch_reservation(reservation_id, call.caller)
    backend = call.io.backends[r.extra["queue"]]
    script = backend.check_submission(job_script, submit_args)
    if backend.external:
        call.check_may_wait()
    job = app.batch.submit(call.caller, reservation_id, script, submit_args, call.now)
    if not backend.external:
        return {"job_id": job.id}

    async def submitted():
        try:
            ref = await backend.submit(job, r)
        except BackendError as exc:
            call.check_current()
            app.batch.job_changed(job.id, FAILED, call.io.clock(), extra={"error": exc.message})
            raise
        call.check_current()
        app.batch.attach(job.id, ref)
        backend.watch(job)
        return {"job_id": job.id}
    return submitted()


@command("get_job_status", errors=("bad_request", "not_found"),
         replies=("state", "exit_code", "reservation_id", "output", "reason"),
         job_id=required(TEXT))
def get_job_status(call: Call, job_id: str) -> dict:
    """A batch job's state, exit code and output.

    PENDING, RUNNING, COMPLETED, FAILED, TIMEOUT or CANCELLED, the exit code once it
    ended, and why it failed when it never ran to an exit code (``reason``)."""
    job = call.app.batch.job(job_id)
    return {"state": job.state, "exit_code": job.exit_code, "reservation_id": job.reservation_id,
            "output": job.output, "reason": job.extra.get("error")}


@command("cancel_reservation",
         errors=("bad_request", "not_found", "conflict", "forbidden", "unavailable",
                 "backend_error"),
         replies=("cancelled",),
         mutating=True, reservation_id=required(TEXT))
def cancel_reservation(call: Call, reservation_id: str):
    """Cancel a batch reservation that has not started.

    It must still be RESERVATION_GRANTED; conflict after."""
    app = call.app
    r = app.batch.batch_reservation(reservation_id, call.caller)
    external = call.io.external_backend(r.extra["queue"])
    if external is None or r.state != "RESERVATION_GRANTED":
        app.batch.cancel(call.caller, reservation_id, call.now)
        return {"cancelled": True}
    call.check_may_wait()

    async def cancelled():
        await external.cancel(r.extra["backend_ref"])
        call.check_current()
        app.batch.cancel(call.caller, reservation_id, call.io.clock())
        return {"cancelled": True}
    return cancelled()

