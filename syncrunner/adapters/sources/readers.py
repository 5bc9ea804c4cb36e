"""Several queries of one source at once, their results taken in the order they were asked for.

A grouped SQL read (sql.py) is one aggregated query per chunk, and the server builds each chunk's
text on one core while the run waits for it: on the bench's no-change run the reading thread waited
for MariaDB about 40% of the run while the machine's other core sat idle. The chunks' keyset ranges
are known before their rows are read (a cheap index query finds each range's end), so the rows of
the next ranges can be read on connections of their own, while the run takes the results strictly
in order. Measured reading 159 bench chunks: 1 connection 10.6-11.1 ms per chunk, 2 connections
5.9 ms."""
from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Generic, TypeVar

from ...envvars import env_number

T = TypeVar("T")
DEFAULT_READERS = 3


def readers_from_env() -> int:
    """SYNCRUNNER_SQL_READERS: queries a grouped read runs at once (default 3; 1 reads one chunk
    after the other)."""
    return env_number("SYNCRUNNER_SQL_READERS", DEFAULT_READERS, int, minimum=1)


class OrderedReads(Generic[T]):
    """Up to `readers` calls of `read(conn, task)` in flight, each reader thread on a connection
    of its own (`connect()`, closed by `close()`); `next()` gives the oldest one's result (or
    raises its error). Tasks are added by the caller, who keeps them in order."""

    def __init__(self, readers: int, connect: Callable[[], Any], read: Callable[[Any, Any], T]):
        self.readers = readers
        self._connect, self._read = connect, read
        self._pool = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="sr-reader")
        self._pending: deque[tuple[Any, Future]] = deque()
        self._conns: dict[int, Any] = {}
        self._lock = threading.Lock()

    @property
    def full(self) -> bool:
        return len(self._pending) >= self.readers

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, task: Any) -> None:
        self._pending.append((task, self._pool.submit(self._run, task)))

    def next(self) -> tuple[Any, T]:
        """The oldest task and its result."""
        task, fut = self._pending.popleft()
        return task, fut.result()

    def _run(self, task: Any) -> T:
        ident = threading.get_ident()
        conn = self._conns.get(ident)
        if conn is None:
            conn = self._connect()
            with self._lock:
                self._conns[ident] = conn
        return self._read(conn, task)

    def close(self) -> None:
        """Drop what is still in flight, wait for the threads, close their connections."""
        for _, fut in self._pending:
            fut.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True)
        with self._lock:
            conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - a connection that broke is given back as it is
                pass
