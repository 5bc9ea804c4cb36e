"""SQLite target: native upsert (ON CONFLICT DO UPDATE ... WHERE changed). SQLite reports inserted
plus updated rows together, so new rows are counted first in the same transaction."""
from __future__ import annotations

import sqlalchemy as sa

from .base import MergePlan, TargetDialect


class SqliteTarget(TargetDialect):
    name = "sqlite"
    distinct_op = "IS NOT"

    def merge(self, conn: sa.Connection, plan: MergePlan) -> tuple[int, int]:
        q = self.q
        t, s = q(plan.target.name), q(plan.stage.name)
        created = self.new_count(conn, plan)
        cols = ", ".join(q(c) for c in plan.columns)
        keys = ", ".join(q(k) for k in plan.keys)
        rest = [c for c in plan.columns if c not in plan.keys]
        if rest:
            sets = ", ".join(f"{q(c)} = excluded.{q(c)}" for c in rest)
            action = (f"DO UPDATE SET {sets} WHERE {self.newer(t, 'excluded', plan)} "
                      f"AND ({self.differs(t, 'excluded', rest)})")
        else:
            action = "DO NOTHING"
        sql = f"INSERT INTO {t} ({cols}) SELECT {cols} FROM {s} WHERE true ON CONFLICT ({keys}) {action}"
        changed = conn.execute(sa.text(sql)).rowcount
        return created, changed - created
