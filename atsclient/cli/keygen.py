"""``atsclient keygen``: a CURVE key pair for this client."""

from __future__ import annotations

import getpass
from pathlib import Path

from ..security import CONFIG_DIR, write_keypair
from . import UsageError


def register(sub, common) -> None:
    p = sub.add_parser(
        "keygen", help="Write a CURVE key pair",
        description="Write NAME.key (public: the lab admin puts it in the daemon's "
        "authorized_keys directory, where its file name becomes your user name) and "
        "NAME.key_secret (mode 0600, yours alone). In ~/.config/atsclient with your login "
        "name, it is found without options.")
    p.add_argument("dir", nargs="?", type=Path, default=CONFIG_DIR.expanduser(),
                   help=f"where to write (default {CONFIG_DIR})")
    p.add_argument("--name", default=getpass.getuser(),
                   help="file name and user name (default: your login name)")
    p.set_defaults(func=keygen)


def keygen(args) -> int:
    try:
        public, secret = write_keypair(args.dir, args.name)
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    print(f"public key (give to the lab admin): {public}\nsecret key (keep): {secret}")
    return 0
