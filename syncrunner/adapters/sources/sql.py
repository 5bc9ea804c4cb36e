"""SQL source: any SQLAlchemy URL. The spec's query is wrapped so the window and keyset chunking are
applied on its output columns, every value a bind parameter:

    SELECT * FROM (<query>) src WHERE cursor >= :since AND (cursor, key) > (:c, :k)
    ORDER BY cursor, key LIMIT :n

Keyset (never OFFSET) neither skips nor repeats rows when thousands share one cursor value. Rows
whose cursor is NULL are fetched afterwards, by key, on unwindowed runs (null_cursor: include).

Packed rows (MySQL/MariaDB through PyMySQL): PyMySQL parses every field of every row in Python. When
every output column is of a type whose JSON rendering reads back exactly as PyMySQL's own value
(integers, DECIMAL, DATETIME, TIMESTAMP, DATE, non-binary text), the query asks for one
JSON array text per row instead (built with CONCAT and JSON_QUOTE) and the C json decoder splits it: the same records for ~40% less
client CPU on the bench table (10.6 -> 6.2 us/row), while the server spends ~3 us/row more building
the JSON (2.4 -> 5.4), so the sum still drops. The column types are probed once per source with
LIMIT 0; any other type (FLOAT, DOUBLE, binary strings, BIT, TIME, YEAR, MySQL's JSON...) reads the
whole query plainly, and the run's metrics say why (`packed_off`) or how many rows were packed
(`packed_rows`). SYNCRUNNER_SQL_PACKED=0 forces plain reads.

Grouped reads (packed rows, one query per chunk): even packed, PyMySQL reads every row as its own
packet in Python (~3 us/row of the run's CPU). So each chunk is read as ONE row: a keyset query
finds the chunk's last position (index only: `LIMIT 1 OFFSET chunk_size - 1`), and
`GROUP_CONCAT(<row text> ORDER BY cursor, key SEPARATOR newline)` over the rows up to it
returns the chunk's JSON texts in one string (JSON escapes every newline inside a value, so the
split is exact). On the bench table, reading 1M rows cost the client 3.0 s of CPU streamed (not
yet decoded) and 1.7 s grouped (every row decoded); the server's work per row is about the same,
and runs on a read-ahead thread while the engine maps and writes the chunk before. A group that comes back short (over group_concat_max_len, or a row whose
JSON exceeds max_allowed_packet) is re-read by streaming from the same position, and the run reads
by streaming from there on (`grouped_off` in the metrics says why). SYNCRUNNER_SQL_GROUPED=0
streams packed rows instead. The full chunks of a phase are read three at a time on connections of
their own (readers.py, SYNCRUNNER_SQL_READERS), each range's end found first by the index query."""
from __future__ import annotations

import datetime as dt
import os
from operator import itemgetter
from typing import Any, Iterator
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from ...dburl import create_engine, normalize_url, shared_engine
from ...redact import redact, redact_url
from ...runtime.codec import decode, encode
from ...runtime.strategy import Window
from ...runtime.templating import WINDOW_PARAMS, render_sql
from ...spec import Spec
from .base import Chunk, LazyRecords, SourceMetrics
from .packed import Packing, PackedRowTooLarge, plan_packing, pymysql_datetime
from .readahead import WAIT, read_ahead
from .readers import OrderedReads, readers_from_env

PHASE_CURSOR, PHASE_NULL, PHASE_ALL = "cursor", "null", "all"
STREAM_SPAN = 100_000   # rows per streaming query: bounds a query's snapshot age, not memory


def driver_options(url: str) -> dict:
    """Engine options that make a source driver read faster without changing what it returns."""
    u = normalize_url(url)
    if u.get_driver_name() != "pymysql":
        return {}
    from pymysql.constants import FIELD_TYPE
    from pymysql.converters import conversions
    conv = dict(conversions)
    conv[FIELD_TYPE.DATETIME] = conv[FIELD_TYPE.TIMESTAMP] = pymysql_datetime
    return {"connect_args": {"conv": conv}}


