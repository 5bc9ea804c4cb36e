"""The generic sync loop (DESIGN.md §1): fetch chunk -> map -> validate -> upsert sub-batches ->
checkpoint, one target transaction per chunk. Knows nothing about any CRM."""
from __future__ import annotations

import datetime as dt
import itertools
import logging
import os
import random
import socket
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Protocol

import sqlalchemy as sa

from syncrunner.core.deadletter import dead_letter
from syncrunner.core.errtext import one_line
from syncrunner.core.fingerprint import uses_fingerprints
from syncrunner.core.mapping import Mapper, make_getter
from syncrunner.core.records import Chunk
from syncrunner.core.redact import redact
from syncrunner.core.stats import Stats
from syncrunner.core.window import Window
from syncrunner.runtime import history
from syncrunner.runtime.chunkmap import MappedChunk, key_text, map_chunk, max_cursor
from syncrunner.runtime.columns import check_columns
from syncrunner.runtime.deletes import DeleteSweep
from syncrunner.runtime.dryrun import TargetPreview
from syncrunner.runtime.fplookup import Prepared, UnchangedSkipper
from syncrunner.runtime.heartbeat import Heartbeat
from syncrunner.runtime.locks import LockBusy, LockLost, LockUnavailable, RunGuard
from syncrunner.runtime.memory import peak_rss_mb
from syncrunner.runtime.parallel import START_AFTER_ROWS, MapPool
from syncrunner.runtime.pipeline import WriteAhead
from syncrunner.runtime.settings import map_workers_from_env, slot_wait_from_env, target_retry_seconds
from syncrunner.runtime.signals import StopRequest
from syncrunner.runtime.strategy import RunOptions, check_options, decide, decide_readonly, format_watermark, parse_watermark
from syncrunner.runtime.target import shared_target_engine, target_exists
from syncrunner.runtime.writer import Writer
from syncrunner.sources.base import Source
from syncrunner.sources.registry import make_source
from syncrunner.spec.model import Spec, SpecError

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
class _Flow:
    """What every chunk of one real run is written with; `watermark` is the committed one."""
    pipe: WriteAhead
    conn: sa.Connection
    writer: Writer
    deletes: DeleteSweep
    run_id: int
    window: Window
    watermark: Any


