"""Garbage-collector settings for sync runs.

A chunk allocates tens of thousands of short-lived containers (a dict per record and per row, lists
per chunk) that reference counting frees when the chunk is done; they hardly ever form cycles.
CPython's default young-generation threshold (700) still runs a collection every few dozen
records and promotes chunk data into older generations that are then walked again, and every full
collection walks a run's start-up objects too (~60,000 after SQLAlchemy's import).

- `bulk_gc` (around every run, also in a program that imports syncrunner): a young collection per
  YOUNG_THRESHOLD allocations, the old setting restored afterwards. It cut the CLI's CPU time by
  about 12-18% on the benchmark (bench/run.py).
- The `syncrunner` process and its mapping workers go further, as the process is theirs
  (`for_batch_work`, `starting`, `settled`): the same threshold from the start, no collection
  while they import and set up (all of that lives as long as the process), then gc.freeze on what
  exists so that no later collection walks it. Measured on the bench (1,000,000 rows into
  PostgreSQL), before: each mapping worker spent 0.6-0.8 s of CPU in ~2,000 collections (they
  had CPython's defaults), a no-change delta run's start-up 45-60 ms in ~136 collections.

The collector stays on for the work itself: a cycle is still collected, only later.
SYNCRUNNER_GC=0 keeps CPython's defaults in the process and its workers."""
from __future__ import annotations

import gc
import os
from contextlib import contextmanager
from typing import Iterator

YOUNG_THRESHOLD = 50_000
_owned: list[bool] = []   # set by for_batch_work: this process is syncrunner's own


@contextmanager
def bulk_gc(young: int = YOUNG_THRESHOLD) -> Iterator[None]:
    if not enabled():
        yield
        return
    old = gc.get_threshold()
    gc.set_threshold(max(young, old[0]), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


def enabled() -> bool:
    return os.environ.get("SYNCRUNNER_GC", "").strip().lower() not in ("0", "off", "no", "false")


def for_batch_work() -> bool:
    """Collect rarely from now on: called first thing by the console script and a mapping worker,
    whose processes these are. True if set."""
    if not enabled():
        return False
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    _owned[:] = [True]
    return True


def starting() -> None:
    """No collection while the process imports and sets up: everything it makes now stays."""
    if _owned:
        gc.disable()


def settled() -> None:
    """The long-lived objects (modules, specs, compiled mappings) exist now: keep them out of every
    later collection, and collect (rarely) again."""
    if _owned:
        gc.freeze()
        gc.enable()
