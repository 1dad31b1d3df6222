"""CURVE keys on the client side: where they come from and how a socket uses them.

A daemon with CURVE on accepts only clients whose public key it has on file, and names the
user after that file; a client then needs the daemon's public key and its own key pair.
Keys are zmq.auth certificate files (``NAME.key`` public, ``NAME.key_secret`` both halves,
as ``write_keypair`` writes them) or the 40-character Z85 text of a key. The public half is
derived from the secret one when not given, so a secret certificate alone is enough.
"""

from __future__ import annotations

import getpass
import os
import re
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

CONFIG_DIR = Path("~/.config/atsclient")
KEY_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")   # a user name, and a file name


@dataclass(frozen=True, slots=True)
class CurveKeys:
    server: bytes       # the daemon's public key, Z85
    public: bytes
    secret: bytes

    def apply(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE client of the daemon; call before ``connect``."""
        sock.curve_serverkey = self.server
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret


def _key(value, want_secret: bool) -> bytes:
    """A Z85 key from its text or from a certificate file."""
    if isinstance(value, bytes):
        value = value.decode("ascii")
    text = os.fspath(value)
    path = Path(text).expanduser()
    if path.is_file():
        public, secret = zmq.auth.load_certificate(path)
        if want_secret and secret is None:
            raise ValueError(f"{path} holds no secret key (use the .key_secret file)")
        return secret if want_secret else public
    if len(text) == 40:
        return text.encode("ascii")
    raise ValueError(f"{text!r} is neither a key file nor a 40-character Z85 key")


def curve_keys(server_public_key=None, public_key=None, secret_key=None) -> CurveKeys | None:
    """The CURVE keys a client was given, or None when CURVE is off (no server key)."""
    if server_public_key is None:
        if public_key is not None or secret_key is not None:
            raise ValueError("a client key pair needs the server's public key too")
        return None
    if secret_key is None:
        raise ValueError("CURVE needs the client's secret key (its .key_secret file)")
    secret = _key(secret_key, want_secret=True)
    derived = zmq.curve_public(secret)
    public = derived if public_key is None else _key(public_key, want_secret=False)
    if public != derived:
        raise ValueError("public_key is not the public half of secret_key")
    return CurveKeys(_key(server_public_key, want_secret=False), public, secret)


def from_environment(server_key: str | None = None, key: str | None = None) -> dict:
    """The command line's keys, as ``ATSClient`` keyword arguments: each from its option,
    else the environment (``ATSCLIENT_SERVER_KEY``, ``ATSCLIENT_KEY``), else
    ``~/.config/atsclient/server.key`` and ``~/.config/atsclient/<login>.key_secret`` when
    those files exist. No server key anywhere means CURVE off."""
    home = CONFIG_DIR.expanduser()
    server_key = server_key or os.environ.get("ATSCLIENT_SERVER_KEY")
    if server_key is None and (home / "server.key").is_file():
        server_key = home / "server.key"
    given = key or os.environ.get("ATSCLIENT_KEY")
    if server_key is None and given is None:
        return {}          # a key pair of our own lying in ~/.config alone is not CURVE on
    key = given
    if key is None and (home / f"{getpass.getuser()}.key_secret").is_file():
        key = home / f"{getpass.getuser()}.key_secret"
    return {"server_public_key": server_key, "secret_key": key}


def write_keypair(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` (public, to hand out) and ``NAME.key_secret`` (mode 0600) in
    zmq.auth's certificate format. Never overwrites: a lost key is better noticed than
    silently replaced."""
    if not KEY_NAME.match(name):
        raise ValueError(f"{name!r} is not a usable key name (letters, digits, _ . -)")
    directory = Path(directory).expanduser()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    for path in (public, secret):
        if path.exists():
            raise FileExistsError(f"{path} exists; not overwriting a key")
    old = os.umask(0o077)     # the secret file is never readable by others, not even briefly
    try:
        zmq.auth.create_certificates(directory, name)
    finally:
        os.umask(old)
    public.chmod(0o644)
    return public, secret
