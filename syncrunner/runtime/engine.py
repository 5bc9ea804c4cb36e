"""The generic sync loop (DESIGN.md §1): fetch chunk -> map -> validate -> upsert sub-batches ->
checkpoint, one target transaction per chunk. Knows nothing about any CRM."""
from __future__ import annotations

import logging
import os
import resource
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlalchemy as sa

from ..adapters.sources.base import Chunk, Source, make_source
from ..redact import redact
from ..spec import Spec
from . import history
from .bulkgc import bulk_gc
from .coerce import DataError
from .mapping import Mapper, make_getter
from .stats import Stats
from .strategy import RunOptions, Window, check_options, decide, format_watermark, parse_watermark
from .target import make_engine, target_exists
from .writer import Writer

log = logging.getLogger("syncrunner")
MAX_LOGGED_BAD_RECORDS = 20


@dataclass
class RunResult:
    spec: Spec
    status: str                 # success | partial | failed | skipped (disabled) | dry-run
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


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class SyncRun:
    """One run of one spec."""

    def __init__(self, spec: Spec, opts: RunOptions, target_url: str, *,
                 observers: list[Observer] | None = None, source: Source | None = None,
                 count_total: bool = False):
        check_options(opts, spec.source.timezone)
        self.spec = spec
        self.opts = opts
        self.target_url = target_url
        self.observers = observers or []
        self.source = source
        self.count_total = count_total
        self.stats = Stats()
        self.mapper = Mapper(spec, skip_validation=opts.skip_validation)
        self.key_getters = [make_getter(k) for k in spec.source.key]
        self.cursor_field = spec.cursor_field
        self.cursor_type = spec.fields[self.cursor_field].type if self.cursor_field else None
        self.logged_bad = 0

    # -- public ----------------------------------------------------------------------------------
    def run(self) -> RunResult:
        spec, opts = self.spec, self.opts
        if not spec.enabled:
            log.info("Skipping %s %s sync: disabled by its spec's enabled flag", spec.crm, spec.entity)
            return RunResult(spec, "skipped", self.stats, notes=["disabled"])
        started = time.monotonic()
        self.source = self.source or make_source(spec)
        engine = make_engine(self.target_url)
        try:
            with bulk_gc():
                if opts.dry_run:
                    return self._dry_run(engine, started)
                return self._real_run(engine, started)
        finally:
            self.source.close()
            engine.dispose()

    # -- dry run: read everything, write nothing (not even SyncHistory) -----------------------------
    def _dry_run(self, engine: sa.Engine, started: float) -> RunResult:
        window = self._window_readonly(engine)
        log.info("Starting %s %s sync (dry run: nothing will be written): %s", self.spec.crm,
                 self.spec.entity, window.reason)
        self._notify_started(window)
        chunk_no = 0
        watermark = None
        for chunk in self.source.chunks(window, window.position, self.opts.max_records):
            chunk_no += 1
            rows, dead, cs = self._process(chunk, run_id=0)
            self.stats.add(cs)
            watermark = self._max_cursor(rows, watermark)
            for obs in self.observers:
                obs.chunk_done(self.spec, chunk_no, self.stats)
        result = RunResult(self.spec, "dry-run", self.stats, window, seconds=time.monotonic() - started,
                           watermark=format_watermark(watermark))
        log.info("Dry run of %s %s: %d fetched, %d valid, %d failed validation; nothing written",
                 self.spec.crm, self.spec.entity, self.stats.fetched,
                 self.stats.fetched - self.stats.failed, self.stats.failed)
        self._notify_finished(result)
        return result

    def _window_readonly(self, engine: sa.Engine) -> Window:
        if not target_exists(self.target_url):
            return decide(self.spec, self.opts, None)
        with engine.connect() as conn:
            return decide(self.spec, self.opts, conn if history.tables_exist(conn) else None)

    # -- real run --------------------------------------------------------------------------------
    def _real_run(self, engine: sa.Engine, started: float) -> RunResult:
        spec, opts = self.spec, self.opts
        writer = Writer(engine, spec, force=opts.force, batch_size=opts.batch_size)
        conn = engine.connect()
        run_id = None
        window = None
        watermark: Any = None
        try:
            with conn.begin():
                history.ensure_tables(conn)
                for msg in writer.prepare(conn):
                    log.info("%s: %s", spec.name, msg)
            with conn.begin():
                window = decide(spec, opts, conn)
                run_id = history.start_run(conn, spec.crm, spec.entity, self._configuration(window))
            watermark = self._initial_watermark(window)
            total = self.source.count(window) if self.count_total else None
            log.info("Starting %s %s sync with %s records: %s", spec.crm, spec.entity,
                     "unknown" if total is None else f"{total:,}", window.reason)
            self._notify_started(window, total)
            chunk_no = 0
            for chunk in self.source.chunks(window, window.position, opts.max_records):
                chunk_no += 1
                rows, dead, cs = self._process(chunk, run_id)
                with conn.begin():
                    res = writer.write(conn, rows)
                    for row, reason in res.rejected:
                        dead.append(history.dead_letter(run_id, spec.crm, spec.entity,
                                                        _key_text([row.get(k) for k in spec.target.key]),
                                                        None, reason, row))
                    cs.created, cs.updated = res.created, res.updated
                    cs.unchanged, cs.stale = res.unchanged, res.stale
                    cs.failed += len(res.rejected)
                    history.add_dead_letters(conn, dead)
                    accepted = [r for r in rows if not any(r is rr for rr, _ in res.rejected)]
                    new_watermark = self._max_cursor(accepted, watermark)
                    cs.chunks = 1
                    pending = Stats(**self.stats.as_dict())
                    pending.add(cs)
                    history.write_checkpoint(conn, run_id, pending, format_watermark(new_watermark), {
                        "window": window.as_config(), "position": chunk.position, "chunks": pending.chunks})
                # committed: data, dead letters and checkpoint together
                self.stats = pending
                watermark = new_watermark
                for obs in self.observers:
                    obs.chunk_done(spec, chunk_no, self.stats)
            status = "partial" if self.stats.failed else "success"
            watermark = self._final_watermark(window, watermark)
            result = self._finish(conn, run_id, status, None, window, watermark, started)
            log.info("Completed %s %s sync: %d created, %d updated, %d failed (%d unchanged, %d older than "
                     "stored) in %.1fs", spec.crm, spec.entity, self.stats.created, self.stats.updated,
                     self.stats.failed, self.stats.unchanged, self.stats.stale, result.seconds)
            return result
        except BaseException as e:  # noqa: BLE001 - every way out must leave SyncHistory consistent
            message = "interrupted" if isinstance(e, (KeyboardInterrupt, Interrupted)) else \
                redact(f"{type(e).__name__}: {e}")
            log.error("Failed %s %s sync: %s", spec.crm, spec.entity, message)
            if run_id is None:
                result = RunResult(spec, "failed", self.stats, window, seconds=time.monotonic() - started,
                                   error=message)
            else:
                result = self._finish(conn, run_id, "failed", message, window, None, started)
            if isinstance(e, KeyboardInterrupt):
                raise
            if not isinstance(e, Exception):
                raise
            return result
        finally:
            conn.close()

    def _finish(self, conn: sa.Connection, run_id: int, status: str, error: str | None,
                window: Window | None, watermark: Any, started: float) -> RunResult:
        seconds = time.monotonic() - started
        metrics = self._metrics(seconds)
        try:
            if conn.in_transaction():
                conn.rollback()
            with conn.begin():
                history.finish_run(conn, run_id, status, self.stats, error=error, metrics=metrics,
                                   watermark=format_watermark(watermark) if watermark is not None else None)
        except Exception as e:  # noqa: BLE001 - the target itself may be gone; say so, don't mask
            log.error("could not record the end of run %s in SyncHistory: %s", run_id, redact(e))
        result = RunResult(self.spec, status, self.stats, window, run_id, seconds, error,
                           format_watermark(watermark))
        self._notify_finished(result)
        return result

    # -- pieces ----------------------------------------------------------------------------------
    def _process(self, chunk: Chunk, run_id: int) -> tuple[list[dict], list[dict], Stats]:
        """Map and validate one chunk; returns (rows to write, dead letters, chunk stats)."""
        cs = Stats(fetched=len(chunk.records))
        good: dict[tuple, dict] = {}
        dead: list[dict] = []
        key_fields = self.spec.target.key
        warn_before = len(self.mapper.warnings)
        for rec in chunk.records:
            try:
                row = self.mapper.map(rec)
                key = tuple(row[k] for k in key_fields)
                if any(v is None for v in key):
                    raise DataError(key_fields[0], "key value is missing")
            except DataError as e:
                cs.failed += 1
                skey = _key_text([g(rec) for g in self.key_getters])
                dead.append(history.dead_letter(run_id, self.spec.crm, self.spec.entity, skey, e.field,
                                                e.reason, rec))
                self._log_bad(skey, e)
                continue
            if key in good:
                cs.duplicates += 1
            good[key] = row
        new_warnings = self.mapper.warnings[warn_before:]
        cs.warnings = len(new_warnings)
        for w in new_warnings[:5]:
            log.warning("Validation warning for field '%s' with value '%s' (%s): %s; stored NULL",
                        w.field, redact(w.value), self.spec.name, w.reason)
        del self.mapper.warnings[:]
        return list(good.values()), dead, cs

    def _log_bad(self, key: str | None, e: DataError) -> None:
        self.logged_bad += 1
        if self.logged_bad <= MAX_LOGGED_BAD_RECORDS:
            log.warning("Validation warning for field '%s' with value '%s' (Record: id=%s): %s",
                        e.field or "(record)", redact(e.value), key, e.reason)
        elif self.logged_bad == MAX_LOGGED_BAD_RECORDS + 1:
            log.warning("%s: more bad records; see the sync_dead_letters table", self.spec.name)

    def _max_cursor(self, rows: list[dict], current: Any) -> Any:
        if not self.cursor_field:
            return current
        best = current
        for r in rows:
            v = r.get(self.cursor_field)
            if v is not None and (best is None or v > best):
                best = v
        return best

    def _initial_watermark(self, window: Window) -> Any:
        """A resumed run continues its predecessor's watermark; a delta run never moves it back."""
        carried = window.watermark if window.resume_run else None
        if window.mode == "delta":
            carried = max(filter(None, [carried, window.base_watermark]), default=None,
                          key=lambda w: parse_watermark(w, self.cursor_type))
        return parse_watermark(carried, self.cursor_type)

    def _final_watermark(self, window: Window, watermark: Any) -> Any:
        """With nothing committed, a run that saw its whole window proves nothing exists past its
        lower bound: that bound is the watermark."""
        if watermark is None and window.mode == "since" and window.until is None:
            return window.since
        return watermark

    def _configuration(self, window: Window) -> dict:
        return {
            "flags": self.opts.flags(), "spec": self.spec.path, "spec_digest": self.spec.digest,
            "window": window.as_config(), "window_reason": window.reason,
            "resumed_from": window.resume_run, "host": socket.gethostname(), "pid": os.getpid(),
        }

    def _metrics(self, seconds: float) -> dict:
        m = self.source.metrics if self.source else None
        fetched = self.stats.fetched
        calls = m.api_calls if m else 0
        return {
            "duration_seconds": round(seconds, 3),
            "records_per_second": round(fetched / seconds, 1) if seconds > 0 else None,
            "api_calls": calls,
            "api_calls_per_record": round(calls / fetched, 4) if fetched else None,
            "retries": m.retries if m else 0,
            "source_queries": m.queries if m else 0,
            "peak_memory_mb": round(peak_rss_mb(), 1),
            "chunks": self.stats.chunks,
            "records_unchanged": self.stats.unchanged,
            "records_stale": self.stats.stale,
            "duplicates_in_chunk": self.stats.duplicates,
            "null_cursor_rows": m.null_cursor_rows if m else 0,
            "warnings": self.stats.warnings,
        }

    def _notify_started(self, window: Window, total: int | None = None) -> None:
        for obs in self.observers:
            obs.started(self.spec, window, total)

    def _notify_finished(self, result: RunResult) -> None:
        for obs in self.observers:
            obs.finished(result)


def _key_text(values: list[Any]) -> str | None:
    if all(v is None for v in values):
        return None
    return ",".join("" if v is None else str(v) for v in values)


def run_spec(spec: Spec, opts: RunOptions, target_url: str, **kwargs) -> RunResult:
    return SyncRun(spec, opts, target_url, **kwargs).run()
