"""Run progress: a live tqdm bar per entity on a terminal, one log line per chunk elsewhere.

Cron mail and log shippers cannot render a bar, and a bar's carriage returns would fill their files
with noise; so the mode follows whether the stream is a terminal. Chunk lines go through logging
(logger `syncrunner.ops.progress`) so `--log-format json` and redaction apply to them too."""
from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass
from typing import IO, Any

from syncrunner.core.stats import Stats

log = logging.getLogger("syncrunner.progress")


def chunk_line(name: str, chunk_no: int, done: int, total: int | None, chunk_size: int,
               seconds: float) -> str:
    """`genius.appointments chunk 23/54: 23,000/54,000 (42.6%) 11,200 rec/s` (totals when known)."""
    rate = f"{done / seconds:,.0f} rec/s" if seconds > 0 else "- rec/s"
    if total is None:
        return f"{name} chunk {chunk_no}: {done:,} records, {rate}"
    chunks = max(1, math.ceil(total / chunk_size)) if chunk_size else 1
    # a run can see more than counted (rows changed while it ran); never print 57/54
    chunks = max(chunks, chunk_no)
    pct = 100.0 * done / total if total else 100.0
    eta = ""
    if total > done and seconds > 0 and done > 0:
        eta = f", ETA {_duration((total - done) * seconds / done)}"
    return f"{name} chunk {chunk_no}/{chunks}: {done:,}/{total:,} ({pct:.1f}%) {rate}{eta}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@dataclass
class _Entity:
    started: float
    total: int | None
    chunk_size: int
    bar: Any = None  # tqdm when on a terminal
    done: int = 0


class ProgressObserver:
    """An engine Observer (runtime/runstate.py) that shows progress; one instance serves a whole run
    of many specs, one after another."""

    def __init__(self, stream: IO[str] | None = None, *, tty: bool | None = None):
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.tty = tty if tty is not None else bool(isatty and isatty())
        self._entities: dict[str, _Entity] = {}

    def started(self, spec, window, total: int | None) -> None:
        state = _Entity(time.monotonic(), total, spec.source.chunk_size)
        if self.tty:
            from tqdm import tqdm  # only a terminal draws a bar: cron and log runs skip its ~35 ms import
            state.bar = tqdm(total=total, desc=spec.name, unit="rec", unit_scale=True,
                             file=self.stream, dynamic_ncols=True, leave=True, mininterval=0.2)
        self._entities[spec.name] = state

    def chunk_done(self, spec, chunk_no: int, stats: Stats) -> None:
        state = self._entities.get(spec.name)
        if state is None:  # started() was not seen (an observer added mid-run): start now
            self.started(spec, None, None)
            state = self._entities[spec.name]
        if state.bar is not None:
            if state.total is not None and stats.fetched > state.total:
                state.bar.total = stats.fetched
            state.bar.update(stats.fetched - state.done)
            state.bar.set_postfix_str(f"{stats.failed:,} failed" if stats.failed else "", refresh=False)
        else:
            log.info(chunk_line(spec.name, chunk_no, stats.fetched, state.total, state.chunk_size,
                                time.monotonic() - state.started))
        state.done = stats.fetched

    def finished(self, result) -> None:
        state = self._entities.pop(result.spec.name, None)
        if state is not None and state.bar is not None:
            if state.bar.total is not None and state.done < state.bar.total:
                state.bar.total = state.done  # fewer than counted (max-records, rows deleted meanwhile)
                state.bar.refresh()
            state.bar.close()
