"""One run of one spec: take the entity lock and a run slot, decide the window, record the start in
SyncHistory, run the chunk loop (runtime/chunkloop.py), record the end. Knows nothing about any CRM."""
from __future__ import annotations

import datetime as dt
import itertools
import logging
import os
import random
import socket
import time
from contextlib import nullcontext
from typing import Any, Iterator

import sqlalchemy as sa

from syncrunner.core.errtext import one_line
from syncrunner.core.fingerprint import uses_fingerprints
from syncrunner.core.mapping import Mapper
from syncrunner.core.records import Chunk
from syncrunner.core.redact import redact
from syncrunner.core.stats import Stats
from syncrunner.core.window import Window
from syncrunner.runtime import history
from syncrunner.runtime.chunkcommit import Flow
from syncrunner.runtime.chunkloop import ChunkLoop
from syncrunner.runtime.columns import check_columns
from syncrunner.runtime.deletes import DeleteSweep
from syncrunner.runtime.dryrun import dry_run
from syncrunner.runtime.fplookup import UnchangedSkipper
from syncrunner.runtime.heartbeat import Heartbeat
from syncrunner.runtime.locks import LockBusy, LockLost, LockUnavailable, RunGuard
from syncrunner.runtime.memory import peak_rss_mb
from syncrunner.runtime.parallel import REMOTE_SOURCE_KINDS, START_AFTER_ROWS
from syncrunner.runtime.pipeline import WriteAhead
from syncrunner.runtime.runstate import Interrupted, Observer, RunResult, RunState
from syncrunner.runtime.settings import map_workers_from_env
from syncrunner.runtime.strategy import (RunOptions, check_options, check_spec_options, decide, format_watermark,
                                         parse_watermark)
from syncrunner.runtime.target import shared_target_engine, target_exists
from syncrunner.runtime.writer import Writer
from syncrunner.sources.base import Source
from syncrunner.sources.registry import make_source
from syncrunner.spec.model import Spec, SpecError

log = logging.getLogger("syncrunner")


