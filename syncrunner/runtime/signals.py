"""Graceful stop: the first SIGTERM/SIGINT asks the run to stop after the chunk in hand (its
transaction commits with its checkpoint, so the next run resumes right there); a second one stops
at once (KeyboardInterrupt: the open chunk transaction rolls back, the checkpoint before it holds).

Before a run has taken over the signals (while `syncrunner run` imports, loads specs, connects and
waits for locks), `stopping_early()` makes them raise StoppedEarly: nothing has been written yet,
so the command says so and exits instead of dying with a bare -15.

Handlers can only be installed from the main thread; elsewhere (a worker thread, a Celery pool)
the stop flag exists but only `request()` sets it."""
from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Iterator

log = logging.getLogger("syncrunner")

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    def __init__(self) -> None:
        self.requested: str | None = None   # the name of the first signal received
        self._previous: dict[int, object] = {}

    def request(self, why: str) -> None:
        self.requested = self.requested or why

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested:
            log.warning("%s again: stopping at once", name)
            raise KeyboardInterrupt(name)
        self.requested = name
        log.warning("%s received: stopping after the current chunk (send it again to stop at once)", name)


class StoppedEarly(BaseException):
    """A stop signal before the run started (no SyncHistory row of it yet). A BaseException, like
    KeyboardInterrupt: no `except Exception` on the way may swallow it."""

    @property
    def signal_name(self) -> str:
        return self.args[0] if self.args else "a signal"


def _stop_early(signum: int, _frame: FrameType | None) -> None:
    raise StoppedEarly(signal.Signals(signum).name)


@contextmanager
def stopping_early() -> Iterator[None]:
    """SIGTERM/SIGINT raise StoppedEarly inside this block, except while a run's StopRequest holds
    them (it puts these handlers back when its run ends)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _stop_early) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
