"""The daemon's state in one object: the configured lab and the feature engines over it.
Commands reach the state through it; the server owns it, and keeps the clock, the sockets and
the backends out of it (commands get those in ``Call.io``)."""

from __future__ import annotations

from datetime import tzinfo
from zoneinfo import ZoneInfo

from .config import Config
from .engine.batch import Batch
from .engine.calendar import Calendar
from .engine.errors import EngineError
from .engine.lab import Caller, Lab
from .engine.pool import Pool
from .engine.revocation import Revocations
from .engine.selection import Selection
from .engine.series import Series
from .engine.service import Service
from .eventlog import EventLog


UNSAVED = "state could not be saved while this request ran; nothing was changed"


class App:
    def __init__(self, config: Config, events: EventLog) -> None:
        self.config = config
        self.events = events
        self.lab = Lab(config.resources, claim_window_s=config.claim_window_s,
                       expiring_notice_s=config.expiring_notice_s, history_s=config.history_s,
                       quotas=config.quotas)
        self.calendar = Calendar(self.lab)
        self.pool = Pool(self.lab, config.pool_properties)
        self.revocations = Revocations(self.lab, config.countdown_interval_s)
        queues = config.queues.values()
        self.batch = Batch(self.lab, {q.name: q.hosts for q in queues if q.backend == "local"},
                           {q.name for q in queues if q.backend != "local"})
        self.selection = Selection(self.lab, self.calendar)
        self.service = Service(self.lab, self.revocations)
        self.series = Series(self.lab, self.calendar, self.selection, _zone(config.timezone),
                             config.series_max_occurrences, config.series_horizon_s)
        # how many times a failed commit put the state back: a request that waited across
        # one must not act on, or answer from, what it saw before
        self.generation = 0

    def caller(self, user: str) -> Caller:
        return Caller(user, admin=user in self.config.admins)

    def revert(self, stored: list[tuple[str, str, dict | None]], now: float) -> None:
        """Undo a group whose commit failed: ``stored`` is what the store still has for each
        record the group changed. Waiting checkouts are answered ``internal`` (what they
        waited on may be gone). The records' timers are set again: what fell due meanwhile
        happens again at the next ``advance``."""
        self.lab.revert(stored, now)
        self.selection.forget_waiting()
        self.pool.drop_waiters(EngineError(UNSAVED))
        self.generation += 1


def _zone(name: str | None) -> tzinfo:
    """The zone recurrences follow: the configured one, else the machine's."""
    if name is None:
        from dateutil.tz import tzlocal
        return tzlocal()
    return ZoneInfo(name)
