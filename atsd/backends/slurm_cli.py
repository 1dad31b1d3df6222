"""Thin async wrappers over Slurm's command-line tools (Slurm 22.05).

Every call runs one Slurm command with ``asyncio.create_subprocess_exec``
(never a shell), with ``TZ=UTC`` and, when given, ``SLURM_CONF=<slurm_conf>``
in its environment, and with a timeout.  Failures raise :class:`SlurmError`
whose message is Slurm's own stderr text; an unreachable slurmctld raises
:class:`SlurmUnavailable` (Slurm's "Unable to contact slurm controller" after
about MessageTimeout seconds, or our own per-call timeout).

Times: Slurm reads and prints *local* time without a zone.  Because every
command runs with TZ=UTC, the strings are UTC; the API takes and returns
epoch seconds (ints) and converts with :func:`to_slurm_time` /
:func:`from_slurm_time` (``YYYY-MM-DDTHH:MM:SS``).

Quirks of Slurm 22.05 handled here:

* ``scontrol create reservation NodeCnt=N`` silently grants fewer nodes when
  fewer are free (or exist) and still exits 0, so the reservation is read
  back and deleted again if NodeCnt is short (:class:`SlurmInsufficientNodes`).
* ``Duration=`` is in minutes; ``EndTime=`` keeps seconds, so EndTime is used.
* Reservations are half-open: one may start exactly at another's EndTime.
* ``scancel`` exits 0 and prints nothing for an unknown or finished job
  unless ``-v`` is given.
* With slurmctld down, ``scontrol create reservation`` fails with
  "Unexpected message received" (other commands say "Unable to contact slurm
  controller"); ``scontrol ping`` (instant) tells the two apart.
* ``scontrol show reservation NAME`` for a missing one prints
  "Reservation NAME not found" on stdout and exits 1.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import time
from datetime import datetime, timezone
from typing import Iterable, Mapping, Sequence

__all__ = [
    "SlurmError", "SlurmUnavailable", "SlurmInsufficientNodes",
    "DEFAULT_TIMEOUT",
    "create_reservation", "delete_reservation", "show_reservation",
    "list_reservations", "submit", "show_job", "cancel_job", "ping",
    "earliest_start", "show_hostnames",
    "parse_oneliner", "parse_records", "expand_hostlist",
    "to_slurm_time", "from_slurm_time",
]

DEFAULT_TIMEOUT = 30.0
_SLURM_TIME_FMT = "%Y-%m-%dT%H:%M:%S"

# ------------------------------------------------------------------ errors


class SlurmError(Exception):
    """A Slurm command failed; ``str(e)`` is Slurm's own message."""

    def __init__(self, message: str, *, cmd: Sequence[str] | None = None,
                 returncode: int | None = None, stderr: str = "",
                 stdout: str = ""):
        super().__init__(message)
        self.message = message
        self.cmd = list(cmd) if cmd else []
        self.returncode = returncode
        self.stderr = stderr
        self.stdout = stdout


class SlurmUnavailable(SlurmError):
    """slurmctld could not be reached (connect failure or timeout)."""


class SlurmInsufficientNodes(SlurmError):
    """A reservation could not get the requested number of nodes."""


# ------------------------------------------------------------------- times


def to_slurm_time(epoch: float | int | datetime) -> str:
    """Epoch seconds (or an aware datetime) -> 'YYYY-MM-DDTHH:MM:SS' in UTC."""
    if isinstance(epoch, datetime):
        if epoch.tzinfo is None:
            raise ValueError("naive datetime; give an aware one or epoch seconds")
        epoch = epoch.timestamp()
    return datetime.fromtimestamp(int(epoch), timezone.utc).strftime(_SLURM_TIME_FMT)


def from_slurm_time(text: str | None) -> int | None:
    """'YYYY-MM-DDTHH:MM:SS' (UTC) -> epoch seconds; None for Unknown/None/N/A."""
    if not text:
        return None
    try:
        dt = datetime.strptime(text.strip(), _SLURM_TIME_FMT)
    except ValueError:
        return None
    return int(dt.replace(tzinfo=timezone.utc).timestamp())


