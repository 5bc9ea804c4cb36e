"""The garbage collector set for batch work, in the `syncrunner` process and its mapping workers.

A chunk allocates tens of thousands of short-lived containers (a dict per record and per row) that
reference counting frees when the chunk is done; they hardly ever form cycles. CPython's default
young-generation threshold (700) still runs a collection every few dozen records and walks the
chunk's data each time. The collector stays on: a cycle is still collected, only later."""
from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000


def for_batch_work() -> None:
    """A young collection per YOUNG_THRESHOLD allocations: called first thing by the console
    script and a mapping worker, whose processes these are (a program that imports syncrunner
    keeps its own settings)."""
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])
