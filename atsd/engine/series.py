"""Standing reservations: one request that books every occurrence of an RFC 5545 RRULE
(``FREQ=WEEKLY;BYDAY=MO,WE;COUNT=10``), each occurrence a confirmed reservation of its own
that starts by itself, all under one ``series_id``.

The rule is expanded by python-dateutil's ``rrule`` from the requested start, as wall-clock
time in the daemon's time zone: "every Monday 09:00" stays 09:00 across a DST change. The
expansion is bounded twice: at most ``max_occurrences``, none later than ``horizon_s`` from
now. A rule that ends (COUNT or UNTIL) past either bound is refused; an open rule ("every
Monday") books what falls within the horizon and its reply says where that is
(``booked_until``), so nothing is cut off unseen. Only rule parts that
cannot make dateutil scan for centuries are accepted (see ``ALLOWED``): a rule that can never
match, like ``FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30``, would otherwise keep the daemon busy for
seconds while it looks until the year 9999.

All or nothing by default: when any occurrence does not fit (its resources busy, not enough
matches for a selector) nothing is booked and the conflicting occurrences are listed. With
``partial`` the free ones are booked and the conflicts listed beside them. Occurrences of one
series may not overlap each other (the rule would book the same resource twice).
"""

from __future__ import annotations

import calendar as gregorian
import re
from datetime import datetime, tzinfo
from itertools import pairwise

from dateutil.rrule import rrulestr

from . import states
from .calendar import Calendar
from .errors import BadRequest, Conflict, NotFound, Unavailable
from .lab import Caller, Lab, Reservation, new_id, settles
from .selection import Selection
from .timeline import Booking

FREQUENCIES = {"DAILY", "WEEKLY", "MONTHLY", "YEARLY"}
ALLOWED = {"FREQ", "INTERVAL", "COUNT", "UNTIL", "BYDAY", "BYMONTHDAY", "BYMONTH", "BYHOUR",
           "BYMINUTE", "BYSECOND", "WKST"}
MAX_RULE_LENGTH = 256
RULE_TEXT = re.compile(r"^(RRULE:)?[A-Za-z0-9=;,+-]+$")


