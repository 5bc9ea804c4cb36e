"""One chunk's commit: its rows, dead letters, staged keys and checkpoint in one target
transaction, written again after a target outage (the transaction rolled back, so nothing is
half-written). Runs on the write-ahead thread (runtime/pipeline.py)."""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import sqlalchemy as sa

from syncrunner.core.deadletter import dead_letter
from syncrunner.core.records import Chunk
from syncrunner.core.stats import Stats
from syncrunner.runtime import history
from syncrunner.runtime.chunkmap import MappedChunk, key_text, max_cursor
from syncrunner.runtime.deletes import DeleteSweep
from syncrunner.runtime.pipeline import WriteAhead
from syncrunner.runtime.runstate import RunState
from syncrunner.runtime.settings import slot_wait_from_env, target_retry_seconds
from syncrunner.runtime.strategy import format_watermark
from syncrunner.runtime.writer import Writer

log = logging.getLogger("syncrunner")


class TargetUnavailable(RuntimeError):
    """The target stayed unreachable longer than the retry budget."""


class TargetRegainFailed(RuntimeError):
    """The target came back after a lost connection but refused what the run needs to go on
    (e.g. its SyncHistory table is gone: the database was recreated): retrying cannot help."""


@dataclass
class Flow:
    """What every chunk of one real run is written with; `watermark` is the committed one."""
    pipe: WriteAhead
    conn: sa.Connection
    writer: Writer
    deletes: DeleteSweep
    watermark: Any = None


def commit_chunk(state: RunState, flow: Flow, chunk: Chunk, mc: MappedChunk, seen: list[dict], watermark: Any,
                 remap: Callable[[], MappedChunk]) -> tuple[Stats, Any]:
    """Write one chunk in one transaction; if the target drops the connection (restart,
    failover), wait for it and write the chunk again. Returns the run's stats and watermark
    after the chunk."""
    def rows_of() -> list[dict]:  # a worker's chunk whose bulk batch failed: its rows, as mapped
        mc.rows = remap().rows
        return mc.rows
    deadline: float | None = None
    while True:
        staged: list[tuple[Stats, Any]] = []  # the chunk's result, once written (before its commit)
        regaining = state.guard is not None and state.guard.lost
        try:
            if regaining:  # the heartbeat saw the lock session die: take it back first
                regain(state, flow)
                regaining = False
            _in_transaction(state, flow, chunk, mc, seen, watermark, rows_of, staged)
            return staged[0]
        except sa.exc.DBAPIError as e:
            # a write's error is retried only if it cost the connection; one out of regain
            # always means the target is still unreachable (regain turns any other into a failure)
            if not (regaining or e.connection_invalidated or flow.conn.invalidated):
                raise
            deadline = deadline or time.monotonic() + target_retry_seconds()
            log.warning("%s: lost the target connection writing chunk %d (%s); retrying until it "
                        "is back (up to %.0fs)", state.spec.name, state.stats.chunks + 1,
                        type(e.orig).__name__ if e.orig else type(e).__name__, target_retry_seconds())
        committed = _await_target(state, flow, chunk.position, deadline)
        if committed and staged:  # the commit landed; only its answer was lost
            log.info("%s: chunk %d had committed before the connection dropped", state.spec.name, staged[0][0].chunks)
            return staged[0]
        log.info("%s: target is back; writing chunk %d again", state.spec.name, state.stats.chunks + 1)


