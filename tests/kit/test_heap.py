"""kit.heap: what is alive when a process is ready leaves the collector's young and old
generations (so a full collection under a burst walks only what requests made)."""

from __future__ import annotations

import gc

from mall.kit import heap


def test_freeze_startup_heap_moves_the_live_heap_to_the_permanent_generation() -> None:
    before = gc.get_freeze_count()
    alive = [object() for _ in range(10)] + [[] for _ in range(10)]
    try:
        heap.freeze_startup_heap()
        assert gc.get_freeze_count() >= before + 10
        assert not any(item is alive[10] for item in gc.get_objects(2))
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0
