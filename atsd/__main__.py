"""``atsd``: run the daemon, or check a config file without starting it."""

from __future__ import annotations

import argparse
import asyncio
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
        "Other forms: 'atsd check-config FILE', 'atsd keygen DIR [--name NAME]'.")
    p.add_argument("--config", "-c", required=True, type=Path, help="YAML config file")
    p.add_argument("--listen", help="command endpoint (ROUTER), e.g. tcp://127.0.0.1:5555; "
                   "port * picks a free one")
    p.add_argument("--events", help="event endpoint (PUB), e.g. tcp://127.0.0.1:5556")
    p.add_argument("--state", help="SQLite state file")
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
    args = p.parse_args(argv)
    try:
        cfg = configmod.load(args.file)
    except configmod.ConfigError as exc:
        print(f"atsd: {exc}", file=sys.stderr)
        return 2
    print(f"{args.file}: ok ({len(cfg.resources)} resources, {len(cfg.queues)} queues)")
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
    args = p.parse_args(argv)
    try:
        public, secret = write_keypair(args.dir, args.name)
    except (OSError, ValueError) as exc:
        print(f"atsd: {exc}", file=sys.stderr)
        return 1
    print(f"{public}\n{secret}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["check-config"]:
        return check_config(argv[1:])
    if argv[:1] == ["keygen"]:
        return keygen(argv[1:])
    args = _run_parser().parse_args(argv)
    logmod.configure(args.log_format, args.log_level)
    log = logmod.get("atsd")
    try:
        cfg = configmod.load(args.config, {"listen": args.listen, "events": args.events,
                                           "state": args.state})
        configmod.resolve_job_user(cfg)
    except configmod.ConfigError as exc:
        print(f"atsd: {exc}", file=sys.stderr)
        return 2
    from .server import Server
    try:
        server = Server(cfg, args.endpoints_file)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
