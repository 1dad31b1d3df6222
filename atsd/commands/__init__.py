"""The command table: every wire command is one function, registered here with its argument
schema. A command's docstring is its protocol documentation; its first line, a summary, is
also the help of the ``atsclient`` subcommand that sends it (atsclient/cli/summaries.py,
written from this table: the client does not import the daemon).

Each command also declares its reply's keys (``replies``) and the error codes it may answer
(``errors``): docs/protocol.md is generated from this table (``python -m atsd.protocol_doc``),
and the tests' daemons run with ``ATSD_CHECK_REPLIES=1``, which fails (``internal``) any reply
carrying a key its command does not declare, or a refusal with a code it does not declare.

A command function takes a ``Call`` (who asks, when, the daemon's state, and ``io``: what
lies outside the engine) and its validated arguments, and returns the reply's result keys,
or a coroutine that does (for commands that wait: a checkout with ``wait_s``, a Slurm
call). It raises an ``EngineError`` to refuse; protocol.py turns that into the error reply.
"""

from __future__ import annotations

import functools
import inspect
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from ..app import UNSAVED
from ..engine.errors import EngineError, Forbidden
from ..engine.lab import Caller
from ..protocol import Arg


@dataclass(frozen=True, slots=True)
class DaemonIO:
    """What a command may use beyond the engine's state, handed in by the server so that
    nothing doing I/O hangs off App: the clock (for the time after an await; ``Call.now``
    is from before it), the batch backends, the audit trail, the daemon's own stats, its
    config reload, and whether it serves (its role)."""
    clock: Callable[[], float]
    backends: dict[str, Any]            # queue name -> where its jobs run
    audit: Any                          # atsd.audit.AuditTrail
    stats: Callable[[], dict]           # get_stats' reply
    reload: Callable[[], Any]           # apply the config file again: (awaited) what changed
    role: str = "leader"                # or "standby" (atsd/leader.py)

    def external_backend(self, queue: str):
        """The backend of a queue whose scheduler grants reservations itself (Slurm)."""
        backend = self.backends.get(queue)
        return backend if backend is not None and backend.external else None


@dataclass(slots=True)
class Call:
    app: Any            # atsd.app.App
    caller: Caller
    now: float
    io: DaemonIO
    waiting: int = 0    # the caller's requests waiting for their answer, on any connection
    request_id: str | None = None   # the client's id for this request, if it sent one
    generation: int = field(init=False)

    def __post_init__(self) -> None:
        self.generation = self.app.generation

    def check_may_wait(self) -> None:
        """Refuse (forbidden) a request that would wait while the caller has as many
        waiting as one user may."""
        limit = self.app.config.quotas.max_waiting_per_user
        if self.waiting >= limit:
            raise Forbidden(f"{self.caller.user} has {self.waiting} requests waiting, the most "
                            f"one user may (limits.max_waiting_per_user = {limit})")

    def check_current(self) -> None:
        """After an await: refuse to act on a state that a failed commit has put back since
        (what the request saw before may be gone)."""
        if self.app.generation != self.generation:
            raise EngineError(UNSAVED)


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    func: Callable[..., Any]
    args: dict[str, Arg]
    mutating: bool      # changes state: its reply is committed before it is sent
    admin: bool         # only the admin role may call it
    cached: bool        # its reply is kept under request_id, for a retry to get it again
    replies: tuple[str, ...] = ()   # the keys of its reply (besides ok and request_id)
    errors: tuple[str, ...] = ()    # the error codes its own refusals carry

    @property
    def doc(self) -> str:
        return (self.func.__doc__ or "").strip()


COMMANDS: dict[str, Command] = {}

# codes any command may answer, from the server before the command runs or from a failure
# of the daemon's own: not declared per command
EVERY_COMMAND_ERRORS = ("bad_request", "unauthenticated", "overloaded", "internal")


def command(name: str, *, mutating: bool = False, admin: bool = False,
            replies: tuple[str, ...] = (), errors: tuple[str, ...] = (),
            cached: bool | None = None, **args: Arg):
    """Register a command. Mutating commands are ``cached`` unless they say otherwise (one
    whose request_id names another request, and that may be repeated at no harm)."""
    def register(func):
        if name in COMMANDS:
            raise RuntimeError(f"command {name} registered twice")
        run = (_checked(name, func, replies, errors) if os.environ.get("ATSD_CHECK_REPLIES")
               else func)
        COMMANDS[name] = Command(name, run, args, mutating, admin,
                                 mutating if cached is None else cached, tuple(replies),
                                 tuple(errors))
        return func
    return register


def _checked(name: str, func, replies: tuple[str, ...], errors: tuple[str, ...]):
    """``func`` failing any reply with a key it does not declare, and any refusal with a code
    it does not declare (ATSD_CHECK_REPLIES=1)."""
    allowed = set(errors) | set(EVERY_COMMAND_ERRORS)

    def check(result):
        extra = set(result) - set(replies)
        if extra:
            raise RuntimeError(f"{name} replied with undeclared keys {sorted(extra)}")
        return result

    def refused(exc: EngineError):
        if exc.code not in allowed:
            raise RuntimeError(f"{name} refused with undeclared code {exc.code}: "
                               f"{exc.message}") from exc
        raise exc

    async def later(coro):
        try:
            result = await coro
        except EngineError as exc:
            refused(exc)
        return check(result)

    @functools.wraps(func)
    def run(*a, **kw):
        try:
            result = func(*a, **kw)
        except EngineError as exc:
            refused(exc)
        return later(result) if inspect.iscoroutine(result) else check(result)
    return run


def load_all() -> dict[str, Command]:
    """Import every command module, which fills the table."""
    from . import (audit, batch, calendar, info, operations, pool, revocation,  # noqa: F401
                   selection)
    return COMMANDS
