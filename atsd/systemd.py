"""systemd's notify protocol (``Type=notify``), spoken directly: one datagram per message to
``$NOTIFY_SOCKET``, no library needed.

``READY=1`` goes once the sockets are bound and what fell due while the daemon was down is
done, so units ordered after atsd find it answering. When the unit sets ``WatchdogSec``,
``WATCHDOG=1`` is sent from the event loop at half that interval: a loop that is stuck
sends none, and systemd restarts the daemon. Each ping carries ``STATUS=``, the one line
``systemctl status`` shows. Without ``NOTIFY_SOCKET`` (not under systemd) all of it is off
and the loop is never woken for it.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Callable

from . import log as logmod

log = logmod.get("atsd.systemd")


def notify(message: str) -> bool:
    """Send one notify message; False when there is no socket to send it to."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):            # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), address)
    except OSError as exc:     # systemd gone or the socket wrong: keep serving, say so
        log.warning("notify_failed", socket=address, error=str(exc))
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between pings: half of ``WATCHDOG_USEC``, when it is meant for this
    process (``WATCHDOG_PID``, when set, names it)."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


class Notifier:
    """READY, then watchdog pings with the status line, then STOPPING."""

    def __init__(self, status: Callable[[], str]) -> None:
        self.status = status
        self.interval = watchdog_interval()
        self._timer: asyncio.TimerHandle | None = None

    def ready(self) -> None:
        if notify(f"READY=1\nSTATUS={self.status()}") and self.interval \
                and self._timer is None:
            self._ping()

    def reloading(self) -> None:
        notify("RELOADING=1")

    def _ping(self) -> None:
        notify(f"WATCHDOG=1\nSTATUS={self.status()}")
        self._timer = asyncio.get_running_loop().call_later(self.interval, self._ping)

    def stopping(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        notify("STOPPING=1")