def _switched_on(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("0", "false", "no", "off")


def packed_from_env() -> bool:
    """SYNCRUNNER_SQL_PACKED=0 (or false/no/off) forces plain reads; packed rows are the default."""
    return _switched_on("SYNCRUNNER_SQL_PACKED")


def grouped_from_env() -> bool:
    """SYNCRUNNER_SQL_GROUPED=0 (or false/no/off) streams packed rows; one query per chunk is the default."""
    return _switched_on("SYNCRUNNER_SQL_GROUPED")


class SqlSource:
    # full chunks a phase reads one after the other before its readers start: a cron delta run of a
    # few chunks then opens no extra source connections (the bench's 1%-changed run has 4; its wall
    # time was the same either way, 0.91-0.98 s)
    PARALLEL_AFTER = 4

    def __init__(self, spec: Spec, engine: sa.Engine | None = None):
        self.spec = spec
        self.src = spec.source
        self.url = self.src.options["url"]
        self.engine = engine or shared_engine(
            self.url, lambda u: create_engine(u, pool_pre_ping=True, **driver_options(u)))
        self.q = self.engine.dialect.identifier_preparer.quote
        self.tz = ZoneInfo(self.src.timezone)
        self.metrics = SourceMetrics()
        self._packing: dict[bool, Packing | None] = {}  # per window.bounded: the query may differ
        self._grouping = grouped_from_env() and self.engine.dialect.name in ("mysql", "mariadb")
        self.readers = readers_from_env() if self._grouping else 1

    # -- SQL building ----------------------------------------------------------------------------
    def _bind_bound(self, value: Any, lower: bool) -> Any:
        """Window bounds are UTC; naive source timestamps are local to the spec's time zone.

        Local wall time runs backwards by an hour when clocks fall back, so a naive bound must
        cover both readings of the repeated hour: a lower bound takes the earlier of local(t) and
        local(t + 1h) - 1h, an upper bound the later of local(t) and local(t - 1h) + 1h. Without
        this, rows written in the second pass of 01:00-02:00 are missed by the next delta."""
        if not isinstance(value, dt.datetime):
            return value
        hour = dt.timedelta(hours=1)
        local = lambda t: t.astimezone(self.tz).replace(tzinfo=None)  # noqa: E731
        if lower:
            return min(local(value), local(value + hour) - hour)
        return max(local(value), local(value - hour) + hour)

    def _keyset(self, cols: list[str], values: list[Any], params: dict, upper: bool = False) -> str:
        """(c1, c2, ...) > (v1, v2, ...) written out so every database can use its index:
        c1 >= v1 AND (c1 > v1 OR (c1 = v1 AND (c2 > v2 OR ...))); `upper`: (c1, c2, ...) <= (v1, v2, ...)."""
        names = []
        prefix = "sr_u" if upper else "sr_k"
        for i, v in enumerate(values):
            params[f"{prefix}{i}"] = v
            names.append(f":{prefix}{i}")
        qc = [f"src.{self.q(c)}" for c in cols]
        loose, strict, last = ("<=", "<", "<=") if upper else (">=", ">", ">")

        def tail(i: int) -> str:
            if i == len(cols) - 1:
                return f"{qc[i]} {last} {names[i]}"
            return f"({qc[i]} {strict} {names[i]} OR ({qc[i]} = {names[i]} AND {tail(i + 1)}))"

        return f"{qc[0]} {loose} {names[0]} AND {tail(0)}" if len(cols) > 1 else tail(0)

    def _order(self, phase: str) -> list[str]:
        return ([self.src.cursor] if phase == PHASE_CURSOR else []) + list(self.src.key)

    def build(self, window: Window, phase: str, after: list[Any] | None, limit: int | None,
              packing: Packing | None = None, *, select: str | None = None, offset: int = 0,
              upto: list[Any] | None = None, ordered: bool = True) -> tuple[str, dict]:
        """The wrapped query. `select` replaces the output columns; `upto` adds an inclusive upper
        keyset bound; `ordered=False` leaves out ORDER BY (an aggregate orders inside)."""
        inner = render_sql(self.src.options["query"], windowed=window.bounded).strip().rstrip(";")
        params: dict[str, Any] = {}
        where: list[str] = []
        cursor = self.src.cursor
        order = self._order(phase)
        if phase == PHASE_CURSOR:
            qcur = f"src.{self.q(cursor)}"
            where.append(f"{qcur} IS NOT NULL")
            if window.since is not None:
                where.append(f"{qcur} >= :{WINDOW_PARAMS['since']}")
            if window.until is not None:
                where.append(f"{qcur} < :{WINDOW_PARAMS['until']}")
        elif phase == PHASE_NULL:
            where.append(f"src.{self.q(cursor)} IS NULL")
        if ":" + WINDOW_PARAMS["since"] in inner or window.since is not None:
            params[WINDOW_PARAMS["since"]] = self._bind_bound(window.since, lower=True)
        if ":" + WINDOW_PARAMS["until"] in inner or window.until is not None:
            params[WINDOW_PARAMS["until"]] = self._bind_bound(window.until, lower=False)
        if after is not None:
            where.append(self._keyset(order, after, params))
        if upto is not None:
            where.append(self._keyset(order, upto, params, upper=True))
        sql = f"SELECT {select or (packing.select if packing else '*')} FROM ({inner}) src"
        if where:
            sql += " WHERE " + " AND ".join(where)
        if ordered:
            sql += " ORDER BY " + self._order_sql(order)
        if limit is not None:
            sql += " LIMIT :sr_limit"
            params["sr_limit"] = limit
            if offset:
                sql += " OFFSET :sr_offset"
                params["sr_offset"] = offset
        return sql, params

    def _order_sql(self, order: list[str]) -> str:
        return ", ".join(f"src.{self.q(c)}" for c in order)

    def _phases(self, window: Window) -> list[str]:
        if not self.src.cursor:
            return [PHASE_ALL]
        if window.bounded or self.src.null_cursor == "skip":
            return [PHASE_CURSOR]
        return [PHASE_CURSOR, PHASE_NULL]

    # -- reading ---------------------------------------------------------------------------------
    def chunks(self, window: Window, position: dict | None, limit: int = 0) -> Iterator[Chunk]:
        """One streaming keyset query per span of up to STREAM_SPAN rows (a server-side cursor,
        never a buffered result), cut into chunks here; or, for grouped reads, one aggregated
        query per chunk on a read-ahead thread. Each chunk's position is its last row, exactly
        as if each chunk had been its own query, so checkpoints and resumes are unchanged. A phase
        ends only when a query from the last position finds nothing: rows whose cursor moved ahead
        while a span was being read (its snapshot could not see them) are still fetched."""
        ahead = self._will_group(window, position)
        chunks = self._chunks(window, position, limit, ahead)
        return read_ahead(chunks) if ahead else chunks

    def _will_group(self, window: Window, position: dict | None) -> bool:
        if not self._grouping:
            return False
        with self.engine.connect() as conn:
            packing = self._packed(conn, window, position["phase"] if position else self._phases(window)[0])
        return packing is not None

    def _chunks(self, window: Window, position: dict | None, limit: int, ahead: bool) -> Iterator[Any]:
        """`ahead`: run by read_ahead, so a phase's last query waits (WAIT) until the engine has
        taken every chunk before it."""
        phases = self._phases(window)
        start_phase = position["phase"] if position else phases[0]
        after = [decode(v) for v in position["after"]] if position and position.get("after") else None
        remaining = limit or None
        size = self.src.chunk_size
        with self.engine.connect() as conn:
            self._prepare_streaming(conn)
            packing = self._packed(conn, window, start_phase)
            for phase in phases[phases.index(start_phase):]:
                order = self._order(phase)
                waited = False
                parallel = ahead and remaining is None and self.readers > 1
                grouped = 0  # chunks of this phase read one after the other
                while remaining is None or remaining > 0:
                    if packing and self._grouping and parallel and grouped >= self.PARALLEL_AFTER:
                        parallel = False  # the phase's full chunks, then on as below from where they end
                        after = yield from self._parallel_groups(conn, window, phase, after, size, packing, order)
                        continue
                    if packing and self._grouping:
                        group = self._group(conn, window, phase, after, size if remaining is None
                                            else min(size, remaining), packing)
                        if group is not None:
                            if not len(group):
                                if ahead and not waited:
                                    waited = True
                                    yield WAIT
                                    continue  # ask once more, as late as a sequential read would
                                break
                            waited = False
                            grouped += 1
                            chunk, after = self._chunk(group, group.raw, phase, order, packing)
                            yield chunk
                            if remaining is not None:
                                remaining -= len(group)
                            continue  # a group that came back short is read below, by streaming
                    n = max(size, STREAM_SPAN) if remaining is None else min(max(size, STREAM_SPAN), remaining)
                    sql, params = self.build(window, phase, after, n, packing)
                    got = 0
                    reread = False
                    result = conn.execution_options(stream_results=True, max_row_buffer=size).execute(
                        sa.text(sql), params)
                    self.metrics.queries += 1
                    try:
                        batches = (self._packed_batches(result, packing, size) if packing
                                   else self._batches(result, list(result.keys()), size))
                        try:
                            for records, raw in batches:
                                got += len(records)
                                chunk, after = self._chunk(records, raw, phase, order, packing)
                                yield chunk
                                if remaining is not None and got >= remaining:
                                    break
                        except PackedRowTooLarge as e:
                            self._unpack(window, str(e))
                            packing, reread = None, True  # from the last chunk handed out, plainly
                        finally:
                            batches.close()
                    finally:
                        result.close()
                    conn.rollback()  # no snapshot held open across spans on the source
                    if remaining is not None:
                        remaining -= got
                    if got == 0 and not reread:
                        break
                after = None
                if remaining is not None and remaining <= 0:
                    return

    def _chunk(self, records: Any, raw: list[str] | None, phase: str, order: list[str],
               packing: Packing | None) -> tuple[Chunk, list[Any]]:
        """The chunk handed out, and the keyset position after it (its last record's)."""
        last = records[-1]
        after = [last[c] for c in order]
        if phase == PHASE_NULL:
            self.metrics.null_cursor_rows += len(records)
        if packing:
            self.metrics.extra["packed_rows"] += len(records)
        return Chunk(records, {"phase": phase, "after": [encode(v) for v in after]}, raw,
                     packing.as_read if packing else None), after

    def _group(self, conn: sa.Connection, window: Window, phase: str, after: list[Any] | None, n: int,
               packing: Packing) -> LazyRecords | None:
        """The next chunk of at most `n` packed rows as one aggregated row (empty at the end of the
        phase), or None if the group came back short: grouping stops and the caller streams."""
        bound = self._bound(conn, window, phase, after, n)
        got = self._read_group(conn, (window, phase, after, bound, packing))
        return self._as_group(got, n, packing)

    def _bound(self, conn: sa.Connection, window: Window, phase: str, after: list[Any] | None,
               n: int) -> list[Any] | None:
        """The n-th row's position after `after`, from the index (None: fewer rows are left)."""
        order = self._order_sql(self._order(phase))
        sql, params = self.build(window, phase, after, 1, select=order, offset=n - 1)
        bound = conn.execute(sa.text(sql), params).first()
        self.metrics.queries += 1
        return list(bound) if bound is not None else None

    def _read_group(self, conn: sa.Connection, task: tuple) -> tuple[int, str | None, int]:
        """(row count, the rows' texts joined by newlines, warnings) of the rows after `after` up
        to `upto` (inclusive; None: to the end). Runs on reader threads too: it touches no state."""
        window, phase, after, upto, packing = task
        order = self._order_sql(self._order(phase))
        # the separator is a literal newline (not '\n': NO_BACKSLASH_ESCAPES would keep it as two
        # characters); JSON text never holds a raw one
        select = f"COUNT(*), GROUP_CONCAT({packing.select} ORDER BY {order} SEPARATOR '\n')"
        sql, params = self.build(window, phase, after, None, select=select, upto=upto, ordered=False)
        result = conn.execute(sa.text(sql), params)
        cursor = result.cursor  # PyMySQL's: released once the row is fetched
        count, text = result.one()
        # a cut group (group_concat_max_len) or a row's NULL JSON (max_allowed_packet) is only a
        # warning; a cut inside the last row would even keep the count of texts right
        warnings = cursor.warning_count
        conn.rollback()  # no snapshot held across chunks
        return count, text, warnings

    def _as_group(self, got: tuple[int, str | None, int], n: int, packing: Packing) -> LazyRecords | None:
        count, text, warnings = got
        self.metrics.queries += 1
        raw = text.split("\n") if text else []
        if len(raw) != count or warnings:
            self._grouping = False
            self.metrics.extra["grouped_off"] = (
                f"a group of {count} rows came back with {len(raw)} and {warnings} warning(s): over "
                f"group_concat_max_len ({len(text or ''):,} characters), or a row over max_allowed_packet")
            return None
        if raw:
            self.metrics.extra["grouped_chunks"] = self.metrics.extra.get("grouped_chunks", 0) + 1
        del raw[n:]  # rows inserted between the two queries wait for the next chunk
        return LazyRecords(raw, packing.record, packing.recipe)

    def _parallel_groups(self, conn: sa.Connection, window: Window, phase: str, after: list[Any] | None,
                         n: int, packing: Packing, order: list[str]) -> Iterator[Chunk]:
        """Full chunks read `self.readers` at a time (readers.py), handed out in keyset order; returns
        the position to go on from (sequentially: the phase's last, short chunk and its final
        check stay as they are). Each range ends at a position the index gave before its rows were
        read, and the next range starts right after it, so no row falls between two chunks. A
        range that comes back with more rows than a chunk (rows inserted in it meanwhile) or
        short (group_concat_max_len) ends this: the rest is read one chunk at a time from its
        start, which trims or streams exactly as a sequential read does."""
        reads = OrderedReads(self.readers, self._reader_connection, self._read_group)
        try:
            lo, ended = after, False
            while True:
                while not ended and not reads.full:
                    hi = self._bound(conn, window, phase, lo, n)
                    conn.rollback()  # each range's end from a fresh snapshot: none is held across chunks
                    if hi is None:
                        ended = True
                        break
                    reads.add((window, phase, lo, hi, packing))
                    lo = hi
                if not len(reads):
                    return lo
                (_, _, start, _, _), got = reads.next()
                if got[0] > n:
                    self.metrics.queries += 1
                    return start
                group = self._as_group(got, n, packing)
                if group is None:
                    return start
                if len(group):  # a range whose rows all moved away meanwhile: nothing to hand out
                    yield self._chunk(group, group.raw, phase, order, packing)[0]
        finally:
            reads.close()

    def _reader_connection(self) -> sa.Connection:
        conn = self.engine.connect()
        self._prepare_streaming(conn)
        return conn

    @staticmethod
    def _batches(result: sa.CursorResult, names: list[str], size: int) -> Iterator[tuple[list[dict], None]]:
        """The span's rows as records, chunk_size at a time. (Decoding them on a read-ahead thread
        was measured not to pay: PyMySQL decodes in Python under the GIL, and every hand-back of the
        GIL to the writing thread waits out the switch interval.)"""
        while batch := result.fetchmany(size):
            yield [dict(zip(names, r)) for r in batch], None

    @staticmethod
    def _packed_batches(result: sa.CursorResult, packing: Packing, size: int
                        ) -> Iterator[tuple[LazyRecords, list[str]]]:
        """_batches for packed rows, with each record's JSON text; records are decoded and built
        only when asked for (LazyRecords)."""
        first = itemgetter(0)
        while batch := result.fetchmany(size):
            raw = list(map(first, batch))
            if None in raw:
                raise PackedRowTooLarge("a row's JSON text exceeds max_allowed_packet")
            yield LazyRecords(raw, packing.record, packing.recipe), raw

    def _packed(self, conn: sa.Connection, window: Window, phase: str) -> Packing | None:
        """The packed read for this source's query, probed once (LIMIT 0: the server returns the
        column types without reading rows), or None to read plainly."""
        if window.bounded not in self._packing:
            got = self._probe(conn, window, phase)
            if isinstance(got, Packing):
                self._packing[window.bounded] = got
                self.metrics.extra.setdefault("packed_rows", 0)
            else:
                self._unpack(window, got)
        return self._packing[window.bounded]

    def _probe(self, conn: sa.Connection, window: Window, phase: str) -> Packing | str | None:
        if conn.dialect.name not in ("mysql", "mariadb") or conn.dialect.driver != "pymysql":
            return None  # other drivers convert values their own way (mysqlclient's are C already)
        if not packed_from_env():
            return "SYNCRUNNER_SQL_PACKED=0"
        sql, params = self.build(window, phase, None, 0)
        with conn.execute(sa.text(sql), params) as plain:
            packing = plan_packing(plain.cursor, self.q)
        if isinstance(packing, Packing):
            sql, params = self.build(window, phase, None, 0, packing)
            try:
                with conn.execute(sa.text(sql), params) as packed:
                    (encoding, _), = packed.cursor._result.converters
            except sa.exc.DBAPIError as e:  # a server without JSON_QUOTE (MySQL < 5.7)
                conn.rollback()
                return redact(f"the packed read failed: {e.orig}")[:200]
            if encoding in (None, "ascii"):  # MariaDB, when every column is a NULL literal
                packing = "the packed row text comes back binary"
        conn.rollback()
        return packing

    def _unpack(self, window: Window, why: str | None) -> None:
        """Read plainly from now on; for a MySQL source, say why in the run's metrics."""
        self._packing[window.bounded] = None
        if why:
            self.metrics.extra["packed_off"] = why

    def _prepare_streaming(self, conn: sa.Connection) -> None:
        """MySQL drops a streaming query whose client stops reading for net_write_timeout (60 s by
        default); a slow target write between two chunks must not kill the read."""
        if conn.dialect.name in ("mysql", "mariadb"):
            conn.exec_driver_sql("SET SESSION net_write_timeout = 3600")
            if self._grouping:  # a grouped chunk may be as long as a result row can be
                conn.exec_driver_sql("SET SESSION group_concat_max_len = @@max_allowed_packet")
            conn.rollback()

    def count(self, window: Window) -> int | None:
        total = 0
        with self.engine.connect() as conn:
            for phase in self._phases(window):
                sql, params = self.build(window, phase, None, None)
                sql = sql.split(" ORDER BY ")[0]
                total += int(conn.execute(sa.text(f"SELECT COUNT(*) FROM ({sql}) c"), params).scalar_one())
        return total

    def describe(self, window: Window) -> dict:
        phases = self._phases(window)
        sql, params = self.build(window, phases[0], None, max(self.src.chunk_size, STREAM_SPAN))
        return {"source": redact_url(self.url), "phases": phases, "sql": sql,
                "params": {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in params.items()}}

    def close(self) -> None:
        """The engine is shared by every spec reading this database; it is disposed at exit."""

    def __repr__(self) -> str:
        return redact(f"SqlSource({self.url})")
