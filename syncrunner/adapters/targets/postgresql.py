"""PostgreSQL target: INSERT ... ON CONFLICT DO UPDATE ... WHERE the row really changed; xmax tells
inserted from updated rows in the same statement."""
from __future__ import annotations

import sqlalchemy as sa

from .base import MergePlan, TargetDialect


class PostgresTarget(TargetDialect):
    name = "postgresql"

    def clear_stage(self, conn: sa.Connection, stage: sa.Table) -> None:
        conn.execute(sa.text(f"TRUNCATE {self.q(stage.name)}"))

    def merge(self, conn: sa.Connection, plan: MergePlan) -> tuple[int, int]:
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
        sql = (f"WITH up AS (INSERT INTO {t} ({cols}) SELECT {cols} FROM {s} "
               f"ON CONFLICT ({keys}) {action} RETURNING (xmax = 0) AS inserted) "
               f"SELECT COALESCE(SUM(CASE WHEN inserted THEN 1 ELSE 0 END), 0), "
               f"COALESCE(SUM(CASE WHEN inserted THEN 0 ELSE 1 END), 0) FROM up")
        created, updated = conn.execute(sa.text(sql)).one()
        return int(created), int(updated)
