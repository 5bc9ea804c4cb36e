"""Read ahead on a background thread, so a source decodes its next rows while the engine waits on the
target (COPY, merge, commit: time the database spends with Python's GIL released).

Only what `fetch` returns is read ahead, never a new query: a source uses this inside one streaming
query, so when queries start (and what each one can see) stays exactly as without read-ahead."""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")
_ITEM, _ERROR = 0, 1


def read_ahead(fetch: Callable[[], list[T]], depth: int = 2) -> Iterator[list[T]]:
    """Yield fetch() results until one is empty, with up to `depth` batches fetched ahead. An error in
    fetch is raised here, in order; closing the iterator early stops the thread before returning, so
    the caller may close the underlying cursor right after."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple) -> None:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return
            except queue.Full:
                continue

    def work() -> None:
        try:
            while not stop.is_set():
                batch = fetch()
                put((_ITEM, batch))
                if not batch:
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            put((_ERROR, e))

    thread = threading.Thread(target=work, name="syncrunner-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = q.get()
            if kind == _ERROR:
                raise item
            if not item:
                return
            yield item
    finally:
        stop.set()
        thread.join()