def _epoch(value: float | int | datetime) -> int:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime; give an aware one or epoch seconds")
        value = value.timestamp()
    return int(math.ceil(value - 1e-6))


def _epoch_floor(value: float | int | datetime) -> int:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime; give an aware one or epoch seconds")
        value = value.timestamp()
    return int(math.floor(value + 1e-6))


# ----------------------------------------------------------------- parsing

# Keys scontrol prints for jobs, reservations, nodes and partitions (22.05).
# Used only to end values that may contain spaces (see _FREE_TEXT_KEYS).
_KNOWN_KEYS = frozenset("""
JobId ArrayJobId ArrayTaskId JobName UserId GroupId MCS_label Priority Nice
Account QOS JobState Reason Dependency Requeue Restarts BatchFlag Reboot
ExitCode DerivedExitCode RunTime TimeLimit TimeMin SubmitTime EligibleTime
AccrueTime StartTime EndTime Deadline SuspendTime SecsPreSuspend
LastSchedEval Scheduler Partition AllocNode:Sid ReqNodeList ExcNodeList
NodeList BatchHost NumNodes NumCPUs NumTasks CPUs/Task ReqB:S:C:T TRES
Socks/Node NtasksPerN:B:S:C CoreSpec MinCPUsNode MinMemoryNode MinMemoryCPU
MinTmpDiskNode Features DelayBoot Reservation OverSubscribe Contiguous
Licenses Network Command WorkDir StdErr StdIn StdOut Power Comment
AdminComment Cluster ClusterFeatures TresPerNode TresPerJob TresPerTask
CpusPerTres MemPerTres Prefer HetJobId HetJobOffset HetJobIdSet
ReservationName Duration Nodes NodeCnt CoreCnt PartitionName Flags Users
Groups Accounts State BurstBuffer Watts MaxStartDelay
NodeName Arch CoresPerSocket CPUAlloc CPUEfctv CPUTot CPULoad
AvailableFeatures ActiveFeatures Gres NodeAddr NodeHostName Version OS
RealMemory AllocMem FreeMem Sockets Boards ThreadsPerCore TmpDisk Weight
Owner Partitions BootTime SlurmdStartTime LastBusyTime CfgTRES AllocTRES
CapWatts CurrentWatts AveWatts ExtSensorsJoules ExtSensorsWatts
ExtSensorsTemp
""".split())

# Values that are free text and may contain spaces ("JobName=my job",
# "OS=Linux 6.1.0 #1 SMP ...", paths with spaces).  After one of these keys,
# following tokens belong to the value until a token "Key=..." with a known
# key appears.  After any other key, any "Key=..." token starts a new field.
_FREE_TEXT_KEYS = frozenset({
    "JobName", "Command", "WorkDir", "StdErr", "StdIn", "StdOut", "Comment",
    "AdminComment", "OS", "Reason", "JobState", "Dependency",
})

_KEY_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_:/]*)=(.*)$", re.S)


def parse_oneliner(text: str) -> dict[str, str]:
    """Parse one ``scontrol show ... --oneliner`` record into {Key: Value}.

    Tokens are separated by whitespace; ``Key=Value`` starts a field (the
    value keeps further '=' signs: ``TRES=cpu=4``); a token that is not
    ``Key=...`` continues the previous value with one space.  For the free
    text keys (JobName, Command, WorkDir, StdOut, OS, Reason, ...) a
    ``Word=...`` token also continues the value unless Word is a key scontrol
    is known to print.  Empty values stay empty strings ("Flags=").
    """
    out: dict[str, str] = {}
    key: str | None = None
    for tok in text.split():
        m = _KEY_RE.match(tok)
        starts = m is not None and (
            key is None or key not in _FREE_TEXT_KEYS or m.group(1) in _KNOWN_KEYS)
        if starts:
            key = m.group(1)
            out[key] = m.group(2)
        elif key is not None:
            out[key] = f"{out[key]} {tok}" if out[key] else tok
        # else: junk before the first key; ignore.
    return out


