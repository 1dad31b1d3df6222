"""Who is asking: CURVE keys and user names.

With ``security.curve`` in the config, the ROUTER and the PUB are CURVE servers. A client
must know the daemon's public key and hold a key pair whose public half is on file in the
``authorized_keys`` directory as ``<user>.key`` (a zmq.auth certificate, as ``atsd keygen``
writes it): the file's name is the user's name, and the user has the admin role when that
name is in ``security.admins``. pyzmq's AsyncioAuthenticator answers libzmq's ZAP requests
with our credentials provider, so a client whose key is not on file fails the handshake and
nothing it sends ever reaches the loop; a known one gets its public key (Z85) as the ZAP
User-Id, which libzmq stamps on each of its messages. ZAP runs only at the handshake, so each
request's key is looked up again in the keys on file: the directory is read again at each
handshake and at a config reload, and adding a file takes effect from the next connection,
while deleting or replacing one also refuses the requests of connections already open with
the old key from then on.

Without CURVE (the loopback development default) the client names itself in each request.
"""

from __future__ import annotations

from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.asyncio import AsyncioAuthenticator

from atsclient.security import KEY_NAME

from . import log as logmod
from .config import Config
from .engine.errors import Forbidden

DOMAIN = "atsd"

log = logmod.get("atsd.security")


def authorized_keys(directory: Path) -> dict[bytes, str]:
    """Z85 public key -> user name, from ``<user>.key`` files. A file that cannot be read,
    or a key already on file under another name, is left out (and logged): one key, one
    user."""
    users: dict[bytes, str] = {}
    for path in sorted(directory.glob("*.key")):
        user = path.stem
        try:
            key, _ = zmq.auth.load_certificate(path)
        except (OSError, ValueError) as exc:
            log.warning("authorized_key_unreadable", file=str(path), error=str(exc))
            continue
        if not KEY_NAME.match(user) or len(key) != 40:
            log.warning("authorized_key_ignored", file=str(path),
                        reason="bad user name" if len(key) == 40 else "bad key")
        elif key in users:
            log.warning("authorized_key_ignored", file=str(path),
                        reason=f"same key as {users[key]}.key")
        else:
            users[key] = user
    return users


class _Provider:
    """zmq.auth's credentials provider: a key is accepted when it is on file now."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.refresh()

    def refresh(self) -> None:
        self.users: dict[bytes, str] = authorized_keys(self.directory)

    def callback(self, domain: str, key: bytes) -> bool:
        self.refresh()
        if key not in self.users:
            log.warning("unknown_key", key=key.decode("ascii", "replace"))
        return key in self.users


class Security:
    """The daemon's identity rules; a no-op when CURVE is off."""

    def __init__(self, config: Config, context: zmq.Context) -> None:
        self.curve = config.curve_secret_key is not None
        self.context = context
        self.auth: AsyncioAuthenticator | None = None
        if self.curve:
            _, self.secret_key = zmq.auth.load_certificate(config.curve_secret_key)
            self.provider = _Provider(config.curve_authorized_keys)

    def apply(self, *sockets: zmq.Socket) -> None:
        """Make the sockets CURVE servers; call before ``bind``. ZAP_ENFORCE_DOMAIN makes a
        handshake fail while the authenticator is not running yet (libzmq would otherwise
        let every client in), and the client's reconnect then gets through."""
        if not self.curve:
            return
        for sock in sockets:
            sock.curve_server = True
            sock.curve_secretkey = self.secret_key
            sock.zap_domain = DOMAIN.encode()
            sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)

    def start(self) -> None:
        """Answer handshakes; needs the running event loop."""
        if self.curve:
            self.auth = AsyncioAuthenticator(self.context)
            self.auth.start()
            self.auth.configure_curve_callback(DOMAIN, credentials_provider=self.provider)
            log.info("curve_on", authorized=len(authorized_keys(self.provider.directory)))

    def stop(self) -> None:
        if self.auth is not None:
            self.auth.stop()
            self.auth = None

    def key(self, user: str) -> str | None:
        """The public key (Z85) the user is on file with, for the audit trail; None
        without CURVE. It is the key the user's requests come with: a request with any
        other key is refused (``user``)."""
        if not self.curve:
            return None
        return next((k.decode() for k, u in self.provider.users.items() if u == user), None)

    def reload(self, config: Config) -> None:
        """A config reload: the authorized keys as they are on file now, from wherever the
        new config says. (The secret key is a socket option: that takes a restart.)"""
        if self.curve:
            self.provider.directory = config.curve_authorized_keys
            self.provider.refresh()

    def user(self, frame: zmq.Frame, declared: str | None) -> str:
        """With CURVE the user the connection's key is on file for now (the request's
        ``user`` is ignored): a connection opened with a key that was removed or replaced
        since is refused from the next reload or handshake on. Without CURVE, whoever the
        client says it is."""
        if not self.curve:
            return declared or "anonymous"
        key = frame.get("User-Id")
        user = self.provider.users.get(key.encode())
        if user is None:
            raise Forbidden(f"the key of this connection ({key}) is no longer authorized: "
                            "it was removed or replaced in authorized_keys; connect again "
                            "with a key on file")
        return user