class SyncRun:
    """One run of one spec: its plain state is in `state`, the chunks' work in `loop`."""

    def __init__(self, spec: Spec, opts: RunOptions, target_url: str, *,
                 observers: list[Observer] | None = None, source: Source | None = None,
                 count_total: bool = False, heartbeat_seconds: float | None = None,
                 max_concurrent: int | None = None, handle_signals: bool = True,
                 map_workers: int | None = None, map_after: int = START_AFTER_ROWS,
                 queued_id: int | None = None):
        check_options(opts, spec.source.timezone)
        check_spec_options(spec, opts)
        self.state = RunState(spec, opts, observers or [])
        self.target_url = target_url
        self.source = source
        self.count_total = count_total
        self.mapper = Mapper(spec, skip_validation=opts.skip_validation)
        self.heartbeat_seconds = heartbeat_seconds
        self.max_concurrent = max_concurrent
        self.handle_signals = handle_signals
        self.map_workers = map_workers if map_workers is not None else \
            map_workers_from_env(remote_source=spec.source.kind in REMOTE_SOURCE_KINDS)
        self.map_after = map_after  # rows mapped here before the mapping workers start
        self.queued_id = queued_id  # the `queued` SyncHistory row this run replaces (syncrunner enqueue)
        self.loop: ChunkLoop | None = None  # set by a real run
        self.beat: Heartbeat | None = None

    @property
    def spec(self) -> Spec:
        return self.state.spec

    @property
    def opts(self) -> RunOptions:
        return self.state.opts

    @property
    def stats(self) -> Stats:
        return self.state.stats

    # -- public ----------------------------------------------------------------------------------
    def run(self) -> RunResult:
        spec, opts = self.spec, self.opts
        if not spec.enabled:
            log.info("Skipping %s %s sync: disabled by its spec's enabled flag", spec.crm, spec.entity)
            return RunResult(spec, "skipped", self.stats, notes=["disabled"])
        started = time.monotonic()
        self.source = self.source or make_source(spec)
        try:
            check_columns(spec, self.source)
        except SpecError as e:  # a name the query does not return would read NULL for every record
            self.source.close()
            log.error("Not starting %s %s sync: %s", spec.crm, spec.entity, e)
            result = RunResult(spec, "failed", self.stats, seconds=time.monotonic() - started, error=str(e))
            self.state.notify_finished(result)
            return result
        engine = shared_target_engine(self.target_url)
        try:
            if opts.dry_run:
                return dry_run(self.state, engine, self.source, self.mapper, target_exists(self.target_url),
                               count_total=self.count_total, started=started)
            return self._guarded_run(engine, started)
        finally:
            self.source.close()

    # -- locks around the real run -----------------------------------------------------------------
    def _guarded_run(self, engine: sa.Engine, started: float) -> RunResult:
        """Hold the entity lock and a run slot for the whole run; no SyncHistory row is written by
        a run that could not get them (it would break the resume of the one that has them)."""
        spec, state = self.spec, self.state
        guard = state.guard = RunGuard(engine, spec.crm, spec.entity, max_concurrent=self.max_concurrent)
        try:
            guard.acquire(self.opts.wait, describe_holder=lambda: self._holder(engine))
        except (LockBusy, LockUnavailable, sa.exc.SQLAlchemyError) as e:
            busy = isinstance(e, LockBusy)
            message = str(e) if busy else redact(one_line(e))
            log.error("Not starting %s %s sync: %s", spec.crm, spec.entity, message)
            result = RunResult(spec, "locked" if busy else "failed", state.stats,
                               seconds=time.monotonic() - started, error=message)
            state.notify_finished(result)
            return result
        try:
            with state.stop if self.handle_signals else nullcontext():
                return self._real_run(engine, started)
        finally:
            guard.release()

    def _holder(self, engine: sa.Engine) -> str:
        try:
            with engine.connect() as conn:
                return history.describe_holder(conn, self.spec.crm, self.spec.entity)
        except sa.exc.SQLAlchemyError:
            return ""

    def _prepare_history(self, engine: sa.Engine, conn: sa.Connection) -> None:
        """Create the history tables, then sweep this entity's dead runs: we hold its lock, so any
        `running` row of it belongs to a process that is gone (its checkpoint becomes resumable)."""
        for attempt in range(3):
            try:
                with conn.begin():  # the shared history tables: runs of other entities may race us
                    history.ensure_tables(conn)
                break
            except sa.exc.DBAPIError:
                if attempt == 2:
                    raise
                time.sleep(0.2 + random.random() * 0.3)
        swept, _ = history.sweep_stale(engine, dt.timedelta(0), crm=self.spec.crm,
                                       entity=self.spec.entity, lock_held=True)
        for row in swept:
            log.warning("%s: marked SyncHistory run %s (started %s) failed: heartbeat lost, its process "
                        "is gone", self.spec.name, row.id, row.start_time.isoformat())

    # -- real run --------------------------------------------------------------------------------
    def _real_run(self, engine: sa.Engine, started: float) -> RunResult:
        spec, opts, state = self.spec, self.opts, self.state
        writer = Writer(engine, spec, force=opts.force, batch_size=opts.batch_size)
        deletes = DeleteSweep(spec, writer.table, allow_mass_delete=opts.allow_mass_delete)
        conn = engine.connect()
        skipper = UnchangedSkipper(spec, self.mapper, skip_validation=opts.skip_validation) \
            if uses_fingerprints(spec) else None
        loop = self.loop = ChunkLoop(state, self.mapper, Flow(WriteAhead(), conn, writer, deletes), skipper,
                                     map_workers=self.map_workers, map_after=self.map_after)
        rest: Iterator[Chunk] | None = None
        try:
            self._record_start(engine, conn)
            total, first, rest = self._open_source(state.window)  # before anything is created in the target
            self._prepare_target(engine, loop, total)
            watermark = self._final_watermark(state.window, loop.run(itertools.chain(first, rest), total))
            status = "partial" if state.stats.failed else "success"
            self.beat.stop()
            result = self._finish(conn, status, None, watermark, started, deletes)
            s = state.stats
            log.info("Completed %s %s sync: %d created, %d updated, %d failed (%d unchanged, %d older than "
                     "stored) in %.1fs", spec.crm, spec.entity, s.created, s.updated, s.failed, s.unchanged,
                     s.stale, result.seconds)
            return result
        except BaseException as e:  # noqa: BLE001 - every way out must leave SyncHistory consistent
            result = self._failed(e, loop, started)
            if not isinstance(e, Exception):  # a KeyboardInterrupt, say: recorded, and on its way
                raise
            return result
        finally:
            if rest is not None and hasattr(rest, "close"):
                rest.close()  # a failed run's source read ends now (its connection goes back)
            loop.close()
            if self.beat is not None:
                self.beat.stop()
            if not conn.invalidated and conn.in_transaction():
                conn.rollback()
            writer.close(conn)
            conn.close()

    def _record_start(self, engine: sa.Engine, conn: sa.Connection) -> None:
        """Decide the window and record the run in SyncHistory, with its heartbeat."""
        spec, state = self.spec, self.state
        self._prepare_history(engine, conn)
        if state.stop.requested:  # stopped while starting: no run to record
            raise Interrupted(state.stop.requested)
        with conn.begin():
            state.window = decide(spec, self.opts, conn)
            state.run_id = history.start_run(conn, spec.crm, spec.entity, self._configuration(state.window),
                                             replaces=self.queued_id)
        self.beat = Heartbeat(engine, state.run_id, interval=self.heartbeat_seconds, guard=state.guard)
        self.beat.start()

    def _prepare_target(self, engine: sa.Engine, loop: ChunkLoop, total: int | None) -> None:
        """Create or widen the target table, load the stored fingerprints, begin the delete sweep."""
        spec, state, flow = self.spec, self.state, loop.flow
        conn, window = flow.conn, state.window
        with conn.begin():
            for msg in flow.writer.prepare(conn):
                log.info("%s: %s", spec.name, msg)
        with conn.begin():
            loop.begin(engine, conn)
            flow.deletes.begin(conn, window, self.opts, state.run_id)
        flow.deletes.list_ids(conn, self.source, self._stop_if_asked)
        flow.watermark = self._initial_watermark(window)
        log.info("Starting %s %s sync with %s records: %s", spec.crm, spec.entity,
                 "unknown" if total is None else f"{total:,}", window.reason)
        state.notify_started(window, total)

    def _stop_if_asked(self) -> None:
        if self.state.stop.requested:
            raise Interrupted(self.state.stop.requested)

    def _open_source(self, window: Window) -> tuple[int | None, list[Chunk], Iterator[Chunk]]:
        """Count the window (for progress) and read its first chunk: a source that cannot be
        reached or refuses the credentials fails the run (recorded) with the target untouched.
        Returns the count, the first chunk (if any) and the rest."""
        try:
            total = self.source.count(window) if self.count_total else None
            rest = iter(self.source.chunks(window, window.position, self.opts.max_records))
            first = next(rest, None)
        except Exception as e:  # noqa: BLE001 - whatever it is, it is the source's
            raise SourceUnavailable(f"{one_line(e)} (nothing was written to the target)") from e
        return total, [] if first is None else [first], rest

    def _failed(self, e: BaseException, loop: ChunkLoop, started: float) -> RunResult:
        """Record a run that failed (or was stopped), unless it never started or lost its entity."""
        spec, state = self.spec, self.state
        try:
            loop.abandon()
        except BaseException as write_error:  # noqa: BLE001 - the first error is the one reported
            log.debug("%s: the in-flight chunk write failed too: %s", spec.name, redact(write_error))
        message = f"interrupted ({e.args[0] if e.args else 'signal'})" \
            if isinstance(e, (KeyboardInterrupt, Interrupted)) else redact(one_line(e))
        log.error("Failed %s %s sync: %s", spec.crm, spec.entity, message)
        log.debug("%s: where it failed", spec.name, exc_info=e)  # --debug: the traceback
        if self.beat is not None:
            self.beat.stop()
        if state.run_id is None:
            return RunResult(spec, "failed", state.stats, state.window, seconds=time.monotonic() - started,
                             error=message)
        if isinstance(e, (history.RunSwept, LockLost)):  # another run owns the entity now
            result = RunResult(spec, "failed", state.stats, state.window, state.run_id,
                               time.monotonic() - started, message)
            state.notify_finished(result)
            return result
        return self._finish(loop.flow.conn, "failed", message, None, started, loop.flow.deletes)

    def _finish(self, conn: sa.Connection, status: str, error: str | None, watermark: Any, started: float,
                deletes: DeleteSweep | None = None) -> RunResult:
        """Record the end of the run; a successful one sweeps deletes in the same transaction."""
        state, run_id = self.state, self.state.run_id
        seconds = time.monotonic() - started
        notes: list[str] = []
        try:
            if conn.in_transaction():
                conn.rollback()
            with conn.begin():
                if status == "failed":
                    self._take_committed_stats(conn)
                metrics = self._metrics(seconds)
                if deletes is not None and deletes.active:
                    metrics["deletes"] = deletes.finish(conn, status)
                    metrics["records_deleted"] = metrics["deletes"].get("records_deleted", 0)
                    notes.append(f"deletes: {metrics['deletes'].get('reason') or _deleted_note(metrics['deletes'])}")
                history.finish_run(conn, run_id, status, state.stats, error=error, metrics=metrics,
                                   watermark=format_watermark(watermark) if watermark is not None else None)
        except Exception as e:  # noqa: BLE001 - the target itself may be gone; say so, don't mask
            log.error("could not record the end of run %s in SyncHistory: %s", run_id, redact(e))
            if status != "failed":  # nothing was swept and the run is not recorded: it did not succeed
                return self._finish(conn, "failed", redact(f"finishing the run: {type(e).__name__}: {e}"),
                                    None, started)
        result = RunResult(self.spec, status, state.stats, state.window, run_id, seconds, error,
                           format_watermark(watermark), notes)
        state.notify_finished(result)
        return result

    def _take_committed_stats(self, conn: sa.Connection) -> None:
        """A run stopped at once (a second Ctrl-C) can be interrupted after a chunk committed but
        before this thread took its counts (between the writer's answer and the assignment): the
        chunk's own checkpoint, committed with its rows, has them. Counts never go backwards."""
        row = history.run_row(conn, self.state.run_id)
        saved = (row.checkpoint or {}) if row is not None else {}
        if saved.get("chunks", 0) > self.stats.chunks and isinstance(saved.get("stats"), dict):
            log.debug("%s: counts taken from the last committed checkpoint (chunk %d)", self.spec.name,
                      saved["chunks"])
            self.state.stats = Stats(**saved["stats"])

    # -- pieces ----------------------------------------------------------------------------------
    def _initial_watermark(self, window: Window) -> Any:
        """A resumed run continues its predecessor's watermark; a delta run never moves it back."""
        cursor_type = self.spec.fields[self.spec.cursor_field].type if self.spec.cursor_field else None
        carried = window.watermark if window.resume_run else None
        if window.mode == "delta":
            carried = max(filter(None, [carried, window.base_watermark]), default=None,
                          key=lambda w: parse_watermark(w, cursor_type))
        return parse_watermark(carried, cursor_type)

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
            **({"params": window.params, "narrowed_by": self.spec.narrowed_by} if window.params else {}),
        }

    def _metrics(self, seconds: float) -> dict:
        m = self.source.metrics if self.source else None
        pool = self.loop.pool if self.loop is not None else None
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
            "records_skipped_by_fingerprint": self.stats.skipped,
            "records_stale": self.stats.stale,
            "records_known_bad": self.stats.known_bad,
            "duplicates_in_chunk": self.stats.duplicates,
            "null_cursor_rows": m.null_cursor_rows if m else 0,
            "warnings": self.stats.warnings,
            "map_workers": pool.workers if pool is not None else 0,
            "chunks_mapped_by_workers": pool.chunks_mapped if pool is not None else 0,
            "map_workers_stopped": pool.broken if pool is not None else None,
            **(m.extra if m else {}),  # source-specific counters (pages, throttled, query restarts...)
        }


class SourceUnavailable(RuntimeError):
    """The source failed before its first chunk arrived (unreachable, credentials refused, a bad
    query): the run failed without creating or writing anything in the target."""


def _deleted_note(d: dict) -> str:
    verb = "marked deleted" if d.get("action") == "soft" else "removed"
    return f"{d.get('records_deleted', 0):,} row(s) not seen upstream {verb}"


def run_spec(spec: Spec, opts: RunOptions, target_url: str, **kwargs) -> RunResult:
    return SyncRun(spec, opts, target_url, **kwargs).run()
