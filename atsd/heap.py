"""The restored state and Python's cyclic garbage collector.

A restart turns 100k stored reservations into a million or so objects. While they are made,
the collector would scan the growing heap again and again (a third of the restart's CPU),
so it is paused; once they are made they live until the next reload, and every full
collection scanning them again (tens of ms each, at random moments) would be a latency
spike for whoever is waiting, so they are frozen out of its view (``gc.freeze``). Freed
objects are still freed by reference counting; only cycles among frozen objects wait, which
is why a reload hands the state it replaced back to the collector.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def collector_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def freeze_state(replaced: bool = False) -> None:
    """Keep what is alive now out of full collections. ``replaced``: a reload has just
    dropped the state frozen before, whose cycles are collected first."""
    if replaced:
        gc.unfreeze()
        gc.collect()
    gc.freeze()
