"""Run a source's chunk iterator on a thread of its own, a few chunks ahead of the engine.

Worth it only for a read that waits on its server more than it computes: a grouped SQL read
(one aggregated row per chunk) spends its time in the server's query, during which the thread
holds no GIL, so the server builds chunk N+1 while the engine maps and writes chunk N. A read
that parses rows in Python would only fight the engine for the GIL.

While a read-ahead runs, the interpreter's switch interval is 1 ms instead of 5: the reading thread
takes the GIL back after every socket read of a chunk's (megabytes long) aggregated row, and with
the engine's thread busy each of those waited out the interval. Bench, no-change run of 1M rows:
4.5-4.8 s -> 4.1-4.3 s (interleaved runs); the full run unchanged."""
from __future__ import annotations

import queue
import sys
import threading
from contextlib import contextmanager
from typing import Iterator, TypeVar

T = TypeVar("T")
_END = object()
# A producer's item, never handed out: "go on once the consumer has taken everything before this
# and asked for more". A source yields it before its last query, so that query runs as late as it
# would without read-ahead (and sees changes made while the chunks before it were written).
WAIT = object()


SWITCH_INTERVAL = 0.001
_switch_lock = threading.Lock()
_switch_before: list[float] = []  # one entry per read-ahead running: the interval before the first


@contextmanager
def _short_switch_interval() -> Iterator[None]:
    """sys.setswitchinterval lowered while any read-ahead runs; restored when the last one ends."""
    with _switch_lock:
        before = _switch_before[0] if _switch_before else sys.getswitchinterval()
        _switch_before.append(before)
        sys.setswitchinterval(min(SWITCH_INTERVAL, before))
    try:
        yield
    finally:
        with _switch_lock:
            _switch_before.pop()
            if not _switch_before:
                sys.setswitchinterval(before)


def read_ahead(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """`items`, produced on a background thread at most `depth` ahead of the consumer. An error
    of the producer is raised to the consumer after the items produced before it; closing this
    iterator (a run that stops early) stops the producer and closes `items` on its thread."""
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop, asked = threading.Event(), threading.Event()

    def put(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                handoff.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
                if item is WAIT:
                    while not asked.wait(0.1):
                        if stop.is_set():
                            return
                    asked.clear()
            put((_END, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            put((_END, e))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="sr-read", daemon=True)
    thread.start()
    try:
        with _short_switch_interval():
            while True:
                item, error = handoff.get()
                if item is WAIT:
                    asked.set()
                    continue
                if item is _END:
                    if error is not None:
                        raise error
                    return
                yield item
    finally:
        stop.set()
        thread.join()