class SyncRun:
    """One run of one spec."""

    def __init__(self, spec: Spec, opts: RunOptions, target_url: str, *,
                 observers: list[Observer] | None = None, source: Source | None = None,
                 count_total: bool = False, heartbeat_seconds: float | None = None,
                 max_concurrent: int | None = None, handle_signals: bool = True,
                 map_workers: int | None = None, map_after: int = START_AFTER_ROWS):
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
        self.heartbeat_seconds = heartbeat_seconds
        self.max_concurrent = max_concurrent
        self.handle_signals = handle_signals
        self.stop = StopRequest()
        self.guard: RunGuard | None = None
        self.skipper = UnchangedSkipper(spec, self.mapper, skip_validation=opts.skip_validation) \
            if uses_fingerprints(spec) else None
        self.map_workers = map_workers_from_env() if map_workers is None else map_workers
        self.pool: MapPool | None = None     # started once a large run has mapped map_after rows here
        self.map_after = map_after            # rows mapped here before the pool starts
        self._mapped_here = 0                # rows mapped in this process so far
        self._handed = 0                     # chunks handed to the writer
        self._remapper: Mapper | None = None
        self._remap_lock = threading.Lock()
        self._run_id = 0

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
            self._notify_finished(result)
            return result
        engine = shared_target_engine(self.target_url)
        try:
            if opts.dry_run:
                return self._dry_run(engine, started)
            return self._guarded_run(engine, started)
        finally:
            self.source.close()

    # -- dry run: read everything, write nothing (not even SyncHistory) -----------------------------
    def _dry_run(self, engine: sa.Engine, started: float) -> RunResult:
        window = self._window_readonly(engine)
        log.info("Starting %s %s sync (dry run: nothing will be written): %s", self.spec.crm,
                 self.spec.entity, window.reason)
        self._notify_started(window, self.source.count(window) if self.count_total else None)
        preview = TargetPreview(engine, self.spec, force=self.opts.force,
                                skip_validation=self.opts.skip_validation,
                                target_exists=target_exists(self.target_url))
        chunk_no = 0
        watermark = None
        for chunk in self.source.chunks(window, window.position, self.opts.max_records):
            chunk_no += 1
            mc = map_chunk(self.spec, self.mapper, self.key_getters, chunk.records, 0,
                           fps=preview.fingerprints(chunk.records))
            for b in mc.bad:
                self._log_bad(b.key, b.field, b.value, b.reason)
            would = preview.count(mc.rows)
            mc.stats.created, mc.stats.updated = would.created, would.updated
            mc.stats.unchanged, mc.stats.stale = mc.stats.unchanged + would.unchanged, would.stale
            mc.stats.failed += would.stale  # a real run dead-letters them
            self.stats.add(mc.stats)
            watermark = max_cursor([{self.cursor_field: mc.max_cursor}], self.cursor_field, watermark)
            for obs in self.observers:
                obs.chunk_done(self.spec, chunk_no, self.stats)
        result = RunResult(self.spec, "dry-run", self.stats, window, seconds=time.monotonic() - started,
                           watermark=format_watermark(watermark))
        s = self.stats
        result.notes.append(f"dry run: would create {s.created:,}, update {s.updated:,}, leave {s.unchanged:,} "
                            f"unchanged and {s.stale:,} stale (older than stored), reject {s.failed:,}; "
                            f"{s.warnings:,} validation warning(s); nothing written")
        if self.spec.deletes.mode == "sweep":
            result.notes.append("deletes: not swept: --dry-run")
        log.info("Dry run of %s %s: %d fetched, %d created, %d updated, %d unchanged, %d stale, %d failed, "
                 "%d validation warnings; nothing written", self.spec.crm, self.spec.entity, s.fetched,
                 s.created, s.updated, s.unchanged, s.stale, s.failed, s.warnings)
        self._notify_finished(result)
        return result

    def _window_readonly(self, engine: sa.Engine) -> Window:
        window, note = decide_readonly(self.spec, self.opts, engine, target_exists(self.target_url))
        if note:
            log.info("%s: %s", self.spec.name, note)
        return window

    # -- locks around the real run -----------------------------------------------------------------
    def _guarded_run(self, engine: sa.Engine, started: float) -> RunResult:
        """Hold the entity lock and a run slot for the whole run; no SyncHistory row is written by
        a run that could not get them (it would break the resume of the one that has them)."""
        spec = self.spec
        self.guard = RunGuard(engine, spec.crm, spec.entity, max_concurrent=self.max_concurrent)
        try:
            self.guard.acquire(self.opts.wait, describe_holder=lambda: self._holder(engine))
        except (LockBusy, LockUnavailable, sa.exc.SQLAlchemyError) as e:
            busy = isinstance(e, LockBusy)
            message = str(e) if busy else redact(one_line(e))
            log.error("Not starting %s %s sync: %s", spec.crm, spec.entity, message)
            result = RunResult(spec, "locked" if busy else "failed", self.stats,
                               seconds=time.monotonic() - started, error=message)
            self._notify_finished(result)
            return result
        try:
            with self.stop if self.handle_signals else nullcontext():
                return self._real_run(engine, started)
        finally:
            self.guard.release()

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
        spec, opts = self.spec, self.opts
        writer = Writer(engine, spec, force=opts.force, batch_size=opts.batch_size)
        deletes = DeleteSweep(spec, writer.table, allow_mass_delete=opts.allow_mass_delete)
        conn = engine.connect()
        run_id = None
        window = None
        watermark: Any = None
        beat: Heartbeat | None = None
        pipe = WriteAhead()
        rest: Iterator[Chunk] | None = None
        try:
            self._prepare_history(engine, conn)
            if self.stop.requested:  # stopped while starting: no run to record
                raise Interrupted(self.stop.requested)
            with conn.begin():
                window = decide(spec, opts, conn)
                run_id = self._run_id = history.start_run(conn, spec.crm, spec.entity, self._configuration(window))
            beat = Heartbeat(engine, run_id, interval=self.heartbeat_seconds, guard=self.guard)
            beat.start()
            total, first, rest = self._open_source(window)  # before anything is created in the target
            with conn.begin():
                for msg in writer.prepare(conn):
                    log.info("%s: %s", spec.name, msg)
            with conn.begin():
                if self.skipper is not None and not opts.force:
                    self.skipper.start(engine, conn, writer.table)
                deletes.begin(conn, window, opts, run_id)
            watermark = self._initial_watermark(window)
            log.info("Starting %s %s sync with %s records: %s", spec.crm, spec.entity,
                     "unknown" if total is None else f"{total:,}", window.reason)
            self._notify_started(window, total)
            flow = _Flow(pipe, conn, writer, deletes, run_id, window, watermark)
            if self.map_after == 0:  # every chunk to the workers: start them now and wait for them
                self._start_pool(flow, wait=True)
            elif writer.empty and total is not None and total > self.map_after:
                self._start_pool(flow)  # a first load (empty target) of a counted large source: every
                # row will be mapped, so the workers start now; chunks map here until one answers
            ahead: Prepared | None = None  # with fingerprint lookups, one chunk is read ahead: its lookup
            # runs while the chunk before it is mapped
            for chunk in itertools.chain(first, rest):
                prepared = self.skipper.prepare(chunk, defer=self._pooled()) if self.skipper else Prepared(chunk)
                for ready in ([ahead] if ahead is not None else []) + ([] if prepared.found else [prepared]):
                    self._hand_over(ready, flow)
                ahead = prepared if prepared.found else None
            if ahead is not None:
                self._hand_over(ahead, flow)
            self._drain(flow)
            if pipe.busy:
                flow.watermark = self._settle(pipe)
            watermark = flow.watermark
            status = "partial" if self.stats.failed else "success"
            watermark = self._final_watermark(window, watermark)
            beat.stop()
            result = self._finish(conn, run_id, status, None, window, watermark, started, deletes)
            log.info("Completed %s %s sync: %d created, %d updated, %d failed (%d unchanged, %d older than "
                     "stored) in %.1fs", spec.crm, spec.entity, self.stats.created, self.stats.updated,
                     self.stats.failed, self.stats.unchanged, self.stats.stale, result.seconds)
            return result
        except BaseException as e:  # noqa: BLE001 - every way out must leave SyncHistory consistent
            if pipe.busy:  # the connection is the writer's until its chunk is done
                try:
                    self.stats, _ = pipe.collect()
                except BaseException as write_error:  # noqa: BLE001 - the first error is the one reported
                    log.debug("%s: the in-flight chunk write failed too: %s", spec.name, redact(write_error))
            message = f"interrupted ({e.args[0] if e.args else 'signal'})" \
                if isinstance(e, (KeyboardInterrupt, Interrupted)) else redact(one_line(e))
            log.error("Failed %s %s sync: %s", spec.crm, spec.entity, message)
            log.debug("%s: where it failed", spec.name, exc_info=True)  # --debug: the traceback
            if beat is not None:
                beat.stop()
            if run_id is None:
                result = RunResult(spec, "failed", self.stats, window, seconds=time.monotonic() - started,
                                   error=message)
            elif isinstance(e, (history.RunSwept, LockLost)):  # another run owns the entity now
                result = RunResult(spec, "failed", self.stats, window, run_id,
                                   time.monotonic() - started, message)
                self._notify_finished(result)
            else:
                result = self._finish(conn, run_id, "failed", message, window, None, started, deletes)
            if isinstance(e, KeyboardInterrupt):
                raise
            if not isinstance(e, Exception):
                raise
            return result
        finally:
            if rest is not None and hasattr(rest, "close"):
                rest.close()  # a failed run's source read ends now (its connection goes back)
            pipe.close()
            if self.pool is not None:
                self.pool.close()
            if self.skipper is not None:
                self.skipper.close()
            if beat is not None:
                beat.stop()
            if not conn.invalidated and conn.in_transaction():
                conn.rollback()
            writer.close(conn)
            conn.close()

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

    def _hand_over(self, prepared: Prepared, flow: "_Flow") -> None:
        """Map a chunk (in this process, overlapping the previous chunk's write, or queued to the
        mapping workers), then hand it to the writer once the previous one has committed."""
        skip = self.skipper.unchanged(prepared) if prepared.found is not None else {}
        seen = self.skipper.seen(prepared.chunk, skip) if skip else []
        if prepared.found is not None:
            self.skipper.handed_over({key for i, key in prepared.candidates if i not in skip})
        skipped = frozenset(skip)
        to_map = len(skipped) < len(prepared.chunk.records)  # all unchanged: nothing to map, not worth a trip
        if self._pooled() and to_map:
            self.pool.submit((prepared, skipped, seen), prepared.chunk, skipped, prepared.fps,
                             fingerprint=self.skipper is not None and prepared.fps is None)
            # the oldest chunk goes to the writer when the queue is full, or as soon as it is
            # mapped and the writer is idle (a short run would otherwise wait for the queue to fill)
            while self.pool.pending() > self.pool.depth or (self.pool.head_done() and flow.pipe.free):
                self._write(*self.pool.take(self._remap), flow)
            return
        mc = self._map_here(prepared, skipped, flow.run_id)
        self._drain(flow)  # chunks queued to workers go first (the pool may just have stopped)
        self._write((prepared, skipped, seen), mc, flow)
        self._mapped_here += len(mc.rows)
        if self._mapped_here >= self.map_after:
            self._start_pool(flow)

    def _pooled(self) -> bool:
        return self.pool is not None and self.pool.active

    def _start_pool(self, flow: "_Flow", *, wait: bool = False) -> None:
        """Start the mapping workers, if this run may use them (see runtime/parallel.py)."""
        if self.pool is not None or not self.map_workers:
            return
        self.pool = MapPool(self.spec, workers=self.map_workers,
                            skip_validation=self.opts.skip_validation, batch_size=flow.writer.batch_size, run_id=flow.run_id,
                            want_keys=flow.deletes.generation is not None,
                            copy_text=flow.writer.dialect.loads_text)
        if self.skipper is not None:  # more chunks are between a lookup and their commit now
            self.skipper.track_in_flight(self.pool.depth + 2)
        if wait:
            self.pool.wait_ready()

    def _drain(self, flow: "_Flow") -> None:
        while self.pool is not None and self.pool.pending():
            self._write(*self.pool.take(self._remap), flow)

    def _remap(self, item: tuple[Prepared, frozenset[int], list[dict]]) -> MappedChunk:
        """Map a chunk in this process again: a worker failed on it, or the database refused one of
        its bulk batches (the row-by-row retry needs the rows). Runs on the writer thread too, so it
        has a Mapper of its own."""
        prepared, skipped, _ = item
        with self._remap_lock:  # the main thread (a failed worker) and the writer may both get here
            if self._remapper is None:
                self._remapper = Mapper(self.spec, skip_validation=self.opts.skip_validation)
            return map_chunk(self.spec, self._remapper, self.key_getters, prepared.chunk.records,
                             self._run_id, skip=skipped, fps=self._fingerprints(prepared))

    def _map_here(self, prepared: Prepared, skipped: frozenset[int], run_id: int) -> MappedChunk:
        return map_chunk(self.spec, self.mapper, self.key_getters, prepared.chunk.records, run_id,
                         skip=skipped, fps=self._fingerprints(prepared))

    def _fingerprints(self, prepared: Prepared) -> list[int] | None:
        """The chunk's fingerprints, computed here if they were left to a worker (deferred)."""
        if prepared.fps is None and self.skipper is not None:
            prepared.fps = self.skipper.fingerprinter.of(prepared.chunk.records)
        return prepared.fps

    def _write(self, item: tuple[Prepared, frozenset[int], list[dict]], mc: MappedChunk, flow: "_Flow") -> None:
        """Count and log a mapped chunk, wait for the previous chunk's commit, hand this one over."""
        prepared, _, seen = item
        for b in mc.bad:
            self._log_bad(b.key, b.field, b.value, b.reason)
        if flow.pipe.busy:
            flow.watermark = self._settle(flow.pipe)
        self._handed += 1
        flow.pipe.submit(self._commit_chunk, flow, prepared.chunk, mc, seen, flow.watermark,
                         lambda: self._remap(item))

    def _settle(self, pipe: WriteAhead) -> Any:
        """Take the in-flight chunk's committed result (data, dead letters, staged keys and
        checkpoint landed together); returns the watermark after it."""
        self.stats, watermark = pipe.collect()
        for obs in self.observers:
            obs.chunk_done(self.spec, self._handed, self.stats)
        if self.stop.requested:
            raise Interrupted(self.stop.requested)
        return watermark

    def _commit_chunk(self, flow: "_Flow", chunk: Chunk, mc: MappedChunk, seen: list[dict], watermark: Any,
                      remap: Callable[[], MappedChunk]) -> tuple[Stats, Any]:
        """Write one chunk, its dead letters, its staged keys and its checkpoint in one
        transaction. If the target drops the connection (restart, failover), wait for it and write
        the chunk again: the transaction rolled back, so nothing is half-written. Returns the run's
        stats and watermark after the chunk."""
        spec, conn, writer, deletes, run_id = self.spec, flow.conn, flow.writer, flow.deletes, flow.run_id
        cs, dead = mc.stats, mc.dead

        def rows_of() -> list[dict]:  # a worker's chunk whose bulk batch failed: its rows, as mapped
            mc.rows = remap().rows
            return mc.rows
        deadline: float | None = None
        attempt = 0
        while True:
            pending: Stats | None = None
            c, d = replace(cs), list(dead)  # a retry starts from the chunk as fetched
            regaining = self.guard is not None and self.guard.lost
            try:
                if regaining:  # the heartbeat saw the lock session die: take it back first
                    self._regain(conn, writer, run_id)
                    regaining = False
                with conn.begin():
                    res = writer.write(conn, mc.rows, mc.encoded, rows_of)
                    for rows, field_name in ((res.rejected, None), (res.kept_stored, self.cursor_field)):
                        d += [dead_letter(run_id, spec.crm, spec.entity,
                                                  key_text([row.get(k) for k in spec.target.key]),
                                                  field_name, reason, row) for row, reason in rows]
                    c.created, c.updated = res.created, res.updated
                    c.unchanged, c.stale = cs.unchanged + res.unchanged, res.stale
                    c.failed += len(res.rejected) + len(res.kept_stored)  # not written: dead-lettered
                    c.known_bad = history.add_dead_letters(conn, d)
                    c.failed -= c.known_bad  # already kept and counted by the run that first saw them
                    if deletes.generation is not None:
                        keys = spec.target.key
                        deletes.stage(conn, [dict(zip(keys, k)) for k in mc.keys] + seen)
                    if res.rejected:
                        refused = {id(r) for r, _ in res.rejected}
                        landed = max_cursor([r for r in mc.rows if id(r) not in refused], self.cursor_field)
                    else:
                        landed = mc.max_cursor
                    new_watermark = max_cursor(seen + [{self.cursor_field: landed}], self.cursor_field, watermark)
                    c.chunks = 1
                    pending = Stats(**self.stats.as_dict())
                    pending.add(c)
                    history.write_checkpoint(conn, run_id, pending, format_watermark(new_watermark), {
                        "window": flow.window.as_config(), "position": chunk.position, "chunks": pending.chunks,
                        "stats": pending.as_dict(), **deletes.checkpoint()})
                return pending, new_watermark
            except sa.exc.DBAPIError as e:
                # a write's error is retried only if it cost the connection; one out of _regain
                # always means the target is still unreachable (_regain turns any other into a failure)
                if not (regaining or e.connection_invalidated or conn.invalidated):
                    raise
                deadline = deadline or time.monotonic() + target_retry_seconds()
                log.warning("%s: lost the target connection writing chunk %d (%s); retrying until it "
                            "is back (up to %.0fs)", spec.name, self.stats.chunks + 1,
                            type(e.orig).__name__ if e.orig else type(e).__name__, target_retry_seconds())
            while True:  # wait for the target, then take our locks back
                attempt += 1
                if time.monotonic() > deadline:
                    raise TargetUnavailable(f"the target stayed unreachable for {target_retry_seconds():.0f}s "
                                            f"while writing chunk {self.stats.chunks + 1}")
                time.sleep(min(5.0, 0.25 * 2 ** min(attempt, 5)) * (0.5 + random.random()))
                try:
                    committed = self._regain(conn, writer, run_id, chunk.position)
                    break
                except sa.exc.DBAPIError as e:  # still unreachable: any other error left _regain as a failure
                    log.debug("%s: target still unreachable: %s", spec.name, type(e.orig or e).__name__)
                    continue
            if committed and pending is not None:  # the commit landed; only its answer was lost
                log.info("%s: chunk %d had committed before the connection dropped", spec.name, pending.chunks)
                return pending, new_watermark
            log.info("%s: target is back; writing chunk %d again", spec.name, self.stats.chunks + 1)

    @staticmethod
    def _unreachable(e: sa.exc.DBAPIError) -> bool:
        """Does `e` mean the target is still out of reach (could not connect, or the connection
        dropped), rather than a target that answers with an error (say a missing table)?"""
        return e.connection_invalidated or isinstance(e, (sa.exc.OperationalError, sa.exc.InterfaceError))

    def _regain(self, conn: sa.Connection, writer: Writer, run_id: int, position: dict | None = None) -> bool:
        """After a lost connection: reconnect, take the locks back, make sure this run was not
        swept meanwhile. Returns True if the chunk at `position` is already committed. A database
        error that does not mean "still unreachable" (the target answers, but say its SyncHistory
        table is gone because the database was recreated) fails at once: waiting cannot fix it."""
        try:
            if conn.in_transaction():
                conn.rollback()
            writer.reset_session()  # temporary tables died with the old session
            if self.guard is not None:
                self.guard.reacquire(slot_wait_from_env())
            with conn.begin():  # read again under the lock: a sweeper may have finished in between
                row = history.run_row(conn, run_id)
        except sa.exc.DBAPIError as e:
            if self._unreachable(e):
                raise
            cause = e.orig if e.orig is not None else e
            first_line = (str(cause).strip().splitlines() or [""])[0]
            raise TargetRegainFailed(f"the target answered after the lost connection, but regaining run {run_id} "
                               f"failed: {type(cause).__name__}: {first_line}") from e
        if row is None or row.status != "running":
            raise history.RunSwept(f"SyncHistory run {run_id} was marked {row.status if row else 'gone'} "
                                   "while the target was unreachable; stopping")
        return position is not None and (row.checkpoint or {}).get("position") == position

    def _finish(self, conn: sa.Connection, run_id: int, status: str, error: str | None,
                window: Window | None, watermark: Any, started: float,
                deletes: DeleteSweep | None = None) -> RunResult:
        """Record the end of the run; a successful one sweeps deletes in the same transaction."""
        seconds = time.monotonic() - started
        notes: list[str] = []
        try:
            if conn.in_transaction():
                conn.rollback()
            with conn.begin():
                if status == "failed":
                    self._take_committed_stats(conn, run_id)
                metrics = self._metrics(seconds)
                if deletes is not None and deletes.active:
                    metrics["deletes"] = deletes.finish(conn, status)
                    metrics["records_deleted"] = metrics["deletes"].get("records_deleted", 0)
                    notes.append(f"deletes: {metrics['deletes'].get('reason') or _deleted_note(metrics['deletes'])}")
                history.finish_run(conn, run_id, status, self.stats, error=error, metrics=metrics,
                                   watermark=format_watermark(watermark) if watermark is not None else None)
        except Exception as e:  # noqa: BLE001 - the target itself may be gone; say so, don't mask
            log.error("could not record the end of run %s in SyncHistory: %s", run_id, redact(e))
            if status != "failed":  # nothing was swept and the run is not recorded: it did not succeed
                return self._finish(conn, run_id, "failed", redact(f"finishing the run: {type(e).__name__}: {e}"),
                                    window, None, started)
        result = RunResult(self.spec, status, self.stats, window, run_id, seconds, error,
                           format_watermark(watermark), notes)
        self._notify_finished(result)
        return result

    def _take_committed_stats(self, conn: sa.Connection, run_id: int) -> None:
        """A run stopped at once (a second Ctrl-C) can be interrupted after a chunk committed but
        before this thread took its counts (between the writer's answer and the assignment): the
        chunk's own checkpoint, committed with its rows, has them. Counts never go backwards."""
        row = history.run_row(conn, run_id)
        saved = (row.checkpoint or {}) if row is not None else {}
        if saved.get("chunks", 0) > self.stats.chunks and isinstance(saved.get("stats"), dict):
            log.debug("%s: counts taken from the last committed checkpoint (chunk %d)", self.spec.name,
                      saved["chunks"])
            self.stats = Stats(**saved["stats"])

    # -- pieces ----------------------------------------------------------------------------------
    def _log_bad(self, key: str | None, field: str | None, value: Any, reason: str) -> None:
        self.logged_bad += 1
        if self.logged_bad <= MAX_LOGGED_BAD_RECORDS:
            if field is None:  # a record-level rule or an unparseable record
                log.warning("Validation warning for record (Record: id=%s): %s", key, reason)
            else:
                log.warning("Validation warning for field '%s' with value '%s' (Record: id=%s): %s",
                            field, redact(value), key, reason)
        elif self.logged_bad == MAX_LOGGED_BAD_RECORDS + 1:
            log.warning("%s: more bad values; see the sync_dead_letters table", self.spec.name)

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
            "records_skipped_by_fingerprint": self.stats.skipped,
            "records_stale": self.stats.stale,
            "records_known_bad": self.stats.known_bad,
            "duplicates_in_chunk": self.stats.duplicates,
            "null_cursor_rows": m.null_cursor_rows if m else 0,
            "warnings": self.stats.warnings,
            "map_workers": self.pool.workers if self.pool is not None else 0,
            "chunks_mapped_by_workers": self.pool.chunks_mapped if self.pool is not None else 0,
            "map_workers_stopped": self.pool.broken if self.pool is not None else None,
            **(m.extra if m else {}),  # source-specific counters (pages, throttled, query restarts...)
        }

    def _notify_started(self, window: Window, total: int | None = None) -> None:
        for obs in self.observers:
            obs.started(self.spec, window, total)

    def _notify_finished(self, result: RunResult) -> None:
        for obs in self.observers:
            obs.finished(result)


class SourceUnavailable(RuntimeError):
    """The source failed before its first chunk arrived (unreachable, credentials refused, a bad
    query): the run failed without creating or writing anything in the target."""


class TargetUnavailable(RuntimeError):
    """The target stayed unreachable longer than the retry budget."""


class TargetRegainFailed(RuntimeError):
    """The target came back after a lost connection but refused what the run needs to go on
    (e.g. its SyncHistory table is gone: the database was recreated): retrying cannot help."""


def _deleted_note(d: dict) -> str:
    verb = "marked deleted" if d.get("action") == "soft" else "removed"
    return f"{d.get('records_deleted', 0):,} row(s) not seen upstream {verb}"


def run_spec(spec: Spec, opts: RunOptions, target_url: str, **kwargs) -> RunResult:
    return SyncRun(spec, opts, target_url, **kwargs).run()
