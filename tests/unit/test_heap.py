"""The flow process's start is frozen out of the collector once, not at every run."""

import gc

from core.heap import freeze_startup_heap


def test_the_start_is_frozen_once_per_process_and_a_run_s_garbage_is_still_collected():
    freeze_startup_heap()
    frozen = gc.get_freeze_count()
    assert frozen > 0
    freeze_startup_heap()
    assert gc.get_freeze_count() == frozen
    cycle: list[object] = []
    cycle.append(cycle)  # garbage only the collector frees
    del cycle
    assert gc.collect() >= 1
