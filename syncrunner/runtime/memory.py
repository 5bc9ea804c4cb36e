"""Memory of a run: its peak resident size, and freed memory given back to the system (glibc only).

A run allocates and frees megabyte-sized strings every chunk (a chunk's rows, a batch's COPY
text, a worker's pickled answer) on several threads. glibc's malloc raises its mmap threshold after
the first such block is freed, so later ones come from the threads' heaps and stay resident:
measured on the bench (1,000,000 rows into PostgreSQL, chunk_size 5,000), the run's processes held
158-163 MB together with glibc's defaults and 147-150 MB with a fixed 128 KB trim threshold (which
also keeps the mmap threshold at 128 KB), at the same CPU time within the VM's noise.

Operators' own MALLOC_* environment settings win (nothing is changed then)."""
from __future__ import annotations

import os
import resource
import sys

M_TRIM_THRESHOLD = -1     # glibc's mallopt parameter number
TRIM_THRESHOLD = 128 * 1024
_done: list[bool] = []


def return_freed_memory() -> bool:
    """Set glibc's trim threshold once per process; True if it was set."""
    if _done:
        return _done[0]
    _done.append(_tune())
    return _done[0]


def _tune() -> bool:
    if not sys.platform.startswith("linux") or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    try:
        import ctypes
        mallopt = ctypes.CDLL(None).mallopt  # absent outside glibc-compatible C libraries
    except (OSError, AttributeError, ImportError):
        return False
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
