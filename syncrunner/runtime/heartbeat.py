"""The heartbeat of a running sync (DESIGN.md §6, §10): a background thread that stamps
SyncHistory.heartbeat_at and the peak memory every N seconds on its own pooled connection (the main
connection is busy inside chunk transactions). A run whose heartbeat goes stale is dead, and
`syncrunner sweep` marks it failed. Each beat also checks that the run's lock session is alive."""
from __future__ import annotations

import logging
import threading

import sqlalchemy as sa

from syncrunner.runtime.settings import heartbeat_seconds_from_env

from syncrunner.runtime import history
from syncrunner.runtime.locks import RunGuard
from syncrunner.runtime.memory import peak_rss_mb

log = logging.getLogger("syncrunner.heartbeat")


class Heartbeat:
    def __init__(self, engine: sa.Engine, run_id: int, *, interval: float | None = None,
                 guard: RunGuard | None = None):
        self.engine = engine
        self.run_id = run_id
        self.interval = heartbeat_seconds_from_env() if interval is None else interval
        self.guard = guard
        self.beats = 0
        self._lock_ok = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{run_id}", daemon=True)

    def start(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __enter__(self) -> "Heartbeat":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop and join, so no beat lands after the run's final SyncHistory update."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=max(self.interval, 5.0) + 30.0)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def beat(self) -> None:
        try:
            with self.engine.begin() as conn:
                history.heartbeat(conn, self.run_id, peak_rss_mb())
            self.beats += 1
        except Exception as e:  # noqa: BLE001 - a missed beat is logged, never fatal by itself
            log.warning("heartbeat for run %s failed: %s", self.run_id, type(e).__name__)
        if self.guard is None:
            return
        ok = self.guard.check()
        if not ok and self._lock_ok:  # say it once, not every beat
            log.warning("run %s: the lock session is gone; the run will take its locks back "
                        "before its next chunk", self.run_id)
        self._lock_ok = ok
