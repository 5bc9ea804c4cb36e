"""PostgreSQL target: rows reach the staging table by COPY (text format), then one
INSERT ... ON CONFLICT DO UPDATE ... WHERE the row really changed; xmax tells inserted from updated
rows, and the rows older than the stored ones are counted in the same statement."""
from __future__ import annotations

import datetime as dt
import io
from typing import Any, Callable

import sqlalchemy as sa

from ...runtime.sqltypes import UTCDateTime
from .base import MergePlan, TargetDialect, bind_value

Encoder = Callable[[Any], str]


def copy_text(s: str) -> str:
    """Escape a string for COPY's text format (backslash, tab, newline, carriage return)."""
    if "\\" in s:
        s = s.replace("\\", "\\\\")
    if "\t" in s:
        s = s.replace("\t", "\\t")
    if "\n" in s:
        s = s.replace("\n", "\\n")
    if "\r" in s:
        s = s.replace("\r", "\\r")
    return s


def _timestamptz(v: dt.datetime) -> str:
    # UTCDateTime's rule: naive values are UTC
    return v.isoformat() if v.tzinfo is not None else v.isoformat() + "+00:00"


def column_encoder(col: sa.Column, dialect: sa.Dialect) -> Encoder:
    """value -> COPY text (\\N for NULL) for one column, chosen once per column. Types syncrunner
    creates get a direct encoder; anything else goes through the column's own bind processor."""
    t = col.type
    direct: Encoder | None = None
    if isinstance(t, UTCDateTime):
        direct = _timestamptz
    elif isinstance(t, sa.Boolean):
        direct = _boolean
    elif isinstance(t, (sa.Integer, sa.Numeric)) and not isinstance(t, sa.Float):
        direct = str
    elif isinstance(t, sa.Date) and not isinstance(t, sa.DateTime):
        direct = dt.date.isoformat
    elif isinstance(t, sa.String) and t._cached_bind_processor(dialect) is None:
        direct = _text
    if direct is not None:
        return lambda v, _d=direct: "\\N" if v is None else _d(v)
    bind = bind_value(t, dialect)

    def generic(v: Any) -> str:
        v = bind(v)
        if v is None:
            return "\\N"
        if isinstance(v, bool):
            return _boolean(v)
        if isinstance(v, (dt.datetime, dt.date)):
            return v.isoformat()
        return _text(v)
    return generic


def _boolean(v: Any) -> str:
    return "t" if v else "f"


def _text(v: Any) -> str:
    return copy_text(v if isinstance(v, str) else str(v))


class PostgresTarget(TargetDialect):
    name = "postgresql"

    def clear_stage(self, conn: sa.Connection, stage: sa.Table) -> None:
        conn.execute(sa.text(f"TRUNCATE {self.q(stage.name)}"))

    def _encoders(self, conn: sa.Connection, stage: sa.Table) -> tuple[list[str], list[Encoder]]:
        cached = getattr(stage, "_sr_copy", None)
        if cached is None:
            cached = ([c.name for c in stage.columns], [column_encoder(c, conn.dialect) for c in stage.columns])
            stage._sr_copy = cached
        return cached

    def load_stage(self, conn: sa.Connection, stage: sa.Table, rows: list[dict]) -> None:
        """COPY ... FROM STDIN: the fastest bulk path into PostgreSQL; NULL is \\N."""
        names, encoders = self._encoders(conn, stage)
        pairs = list(zip(names, encoders))
        lines = []
        for r in rows:
            lines.append("\t".join([enc(r.get(n)) for n, enc in pairs]))
        lines.append("")
        cols = ", ".join(self.q(n) for n in names)
        cur = conn.connection.dbapi_connection.cursor()
        try:
            cur.copy_expert(f"COPY {self.q(stage.name)} ({cols}) FROM STDIN", io.StringIO("\n".join(lines)),
                            size=1 << 20)
        finally:
            cur.close()

    def merge(self, conn: sa.Connection, plan: MergePlan) -> tuple[int, int]:
        created, updated, _ = self.merge_counted(conn, plan)
        return created, updated

    def merge_counted(self, conn: sa.Connection, plan: MergePlan) -> tuple[int, int, int]:
        q = self.q
        t, s = q(plan.target.name), q(plan.stage.name)
        cols = ", ".join(q(c) for c in plan.columns)
        keys = ", ".join(q(k) for k in plan.keys)
        rest = [c for c in plan.columns if c not in plan.keys]
        if rest:
            sets = ", ".join(f"{q(c)} = EXCLUDED.{q(c)}" for c in rest)
            action = (f"DO UPDATE SET {sets} WHERE {self.newer(t, 'EXCLUDED', plan)} "
                      f"AND ({self.differs(t, 'EXCLUDED', rest)})")
        else:
            action = "DO NOTHING"
        if plan.force or not plan.cursor:
            stale = "0"
        else:  # every part of one statement reads the same snapshot: this sees the table before the upsert
            c = q(plan.cursor)
            stale = (f"(SELECT COUNT(*) FROM {s} WHERE EXISTS (SELECT 1 FROM {t} WHERE "
                     f"{self.join_on(t, s, plan.keys)} AND {s}.{c} < {t}.{c}))")
        sql = (f"WITH up AS (INSERT INTO {t} ({cols}) SELECT {cols} FROM {s} "
               f"ON CONFLICT ({keys}) {action} RETURNING (xmax = 0) AS inserted) "
               f"SELECT COALESCE(SUM(CASE WHEN inserted THEN 1 ELSE 0 END), 0), "
               f"COALESCE(SUM(CASE WHEN inserted THEN 0 ELSE 1 END), 0), {stale} FROM up")
        created, updated, stale_rows = conn.execute(sa.text(sql)).one()
        return int(created), int(updated), int(stale_rows)
