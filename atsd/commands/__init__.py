"""The command table: every wire command is one function, registered here with its argument
schema. A command's docstring is its protocol documentation and the CLI's help for it.

A command function takes a ``Call`` (who asks, when, and the daemon's state) and its
validated arguments, and returns the reply's result keys, or a coroutine that does (for
commands that wait: a checkout with ``wait_s``, a Slurm call). It raises an ``EngineError``
to refuse; protocol.py turns that into the error reply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..engine.lab import Caller
from ..protocol import Arg


@dataclass(slots=True)
class Call:
    app: Any            # atsd.app.App
    caller: Caller
    now: float
    request_id: str | None = None   # the client's id for this request, if it sent one


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    func: Callable[..., Any]
    args: dict[str, Arg]
    mutating: bool      # changes state: its reply is committed before it is sent
    admin: bool         # only the admin role may call it
    cached: bool        # its reply is kept under request_id, for a retry to get it again

    @property
    def doc(self) -> str:
        return (self.func.__doc__ or "").strip()


COMMANDS: dict[str, Command] = {}


def command(name: str, *, mutating: bool = False, admin: bool = False,
            cached: bool | None = None, **args: Arg):
    """Register a command. Mutating commands are ``cached`` unless they say otherwise (one
    whose request_id names another request, and that may be repeated at no harm)."""
    def register(func):
        if name in COMMANDS:
            raise RuntimeError(f"command {name} registered twice")
        COMMANDS[name] = Command(name, func, args, mutating, admin,
                                 mutating if cached is None else cached)
        return func
    return register


def load_all() -> dict[str, Command]:
    """Import every command module, which fills the table."""
    from . import audit, batch, calendar, info, pool, revocation, selection  # noqa: F401
    return COMMANDS
