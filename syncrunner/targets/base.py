"""What every target dialect shares: the staging table and the SQL pieces of a set-based merge.
A dialect module supplies only its merge statement(s) and its bulk load."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import uuid

import sqlalchemy as sa


@dataclass
class MergePlan:
    """Everything a dialect needs to merge the staging table into the target."""

    target: sa.Table
    stage: sa.Table
    columns: list[str]
    keys: list[str]
    cursor: str | None      # target column compared to keep newer stored rows
    force: bool
    fingerprint: str | None = None  # bookkeeping column: written, never compared
    stale_guard: bool = False       # the source may serve out-of-date copies (source.serves_stale_copies)

    @property
    def guarded(self) -> bool:
        """Keep a stored row whose cursor is newer than the incoming one? Only for a source that can
        serve an out-of-date copy: a SQL source's row is its current row, whatever its clock says."""
        return self.stale_guard and bool(self.cursor) and not self.force

    @property
    def compare(self) -> list[str]:
        """The columns whose difference makes a stored row out of date."""
        return [c for c in self.columns if c not in self.keys and c != self.fingerprint]


class TargetDialect:
    name = "generic"
    distinct_op = "IS DISTINCT FROM"   # null-safe "differs" between two column references
    loads_text = False                 # takes rows pre-encoded as COPY text (load_stage_text)
    loads_direct = False               # can bulk-load new rows straight into the target (load_direct)

    def load_direct(self, conn: sa.Connection, target: sa.Table, load: Callable[..., None]) -> bool:
        """Load a batch of rows none of which is stored yet straight into the target table (no
        stage, no merge). False, with nothing loaded, if the database refused it (a key already
        stored, a constraint): the caller then merges the batch the normal way."""
        raise NotImplementedError

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self.q = engine.dialect.identifier_preparer.quote

    # -- staging -----------------------------------------------------------------------------
    def create_stage(self, conn: sa.Connection, target: sa.Table) -> sa.Table:
        """A temporary table with the target's columns and types, no constraints."""
        md = sa.MetaData()
        cols = [sa.Column(c.name, c.type, nullable=True) for c in target.columns]
        # unique per writer: a pooled connection may still hold an earlier run's temp table
        stage = sa.Table(f"sr_stage_{uuid.uuid4().hex[:8]}_{target.name}"[:63], md, *cols, prefixes=["TEMPORARY"])
        stage.create(conn)
        return stage

    def drop_stage(self, conn: sa.Connection, stage: sa.Table) -> None:
        stage.drop(conn, checkfirst=False)

    def clear_stage(self, conn: sa.Connection, stage: sa.Table) -> None:
        conn.execute(stage.delete())

    def load_stage(self, conn: sa.Connection, stage: sa.Table, rows: list[dict]) -> None:
        """One executemany of plain tuples: SQLAlchemy's per-row dict compilation costs more than
        the database's own work at bulk sizes. Values pass the columns' own bind processors, so what
        lands is exactly what `stage.insert()` would have sent."""
        binders = self._binders(conn, stage)
        names = ", ".join(self.q(n) for n, _ in binders)
        marks = ", ".join(self._placeholder(i) for i in range(len(binders)))
        sql = f"INSERT INTO {self.q(stage.name)} ({names}) VALUES ({marks})"
        # column by column, as the COPY encoder does: a column without a bind processor is taken as
        # it is, and zip builds the tuples in C (bench rows into SQLite: 4.6 -> 3.8 us/row)
        columns = []
        for n, bind in binders:
            values = [r.get(n) for r in rows]
            columns.append(values if bind is _AS_IS else list(map(bind, values)))
        conn.exec_driver_sql(sql, list(zip(*columns)))

    def _binders(self, conn: sa.Connection, stage: sa.Table) -> list[tuple[str, Callable[[Any], Any]]]:
        """(column, value -> DBAPI value) per column, computed once per stage table."""
        cached = getattr(stage, "_sr_binders", None)
        if cached is None:
            cached = [(c.name, self.bind_for(c, conn.dialect)) for c in stage.columns]
            stage._sr_binders = cached
        return cached

    def bind_for(self, col: sa.Column, dialect: sa.Dialect) -> Callable[[Any], Any]:
        """value -> DBAPI value for one staging column; a dialect may supply a faster equivalent."""
        return bind_value(col.type, dialect)

    def _placeholder(self, i: int) -> str:
        style = self.engine.dialect.paramstyle
        return {"qmark": "?", "numeric": f":{i + 1}"}.get(style, "%s")  # format/pyformat take %s

    # -- SQL pieces ----------------------------------------------------------------------------
    def join_on(self, a: str, b: str, keys: list[str]) -> str:
        return " AND ".join(f"{a}.{self.q(k)} = {b}.{self.q(k)}" for k in keys)

    def differs(self, a: str, b: str, cols: list[str]) -> str:
        return " OR ".join(f"{a}.{self.q(c)} {self.distinct_op} {b}.{self.q(c)}" for c in cols)

    def newer(self, stored: str, incoming: str, plan: MergePlan) -> str:
        """With the stale guard, incoming replaces stored only when not older."""
        if not plan.guarded:
            return "1=1"
        c = self.q(plan.cursor)
        return f"({stored}.{c} IS NULL OR {incoming}.{c} >= {stored}.{c})"

    def on_conflict(self, plan: MergePlan, excluded: str) -> tuple[str, str]:
        """(column list, `ON CONFLICT (...) DO ...` clause) of a native upsert from the stage: a
        stored row is updated only when it is not newer and really differs."""
        q = self.q
        t = q(plan.target.name)
        cols = ", ".join(q(c) for c in plan.columns)
        keys = ", ".join(q(k) for k in plan.keys)
        rest = [c for c in plan.columns if c not in plan.keys]
        if not plan.compare:
            return cols, f"ON CONFLICT ({keys}) DO NOTHING"
        sets = ", ".join(f"{q(c)} = {excluded}.{q(c)}" for c in rest)
        return cols, (f"ON CONFLICT ({keys}) DO UPDATE SET {sets} WHERE {self.newer(t, excluded, plan)} "
                      f"AND ({self.differs(t, excluded, plan.compare)})")

    def refresh_fingerprints(self, conn: sa.Connection, plan: MergePlan) -> None:
        """Stored rows equal to their staged row were not updated; they take the staged
        fingerprint, so the next read of the same source row is skipped."""
        t, s, fp = self.q(plan.target.name), self.q(plan.stage.name), self.q(plan.fingerprint)
        conn.execute(sa.text(f"UPDATE {t} SET {fp} = {s}.{fp} FROM {s} WHERE {self._refreshable(t, s, plan)}"))

    def _refreshable(self, t: str, s: str, plan: MergePlan) -> str:
        same = f" AND NOT ({self.differs(t, s, plan.compare)})" if plan.compare else ""
        return f"{self.join_on(t, s, plan.keys)}{same} AND ({self.differs(t, s, [plan.fingerprint])})"

    def stale_rows(self, conn: sa.Connection, plan: MergePlan) -> list[tuple[dict, Any]]:
        """With the stale guard: the staged rows older than their stored row (kept as stored), each
        with the stored cursor value. Read after the merge, which never touches such a row."""
        if not plan.guarded:
            return []
        st, tt = plan.stage, plan.target
        on = sa.and_(*[st.c[k] == tt.c[k] for k in plan.keys])
        stored = tt.c[plan.cursor].label("sr_stored_cursor")
        query = sa.select(st, stored).select_from(st.join(tt, on)).where(st.c[plan.cursor] < tt.c[plan.cursor])
        out = []
        for row in conn.execute(query).mappings():
            values = dict(row)
            out.append(({c: values[c] for c in plan.columns if c != plan.fingerprint}, values["sr_stored_cursor"]))
        return out

    def new_count(self, conn: sa.Connection, plan: MergePlan) -> int:
        t, s = self.q(plan.target.name), self.q(plan.stage.name)
        sql = (f"SELECT COUNT(*) FROM {s} WHERE NOT EXISTS "
               f"(SELECT 1 FROM {t} WHERE {self.join_on(t, s, plan.keys)})")
        return int(conn.execute(sa.text(sql)).scalar_one())

    def merge(self, conn: sa.Connection, plan: MergePlan) -> tuple[int, int]:
        """Upsert the staged rows; returns exactly (created, updated)."""
        raise NotImplementedError

    def merge_counted(self, conn: sa.Connection, plan: MergePlan,
                      staged: int) -> tuple[int, int, list[tuple[dict, Any]]]:
        """(created, updated, stale rows) for the `staged` rows, stale being those older than the
        stored row under the stale guard. Looked up after the merge, and only when some rows were not
        written: a chunk whose rows were all written (a first load, an incremental run) skips that
        third pass over the stored rows."""
        created, updated = self.merge(conn, plan)
        stale = self.stale_rows(conn, plan) if created + updated < staged else []
        return created, updated, stale


def _AS_IS(v: Any) -> Any:
    """The bind value of a column type without a bind processor: the value itself."""
    return v


def bind_value(t: sa.types.TypeEngine, dialect: sa.Dialect) -> Callable[[Any], Any]:
    """What SQLAlchemy would send for a value of this column type, as one cheap function. Types that
    evaluate None (JSON stores a missing value as JSON null) see None too, as they always did."""
    proc = t._cached_bind_processor(dialect)
    if proc is None:
        return _AS_IS
    if t.should_evaluate_none:
        return proc
    return lambda v: None if v is None else proc(v)
