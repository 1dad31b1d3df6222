"""The daemon's state in one object: the configured lab and the feature engines over it.
Commands reach everything through it; the server owns it, the clock and the sockets."""

from __future__ import annotations

from .config import Config
from .engine.calendar import Calendar
from .engine.lab import Caller, Lab, Reservation
from .eventlog import EventLog


class App:
    def __init__(self, config: Config, events: EventLog) -> None:
        self.config = config
        self.events = events
        self.lab = Lab(config.resources, claim_window_s=config.claim_window_s,
                       expiring_notice_s=config.expiring_notice_s, history_s=config.history_s)
        self.calendar = Calendar(self.lab)

    def caller(self, user: str) -> Caller:
        return Caller(user, admin=user in self.config.admins)

    def maintenance(self, caller: Caller, names: list[str], start: float, duration: float,
                    now: float) -> Reservation:
        """An admin's exclusive window, booked as a maintenance reservation."""
        return self.calendar.request(caller, names, start, duration, None, "exclusive", False,
                                     None, now, kind="maintenance")
