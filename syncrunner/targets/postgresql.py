"""PostgreSQL target: rows reach the staging table by COPY (text format), then one
INSERT ... ON CONFLICT DO UPDATE ... WHERE the row really changed; xmax tells inserted from updated
rows."""
from __future__ import annotations

import datetime as dt
from typing import Any, Callable

import sqlalchemy as sa

from syncrunner.targets.base import MergePlan, TargetDialect, bind_value
from syncrunner.targets.copytext import NULL, ColumnEncoder, booleans, copy_text, dates, encode_rows, ints, texts, timestamps
from syncrunner.targets.sqltypes import TimeOfDay, UTCDateTime


def column_encoder(col: sa.Column, dialect: sa.Dialect) -> ColumnEncoder:
    """A column's values -> their COPY text (\\N for NULL), chosen once per column. Column-wise list
    comprehensions: no Python call per value for the types syncrunner creates; anything else goes
    through the column's own bind processor."""
    t = col.type
    if isinstance(t, UTCDateTime):
        return timestamps
    if isinstance(t, sa.Boolean):
        return booleans
    if isinstance(t, (sa.Integer, sa.Numeric)) and not isinstance(t, sa.Float):
        return ints
    if isinstance(t, (sa.Date, TimeOfDay)) and not isinstance(t, sa.DateTime):
        return dates  # isoformat(): a time of day too
    if isinstance(t, sa.String) and t._cached_bind_processor(dialect) is None:
        return texts
    bind = bind_value(t, dialect)

    def generic(v: Any) -> str:
        v = bind(v)
        if v is None:
            return NULL
        if isinstance(v, bool):
            return "t" if v else "f"
        if isinstance(v, (dt.datetime, dt.date)):
            return v.isoformat()
        return copy_text(v if isinstance(v, str) else str(v))
    return lambda vals: [generic(v) for v in vals]


def stage_encoders(table: sa.Table, dialect: sa.Dialect) -> tuple[list[str], list[ColumnEncoder]]:
    """The staging table's column names and their COPY encoders."""
    return [c.name for c in table.columns], [column_encoder(c, dialect) for c in table.columns]


class PostgresTarget(TargetDialect):
    name = "postgresql"

    def __init__(self, engine: sa.Engine):
        super().__init__(engine)
        self.loads_text = engine.dialect.driver == "psycopg2"  # copy_expert, and the workers' encoders
        self.loads_direct = self.loads_text

    def load_direct(self, conn: sa.Connection, target: sa.Table, load: Callable[..., None]) -> bool:
        """COPY straight into the target, inside a savepoint: a first load costs PostgreSQL one
        COPY per batch instead of a COPY into the stage plus an INSERT ... ON CONFLICT from it."""
        savepoint = conn.begin_nested()
        try:
            load(conn, target)
        except (sa.exc.IntegrityError, sa.exc.DataError):  # e.g. a key this run already wrote
            savepoint.rollback()
            return False
        savepoint.commit()
        return True

    def clear_stage(self, conn: sa.Connection, stage: sa.Table) -> None:
        conn.execute(sa.text(f"TRUNCATE {self.q(stage.name)}"))

    def _encoders(self, conn: sa.Connection, stage: sa.Table) -> tuple[list[str], list[ColumnEncoder]]:
        cached = getattr(stage, "_sr_copy", None)
        if cached is None:
            cached = stage_encoders(stage, conn.dialect)
            stage._sr_copy = cached
        return cached

    def load_stage(self, conn: sa.Connection, stage: sa.Table, rows: list[dict]) -> None:
        """COPY ... FROM STDIN: the fastest bulk path into PostgreSQL; NULL is \\N."""
        names, encoders = self._encoders(conn, stage)
        self.load_stage_text(conn, stage, names, encode_rows(names, encoders, rows))

    def load_stage_text(self, conn: sa.Connection, stage: sa.Table, names: list[str], text: str) -> None:
        """COPY rows already encoded by `encode_rows` (e.g. by a mapping worker process)."""
        import psycopg2
        cols = ", ".join(self.q(n) for n in names)
        sql = f"COPY {self.q(stage.name)} ({cols}) FROM STDIN"
        raw = conn.connection.dbapi_connection
        cur = raw.cursor()
        try:
            cur.copy_expert(sql, _TextReader(text), size=1 << 20)
        except psycopg2.Error as e:  # as SQLAlchemy raises them: a lost connection is retried, a refused row is not
            if isinstance(e, psycopg2.OperationalError) or raw.closed:
                conn.invalidate(e)
            raise sa.exc.DBAPIError.instance(sql, None, e, psycopg2.Error,
                                             connection_invalidated=conn.invalidated) from e
        finally:
            if not cur.closed:
                cur.close()

    def merge(self, conn: sa.Connection, plan: MergePlan) -> tuple[int, int]:
        created, updated, _ = self.merge_counted(conn, plan, 0)
        return created, updated

    def merge_counted(self, conn: sa.Connection, plan: MergePlan,
                      staged: int = 0) -> tuple[int, int, list[tuple[dict, Any]]]:
        """The staged count comes back with the merge itself (`staged` is not needed)."""
        q = self.q
        t, s = q(plan.target.name), q(plan.stage.name)
        cols, conflict = self.on_conflict(plan, "EXCLUDED")
        sql = (f"WITH up AS (INSERT INTO {t} ({cols}) SELECT {cols} FROM {s} "
               f"{conflict} RETURNING (xmax = 0) AS inserted) "
               f"SELECT COALESCE(SUM(CASE WHEN inserted THEN 1 ELSE 0 END), 0), "
               f"COALESCE(SUM(CASE WHEN inserted THEN 0 ELSE 1 END), 0), (SELECT COUNT(*) FROM {s}) FROM up")
        created, updated, staged = conn.execute(sa.text(sql)).one()
        # Looked up after the upsert, and only when some rows were not written: the upsert never
        # touches a row older than the stored one, nor makes one, so the answer is the same as
        # before it; and a run that writes every row (a first load) skips the lookup.
        stale = self.stale_rows(conn, plan) if created + updated < staged else []
        return int(created), int(updated), stale


class _TextReader:
    """COPY text handed to psycopg2 one slice at a time (it encodes each in the connection's
    encoding). io.StringIO would first copy the whole text into a 4-bytes-per-character buffer:
    ~8 MB for a 5,000-row batch of the bench, held while the batch loads."""

    def __init__(self, text: str):
        self.text, self.pos = text, 0

    def read(self, size: int = -1) -> str:
        start = self.pos
        self.pos = len(self.text) if size is None or size < 0 else min(len(self.text), start + size)
        return self.text[start:self.pos]