class Series:
    def __init__(self, lab: Lab, calendar: Calendar, selection: Selection, tz: tzinfo,
                 max_occurrences: int, horizon_s: float) -> None:
        self.lab = lab
        self.calendar = calendar
        self.selection = selection
        self.tz = tz
        self.max_occurrences = max_occurrences
        self.horizon_s = horizon_s

    # --- expanding the rule ---

    def starts(self, rule: str, first: float, now: float) -> list[float]:
        """Occurrence start times of ``rule`` from ``first``, within the bounds."""
        parts = _parts(rule)
        open_rule = "COUNT" not in parts and "UNTIL" not in parts
        try:
            expansion = rrulestr(rule.removeprefix("RRULE:"),
                                 dtstart=datetime.fromtimestamp(first, self.tz))
        except (ValueError, TypeError) as exc:
            raise BadRequest(f"recurrence: {exc}") from None
        horizon = now + self.horizon_s
        out = []
        for dt in expansion:
            t = dt.timestamp()
            if t > horizon:
                if open_rule:
                    break
                raise BadRequest(f"recurrence reaches past the horizon of {self.horizon_s:g}s "
                                 f"from now; give COUNT or an earlier UNTIL")
            out.append(t)
            if len(out) > self.max_occurrences:
                within = " within the horizon" if open_rule else ""
                raise BadRequest(f"recurrence has more than {self.max_occurrences} "
                                 f"occurrences{within}; give COUNT or an earlier UNTIL")
        if not out:
            raise BadRequest("recurrence has no occurrence")
        return out

    # --- booking ---

    @settles
    def request(self, caller: Caller, names: list[str] | None, selector: str | None,
                count: int, first: float, duration: float, config: dict | None, mode: str,
                slots: int | None, rule: str, partial: bool, now: float) -> dict:
        starts = self.starts(rule, max(first, now), now)
        if names is not None:
            if not names:
                raise BadRequest("resources must name at least one resource")
            if len(set(names)) != len(names):
                raise BadRequest("a resource is named twice in resources")
            fixed = [(res, self.calendar._want(res, mode, slots, config, duration))
                     for res in map(self.lab.resource, names)]
        else:
            candidates = self.selection._candidates(selector, mode, slots, config, duration)
        plans, conflicts = [], []
        for t in starts:
            picks = fixed if names is not None else self.selection.fit_at(candidates, count, t)
            if picks is not None and self.calendar._fits_at(picks, t):
                plans.append((t, picks))
            else:
                conflicts.append({"start_time": t, "end_time": t + duration})
        for (a, pa), (b, _) in pairwise(plans):
            if a + self.calendar._window(pa, a) + duration > b:
                raise BadRequest("recurrence repeats more often than the reservation lasts: "
                                 "its occurrences would overlap")
        if conflicts and not partial:
            raise Unavailable(f"{len(conflicts)} of {len(starts)} occurrences do not fit; "
                              "nothing was booked (partial: true books the rest)",
                              conflicts=conflicts)
        if not plans:
            raise Unavailable("no occurrence fits", conflicts=conflicts)
        self.lab.check_quota(caller.user, duration, len(plans))    # each occurrence counts
        sid = new_id()
        occurrences = []
        for t, picks in plans:
            r = self._confirmed(caller, picks, t, mode, config, sid, selector, now)
            occurrences.append({"reservation_id": r.id, "start_time": r.start,
                                "end_time": r.end, "resources": r.resources})
        reply = {"series_id": sid, "occurrences": occurrences, "conflicts": conflicts}
        if "COUNT" not in _parts(rule) and "UNTIL" not in _parts(rule):
            reply["booked_until"] = now + self.horizon_s
        return reply

    def _confirmed(self, caller: Caller, picks, t: float, mode: str, config: dict | None,
                   sid: str, selector: str | None, now: float) -> Reservation:
        """A claimed reservation at ``t``: granted until its start, when it starts itself."""
        lead = self.calendar._window(picks, t)
        available = t + lead
        end = available + picks[0][1].duration
        rid = new_id()
        extra = {"series_id": sid}
        if selector is not None:
            extra["selector"] = selector
        r = Reservation(
            id=rid, kind="claimed", owner=caller.user,
            state=states.ACTIVE if available <= now else states.GRANTED, start=available,
            end=end, mode=mode, slots=picks[0][1].slots, config=config,
            bookings=[Booking(rid, res.name, t, end, w.slots, w.exclusive, w.config)
                      for res, w in picks],
            extra=extra)
        return self.lab.add(r, now)

    # --- ending ---

    @settles
    def release(self, caller: Caller, sid: str, now: float) -> list[str]:
        """End every occurrence of the series not yet ended; returns their ids."""
        members = [r for r in self.lab.reservations.values()
                   if r.extra.get("series_id") == sid]
        if not members:
            raise NotFound(f"no reservation or series {sid!r}")
        for r in members:
            self.lab.owned(r.id, caller)
        live = [r for r in members if r.state != states.ENDED]
        if not live:
            raise Conflict(f"every occurrence of series {sid} has ended")
        for r in live:
            self.lab.transition(r, "release", now)
        return [r.id for r in live]


def _parts(rule: str) -> set[str]:
    """The rule's part names, each checked against the allow-list and its value against its
    range (dateutil parses the rest). dateutil itself accepts ``BYMONTH=13`` or
    ``BYDAY=6MO`` and then scans to the year 9999 for a match, for up to half a minute."""
    values = _values(rule)
    if values.get("FREQ") not in FREQUENCIES:
        raise BadRequest(f"recurrence: FREQ must be one of {', '.join(sorted(FREQUENCIES))}")
    for name, (lo, hi, nonzero) in RANGES.items():
        for n in _numbers(values, name):
            if not (lo <= n <= hi and (n != 0 or not nonzero)):
                raise BadRequest(f"recurrence: {name} values must be from {lo} to {hi}"
                                 f"{' and not 0' if nonzero else ''}, not {n}")
    _check_byday(values)
    skipping = REJECTING[values["FREQ"]] & set(values)
    if _numbers(values, "INTERVAL") not in ([], [1]) and skipping:
        raise BadRequest(f"recurrence: INTERVAL with {', '.join(sorted(skipping))} on "
                         f"FREQ={values['FREQ']} is refused: such a rule can skip every period "
                         "and never match")
    if "BYMONTH" in values and "BYMONTHDAY" in values and not any(
            abs(d) <= gregorian.monthrange(2024, m)[1]
            for m in _numbers(values, "BYMONTH") for d in _numbers(values, "BYMONTHDAY")):
        raise BadRequest("recurrence: no month in BYMONTH has a day in BYMONTHDAY")
    return set(values)