def _in_transaction(state: RunState, flow: Flow, chunk: Chunk, mc: MappedChunk, seen: list[dict],
                    watermark: Any, rows_of: Callable[[], list[dict]], staged: list[tuple[Stats, Any]]) -> None:
    """The chunk's rows, dead letters, staged keys and checkpoint, committed together; counts
    start from the chunk as fetched, so a retry counts nothing twice. The result goes to `staged`
    before the commit: if the commit's answer is lost, the caller learns whether it landed."""
    spec, conn, run_id, cursor = state.spec, flow.conn, state.run_id, state.spec.cursor_field
    cs, d = mc.stats, list(mc.dead)
    c = replace(cs)
    with conn.begin():
        res = flow.writer.write(conn, mc.rows, mc.encoded, rows_of)
        for rows, field_name in ((res.rejected, None), (res.kept_stored, cursor)):
            d += [dead_letter(run_id, spec.crm, spec.entity, key_text([row.get(k) for k in spec.target.key]),
                              field_name, reason, row) for row, reason in rows]
        c.created, c.updated = res.created, res.updated
        c.unchanged, c.stale = cs.unchanged + res.unchanged, res.stale
        c.failed += len(res.rejected) + len(res.kept_stored)  # not written: dead-lettered
        c.known_bad = history.add_dead_letters(conn, d)
        c.failed -= c.known_bad  # already kept and counted by the run that first saw them
        if flow.deletes.generation is not None:
            keys = spec.target.key
            flow.deletes.stage(conn, [dict(zip(keys, k)) for k in mc.keys] + seen)
        if res.rejected:
            refused = {id(r) for r, _ in res.rejected}
            landed = max_cursor([r for r in mc.rows if id(r) not in refused], cursor)
        else:
            landed = mc.max_cursor
        new_watermark = max_cursor(seen + [{cursor: landed}], cursor, watermark)
        c.chunks = 1
        pending = Stats(**state.stats.as_dict())
        pending.add(c)
        history.write_checkpoint(conn, run_id, pending, format_watermark(new_watermark), {
            "window": state.window.as_config(), "position": chunk.position, "chunks": pending.chunks,
            "stats": pending.as_dict(), **flow.deletes.checkpoint()})
        staged.append((pending, new_watermark))


def _await_target(state: RunState, flow: Flow, position: dict, deadline: float) -> bool:
    """Wait (backing off) for the target, then take our locks back; True if the chunk at
    `position` had committed after all."""
    attempt = 0
    while True:
        attempt += 1
        if time.monotonic() > deadline:
            raise TargetUnavailable(f"the target stayed unreachable for {target_retry_seconds():.0f}s "
                                    f"while writing chunk {state.stats.chunks + 1}")
        time.sleep(min(5.0, 0.25 * 2 ** min(attempt, 5)) * (0.5 + random.random()))
        try:
            return regain(state, flow, position)
        except sa.exc.DBAPIError as e:  # still unreachable: any other error left regain as a failure
            log.debug("%s: target still unreachable: %s", state.spec.name, type(e.orig or e).__name__)


def _unreachable(e: sa.exc.DBAPIError) -> bool:
    """Does `e` mean the target is still out of reach (could not connect, or the connection
    dropped), rather than a target that answers with an error (say a missing table)?"""
    return e.connection_invalidated or isinstance(e, (sa.exc.OperationalError, sa.exc.InterfaceError))


def regain(state: RunState, flow: Flow, position: dict | None = None) -> bool:
    """After a lost connection: reconnect, take the locks back, make sure this run was not
    swept meanwhile. Returns True if the chunk at `position` is already committed. A database
    error that does not mean "still unreachable" (the target answers, but say its SyncHistory
    table is gone because the database was recreated) fails at once: waiting cannot fix it."""
    conn, run_id = flow.conn, state.run_id
    try:
        if conn.in_transaction():
            conn.rollback()
        flow.writer.reset_session()  # temporary tables died with the old session
        if state.guard is not None:
            state.guard.reacquire(slot_wait_from_env())
        with conn.begin():  # read again under the lock: a sweeper may have finished in between
            row = history.run_row(conn, run_id)
    except sa.exc.DBAPIError as e:
        if _unreachable(e):
            raise
        cause = e.orig if e.orig is not None else e
        first_line = (str(cause).strip().splitlines() or [""])[0]
        raise TargetRegainFailed(f"the target answered after the lost connection, but regaining run {run_id} "
                                 f"failed: {type(cause).__name__}: {first_line}") from e
    if row is None or row.status != "running":
        raise history.RunSwept(f"SyncHistory run {run_id} was marked {row.status if row else 'gone'} "
                               "while the target was unreachable; stopping")
    return position is not None and (row.checkpoint or {}).get("position") == position
