"""Garbage-collector setting for a sync run.

A chunk allocates tens of thousands of short-lived containers (a dict per record and per row), so
CPython's default young-generation threshold (700) runs a collection every few dozen records and
promotes chunk data into older generations that are then walked again. None of it is cyclic:
reference counting frees it. Raising the first threshold for the run cut the CLI's CPU time by
about 12-18% on the benchmark (bench/run.py); the old setting is restored afterwards."""
from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator

YOUNG_THRESHOLD = 10_000


@contextmanager
def bulk_gc(young: int = YOUNG_THRESHOLD) -> Iterator[None]:
    old = gc.get_threshold()
    gc.set_threshold(max(young, old[0]), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)
