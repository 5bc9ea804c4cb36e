"""Stored fingerprints: per chunk, which records' rows are stored exactly as read (the lookups
against the target, the skip decision, the keys still in flight). What a fingerprint is and why:
core/fingerprint.py, which stays free of SQLAlchemy for the mapping workers."""
from __future__ import annotations

import logging
import random
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property

import sqlalchemy as sa

from syncrunner.core.coerce import DataError
from syncrunner.core.fingerprint import FP_COLUMN, Fingerprinter
from syncrunner.core.mapping import Mapper
from syncrunner.core.records import BadRecord, Chunk
from syncrunner.runtime.settings import target_retry_seconds
from syncrunner.runtime.target import READ_ONLY
from syncrunner.spec.model import Spec

log = logging.getLogger("syncrunner")
LOOKUP_SLICE = 2000  # keys per lookup statement (SQLite's bind-parameter limit, plan caching)


def fingerprint_column() -> sa.Column:
    return sa.Column(FP_COLUMN, sa.BigInteger, nullable=True)


class StoredFingerprints:
    """Reads the fingerprints of stored rows by target key, on a connection of its own (the run's
    connection may be busy writing the previous chunk), one short read per lookup so every lookup
    sees what has been committed. The connection is held for the run (a pool checkout per chunk
    cost a pre-ping round trip each) and made again if the target drops it: a lookup waits for a
    restarted target as long as a chunk's write does (SYNCRUNNER_TARGET_RETRY_SECONDS)."""

    def __init__(self, engine: sa.Engine, table: sa.Table, keys: list[str], live_only: sa.Column | None):
        self.engine = engine
        self.keys = [table.c[k] for k in keys]
        self.fp = table.c[FP_COLUMN]
        self.table = table
        self.live_only = live_only  # soft deletes: a deleted row must be written to come back
        self.active = False
        self._conn: sa.Connection | None = None  # used by one lookup thread at a time

    def begin(self, conn: sa.Connection) -> None:
        """Only a table that already holds rows can hold a match (a first load skips the lookups)."""
        self.active = conn.execute(sa.select(self.fp).limit(1)).first() is not None

    def unmatched(self, keys: list[tuple], fps: list[int]) -> set[tuple]:
        """The keys (of `keys`, paired with `fps`) whose stored row does not carry that fingerprint:
        missing, different, soft-deleted. On PostgreSQL the database compares (an anti-join over
        the chunk's arrays): a chunk that did not change sends back no row, and the run's
        process builds nothing per key."""
        if not self.active or not keys:
            return set(keys)
        deadline: float | None = None
        attempt = 0
        while True:
            try:
                if self._conn is None:
                    self._conn = self._connect()
                return self._unmatched(self._conn, keys, fps)
            except sa.exc.DBAPIError as e:
                lost = self._conn is None or e.connection_invalidated or self._conn.invalidated
                self._close(self._conn)
                self._conn = None
                if not (lost or isinstance(e, (sa.exc.OperationalError, sa.exc.InterfaceError))):
                    raise
                deadline = deadline or time.monotonic() + target_retry_seconds()
                if time.monotonic() > deadline:
                    raise
                attempt += 1
                log.debug("fingerprint lookup: target unreachable (%s); retrying", type(e.orig or e).__name__)
                time.sleep(min(5.0, 0.25 * 2 ** min(attempt, 5)) * (0.5 + random.random()))

    def _connect(self) -> sa.Connection:
        """A lookup thread's connection. On PostgreSQL in autocommit: a lookup is one statement,
        which sees what was committed when it started, as a read transaction of its own would,
        without the BEGIN and ROLLBACK round trips (two per lookup, 800 in a 1,000,000-row
        no-change run of the bench)."""
        conn = self.engine.connect()
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        return conn.execution_options(**{READ_ONLY: True})

    def _unmatched(self, conn: sa.Connection, keys: list[tuple], fps: list[int]) -> set[tuple]:
        try:
            anti = self._anti_join(conn) if len(self.keys) == 1 else None
            if anti is not None:
                return {(k,) for k, in conn.execute(anti, {"keys": _array_param([k[0] for k in keys]),
                                                           "fps": _array_param(fps)})}
            stored = self._fetch(conn, keys)
            return {k for k, fp in zip(keys, fps) if stored.get(k) != fp}
        finally:
            if not conn.invalidated and conn.in_transaction():
                conn.rollback()

    def close(self) -> None:
        """Give the held connection back (after the lookups are done)."""
        self._close(self._conn)
        self._conn = None

    @staticmethod
    def _close(conn: sa.Connection | None) -> None:
        if conn is not None:
            try:
                conn.close()
            except sa.exc.DBAPIError:
                pass

    def _anti_join(self, conn: sa.Connection) -> sa.TextClause | None:
        """PostgreSQL, one integer or string key column: the chunk's keys and fingerprints as two
        array parameters, the keys that do not match sent back. None elsewhere. A scalar subquery
        per key, not NOT EXISTS: PostgreSQL turns that into a hash anti-join that reads the whole
        table for every chunk once it judges 2,500 keys a large share of it (81 ms per chunk on a
        200,000-row table against 4 ms by the key's index; a run's lookups grew with the table's
        square); a subquery in WHERE is always one index probe per key."""
        key = self.keys[0]
        kind = "BIGINT[]" if isinstance(key.type, sa.Integer) else "TEXT[]" if isinstance(key.type, sa.String) else None
        if conn.dialect.name != "postgresql" or kind is None:
            return None
        q = conn.dialect.identifier_preparer.quote
        t = q(self.table.name)
        live = f" AND t.{q(self.live_only.name)} IS NULL" if self.live_only is not None else ""
        return sa.text(f"SELECT s.k FROM unnest(CAST(:keys AS {kind}), CAST(:fps AS BIGINT[])) AS s(k, f) "
                       f"WHERE (SELECT t.{q(self.fp.name)} FROM {t} AS t WHERE t.{q(key.name)} = s.k{live} "
                       f"LIMIT 1) IS DISTINCT FROM s.f")

    @cached_property
    def _fetch_query(self) -> sa.Select:
        """The stored fingerprints of a list of keys, the list a parameter: a statement built per
        chunk with its keys as values held them in SQLAlchemy objects that form reference cycles,
        freed only by the garbage collector (a no-change run into SQLite held
        107 MB against 69 MB when the collector ran rarely)."""
        keys = sa.bindparam("keys", expanding=True)
        cond = self.keys[0].in_(keys) if len(self.keys) == 1 else sa.tuple_(*self.keys).in_(keys)
        q = sa.select(*self.keys, self.fp).where(cond, self.fp.is_not(None))
        return q.where(self.live_only.is_(None)) if self.live_only is not None else q

    def _fetch(self, conn: sa.Connection, keys: list[tuple]) -> dict[tuple, int]:
        """Key -> fingerprint of the stored rows (of the live ones, with soft deletes)."""
        found: dict[tuple, int] = {}
        single = len(self.keys) == 1
        for i in range(0, len(keys), LOOKUP_SLICE):
            part = keys[i:i + LOOKUP_SLICE]
            rows = conn.execute(self._fetch_query, {"keys": [k[0] for k in part] if single else part}).fetchall()
            if single:
                found.update({(k,): fp for k, fp in rows})
            else:
                found.update({tuple(r[:-1]): r[-1] for r in rows})
        return found


