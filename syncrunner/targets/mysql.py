"""MySQL / MariaDB target: UPDATE ... JOIN for changed rows, then INSERT ... SELECT of the new ones.
Each statement's row count is exact (ON DUPLICATE KEY UPDATE's counts are not), and the entity
lock keeps other syncrunner writers out between the two."""
from __future__ import annotations

import sqlalchemy as sa

from syncrunner.targets.base import MergePlan, TargetDialect


class MysqlTarget(TargetDialect):
    name = "mysql"

    def differs(self, a: str, b: str, cols: list[str]) -> str:
        return " OR ".join(f"NOT ({a}.{self.q(c)} <=> {b}.{self.q(c)})" for c in cols)

    def merge(self, conn: sa.Connection, plan: MergePlan) -> tuple[int, int]:
        q = self.q
        t, s = q(plan.target.name), q(plan.stage.name)
        cols = ", ".join(q(c) for c in plan.columns)
        rest = [c for c in plan.columns if c not in plan.keys]
        updated = 0
        if plan.compare:
            sets = ", ".join(f"{t}.{q(c)} = {s}.{q(c)}" for c in rest)
            sql = (f"UPDATE {t} JOIN {s} ON {self.join_on(t, s, plan.keys)} SET {sets} "
                   f"WHERE {self.newer(t, s, plan)} AND ({self.differs(t, s, plan.compare)})")
            updated = conn.execute(sa.text(sql)).rowcount
        first_key = q(plan.keys[0])
        scols = ", ".join(f"{s}.{q(c)}" for c in plan.columns)
        sql = (f"INSERT INTO {t} ({cols}) SELECT {scols} FROM {s} LEFT JOIN {t} "
               f"ON {self.join_on(s, t, plan.keys)} WHERE {t}.{first_key} IS NULL")
        created = conn.execute(sa.text(sql)).rowcount
        return created, updated

    def refresh_fingerprints(self, conn: sa.Connection, plan: MergePlan) -> None:
        t, s, fp = self.q(plan.target.name), self.q(plan.stage.name), self.q(plan.fingerprint)
        conn.execute(sa.text(f"UPDATE {t} JOIN {s} ON {self.join_on(t, s, plan.keys)} SET {t}.{fp} = {s}.{fp} "
                             f"WHERE {self._refreshable(t, s, plan)}"))
