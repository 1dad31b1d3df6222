"""What a config reload (SIGHUP, ``reload``) changes, and whether live state allows it.

The YAML is the source of truth: a reload rebuilds the lab from the new file and the state
file, as a restart would, so nothing an older config left in memory survives it. It applies
whole or not at all. It is refused, naming what is in the way, when
- a resource is removed while live reservations hold it (retire it instead: keep it in the
  file with no new bookings until they end, then remove it), or
- a resource gets fewer slots than its live reservations hold at once from now on, or
- a setting changes that lives in open sockets or running job backends (listen, events,
  state, the CURVE secret key, ...): those take a restart.
"""

from __future__ import annotations

import math
from dataclasses import astuple

from .config import Config
from .engine import states
from .engine.timeline import peak_slots

# settings held by sockets, backends and caches built at start: only a restart applies them
RESTART_ONLY = ("listen", "events", "state", "fsync", "max_frame_bytes", "event_hwm",
                "curve_secret_key", "queues", "job_dirs", "job_output_dir", "job_env_allow",
                "job_run_as", "job_user", "metrics_listen", "reply_cache_bytes",
                "audit_retention_s", "audit_max_entries", "web_listen", "web_token")


class ReloadRefused(Exception):
    """The new config conflicts with live state; the message names what and why."""


def changes(old: Config, new: Config) -> dict:
    """The resources and settings a reload from ``old`` to ``new`` changes."""
    before = {d.name: d for d in old.resources}
    after = {d.name: d for d in new.resources}
    return {
        "added": sorted(after.keys() - before.keys()),
        "removed": sorted(before.keys() - after.keys()),
        "resized": {n: [before[n].slots, after[n].slots] for n in sorted(after)
                    if n in before and before[n].slots != after[n].slots},
        "changed": sorted(n for n in after if n in before and before[n].slots == after[n].slots
                          and astuple(before[n]) != astuple(after[n])),
        "settings": sorted(k for k in new.__dataclass_fields__
                           if k not in ("path", "resources", "resource_spec")
                           and getattr(old, k) != getattr(new, k)),
    }


def check(old: Config, new: Config, lab, now: float) -> dict:
    """The changes, or ReloadRefused naming every conflict with ``lab`` (the live state)."""
    found = changes(old, new)
    problems = []
    restart = [k for k in found["settings"] if k in RESTART_ONLY]
    if restart:
        problems.append(f"{', '.join(restart)} change only with a restart")
    for name in found["removed"]:
        holders = _live_holders(lab.resources[name].timeline.overlapping(now, math.inf), lab)
        if holders:
            problems.append(f"resource {name} is removed but reservations "
                            f"{', '.join(holders)} hold it (keep it until they end)")
    for name, (_, slots) in found["resized"].items():
        bookings = lab.resources[name].timeline.overlapping(now, math.inf)
        shared = [b for b in bookings if not b.exclusive]
        held = peak_slots(shared, now, math.inf) if shared else 0
        if held > slots:
            problems.append(f"resource {name} would have {slots} slots but reservations "
                            f"{', '.join(_live_holders(shared, lab))} hold {held} at once")
    if problems:
        raise ReloadRefused("; ".join(problems))
    return found


def _live_holders(bookings, lab) -> list[str]:
    return sorted({b.reservation_id for b in bookings
                   if lab.reservations[b.reservation_id].state != states.ENDED})
