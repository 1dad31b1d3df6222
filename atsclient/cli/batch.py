"""``atsclient batch``: batch queue reservations and their jobs."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import (UsageError, add_command, client_from, fmt_time, output, parse_duration,
               parse_time, positive, print_table)


WIRE = {"create_reservation": "batch create", "create_deadline_reservation":
        "batch create --deadline", "get_reservation_status": "batch status",
        "submit_job_to_reservation": "batch submit", "get_job_status": "batch jobs",
        "cancel_reservation": "batch cancel", "list_queues": "queues"}


def register(sub, common) -> None:
    p = add_command(sub, common, "queues", "list_queues")
    p.set_defaults(func=queues)

    batch = sub.add_parser("batch", parents=[common], help="Batch queue reservations and jobs")
    bsub = batch.add_subparsers(dest="batch_command", metavar="ACTION", required=True)

    p = add_command(bsub, common, "create", "create_reservation",
                    "With --deadline instead of --start, as early as possible to end by then.")
    p.add_argument("--queue", "-q", required=True, help="the queue ('atsclient queues')")
    p.add_argument("--hosts", "-n", type=positive(int), default=1,
                   help="how many hosts (default 1)")
    p.add_argument("--walltime", "-t", required=True, help="how long, e.g. 1h")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--start", help="start time (default now)")
    when.add_argument("--deadline", help="end by then, as early as possible")
    p.set_defaults(func=create)

    p = add_command(bsub, common, "status", "get_reservation_status")
    p.add_argument("id", help="the batch reservation id")
    p.set_defaults(func=status)

    p = add_command(bsub, common, "submit", "submit_job_to_reservation",
                    "The script path is resolved here (a relative one from the current "
                    "directory) and must lie in one of the daemon's job directories "
                    "('atsclient queues').")
    p.add_argument("id", help="the batch reservation id")
    p.add_argument("script", help="the job script, inside a job directory")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                   help="--key=value options (sbatch options on Slurm); bare words are "
                        "arguments to the script on a local queue")
    p.set_defaults(func=submit)

    p = add_command(bsub, common, "jobs", "get_job_status",
                    "Of every job of the reservation, with where its output is.")
    p.add_argument("id", help="the batch reservation id")
    p.set_defaults(func=jobs)

    p = add_command(bsub, common, "cancel", "cancel_reservation")
    p.add_argument("id", help="the batch reservation id")
    p.set_defaults(func=cancel)


def submit_pairs(args: list[str]) -> list[list[str]]:
    """``--time=5 --nodes 2 input.txt`` → [[time, 5], [nodes, 2], [arg, input.txt]]."""
    pairs, i = [], 0
    while i < len(args):
        word = args[i]
        if word.startswith("--") and len(word) > 2:
            key, sep, value = word[2:].partition("=")
            if not sep:
                if i + 1 >= len(args):
                    raise UsageError(f"{word} needs a value")
                i += 1
                value = args[i]
            pairs.append([key, value])
        else:
            pairs.append(["arg", word])
        i += 1
    return pairs


def queues(args) -> None:
    with client_from(args) as c:
        data = c.list_queues()

    def human(d):
        print_table([{"queue": q["name"], "backend": q["backend"],
                      "hosts": " ".join(q["hosts"]) or f"partition {q['partition']}"}
                     for q in d["queues"]], ["queue", "backend", "hosts"])
        print(f"job scripts from: {' '.join(d['job_dirs']) or 'nowhere (none configured)'}")
        print(f"job output in:    {d['output_dir']}")
    output(args, data, human)


def create(args) -> None:
    wall = parse_duration(args.walltime)
    with client_from(args) as c:
        if args.deadline:
            reply = c.create_deadline_reservation(args.queue, args.hosts, wall,
                                                  parse_time(args.deadline))
        else:
            reply = c.create_reservation(args.queue, args.hosts, wall,
                                         parse_time(args.start or "now"))
    output(args, reply, lambda r: print(
        f"{r['reservation_id']}: {', '.join(r['hosts'])} from {fmt_time(r['start_time'])} "
        f"until {fmt_time(r['end_time'])}"))


def status(args) -> None:
    with client_from(args) as c:
        reply = c.get_reservation_status(args.id)
    output(args, {"reservation_id": args.id, **reply}, lambda r: print(
        f"{args.id}: {r['reservation_status'].removeprefix('RESERVATION_').lower()}"
        f"{' (' + r['reason'] + ')' if r.get('reason') else ''} on {', '.join(r['hosts'])}, "
        f"{fmt_time(r['start_time'])} to {fmt_time(r['end_time'])}, {len(r['jobs'])} "
        f"job{'s' if len(r['jobs']) != 1 else ''}"))


def job_path(script: str, job_dirs: list[str]) -> str:
    """The script as an absolute path, resolved here (links and ``..`` too), checked to lie
    in one of the daemon's job directories before anything is sent."""
    path = Path(script).expanduser().resolve()
    if not any(path.is_relative_to(d) for d in job_dirs):
        raise UsageError(f"{script} ({path}) is not in a job directory; put it in "
                         f"{' or '.join(job_dirs) if job_dirs else 'one (atsd has none)'}")
    return str(path)


def submit(args) -> None:
    with client_from(args) as c:
        script = job_path(args.script, c.list_queues()["job_dirs"])
        job_id = c.submit_job_to_reservation(args.id, script, submit_pairs(args.args))
    output(args, {"job_id": job_id, "reservation_id": args.id, "job_script": script},
           lambda _: print(job_id))


def jobs(args) -> None:
    with client_from(args) as c:
        rows = c.get_reservation_status(args.id)["jobs"]
    output(args, rows, lambda rows: print_table(
        [{**r, "state": r["state"].lower(), "output": r.get("output") or "(once it runs)"}
         for r in rows], ["job_id", "state", "exit_code", "output"]))


def cancel(args) -> None:
    with client_from(args) as c:
        c.cancel_reservation(args.id)
    output(args, {"reservation_id": args.id, "cancelled": True},
           lambda _: print(f"cancelled {args.id}"))
