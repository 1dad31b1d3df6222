"""``atsclient batch``: batch queue reservations and their jobs."""

from __future__ import annotations

import argparse

from . import UsageError, client_from, fmt_time, output, parse_duration, parse_time, print_table


def register(sub, common) -> None:
    batch = sub.add_parser("batch", parents=[common], help="batch queue reservations and jobs")
    bsub = batch.add_subparsers(dest="batch_command", metavar="ACTION", required=True)

    p = bsub.add_parser("create", parents=[common], help="reserve hosts of a queue")
    p.add_argument("--queue", "-q", required=True)
    p.add_argument("--hosts", "-n", type=int, default=1, help="how many hosts (default 1)")
    p.add_argument("--walltime", "-t", required=True, help="how long, e.g. 1h")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--start", help="start time (default now)")
    when.add_argument("--deadline", help="end by then, as early as possible")
    p.set_defaults(func=create)

    p = bsub.add_parser("status", parents=[common], help="a batch reservation's state")
    p.add_argument("id")
    p.set_defaults(func=status)

    p = bsub.add_parser("submit", parents=[common],
                        help="submit a job script into a reservation")
    p.add_argument("id")
    p.add_argument("script")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                   help="--key=value options (sbatch options on Slurm); bare words are "
                        "arguments to the script on a local queue")
    p.set_defaults(func=submit)

    p = bsub.add_parser("jobs", parents=[common], help="the jobs of a reservation")
    p.add_argument("id")
    p.set_defaults(func=jobs)

    p = bsub.add_parser("cancel", parents=[common], help="cancel a reservation not yet active")
    p.add_argument("id")
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
        f"to {fmt_time(r['end_time'])}"))


def status(args) -> None:
    with client_from(args) as c:
        reply = c.get_reservation_status(args.id)
    output(args, reply, lambda r: print(
        f"{args.id}: {r['reservation_status']}"
        f"{' (' + r['reason'] + ')' if r.get('reason') else ''} on {', '.join(r['hosts'])}, "
        f"{fmt_time(r['start_time'])} - {fmt_time(r['end_time'])}, {len(r['jobs'])} jobs"))


def submit(args) -> None:
    with client_from(args) as c:
        job_id = c.submit_job_to_reservation(args.id, args.script, submit_pairs(args.args))
    output(args, {"job_id": job_id}, lambda _: print(job_id))


def jobs(args) -> None:
    with client_from(args) as c:
        rows = c.get_reservation_status(args.id)["jobs"]
    output(args, rows, lambda rows: print_table(rows, ["job_id", "state", "exit_code"]))


def cancel(args) -> None:
    with client_from(args) as c:
        c.cancel_reservation(args.id)
    output(args, {"cancelled": True}, lambda _: print(f"cancelled {args.id}"))
