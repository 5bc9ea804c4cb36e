"""What a real run would write, found by reading the target only (`run --dry-run`): each mapped
row against its stored row, with the merge's own rules (targets/base.py): a new key is
created; under the stale guard (source.serves_stale_copies) an incoming row older than the stored
one is stale (kept as stored, a failure) unless --force; a row equal in every compared column is
unchanged; any other is updated. A row whose stored
fingerprint is its source row's is unchanged, as a real run skips it (core/fingerprint.py).
Nothing is written."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from syncrunner.core.fingerprint import FP_COLUMN, Fingerprinter, uses_fingerprints
from syncrunner.core.mapping import Mapper, make_getter
from syncrunner.runtime.chunkmap import map_chunk, max_cursor
from syncrunner.runtime.deletes import DELETED_AT
from syncrunner.runtime.runstate import RunResult, RunState
from syncrunner.runtime.strategy import decide_readonly, format_watermark
from syncrunner.runtime.writer import Writer
from syncrunner.sources.base import Source
from syncrunner.spec.model import Spec

log = logging.getLogger("syncrunner")

KEYS_PER_QUERY = 500


@dataclass
class Preview:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    stale: int = 0


class TargetPreview:
    def __init__(self, engine: sa.Engine, spec: Spec, *, force: bool, skip_validation: bool,
                 target_exists: bool):
        """`target_exists`: False for a SQLite file not created yet (connecting would create it)."""
        writer = Writer(engine, spec, force=force)
        plan = writer._plan()
        self.engine = engine
        self.table = writer.table
        self.keys = plan.keys
        self.cursor = plan.cursor if plan.guarded else None
        self.compare = [c for c in plan.compare if c != DELETED_AT]
        self.deletes = DELETED_AT in self.table.c
        self.fingerprinter = Fingerprinter(spec, skip_validation=skip_validation) \
            if uses_fingerprints(spec) and not force else None
        self.exists = False
        if target_exists:
            with engine.connect() as conn:
                self.exists = sa.inspect(conn).has_table(self.table.name)

    def count(self, rows: list[dict]) -> Preview:
        out = Preview()
        stored = self._stored(rows) if self.exists and rows else {}
        for row in rows:
            old = stored.get(tuple(row[k] for k in self.keys))
            if old is None:
                out.created += 1
            elif row.get(FP_COLUMN) is not None and row[FP_COLUMN] == old.get(FP_COLUMN):
                out.unchanged += 1
            elif self._stale(row, old):
                out.stale += 1
            elif not self._newer(row, old):
                out.unchanged += 1
            elif any(row.get(c) != old[c] for c in self.compare) or (self.deletes and old[DELETED_AT] is not None):
                out.updated += 1
            else:
                out.unchanged += 1
        return out

    def fingerprints(self, records: list[dict]) -> list[int] | None:
        """The chunk's source-row fingerprints, when a real run would look them up."""
        return self.fingerprinter.of(records) if self.fingerprinter is not None else None

    def _stale(self, row: dict, old: dict) -> bool:
        if self.cursor is None:
            return False
        new, have = row.get(self.cursor), old[self.cursor]
        return new is not None and have is not None and new < have

    def _newer(self, row: dict, old: dict) -> bool:
        """The merge's `stored IS NULL OR incoming >= stored` (NULL compares as not newer)."""
        if self.cursor is None or old[self.cursor] is None:
            return True
        new = row.get(self.cursor)
        return new is not None and new >= old[self.cursor]

    def _stored(self, rows: list[dict]) -> dict[tuple, dict[str, Any]]:
        cols = [self.table.c[k] for k in self.keys]
        key_of = cols[0] if len(cols) == 1 else sa.tuple_(*cols)
        keys = [tuple(r[k] for k in self.keys) for r in rows]
        found: dict[tuple, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(keys), KEYS_PER_QUERY):
                part = keys[i:i + KEYS_PER_QUERY]
                values = [k[0] for k in part] if len(cols) == 1 else part
                for r in conn.execute(sa.select(self.table).where(key_of.in_(values))).mappings():
                    found[tuple(r[k] for k in self.keys)] = dict(r)
        return found


def dry_run(state: RunState, engine: sa.Engine, source: Source, mapper: Mapper, exists: bool, *,
            count_total: bool, started: float) -> RunResult:
    """Read and map everything, count what a real run would write; write nothing (not even
    SyncHistory). `exists`: the target database exists (nothing to read from it otherwise)."""
    spec, opts = state.spec, state.opts
    window, note = decide_readonly(spec, opts, engine, exists)
    if note:
        log.info("%s: %s", spec.name, note)
    log.info("Starting %s %s sync (dry run: nothing will be written): %s", spec.crm, spec.entity, window.reason)
    state.notify_started(window, source.count(window) if count_total else None)
    preview = TargetPreview(engine, spec, force=opts.force, skip_validation=opts.skip_validation,
                            target_exists=exists)
    key_getters = [make_getter(k) for k in spec.source.key]
    chunk_no = 0
    watermark = None
    for chunk in source.chunks(window, window.position, opts.max_records):
        chunk_no += 1
        mc = map_chunk(spec, mapper, key_getters, chunk.records, 0, fps=preview.fingerprints(chunk.records))
        for b in mc.bad:
            state.log_bad(b.key, b.field, b.value, b.reason)
        would = preview.count(mc.rows)
        mc.stats.created, mc.stats.updated = would.created, would.updated
        mc.stats.unchanged, mc.stats.stale = mc.stats.unchanged + would.unchanged, would.stale
        mc.stats.failed += would.stale  # a real run dead-letters them
        state.stats.add(mc.stats)
        watermark = max_cursor([{spec.cursor_field: mc.max_cursor}], spec.cursor_field, watermark)
        state.notify_chunk_done(chunk_no)
    result = RunResult(spec, "dry-run", state.stats, window, seconds=time.monotonic() - started,
                       watermark=format_watermark(watermark))
    s = state.stats
    result.notes.append(f"dry run: would create {s.created:,}, update {s.updated:,}, leave {s.unchanged:,} "
                        f"unchanged and {s.stale:,} stale (older than stored), reject {s.failed:,}; "
                        f"{s.warnings:,} validation warning(s); nothing written")
    if spec.deletes.sweeps:
        result.notes.append("deletes: not swept: --dry-run")
    log.info("Dry run of %s %s: %d fetched, %d created, %d updated, %d unchanged, %d stale, %d failed, "
             "%d validation warnings; nothing written", spec.crm, spec.entity, s.fetched,
             s.created, s.updated, s.unchanged, s.stale, s.failed, s.warnings)
    state.notify_finished(result)
    return result
