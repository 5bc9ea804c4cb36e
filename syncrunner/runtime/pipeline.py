"""Overlap a chunk's target write with reading and mapping the next one.

The loop is fetch -> map -> write, one chunk at a time. While PostgreSQL ingests a chunk (COPY,
merge, checkpoint: seconds of server CPU over a large run) the process used to wait, doing
nothing. Here the write of chunk N runs on one background thread while the main thread fetches
and maps chunk N+1. At most one write is in flight, and chunks are committed in order, so
checkpoints, stats and the watermark advance exactly as in the sequential loop. Only the main
thread calls observers and sees errors (re-raised from `collect`).

The GIL serialises the Python work of both threads; what overlaps is the time each waits on a
database. Measured on 300,000 bench rows, interleaved, 3 runs each: 9.64 s without, 8.9 s with it;
lowering the GIL switch interval (0.5 ms against the default 5 ms) made no measurable difference."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable


class WriteAhead:
    """One background writer; `submit` hands it the next chunk's write once the previous one is
    collected."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sr-write")
        self._pending: Future | None = None

    @property
    def busy(self) -> bool:
        return self._pending is not None

    @property
    def free(self) -> bool:
        """Nothing in flight, or the write in flight has finished: `collect` would not wait."""
        return self._pending is None or self._pending.done()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        assert not self.busy, "collect the previous write first"
        self._pending = self._pool.submit(fn, *args)

    def collect(self) -> Any:
        """The in-flight write's result (re-raising its error); waits for it to finish."""
        fut = self._pending
        if fut is None:
            return None
        try:
            return fut.result()
        finally:
            # only a finished write is taken: a KeyboardInterrupt (second Ctrl-C) while waiting
            # leaves it pending, so the run's error path still collects the chunk the writer
            # thread goes on to commit, and SyncHistory counts what the target holds
            if fut.done():
                self._pending = None

    def close(self) -> None:
        self._pool.shutdown(wait=True)