def parse_records(text: str) -> list[dict[str, str]]:
    """Parse multi-record ``--oneliner`` output (one record per line)."""
    return [r for r in (parse_oneliner(line) for line in text.splitlines()) if r]


def expand_hostlist(expr: str | None) -> list[str]:
    """Expand a Slurm hostlist ('n[1-3,5],gpu[01-02]') into host names.

    Keeps zero padding ('n[01-03]' -> n01 n02 n03), supports several bracket
    groups per name (cartesian product) and returns [] for '', '(null)',
    'None'.
    """
    if not expr or expr.strip() in ("(null)", "None", "N/A"):
        return []
    items, depth, cur = [], 0, ""
    for ch in expr.strip():
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"bad hostlist {expr!r}")
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    if depth != 0:
        raise ValueError(f"bad hostlist {expr!r}")
    items.append(cur)
    hosts: list[str] = []
    for item in items:
        if item:
            hosts.extend(_expand_one(item, expr))
    return hosts


def _expand_one(item: str, expr: str) -> list[str]:
    m = re.search(r"\[([^\]]*)\]", item)
    if not m:
        return [item]
    prefix, rest = item[: m.start()], item[m.end():]
    suffixes = _expand_one(rest, expr) if rest else [""]
    out = []
    for part in m.group(1).split(","):
        part = part.strip()
        if not part:
            raise ValueError(f"bad hostlist {expr!r}")
        if "-" in part:
            lo, hi = part.split("-", 1)
            if not (lo.isdigit() and hi.isdigit()) or int(hi) < int(lo):
                raise ValueError(f"bad hostlist range {part!r} in {expr!r}")
            width = len(lo)
            nums = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
        else:
            nums = [part]
        for n in nums:
            for s in suffixes:
                out.append(f"{prefix}{n}{s}")
    return out


# ------------------------------------------------------------------ runner


class _Result:
    __slots__ = ("argv", "returncode", "stdout", "stderr")

    def __init__(self, argv, returncode, stdout, stderr):
        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr

    @property
    def text(self) -> str:
        """Slurm's message: stderr, else stdout, stripped."""
        return (self.stderr.strip() or self.stdout.strip()
                or f"{self.argv[0]} exited with status {self.returncode}")


def _env(slurm_conf, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if extra:
        env.update({str(k): str(v) for k, v in extra.items()})
    env["TZ"] = "UTC"
    if slurm_conf is not None:
        env["SLURM_CONF"] = os.fspath(slurm_conf)
    return env


async def _run(argv: list[str], *, slurm_conf, timeout: float,
               extra_env: Mapping[str, str] | None = None) -> _Result:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=_env(slurm_conf, extra_env))
    except FileNotFoundError as e:
        raise SlurmError(f"{argv[0]}: command not found (is slurm-client installed?)",
                         cmd=argv) from e
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
        await proc.wait()
        raise SlurmUnavailable(
            f"{' '.join(argv[:3])}: no answer within {timeout:g}s "
            "(slurmctld unreachable?)", cmd=argv) from None
    except BaseException:  # cancelled: do not leave the child behind
        if proc.returncode is None:
            try:
                proc.kill()
            except ProcessLookupError:
                pass
            await asyncio.shield(proc.wait())
        raise
    return _Result(argv, proc.returncode,
                   out.decode(errors="replace"), err.decode(errors="replace"))


_UNAVAILABLE_MARKERS = (
    "Unable to contact slurm controller",
    "Socket timed out on send/recv operation",
    "Communication connection failure",
    "Zero Bytes were transmitted or received",
)


