"""SQLite target: native upsert (ON CONFLICT DO UPDATE ... WHERE changed). SQLite reports inserted
plus updated rows together, so new rows are counted first in the same transaction."""
from __future__ import annotations

import datetime as dt
from typing import Any, Callable

import sqlalchemy as sa

from syncrunner.targets.base import MergePlan, TargetDialect, bind_value
from syncrunner.targets.sqltypes import UTCDateTime

UTC = dt.timezone.utc


def utc_text(v: dt.datetime | None) -> str | None:
    """UTCDateTime's bind value on SQLite (naive UTC, then SQLAlchemy's SQLite DATETIME text), in
    one step: the two SQLAlchemy processors cost more than the rest of the row."""
    if v is None:
        return None
    if v.tzinfo is UTC:  # what mapping makes: the text without its "+00:00" (1.8 -> 1.3 us)
        return v.isoformat(" ", "microseconds")[:26]
    if v.tzinfo is not None:
        v = v.astimezone(UTC).replace(tzinfo=None)
    return v.isoformat(" ", "microseconds")


class SqliteTarget(TargetDialect):
    name = "sqlite"
    distinct_op = "IS NOT"

    def bind_for(self, col: sa.Column, dialect: sa.Dialect) -> Callable[[Any], Any]:
        return utc_text if isinstance(col.type, UTCDateTime) else bind_value(col.type, dialect)

    def merge(self, conn: sa.Connection, plan: MergePlan) -> tuple[int, int]:
        q = self.q
        t, s = q(plan.target.name), q(plan.stage.name)
        created = self.new_count(conn, plan)
        cols, conflict = self.on_conflict(plan, "excluded")
        sql = f"INSERT INTO {t} ({cols}) SELECT {cols} FROM {s} WHERE true {conflict}"
        changed = conn.execute(sa.text(sql)).rowcount
        return created, changed - created
