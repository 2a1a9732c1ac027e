"""The garbage collector under a burst.

A serving process holds a large, long-lived heap (the app, its routes and schemas, the
ORM's models, translations). CPython's full collections walk all of it: under a burst
one of them every few hundred requests stalls the event loop for tens of milliseconds,
which is most of a hot path's p99. `freeze_startup_heap()` moves what is alive once the
process is ready into the permanent generation (`gc.freeze()`), so later collections
only walk what requests allocate. Reference counting still frees everything as usual."""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Call once, when the process has loaded everything and is about to serve."""
    gc.collect()
    gc.freeze()