def _values(rule: str) -> dict[str, str]:
    """``{part name: value text}``, names checked against the allow-list, each given once."""
    if len(rule) > MAX_RULE_LENGTH:
        raise BadRequest(f"recurrence is longer than {MAX_RULE_LENGTH} characters")
    if not RULE_TEXT.match(rule):
        raise BadRequest("recurrence must be one RRULE line like FREQ=WEEKLY;BYDAY=MO;COUNT=4 "
                         "(letters, digits and = ; , + - only)")
    values: dict[str, str] = {}
    for part in rule.removeprefix("RRULE:").upper().split(";"):
        name, sep, value = part.partition("=")
        if not sep or name not in ALLOWED:
            raise BadRequest(f"recurrence: {part!r} is not one of the rule parts accepted: "
                             f"{', '.join(sorted(ALLOWED))} (as NAME=VALUE, ';' between)")
        if name in values:
            raise BadRequest(f"recurrence: {name} is given twice")
        values[name] = value
    return values


# parts that drop whole periods of a frequency (the rest expand within a period): with an
# INTERVAL they can drop every period for ever (every 7th day that is a Tuesday)
REJECTING = {"DAILY": {"BYMONTH", "BYMONTHDAY", "BYDAY"}, "WEEKLY": {"BYMONTH", "BYMONTHDAY"},
             "MONTHLY": {"BYMONTH"}, "YEARLY": set()}
# part -> (lowest, highest, whether 0 is refused)
RANGES = {"COUNT": (1, 1_000_000, True), "INTERVAL": (1, 1000, True),
          "BYMONTH": (1, 12, True), "BYMONTHDAY": (-31, 31, True), "BYHOUR": (0, 23, False),
          "BYMINUTE": (0, 59, False), "BYSECOND": (0, 59, False)}
WEEKDAY = re.compile(r"^([+-]?\d{1,2})?(MO|TU|WE|TH|FR|SA|SU)$")


def _numbers(values: dict[str, str], name: str) -> list[int]:
    if name not in values:
        return []
    try:
        return [int(v) for v in values[name].split(",")]
    except ValueError:
        raise BadRequest(f"recurrence: {name} must be integers separated by ',', "
                         f"not {values[name]!r}") from None


def _check_byday(values: dict[str, str]) -> None:
    """Weekdays, with an ordinal (``-1SU``, ``2MO``) only where RFC 5545 gives it a meaning
    and only one that some month or year has."""
    if values.get("WKST", "MO") not in WEEKDAYS:
        raise BadRequest(f"recurrence: WKST must be one of {', '.join(WEEKDAYS)}")
    within_month = values["FREQ"] == "MONTHLY" or "BYMONTH" in values
    for day in values.get("BYDAY", "MO").split(","):
        m = WEEKDAY.match(day)
        if m is None:
            raise BadRequest(f"recurrence: BYDAY takes weekdays like MO or -1FR, not {day!r}")
        if m.group(1) is None:
            continue
        n = int(m.group(1))
        if values["FREQ"] not in ("MONTHLY", "YEARLY") or "BYMONTHDAY" in values:
            raise BadRequest("recurrence: a BYDAY ordinal like 2MO goes with FREQ=MONTHLY or "
                             "YEARLY and without BYMONTHDAY")
        most = 5 if within_month else 53
        if not (n != 0 and -most <= n <= most):
            raise BadRequest(f"recurrence: BYDAY ordinal must be from -{most} to {most} and "
                             f"not 0, not {n}")


WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
