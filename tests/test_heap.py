"""The restored state kept out of the cyclic collector's view, and given back at a reload."""

import gc
import weakref

from atsd import heap


class _State:
    """Holds a reference cycle, as the app's callbacks to its own parts do."""

    def __init__(self) -> None:
        self.me = self


def test_frozen_state_waits_and_a_reload_collects_what_it_replaced():
    old = _State()
    gone = weakref.ref(old)
    heap.freeze_state()
    try:
        del old
        gc.collect()
        assert gone() is not None        # frozen: full collections leave it alone
        heap.freeze_state(replaced=True)
        assert gone() is None            # the reload let go of it, and it was collected
    finally:
        gc.unfreeze()


def test_collector_paused_while_restoring_and_as_before_after():
    assert gc.isenabled()
    with heap.collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with heap.collector_paused():
            pass
        assert not gc.isenabled()        # not switched on behind whoever switched it off
    finally:
        gc.enable()
