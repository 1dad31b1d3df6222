"""Can the daemon's user use every path the daemon will read or write? (``atsd check-config
--as-user``). A unit that starts as ``User=atsd`` and finds its secret key root-only, or its
state directory not its own, fails over and over under ``Restart=``; this says so before,
naming each path and what is missing.

The check asks the kernel, not the mode bits: run by that user, ``os.access`` follows ACLs,
groups and every directory on the way. For another user than the caller it forks a child
that becomes that user (which needs root) and asks there.
"""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

from .config import Config

READ, WRITE, LIST = "read", "write", "list"     # list: a directory's names and files
MODES = {READ: os.R_OK, WRITE: os.W_OK | os.X_OK, LIST: os.R_OK | os.X_OK}


def needed(cfg: Config) -> list[tuple[str, Path, tuple[str, ...]]]:
    """(config key, path, how it is used) for each path the daemon touches."""
    paths = [("(file)", cfg.path, (READ,)), ("jobs.output_dir", cfg.job_output_dir, (WRITE,))]
    if isinstance(cfg.state, Path):     # not a PostgreSQL URL
        paths += [("state", cfg.state, (READ, WRITE) if cfg.state.exists() else (WRITE,)),
                  ("state", cfg.state.parent, (WRITE,))]      # its WAL, shared memory, lock
    if cfg.resource_spec is not None:
        paths.append(("resource_spec", cfg.resource_spec, (READ,)))
    paths += [(f"jobs.allowed_dirs[{i}]", d, (LIST,)) for i, d in enumerate(cfg.job_dirs)]
    if cfg.curve_secret_key is not None:
        paths += [("security.curve.secret_key", cfg.curve_secret_key, (READ,)),
                  ("security.curve.authorized_keys", cfg.curve_authorized_keys, (LIST,))]
    return paths


def _problem(path: Path, use: tuple[str, ...]) -> str | None:
    """What stops the current process from using ``path``; None when nothing does."""
    target = path
    if WRITE in use and _state(path) == "missing":     # created when needed: in its parent
        target = next(p for p in path.parents if _state(p) != "missing")
        use = (WRITE,)
    state = _state(target)
    if state != "there":
        return state
    for mode_name in use:
        if not os.access(target, MODES[mode_name]):
            where = "" if target == path else f" (it would be created in {target})"
            return f"cannot {mode_name}{where}"
    return None


def _state(path: Path) -> str:
    try:
        path.stat()
    except FileNotFoundError:
        return "missing"
    except PermissionError:
        closed = next((d for d in reversed(path.parents) if not os.access(d, os.X_OK)),
                      path.parent)
        return f"cannot enter {closed}"
    except OSError as exc:
        return f"cannot reach it ({exc.strerror})"
    return "there"


def problems(cfg: Config, user: str) -> list[str]:
    """One line per path ``user`` cannot use as the daemon needs to."""
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        return [f"no Unix user named {user!r}"]
    checks = needed(cfg)
    if account.pw_uid == os.geteuid():
        found = [_problem(path, use) for _, path, use in checks]
    elif os.geteuid() == 0:
        found = _as_user(account, checks)
    else:
        return [f"checking as {user} needs root or {user} (this is "
                f"{pwd.getpwuid(os.geteuid()).pw_name})"]
    return [f"{cfg.path}: {key}: {path}: {user} {why}"
            for (key, path, _), why in zip(checks, found, strict=True) if why]


def _as_user(account: pwd.struct_passwd, checks) -> list[str | None]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:       # the child: become the user, ask, report, and leave at once
        try:
            os.close(read)
            os.initgroups(account.pw_name, account.pw_gid)
            os.setgid(account.pw_gid)
            os.setuid(account.pw_uid)
            answer = [_problem(path, use) for _, path, use in checks]
            os.write(write, json.dumps(answer).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data) if data else ["could not be checked (the check as this user "
                                          "failed)"] * len(checks)