def _error(res: _Result, cls: type[SlurmError] = SlurmError) -> SlurmError:
    msg = res.text
    if any(m in msg for m in _UNAVAILABLE_MARKERS):
        cls = SlurmUnavailable
    return cls(msg, cmd=res.argv, returncode=res.returncode,
               stderr=res.stderr, stdout=res.stdout)


def _check(res: _Result) -> _Result:
    if res.returncode != 0:
        raise _error(res)
    return res


_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_JOB_ID_RE = re.compile(r"^[0-9]+(_[0-9]+)?$")


def _check_name(what: str, value: str) -> str:
    value = str(value)
    if not _NAME_RE.match(value):
        raise ValueError(f"invalid {what} {value!r}")
    return value


# ---------------------------------------------------------- reservations


def _normalize_reservation(raw: dict[str, str]) -> dict:
    res: dict = dict(raw)
    nodelist = raw.get("Nodes", "")
    try:
        node_count = int(raw.get("NodeCnt", ""))
    except ValueError:
        node_count = 0
    users = raw.get("Users", "")
    res.update({
        "name": raw.get("ReservationName", ""),
        "partition": raw.get("PartitionName", ""),
        "start": from_slurm_time(raw.get("StartTime")),
        "end": from_slurm_time(raw.get("EndTime")),
        "start_iso": raw.get("StartTime", ""),
        "end_iso": raw.get("EndTime", ""),
        "node_count": node_count,
        "nodelist": "" if nodelist == "(null)" else nodelist,
        "nodes": expand_hostlist(nodelist),
        "state": raw.get("State", ""),
        "users": [] if users in ("", "(null)") else users.split(","),
        "flags": [f for f in raw.get("Flags", "").split(",") if f],
    })
    return res


async def list_reservations(*, slurm_conf=None, timeout: float = DEFAULT_TIMEOUT) -> list[dict]:
    """All reservations (normalized like :func:`show_reservation`)."""
    res = _check(await _run(["scontrol", "show", "reservation", "--oneliner"],
                            slurm_conf=slurm_conf, timeout=timeout))
    if "No reservations in the system" in res.stdout:
        return []
    return [_normalize_reservation(r) for r in parse_records(res.stdout)
            if "ReservationName" in r]


async def show_reservation(name: str, *, slurm_conf=None,
                           timeout: float = DEFAULT_TIMEOUT) -> dict | None:
    """One reservation, or None when it does not exist (any more).

    Returns scontrol's fields (ReservationName, StartTime, EndTime, Nodes,
    NodeCnt, State (ACTIVE/INACTIVE), ...) plus normalized ones: name,
    partition, start/end (epoch), start_iso/end_iso, node_count, nodelist,
    nodes (expanded host names), state, users, flags.
    """
    name = _check_name("reservation name", name)
    res = await _run(["scontrol", "show", "reservation", name, "--oneliner"],
                     slurm_conf=slurm_conf, timeout=timeout)
    if res.returncode != 0:
        if "not found" in res.text and "controller" not in res.text:
            return None
        raise _error(res)
    for raw in parse_records(res.stdout):
        if raw.get("ReservationName") == name:
            return _normalize_reservation(raw)
    return None