def _array_param(values: list) -> list | str:
    """Integers as one PostgreSQL array literal ('{1,2,3}': built in C, where psycopg2 adapts a
    list value by value); anything else as a list for psycopg2 to quote."""
    if set(map(type, values)) == {int}:
        return "{" + ",".join(map(str, values)) + "}"
    return values


@dataclass
class Prepared:
    """A fetched chunk with its fingerprints and the pending lookup of its stored ones."""
    chunk: Chunk
    fps: list[int] | None = None   # None: not computed yet (see UnchangedSkipper.prepare's defer)
    candidates: list[tuple[int, tuple]] = field(default_factory=list)  # (index, target key)
    found: Future | None = None  # -> the candidates' keys whose stored row does not match


class UnchangedSkipper:
    """One run's use of fingerprints: fingerprint each chunk, look its keys' stored fingerprints up
    on the lookup thread (while the engine maps the previous chunk), say which records to skip."""

    def __init__(self, spec: Spec, mapper: Mapper, *, skip_validation: bool):
        self.spec = spec
        self.keys = list(spec.target.key)
        self.cursor = spec.cursor_field
        self.fingerprinter = Fingerprinter(spec, skip_validation=skip_validation)
        self.project_key = mapper.project(self.keys)
        self.project_cursor = mapper.project([self.cursor]) if self.cursor else None
        self.stored: StoredFingerprints | None = None  # set by start(): a real run without --force
        self.in_flight: deque[set[tuple]] = deque(maxlen=2)  # keys of the last chunks handed to the writer
        self.lookups: ThreadPoolExecutor | None = None

    def start(self, engine: sa.Engine, conn: sa.Connection, table: sa.Table) -> None:
        self.stored = StoredFingerprints(engine, table, self.keys, table.c.get("deleted_at"))
        self.stored.begin(conn)

    def prepare(self, chunk: Chunk, *, defer: bool = False) -> Prepared:
        """Fingerprints for every chunk (they are stored with the rows); a lookup only when the
        table held rows when the run started. `defer`: without a lookup, leave the fingerprints
        to whoever maps the chunk (a mapping worker computes them there)."""
        if self.stored is None or not self.stored.active:
            return Prepared(chunk, None if defer else self.fingerprinter.of(chunk.records))
        fps = self.fingerprinter.of(chunk.records)
        candidates: list[tuple[int, tuple]] = []
        for i, rec in enumerate(chunk.records):
            if isinstance(rec, BadRecord):
                continue
            try:
                p = self.project_key(rec)
            except DataError:
                continue  # the full mapping reports it
            key = tuple(p[k] for k in self.keys)
            if None not in key:
                candidates.append((i, key))
        return Prepared(chunk, fps, candidates, self._look_up(candidates, fps))

    def _look_up(self, candidates: list[tuple[int, tuple]], fps: list[int]) -> Future:
        """Start the candidates' lookup on the lookup thread: it runs while the engine maps the
        chunk before, and reads the index and heap pages the chunk's upsert then needs."""
        if self.lookups is None:
            self.lookups = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sr-lookup")
        return self.lookups.submit(self.stored.unmatched, [k for _, k in candidates],
                                   [fps[i] for i, _ in candidates])

    def unchanged(self, prepared: Prepared) -> dict[int, tuple]:
        """Index -> key of each record whose stored row has its fingerprint. A key of the recent
        chunks handed over (not yet committed when the lookup started) is never skipped: the
        lookup may have read its row before they committed."""
        differ = prepared.found.result()
        recent = set().union(*self.in_flight)
        if not differ and not recent:
            return dict(prepared.candidates)
        return {i: key for i, key in prepared.candidates if key not in differ and key not in recent}

    def handed_over(self, keys: set[tuple]) -> None:
        """The keys a chunk about to be mapped will write (a skipped record writes nothing, so a
        later lookup of its key cannot race its commit)."""
        self.in_flight.append(keys)

    def track_in_flight(self, chunks: int) -> None:
        """Remember the keys of this many recent chunks: mapping workers queue chunks between a
        lookup and their commit."""
        self.in_flight = deque(self.in_flight, maxlen=max(chunks, self.in_flight.maxlen or 0))

    def seen(self, chunk: Chunk, skip: dict[int, tuple]) -> list[dict]:
        """The skipped records as {key field: value} for a delete sweep (only the last one without
        a sweep); the last one also carries its cursor for the watermark (records come in cursor
        order, so it is the largest; around a DST fall-back a local-time order can only make it
        smaller, never larger)."""
        if not skip:
            return []
        last = max(skip)
        keep = skip.values() if self.spec.deletes.sweeps else [skip[last]]
        seen = [dict(zip(self.keys, key)) for key in keep]
        if self.project_cursor is not None:
            try:
                seen[-1][self.cursor] = self.project_cursor(chunk.records[last])[self.cursor]
            except DataError:
                pass  # no watermark from it: a lower watermark only re-reads more
        return seen

    def close(self) -> None:
        if self.lookups is not None:
            self.lookups.shutdown(wait=True, cancel_futures=True)
        if self.stored is not None:
            self.stored.close()
