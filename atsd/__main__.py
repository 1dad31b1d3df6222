"""``atsd``: run the daemon, or check a config file without starting it."""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import sys
from pathlib import Path

from . import __version__
from . import config as configmod
from . import log as logmod
from .engine.lab import InventoryMismatch
from .store import StoreError


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="atsd", description="Lab resource reservation daemon. "
        "Other forms: 'atsd check-config FILE', 'atsd keygen DIR [--name NAME]', "
        "'atsd backup FILE', 'atsd restore FILE', 'atsd migrate [--dry-run]'.")
    p.add_argument("--config", "-c", required=True, type=Path, help="YAML config file")
    p.add_argument("--listen", help="command endpoint (ROUTER), e.g. tcp://127.0.0.1:5555; "
                   "port * picks a free one")
    p.add_argument("--events", help="event endpoint (PUB), e.g. tcp://127.0.0.1:5556")
    p.add_argument("--state", help="SQLite state file, or a PostgreSQL URL (docs/ha.md)")
    p.add_argument("--endpoints-file", type=Path,
                   help="write the bound endpoints here as JSON once listening")
    p.add_argument("--log-format", choices=("console", "json"), default="console")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    p.add_argument("--version", action="version", version=f"atsd {__version__}")
    return p


def check_config(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="atsd check-config",
                                description="Validate a config file without starting.")
    p.add_argument("file", type=Path)
    p.add_argument("--as-user", metavar="USER", help="also check that USER (the unit's User=) "
                   "can read and write every path the daemon uses; for another user than "
                   "yourself, run it as root")
    args = p.parse_args(argv)
    try:
        cfg = configmod.load(args.file)
    except configmod.ConfigError as exc:
        print(f"atsd: {exc}", file=sys.stderr)
        return 2
    if args.as_user is not None:
        from .access import problems
        found = problems(cfg, args.as_user)
        for problem in found:
            print(f"atsd: {problem}", file=sys.stderr)
        if found:
            return 2
    print(f"{args.file}: ok ({len(cfg.resources)} resources, {len(cfg.queues)} queues"
          + (f"; every path usable by {args.as_user})" if args.as_user else ")"))
    return 0


def keygen(argv: list[str]) -> int:
    from atsclient.security import write_keypair
    p = argparse.ArgumentParser(
        prog="atsd keygen", description="Write a CURVE key pair: NAME.key (public: give it "
        "to clients, or put a client's in authorized_keys as USER.key) and NAME.key_secret "
        "(mode 0600: security.curve.secret_key for the daemon).")
    p.add_argument("dir", type=Path)
    p.add_argument("--name", default="server", help="file name, and user name for a "
                   "client key (default: server)")
    p.add_argument("--owner", metavar="USER", help="give the files (and DIR, when this "
                   "creates it) to USER, the daemon's user (the unit's User=); needs root")
    args = p.parse_args(argv)
    try:
        owner = pwd.getpwnam(args.owner) if args.owner else None
    except KeyError:
        print(f"atsd: --owner: no Unix user named {args.owner!r}", file=sys.stderr)
        return 2
    created = not args.dir.exists()
    try:
        public, secret = write_keypair(args.dir, args.name)
        if owner is not None:
            for path in [args.dir] * created + [public, secret]:
                os.chown(path, owner.pw_uid, owner.pw_gid)
    except (OSError, ValueError) as exc:
        print(f"atsd: {exc}", file=sys.stderr)
        return 1
    print(f"{public}\n{secret}")
    return 0


def _state_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"atsd {prog}", description=description)
    p.add_argument("--config", "-c", required=True, type=Path, help="the daemon's config file")
    p.add_argument("--state", type=Path, help="its state file, if not the config's")
    return p


def _state_path(args) -> Path:
    if args.state is not None:
        return args.state.resolve()
    state = configmod.load(args.config).state
    if isinstance(state, str):
        raise configmod.ConfigError(args.config, "state", "is a PostgreSQL database: back it "
                                    "up with pg_dump; atsd migrates it when it takes the lead")
    return state


def state_command(name: str, argv: list[str]) -> int:
    """backup, restore and migrate: the state file's upkeep (atsd/maintenance.py)."""
    from . import maintenance
    if name == "backup":
        p = _state_parser(name, "Copy the state file consistently, also while atsd runs.")
        p.add_argument("file", type=Path, help="the backup to write (a new file)")
    elif name == "restore":
        p = _state_parser(name, "Make a backup the state file again; atsd must be stopped.")
        p.add_argument("file", type=Path, help="a file 'atsd backup' wrote")
    else:
        p = _state_parser(name, "Bring the state file up to this atsd's format (atsd also "
                          "does it when it starts); atsd must be stopped.")
        p.add_argument("--dry-run", action="store_true", help="only say what would change")
    args = p.parse_args(argv)
    try:
        state = _state_path(args)
        if name == "backup":
            done = maintenance.backup(state, args.file)
            print(f"{args.file}: {done['records']} records, events up to seq {done['last_seq']}")
        elif name == "restore":
            done = maintenance.restore(args.file, state)
            print(f"{state}: restored from {args.file}: {done['records']} records, "
                  f"next event seq {done['last_seq'] + 1}")
        else:
            plan = maintenance.migrate_plan(state)
            for step in plan:
                print(f"{state}: {'would do' if args.dry_run else 'doing'}: {step}")
            if not plan:
                print(f"{state}: up to date, nothing to do")
            elif not args.dry_run:
                maintenance.migrate(state)
    except (configmod.ConfigError, StoreError) as exc:
        print(f"atsd: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"atsd: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["check-config"]:
        return check_config(argv[1:])
    if argv[:1] == ["keygen"]:
        return keygen(argv[1:])
    if argv[:1] in (["backup"], ["restore"], ["migrate"]):
        return state_command(argv[0], argv[1:])
    args = _run_parser().parse_args(argv)
    logmod.configure(args.log_format, args.log_level)
    log = logmod.get("atsd")

    def load_config() -> configmod.Config:
        cfg = configmod.load(args.config, {"listen": args.listen, "events": args.events,
                                           "state": args.state})
        configmod.resolve_job_user(cfg)
        return cfg
    try:
        cfg = load_config()
    except configmod.ConfigError as exc:
        print(f"atsd: {exc}", file=sys.stderr)
        return 2
    from .server import Server
    try:
        server = Server(cfg, args.endpoints_file, load_config)
        server.bind()
    except (StoreError, InventoryMismatch) as exc:
        print(f"atsd: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bind failure: address in use, bad endpoint
        print(f"atsd: cannot start: {exc}", file=sys.stderr)
        return 1
    try:
        asyncio.run(server.run())
    except Exception:
        log.exception("crashed")
        return 1
    if server.failure is not None:
        print(f"atsd: {server.failure}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
