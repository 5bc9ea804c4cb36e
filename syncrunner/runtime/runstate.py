"""One run's plain state and what a run reports: shared by the engine (start, finish) and the
chunk loop, so neither has to reach into the other."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from syncrunner.core.redact import redact
from syncrunner.core.stats import Stats
from syncrunner.core.window import Window
from syncrunner.runtime.locks import RunGuard
from syncrunner.runtime.signals import StopRequest
from syncrunner.runtime.strategy import RunOptions
from syncrunner.spec.model import Spec

log = logging.getLogger("syncrunner")
MAX_LOGGED_BAD_RECORDS = 20


@dataclass
class RunResult:
    spec: Spec
    status: str                 # success | partial | failed | skipped (disabled) | dry-run | locked
    stats: Stats
    window: Window | None = None
    run_id: int | None = None
    seconds: float = 0.0
    error: str | None = None
    watermark: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in ("success", "dry-run", "skipped")


class Observer(Protocol):
    """Hooks for progress reporting (and for tests that need to act between chunks)."""

    def started(self, spec: Spec, window: Window, total: int | None) -> None: ...
    def chunk_done(self, spec: Spec, chunk_no: int, stats: Stats) -> None: ...
    def finished(self, result: RunResult) -> None: ...


class Interrupted(Exception):
    """Raised between chunks when a stop was requested."""


@dataclass
class RunState:
    """What one run knows and counts; `run_id` and `window` are set once the run is recorded."""
    spec: Spec
    opts: RunOptions
    observers: list[Observer]
    stats: Stats = field(default_factory=Stats)
    stop: StopRequest = field(default_factory=StopRequest)
    guard: RunGuard | None = None
    run_id: int | None = None
    window: Window | None = None
    logged_bad: int = 0

    def log_bad(self, key: str | None, field_name: str | None, value: Any, reason: str) -> None:
        """Log the first bad values; the rest are in the dead-letter table (a log is not a store)."""
        self.logged_bad += 1
        if self.logged_bad <= MAX_LOGGED_BAD_RECORDS:
            if field_name is None:  # a record-level rule or an unparseable record
                log.warning("Validation warning for record (Record: id=%s): %s", key, reason)
            else:
                log.warning("Validation warning for field '%s' with value '%s' (Record: id=%s): %s",
                            field_name, redact(value), key, reason)
        elif self.logged_bad == MAX_LOGGED_BAD_RECORDS + 1:
            log.warning("%s: more bad values; see the sync_dead_letters table", self.spec.name)

    def notify_started(self, window: Window, total: int | None = None) -> None:
        for obs in self.observers:
            obs.started(self.spec, window, total)

    def notify_chunk_done(self, chunk_no: int) -> None:
        for obs in self.observers:
            obs.chunk_done(self.spec, chunk_no, self.stats)

    def notify_finished(self, result: RunResult) -> None:
        for obs in self.observers:
            obs.finished(result)