async def delete_reservation(name: str, *, slurm_conf=None,
                             timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Delete a reservation; True if deleted, False if it did not exist."""
    name = _check_name("reservation name", name)
    res = await _run(["scontrol", "delete", f"ReservationName={name}"],
                     slurm_conf=slurm_conf, timeout=timeout)
    if res.returncode == 0:
        return True
    if "Requested reservation is invalid" in res.text:
        return False
    raise _error(res)


async def create_reservation(name: str, partition: str, node_count: int,
                             start, end, user: str, *, slurm_conf=None,
                             timeout: float = DEFAULT_TIMEOUT) -> dict:
    """Create reservation ``name`` of ``node_count`` nodes in ``partition``.

    ``start``/``end``: epoch seconds or aware datetimes (rounded up to whole
    seconds).  Reads the reservation back; if Slurm granted fewer nodes than
    asked (22.05 does that silently) it is deleted and
    :class:`SlurmInsufficientNodes` is raised.  "Requested nodes are busy"
    also raises SlurmInsufficientNodes; other failures raise SlurmError with
    Slurm's message.  Returns the reservation as :func:`show_reservation`.
    """
    name = _check_name("reservation name", name)
    partition = _check_name("partition", partition)
    user = _check_name("user", user)
    node_count = int(node_count)
    if node_count < 1:
        raise ValueError("node_count must be >= 1")
    start_s, end_s = _epoch(start), _epoch(end)
    if end_s <= start_s:
        raise ValueError(f"end ({end_s}) must be after start ({start_s})")
    argv = ["scontrol", "create", "reservation", f"ReservationName={name}",
            f"PartitionName={partition}", f"NodeCnt={node_count}",
            f"StartTime={to_slurm_time(start_s)}", f"EndTime={to_slurm_time(end_s)}",
            f"Users={user}"]
    res = await _run(argv, slurm_conf=slurm_conf, timeout=timeout)
    if res.returncode != 0:
        # stdout carries a generic "Note, unless nodes are directly
        # requested..." text; the error itself is on stderr.
        if "Requested nodes are busy" in res.stderr:
            raise _error(res, SlurmInsufficientNodes)
        err = _error(res)
        if (not isinstance(err, SlurmUnavailable)
                and "Unexpected message received" in res.stderr
                and not await ping(slurm_conf=slurm_conf, timeout=timeout)):
            # 22.05: with slurmctld down, "scontrol create reservation" says
            # "Unexpected message received" instead of "Unable to contact".
            raise SlurmUnavailable(f"{err.message} (scontrol ping: slurmctld is DOWN)",
                                   cmd=res.argv, returncode=res.returncode,
                                   stderr=res.stderr, stdout=res.stdout)
        raise err
    got = await show_reservation(name, slurm_conf=slurm_conf, timeout=timeout)
    if got is None:
        raise SlurmError(f"reservation {name} was created but is not shown by scontrol",
                         cmd=argv)
    if got["node_count"] < node_count or len(got["nodes"]) < node_count:
        try:
            await delete_reservation(name, slurm_conf=slurm_conf, timeout=timeout)
            note = "reservation deleted again"
        except SlurmError as e:
            note = f"and deleting it failed: {e}"
        raise SlurmInsufficientNodes(
            f"Slurm granted only {got['node_count']} of {node_count} nodes "
            f"({got['nodelist'] or 'none'}) for reservation {name} in partition "
            f"{partition} from {to_slurm_time(start_s)} to {to_slurm_time(end_s)}; "
            f"{note}", cmd=argv)
    return got


# ------------------------------------------------------------------- jobs

# sbatch options that this module sets itself; user args may not name them
# nor an abbreviation of them (getopt_long accepts unique prefixes, so
# "--reserv=x" would mean --reservation).
_RESERVED_SBATCH_OPTS = ("reservation", "parsable", "chdir", "output", "wrap", "export")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SBATCH_KEY_RE = re.compile(r"^[a-z][a-z-]*$")


def sbatch_args(args: Iterable[Sequence[str]]) -> list[str]:
    out = []
    for pair in args:
        if isinstance(pair, (str, bytes)) or len(pair) != 2:
            raise ValueError(f"sbatch argument must be a [key, value] pair, got {pair!r}")
        key, value = str(pair[0]), pair[1]
        if not _SBATCH_KEY_RE.match(key):
            raise ValueError(f"invalid sbatch option name {key!r}")
        if any(opt.startswith(key) for opt in _RESERVED_SBATCH_OPTS):
            raise ValueError(f"sbatch option --{key} is set by atsd and may not be given")
        if isinstance(value, bool) or value is None:
            raise ValueError(f"sbatch option --{key} needs a string/number value")
        out.append(f"--{key}={value}")
    return out


async def submit(reservation: str, script_path, args: Iterable[Sequence[str]] = (),
                 env: Mapping[str, str] | None = None, workdir=None, output=None,
                 *, export_only: bool = False, slurm_conf=None,
                 timeout: float = DEFAULT_TIMEOUT) -> str:
    """``sbatch --parsable --reservation=NAME [--key=value ...] script``.

    ``args``: [key, value] pairs -> ``--key=value`` (key must match
    ``^[a-z][a-z-]*$``; reservation/parsable/chdir/output/wrap/export and
    their abbreviations are refused).  ``env`` is added to sbatch's
    environment, which sbatch exports to the job (its default --export=ALL);
    with ``export_only`` the job gets ``env`` and Slurm's own SLURM_* only
    (``--export=NAME,...``), none of the caller's environment.
    ``workdir`` -> --chdir, ``output`` -> --output (stdout+stderr; Slurm
    patterns such as %j work).  Returns the job id as a string.
    """
    reservation = _check_name("reservation name", reservation)
    argv = ["sbatch", "--parsable", f"--reservation={reservation}"]
    if export_only:
        names = list(env or {})
        bad = [n for n in names if not _ENV_NAME_RE.match(n)]
        if bad or not names:
            raise ValueError(f"export_only needs environment variable names, not {bad!r}")
        argv.append(f"--export={','.join(names)}")
    if workdir is not None:
        argv.append(f"--chdir={os.fspath(workdir)}")
    if output is not None:
        argv.append(f"--output={os.fspath(output)}")
    argv += sbatch_args(args)
    argv.append(os.fspath(script_path))
    res = _check(await _run(argv, slurm_conf=slurm_conf, timeout=timeout, extra_env=env))
    job_id = res.stdout.strip().split(";", 1)[0]
    if not _JOB_ID_RE.match(job_id):
        raise SlurmError(f"sbatch printed no job id: {res.text!r}", cmd=argv)
    return job_id


def _normalize_job(raw: dict[str, str]) -> dict:
    job: dict = dict(raw)
    exit_code = signal = None
    ec = raw.get("ExitCode", "")
    if ":" in ec:
        a, b = ec.split(":", 1)
        if a.isdigit() and b.isdigit():
            exit_code, signal = int(a), int(b)
    state = raw.get("JobState", "")
    job.update({
        "job_id": raw.get("JobId", ""),
        "state": state.split()[0] if state else "",
        "exit_code": exit_code,
        "signal": signal,
        "reason": raw.get("Reason", ""),
        "reservation": "" if raw.get("Reservation") == "(null)" else raw.get("Reservation", ""),
        "nodes": expand_hostlist(raw.get("NodeList")),
        "start": from_slurm_time(raw.get("StartTime")),
        "end": from_slurm_time(raw.get("EndTime")),
    })
    return job


async def show_job(job_id: str | int, *, slurm_conf=None,
                   timeout: float = DEFAULT_TIMEOUT) -> dict | None:
    """A job's fields (JobState, ExitCode, ...) or None once Slurm forgot it
    (MinJobAge after it ended).  Adds: job_id, state, exit_code and signal
    (ints from ExitCode "E:S"), reason, reservation, nodes, start, end."""
    job_id = str(job_id)
    if not _JOB_ID_RE.match(job_id):
        raise ValueError(f"invalid job id {job_id!r}")
    res = await _run(["scontrol", "show", "job", job_id, "--oneliner"],
                     slurm_conf=slurm_conf, timeout=timeout)
    if res.returncode != 0:
        if "Invalid job id specified" in res.text:
            return None
        raise _error(res)
    records = parse_records(res.stdout)
    if not records:
        return None
    return _normalize_job(records[0])


async def cancel_job(job_id: str | int, *, slurm_conf=None,
                     timeout: float = DEFAULT_TIMEOUT) -> bool:
    """scancel a job: True if Slurm signalled it, False if it had already
    finished or is unknown.  Other failures raise SlurmError."""
    job_id = str(job_id)
    if not _JOB_ID_RE.match(job_id):
        raise ValueError(f"invalid job id {job_id!r}")
    # Without -v scancel is silent (exit 0) about unknown/finished jobs.
    res = await _run(["scancel", "-v", job_id], slurm_conf=slurm_conf, timeout=timeout)
    errors = [line for line in res.stderr.splitlines() if "error:" in line]
    if any("Invalid job id specified" in e or "already completing or completed" in e
           for e in errors):
        return False
    if res.returncode != 0 or errors:
        cls = (SlurmUnavailable if any(m in res.stderr for m in _UNAVAILABLE_MARKERS)
               else SlurmError)
        raise cls("\n".join(errors) or res.text, cmd=res.argv,
                  returncode=res.returncode, stderr=res.stderr, stdout=res.stdout)
    return True


# ------------------------------------------------------------------ misc


async def ping(*, slurm_conf=None, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """True when ``scontrol ping`` reports the primary slurmctld UP."""
    try:
        res = await _run(["scontrol", "ping"], slurm_conf=slurm_conf, timeout=timeout)
    except SlurmUnavailable:
        return False
    return res.returncode == 0 and " is UP" in res.stdout


async def show_hostnames(expr: str, *, slurm_conf=None,
                         timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    """``scontrol show hostnames EXPR`` (Slurm's own expansion)."""
    res = _check(await _run(["scontrol", "show", "hostnames", expr],
                            slurm_conf=slurm_conf, timeout=timeout))
    return res.stdout.split()


async def _running_job_ends(partition: str, *, slurm_conf, timeout) -> list[int]:
    res = _check(await _run(["squeue", "-h", "-p", partition, "-t", "RUNNING,COMPLETING",
                             "-o", "%e"], slurm_conf=slurm_conf, timeout=timeout))
    return [t for t in (from_slurm_time(x) for x in res.stdout.split()) if t is not None]


async def earliest_start(partition: str, node_count: int, wall_time, not_before,
                         deadline, *, name: str, user: str, slurm_conf=None,
                         timeout: float = DEFAULT_TIMEOUT, max_probes: int = 200,
                         now: float | None = None) -> dict | None:
    """Create the earliest reservation of ``node_count`` nodes for
    ``wall_time`` seconds that starts at or after ``not_before`` (and now)
    and ends by ``deadline``; return it (as :func:`create_reservation`), or
    None when no candidate start fits.

    Slurm has no deadline-constrained reservation, so this probes candidate
    starts in increasing order with real ``scontrol create reservation``
    attempts (a few ms each): max(now, not_before), then every existing
    reservation's EndTime and every running job's EndTime in the partition
    that is later.  The earliest feasible start is always one of these,
    because capacity only grows when a reservation or job ends.  Failures
    other than "not enough nodes" (e.g. slurmctld down) are raised.
    """
    wall = _epoch(wall_time)
    if wall <= 0:
        raise ValueError("wall_time must be > 0")
    # "now" rounds down: a start a fraction of a second in the past is accepted
    # and makes the reservation ACTIVE at once.
    t0 = max(_epoch_floor(time.time() if now is None else now), _epoch(not_before))
    limit = _epoch_floor(deadline)
    if t0 + wall > limit:
        return None
    reservations = await list_reservations(slurm_conf=slurm_conf, timeout=timeout)
    ends = [r["end"] for r in reservations if r["end"] is not None]
    ends += await _running_job_ends(partition, slurm_conf=slurm_conf, timeout=timeout)
    candidates = sorted({t0, *(e for e in ends if e > t0)})
    probes = 0
    for start in candidates:
        if start + wall > limit or probes >= max_probes:
            break
        probes += 1
        try:
            return await create_reservation(name, partition, node_count, start,
                                            start + wall, user,
                                            slurm_conf=slurm_conf, timeout=timeout)
        except SlurmInsufficientNodes:
            continue
    return None
